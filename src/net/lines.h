/*
 * Line protocol in (docs/spec/LINE_PROTOCOL.md): HTTP writes, the TCP and
 * UDP line listeners, and the named series they create, all on the ingest
 * thread and all through the commit pipeline (net/commit.h), as one
 * producer beside native UDP and TCP.
 *
 * Every input is cut into lines and parsed (proto/line.h); each numeric
 * field is a reading of the sensor its canonical name maps to in the
 * registry (store/series.h), created on first use. A new name is written to
 * the log as a series record before the batch that first uses it, in id
 * order, so after a crash every logged reading's id has its name, and a
 * commit that fails re-logs the names it lost before their next use.
 * Readings are gathered into batches of at most SL_BATCH_COUNT_MAX, cut
 * where their times no longer fit one batch's 2^32 - 1 us span, and logged
 * as line records (no stream, no dedup). The ingest thread is the
 * registry's only writer; the HTTP threads look names up without locks.
 *
 * HTTP writes. The HTTP threads hold a request's body in one of
 * `http_writes` slots (--max-http-writes, each --http-max-body bytes, gzip
 * inflated into it), then submit it: the slot goes to the ingest thread,
 * which parses SL_LINES_TICK_BYTES of it a loop turn (a large body never
 * stalls the other inputs), logs its batches, and when every one is
 * delivered (durable under --sync, applied) hands the slot back with the
 * outcome, resuming the HTTP connection (suspended meanwhile, so its
 * worker serves others); the worker answers 204/400/503 and frees the slot.
 *
 * The TCP listener: a connection table of --max-tcp-connections, each with
 * a SL_LINES_LINE_MAX buffer; a longer line is skipped to its newline and
 * counted; idle and line deadlines, the per-address cap and eviction of the
 * connection idle longest as for native TCP. UDP: each datagram holds
 * whole lines. Neither answers.
 *
 * Memory: all from the arena at start (sl_lines_plan). Threads: the ingest
 * thread for everything but the hub's slot handover (sl_lines_write_*),
 * which the HTTP threads call.
 */
#ifndef SL_NET_LINES_H
#define SL_NET_LINES_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/live.h"
#include "core/plan.h"
#include "net/peers.h"
#include "proto/line.h"
#include "store/series.h"

struct sl_commit;
struct sl_net_counters;
struct sl_streams;

#define SL_LINES_HTTP_BODY_DEFAULT (32ull << 20) /* --http-max-body */
#define SL_LINES_HTTP_BODY_MAX (1ull << 30)
#define SL_LINES_HTTP_WRITES_DEFAULT 4u /* --max-http-writes: bodies held at once */
#define SL_LINES_HTTP_WRITES_MAX 64u
#define SL_LINES_LINE_MAX (64u * 1024)     /* TCP: a longer line is skipped and counted */
#define SL_LINES_TICK_BYTES (1u << 20)     /* HTTP body bytes parsed a loop turn, all writes */
#define SL_LINES_UDP_DATAGRAMS_PER_TICK 256u
/* zlib's inflate state and window, which it allocates through our zalloc from the slot. */
#define SL_LINES_INFLATE_BYTES (64u * 1024)

/* Readings refused before the store sees them (beside PROTOCOL.md's reasons). */
enum sl_lines_reject {
    SL_LINES_REJECT_SERIES_LIMIT = 0, /* --max-series or --series-name-bytes reached */
    SL_LINES_REJECT_NAME_TOO_LONG = 1, /* a canonical name over 1,024 bytes */
    SL_LINES_REJECT_UNSUPPORTED_TYPE = 2, /* a string field */
};
#define SL_LINES_REJECT_COUNT 3

enum sl_lines_transport { SL_LINES_HTTP = 0, SL_LINES_TCP = 1, SL_LINES_UDP = 2, SL_LINES_MQTT = 3 };
#define SL_LINES_TRANSPORT_COUNT 4

/* An MQTT message's slot index carries this bit in an intent's tag (HTTP slots do not). */
#define SL_LINES_MQTT_SLOT (1u << 24)

