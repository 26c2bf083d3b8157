/*
 * libFuzzer target for the daemon's configuration parser
 * (src/daemon/config.c: sl_config_parse, the config file and the command
 * line).
 *
 * Input: the first line (up to the first '\n') is split at every space
 * into command-line words (at most FUZZ_WORDS_MAX; "--help" and
 * "--version" are left out, they print the usage or the version to
 * stdout; so is any word that starts with "--config", so that the only
 * file read is ours); the rest is the config file, written to a file in a
 * temporary directory made once per process (under /dev/shm when it is
 * there). argv is {"sluiced", WORDS..., "--config", FILE}, or
 * {"sluiced", "--config=FILE", WORDS...} for inputs of odd length.
 *
 * Proves, for arbitrary files and flags: no crash, no sanitizer error, no
 * hang (the file is bounded, lines are bounded); an error leaves a
 * NUL-terminated message in err that names what was wrong: a flag
 * ("--NAME..."), FILE:LINE, or the argument it quotes; help or version is
 * never the answer (their words are filtered out); after a successful
 * parse, every field is within its documented minimum and maximum (the
 * README table, the constants of the headers), the windows ascend and are
 * whole seconds, the per-address caps do not exceed their tables, the
 * derived defaults follow their options, every string is NUL-terminated
 * and set, every address is "off" or HOST:PORT, and where each value came
 * from agrees with the file lines recorded; and the result survives a
 * round trip: every value that differs from the defaults, written back as
 * `key = value` lines (the flags-only ones as flags) and parsed again,
 * gives a configuration sl_config_diff finds no difference in. Any
 * violation is __builtin_trap(). With FUZZ_CONFIG_VERBOSE set in the
 * environment, each run prints its status and message to stderr (to read
 * what a crashing input did).
 *
 * Memory: static configurations and buffers; one heap copy of the input
 * per run (freed). Files: one config file, rewritten each run, in a
 * directory removed at exit.
 */
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/config.h"

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_WORDS_MAX 24
#define FUZZ_ERR_BYTES 600 /* as main.c's */

static char dir[256], path[300];

static void cleanup(void)
{
    unlink(path);
    rmdir(dir);
}

static void make_dir(void)
{
    const char *base = getenv("TMPDIR");
    struct stat st;
    if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0) {
        base = "/dev/shm";
    } else if (base == NULL || base[0] == '\0') {
        base = "/tmp";
    }
    snprintf(dir, sizeof dir, "%s/sluice-fuzz-config-XXXXXX", base);
    FUZZ_CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/sluice.conf", dir);
    atexit(cleanup);
}

static void write_file(const char *bytes, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FUZZ_CHECK(fd >= 0);
    for (size_t at = 0; at < len;) {
        ssize_t n = write(fd, bytes + at, len - at);
        FUZZ_CHECK(n > 0);
        at += (size_t)n;
    }
    close(fd);
}

static bool terminated(const char *s, size_t bytes)
{
    return memchr(s, '\0', bytes) != NULL;
}

static bool set(const char *s, size_t bytes)
{
    return terminated(s, bytes) && s[0] != '\0';
}

static bool in(uint64_t v, uint64_t lo, uint64_t hi)
{
    return v >= lo && v <= hi;
}

static void check_addr(const char *addr)
{
    FUZZ_CHECK(set(addr, SL_ADDR_BYTES));
    if (strcmp(addr, "off") != 0) {
        char host[SL_ADDR_BYTES], why[300];
        uint16_t port;
        FUZZ_CHECK(sl_config_split_addr(addr, host, sizeof host, &port, why, sizeof why) == 0);
    }
}

