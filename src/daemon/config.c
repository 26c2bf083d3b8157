/*
 * Configuration parsing (see config.h).
 *
 * One table of options drives the command line, the config file, the usage
 * text and the SIGHUP comparison, so the four cannot drift apart. A config
 * file holds `key = value` lines whose keys are the long flag names without
 * the dashes; `#` starts a comment. The file must be a regular file of at
 * most SL_CONFIG_FILE_BYTES_MAX bytes, lines of at most
 * SL_CONFIG_LINE_BYTES_MAX, no NUL byte; it is read through a 4 KiB block,
 * so a hostile file costs a bounded read, never a spin or a split line.
 * Every number is parsed strictly (the whole string, in range), every
 * duration needs its unit, a key may be set once in the file and once on
 * the command line (the flag wins), and every error names the flag or
 * FILE:LINE and the bad value. Start-up and SIGHUP, main thread; no
 * allocation.
 */
#include "daemon/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/assert.h"

enum opt_kind {
    OPT_ADDR,
    OPT_PATH,
    OPT_U32,
    OPT_DURATION,
    OPT_WINDOWS,
    OPT_FLAG,
    OPT_BYTES,
    OPT_SYNC,
    OPT_TEXT,
    OPT_ONOFF,
    OPT_LOG_FORMAT,
    OPT_LOG_LEVEL,
    OPT_LIST,     /* repeatable; flags replace what the file gave */
    OPT_WHEN_FULL,
    OPT_MQTT /* the subscriber's words: broker, client id, username, password file */
};

struct opt {
    const char *name;
    enum opt_kind kind;
    uint64_t min, max; /* OPT_U32: value range; OPT_DURATION: microseconds */
    bool live;         /* SIGHUP applies a new value while running */
    const char *help;
};

#define SECONDS(s) (1000000 * (uint64_t)(s))

static const struct opt opts[] = {
    {"udp", OPT_ADDR, 0, 0, false, "UDP listen address HOST:PORT, or off (default 127.0.0.1:7400)"},
    {"tcp", OPT_ADDR, 0, 0, false, "TCP listen address HOST:PORT, or off (default 127.0.0.1:7400)"},
    {"http", OPT_ADDR, 0, 0, false, "HTTP API address HOST:PORT, or off (default 127.0.0.1:7401)"},
    {"influx-tcp", OPT_ADDR, 0, 0, false,
     "line protocol over TCP, HOST:PORT or PORT (loopback), or off (default off; 64 KiB a "
     "connection)"},
    {"influx-udp", OPT_ADDR, 0, 0, false,
     "line protocol over UDP, HOST:PORT or PORT (loopback), or off (default off)"},
    {"data-dir", OPT_PATH, 0, 0, false,
     "data directory, created if missing (default ./sluice-data)"},
    {"config", OPT_PATH, 0, 0, false,
     "read options from FILE (key = value lines); flags win; SIGHUP re-reads it"},
    {"max-sensors", OPT_U32, 1, SL_SENSORS_MAX, false,
     "sensor table size (default 65536, max 16777216; 80 B + ring a sensor)"},
    {"ring-readings", OPT_U32, SL_RING_READINGS_MIN, SL_RING_READINGS_MAX, false,
     "raw readings retained per sensor (default 4096, max 16777216; 8 B each)"},
    {"windows", OPT_WINDOWS, 0, 0, false,
     "rolling windows, ascending (default 10s,1m,1h; at most 8)"},
    {"ewma-half-life", OPT_DURATION, 1000, SL_WINDOW_US_MAX, false,
     "EWMA half-life in event time (default 60s)"},
    {"future-skew", OPT_DURATION, 0, SL_WINDOW_US_MAX, false,
     "readings later than now + this are rejected as future (default 300s)"},
    {"coarse-buckets", OPT_U32, 0, SL_COARSE_BUCKETS_MAX, false,
     "coarse-tier buckets spanning the longest window (default 60, 0 = off; 32 B each a sensor)"},
    {"max-series", OPT_U32, 1, SL_SERIES_MAX, false,
     "named series of the line protocol (default 65536 or --max-sensors if less, max 16777216; "
     "32-40 B each + the name; each is a sensor too)"},
    {"series-name-bytes", OPT_BYTES, 4096, SL_SERIES_NAME_BYTES_MAX, false,
     "memory for series names (default 128 B a series: 8M, max 1G)"},
    {"series-id-base", OPT_U32, 0, UINT32_MAX, false,
     "the first id a named series gets (default 2147483648 = 2^31)"},
    {"max-streams", OPT_U32, 1, SL_STREAMS_MAX, false,
     "streams tracked per transport for dedup and gaps (default 4096, max 1048576; 48 B each)"},
    {"max-tcp-connections", OPT_U32, 1, SL_TCP_CONNECTIONS_MAX, false,
     "open TCP connections; more are refused (default 128, max 65536; ~800 KiB each)"},
    {"max-tcp-connections-per-ip", OPT_U32, 1, SL_TCP_CONNECTIONS_MAX, true,
     "TCP connections from one address (default a quarter of --max-tcp-connections)"},
    {"tcp-idle-timeout", OPT_DURATION, SECONDS(1), SECONDS(SL_TCP_IDLE_TIMEOUT_S_MAX), true,
     "close a TCP connection idle this long (default 60s, max 1d)"},
    {"tcp-frame-timeout", OPT_DURATION, 100000, (uint64_t)SL_TCP_FRAME_TIMEOUT_MS_MAX * 1000, true,
     "a frame must be complete this soon after its first byte (default 5s, max 1h)"},
    {"udp-batch", OPT_U32, 1, SL_UDP_BATCH_MAX, false,
     "datagrams per recvmmsg call (default 64; 64 KiB each)"},
    {"udp-rcvbuf", OPT_U32, 65536, SL_UDP_RCVBUF_MAX, false,
     "UDP socket receive buffer bytes (default 33554432)"},
    {"max-http-connections", OPT_U32, 1, SL_HTTP_CONNECTIONS_MAX, false,
     "open HTTP connections (default 64, max 4096; 64 KiB each)"},
    {"max-http-connections-per-ip", OPT_U32, 1, SL_HTTP_CONNECTIONS_MAX, true,
     "HTTP connections from one address (default a quarter of --max-http-connections)"},
    {"http-threads", OPT_U32, 1, SL_HTTP_THREADS_MAX, false,
     "HTTP requests served at once (default 4, max 64)"},
    {"http-max-body", OPT_BYTES, 4096, SL_LINES_HTTP_BODY_MAX, false,
     "largest write body, after gzip too (default 32M, max 1G)"},
    {"max-http-writes", OPT_U32, 1, SL_LINES_HTTP_WRITES_MAX, false,
     "write bodies held at once (default 4, max 64; --http-max-body each)"},
    {"http-timeout", OPT_DURATION, SECONDS(1), SECONDS(3600), true,
     "close an idle HTTP connection (default 10s, max 1h)"},
    {"http-header-timeout", OPT_DURATION, 100000, SECONDS(3600), true,
     "request line and headers must arrive this soon (default 5s, max 1h)"},
    {"sync", OPT_SYNC, 0, 0, false,
     "always: fdatasync before any OK ack (default); batch: every --sync-interval; never: the "
     "OS's"},
    {"sync-interval", OPT_DURATION, 1000, (uint64_t)SL_LOG_SYNC_INTERVAL_MS_MAX * 1000, false,
     "with --sync batch: how often to fdatasync the log (default 100ms)"},
    {"log-bytes-max", OPT_BYTES, 2 * SL_LOG_SEGMENT_BYTES_MIN, SL_LOG_BYTES_MAX_MAX, false,
     "disk for log segments; the oldest is recycled past it (default 1G)"},
    {"log-segment-bytes", OPT_BYTES, SL_LOG_SEGMENT_BYTES_MIN, SL_LOG_SEGMENT_BYTES_MAX, false,
     "size of one preallocated log segment (default 64M)"},
    {"log-buffer-bytes", OPT_BYTES, SL_LOG_BUFFER_BYTES_MIN, SL_LOG_BUFFER_BYTES_MAX, false,
     "memory for records not yet written or synced (default 32M)"},
    {"checkpoint-every", OPT_BYTES, 0, SL_LOG_BYTES_MAX_MAX, false,
     "write a checkpoint after this much log, 0 = never (default log-bytes-max / 4)"},
    {"apply-thread", OPT_ONOFF, 0, 0, false,
     "on (default): apply to the store on a second thread, beside receive and log; off: one"},
    {"uplink", OPT_LIST, 0, 0, false,
     "forward to NAME=URL: influx://, influx2:// or promrw:// HOST:PORT/PATH, or "
     "mqtt://HOST:PORT/TOPIC?format=line|native&qos=1 (repeatable, at most 8; "
     "docs/spec/UPLINK.md)"},
    {"uplink-tag", OPT_LIST, 0, 0, false, "KEY=VALUE added to everything forwarded (repeatable)"},
    {"uplink-token", OPT_LIST, 0, 0, false,
     "NAME=FILE: the output's token (influx2://: Authorization: Token; repeatable)"},
    {"uplink-mode", OPT_LIST, 0, 0, false,
     "NAME=raw (default) or NAME=aggregate:D: count/mean/min/max per D (repeatable)"},
    {"uplink-stream-id", OPT_LIST, 0, 0, false,
     "NAME=ID: the stream_id of an mqtt:// format=native output (default: CRC-32C of NAME)"},
    {"uplink-when-full", OPT_WHEN_FULL, 0, 0, false,
     "the log is full and an output still needs its oldest segment: drop (default) or block"},
    {"uplink-timeout", OPT_DURATION, 100000, (uint64_t)SL_UPLINK_TIMEOUT_MS_MAX * 1000, false,
     "one request's deadline, then it is retried (default 10s)"},
    {"uplink-backoff-max", OPT_DURATION, 100000, (uint64_t)SL_UPLINK_BACKOFF_MAX_MS_MAX * 1000,
     false, "retries back off from 100ms up to this, with full jitter (default 30s)"},
    {"uplink-flush-interval", OPT_DURATION, 1000, (uint64_t)SL_UPLINK_FLUSH_MS_MAX * 1000, false,
     "a request leaves at most this long after its oldest reading was accepted (default 1s)"},
    {"uplink-batch-bytes", OPT_BYTES, SL_UPLINK_BATCH_BYTES_MIN, SL_UPLINK_BATCH_BYTES_MAX, false,
     "a request's size before compression (default 1M, at most 64M); each output plans about "
     "7x this (line protocol) or 10x (remote write)"},
    {"uplink-dead-bytes", OPT_BYTES, 4096, SL_UPLINK_DEAD_BYTES_MAX, false,
     "each output's dead-letter files, the oldest half dropped beyond it (default 64M)"},
    {"uplink-max-rate", OPT_U32, 0, UINT32_MAX, false,
     "readings a second each output sends at most, 0 = unlimited (default 0)"},
    {"mqtt-broker", OPT_MQTT, 0, 0, false,
     "subscribe at this broker: mqtt://HOST[:PORT] (port 1883), or off (default; MQTT.md)"},
    {"mqtt-subscribe", OPT_LIST, 0, 0, true,
     "FILTER=native|line|value, QoS 1 (repeatable, at most 32; SIGHUP applies changes)"},
    {"mqtt-client-id", OPT_MQTT, 0, 0, false,
     "the client id, fixed so the session persists (default sluice-<hostname>)"},
    {"mqtt-username", OPT_MQTT, 0, 0, false, "the username the broker asks for (default none)"},
    {"mqtt-password-file", OPT_MQTT, 0, 0, false,
     "a file holding the password (read at start; default none)"},
    {"mqtt-keepalive", OPT_DURATION, SECONDS(SL_MQTT_KEEPALIVE_S_MIN),
     SECONDS(SL_MQTT_KEEPALIVE_S_MAX), false, "MQTT keepalive (default 30s, 5s to 65535s)"},
    {"mqtt-max-payload", OPT_BYTES, SL_MQTT_PAYLOAD_MIN, SL_MQTT_PAYLOAD_MAX, false,
     "largest message taken, bigger ones counted bad (default 1M, max 64M; the round holds 2 x "
     "this, at least 4 MiB)"},
    {"log-format", OPT_LOG_FORMAT, 0, 0, true, "event lines on stderr: text (default) or json"},
    {"log-level", OPT_LOG_LEVEL, 0, 0, true, "error, warn, info (default) or debug"},
    {"io-faults", OPT_TEXT, 0, 0, false,
     "testing only: inject I/O faults, e.g. fdatasync:EIO:5-8 (core/io.h)"},
    {"allow-overcommit", OPT_FLAG, 0, 0, false,
     "start even when the memory plan exceeds MemAvailable"},
    {"print-memory-plan", OPT_FLAG, 0, 0, false, "print the memory plan and exit"},
    {"quiet", OPT_FLAG, 0, 0, false,
     "none of the stdout lines (event lines on stderr follow --log-level)"},
    {"version", OPT_FLAG, 0, 0, false, "print the version and exit"},
    {"help", OPT_FLAG, 0, 0, false, "print this help and exit"},
};
_Static_assert(SL_ARRAY_COUNT(opts) <= SL_CONFIG_OPTS_MAX,
               "SL_CONFIG_OPTS_MAX holds the option table");

