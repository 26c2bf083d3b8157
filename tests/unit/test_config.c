/*
 * daemon/config: sl_config_parse on hostile files and flags, and
 * sl_config_diff (what SIGHUP compares).
 *
 * Proves: a config file that is not a regular file (a directory,
 * /dev/zero, a FIFO with no writer) is refused at once, without reading
 * (no spin, no wait); a file over 1 MiB, a NUL byte, and a line over 1024
 * bytes are each an error naming FILE:LINE (a long line is never split
 * into a key); a key set twice in the file names both lines; a flag given
 * twice, and --config given twice, are errors; a value that looks like
 * --config (`--data-dir --config=x`) is a value when the file is looked
 * for too; a list with an empty
 * element (`10s,`, `,10s`, `10s,,1m`) is refused; a bare number where a
 * duration is needed is refused with "needs a unit"; a bad address is one
 * message, never doubled; the per-address caps default to a quarter of
 * their tables (at least 1) and may not exceed them; the boundary values
 * (a 1024-byte line, a file of exactly 1 MiB) are accepted; the diff names
 * each changed key once and says which are live. The checks that span
 * values (a window of whole seconds, windows ascending, a segment a
 * multiple of 4 KiB, a log of at least two segments) name the flag, and in
 * a file FILE:LINE, like every other error (found by fuzz_config: they
 * used to come back as the store's or the log's bare reason).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/config.h"
#include "testlib.h"

static char dir[256];
static struct sl_config cfg;
static char err[1024];

/* Parse a NULL-terminated list of arguments (after argv[0]) into cfg. */
static int parse(const char *first, ...)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = "sluiced";
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a != NULL && argc < 31; a = va_arg(ap, const char *)) {
        argv[argc++] = (char *)a;
    }
    va_end(ap);
    argv[argc] = NULL;
    sl_config_default(&cfg);
    err[0] = '\0';
    return sl_config_parse(&cfg, argc, argv, err, sizeof err);
}

static const char *write_file(const char *name, const char *bytes, size_t len)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    fwrite(bytes, 1, len, f);
    fclose(f);
    return path;
}

static bool says(const char *words)
{
    bool ok = strstr(err, words) != NULL;
    if (!ok) {
        fprintf(stderr, "  message %s lacks %s\n", err, words);
    }
    return ok;
}

static void test_not_regular(void)
{
    CHECK_EQ(parse("--config", dir, NULL), -1);
    CHECK(says("a directory, not a regular file"));
    CHECK_EQ(parse("--config", "/dev/zero", NULL), -1); /* read forever before the fix */
    CHECK(says("/dev/zero: a character device, not a regular file"));
    char fifo[512];
    snprintf(fifo, sizeof fifo, "%s/fifo", dir);
    CHECK(mkfifo(fifo, 0600) == 0);
    CHECK_EQ(parse("--config", fifo, NULL), -1); /* no writer: opening must not wait */
    CHECK(says("a FIFO, not a regular file"));
    CHECK_EQ(parse("--config", "/nonexistent/sluice.conf", NULL), -1);
    CHECK(says("--config /nonexistent/sluice.conf: No such file"));
}

static void test_bytes(void)
{
    const char *p = write_file("nul.conf", "max-sensors = 77\nring-readings = 32\0 junk\n", 42);
    CHECK_EQ(parse("--config", p, NULL), -1);
    CHECK(says("nul.conf:2: a NUL byte"));

    static char big[SL_CONFIG_FILE_BYTES_MAX + 2];
    memset(big, '#', sizeof big);
    for (size_t i = 1000; i < sizeof big; i += 1000) {
        big[i] = '\n';
    }
    p = write_file("big.conf", big,
                   SL_CONFIG_FILE_BYTES_MAX); /* exactly the limit: a file of comments */
    CHECK_EQ(parse("--config", p, NULL), 0);
    p = write_file("big.conf", big, SL_CONFIG_FILE_BYTES_MAX + 1);
    CHECK_EQ(parse("--config", p, NULL), -1);
    CHECK(says("larger than the 1 MiB"));

    /* A 1,040-character line: an error, not a key made of its tail. */
    char line[1200];
    memset(line, ' ', sizeof line);
    memcpy(line, "max-sensors = 5", 15);
    memcpy(line + 1024, "ring-readings=4\n", 16);
    p = write_file("long.conf", line, 1040);
    CHECK_EQ(parse("--config", p, NULL), -1);
    CHECK(says("long.conf:1: line longer than 1024 bytes"));
    /* Exactly 1024 bytes and a newline: accepted. */
    memset(line, ' ', sizeof line);
    memcpy(line, "max-sensors = 5", 15);
    line[1024] = '\n';
    p = write_file("long.conf", line, 1025);
    CHECK_EQ(parse("--config", p, NULL), 0);
    CHECK_EQ(cfg.store.sensors_max, 5);
    /* No newline at the end: the last line still counts. */
    p = write_file("tail.conf", "max-sensors = 6", 15);
    CHECK_EQ(parse("--config", p, NULL), 0);
    CHECK_EQ(cfg.store.sensors_max, 6);
}

