/*
 * The ingest thread: UDP and TCP listeners of the native protocol, one
 * epoll loop, and the write-ahead log; the store's single writer is its
 * apply worker (or the ingest thread itself with apply_thread off).
 *
 * Everything it uses is taken from the arena at start-up: the recvmmsg
 * buffers, the fixed TCP connection table with one maximum frame of receive
 * buffer and SL_TCP_ACKS_QUEUED acks of send buffer per connection, and the
 * two per-stream tables (TCP dedup, UDP gaps). Work per loop tick is capped
 * per socket (one receive per ready connection, a bounded number of
 * recvmmsg calls), so no peer can starve another; a connection whose acks
 * are not being read stops being read itself (backpressure) and is closed
 * when it stays idle past the timeout.
 */
#ifndef SL_NET_INGEST_H
#define SL_NET_INGEST_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/live.h"
#include "core/plan.h"
#include "net/counters.h"
#include "store/checkpoint.h"
#include "store/log.h"
#include "store/store.h"
#include "store/streams.h"

/* TCP: each connection holds one whole maximum frame plus its ack queue. */
#define SL_TCP_CONNECTIONS_DEFAULT 128u
#define SL_TCP_CONNECTIONS_MAX 65536u /* ~800 KiB each */
#define SL_TCP_ACKS_QUEUED 1024u      /* per connection, 32 B each */
#define SL_TCP_IDLE_TIMEOUT_S_DEFAULT 60u
#define SL_TCP_IDLE_TIMEOUT_S_MAX 86400u
#define SL_TCP_FRAME_TIMEOUT_MS_DEFAULT 5000u /* a frame completes within this of its first byte */
#define SL_TCP_FRAME_TIMEOUT_MS_MAX 3600000u
/* UDP: datagrams per recvmmsg call, 64 KiB of buffer each. */
#define SL_UDP_BATCH_DEFAULT 64u
#define SL_UDP_BATCH_MAX 1024u
#define SL_UDP_RCVBUF_DEFAULT (32u << 20)
#define SL_UDP_RCVBUF_MAX (1u << 30)

/* Intents per commit group: more forces an early commit. 56 B each. */
#define SL_INTENTS_MAX 16384u

/*
 * What to do with one frame once its commit group is written: apply a
 * logged record and ack it, send a status that needs no log (DUPLICATE,
 * OVERLOADED), or answer a bad frame and close. Intents are kept in arrival
 * order, so acks go out in the order frames were received on every
 * connection (PROTOCOL.md), whatever mix of outcomes a group holds.
 */
enum sl_intent_kind { SL_INTENT_RECORD = 0, SL_INTENT_STATUS = 1, SL_INTENT_REJECT = 2 };

struct sl_intent {
    uint64_t lsn;                         /* RECORD */
    const struct sl_log_record *record;   /* RECORD: the logged batch, valid until processed */
    struct sl_stream_slot *slot;          /* TCP RECORD: the stream, rolled back if the commit fails */
    uint64_t prev_seq;                    /* TCP RECORD: the slot's state before this batch */
    uint64_t batch_seq;
    uint32_t stream_id;
    uint32_t conn;     /* TCP: connection index; SL_INTENT_UDP for UDP */
    uint32_t conn_gen; /* the connection's generation when the frame arrived */
    uint8_t kind;      /* enum sl_intent_kind */
    uint8_t status;    /* STATUS, REJECT: the ack status */
    uint8_t ack;       /* the frame asked for an ack (REJECT: always answered) */
    uint8_t prev_has_seq;
};
#define SL_INTENT_UDP UINT32_MAX

/*
 * One durable record as the apply side sees it: the batch (its readings
 * copied to the group's area when a worker applies it, so the log may reuse
 * its buffer meanwhile), the clock it was accepted at, and the outcome the
 * acks report.
 */
struct sl_apply_job {
    struct sl_batch batch;
    uint64_t lsn;
    int64_t now_us;
    struct sl_apply_result result;
};

