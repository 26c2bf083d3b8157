/*
 * Configuration parsing (see config.h).
 *
 * One table of options drives the command line, the config file and the
 * usage text, so the three cannot drift apart. A config file holds
 * `key = value` lines whose keys are the long flag names without the
 * dashes; `#` starts a comment. Every number is parsed strictly (the whole
 * string, in range) and every error names the option and the bad value.
 * Start-up only, main thread; no allocation.
 */
#include "daemon/config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/assert.h"

enum opt_kind { OPT_ADDR, OPT_PATH, OPT_U32, OPT_DURATION, OPT_WINDOWS, OPT_FLAG, OPT_BYTES, OPT_SYNC,
                OPT_TEXT, OPT_ONOFF };

struct opt {
    const char *name;
    enum opt_kind kind;
    uint64_t min, max; /* OPT_U32: value range; OPT_DURATION: microseconds */
    const char *help;
};

static const struct opt opts[] = {
    {"udp", OPT_ADDR, 0, 0, "UDP listen address HOST:PORT, or off (default 127.0.0.1:7400)"},
    {"tcp", OPT_ADDR, 0, 0, "TCP listen address HOST:PORT, or off (default 127.0.0.1:7400)"},
    {"http", OPT_ADDR, 0, 0, "HTTP API address HOST:PORT, or off (default 127.0.0.1:7401)"},
    {"data-dir", OPT_PATH, 0, 0, "data directory, created if missing (default ./sluice-data)"},
    {"config", OPT_PATH, 0, 0, "read options from FILE (key = value lines); flags win"},
    {"max-sensors", OPT_U32, 1, SL_SENSORS_MAX,
     "sensor table size (default 65536, max 16777216; 80 B + ring a sensor)"},
    {"ring-readings", OPT_U32, SL_RING_READINGS_MIN, SL_RING_READINGS_MAX,
     "raw readings retained per sensor (default 4096, max 16777216; 8 B each)"},
    {"windows", OPT_WINDOWS, 0, 0, "rolling windows, ascending (default 10s,1m,1h; at most 8)"},
    {"ewma-half-life", OPT_DURATION, 1000, SL_WINDOW_US_MAX, "EWMA half-life in event time (default 60s)"},
    {"future-skew", OPT_DURATION, 0, SL_WINDOW_US_MAX,
     "readings later than now + this are rejected as future (default 300s)"},
    {"coarse-buckets", OPT_U32, 0, SL_COARSE_BUCKETS_MAX,
     "coarse-tier buckets spanning the longest window (default 60, 0 = off; 32 B each a sensor)"},
    {"max-streams", OPT_U32, 1, SL_STREAMS_MAX,
     "streams tracked per transport for dedup and gaps (default 4096, max 1048576; 48 B each)"},
    {"max-tcp-connections", OPT_U32, 1, SL_TCP_CONNECTIONS_MAX,
     "open TCP connections; more are refused (default 128, max 65536; ~800 KiB each)"},
    {"tcp-idle-timeout", OPT_DURATION, 1000000, (uint64_t)SL_TCP_IDLE_TIMEOUT_S_MAX * 1000000,
     "close a TCP connection idle this long (default 60s)"},
    {"tcp-frame-timeout", OPT_DURATION, 1000, (uint64_t)SL_TCP_FRAME_TIMEOUT_MS_MAX * 1000,
     "a TCP frame must complete this soon after its first byte (default 5s)"},
    {"max-tcp-connections-per-ip", OPT_U32, 1, SL_TCP_CONNECTIONS_MAX,
     "open TCP connections one address may hold (default a quarter of --max-tcp-connections)"},
    {"udp-batch", OPT_U32, 1, SL_UDP_BATCH_MAX, "datagrams per recvmmsg call (default 64; 64 KiB each)"},
    {"udp-rcvbuf", OPT_U32, 65536, SL_UDP_RCVBUF_MAX, "UDP socket receive buffer bytes (default 33554432)"},
    {"max-http-connections", OPT_U32, 1, SL_HTTP_CONNECTIONS_MAX,
     "open HTTP connections (default 64, max 4096; 64 KiB each)"},
    {"http-timeout", OPT_DURATION, 1000000, 3600000000ull, "close an idle HTTP connection (default 10s)"},
    {"sync", OPT_SYNC, 0, 0,
     "always: fdatasync before any OK ack (default); batch: every --sync-interval; never: the OS's"},
    {"sync-interval", OPT_DURATION, 1000, (uint64_t)SL_LOG_SYNC_INTERVAL_MS_MAX * 1000,
     "with --sync batch: how often to fdatasync the log (default 100ms)"},
    {"log-bytes-max", OPT_BYTES, 2 * SL_LOG_SEGMENT_BYTES_MIN, SL_LOG_BYTES_MAX_MAX,
     "disk for log segments; the oldest is recycled past it (default 1G)"},
    {"log-segment-bytes", OPT_BYTES, SL_LOG_SEGMENT_BYTES_MIN, SL_LOG_SEGMENT_BYTES_MAX,
     "size of one preallocated log segment (default 64M)"},
    {"log-buffer-bytes", OPT_BYTES, SL_LOG_BUFFER_BYTES_MIN, SL_LOG_BUFFER_BYTES_MAX,
     "memory for records not yet written or synced (default 32M)"},
    {"checkpoint-every", OPT_BYTES, 0, SL_LOG_BYTES_MAX_MAX,
     "write a checkpoint after this much log, 0 = never (default log-bytes-max / 4)"},
    {"apply-thread", OPT_ONOFF, 0, 0,
     "on (default): apply to the store on a second thread, beside receive and log; off: one"},
    {"io-faults", OPT_TEXT, 0, 0, "testing only: inject I/O faults, e.g. fdatasync:EIO:5-8 (core/io.h)"},
    {"print-memory-plan", OPT_FLAG, 0, 0, "print the memory plan and exit"},
    {"quiet", OPT_FLAG, 0, 0, "print nothing but errors"},
    {"version", OPT_FLAG, 0, 0, "print the version and exit"},
    {"help", OPT_FLAG, 0, 0, "print this help and exit"},
};