/* The store and the log, as the README table bounds them. */
static void check_store_log(const struct sl_config *c)
{
    const struct sl_store_config *s = &c->store;
    FUZZ_CHECK(in(s->sensors_max, 1, SL_SENSORS_MAX));
    FUZZ_CHECK(in(s->ring_readings, SL_RING_READINGS_MIN, SL_RING_READINGS_MAX));
    FUZZ_CHECK(in(s->windows_count, 1, SL_WINDOWS_MAX));
    for (uint32_t i = 0; i < s->windows_count; i++) {
        FUZZ_CHECK(s->windows_us[i] >= 1000000 && s->windows_us[i] <= SL_WINDOW_US_MAX);
        FUZZ_CHECK(s->windows_us[i] % 1000000 == 0);
        FUZZ_CHECK(i == 0 || s->windows_us[i] > s->windows_us[i - 1]);
    }
    FUZZ_CHECK(s->ewma_half_life_us >= 1000 && s->ewma_half_life_us <= SL_WINDOW_US_MAX);
    FUZZ_CHECK(s->future_skew_us >= 0 && s->future_skew_us <= SL_WINDOW_US_MAX);
    FUZZ_CHECK(s->coarse_buckets <= SL_COARSE_BUCKETS_MAX);

    const struct sl_log_config *l = &c->log;
    FUZZ_CHECK(terminated(l->dir, sizeof l->dir) && strcmp(l->dir, c->data_dir) == 0);
    FUZZ_CHECK(in(l->segment_bytes, SL_LOG_SEGMENT_BYTES_MIN, SL_LOG_SEGMENT_BYTES_MAX));
    FUZZ_CHECK(l->segment_bytes % 4096 == 0);
    FUZZ_CHECK(l->bytes_max <= SL_LOG_BYTES_MAX_MAX && l->bytes_max / 2 >= l->segment_bytes);
    FUZZ_CHECK(in(l->buffer_bytes, SL_LOG_BUFFER_BYTES_MIN, SL_LOG_BUFFER_BYTES_MAX));
    FUZZ_CHECK(l->sync == SL_SYNC_ALWAYS || l->sync == SL_SYNC_BATCH || l->sync == SL_SYNC_NEVER);
    FUZZ_CHECK(in(l->sync_interval_ms, 1, SL_LOG_SYNC_INTERVAL_MS_MAX));
    FUZZ_CHECK(c->checkpoint_every_bytes <= SL_LOG_BYTES_MAX_MAX);
    FUZZ_CHECK(l->wait_for_checkpoint == (c->checkpoint_every_bytes != 0));
}

static void check_config(const struct sl_config *c)
{
    check_addr(c->udp);
    check_addr(c->tcp);
    check_addr(c->http);
    FUZZ_CHECK(set(c->data_dir, sizeof c->data_dir));
    FUZZ_CHECK(terminated(c->config_file, sizeof c->config_file));
    FUZZ_CHECK(strcmp(c->config_file, path) == 0);
    FUZZ_CHECK(terminated(c->io_faults, sizeof c->io_faults));
    check_store_log(c);
    FUZZ_CHECK(in(c->streams_max, 1, SL_STREAMS_MAX));
    FUZZ_CHECK(in(c->tcp_connections_max, 1, SL_TCP_CONNECTIONS_MAX));
    FUZZ_CHECK(in(c->tcp_connections_per_ip_max, 1, c->tcp_connections_max));
    FUZZ_CHECK(in(c->tcp_idle_timeout_s, 1, SL_TCP_IDLE_TIMEOUT_S_MAX));
    FUZZ_CHECK(in(c->tcp_frame_timeout_ms, 100, SL_TCP_FRAME_TIMEOUT_MS_MAX));
    FUZZ_CHECK(in(c->udp_batch, 1, SL_UDP_BATCH_MAX));
    FUZZ_CHECK(in(c->udp_rcvbuf_bytes, 65536, SL_UDP_RCVBUF_MAX));
    FUZZ_CHECK(in(c->http_connections_max, 1, SL_HTTP_CONNECTIONS_MAX));
    FUZZ_CHECK(in(c->http_connections_per_ip_max, 1, c->http_connections_max));
    FUZZ_CHECK(in(c->http_timeout_s, 1, 3600));
    FUZZ_CHECK(in(c->http_header_timeout_ms, 100, 3600000));
    FUZZ_CHECK(in(c->http_threads, 1, SL_HTTP_THREADS_MAX));
    FUZZ_CHECK(c->log_level >= SL_SAY_ERROR && c->log_level <= SL_SAY_DEBUG);
    for (uint32_t i = 0; i < SL_CONFIG_OPTS_MAX; i++) {
        FUZZ_CHECK(c->source[i] <= SL_CONFIG_FLAG);
        /* A value from the file knows its line; a default was never in the file. */
        FUZZ_CHECK(c->source[i] != SL_CONFIG_FILE || c->file_line[i] >= 1);
        FUZZ_CHECK(c->source[i] != SL_CONFIG_DEFAULT || c->file_line[i] == 0);
    }
}