/*
 * A committed group on the apply side: its intents (arrival order), the
 * last lsn the log made durable enough to apply, and a job for each record
 * at or below it, with the readings the worker applies (a copy: the log
 * reuses its buffer for the groups after).
 */
struct sl_apply_group {
    struct sl_intent *intents; /* SL_INTENTS_MAX */
    uint32_t intents_count;
    uint64_t applicable;
    struct sl_apply_job *jobs; /* SL_INTENTS_MAX */
    uint32_t jobs_count;
    uint8_t *area;             /* apply_area_bytes (worker only) */
};

/* Groups the apply side holds: one being applied while the next waits, so the ingest thread rarely does. */
#define SL_APPLY_GROUPS_IN_FLIGHT 2u

struct sl_ingest_config {
    /*
     * prebound: the daemon bound the listeners itself before recovery (so a
     * busy port is an exit 2 before anything starts) and hands over udp_fd
     * and tcp_fd (-1: that listener is off); otherwise sl_ingest_open binds
     * udp_host/tcp_host itself (tests).
     */
    bool prebound;
    int udp_fd;
    int tcp_fd;
    char udp_host[256]; /* empty: UDP off */
    uint16_t udp_port;
    char tcp_host[256]; /* empty: TCP off */
    uint16_t tcp_port;
    uint32_t streams_max;
    uint32_t tcp_connections_max;
    uint32_t tcp_idle_timeout_s;
    uint32_t tcp_frame_timeout_ms;       /* start value of live->tcp_frame_timeout_ms */
    uint32_t tcp_connections_per_ip_max; /* start value of live->tcp_connections_per_ip_max */
    struct sl_live *live;                /* what SIGHUP changes; NULL: the values above, fixed */
    uint32_t udp_batch;
    uint32_t udp_rcvbuf_bytes;
    uint64_t checkpoint_every_bytes; /* begin a checkpoint after this much log; 0 = never */
    bool apply_thread;               /* apply on a worker thread, overlapping the next group */
    uint64_t apply_area_bytes;       /* the log buffer's size: one group's readings fit */
};

struct sl_conn;

struct sl_ingest {
    struct sl_ingest_config config;
    struct sl_store *store;
    struct sl_streams tcp_streams; /* exactly-once: last applied batch_seq per stream */
    struct sl_streams udp_streams; /* gap counting per stream */
    struct sl_net_counters counters;
    int epoll_fd;
    int wake_fd; /* eventfd: sl_ingest_stop wakes the loop */
    int udp_fd;
    int tcp_fd;
    uint16_t udp_port_bound;
    uint16_t tcp_port_bound;
    /* UDP receive state */
    struct mmsghdr *udp_msgs;
    struct iovec *udp_iovs;
    uint8_t *udp_buffers;  /* udp_batch x 64 KiB */
    uint8_t *udp_controls; /* udp_batch x control space for SO_RXQ_OVFL */
    /* TCP connection table */
    struct sl_conn *conns;
    uint32_t *conn_free; /* stack of free connection indices */
    uint32_t conn_free_count;
    uint32_t *conn_touched; /* connections with acks queued in this commit, each once */
    uint32_t conn_touched_count;
    int64_t next_sweep_ns;
    /* Durability */
    struct sl_log *log;
    struct sl_checkpointer *checkpointer; /* NULL: no checkpoints */
    struct sl_intent *intents;            /* SL_INTENTS_MAX, the current commit group */
    uint32_t intents_count;
    uint64_t applied_lsn; /* the last record applied to the store (delivered groups) */
    /*
     * Committed groups on their way through the apply side: posted in
     * order, applied in order (by the worker, or at once with apply_thread
     * off), then delivered in order (acks queued). At most
     * SL_APPLY_GROUPS_IN_FLIGHT; group n lives in groups[n % that].
     */
    struct sl_apply_group groups[SL_APPLY_GROUPS_IN_FLIGHT];
    uint64_t groups_posted;    /* ingest thread */
    uint64_t groups_delivered; /* ingest thread */
    uint64_t groups_applied;   /* under worker_mu */
    /* The apply worker (apply_thread): the store's only writer while it runs. */
    pthread_t worker;
    bool worker_started;
    bool worker_stop;          /* under worker_mu */
    int checkpoint_phase;      /* CHECKPOINT_* in ingest.c, under worker_mu */
    uint64_t worker_applied_lsn; /* worker: the last record it applied */
    pthread_mutex_t worker_mu;
    pthread_cond_t worker_cv;
    _Atomic int stop;
};