void sl_config_default(struct sl_config *config)
{
    memset(config, 0, sizeof *config);
    strcpy(config->udp, "127.0.0.1:7400");
    strcpy(config->tcp, "127.0.0.1:7400");
    strcpy(config->http, "127.0.0.1:7401");
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
    config->apply_thread = true;
    sl_log_config_default(&config->log);
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
        printf("  %-28s %s\n", left, opts[i].help);
    }
    printf("\nDurations take a unit: 500ms, 10s, 1m, 1h, 1d. Sizes may take K, M or G (powers of\n"
           "1024). See README.md and docs/.\n");
}

static int fail(char *err, uint32_t err_bytes, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, uint32_t err_bytes, const char *fmt, ...)
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
    if (strcmp(end, "ms") == 0) {
        unit = 1000;
    } else if (strcmp(end, "s") == 0 || *end == '\0') {
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

static int parse_windows(const char *text, struct sl_store_config *store)
{
    char buf[512];
    if (strlen(text) >= sizeof buf) {
        return -1;
    }
    strcpy(buf, text);
    uint32_t count = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        int64_t us = sl_config_parse_duration_us(trim(tok));
        if (us < 0 || count == SL_WINDOWS_MAX) {
            return -1;
        }
        store->windows_us[count++] = us;
    }
    store->windows_count = count;
    return count == 0 ? -1 : 0;
}

static const struct opt *find_opt(const char *name)
{
    for (size_t i = 0; i < SL_ARRAY_COUNT(opts); i++) {
        if (strcmp(opts[i].name, name) == 0) {
            return &opts[i];
        }
    }
    return NULL;
}

static uint32_t *u32_field(struct sl_config *c, const char *name)
{
    if (strcmp(name, "max-sensors") == 0) return &c->store.sensors_max;
    if (strcmp(name, "ring-readings") == 0) return &c->store.ring_readings;
    if (strcmp(name, "coarse-buckets") == 0) return &c->store.coarse_buckets;
    if (strcmp(name, "max-streams") == 0) return &c->streams_max;
    if (strcmp(name, "max-tcp-connections") == 0) return &c->tcp_connections_max;
    if (strcmp(name, "max-tcp-connections-per-ip") == 0) return &c->tcp_connections_per_ip_max;
    if (strcmp(name, "udp-batch") == 0) return &c->udp_batch;
    if (strcmp(name, "udp-rcvbuf") == 0) return &c->udp_rcvbuf_bytes;
    if (strcmp(name, "max-http-connections") == 0) return &c->http_connections_max;
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
    } else if (strcmp(name, "sync-interval") == 0) {
        c->log.sync_interval_ms = (uint32_t)(us / 1000);
    } else {
        return -1;
    }
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