static char overridden_key[64];
static uint32_t overridden_line;

static void note_override(void *arg, const char *key, uint32_t file_line)
{
    (void)arg;
    snprintf(overridden_key, sizeof overridden_key, "%s", key);
    overridden_line = file_line;
}

static void test_duplicates(void)
{
    const char *text = "max-sensors = 77\n# a comment\n\nring-readings = 32\nmax-sensors = 78\n";
    const char *p = write_file("dup.conf", text, strlen(text));
    CHECK_EQ(parse("--config", p, NULL), -1);
    CHECK(says("dup.conf:5: 'max-sensors' set again (first on line 1)"));
    CHECK_EQ(parse("--max-sensors", "5", "--max-sensors=6", NULL), -1);
    CHECK(says("--max-sensors given twice"));
    p = write_file("ok.conf", "max-sensors = 77\n", 17);
    CHECK_EQ(parse("--config", p, "--config", p, NULL), -1);
    CHECK(says("--config given twice"));
    /* Once in the file and once as a flag: the flag wins, and the override is known. */
    CHECK_EQ(parse("--config", p, "--max-sensors", "9", NULL), 0);
    CHECK_EQ(cfg.store.sensors_max, 9);
    CHECK_EQ(sl_config_overridden(&cfg, note_override, NULL), 1);
    CHECK(strcmp(overridden_key, "max-sensors") == 0 && overridden_line == 1);
    CHECK_EQ(parse("--config", p, NULL), 0);
    CHECK_EQ(cfg.store.sensors_max, 77);
    CHECK(strcmp(cfg.config_file, p) == 0);
}

/* A value that looks like --config is a value, in the pass that reads the file as in the other. */
static void test_config_as_value(void)
{
    CHECK_EQ(parse("--data-dir", "--config=/nonexistent/x.conf", NULL), 0);
    CHECK(strcmp(cfg.data_dir, "--config=/nonexistent/x.conf") == 0);
    CHECK(cfg.config_file[0] == '\0');
    const char *p = write_file("v.conf", "max-sensors = 12\n", 17);
    CHECK_EQ(parse("--io-faults", "--config", "--config", p, NULL), 0);
    CHECK(strcmp(cfg.io_faults, "--config") == 0);
    CHECK(strcmp(cfg.config_file, p) == 0 && cfg.store.sensors_max == 12);
    CHECK_EQ(parse("--io-faults", "--config", NULL), 0); /* no --config at all */
    CHECK_EQ(parse("--config", NULL), -1);
    CHECK(says("--config needs a file name"));
}

