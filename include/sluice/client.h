/*
 * libsluice: the C client of the native protocol (docs/spec/CLIENT.md,
 * docs/spec/PROTOCOL.md). A sender opens one stream to one gateway, appends
 * readings, and the library cuts, checksums, pipelines, resends and counts.
 *
 *     struct sl_client_options o;
 *     sl_client_options_init(&o);
 *     o.stream_id = 42;
 *     struct sl_client *c;
 *     int rc = sl_client_open(&c, "tcp://127.0.0.1:7400", &o);
 *     if (rc < 0) { fprintf(stderr, "%s\n", sl_client_strerror(rc)); ... }
 *     sl_client_append(c, 17, time_us, 21.5f);          (any number of times)
 *     rc = sl_client_flush(c, 10000);                    (0: every batch acked)
 *     sl_client_close(c);
 *
 * Contract:
 * - Every function that can fail returns a negative errno-style code
 *   (-EINVAL, -ETIMEDOUT, -EAGAIN, ...) or one of SL_CLIENT_E* below;
 *   sl_client_strerror() names any of them. Success is 0 (or a count).
 * - Memory: sl_client_open allocates everything the client will ever use
 *   (sl_client_memory() says how much, from the options: about
 *   (window + 1) x (36 + 12 x batch_readings) bytes plus a few KiB) and
 *   nothing after it; no call on the send path allocates.
 * - No global state: one client per thread (or guarded by the caller's lock);
 *   clients on different threads never share anything. SIGPIPE is never
 *   raised (every write uses MSG_NOSIGNAL).
 * - Identity: the first batch_seq is the current time in microseconds since
 *   the Unix epoch unless options.first_seq is given, so a sender restarted
 *   with the same stream_id keeps increasing (PROTOCOL.md, "Resending").
 * - TCP (tcp://HOST:PORT): up to `window` batches in flight, acks matched in
 *   order. After OVERLOADED, a lost connection, an EOF or an ack deadline,
 *   the client waits a capped exponential backoff with jitter, reconnects if
 *   needed, and resends every batch without an OK or DUPLICATE ack, oldest
 *   first, each under its original batch_seq. It never gives up on its own:
 *   the caller's timeouts (block_timeout_ms, sl_client_flush) bound the wait.
 *   BAD_CRC, MALFORMED and UNAUTHORIZED acks stop the client for good
 *   (SL_CLIENT_EREFUSED: a bug or a key problem; resending cannot help).
 * - UDP (udp://HOST:PORT): fire and forget; a frame fits one datagram of at
 *   most frame_bytes_max bytes (default 1,472: no IP fragmentation on an
 *   Ethernet path). Frames are sent as soon as they are cut, or in rounds of
 *   `window` frames (one sendmmsg, UDP GSO where the kernel has it) when
 *   options.window > 1.
 * - Frames are cut at batch_readings readings, at frame_bytes_max bytes, and
 *   before a reading whose time lies more than 2^32 - 1 us (71.6 minutes)
 *   after the frame's base time or before it; sl_client_push() and
 *   sl_client_flush() cut the frame being filled.
 * - Blocking: an append that needs a free frame slot, and a push that needs
 *   the socket, wait up to options.block_timeout_ms while driving the
 *   connection (default 60 s; SL_CLIENT_FOREVER waits without a bound; the
 *   flag SL_CLIENT_NONBLOCK never waits and returns -EAGAIN). A non-blocking
 *   caller drives the client from its own event loop with sl_client_fd(),
 *   sl_client_events(), sl_client_timeout_ms() and sl_client_service(); under
 *   SL_CLIENT_NONBLOCK appends never touch the socket (frames cut by them are
 *   written by the next service, push or flush, several in one system call).
 */
#ifndef SLUICE_CLIENT_H
#define SLUICE_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SL_CLIENT_VERSION "1"

