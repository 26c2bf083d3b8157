/*
 * The ingest thread: UDP and TCP listeners of the native protocol, one
 * epoll loop, the sole writer of the store.
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

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/plan.h"
#include "net/counters.h"
#include "store/store.h"
#include "store/streams.h"

/* TCP: each connection holds one whole maximum frame plus its ack queue. */
#define SL_TCP_CONNECTIONS_DEFAULT 128u
#define SL_TCP_CONNECTIONS_MAX 65536u /* ~800 KiB each */
#define SL_TCP_ACKS_QUEUED 1024u      /* per connection, 32 B each */
#define SL_TCP_IDLE_TIMEOUT_S_DEFAULT 60u
#define SL_TCP_IDLE_TIMEOUT_S_MAX 86400u
/* UDP: datagrams per recvmmsg call, 64 KiB of buffer each. */
#define SL_UDP_BATCH_DEFAULT 64u
#define SL_UDP_BATCH_MAX 1024u
#define SL_UDP_RCVBUF_DEFAULT (32u << 20)
#define SL_UDP_RCVBUF_MAX (1u << 30)

struct sl_ingest_config {
    char udp_host[256]; /* empty: UDP off */
    uint16_t udp_port;
    char tcp_host[256]; /* empty: TCP off */
    uint16_t tcp_port;
    uint32_t streams_max;
    uint32_t tcp_connections_max;
    uint32_t tcp_idle_timeout_s;
    uint32_t udp_batch;
    uint32_t udp_rcvbuf_bytes;
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
    int64_t next_sweep_ns;
    _Atomic int stop;
};

/* Add the ingest parts to the plan. */
void sl_ingest_plan(const struct sl_ingest_config *config, struct sl_plan *plan);

/*
 * Take the planned parts, create and bind the sockets. Returns 0, or -1
 * with a reason in err ("tcp 127.0.0.1:7400: Address already in use").
 * Main thread, at start-up.
 */
int sl_ingest_open(struct sl_ingest *ingest, const struct sl_ingest_config *config,
                   struct sl_store *store, struct sl_arena *arena, char *err, uint32_t err_bytes);

/* The thread body: runs the loop until sl_ingest_stop, then drains and closes connections. */
void *sl_ingest_run(void *ingest);

/* Ask the loop to stop (any thread, async-signal-safe). */
void sl_ingest_stop(struct sl_ingest *ingest);

/* Close the sockets after the thread has been joined. */
void sl_ingest_close(struct sl_ingest *ingest);

#endif