static void test_values(void)
{
    CHECK_EQ(parse("--windows", "10s,", NULL), -1);
    CHECK(says("--windows: '10s,' has an empty element"));
    CHECK_EQ(parse("--windows", ",10s", NULL), -1);
    CHECK(says("empty element"));
    CHECK_EQ(parse("--windows", "10s,,1m", NULL), -1);
    CHECK(says("empty element"));
    CHECK_EQ(parse("--windows", "10", NULL), -1);
    CHECK(says("--windows: '10' needs a unit: ms, s, m, h or d"));
    CHECK_EQ(parse("--windows", "10s, 1m ,1h", NULL), 0);
    CHECK_EQ(cfg.store.windows_count, 3);
    CHECK_EQ(parse("--windows", "1s,2s,3s,4s,5s,6s,7s,8s,9s", NULL), -1);
    CHECK(says("more than 8"));
    CHECK_EQ(parse("--tcp-idle-timeout", "5", NULL), -1);
    CHECK(says("--tcp-idle-timeout: '5' needs a unit: ms, s, m, h or d"));
    CHECK_EQ(parse("--tcp-idle-timeout", "5s", NULL), 0);
    CHECK_EQ(cfg.tcp_idle_timeout_s, 5);
    CHECK_EQ(parse("--tcp-frame-timeout", "2h", NULL), -1);
    CHECK(says("--tcp-frame-timeout: '2h' is not a duration from 100ms to 1h"));
    CHECK_EQ(parse("--tcp-frame-timeout", "250ms", "--http-header-timeout", "1h", NULL), 0);
    CHECK_EQ(cfg.tcp_frame_timeout_ms, 250);
    CHECK_EQ(cfg.http_header_timeout_ms, 3600000);
    CHECK_EQ(sl_config_parse_duration_us("10"), SL_CONFIG_NO_UNIT);
    CHECK_EQ(sl_config_parse_duration_us("10x"), -1);
    CHECK_EQ(sl_config_parse_duration_us("250ms"), 250000);

    CHECK_EQ(parse("--tcp", "127.0.0.1", NULL), -1);
    CHECK(strcmp(err, "--tcp: '127.0.0.1' is not HOST:PORT") == 0);
    CHECK_EQ(parse("--http", "127.0.0.1:99999", NULL), -1);
    CHECK(strcmp(err, "--http: '127.0.0.1:99999' is not HOST:PORT with a port 0..65535") == 0);

    CHECK_EQ(parse("--log-format", "xml", NULL), -1);
    CHECK(says("--log-format: 'xml' is not text or json"));
    CHECK_EQ(parse("--log-level", "loud", NULL), -1);
    CHECK(says("error, warn, info or debug"));
    CHECK_EQ(parse("--log-format", "json", "--log-level", "debug", "--allow-overcommit", NULL), 0);
    CHECK(cfg.log_json && cfg.log_level == SL_SAY_DEBUG && cfg.allow_overcommit);
    CHECK_EQ(parse("--http-threads", "0", NULL), -1);
    CHECK_EQ(parse("--http-threads", "65", NULL), -1);
    CHECK_EQ(parse("--http-threads", "64", NULL), 0);
}