/* Counters: the ingest thread writes them (sl_counter_add), /metrics reads them. */
struct sl_lines_counters {
    _Atomic uint64_t lines_ok[SL_LINES_TRANSPORT_COUNT];
    _Atomic uint64_t lines_bad[SL_LINES_TRANSPORT_COUNT];
    _Atomic uint64_t lines_too_long; /* TCP: skipped to the next newline */
    _Atomic uint64_t rejected[SL_LINES_REJECT_COUNT];
    _Atomic uint64_t shed[SL_LINES_TRANSPORT_COUNT]; /* readings the log could not take */
    _Atomic uint64_t records[SL_LINES_TRANSPORT_COUNT]; /* line records logged */
    _Atomic uint64_t records_failed[SL_LINES_TRANSPORT_COUNT]; /* ... that did not become durable */
    _Atomic uint64_t series_records; /* series names logged (and re-logged after a failed commit) */
    _Atomic uint64_t http_writes;        /* requests handed to the ingest thread */
    _Atomic uint64_t tcp_accepted;
    _Atomic uint64_t tcp_refused;   /* the address at its cap, or no descriptor */
    _Atomic uint64_t tcp_evicted;   /* closed to make room: idle longest */
    _Atomic uint64_t tcp_timed_out; /* idle, or a line not finished within the deadline */
    _Atomic uint32_t tcp_open;
    _Atomic uint64_t udp_datagrams;
};

/* An HTTP write slot's state: who owns it. */
enum sl_write_state {
    SL_WRITE_FREE = 0,      /* nobody */
    SL_WRITE_FILLING = 1,   /* an HTTP thread: the body arrives */
    SL_WRITE_SUBMITTED = 2, /* the ingest thread: parse, log, apply */
    SL_WRITE_DONE = 3,      /* the HTTP thread again: the outcome is in */
    SL_WRITE_ABANDONED = 4, /* the ingest thread, whose outcome nobody waits for: freed when done */
};

/* What came of a write. */
enum sl_write_outcome {
    SL_WRITE_OK = 0,         /* every batch durable and applied (some readings may be rejected) */
    SL_WRITE_LOG_REFUSED = 1, /* the log could not take (part of) it: 503 */
};

struct sl_write {
    _Atomic uint32_t state; /* enum sl_write_state; changes under the hub's mutex */
    uint32_t gen;           /* bumped each use: an old record's answer is not this request's */
    /* The request, written by the HTTP thread before SUBMITTED. */
    char *body;
    uint64_t body_len;
    uint8_t precision; /* enum sl_line_precision */
    uint8_t native;    /* MQTT: the body is one native batch frame, not lines */
    int64_t received_us;
    /* Progress: the ingest thread's. */
    uint64_t pos;
    uint32_t line_no;
    uint32_t records_pending;
    bool parsed_all;
    /* The outcome, written by the ingest thread before DONE. */
    uint8_t outcome; /* enum sl_write_outcome */
    uint64_t accepted;
    uint64_t rejected;
    uint64_t lines_ok;
    uint64_t lines_bad;
    uint32_t first_bad_line; /* 1-based; 0: none */
    int first_bad_error;     /* enum sl_line_error */
    int frame_error;         /* native: the frame's negated decode error (0: none) */
    bool duplicate;          /* native: its batch_seq was applied before (not stored again) */
    bool streams_full;       /* native: a new stream while the stream table is full (not stored) */
    /* zlib's memory for inflating a gzip body: the HTTP thread's, SL_LINES_INFLATE_BYTES. */
    uint8_t *inflate_memory;
    uint32_t inflate_used;
    void *waiter; /* the HTTP side's handle (its suspended connection), given to hub->notify */
};

/* The slots HTTP threads and the ingest thread hand over. */
struct sl_lines_hub {
    struct sl_write *writes;
    uint32_t count;
    uint64_t body_bytes; /* each slot's body capacity (--http-max-body) */
    int wake_fd;         /* the ingest thread's eventfd */
    pthread_mutex_t mu;
    _Atomic uint64_t refused_busy; /* acquires that found every slot holding a body (503) */
    bool closed; /* under mu: the ingest thread is draining; submits are refused */
    /*
     * Called on the ingest thread, outside the mutex, when a write becomes
     * DONE, with its waiter (the HTTP side resumes its suspended
     * connection). Set before the HTTP workers start.
     */
    void (*notify)(void *ctx, void *waiter);
    void *notify_ctx;
};

struct sl_lines_config {
    uint32_t http_writes;       /* 0: HTTP writes off */
    uint64_t http_body_bytes;
    int tcp_fd;                 /* a bound listener, or -1 */
    int udp_fd;                 /* a bound socket, or -1 */
    uint32_t tcp_connections_max;
    uint32_t tcp_idle_timeout_ms;  /* when live is NULL */
    uint32_t tcp_line_timeout_ms;  /* when live is NULL */
    uint32_t tcp_per_ip_max;       /* when live is NULL */
    uint32_t mqtt_messages;        /* MQTT message slots (a subscriber's round); 0: no MQTT */
    const struct sl_live *live;    /* tcp_idle_timeout_ms, tcp_frame_timeout_ms, per-ip cap */
};

