/*
 * The HTTP query API and /metrics (docs/spec/HTTP_API.md), served by
 * libmicrohttpd's thread pool (`threads` workers), with a connection table
 * of our own (a limit, a per-address cap, a header deadline, eviction of the
 * connection idle or incomplete longest when the table is full), a
 * per-connection memory limit and an inactivity timeout, so a slow or
 * hostile client costs a bounded, planned amount, never delays another
 * client and never reaches the ingest thread. Large responses are produced
 * in bounded pieces from planned buffers. Handlers read the store only
 * through its lock-free reader API (snapshots), so serving HTTP never
 * blocks ingestion.
 */
#ifndef SL_API_HTTP_H
#define SL_API_HTTP_H

#include <stdbool.h>
#include <stdint.h>

#include "core/live.h"
#include "core/plan.h"
#include "net/counters.h"
#include "net/lines.h"
#include "store/checkpoint.h"
#include "store/log.h"
#include "store/recover.h"
#include "store/series.h"
#include "store/store.h"
#include "store/streams.h"

/* The InfluxDB 1.x API version GET /ping announces (X-Influxdb-Version). */
#define SL_HTTP_INFLUX_VERSION "1.8.10"
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
/* MHD's limit is ours plus this: room for newcomers while evicted connections close. */
#define SL_HTTP_CONNECTIONS_SLACK 16u
/* One piece of a large response (readings, the sensor list): a planned buffer per connection. */
#define SL_HTTP_PIECE_BYTES (32u * 1024)
/* The /metrics text, built in the worker's planned buffer (then copied once by MHD). */
#define SL_HTTP_METRICS_BODY_BYTES (64u * 1024)
/* More query parameters than this: 400 (counted in the raw request line, before MHD parses them). */
#define SL_HTTP_QUERY_PARAMS_MAX 64u
/* MHD's own cost per connection beyond its pool: struct MHD_Connection, address, epoll entry. */
#define SL_HTTP_MHD_CONNECTION_BYTES 2048u
/* The plan part for memory libmicrohttpd allocates itself (stated in the plan, not in the arena). */
#define SL_HTTP_PLAN_MHD_PART "http_mhd"

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
    const struct sl_series *series;             /* named series (lookups); may be NULL */
    struct sl_lines_hub *writes;                /* HTTP writes' slots; NULL: /write answers 404 */
    const struct sl_lines_counters *lines;      /* line protocol counters; may be NULL */
    /* One snapshot view and /metrics buffer per worker thread: sl_http_views_bytes, from the arena. */
    void *view_memory;
    /* The sorted id list for /api/v1/sensors: 2 x sensors_max u32, from the arena. */
    uint32_t *sorted_ids;
    /* The connection table and each connection's piece buffer: sl_http_connections_bytes. */
    void *connection_memory;
    const char *version;
    bool memory_locked;                /* the arena is mlocked (sluice_memory_locked) */
    uint64_t udp_receive_buffer_bytes; /* granted UDP SO_RCVBUF, read back and halved; 0: UDP off */
    const struct sl_uplinks *uplinks;  /* the forwarders (metrics, /api/v1/uplinks); may be NULL */
    struct sl_mqtt *mqtt;              /* the subscriber (metrics, /api/v1/mqtt); NULL when off */
};

struct sl_uplinks;
struct sl_mqtt;
struct sl_http; /* opaque; allocated by sl_http_start (start-up, off the ingest path) */

/*
 * Parts of the plan the API needs, in this order: "http_views"
 * (view_memory), "http_sorted_ids" (sorted_ids), "http_connections"
 * (connection_memory), all taken from the arena in that order; then
 * SL_HTTP_PLAN_MHD_PART, what libmicrohttpd mallocs itself (its pool, one
 * response buffer and its connection record, for every connection it may
 * hold), which the daemon states but does not map. `config`'s zero fields
 * mean their defaults, as in sl_http_start.
 */
void sl_http_plan(const struct sl_store_config *store_config, const struct sl_http_config *config,
                  struct sl_plan *plan);

/* Bytes of view_memory: threads x (sl_store_view_bytes + SL_HTTP_METRICS_BODY_BYTES), aligned. */
uint64_t sl_http_views_bytes(const struct sl_store_config *store_config,
                             const struct sl_http_config *config);

/* Bytes of connection_memory: (connections_max + SL_HTTP_CONNECTIONS_SLACK) x (record + piece). */
uint64_t sl_http_connections_bytes(const struct sl_http_config *config);

/*
 * Bind (or, when config->prebound, take config->listen_fd) and start
 * serving. Returns the server, or NULL with a reason in err (e.g. "http
 * 127.0.0.1:7401: Address already in use"). On failure a prebound socket
 * is closed. The context's memory blocks belong to this server alone while
 * it runs. Main thread; starts `threads` MHD workers and one watchdog.
 */
struct sl_http *sl_http_start(const struct sl_http_config *config,
                              const struct sl_http_context *context, char *err, uint32_t err_bytes);

/* The port actually bound (useful with port 0). */
uint16_t sl_http_port(const struct sl_http *http);

/* Stop serving (joins the watchdog and the workers) and free the server. Main thread. */
void sl_http_stop(struct sl_http *http);

#endif