void sl_config_default(struct sl_config *config)
{
    memset(config, 0, sizeof *config);
    strcpy(config->udp, "127.0.0.1:7400");
    strcpy(config->tcp, "127.0.0.1:7400");
    strcpy(config->http, "127.0.0.1:7401");
    strcpy(config->influx_tcp, "off");
    strcpy(config->influx_udp, "off");
    config->series_max = SL_SERIES_DEFAULT;
    config->series_name_bytes = SL_SERIES_NAME_BYTES_DEFAULT;
    config->series_id_base = SL_SERIES_ID_BASE_DEFAULT;
    config->http_max_body_bytes = SL_LINES_HTTP_BODY_DEFAULT;
    config->http_writes_max = SL_LINES_HTTP_WRITES_DEFAULT;
    strcpy(config->data_dir, "./sluice-data");
    sl_store_config_default(&config->store);
    config->streams_max = SL_STREAMS_DEFAULT;
    config->tcp_connections_max = SL_TCP_CONNECTIONS_DEFAULT;
    config->tcp_idle_timeout_s = SL_TCP_IDLE_TIMEOUT_S_DEFAULT;
    config->tcp_frame_timeout_ms = SL_TCP_FRAME_TIMEOUT_MS_DEFAULT;
    config->udp_batch = SL_UDP_BATCH_DEFAULT;
    config->udp_rcvbuf_bytes = SL_UDP_RCVBUF_DEFAULT;
    config->http_connections_max = SL_HTTP_CONNECTIONS_DEFAULT;
    config->http_timeout_s = SL_HTTP_TIMEOUT_S_DEFAULT;
    config->http_header_timeout_ms = SL_HTTP_HEADER_TIMEOUT_MS_DEFAULT;
    config->http_threads = SL_HTTP_THREADS_DEFAULT;
    config->apply_thread = true;
    config->log_level = SL_SAY_INFO;
    sl_log_config_default(&config->log);
    sl_uplinks_config_default(&config->uplinks);
    sl_mqtt_config_default(&config->mqtt);
    /* The per-address caps and checkpoint-every follow other options: set at the end of parsing. */
}

