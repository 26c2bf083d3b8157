/*
 * The HTTP query API and /metrics (docs/spec/HTTP_API.md), served by
 * libmicrohttpd from one internal thread, with a connection limit, a
 * per-connection memory limit and a timeout, so a slow or hostile client
 * costs a bounded amount and never reaches the ingest thread. Handlers read
 * the store only through its lock-free reader API (snapshots), so serving
 * HTTP never blocks ingestion.
 */
#ifndef SL_API_HTTP_H
#define SL_API_HTTP_H

#include <stdbool.h>
#include <stdint.h>

#include "core/live.h"
#include "core/plan.h"
#include "net/counters.h"
#include "store/checkpoint.h"
#include "store/log.h"
#include "store/recover.h"
#include "store/store.h"
#include "store/streams.h"

#define SL_HTTP_CONNECTIONS_DEFAULT 64u
#define SL_HTTP_CONNECTIONS_MAX 4096u
#define SL_HTTP_CONNECTION_MEMORY_DEFAULT (64u * 1024) /* MHD's per-connection pool */
#define SL_HTTP_TIMEOUT_S_DEFAULT 10u
#define SL_HTTP_LIST_LIMIT_MAX 10000u
#define SL_HTTP_READINGS_LIMIT_MAX 1000000u
#define SL_HTTP_READINGS_LIMIT_DEFAULT 10000u

#define SL_HTTP_THREADS_DEFAULT 4u
#define SL_HTTP_THREADS_MAX 64u
#define SL_HTTP_HEADER_TIMEOUT_MS_DEFAULT 5000u

struct sl_http_config {
    /* prebound: listen_fd is a listening socket the daemon bound (sl_sock_listen); else bind host:port. */
    bool prebound;
    int listen_fd;
    char host[256];
    uint16_t port;
    uint32_t connections_max;
    uint32_t connection_memory_bytes;
    uint32_t timeout_s;
    uint32_t threads;                     /* --http-threads: requests served at once */
    uint32_t header_timeout_ms;           /* start value of live->http_header_timeout_ms */
    uint32_t connections_per_ip_max;      /* start value of live->http_connections_per_ip_max */
    struct sl_live *live;                 /* what SIGHUP changes; NULL: the values above, fixed */
};

/* What the handlers read. Everything is owned by the daemon and outlives the server. */
struct sl_http_context {
    const struct sl_store *store;
    const struct sl_net_counters *net;
    const struct sl_streams *tcp_streams;
    const struct sl_streams *udp_streams;
    const struct sl_plan *plan;
    const struct sl_log *log;                   /* health and counters; NULL in tests without one */
    const struct sl_checkpointer *checkpointer; /* counters; may be NULL */
    const struct sl_recover_result *recovery;   /* what start-up found; may be NULL */
    /* The API thread's snapshot arrays: sl_store_view_bytes(&store->config), from the arena. */
    void *view_memory;
    /* The sorted id list for /api/v1/sensors: 2 x sensors_max u32, from the arena. */
    uint32_t *sorted_ids;
    const char *version;
    bool memory_locked;                /* the arena is mlocked (sluice_memory_locked) */
    uint64_t udp_receive_buffer_bytes; /* granted UDP SO_RCVBUF, read back and halved; 0: UDP off */
};

struct sl_http; /* opaque; allocated by sl_http_start (start-up, off the ingest path) */

/* Parts of the plan the API needs (view_memory, sorted_ids). */
void sl_http_plan(const struct sl_store_config *store_config, struct sl_plan *plan);

/*
 * Bind and start serving. Returns the server, or NULL with a reason in
 * err (e.g. "127.0.0.1:7401: Address already in use"). Main thread.
 */
struct sl_http *sl_http_start(const struct sl_http_config *config,
                              const struct sl_http_context *context, char *err, uint32_t err_bytes);

/* The port actually bound (useful with port 0). */
uint16_t sl_http_port(const struct sl_http *http);

/* Stop serving and free the server. Main thread. */
void sl_http_stop(struct sl_http *http);

#endif
