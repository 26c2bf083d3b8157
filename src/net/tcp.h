/*
 * TCP connections of the native protocol (see tcp.c): the connection
 * table, its per-address counts, and the ack queues. The ingest loop owns
 * the listening socket and the epoll set and calls in here; batches go to
 * the commit pipeline (net/commit.h), whose answers come back through
 * this table's producer callbacks.
 */
#ifndef SL_NET_TCP_H
#define SL_NET_TCP_H

#include <stdint.h>

#include "core/live.h"
#include "core/plan.h"
#include "net/commit.h"
#include "net/counters.h"
#include "net/peers.h"
#include "store/streams.h"

/* TCP: each connection holds one whole maximum frame plus its ack queue. */
#define SL_TCP_CONNECTIONS_DEFAULT 128u
#define SL_TCP_CONNECTIONS_MAX 65536u /* ~800 KiB each */
#define SL_TCP_ACKS_QUEUED 1024u      /* per connection, 32 B each */
#define SL_TCP_IDLE_TIMEOUT_S_DEFAULT 60u
#define SL_TCP_IDLE_TIMEOUT_S_MAX 86400u
#define SL_TCP_FRAME_TIMEOUT_MS_DEFAULT 5000u /* a frame completes within this of its first byte */
#define SL_TCP_FRAME_TIMEOUT_MS_MAX 3600000u
/* epoll tags of the ingest loop: the listener, and connection i as SL_TAG_CONN + i. */
#define SL_TAG_LISTEN 2u
#define SL_TAG_CONN 3u

struct sl_tcp_config {
    uint32_t connections_max;
    uint32_t idle_timeout_ms;     /* when live is NULL */
    uint32_t frame_timeout_ms;    /* when live is NULL */
    uint32_t per_ip_max;          /* when live is NULL */
    const struct sl_live *live;   /* what SIGHUP changes, or NULL */
};

struct sl_conn;

struct sl_tcp {
    struct sl_tcp_config config;
    struct sl_commit *commit;
    uint8_t producer; /* our id in the commit pipeline */
    struct sl_streams *streams; /* exactly-once: last applied batch_seq per stream */
    struct sl_net_counters *counters;
    int epoll_fd;
    int listen_fd;
    bool accept_paused;      /* out of descriptors: the listener is out of the epoll set until ... */
    int64_t accept_resume_ns; /* ... then */
    struct sl_conn *conns;
    uint32_t *conn_free; /* stack of free connection indices */
    uint32_t conn_free_count;
    uint32_t *conn_touched; /* connections with acks queued since the last flush, each once */
    uint32_t conn_touched_count;
    struct sl_peers peers; /* open connections per peer address */
};

void sl_tcp_plan(uint32_t connections_max, struct sl_plan *plan);

/*
 * Take the table from the arena; register with the commit pipeline.
 * `listen_fd` is the listening socket (in `epoll_fd` under SL_TAG_LISTEN).
 */
void sl_tcp_open(struct sl_tcp *tcp, const struct sl_tcp_config *config, struct sl_commit *commit,
                 struct sl_streams *streams, struct sl_net_counters *counters, int epoll_fd,
                 int listen_fd, struct sl_arena *arena);

/*
 * Accept up to a bounded number of pending connections. A full table
 * evicts the connection idle or with an incomplete frame longest; an
 * address at its cap is refused; out of descriptors, accepting pauses
 * (counted) and resumes at sl_tcp_tick.
 */
void sl_tcp_accept(struct sl_tcp *tcp);

/* Serve connection `index` for the epoll `events` it reported. */
void sl_tcp_event(struct sl_tcp *tcp, uint32_t index, uint32_t events);

/* Move every open connection's clocks `ns` later (at most to now): the loop stalled that long. */
void sl_tcp_excuse(struct sl_tcp *tcp, int64_t ns, int64_t now_ns);

/* Every tick: resume a paused accept when its time has come. */
void sl_tcp_tick(struct sl_tcp *tcp, int64_t now_ns);

/* Once a second: close connections idle past the timeout, frames past theirs, and drained ones. */
void sl_tcp_sweep(struct sl_tcp *tcp, int64_t now_ns);

/* At shutdown: stop accepting, serve what each connection already sent, settle, flush acks (bounded), close all. */
void sl_tcp_drain_all(struct sl_tcp *tcp);

#endif