void sl_config_usage(void)
{
    printf("usage: sluiced [options]\n\n"
           "Sluice telemetry gateway. With no options it listens on loopback:\n"
           "native protocol on UDP and TCP 127.0.0.1:7400, HTTP API on 127.0.0.1:7401.\n\n");
    for (size_t i = 0; i < SL_ARRAY_COUNT(opts); i++) {
        const char *arg = opts[i].kind == OPT_FLAG ? "" : " VALUE";
        char left[64];
        snprintf(left, sizeof left, "--%s%s", opts[i].name, arg);
        printf("  %-36s %s%s\n", left, opts[i].help, opts[i].live ? " [SIGHUP]" : "");
    }
    printf("\nDurations need a unit: 500ms, 10s, 1m, 1h, 1d. Sizes may take K, M or G (powers of\n"
           "1024). [SIGHUP]: a changed value in the --config file is applied on SIGHUP; others\n"
           "need a restart. See README.md and docs/.\n");
}

int sl_config_fail(char *err, uint32_t err_bytes, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_bytes, fmt, ap);
    va_end(ap);
    return -1;
}

int64_t sl_config_parse_duration_us(const char *text)
{
    char *end = NULL;
    if (!isdigit((unsigned char)text[0])) {
        return -1;
    }
    errno = 0;
    unsigned long long n = strtoull(text, &end, 10);
    if (errno != 0 || n > 400ull * 24 * 3600 * 1000) {
        return -1;
    }
    uint64_t unit;
    if (*end == '\0') {
        return SL_CONFIG_NO_UNIT; /* the README promised a unit; "10" is not 10 s */
    } else if (strcmp(end, "ms") == 0) {
        unit = 1000;
    } else if (strcmp(end, "s") == 0) {
        unit = 1000000;
    } else if (strcmp(end, "m") == 0) {
        unit = 60ull * 1000000;
    } else if (strcmp(end, "h") == 0) {
        unit = 3600ull * 1000000;
    } else if (strcmp(end, "d") == 0) {
        unit = 86400ull * 1000000;
    } else {
        return -1;
    }
    if (n > (uint64_t)INT64_MAX / unit) {
        return -1;
    }
    return (int64_t)(n * unit);
}

/* A duration as text in its largest exact unit: "1h", "250ms", "0s". */
static void format_duration(char *out, size_t out_bytes, int64_t us)
{
    static const struct {
        const char *unit;
        int64_t us;
    } units[] = {{"d", 86400LL * 1000000},
                 {"h", 3600LL * 1000000},
                 {"m", 60LL * 1000000},
                 {"s", 1000000},
                 {"ms", 1000}};
    for (size_t i = 0; i < SL_ARRAY_COUNT(units); i++) {
        if (us != 0 && us % units[i].us == 0) {
            snprintf(out, out_bytes, "%lld%s", (long long)(us / units[i].us), units[i].unit);
            return;
        }
    }
    snprintf(out, out_bytes, us == 0 ? "0s" : "%lldus", (long long)us);
}

static int parse_u32(const char *text, uint64_t min, uint64_t max, uint32_t *out)
{
    char *end = NULL;
    if (!isdigit((unsigned char)text[0])) {
        return -1;
    }
    errno = 0;
    unsigned long long n = strtoull(text, &end, 10);
    if (errno != 0 || *end != '\0' || n < min || n > max) {
        return -1;
    }
    *out = (uint32_t)n;
    return 0;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s)) {
        s++;
    }
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1])) {
        s[--n] = '\0';
    }
    return s;
}

/* A size: bare bytes, or with K, M or G (powers of 1024). -1 when invalid. */
static int parse_bytes(const char *text, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end = NULL;
    if (!isdigit((unsigned char)text[0])) {
        return -1;
    }
    errno = 0;
    unsigned long long n = strtoull(text, &end, 10);
    uint64_t unit = 1;
    if (*end == 'K' || *end == 'k') {
        unit = 1ull << 10;
    } else if (*end == 'M' || *end == 'm') {
        unit = 1ull << 20;
    } else if (*end == 'G' || *end == 'g') {
        unit = 1ull << 30;
    }
    if (unit != 1) {
        end++;
    }
    if (errno != 0 || *end != '\0' || n > UINT64_MAX / unit || n * unit < min || n * unit > max) {
        return -1;
    }
    *out = n * unit;
    return 0;
}

/* "10s,1m,1h": every element a duration with its unit, none empty, at most SL_WINDOWS_MAX. */
static int parse_windows(const char *text, struct sl_store_config *store, char *err,
                         uint32_t err_bytes)
{
    char buf[512];
    if (strlen(text) >= sizeof buf) {
        return sl_config_fail(err, err_bytes, "--windows: longer than %zu bytes", sizeof buf - 1);
    }
    strcpy(buf, text);
    uint32_t count = 0;
    char *next = buf;
    for (uint32_t i = 0; next != NULL; i++) { /* one element a turn: bounded by the string */
        char *comma = strchr(next, ',');
        if (comma != NULL) {
            *comma = '\0';
        }
        char *tok = trim(next);
        next = comma != NULL ? comma + 1 : NULL;
        if (*tok == '\0') {
            return sl_config_fail(err, err_bytes,
                                  "--windows: '%s' has an empty element (number %u)", text, i + 1);
        }
        if (count == SL_WINDOWS_MAX) {
            return sl_config_fail(err, err_bytes, "--windows: '%s' has more than %u windows", text,
                                  SL_WINDOWS_MAX);
        }
        int64_t us = sl_config_parse_duration_us(tok);
        if (us == SL_CONFIG_NO_UNIT) {
            return sl_config_fail(err, err_bytes, "--windows: '%s' needs a unit: ms, s, m, h or d",
                                  tok);
        }
        if (us < 0) {
            return sl_config_fail(
                err, err_bytes, "--windows: '%s' is not a list of durations like 10s,1m,1h", text);
        }
        /* What sl_store_config_check asks, said here so that the error names the flag. */
        if (us < 1000000 || us > SL_WINDOW_US_MAX || us % 1000000 != 0) {
            return sl_config_fail(
                err, err_bytes, "--windows: '%s' is not a whole number of seconds from 1s to 366d",
                tok);
        }
        if (count > 0 && us <= store->windows_us[count - 1]) {
            return sl_config_fail(
                err, err_bytes,
                "--windows: '%s' must be ascending: '%s' is not longer than the one before", text,
                tok);
        }
        store->windows_us[count++] = us;
    }
    store->windows_count = count;
    return 0;
}