static void test_cross_checks(void)
{
    static const struct {
        const char *windows, *words;
    } refused[] = {
        {"5ms", "--windows: '5ms' is not a whole number of seconds from 1s to 366d"},
        {"10s,367d", "--windows: '367d' is not a whole number of seconds"},
        {"1m,10s",
         "--windows: '1m,10s' must be ascending: '10s' is not longer than the one before"},
        {"10s,10s", "must be ascending"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        CHECK_EQ(parse("--windows", refused[i].windows, NULL), -1);
        CHECK(says(refused[i].words));
    }
    const char *p = write_file("w.conf", "\nwindows = 1s, 1500ms\n", 22);
    CHECK_EQ(parse("--config", p, NULL), -1);
    CHECK(says("w.conf:2: --windows: '1500ms' is not a whole number of seconds"));
    CHECK_EQ(parse("--windows", "1s,366d", NULL), 0);

    CHECK_EQ(parse("--log-segment-bytes", "2100000", NULL), -1);
    CHECK(says("--log-segment-bytes: '2100000' is not a multiple of 4 KiB"));
    CHECK_EQ(parse("--log-bytes-max", "4M", "--log-segment-bytes", "4M", NULL), -1);
    CHECK(says("--log-bytes-max: 4194304 holds fewer than two --log-segment-bytes (4194304)"));
    CHECK_EQ(parse("--log-bytes-max", "8M", "--log-segment-bytes", "4M", NULL), 0);
}

static void test_per_ip(void)
{
    CHECK_EQ(parse(NULL), 0);
    CHECK_EQ(cfg.tcp_connections_per_ip_max, SL_TCP_CONNECTIONS_DEFAULT / 4);
    CHECK_EQ(cfg.http_connections_per_ip_max, SL_HTTP_CONNECTIONS_DEFAULT / 4);
    CHECK_EQ(cfg.http_threads, SL_HTTP_THREADS_DEFAULT);
    CHECK_EQ(cfg.tcp_frame_timeout_ms, 5000);
    CHECK_EQ(parse("--max-tcp-connections", "3", "--max-http-connections", "40", NULL), 0);
    CHECK_EQ(cfg.tcp_connections_per_ip_max, 1); /* a quarter of 3, at least 1 */
    CHECK_EQ(cfg.http_connections_per_ip_max, 10);
    CHECK_EQ(parse("--max-tcp-connections", "16", "--max-tcp-connections-per-ip", "16", NULL), 0);
    CHECK_EQ(parse("--max-tcp-connections", "16", "--max-tcp-connections-per-ip", "17", NULL), -1);
    CHECK(says("--max-tcp-connections-per-ip: 17 is more than --max-tcp-connections (16)"));
    CHECK_EQ(parse("--max-http-connections-per-ip", "65", NULL), -1);
    CHECK(says("more than --max-http-connections (64)"));
}

/* The line protocol's options (LINE_PROTOCOL.md): defaults, bounds, the loopback shorthand. */
static void test_line_options(void)
{
    CHECK_EQ(parse(NULL), 0);
    CHECK(strcmp(cfg.influx_tcp, "off") == 0 && strcmp(cfg.influx_udp, "off") == 0);
    CHECK_EQ(cfg.series_max, SL_SERIES_DEFAULT);
    CHECK_EQ_U64(cfg.series_name_bytes, SL_SERIES_NAME_BYTES_DEFAULT);
    CHECK_EQ(cfg.series_id_base, SL_SERIES_ID_BASE_DEFAULT);
    CHECK_EQ_U64(cfg.http_max_body_bytes, 32ull << 20);
    CHECK_EQ(cfg.http_writes_max, 4);
    CHECK_EQ(parse("--influx-tcp", "8094", "--influx-udp", ":8095", NULL), 0);
    CHECK(strcmp(cfg.influx_tcp, "127.0.0.1:8094") == 0);
    CHECK(strcmp(cfg.influx_udp, "127.0.0.1:8095") == 0);
    CHECK_EQ(parse("--influx-tcp", "0.0.0.0:8094", NULL), 0);
    CHECK(strcmp(cfg.influx_tcp, "0.0.0.0:8094") == 0);
    CHECK_EQ(parse("--influx-tcp", "nohost", NULL), -1);
    CHECK_EQ(parse("--max-sensors", "100", NULL), 0);
    CHECK_EQ(cfg.series_max, 100); /* follows the sensor table */
    CHECK_EQ_U64(cfg.series_name_bytes, 12800);
    CHECK_EQ(parse("--max-sensors", "100", "--max-series", "101", NULL), -1);
    CHECK(says("--max-series: 101 is more than --max-sensors (100)"));
    CHECK_EQ(parse("--series-id-base", "4294967295", NULL), -1);
    CHECK(says("--series-id-base: 4294967295 + --max-series 65536 passes the last id"));
    CHECK_EQ(parse("--series-id-base", "0", "--max-series", "10", NULL), 0);
    CHECK_EQ(cfg.series_id_base, 0);
    CHECK_EQ(parse("--max-series", "16777217", NULL), -1);
    CHECK_EQ(parse("--series-name-bytes", "1G", NULL), 0);
    CHECK_EQ(parse("--series-name-bytes", "2G", NULL), -1);
    CHECK_EQ(parse("--http-max-body", "1K", NULL), -1);
    CHECK_EQ(parse("--http-max-body", "1G", "--max-http-writes", "64", NULL), 0);
    CHECK_EQ(parse("--max-http-writes", "65", NULL), -1);
    CHECK_EQ(parse("--max-http-writes", "0", NULL), -1);
}

struct seen {
    uint32_t count;
    char keys[512];
    uint32_t live;
};

static void note(void *arg, const char *key, const char *old_value, const char *new_value,
                 bool live)
{
    struct seen *s = arg;
    size_t n = strlen(s->keys);
    snprintf(s->keys + n, sizeof s->keys - n, "%s:%s>%s;", key, old_value, new_value);
    s->count++;
    s->live += live;
}

static void test_diff(void)
{
    static struct sl_config a, b;
    CHECK_EQ(parse("--windows", "10s,1m", "--tcp-idle-timeout", "1m", NULL), 0);
    a = cfg;
    CHECK_EQ(parse("--windows", "10s,1h", "--tcp-idle-timeout", "30s", "--log-level", "debug",
                   "--max-sensors", "7", NULL),
             0);
    b = cfg;
    struct seen s = {0};
    /* --max-series and --series-name-bytes follow --max-sensors when not given. */
    CHECK_EQ(sl_config_diff(&a, &b, note, &s), 6);
    CHECK(strcmp(s.keys, "max-sensors:65536>7;windows:10s,1m>10s,1h;max-series:65536>7;"
                         "series-name-bytes:8388608>4096;tcp-idle-timeout:1m>30s;"
                         "log-level:info>debug;") == 0);
    CHECK_EQ(s.live, 2);
    struct seen none = {0};
    CHECK_EQ(sl_config_diff(&a, &a, note, &none), 0);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/sluice-test-config-XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    test_not_regular();
    test_bytes();
    test_duplicates();
    test_config_as_value();
    test_values();
    test_cross_checks();
    test_per_ip();
    test_diff();
    test_line_options();
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    TEST_END("test_config");
}
