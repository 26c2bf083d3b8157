/*
 * Uplinks: store-and-forward of every accepted reading from the durable log
 * to upstream engines (docs/spec/UPLINK.md): `influx://` and `influx2://`
 * (line protocol, gzip), `promrw://` (Prometheus remote write 1.0,
 * protobuf and snappy), over libcurl; `mqtt://` (one MQTT 3.1.1 message a
 * request, line protocol or one native batch frame, QoS 1), over
 * libmosquitto (mqtt_out.h).
 *
 * One forwarder thread an output. Each reads the log's segment files after
 * its cursor with its own descriptors and planned buffers, never touching
 * the ingest thread's state: it takes a record only once the commit
 * pipeline has applied it (sl_log_counters.applied_lsn), so what it reads
 * is whole and was accepted; it re-applies the store's per-reading rules
 * to forward exactly the readings the store accepted (a shadow of each
 * sensor's last time; docs/DESIGN.md says why and where it can differ),
 * encodes a request of at most --uplink-batch-bytes, sends it, and makes
 * its cursor durable (DATA_DIR/uplink/NAME.cursor) after a 2xx. Its hold on
 * the log (store/log.h) keeps the segments it still needs, within
 * --log-bytes-max, under --uplink-when-full drop|block.
 *
 * Memory: every buffer is in the plan (sl_uplinks_plan); libcurl's and
 * libsnappy's own allocations are bounded and stated there too. Nothing of
 * an uplink runs on the ingest thread except the log's `dropping` callback
 * (a mutex held for a few loads and stores).
 */
#ifndef SL_UPLINK_UPLINK_H
#define SL_UPLINK_UPLINK_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/plan.h"

#define SL_UPLINKS_MAX 8u
#define SL_UPLINK_NAME_MAX 32u
/* A URL: room for an mqtt:// topic of SL_UPLINK_TOPIC_MAX bytes after the host. */
#define SL_UPLINK_URL_BYTES 2048u
#define SL_UPLINK_TOPIC_MAX 1024u /* mqtt:// TOPIC, bytes */
#define SL_UPLINK_MQTT_PORT_DEFAULT 1883u
#define SL_UPLINK_HOST_BYTES 256u
#define SL_UPLINK_TAGS_MAX 16u
#define SL_UPLINK_TAG_BYTES 256u /* one KEY=VALUE */
#define SL_UPLINK_TOKEN_BYTES 1024u
#define SL_UPLINK_ERROR_BYTES 256u

#define SL_UPLINK_BATCH_BYTES_DEFAULT (1ull << 20)
#define SL_UPLINK_BATCH_BYTES_MIN (4ull << 10)
#define SL_UPLINK_BATCH_BYTES_MAX (64ull << 20)
#define SL_UPLINK_DEAD_BYTES_DEFAULT (64ull << 20)
#define SL_UPLINK_DEAD_BYTES_MAX (1ull << 40)
#define SL_UPLINK_TIMEOUT_MS_DEFAULT 10000u
#define SL_UPLINK_TIMEOUT_MS_MAX 600000u
#define SL_UPLINK_BACKOFF_MIN_MS 100u
#define SL_UPLINK_BACKOFF_MAX_MS_DEFAULT 30000u
#define SL_UPLINK_BACKOFF_MAX_MS_MAX 3600000u
#define SL_UPLINK_FLUSH_MS_DEFAULT 1000u
#define SL_UPLINK_FLUSH_MS_MAX 3600000u
/* What one output's libcurl handle may allocate (counted; over it a request fails and is retried). */
#define SL_UPLINK_CURL_BYTES (4ull << 20)
/* libsnappy's working memory in one compression call (its own new/delete, transient). */
#define SL_UPLINK_SNAPPY_BYTES (160ull << 10)
/* libmosquitto (no allocator hook): one message in flight, copied twice until written (its
 * message and its packet), once until its PUBACK; the handle, topic and packets beside it. */
#define SL_UPLINK_MOSQUITTO_SLACK_BYTES (16ull << 10)
/* The plan's part for those: stated, not mapped (they malloc it themselves). */
#define SL_UPLINK_PLAN_LIBRARY_PART "uplink_libraries"