static int opt_index(const char *name)
{
    for (size_t i = 0; i < SL_ARRAY_COUNT(opts); i++) {
        if (strcmp(opts[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

/* Where each OPT_U32 option lives in struct sl_config. */
static const struct {
    const char *name;
    size_t offset;
} u32_fields[] = {
    {"max-sensors", offsetof(struct sl_config, store.sensors_max)},
    {"ring-readings", offsetof(struct sl_config, store.ring_readings)},
    {"coarse-buckets", offsetof(struct sl_config, store.coarse_buckets)},
    {"max-streams", offsetof(struct sl_config, streams_max)},
    {"max-tcp-connections", offsetof(struct sl_config, tcp_connections_max)},
    {"max-tcp-connections-per-ip", offsetof(struct sl_config, tcp_connections_per_ip_max)},
    {"udp-batch", offsetof(struct sl_config, udp_batch)},
    {"udp-rcvbuf", offsetof(struct sl_config, udp_rcvbuf_bytes)},
    {"max-http-connections", offsetof(struct sl_config, http_connections_max)},
    {"max-http-connections-per-ip", offsetof(struct sl_config, http_connections_per_ip_max)},
    {"http-threads", offsetof(struct sl_config, http_threads)},
    {"max-series", offsetof(struct sl_config, series_max)},
    {"series-id-base", offsetof(struct sl_config, series_id_base)},
    {"max-http-writes", offsetof(struct sl_config, http_writes_max)},
    {"uplink-max-rate", offsetof(struct sl_config, uplinks.max_rate)},
};

/* Where each OPT_BYTES option lives. */
static const struct {
    const char *name;
    size_t offset;
} bytes_fields[] = {
    {"log-bytes-max", offsetof(struct sl_config, log.bytes_max)},
    {"log-segment-bytes", offsetof(struct sl_config, log.segment_bytes)},
    {"log-buffer-bytes", offsetof(struct sl_config, log.buffer_bytes)},
    {"checkpoint-every", offsetof(struct sl_config, checkpoint_every_bytes)},
    {"series-name-bytes", offsetof(struct sl_config, series_name_bytes)},
    {"http-max-body", offsetof(struct sl_config, http_max_body_bytes)},
    {"uplink-batch-bytes", offsetof(struct sl_config, uplinks.batch_bytes)},
    {"uplink-dead-bytes", offsetof(struct sl_config, uplinks.dead_bytes)},
    {"mqtt-max-payload", offsetof(struct sl_config, mqtt.max_payload)},
};

static uint64_t *bytes_field(struct sl_config *c, const char *name)
{
    for (size_t i = 0; i < SL_ARRAY_COUNT(bytes_fields); i++) {
        if (strcmp(bytes_fields[i].name, name) == 0) {
            return (uint64_t *)((char *)c + bytes_fields[i].offset);
        }
    }
    SL_ASSERT(!"an OPT_BYTES option without a field");
    return NULL;
}

static uint32_t *u32_field(struct sl_config *c, const char *name)
{
    for (size_t i = 0; i < SL_ARRAY_COUNT(u32_fields); i++) {
        if (strcmp(u32_fields[i].name, name) == 0) {
            return (uint32_t *)((char *)c + u32_fields[i].offset);
        }
    }
    SL_ASSERT(!"an OPT_U32 option without a field");
    return NULL;
}

static int set_duration(struct sl_config *c, const char *name, int64_t us)
{
    if (strcmp(name, "ewma-half-life") == 0) {
        c->store.ewma_half_life_us = us;
    } else if (strcmp(name, "future-skew") == 0) {
        c->store.future_skew_us = us;
    } else if (strcmp(name, "tcp-idle-timeout") == 0) {
        c->tcp_idle_timeout_s = (uint32_t)(us / 1000000);
    } else if (strcmp(name, "tcp-frame-timeout") == 0) {
        c->tcp_frame_timeout_ms = (uint32_t)(us / 1000);
    } else if (strcmp(name, "http-timeout") == 0) {
        c->http_timeout_s = (uint32_t)(us / 1000000);
    } else if (strcmp(name, "http-header-timeout") == 0) {
        c->http_header_timeout_ms = (uint32_t)(us / 1000);
    } else if (strcmp(name, "sync-interval") == 0) {
        c->log.sync_interval_ms = (uint32_t)(us / 1000);
    } else if (strcmp(name, "mqtt-keepalive") == 0) {
        c->mqtt.keepalive_s = (uint32_t)(us / 1000000);
    } else if (strcmp(name, "uplink-timeout") == 0) {
        c->uplinks.timeout_ms = (uint32_t)(us / 1000);
    } else if (strcmp(name, "uplink-backoff-max") == 0) {
        c->uplinks.backoff_max_ms = (uint32_t)(us / 1000);
    } else if (strcmp(name, "uplink-flush-interval") == 0) {
        c->uplinks.flush_interval_ms = (uint32_t)(us / 1000);
    } else {
        return -1;
    }
    return 0;
}

/* The value set_duration stored, in microseconds (as stored: whole seconds or milliseconds). */
static int64_t get_duration(const struct sl_config *c, const char *name)
{
    if (strcmp(name, "ewma-half-life") == 0)
        return c->store.ewma_half_life_us;
    if (strcmp(name, "future-skew") == 0)
        return c->store.future_skew_us;
    if (strcmp(name, "tcp-idle-timeout") == 0)
        return (int64_t)c->tcp_idle_timeout_s * 1000000;
    if (strcmp(name, "tcp-frame-timeout") == 0)
        return (int64_t)c->tcp_frame_timeout_ms * 1000;
    if (strcmp(name, "http-timeout") == 0)
        return (int64_t)c->http_timeout_s * 1000000;
    if (strcmp(name, "http-header-timeout") == 0)
        return (int64_t)c->http_header_timeout_ms * 1000;
    if (strcmp(name, "sync-interval") == 0)
        return (int64_t)c->log.sync_interval_ms * 1000;
    if (strcmp(name, "mqtt-keepalive") == 0)
        return (int64_t)c->mqtt.keepalive_s * 1000000;
    if (strcmp(name, "uplink-timeout") == 0)
        return (int64_t)c->uplinks.timeout_ms * 1000;
    if (strcmp(name, "uplink-backoff-max") == 0)
        return (int64_t)c->uplinks.backoff_max_ms * 1000;
    if (strcmp(name, "uplink-flush-interval") == 0)
        return (int64_t)c->uplinks.flush_interval_ms * 1000;
    SL_ASSERT(!"an OPT_DURATION option without a field");
    return 0;
}

static int set_string(char *dst, size_t dst_bytes, const char *value)
{
    if (value[0] == '\0' || strlen(value) >= dst_bytes) {
        return -1;
    }
    strcpy(dst, value);
    return 0;
}

static char *addr_field(struct sl_config *c, const char *name)
{
    return strcmp(name, "udp") == 0          ? c->udp
           : strcmp(name, "tcp") == 0        ? c->tcp
           : strcmp(name, "influx-tcp") == 0 ? c->influx_tcp
           : strcmp(name, "influx-udp") == 0 ? c->influx_udp
                                             : c->http;
}

static bool *flag_field(struct sl_config *c, const char *name)
{
    if (strcmp(name, "quiet") == 0)
        return &c->quiet;
    if (strcmp(name, "allow-overcommit") == 0)
        return &c->allow_overcommit;
    if (strcmp(name, "print-memory-plan") == 0)
        return &c->print_memory_plan;
    return NULL; /* help, version: acted on at once */
}

static int apply_addr(struct sl_config *c, const struct opt *o, const char *value, char *err,
                      uint32_t err_bytes)
{
    char loopback[SL_ADDR_BYTES];
    bool bare_port = value[0] != '\0' && strspn(value, "0123456789") == strlen(value);
    if (strncmp(o->name, "influx-", 7) == 0 && (bare_port || value[0] == ':')) {
        /* The line listeners take a bare port (or :PORT) as loopback (LINE_PROTOCOL.md). */
        int n = snprintf(loopback, sizeof loopback, "127.0.0.1%s%s", bare_port ? ":" : "", value);
        if (n < 0 || (size_t)n >= sizeof loopback) {
            return sl_config_fail(err, err_bytes, "--%s: bad value '%s'", o->name, value);
        }
        value = loopback;
    }
    if (set_string(addr_field(c, o->name), SL_ADDR_BYTES, value) != 0) {
        return sl_config_fail(err, err_bytes, "--%s: bad value '%s'", o->name, value);
    }
    if (strcmp(value, "off") == 0) {
        return 0;
    }
    char host[SL_ADDR_BYTES], why[300];
    uint16_t port;
    if (sl_config_split_addr(value, host, sizeof host, &port, why, sizeof why) != 0) {
        return sl_config_fail(err, err_bytes, "--%s: %s", o->name,
                              why); /* why: its own buffer, never err */
    }
    return 0;
}

static int apply_duration(struct sl_config *c, const struct opt *o, const char *value, char *err,
                          uint32_t err_bytes)
{
    int64_t us = sl_config_parse_duration_us(value);
    if (us == SL_CONFIG_NO_UNIT) {
        return sl_config_fail(err, err_bytes, "--%s: '%s' needs a unit: ms, s, m, h or d", o->name,
                              value);
    }
    if (us < (int64_t)o->min || (uint64_t)us > o->max) {
        char lo[32], hi[32];
        format_duration(lo, sizeof lo, (int64_t)o->min);
        format_duration(hi, sizeof hi, (int64_t)o->max);
        return sl_config_fail(err, err_bytes,
                              "--%s: '%s' is not a duration from %s to %s (e.g. 10s, 1m)", o->name,
                              value, lo, hi);
    }
    return set_duration(c, o->name, us);
}

static int apply_bytes(struct sl_config *c, const struct opt *o, const char *value, char *err,
                       uint32_t err_bytes)
{
    uint64_t bytes;
    if (parse_bytes(value, o->min, o->max, &bytes) != 0) {
        return sl_config_fail(err, err_bytes,
                              "--%s: '%s' is not a size from %" PRIu64 " to %" PRIu64 " bytes",
                              o->name, value, o->min, o->max);
    }
    if (strcmp(o->name, "log-segment-bytes") == 0 && bytes % 4096 != 0) {
        /* segments are preallocated and written in pages */
        return sl_config_fail(err, err_bytes, "--%s: '%s' is not a multiple of 4 KiB", o->name,
                              value);
    }
    *bytes_field(c, o->name) = bytes;
    return 0;
}

/* Where each OPT_LIST option keeps its values. */
static struct sl_config_list *list_field(struct sl_config *c, const char *name)
{
    if (strcmp(name, "uplink") == 0)
        return &c->uplink_specs;
    if (strcmp(name, "uplink-tag") == 0)
        return &c->uplink_tag_specs;
    if (strcmp(name, "uplink-token") == 0)
        return &c->uplink_token_specs;
    if (strcmp(name, "uplink-mode") == 0)
        return &c->uplink_mode_specs;
    if (strcmp(name, "mqtt-subscribe") == 0)
        return &c->mqtt_subscribe_specs;
    if (strcmp(name, "uplink-stream-id") == 0)
        return &c->uplink_stream_id_specs;
    SL_ASSERT(!"an OPT_LIST option without a field");
    return NULL;
}

static int apply_list(struct sl_config *c, const struct opt *o, const char *value, char *err,
                      uint32_t err_bytes)
{
    struct sl_config_list *l = list_field(c, o->name);
    if (value[0] == '\0' || strlen(value) >= SL_CONFIG_LIST_ITEM_BYTES) {
        return sl_config_fail(err, err_bytes, "--%s: '%s' is empty or longer than %u bytes",
                              o->name, value, SL_CONFIG_LIST_ITEM_BYTES - 1);
    }
    if (l->count == SL_CONFIG_LIST_MAX) {
        return sl_config_fail(err, err_bytes, "--%s: given more than %u times", o->name,
                              SL_CONFIG_LIST_MAX);
    }
    strcpy(l->items[l->count++], value);
    return 0;
}

/* A word from a fixed list: its index, or -1 with err naming the choices. */
static int apply_word(const struct opt *o, const char *value, const char *const *words,
                      uint32_t count, const char *choices, char *err, uint32_t err_bytes)
{
    for (uint32_t i = 0; i < count; i++) {
        if (strcmp(value, words[i]) == 0) {
            return (int)i;
        }
    }
    return sl_config_fail(err, err_bytes, "--%s: '%s' is not %s", o->name, value, choices);
}

static const char *const sync_words[] = {"always", "batch", "never"};
static const char *const onoff_words[] = {"off", "on"};
static const char *const format_words[] = {"text", "json"};
static const char *const level_words[] = {"error", "warn", "info", "debug"};
static const char *const when_full_words[] = {"drop", "block"};
_Static_assert(SL_SYNC_ALWAYS == 0 && SL_SYNC_BATCH == 1 && SL_SYNC_NEVER == 2, "sync_words order");
_Static_assert(SL_SAY_ERROR == 0 && SL_SAY_DEBUG == 3, "level_words order");

static int apply_flag(struct sl_config *c, const struct opt *o)
{
    if (strcmp(o->name, "help") == 0) {
        sl_config_usage();
        return 1;
    }
    if (strcmp(o->name, "version") == 0) {
        printf("sluiced %s (protocol version %d)\n", SL_VERSION, SL_PROTOCOL_VERSION);
        return 1;
    }
    *flag_field(c, o->name) = true;
    return 0;
}

/* Where each OPT_MQTT option's text lives, and its size. */
static char *mqtt_field(struct sl_config *c, const char *name, size_t *bytes)
{
    struct sl_mqtt_config *m = &c->mqtt;
    if (strcmp(name, "mqtt-broker") == 0) {
        *bytes = sizeof m->broker;
        return m->broker;
    }
    if (strcmp(name, "mqtt-client-id") == 0) {
        *bytes = sizeof m->client_id;
        return m->client_id;
    }
    if (strcmp(name, "mqtt-username") == 0) {
        *bytes = sizeof m->username;
        return m->username;
    }
    SL_ASSERT(strcmp(name, "mqtt-password-file") == 0);
    *bytes = sizeof m->password_file;
    return m->password_file;
}

static int apply_mqtt(struct sl_config *c, const struct opt *o, const char *value, char *err,
                      uint32_t err_bytes)
{
    if (strcmp(o->name, "mqtt-broker") == 0) {
        return sl_mqtt_set_broker(&c->mqtt, value, err, err_bytes);
    }
    size_t bytes;
    char *field = mqtt_field(c, o->name, &bytes);
    for (const char *p = value; *p != '\0'; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7F) {
            return sl_config_fail(err, err_bytes, "--%s: the value has a control character",
                                  o->name);
        }
    }
    if (set_string(field, bytes, value) != 0) {
        return sl_config_fail(err, err_bytes, "--%s: '%s' is empty or longer than %zu bytes",
                              o->name, value, bytes - 1);
    }
    return 0;
}

/* Apply one option. Returns 0, 1 for help/version (printed), or -1 with err set. */
static int apply_opt(struct sl_config *c, const struct opt *o, const char *value, char *err,
                     uint32_t err_bytes)
{
    int w;
    switch (o->kind) {
    case OPT_ADDR:
        return apply_addr(c, o, value, err, err_bytes);
    case OPT_PATH:
        if (set_string(strcmp(o->name, "config") == 0 ? c->config_file : c->data_dir, SL_PATH_BYTES,
                       value) != 0) {
            return sl_config_fail(err, err_bytes, "--%s: '%s' is empty or longer than %d bytes",
                                  o->name, value, SL_PATH_BYTES - 1);
        }
        return 0;
    case OPT_U32:
        if (parse_u32(value, o->min, o->max, u32_field(c, o->name)) != 0) {
            return sl_config_fail(err, err_bytes,
                                  "--%s: '%s' is not a whole number from %" PRIu64 " to %" PRIu64,
                                  o->name, value, o->min, o->max);
        }
        return 0;
    case OPT_DURATION:
        return apply_duration(c, o, value, err, err_bytes);
    case OPT_WINDOWS:
        return parse_windows(value, &c->store, err, err_bytes);
    case OPT_BYTES:
        return apply_bytes(c, o, value, err, err_bytes);
    case OPT_SYNC:
        w = apply_word(o, value, sync_words, 3, "always, batch or never", err, err_bytes);
        c->log.sync = w >= 0 ? (enum sl_sync_mode)w : c->log.sync;
        return w < 0 ? -1 : 0;
    case OPT_ONOFF:
        w = apply_word(o, value, onoff_words, 2, "on or off", err, err_bytes);
        c->apply_thread = w >= 0 ? w == 1 : c->apply_thread;
        return w < 0 ? -1 : 0;
    case OPT_LOG_FORMAT:
        w = apply_word(o, value, format_words, 2, "text or json", err, err_bytes);
        c->log_json = w >= 0 ? w == 1 : c->log_json;
        return w < 0 ? -1 : 0;
    case OPT_LOG_LEVEL:
        w = apply_word(o, value, level_words, 4, "error, warn, info or debug", err, err_bytes);
        c->log_level = w >= 0 ? (enum sl_say_level)w : c->log_level;
        return w < 0 ? -1 : 0;
    case OPT_TEXT:
        if (set_string(c->io_faults, sizeof c->io_faults, value) != 0) {
            return sl_config_fail(err, err_bytes, "--%s: bad value '%s'", o->name, value);
        }
        return 0;
    case OPT_LIST:
        return apply_list(c, o, value, err, err_bytes);
    case OPT_WHEN_FULL:
        w = apply_word(o, value, when_full_words, 2, "drop or block", err, err_bytes);
        c->uplinks.block = w >= 0 ? w == 1 : c->uplinks.block;
        return w < 0 ? -1 : 0;
    case OPT_MQTT:
        return apply_mqtt(c, o, value, err, err_bytes);
    case OPT_FLAG:
        return apply_flag(c, o);
    }
    return sl_config_fail(err, err_bytes, "--%s: bad value '%s'", o->name, value);
}

/* The config file, read through one block: bounded in bytes and in line length. */
struct file_reader {
    int fd;
    const char *path;
    uint64_t total_bytes;
    uint32_t pos, len;
    bool eof;
    char block[4096];
};

static const char *file_type_name(mode_t mode)
{
    if (S_ISDIR(mode))
        return "a directory";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISBLK(mode))
        return "a block device";
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISSOCK(mode))
        return "a socket";
    return "not a regular file";
}

/* Why the file at st cannot be a config file, or NULL. */
static const char *file_refusal(const struct stat *st)
{
    if (!S_ISREG(st->st_mode)) {
        return file_type_name(st->st_mode);
    }
    if ((uint64_t)st->st_size > SL_CONFIG_FILE_BYTES_MAX) {
        return "larger than the 1 MiB a config file may hold";
    }
    return NULL;
}

/*
 * Open a regular file of bounded size. Checked before opening (opening a
 * device or a FIFO can block or have effects) and again on the descriptor
 * (the path may change in between); O_NONBLOCK so that even then a FIFO
 * never waits for a writer.
 */
static int reader_open(struct file_reader *r, const char *path, char *err, uint32_t err_bytes)
{
    r->path = path;
    r->total_bytes = 0;
    r->pos = r->len = 0;
    r->eof = false;
    r->fd = -1;
    struct stat st;
    if (stat(path, &st) != 0) {
        return sl_config_fail(err, err_bytes, "--config %s: %s", path, strerror(errno));
    }
    const char *why = file_refusal(&st);
    if (why == NULL) {
        r->fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (r->fd < 0) {
            return sl_config_fail(err, err_bytes, "--config %s: %s", path, strerror(errno));
        }
        why = fstat(r->fd, &st) != 0 ? strerror(errno) : file_refusal(&st);
    }
    if (why != NULL) {
        if (r->fd >= 0) {
            close(r->fd);
            r->fd = -1;
        }
        return sl_config_fail(err, err_bytes, "--config %s: %s%s", path, why,
                              S_ISREG(st.st_mode) ? "" : ", not a regular file");
    }
    return 0;
}

/* Refill the block. 0, or -1 with err set; sets eof at the end of the file. */
static int reader_fill(struct file_reader *r, char *err, uint32_t err_bytes)
{
    ssize_t n;
    do {
        n = read(r->fd, r->block, sizeof r->block);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        return sl_config_fail(err, err_bytes, "--config %s: %s", r->path, strerror(errno));
    }
    r->total_bytes += (uint64_t)n;
    if (r->total_bytes >
        SL_CONFIG_FILE_BYTES_MAX) { /* it grew after fstat, or lies about its size */
        return sl_config_fail(err, err_bytes,
                              "--config %s: larger than the 1 MiB a config file may hold", r->path);
    }
    r->pos = 0;
    r->len = (uint32_t)n;
    r->eof = n == 0;
    return 0;
}

/*
 * The next line into line[SL_CONFIG_LINE_BYTES_MAX + 1], without its
 * newline. 1: a line; 0: the end of the file; -1: an error (a NUL byte, a
 * line too long, a read error) naming FILE:LINE. Bounded by the file limit.
 */
static int reader_line(struct file_reader *r, char *line, uint32_t lineno, char *err,
                       uint32_t err_bytes)
{
    uint32_t len = 0;
    while (!r->eof) {
        if (r->pos == r->len) {
            if (reader_fill(r, err, err_bytes) != 0) {
                return -1;
            }
            continue;
        }
        char ch = r->block[r->pos++];
        if (ch == '\n') {
            line[len] = '\0';
            return 1;
        }
        if (ch == '\0') {
            return sl_config_fail(err, err_bytes, "%s:%u: a NUL byte: not a text file", r->path,
                                  lineno);
        }
        if (len == SL_CONFIG_LINE_BYTES_MAX) {
            return sl_config_fail(err, err_bytes, "%s:%u: line longer than %u bytes", r->path,
                                  lineno, SL_CONFIG_LINE_BYTES_MAX);
        }
        line[len++] = ch;
    }
    line[len] = '\0';
    return len > 0 ? 1 : 0;
}

/* One `key = value` line (comments and blanks already allowed for). */
static int parse_line(struct sl_config *c, char *line, const char *path, uint32_t lineno, char *err,
                      uint32_t err_bytes)
{
    /* A comment: '#' first on the line or after a blank, so MQTT filters keep theirs (a/#). */
    for (char *p = line; *p != '\0'; p++) {
        if (*p == '#' && (p == line || p[-1] == ' ' || p[-1] == '\t')) {
            *p = '\0';
            break;
        }
    }
    char *s = trim(line);
    if (*s == '\0') {
        return 0;
    }
    char *eq = strchr(s, '=');
    if (eq == NULL) {
        return sl_config_fail(err, err_bytes, "%s:%u: expected 'key = value'", path, lineno);
    }
    *eq = '\0';
    const char *key = trim(s), *value = trim(eq + 1);
    int i = opt_index(key);
    if (i < 0 || opts[i].kind == OPT_FLAG || strcmp(key, "config") == 0) {
        return sl_config_fail(err, err_bytes, "%s:%u: unknown key '%s'%s", path, lineno, key,
                              i >= 0 ? " (a command-line flag only)" : "");
    }
    if (c->source[i] == SL_CONFIG_FILE && opts[i].kind != OPT_LIST) {
        return sl_config_fail(err, err_bytes, "%s:%u: '%s' set again (first on line %u)", path,
                              lineno, key, c->file_line[i]);
    }
    char inner[512];
    if (apply_opt(c, &opts[i], value, inner, sizeof inner) != 0) {
        return sl_config_fail(err, err_bytes, "%s:%u: %s", path, lineno, inner);
    }
    c->source[i] = SL_CONFIG_FILE;
    c->file_line[i] = lineno;
    return 0;
}

static int parse_file(struct sl_config *c, const char *path, char *err, uint32_t err_bytes)
{
    struct file_reader r;
    if (reader_open(&r, path, err, err_bytes) != 0) {
        return -1;
    }
    char line[SL_CONFIG_LINE_BYTES_MAX + 1];
    int rc = 0;
    for (uint32_t lineno = 1; rc == 0; lineno++) { /* bounded: SL_CONFIG_FILE_BYTES_MAX */
        int got = reader_line(&r, line, lineno, err, err_bytes);
        if (got <= 0) {
            rc = got;
            break;
        }
        rc = parse_line(c, line, path, lineno, err, err_bytes);
    }
    close(r.fd);
    return rc;
}

/* The value of --name VALUE or --name=VALUE at argv[*i]; advances *i past it. */
static const char *take_value(int argc, char **argv, int *i, const char *eq)
{
    if (eq != NULL) {
        return eq + 1;
    }
    if (*i + 1 >= argc) {
        return NULL;
    }
    return argv[++*i];
}

/* The option a command-line word names ("--name" or "--name=value"), or -1; *eq: its '=' or NULL.
 */
static int word_option(const char *word, const char **eq)
{
    *eq = NULL;
    if (strncmp(word, "--", 2) != 0) {
        return -1;
    }
    char name[64];
    *eq = strchr(word, '=');
    size_t n = *eq != NULL ? (size_t)(*eq - word - 2) : strlen(word + 2);
    if (n >= sizeof name) {
        return -1;
    }
    memcpy(name, word + 2, n);
    name[n] = '\0';
    return opt_index(name);
}

/*
 * Pass 1: the config file, so that flags override it. At most one
 * --config. Words are taken as pass 2 takes them, so that a value that
 * looks like --config (`--data-dir --config`) is a value here too.
 */
static int parse_config_flag(struct sl_config *c, int argc, char **argv, char *err,
                             uint32_t err_bytes)
{
    bool seen = false;
    for (int i = 1; i < argc; i++) {
        const char *eq;
        int k = word_option(argv[i], &eq);
        if (k < 0 || opts[k].kind == OPT_FLAG) {
            continue; /* pass 2 says what is wrong with it */
        }
        const char *v = take_value(argc, argv, &i, eq);
        if (strcmp(opts[k].name, "config") != 0) {
            continue;
        }
        if (seen) {
            return sl_config_fail(err, err_bytes, "--config given twice");
        }
        seen = true;
        if (v == NULL || set_string(c->config_file, SL_PATH_BYTES, v) != 0) {
            return sl_config_fail(err, err_bytes, "--config needs a file name");
        }
    }
    return seen ? parse_file(c, c->config_file, err, err_bytes) : 0;
}

/* Pass 2: every flag, once each. */
static int parse_flags(struct sl_config *c, int argc, char **argv, char *err, uint32_t err_bytes)
{
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--", 2) != 0) {
            return sl_config_fail(err, err_bytes, "unexpected argument '%s' (see --help)", argv[i]);
        }
        const char *eq;
        int k = word_option(argv[i], &eq);
        if (k < 0) {
            return sl_config_fail(err, err_bytes, "unknown option '%s' (see --help)", argv[i]);
        }
        const struct opt *o = &opts[k];
        const char *value = "";
        if (o->kind != OPT_FLAG) {
            value = take_value(argc, argv, &i, eq);
            if (value == NULL) {
                return sl_config_fail(err, err_bytes, "--%s needs a value", o->name);
            }
        } else if (eq != NULL) {
            return sl_config_fail(err, err_bytes, "--%s takes no value", o->name);
        }
        if (strcmp(o->name, "config") == 0) {
            continue; /* read in pass 1 */
        }
        if (o->kind == OPT_LIST && c->source[k] == SL_CONFIG_FILE) {
            list_field(c, o->name)->count = 0; /* the flags replace the file's list */
        }
        if (c->source[k] == SL_CONFIG_FLAG && o->kind != OPT_LIST) {
            return sl_config_fail(err, err_bytes, "--%s given twice", o->name);
        }
        int rc = apply_opt(c, o, value, err, err_bytes);
        if (rc != 0) {
            return rc;
        }
        c->source[k] = SL_CONFIG_FLAG;
    }
    return 0;
}

