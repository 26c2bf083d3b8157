/*
 * The daemon's configuration: every limit with its default, its hard
 * maximum and its memory cost (see sl_config_usage and README.md), parsed
 * from an optional `key = value` file and then from the command line (flags
 * win). Start-up and SIGHUP, main thread.
 */
#ifndef SL_DAEMON_CONFIG_H
#define SL_DAEMON_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "api/http.h"
#include "core/say.h"
#include "net/ingest.h"
#include "net/lines.h"
#include "store/log.h"
#include "store/series.h"
#include "store/store.h"
#include "mqtt/subscriber.h"
#include "uplink/uplink.h"

#define SL_ADDR_BYTES 256
#define SL_PATH_BYTES 4096
/* The config file: a regular file of at most this many bytes, lines of at most this many. */
#define SL_CONFIG_FILE_BYTES_MAX (1u << 20)
#define SL_CONFIG_LINE_BYTES_MAX 1024u
/* Options in the table (config.c asserts its table fits). */
#define SL_CONFIG_OPTS_MAX 96u

/* A repeatable option's values (--uplink, --uplink-tag, ...), as given; parsed in finish. */
#define SL_CONFIG_LIST_MAX 32u /* the longest list: --mqtt-subscribe */
#define SL_CONFIG_LIST_ITEM_BYTES (SL_PATH_BYTES + SL_UPLINK_NAME_MAX + 2)
struct sl_config_list {
    uint32_t count;
    char items[SL_CONFIG_LIST_MAX][SL_CONFIG_LIST_ITEM_BYTES];
};

/* Where an option's value came from. */
enum sl_config_source { SL_CONFIG_DEFAULT = 0, SL_CONFIG_FILE = 1, SL_CONFIG_FLAG = 2 };

struct sl_config {
    char udp[SL_ADDR_BYTES];  /* HOST:PORT, or "off" */
    char tcp[SL_ADDR_BYTES];  /* HOST:PORT, or "off" */
    char http[SL_ADDR_BYTES]; /* HOST:PORT, or "off" */
    char influx_tcp[SL_ADDR_BYTES]; /* line protocol over TCP: HOST:PORT, or "off" (default) */
    char influx_udp[SL_ADDR_BYTES]; /* line protocol over UDP: HOST:PORT, or "off" (default) */
    uint32_t series_max;            /* --max-series */
    uint32_t series_id_base;        /* --series-id-base */
    uint64_t series_name_bytes;     /* --series-name-bytes */
    uint64_t http_max_body_bytes;   /* --http-max-body */
    uint32_t http_writes_max;       /* --max-http-writes */
    char data_dir[SL_PATH_BYTES];
    char config_file[SL_PATH_BYTES];
    struct sl_store_config store;
    uint32_t streams_max; /* per transport: TCP dedup and UDP gap tracking */
    uint32_t tcp_connections_max;
    uint32_t tcp_connections_per_ip_max; /* default: a quarter of tcp_connections_max, at least 1 */
    uint32_t tcp_idle_timeout_s;
    uint32_t tcp_frame_timeout_ms;
    uint32_t udp_batch;
    uint32_t udp_rcvbuf_bytes;
    uint32_t http_connections_max;
    uint32_t http_connections_per_ip_max; /* default: a quarter of http_connections_max, at least 1 */
    uint32_t http_timeout_s;
    uint32_t http_header_timeout_ms;
    uint32_t http_threads;
    struct sl_log_config log;         /* dir is data_dir */
    uint64_t checkpoint_every_bytes;  /* 0 = no checkpoints; default log bytes max / 4 */
    bool apply_thread;                /* apply the store on a second thread (default on) */
    char io_faults[512];              /* testing: inject I/O faults (see core/io.h) */
    bool allow_overcommit;            /* start even when the plan exceeds MemAvailable */
    bool log_json;                    /* --log-format json */
    enum sl_say_level log_level;      /* --log-level */
    bool print_memory_plan;
    bool quiet;
    /* Uplinks: the lists as given, and what finish() built of them with the scalar options. */
    struct sl_config_list uplink_specs, uplink_tag_specs, uplink_token_specs, uplink_mode_specs,
        uplink_stream_id_specs;
    struct sl_uplinks_config uplinks;
    /* MQTT: the subscriptions as given, and the subscriber's configuration. */
    struct sl_config_list mqtt_subscribe_specs;
    struct sl_mqtt_config mqtt;
    /* Per option (table order): where its value came from, and its line in the file. */
    uint8_t source[SL_CONFIG_OPTS_MAX];
    uint32_t file_line[SL_CONFIG_OPTS_MAX];
};

void sl_config_default(struct sl_config *config);

/*
 * Parse argv (and the --config file it names, first). Returns 0 to run, 1
 * when --help or --version was printed (exit 0), or -1 with a message in
 * err naming the flag or FILE:LINE (exit 2). `config` must hold the
 * defaults (sl_config_default). SIGHUP calls it again on a fresh struct
 * with the same argv: the file is re-read and the flags still win.
 */
int sl_config_parse(struct sl_config *config, int argc, char **argv, char *err, uint32_t err_bytes);

/* A reason into err (printf-style), and -1: the option parsers' (here, uplink/, mqtt/) way to fail.
 */
int sl_config_fail(char *err, uint32_t err_bytes, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Split "HOST:PORT" (or "[V6]:PORT") into host and port. 0, or -1 with a
 * reason in err ("'127.0.0.1' is not HOST:PORT").
 */
int sl_config_split_addr(const char *addr, char *host, uint32_t host_bytes, uint16_t *port,
                         char *err, uint32_t err_bytes);

/*
 * Parse a duration: a whole number and a unit, "250ms", "10s", "1m", "1h",
 * "1d". Returns microseconds, SL_CONFIG_NO_UNIT for a bare number ("10"),
 * or -1 when otherwise invalid.
 */
#define SL_CONFIG_NO_UNIT (-2)
int64_t sl_config_parse_duration_us(const char *text);

/*
 * Compare two parsed configurations key by key, for SIGHUP: calls `changed`
 * once for each option whose value differs, with its name, both values as
 * text and whether it can change while running (`live`). Returns the number
 * of differences.
 */
typedef void (*sl_config_change_fn)(void *arg, const char *key, const char *old_value,
                                    const char *new_value, bool live);
uint32_t sl_config_diff(const struct sl_config *old_config, const struct sl_config *new_config,
                        sl_config_change_fn changed, void *arg);

/*
 * Call `overridden` for each key the config file sets that a command-line
 * flag overrides (the flag wins), with its line in the file. Returns the
 * count. For start-up and SIGHUP's info lines.
 */
typedef void (*sl_config_override_fn)(void *arg, const char *key, uint32_t file_line);
uint32_t sl_config_overridden(const struct sl_config *config, sl_config_override_fn overridden,
                              void *arg);

/* Print the usage text to stdout. */
void sl_config_usage(void);

#endif