struct sl_line_conn;

struct sl_lines {
    struct sl_lines_config config;
    struct sl_commit *commit;
    struct sl_series *series;
    struct sl_lines_hub hub;
    struct sl_lines_hub mqtt_hub; /* the MQTT subscriber's messages (bodies its own) */
    struct sl_streams *streams;   /* native MQTT payloads: the TCP dedup table (set by ingest) */
    _Atomic uint64_t *streams_full_total; /* ... and its full counter */
    struct sl_lines_counters counters;
    uint8_t producer;
    int epoll_fd;
    /* The registry's log state: entries [0, logged) are in the log, [0, durable) durably. */
    uint32_t series_logged;
    uint32_t series_durable;
    uint64_t series_last_lsn; /* of the newest series record appended */
    /* The batch being gathered, its source and time base. */
    uint8_t *staging; /* SL_BATCH_COUNT_MAX readings, wire layout */
    uint32_t staged;
    int64_t staged_base_us;
    int64_t staged_now_us;
    uint8_t staged_transport; /* enum sl_lines_transport */
    uint32_t staged_write;    /* the HTTP slot, when HTTP */
    uint32_t staged_rejected; /* readings refused while gathering (enum sl_lines_reject) */
    struct sl_line *line;     /* the parse of the current line */
    uint16_t *order;          /* SL_LINE_TAGS_MAX: the tags' sort */
    char *name;               /* SL_LINE_NAME_MAX + 1 bytes */
    /* TCP */
    struct sl_line_conn *conns;
    uint32_t *conn_free;
    uint32_t conn_free_count;
    struct sl_peers peers; /* open connections per peer address */
    int64_t next_sweep_ns;
    /* UDP */
    uint8_t *udp_buffer; /* one datagram, 64 KiB */
    bool busy;           /* a write has body left to parse: come back at once */
};

/* epoll tags: the ingest loop hands events whose tag has SL_LINES_TAG set to sl_lines_event. */
#define SL_LINES_TAG (1ull << 40)
#define SL_LINES_TAG_LISTEN (SL_LINES_TAG + 0)
#define SL_LINES_TAG_UDP (SL_LINES_TAG + 1)
#define SL_LINES_TAG_CONN (SL_LINES_TAG + 2)

void sl_lines_plan(const struct sl_lines_config *config, struct sl_plan *plan);

/* Descriptors the TCP line listener may hold (its table). */
uint64_t sl_lines_fds_needed(const struct sl_lines_config *config);

/*
 * Take the planned parts, register with the commit pipeline and the epoll
 * set, and set up the hub (wake_fd: the ingest loop's eventfd). The
 * registry was recovered: every series in it is durable. Main thread.
 * 0, or -1 with a reason in err.
 */
int sl_lines_open(struct sl_lines *lines, const struct sl_lines_config *config,
                  struct sl_commit *commit, struct sl_series *series, int epoll_fd, int wake_fd,
                  struct sl_arena *arena, char *err, uint32_t err_bytes);

/* An epoll event whose tag has SL_LINES_TAG. Ingest thread. */
void sl_lines_event(struct sl_lines *lines, uint64_t tag, uint32_t events);

/* Each loop turn: take submitted writes, parse a slice of their bodies, sweep deadlines. */
void sl_lines_tick(struct sl_lines *lines, int64_t now_ns);

/* Does a write wait to be parsed (the loop should not sleep)? */
bool sl_lines_busy(const struct sl_lines *lines);

/* Shutting down: close the connections (their lines in flight are gathered and logged). */
void sl_lines_drain(struct sl_lines *lines);

void sl_lines_close(struct sl_lines *lines);

/* ---- the hub, for the HTTP threads ---- */

/* Take a free slot: its index, or -1 when every slot holds a body (answer 503). */
int sl_lines_write_acquire(struct sl_lines_hub *hub);

/* Hand the filled slot to the ingest thread: 0, or -1 when it is shutting down (answer 503). */
int sl_lines_write_submit(struct sl_lines_hub *hub, uint32_t index);

/* The request ended before its outcome was taken: the ingest thread frees the slot when done. */
void sl_lines_write_abandon(struct sl_lines_hub *hub, uint32_t index);

/* Give the slot back (FILLING or DONE). */
void sl_lines_write_release(struct sl_lines_hub *hub, uint32_t index);

/* Reject reason names for metrics: "series_limit", "name_too_long", "unsupported_type". */
const char *sl_lines_reject_name(uint32_t reason);

#endif