/* A per-address cap: a quarter of the table by default, never more than the table. */
static int derive_per_ip(struct sl_config *c, const char *name, uint32_t *per_ip, uint32_t table,
                         const char *table_name, char *err, uint32_t err_bytes)
{
    if (c->source[opt_index(name)] == SL_CONFIG_DEFAULT) {
        *per_ip = table / 4 > 0 ? table / 4 : 1;
        return 0;
    }
    if (*per_ip > table) {
        return sl_config_fail(err, err_bytes, "--%s: %u is more than --%s (%u)", name, *per_ip,
                              table_name, table);
    }
    return 0;
}

/* The uplinks from their lists: outputs first, so that the others may name them in any order. */
static int finish_uplinks(struct sl_config *c, char *err, uint32_t err_bytes)
{
    struct sl_uplinks_config *u = &c->uplinks;
    u->count = 0;
    u->tags_count = 0;
    const struct {
        const struct sl_config_list *list;
        int (*take)(struct sl_uplinks_config *, const char *, char *, uint32_t);
    } steps[] = {{&c->uplink_specs, sl_uplinks_add},
                 {&c->uplink_tag_specs, sl_uplinks_add_tag},
                 {&c->uplink_token_specs, sl_uplinks_set_token},
                 {&c->uplink_mode_specs, sl_uplinks_set_mode},
                 {&c->uplink_stream_id_specs, sl_uplinks_set_stream_id}};
    for (size_t k = 0; k < SL_ARRAY_COUNT(steps); k++) {
        for (uint32_t i = 0; i < steps[k].list->count; i++) {
            if (steps[k].take(u, steps[k].list->items[i], err, err_bytes) != 0) {
                return -1;
            }
        }
    }
    u->sensors_max = c->store.sensors_max;
    u->future_skew_us = c->store.future_skew_us;
    if (set_string(u->data_dir, sizeof u->data_dir, c->data_dir) != 0) {
        return sl_config_fail(err, err_bytes, "--data-dir: path too long");
    }
    if (u->count > 0 && u->batch_bytes > c->log.bytes_max / 4) {
        return sl_config_fail(err, err_bytes,
                              "--uplink-batch-bytes: %" PRIu64
                              " is more than a quarter of --log-bytes-max",
                              u->batch_bytes);
    }
    return 0;
}