/* An error names a flag, FILE:LINE, or the argument it quotes. */
static void check_error(const char *err)
{
    FUZZ_CHECK(terminated(err, FUZZ_ERR_BYTES) && err[0] != '\0');
    if (strncmp(err, "--", 2) == 0 || strncmp(err, "unknown option '", 16) == 0 ||
        strncmp(err, "unexpected argument '", 21) == 0) {
        return;
    }
    size_t n = strlen(path);
    FUZZ_CHECK(strncmp(err, path, n) == 0 && err[n] == ':');
    const char *p = err + n + 1;
    FUZZ_CHECK(*p >= '1' && *p <= '9');
    while (*p >= '0' && *p <= '9') {
        p++;
    }
    FUZZ_CHECK(*p == ':');
}

/* ---- the round trip: what differs from the defaults, written back and parsed again ---- */

static struct sl_config defaults, first, second;
static char text[SL_CONFIG_FILE_BYTES_MAX / 16];
static size_t text_len;
static char *flags[SL_CONFIG_OPTS_MAX + 4];
static int flags_count;
static bool writable;

static void note_line(const char *key, const char *new_value);

static void note_value(void *arg, const char *key, const char *old_value, const char *new_value,
                       bool live)
{
    (void)arg, (void)old_value, (void)live;
    static char flag_words[3][64];
    if (strcmp(key, "quiet") == 0 || strcmp(key, "allow-overcommit") == 0 ||
        strcmp(key, "print-memory-plan") == 0) { /* flags only */
        FUZZ_CHECK(strcmp(new_value, "on") == 0);
        char *w = flag_words[flags_count - 3];
        snprintf(w, sizeof flag_words[0], "--%s", key);
        flags[flags_count++] = w;
        return;
    }
    FUZZ_CHECK(strcmp(key, "config") != 0); /* both name the same file */
    const struct sl_config_list *list = strcmp(key, "uplink") == 0         ? &first.uplink_specs
                                        : strcmp(key, "uplink-tag") == 0   ? &first.uplink_tag_specs
                                        : strcmp(key, "uplink-token") == 0 ? &first.uplink_token_specs
                                        : strcmp(key, "uplink-mode") == 0  ? &first.uplink_mode_specs
                                        : strcmp(key, "mqtt-subscribe") == 0
                                            ? &first.mqtt_subscribe_specs
                                        : strcmp(key, "uplink-stream-id") == 0
                                            ? &first.uplink_stream_id_specs
                                            : NULL;
    if (list != NULL) { /* repeatable: shown joined by spaces, written back a line an item */
        for (uint32_t i = 0; i < list->count; i++) {
            note_line(key, list->items[i]);
        }
        return;
    }
    note_line(key, new_value);
}

static void note_line(const char *key, const char *new_value)
{
    size_t n = strlen(new_value);
    /* A file cannot hold every value a flag can: '#' starts a comment, ends are trimmed. */
    if (n == 0 || strchr(new_value, '#') != NULL || new_value[0] == ' ' ||
        new_value[n - 1] == ' ' || strchr(new_value, '\t') || strchr(new_value, '\r') ||
        strchr(new_value, '\v') || strchr(new_value, '\f') || strchr(new_value, '\n')) {
        writable = false;
        return;
    }
    int w = snprintf(text + text_len, sizeof text - text_len, "%s = %s\n", key, new_value);
    if (w < 0 || (size_t)w >= sizeof text - text_len || (size_t)w > SL_CONFIG_LINE_BYTES_MAX) {
        writable = false;
        return;
    }
    text_len += (size_t)w;
}

static void count_difference(void *arg, const char *key, const char *old_value,
                             const char *new_value, bool live)
{
    (void)live;
    if (getenv("FUZZ_CONFIG_VERBOSE") != NULL) {
        fprintf(stderr, "round trip: %s was '%s', is '%s'\n", key, old_value, new_value);
    }
    (*(uint32_t *)arg)++;
}