enum sl_uplink_kind {
    SL_UPLINK_INFLUX = 0,
    SL_UPLINK_INFLUX2 = 1,
    SL_UPLINK_PROMRW = 2,
    SL_UPLINK_MQTT = 3
};
/* mqtt:// ?format= */
enum sl_uplink_format { SL_UPLINK_FORMAT_LINE = 0, SL_UPLINK_FORMAT_NATIVE = 1 };
enum sl_uplink_mode { SL_UPLINK_RAW = 0, SL_UPLINK_AGGREGATE = 1 };

struct sl_uplink_output_config {
    char name[SL_UPLINK_NAME_MAX + 1];
    char url[SL_UPLINK_URL_BYTES];         /* as given */
    char http_url[SL_UPLINK_URL_BYTES + 32]; /* what libcurl is given (http://..., precision=u) */
    char shown_url[SL_UPLINK_URL_BYTES + 32]; /* for metrics and the API: no credentials */
    enum sl_uplink_kind kind;
    enum sl_uplink_mode mode;
    int64_t bucket_us; /* aggregate: D */
    char token_file[4096];
    char token[SL_UPLINK_TOKEN_BYTES]; /* read at start-up from token_file */
    /* mqtt:// only */
    char host[SL_UPLINK_HOST_BYTES];     /* as given (v6 without brackets) */
    uint16_t port;                       /* default 1883 */
    char topic[SL_UPLINK_TOPIC_MAX + 1]; /* no wildcard, no '%' */
    enum sl_uplink_format format;        /* ?format=line (default) | native */
    uint32_t stream_id;                  /* native: --uplink-stream-id, else CRC-32C of the name */
    bool stream_id_set;                  /* ... given */
};

struct sl_uplinks_config {
    struct sl_uplink_output_config outputs[SL_UPLINKS_MAX];
    uint32_t count;
    char tag_keys[SL_UPLINK_TAGS_MAX][SL_UPLINK_TAG_BYTES];
    char tag_values[SL_UPLINK_TAGS_MAX][SL_UPLINK_TAG_BYTES];
    uint32_t tags_count;
    bool block;                 /* --uplink-when-full block */
    uint32_t timeout_ms;        /* --uplink-timeout */
    uint32_t backoff_max_ms;    /* --uplink-backoff-max */
    uint32_t flush_interval_ms; /* --uplink-flush-interval */
    uint64_t batch_bytes;       /* --uplink-batch-bytes */
    uint64_t dead_bytes;        /* --uplink-dead-bytes */
    uint32_t max_rate;          /* --uplink-max-rate, readings/s; 0: unlimited */
    /* From the daemon's configuration. */
    uint32_t sensors_max;
    int64_t future_skew_us;
    char data_dir[4096];
};

void sl_uplinks_config_default(struct sl_uplinks_config *config);

/*
 * Parse one `--uplink NAME=URL` into the next output: 0, or -1 with a
 * reason in err. Checks the name ([a-z0-9_]{1,32}, unique), the scheme and
 * HOST:PORT; derives http_url and shown_url.
 */
int sl_uplinks_add(struct sl_uplinks_config *config, const char *spec, char *err, uint32_t err_bytes);

/*
 * `--uplink-tag KEY=VALUE`, `--uplink-token NAME=FILE`, `--uplink-mode NAME=raw|aggregate:D`,
 * `--uplink-stream-id NAME=ID` (an mqtt:// output with format=native; ID a u32 in decimal).
 */
int sl_uplinks_add_tag(struct sl_uplinks_config *config, const char *spec, char *err,
                       uint32_t err_bytes);
int sl_uplinks_set_token(struct sl_uplinks_config *config, const char *spec, char *err,
                         uint32_t err_bytes);
int sl_uplinks_set_mode(struct sl_uplinks_config *config, const char *spec, char *err,
                        uint32_t err_bytes);
int sl_uplinks_set_stream_id(struct sl_uplinks_config *config, const char *spec, char *err,
                             uint32_t err_bytes);

/* Status codes counted per output; others fall in "other". */
#define SL_UPLINK_CODES_MAX 12u