/* The subscriptions from their list; a broker needs at least one, and they need a broker. */
static int finish_mqtt(struct sl_config *c, char *err, uint32_t err_bytes)
{
    c->mqtt.subscription_count = 0;
    for (uint32_t i = 0; i < c->mqtt_subscribe_specs.count; i++) {
        if (sl_mqtt_add_subscription(&c->mqtt, c->mqtt_subscribe_specs.items[i], err, err_bytes) !=
            0) {
            return -1;
        }
    }
    if (c->mqtt.on && c->mqtt.subscription_count == 0) {
        return sl_config_fail(err, err_bytes,
                              "--mqtt-broker needs at least one --mqtt-subscribe FILTER=FORMAT");
    }
    if (!c->mqtt.on && c->mqtt.subscription_count > 0) {
        return sl_config_fail(err, err_bytes,
                              "--mqtt-subscribe needs --mqtt-broker mqtt://HOST:PORT");
    }
    return 0;
}

/* Checks across options, and the defaults that follow other options. */
static int finish(struct sl_config *c, char *err, uint32_t err_bytes)
{
    const char *why = NULL;
    if (sl_store_config_check(&c->store, &why) != 0) {
        return sl_config_fail(err, err_bytes, "%s", why);
    }
    if (set_string(c->log.dir, sizeof c->log.dir, c->data_dir) != 0) {
        return sl_config_fail(err, err_bytes, "--data-dir: path too long");
    }
    if (c->log.bytes_max / 2 < c->log.segment_bytes) {
        return sl_config_fail(err, err_bytes,
                              "--log-bytes-max: %" PRIu64
                              " holds fewer than two --log-segment-bytes (%" PRIu64 ")",
                              c->log.bytes_max, c->log.segment_bytes);
    }
    if (sl_log_config_check(&c->log, &why) != 0) {
        return sl_config_fail(err, err_bytes, "log: %s", why);
    }
    if (derive_per_ip(c, "max-tcp-connections-per-ip", &c->tcp_connections_per_ip_max,
                      c->tcp_connections_max, "max-tcp-connections", err, err_bytes) != 0 ||
        derive_per_ip(c, "max-http-connections-per-ip", &c->http_connections_per_ip_max,
                      c->http_connections_max, "max-http-connections", err, err_bytes) != 0) {
        return -1;
    }
    /* The registry follows the sensor table unless sized: a named series is a sensor too. */
    if (c->source[opt_index("max-series")] == SL_CONFIG_DEFAULT &&
        c->series_max > c->store.sensors_max) {
        c->series_max = c->store.sensors_max;
    }
    if (c->source[opt_index("series-name-bytes")] == SL_CONFIG_DEFAULT) {
        uint64_t bytes = (uint64_t)c->series_max * SL_SERIES_NAME_BYTES_PER_SERIES;
        c->series_name_bytes = bytes < 4096 ? 4096 : bytes;
    }
    if ((uint64_t)c->series_id_base + c->series_max > (1ull << 32)) {
        return sl_config_fail(err, err_bytes,
                              "--series-id-base: %" PRIu32 " + --max-series %" PRIu32
                              " passes the last id (4294967295)",
                              c->series_id_base, c->series_max);
    }
    if (c->series_max > c->store.sensors_max) {
        return sl_config_fail(err, err_bytes,
                              "--max-series: %" PRIu32 " is more than --max-sensors (%" PRIu32
                              "): every named series is a sensor",
                              c->series_max, c->store.sensors_max);
    }
    if (c->source[opt_index("checkpoint-every")] == SL_CONFIG_DEFAULT) {
        c->checkpoint_every_bytes = c->log.bytes_max / 4;
    }
    /* With checkpoints, a full log waits for one rather than drop unprotected records. */
    c->log.wait_for_checkpoint = c->checkpoint_every_bytes != 0;
    return finish_uplinks(c, err, err_bytes) != 0 ? -1 : finish_mqtt(c, err, err_bytes);
}