/* Apply one option. Returns 0, 1 for help/version (printed), or -1 with err set. */
static int apply_opt(struct sl_config *c, const struct opt *o, const char *value, char *err,
                     uint32_t err_bytes)
{
    int rc = 0;
    switch (o->kind) {
    case OPT_ADDR: {
        char *dst = strcmp(o->name, "udp") == 0 ? c->udp : strcmp(o->name, "tcp") == 0 ? c->tcp : c->http;
        char host[SL_ADDR_BYTES];
        uint16_t port;
        rc = set_string(dst, SL_ADDR_BYTES, value);
        if (rc == 0 && strcmp(value, "off") != 0) {
            return sl_config_split_addr(value, host, sizeof host, &port, err, err_bytes) == 0
                       ? 0
                       : fail(err, err_bytes, "--%s: %s", o->name, err);
        }
        break;
    }
    case OPT_PATH:
        rc = set_string(strcmp(o->name, "config") == 0 ? c->config_file : c->data_dir, SL_PATH_BYTES,
                        value);
        break;
    case OPT_U32:
        rc = parse_u32(value, o->min, o->max, u32_field(c, o->name));
        if (rc != 0) {
            return fail(err, err_bytes, "--%s: '%s' is not a whole number from %" PRIu64 " to %" PRIu64,
                        o->name, value, o->min, o->max);
        }
        break;
    case OPT_DURATION: {
        int64_t us = sl_config_parse_duration_us(value);
        if (us < (int64_t)o->min || (uint64_t)us > o->max) {
            return fail(err, err_bytes, "--%s: '%s' is not a duration in range (e.g. 10s, 1m)",
                        o->name, value);
        }
        rc = set_duration(c, o->name, us);
        break;
    }
    case OPT_WINDOWS:
        rc = parse_windows(value, &c->store);
        if (rc != 0) {
            return fail(err, err_bytes, "--windows: '%s' is not a list like 10s,1m,1h (at most 8)", value);
        }
        break;
    case OPT_BYTES: {
        uint64_t bytes;
        if (parse_bytes(value, o->min, o->max, &bytes) != 0) {
            return fail(err, err_bytes, "--%s: '%s' is not a size from %" PRIu64 " to %" PRIu64 " bytes",
                        o->name, value, o->min, o->max);
        }
        if (strcmp(o->name, "log-bytes-max") == 0) {
            c->log.bytes_max = bytes;
        } else if (strcmp(o->name, "log-segment-bytes") == 0) {
            c->log.segment_bytes = bytes;
        } else if (strcmp(o->name, "log-buffer-bytes") == 0) {
            c->log.buffer_bytes = bytes;
        } else {
            c->checkpoint_every_bytes = bytes;
            c->checkpoint_every_set = true;
        }
        break;
    }
    case OPT_SYNC:
        if (strcmp(value, "always") == 0) {
            c->log.sync = SL_SYNC_ALWAYS;
        } else if (strcmp(value, "batch") == 0) {
            c->log.sync = SL_SYNC_BATCH;
        } else if (strcmp(value, "never") == 0) {
            c->log.sync = SL_SYNC_NEVER;
        } else {
            return fail(err, err_bytes, "--sync: '%s' is not always, batch or never", value);
        }
        break;
    case OPT_TEXT:
        rc = set_string(c->io_faults, sizeof c->io_faults, value);
        break;
    case OPT_ONOFF:
        if (strcmp(value, "on") == 0) {
            c->apply_thread = true;
        } else if (strcmp(value, "off") == 0) {
            c->apply_thread = false;
        } else {
            return fail(err, err_bytes, "--%s: '%s' is not on or off", o->name, value);
        }
        break;
    case OPT_FLAG:
        if (strcmp(o->name, "help") == 0) {
            sl_config_usage();
            return 1;
        }
        if (strcmp(o->name, "version") == 0) {
            printf("sluiced %s (protocol version %d)\n", SL_VERSION, SL_PROTOCOL_VERSION);
            return 1;
        }
        if (strcmp(o->name, "quiet") == 0) {
            c->quiet = true;
        } else {
            c->print_memory_plan = true;
        }
        break;
    }
    return rc == 0 ? 0 : fail(err, err_bytes, "--%s: bad value '%s'", o->name, value);
}