/* Option defaults and hard limits. */
#define SL_CLIENT_BATCH_DEFAULT 1000u       /* readings a frame */
#define SL_CLIENT_BATCH_MAX 65535u          /* the protocol's count limit */
#define SL_CLIENT_UDP_FRAME_DEFAULT 1472u   /* bytes: 1,500 MTU - IP - UDP headers */
#define SL_CLIENT_UDP_FRAME_MAX 65507u      /* bytes: the largest UDP payload */
#define SL_CLIENT_WINDOW_DEFAULT 64u        /* TCP batches in flight */
#define SL_CLIENT_WINDOW_MAX 65536u
#define SL_CLIENT_MEMORY_MAX (1ull << 32)   /* 4 GiB: open refuses a larger plan */
#define SL_CLIENT_BLOCK_DEFAULT_MS 60000
#define SL_CLIENT_FOREVER (-1)              /* block_timeout_ms, flush timeout */
#define SL_CLIENT_CONNECT_DEFAULT_MS 5000u
#define SL_CLIENT_ACK_DEFAULT_MS 30000u     /* no ack this long: reconnect and resend */
#define SL_CLIENT_BACKOFF_MIN_DEFAULT_MS 10u
#define SL_CLIENT_BACKOFF_MAX_DEFAULT_MS 2000u
#define SL_CLIENT_TIMEOUT_MAX_MS 86400000u  /* any timeout option: at most a day */

/* options.flags */
#define SL_CLIENT_NONBLOCK 0x1u /* never wait: -EAGAIN where a call would */
#define SL_CLIENT_NO_ACK 0x2u   /* TCP: frames without ACK_REQUESTED (nothing is resent) */
#define SL_CLIENT_NO_GSO 0x4u   /* UDP: one datagram per sendmmsg entry */

/* Errors of the library's own (errno codes are used where one fits). */
#define SL_CLIENT_EBASE 10000
#define SL_CLIENT_ETARGET (-(SL_CLIENT_EBASE + 1))   /* not tcp://HOST:PORT or udp://HOST:PORT */
#define SL_CLIENT_ERESOLVE (-(SL_CLIENT_EBASE + 2))  /* the host name did not resolve */
#define SL_CLIENT_EREFUSED (-(SL_CLIENT_EBASE + 3))  /* BAD_CRC, MALFORMED or UNAUTHORIZED ack */
#define SL_CLIENT_EPROTOCOL (-(SL_CLIENT_EBASE + 4)) /* an ack that breaks PROTOCOL.md */
#define SL_CLIENT_ECLOSED (-(SL_CLIENT_EBASE + 5))   /* used after sl_client_finish */

struct sl_client;

/* What happened to one batch, for options.on_ack (TCP with acks only). */
struct sl_client_ack {
    uint64_t batch_seq;
    uint8_t status;      /* enum sl_status of sluice/protocol.h */
    uint32_t count;      /* readings in the batch */
    uint32_t accepted;   /* from the ack */
    uint32_t rejected;
    int64_t latency_ns;  /* from the write of the frame to this ack (CLOCK_MONOTONIC) */
};

struct sl_client_options {
    uint32_t stream_id;         /* the sender's identity (PROTOCOL.md) */
    uint64_t first_seq;         /* 0: the current time in us since the epoch */
    uint32_t batch_readings;    /* 0: 1,000; 1..65,535 */
    uint32_t frame_bytes_max;   /* 0: 1,472 on UDP, no cap on TCP; at least 48 */
    uint32_t window;            /* 0: TCP 64 batches in flight, UDP 1 frame a send */
    int32_t block_timeout_ms;   /* 0: 60,000; SL_CLIENT_FOREVER: no bound */
    uint32_t connect_timeout_ms;     /* 0: 5,000 */
    uint32_t ack_timeout_ms;         /* 0: 30,000 */
    uint32_t backoff_min_ms;         /* 0: 10 */
    uint32_t backoff_max_ms;         /* 0: 2,000 */
    uint32_t flags;                  /* SL_CLIENT_NONBLOCK | SL_CLIENT_NO_ACK | SL_CLIENT_NO_GSO */
    uint32_t socket_buffer_bytes;    /* 0: the kernel's default SO_SNDBUF */
    /* Called from inside the client's calls, once per acked batch (OK,
     * DUPLICATE) and once per OVERLOADED answer. Must not call the client. */
    void (*on_ack)(void *context, const struct sl_client_ack *ack);
    void *context;
};