int sl_config_parse(struct sl_config *c, int argc, char **argv, char *err, uint32_t err_bytes)
{
    int rc = parse_config_flag(c, argc, argv, err, err_bytes);
    if (rc == 0) {
        rc = parse_flags(c, argc, argv, err, err_bytes);
    }
    return rc != 0 ? rc : finish(c, err, err_bytes);
}

/* An option's value as text, for SIGHUP's comparison and its messages. */
static void show_opt(const struct sl_config *c, const struct opt *o, char *out, size_t out_bytes)
{
    struct sl_config *m = (struct sl_config *)c; /* the field lookups are shared with the setters */
    size_t len = 0;
    switch (o->kind) {
    case OPT_ADDR:
        snprintf(out, out_bytes, "%s", addr_field(m, o->name));
        return;
    case OPT_PATH:
        snprintf(out, out_bytes, "%s",
                 strcmp(o->name, "config") == 0 ? c->config_file : c->data_dir);
        return;
    case OPT_TEXT:
        snprintf(out, out_bytes, "%s", c->io_faults);
        return;
    case OPT_U32:
        snprintf(out, out_bytes, "%" PRIu32, *u32_field(m, o->name));
        return;
    case OPT_DURATION:
        format_duration(out, out_bytes, get_duration(c, o->name));
        return;
    case OPT_BYTES:
        snprintf(out, out_bytes, "%" PRIu64, *bytes_field(m, o->name));
        return;
    case OPT_SYNC:
        snprintf(out, out_bytes, "%s", sync_words[c->log.sync]);
        return;
    case OPT_ONOFF:
        snprintf(out, out_bytes, "%s", onoff_words[c->apply_thread]);
        return;
    case OPT_LOG_FORMAT:
        snprintf(out, out_bytes, "%s", format_words[c->log_json]);
        return;
    case OPT_LOG_LEVEL:
        snprintf(out, out_bytes, "%s", level_words[c->log_level]);
        return;
    case OPT_WHEN_FULL:
        snprintf(out, out_bytes, "%s", when_full_words[c->uplinks.block]);
        return;
    case OPT_MQTT: {
        size_t bytes;
        snprintf(out, out_bytes, "%s", mqtt_field(m, o->name, &bytes));
        return;
    }
    case OPT_LIST: {
        /* --uplink as shown_url: a URL's credentials never reach SIGHUP's lines. */
        bool urls = strcmp(o->name, "uplink") == 0;
        const struct sl_config_list *l = list_field(m, o->name);
        uint32_t count = urls ? c->uplinks.count : l->count;
        out[0] = '\0';
        for (uint32_t i = 0; i < count && len + 1 < out_bytes; i++) {
            int w = urls ? snprintf(out + len, out_bytes - len, "%s%s=%s", i ? " " : "",
                                    c->uplinks.outputs[i].name, c->uplinks.outputs[i].shown_url)
                         : snprintf(out + len, out_bytes - len, "%s%s", i ? " " : "", l->items[i]);
            len = w < 0 ? out_bytes : len + (size_t)w;
        }
        return;
    }
    case OPT_FLAG: {
        bool *f = flag_field(m, o->name);
        snprintf(out, out_bytes, "%s", f != NULL && *f ? "on" : "off");
        return;
    }
    case OPT_WINDOWS:
        out[0] = '\0';
        for (uint32_t i = 0; i < c->store.windows_count && len + 1 < out_bytes; i++) {
            char one[32];
            format_duration(one, sizeof one, c->store.windows_us[i]);
            len += (size_t)snprintf(out + len, out_bytes - len, "%s%s", i ? "," : "", one);
        }
        return;
    }
}