/* Add the ingest parts to the plan. */
void sl_ingest_plan(const struct sl_ingest_config *config, struct sl_plan *plan);

/*
 * Take the planned parts (but the stream tables: sl_ingest_take_streams
 * comes first, so recovery can fill them), create and bind the sockets.
 * `log` is the recovered write-ahead log, `checkpointer` may be NULL.
 * Returns 0, or -1 with a reason in err ("tcp 127.0.0.1:7400: Address
 * already in use"). Main thread, at start-up.
 */
int sl_ingest_open(struct sl_ingest *ingest, const struct sl_ingest_config *config,
                   struct sl_store *store, struct sl_log *log, struct sl_checkpointer *checkpointer,
                   struct sl_arena *arena, char *err, uint32_t err_bytes);

/* Take the two stream tables from the arena (before recovery fills them). */
void sl_ingest_take_streams(struct sl_ingest *ingest, const struct sl_ingest_config *config,
                            struct sl_arena *arena);

/*
 * Make room for one more frame of `count` readings in the current commit
 * group: commit the group first when the log buffer, the segment or the
 * intents are full. Call it before changing any state for the frame (the
 * stream table), because a commit that fails rolls state back. Ingest thread.
 */
void sl_ingest_make_room(struct sl_ingest *ingest, uint32_t count);

/*
 * Log a validated batch and add its RECORD intent (the caller fills the
 * TCP fields of *intent first). sl_ingest_make_room must have been called
 * for it: this never commits. Returns 0, or -EIO when the log refuses
 * appends (failed): the caller answers OVERLOADED. Ingest thread.
 */
int sl_ingest_log_batch(struct sl_ingest *ingest, const struct sl_batch *batch, uint8_t transport,
                        int64_t now_us, struct sl_intent *intent);

/*
 * A TCP batch admitted on `slot` was not applied (its commit failed, or the
 * log refused it): restore the stream's last seq and mark the hole, so that
 * its resend is accepted and later seqs wait for it.
 */
void sl_ingest_stream_failed(struct sl_stream_slot *slot, uint64_t prev_seq, uint8_t prev_has_seq,
                             uint64_t batch_seq);

/* Add a STATUS or REJECT intent (committing first when the group is full). */
void sl_ingest_add_intent(struct sl_ingest *ingest, const struct sl_intent *intent);

/*
 * Commit the group: write and sync the log per its mode, roll back the
 * stream tables for records that failed, deliver the group before it (wait
 * for its apply), then hand this one to the apply side: the records the log
 * reports durable enough are applied (on the worker, or here when
 * apply_thread is off) and every ack is queued in order when it is
 * delivered. Ingest thread.
 */
void sl_ingest_commit(struct sl_ingest *ingest);

/*
 * Commit, then wait until every committed group is applied and answered
 * (acks queued): nothing is in flight after. Before reading the store as a
 * whole (checkpoints) and when stopping. Ingest thread.
 */
void sl_ingest_settle(struct sl_ingest *ingest);

/* The thread body: runs the loop until sl_ingest_stop, then drains and closes connections. */
void *sl_ingest_run(void *ingest);

/* Ask the loop to stop (any thread, async-signal-safe). */
void sl_ingest_stop(struct sl_ingest *ingest);

/* Close the sockets after the thread has been joined. */
void sl_ingest_close(struct sl_ingest *ingest);

#endif
