/*
 * The ingest thread: UDP and TCP listeners of the native protocol and one
 * epoll loop, feeding the commit pipeline (net/commit.h: the write-ahead
 * log, then the store, then the answers). The store's single writer is the
 * pipeline's apply worker (or the ingest thread itself with apply_thread
 * off).
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
#include "net/commit.h"
#include "net/counters.h"
#include "net/lines.h"
#include "net/tcp.h"
#include "store/checkpoint.h"
#include "store/log.h"
#include "store/store.h"
#include "store/streams.h"

/* UDP: datagrams per recvmmsg call, 64 KiB of buffer each. */
#define SL_UDP_BATCH_DEFAULT 64u
#define SL_UDP_BATCH_MAX 1024u
#define SL_UDP_RCVBUF_DEFAULT (32u << 20)
#define SL_UDP_RCVBUF_MAX (1u << 30)

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
    /* Line protocol (net/lines.h): on when `series` is given (the recovered registry). */
    struct sl_series *series;
    struct sl_lines_config lines;
};

struct sl_ingest {
    struct sl_ingest_config config;
    struct sl_store *store;
    struct sl_streams tcp_streams; /* exactly-once: last applied batch_seq per stream */
    struct sl_streams udp_streams; /* gap counting per stream */
    struct sl_net_counters counters;
    struct sl_commit commit; /* the one path to the log, the store and the answers */
    struct sl_tcp tcp;       /* the TCP connection table (tcp.c) */
    struct sl_lines lines;   /* line protocol in (lines.c), when config.series */
    uint8_t udp_producer;    /* UDP's id in the commit pipeline */
    int epoll_fd;
    int wake_fd; /* eventfd: sl_ingest_stop and the apply worker wake the loop */
    int udp_fd;
    int tcp_fd; /* the listener */
    uint16_t udp_port_bound;
    uint16_t tcp_port_bound;
    /* UDP receive state */
    struct mmsghdr *udp_msgs;
    struct iovec *udp_iovs;
    uint8_t *udp_buffers;  /* udp_batch x 64 KiB */
    uint8_t *udp_controls; /* udp_batch x control space for SO_RXQ_OVFL */
    int64_t next_sweep_ns;
    _Atomic int stop;
};

/* Add the ingest parts to the plan. */
void sl_ingest_plan(const struct sl_ingest_config *config, struct sl_plan *plan);

/* Descriptors the ingest side may hold at once (the daemon checks RLIMIT_NOFILE against it). */
uint64_t sl_ingest_fds_needed(const struct sl_ingest_config *config);

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

/* The thread body: runs the loop until sl_ingest_stop, then drains and closes connections. */
void *sl_ingest_run(void *ingest);

/* Ask the loop to stop (any thread, async-signal-safe). */
void sl_ingest_stop(struct sl_ingest *ingest);

/* Close the sockets after the thread has been joined. */
void sl_ingest_close(struct sl_ingest *ingest);

#endif