/* Counts since open. Every batch is counted once in `batches`, however often it is resent. */
struct sl_client_counts {
    uint64_t batches;     /* frames cut */
    uint64_t readings;    /* readings in them */
    uint64_t sent;        /* frames written whole to a socket (TCP) or handed to the kernel (UDP), each once */
    uint64_t sent_readings; /* readings in them */
    uint64_t acked;       /* batches answered OK */
    uint64_t duplicate;   /* batches answered DUPLICATE (already stored) */
    uint64_t accepted;    /* readings stored, from OK acks */
    uint64_t rejected;    /* readings refused inside OK batches (NaN, out of order, ...) */
    uint64_t overloaded;  /* OVERLOADED answers */
    uint64_t resent;      /* frames written again after OVERLOADED or a lost connection */
    uint64_t reconnects;  /* connections opened after the first one */
    uint64_t sockets;     /* sockets opened (an outside event loop re-registers when this changes) */
    uint64_t connect_failures; /* connection attempts that failed or timed out */
    uint64_t ack_timeouts;     /* connections given up for want of an ack */
    uint64_t refused;     /* BAD_CRC, MALFORMED, UNAUTHORIZED answers (the client stops) */
    uint64_t refused_seq; /* the batch_seq of the refused batch */
    uint8_t refused_status; /* and its status (enum sl_status) */
    uint64_t udp_errors;  /* UDP sends the kernel refused (e.g. nothing listening) */
    uint64_t pending;     /* TCP: batches cut and not yet acked; UDP: not yet sent */
    uint64_t buffered;    /* readings in the frame being filled */
    uint64_t next_seq;    /* batch_seq of the next frame */
};

/* Fill *o with the defaults (all zero: the library's defaults). */
void sl_client_options_init(struct sl_client_options *o);

/* Bytes sl_client_open would allocate for these options, or a negative code. */
int64_t sl_client_memory(const char *target, const struct sl_client_options *o);

/*
 * Open a sender. Parses and resolves the target, allocates every buffer,
 * and starts connecting (TCP); a gateway that is not up yet is not an error:
 * the client keeps trying in the background of later calls. On success *out
 * is the client and 0 is returned; otherwise *out is NULL.
 */
int sl_client_open(struct sl_client **out, const char *target, const struct sl_client_options *o);

/* Append one reading (time in us since the epoch). 0, or a negative code. */
int sl_client_append(struct sl_client *c, uint32_t sensor_id, int64_t time_us, float value);

/*
 * Append n readings from arrays read in place: ids[i], values[i] and
 * times_us[i] (times_us NULL: every reading at the current time). Returns
 * how many were taken: n, or fewer when a wait for room ran out (then
 * -ETIMEDOUT or -EAGAIN if none was taken), or a negative code.
 */
int64_t sl_client_append_array(struct sl_client *c, const uint32_t *ids, const float *values,
                               const int64_t *times_us, size_t n);

/* Readings that can be appended and cut into frames now, without waiting (times in order). */
uint64_t sl_client_room(const struct sl_client *c);

/* Cut the frame being filled and write what the socket takes now (no wait for acks). */
int sl_client_push(struct sl_client *c);

/*
 * Push, then wait until every batch is acknowledged (TCP) or sent (UDP),
 * reconnecting and resending as needed, for at most timeout_ms
 * (SL_CLIENT_FOREVER: no bound). 0, -ETIMEDOUT, or a stopping error.
 */
int sl_client_flush(struct sl_client *c, int timeout_ms);

/*
 * Flush, then shut the write side and wait for the gateway's end of stream
 * (every ack read), for at most timeout_ms; after it only counts and close
 * work. Senders without acks (SL_CLIENT_NO_ACK) learn this way that the
 * gateway read everything.
 */
int sl_client_finish(struct sl_client *c, int timeout_ms);

/* Drive the connection once: wait at most timeout_ms for the socket or a timer, then read and write. */
int sl_client_poll(struct sl_client *c, int timeout_ms);

/*
 * For an outside event loop (epoll, edge- or level-triggered): after a
 * readiness event, pass its poll-style revents (POLLIN, POLLOUT, POLLERR,
 * POLLHUP; 0 for a timer) to sl_client_service, which reads, writes and
 * reconnects without waiting. The socket can change across reconnects:
 * re-register when sl_client_fd() returns another descriptor. The client
 * remembers readiness until a read or write returns EAGAIN, so edge-triggered
 * registration works.
 */
int sl_client_service(struct sl_client *c, short revents);

/* The socket (-1 while none), the poll events it waits for, the next timer. */
int sl_client_fd(const struct sl_client *c);
short sl_client_events(const struct sl_client *c);
int sl_client_timeout_ms(const struct sl_client *c); /* -1: no timer */

/* Copy the counts. */
void sl_client_counts(const struct sl_client *c, struct sl_client_counts *out);

/* The last connection or socket error (a negative code), or 0: why a flush is still waiting. */
int sl_client_last_error(const struct sl_client *c);

/* Close the socket and free everything, without waiting (call flush first to keep data). NULL is fine. */
void sl_client_close(struct sl_client *c);

/* A short English text for any code this library returns ("unknown error" for others). */
const char *sl_client_strerror(int code);

#ifdef __cplusplus
}
#endif

#endif