/* What an output tells the metrics and the API (any thread reads, the forwarder writes). */
struct sl_uplink_stats {
    _Atomic uint64_t sent_readings;
    _Atomic uint64_t retries;
    _Atomic uint64_t dead_readings;
    _Atomic uint64_t dropped_log_full; /* written under the output's mutex (ingest thread) */
    _Atomic uint64_t requests_error;   /* no HTTP status: connection error, timeout */
    _Atomic uint32_t codes[SL_UPLINK_CODES_MAX];
    _Atomic uint64_t code_counts[SL_UPLINK_CODES_MAX];
    _Atomic uint64_t bytes_sent;      /* request bodies on the wire, compressed */
    _Atomic uint64_t bytes_raw;       /* the same before compression */
    _Atomic uint64_t cursor_lsn;
    _Atomic uint64_t position_bytes;  /* in the log's appended_bytes coordinate */
    _Atomic int64_t oldest_unsent_us; /* acceptance time of the oldest unsent reading; 0: none */
    _Atomic int64_t flight_first_us;  /* ... of the request in flight's; 0: none in flight */
    _Atomic int up;                   /* 1 when the last request succeeded */
    _Atomic int state;                /* enum sl_uplink_state */
    _Atomic uint64_t dead_bytes;      /* in the dead-letter files */
    pthread_mutex_t error_mu;
    char last_error[SL_UPLINK_ERROR_BYTES]; /* "" when none; under error_mu */
};

enum sl_uplink_state { SL_UPLINK_OK = 0, SL_UPLINK_RETRYING = 1, SL_UPLINK_BLOCKED = 2 };

struct sl_uplink; /* one output's forwarder: uplink.c */

struct sl_uplinks {
    struct sl_uplinks_config config;
    struct sl_uplink *outputs[SL_UPLINKS_MAX];
    uint32_t count;
    const struct sl_log *log;
    _Atomic bool stopping;
    pthread_mutex_t stop_mu;
    pthread_cond_t stop_cv;
};

/* Add every output's buffers to the plan (nothing when none is configured). */
void sl_uplinks_plan(const struct sl_uplinks_config *config, struct sl_plan *plan);

struct sl_store;
struct sl_series;
struct sl_log;

/*
 * Start-up, main thread, after recovery and before the ingest thread runs:
 * take the planned parts, read every cursor file and token, register each
 * output's hold on the log. 0, or -1 with a reason in err (exit 2).
 */
int sl_uplinks_open(struct sl_uplinks *uplinks, const struct sl_uplinks_config *config,
                    struct sl_arena *arena, struct sl_log *log, const struct sl_store *store,
                    const struct sl_series *series, char *err, uint32_t err_bytes);

/* Once, before any thread starts (libcurl's global state, with the counting allocator;
 * libmosquitto's). */
int sl_uplinks_global_init(void);

/* Start the forwarder threads. */
int sl_uplinks_start(struct sl_uplinks *uplinks, char *err, uint32_t err_bytes);

/* Ask every forwarder to stop: in-flight requests get until `deadline_ns` (monotonic). */
void sl_uplinks_stop(struct sl_uplinks *uplinks, int64_t deadline_ns);

/* Join the forwarders (every cursor is durable after). */
void sl_uplinks_join(struct sl_uplinks *uplinks);

/* Readers for metrics and /api/v1/uplinks (any thread). */
const struct sl_uplink_stats *sl_uplink_stats(const struct sl_uplinks *uplinks, uint32_t i);
const struct sl_uplink_output_config *sl_uplink_config(const struct sl_uplinks *uplinks, uint32_t i);
uint64_t sl_uplink_backlog_bytes(const struct sl_uplinks *uplinks, uint32_t i);
double sl_uplink_lag_seconds(const struct sl_uplinks *uplinks, uint32_t i);
void sl_uplink_last_error(const struct sl_uplinks *uplinks, uint32_t i, char *out, uint32_t out_bytes);
int sl_uplink_state(const struct sl_uplinks *uplinks, uint32_t i);
const char *sl_uplink_state_name(int state);
const char *sl_uplink_mode_text(const struct sl_uplink_output_config *o, char *out, uint32_t out_bytes);
/* Bytes libcurl holds now across every output (counted by the allocator given to it). */
uint64_t sl_uplinks_library_bytes(void);

#endif