static int parse_file(struct sl_config *c, const char *path, char *err, uint32_t err_bytes)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return fail(err, err_bytes, "--config %s: %s", path, strerror(errno));
    }
    char line[1024];
    int rc = 0;
    for (uint32_t lineno = 1; rc == 0 && fgets(line, sizeof line, f) != NULL; lineno++) {
        char *hash = strchr(line, '#');
        if (hash != NULL) {
            *hash = '\0';
        }
        char *s = trim(line);
        if (*s == '\0') {
            continue;
        }
        char *eq = strchr(s, '=');
        if (eq == NULL) {
            rc = fail(err, err_bytes, "%s:%u: expected 'key = value'", path, lineno);
            break;
        }
        *eq = '\0';
        const char *key = trim(s), *value = trim(eq + 1);
        const struct opt *o = find_opt(key);
        if (o == NULL || o->kind == OPT_FLAG || strcmp(key, "config") == 0) {
            rc = fail(err, err_bytes, "%s:%u: unknown key '%s'", path, lineno, key);
            break;
        }
        char inner[512];
        if (apply_opt(c, o, value, inner, sizeof inner) != 0) {
            rc = fail(err, err_bytes, "%s:%u: %s", path, lineno, inner);
        }
    }
    fclose(f);
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

int sl_config_parse(struct sl_config *c, int argc, char **argv, char *err, uint32_t err_bytes)
{
    /* Pass 1: the config file, so that flags override it. */
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--config", 8) == 0 && (argv[i][8] == '\0' || argv[i][8] == '=')) {
            const char *v = take_value(argc, argv, &i, argv[i][8] == '=' ? argv[i] + 8 : NULL);
            if (v == NULL || set_string(c->config_file, SL_PATH_BYTES, v) != 0) {
                return fail(err, err_bytes, "--config needs a file name");
            }
            if (parse_file(c, c->config_file, err, err_bytes) != 0) {
                return -1;
            }
        }
    }
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--", 2) != 0) {
            return fail(err, err_bytes, "unexpected argument '%s' (see --help)", argv[i]);
        }
        char name[64];
        const char *eq = strchr(argv[i], '=');
        size_t n = eq ? (size_t)(eq - argv[i] - 2) : strlen(argv[i] + 2);
        if (n >= sizeof name) {
            return fail(err, err_bytes, "unknown option '%s' (see --help)", argv[i]);
        }
        memcpy(name, argv[i] + 2, n);
        name[n] = '\0';
        const struct opt *o = find_opt(name);
        if (o == NULL) {
            return fail(err, err_bytes, "unknown option '%s' (see --help)", argv[i]);
        }
        const char *value = "";
        if (o->kind != OPT_FLAG) {
            value = take_value(argc, argv, &i, eq);
            if (value == NULL) {
                return fail(err, err_bytes, "--%s needs a value", o->name);
            }
        } else if (eq != NULL) {
            return fail(err, err_bytes, "--%s takes no value", o->name);
        }
        if (strcmp(o->name, "config") == 0) {
            continue; /* read in pass 1 */
        }
        int rc = apply_opt(c, o, value, err, err_bytes);
        if (rc != 0) {
            return rc;
        }
    }
    const char *why = NULL;
    if (sl_store_config_check(&c->store, &why) != 0) {
        return fail(err, err_bytes, "%s", why);
    }
    if (set_string(c->log.dir, sizeof c->log.dir, c->data_dir) != 0) {
        return fail(err, err_bytes, "--data-dir: path too long");
    }
    if (sl_log_config_check(&c->log, &why) != 0) {
        return fail(err, err_bytes, "log: %s", why);
    }
    if (!c->checkpoint_every_set) {
        c->checkpoint_every_bytes = c->log.bytes_max / 4;
    }
    /* With checkpoints, a full log waits for one rather than drop unprotected records. */
    c->log.wait_for_checkpoint = c->checkpoint_every_bytes != 0;
    return 0;
}

int sl_config_split_addr(const char *addr, char *host, uint32_t host_bytes, uint16_t *port,
                         char *err, uint32_t err_bytes)
{
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || colon == addr) {
        return fail(err, err_bytes, "'%s' is not HOST:PORT", addr);
    }
    const char *h = addr;
    size_t hn = (size_t)(colon - addr);
    if (addr[0] == '[') { /* [v6]:port */
        if (colon[-1] != ']') {
            return fail(err, err_bytes, "'%s' is not [HOST]:PORT", addr);
        }
        h = addr + 1;
        hn -= 2;
    }
    uint32_t p;
    if (hn == 0 || hn >= host_bytes || parse_u32(colon + 1, 0, 65535, &p) != 0) {
        return fail(err, err_bytes, "'%s' is not HOST:PORT with a port 0..65535", addr);
    }
    memcpy(host, h, hn);
    host[hn] = '\0';
    *port = (uint16_t)p;
    return 0;
}