uint32_t sl_config_diff(const struct sl_config *old_config, const struct sl_config *new_config,
                        sl_config_change_fn changed, void *arg)
{
    uint32_t count = 0;
    for (size_t i = 0; i < SL_ARRAY_COUNT(opts); i++) {
        char was[SL_PATH_BYTES + 64], now[SL_PATH_BYTES + 64];
        show_opt(old_config, &opts[i], was, sizeof was);
        show_opt(new_config, &opts[i], now, sizeof now);
        if (strcmp(was, now) != 0) {
            changed(arg, opts[i].name, was, now, opts[i].live);
            count++;
        }
    }
    return count;
}

uint32_t sl_config_overridden(const struct sl_config *config, sl_config_override_fn overridden,
                              void *arg)
{
    uint32_t count = 0;
    for (size_t i = 0; i < SL_ARRAY_COUNT(opts); i++) {
        if (config->source[i] == SL_CONFIG_FLAG && config->file_line[i] != 0) {
            overridden(arg, opts[i].name, config->file_line[i]);
            count++;
        }
    }
    return count;
}

int sl_config_split_addr(const char *addr, char *host, uint32_t host_bytes, uint16_t *port,
                         char *err, uint32_t err_bytes)
{
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || colon == addr) {
        return sl_config_fail(err, err_bytes, "'%s' is not HOST:PORT", addr);
    }
    const char *h = addr;
    size_t hn = (size_t)(colon - addr);
    if (addr[0] == '[') { /* [v6]:port */
        if (colon[-1] != ']') {
            return sl_config_fail(err, err_bytes, "'%s' is not [HOST]:PORT", addr);
        }
        h = addr + 1;
        hn -= 2;
    }
    uint32_t p;
    if (hn == 0 || hn >= host_bytes || parse_u32(colon + 1, 0, 65535, &p) != 0) {
        return sl_config_fail(err, err_bytes, "'%s' is not HOST:PORT with a port 0..65535", addr);
    }
    memcpy(host, h, hn);
    host[hn] = '\0';
    *port = (uint16_t)p;
    return 0;
}