static void check_overridden(void *arg, const char *key, uint32_t file_line)
{
    (void)arg;
    FUZZ_CHECK(key[0] != '\0' && file_line >= 1);
}

static void round_trip(void)
{
    char err[FUZZ_ERR_BYTES];
    char *argv[] = {"sluiced", NULL};
    sl_config_default(&defaults);
    FUZZ_CHECK(sl_config_parse(&defaults, 1, argv, err, sizeof err) == 0);
    text_len = 0;
    flags_count = 3;
    writable = true;
    flags[0] = "sluiced";
    flags[1] = "--config";
    flags[2] = path;
    struct sl_config *base = &defaults;
    strcpy(base->config_file, first.config_file); /* the same file: not a difference */
    /*
     * Values that follow other options by default (a quarter of a table, a
     * quarter of the log) are written whatever they are: "per-ip = 32" left
     * out beside "max-tcp-connections = 127" would come back as 31. Values
     * no parse gives make them differ.
     */
    base->tcp_connections_per_ip_max = 0;
    base->http_connections_per_ip_max = 0;
    base->checkpoint_every_bytes = UINT64_MAX;
    sl_config_diff(base, &first, note_value, NULL);
    if (!writable) {
        return;
    }
    write_file(text, text_len);
    flags[flags_count] = NULL;
    sl_config_default(&second);
    int rc = sl_config_parse(&second, flags_count, flags, err, sizeof err);
    if (rc != 0 && getenv("FUZZ_CONFIG_VERBOSE") != NULL) {
        fprintf(stderr, "round trip: the file written back is refused: %s\n%.*s", err, (int)text_len, text);
    }
    FUZZ_CHECK(rc == 0);
    check_config(&second);
    uint32_t differences = 0;
    FUZZ_CHECK(sl_config_diff(&first, &second, count_difference, &differences) == 0);
    FUZZ_CHECK(differences == 0);
}

/* Split line[0, len) at every space into words; the filtered ones are left out. */
static int split_words(char *line, size_t len, char **words)
{
    int count = 0;
    if (len == 0) {
        return 0;
    }
    char *start = line;
    for (size_t i = 0; i <= len && count < FUZZ_WORDS_MAX; i++) {
        if (i < len && line[i] != ' ') {
            continue;
        }
        line[i] = '\0';
        if (strcmp(start, "--help") != 0 && strcmp(start, "--version") != 0 &&
            strncmp(start, "--config", 8) != 0) {
            words[count++] = start;
        }
        start = line + i + 1;
    }
    return count;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (dir[0] == '\0') {
        make_dir();
    }
    char *copy = malloc(size + 1);
    FUZZ_CHECK(copy != NULL);
    memcpy(copy, data, size);
    copy[size] = '\0';
    char *newline = memchr(copy, '\n', size);
    size_t line_len = newline != NULL ? (size_t)(newline - copy) : size;
    const char *file = newline != NULL ? newline + 1 : copy + size;
    write_file(file, size - (size_t)(file - copy));

    char *argv[FUZZ_WORDS_MAX + 4];
    char config_eq[sizeof path + 16];
    snprintf(config_eq, sizeof config_eq, "--config=%s", path);
    int argc = 1;
    argv[0] = "sluiced";
    if (size % 2 == 1) {
        argv[argc++] = config_eq;
    }
    argc += split_words(copy, line_len, argv + argc);
    if (size % 2 == 0) {
        argv[argc++] = "--config";
        argv[argc++] = path;
    }
    argv[argc] = NULL;

    char err[FUZZ_ERR_BYTES];
    memset(err, 0x55, sizeof err);
    sl_config_default(&first);
    int rc = sl_config_parse(&first, argc, argv, err, sizeof err);
    if (getenv("FUZZ_CONFIG_VERBOSE") != NULL) { /* to read what a crashing input did */
        fprintf(stderr, "rc %d, err '%.*s', file %s\n", rc,
                rc == 0 ? 0 : (int)strnlen(err, sizeof err), err, path);
    }
    FUZZ_CHECK(rc == 0 || rc == -1); /* 1 is help or version, filtered out */
    if (rc == 0) {
        check_config(&first);
        sl_config_overridden(&first, check_overridden, NULL);
        round_trip();
    } else {
        check_error(err);
    }
    free(copy);
    return 0;
}
