/*
 * sluiced: start-up and shutdown order, and signals.
 *
 * 1. Parse the configuration (flags over file over defaults). Bad input:
 *    "sluiced: <message naming the flag or FILE:LINE>" on stderr and exit
 *    2 (plain: the event-line format is not known yet). From here on every
 *    message is an event line (core/say.h) in the configured format.
 * 2. Plan every byte: store, ingest (sockets, connection table, stream
 *    tables), log buffers, HTTP scratch. --print-memory-plan prints it, and
 *    whether it fits in MemAvailable, and exits 0.
 * 3. Check the plan against MemAvailable (/proc/meminfo) with
 *    SL_MEMORY_MARGIN_BYTES to spare: a plan that cannot fit is exit 2
 *    saying how to size it, unless --allow-overcommit.
 * 4. Bind every listener (UDP, TCP, HTTP; sl_sock_listen: exclusive
 *    ports), set and read back the UDP receive buffer: a busy port is an
 *    exit 2 naming it, before the data directory is touched or a byte of
 *    the plan is mapped. The descriptors are handed over (prebound).
 * 5. Create and lock the data directory, map and pre-fault the arena (a
 *    warning when it cannot be mlocked), initialise the store, recover
 *    (the newest checkpoint, then the log after it), open the ingest side
 *    on the bound sockets. Any failure: an error line and exit 2, before a
 *    single thread has started, so there is never a half-started daemon.
 * 6. Block SIGINT, SIGTERM and SIGHUP in every thread (SIGHUP from the very
 *    start, so an early one never kills), start the HTTP server and the
 *    ingest thread, print the start line, wait in sigwait.
 * 7. SIGHUP: re-read the config file with the same parser (flags still
 *    win), apply what can change live (struct sl_live, the log level and
 *    format), say which other keys changed and need a restart; a broken
 *    file is an error line and the running settings stay. Never exits.
 * 8. SIGINT/SIGTERM: the ingest thread stops accepting, finishes what is
 *    in flight (logged, applied, acked) and exits; the log is synced and
 *    closed; HTTP stops; exit 0, well within 2 s.
 *
 * The stdout lines ("recovered in", "listening", "stopped on") are a
 * documented interface that tests and benchmarks wait on; each is also an
 * info event on stderr.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/http.h"
#include "core/alloc_count.h"
#include "core/assert.h"
#include "core/clock.h"
#include "core/io.h"
#include "core/live.h"
#include "core/plan.h"
#include "core/say.h"
#include "daemon/config.h"
#include "daemon/fds.h"
#include "mqtt/subscriber.h"
#include "net/ingest.h"
#include "net/sock.h"
#include "store/checkpoint.h"
#include "store/log.h"
#include "store/recover.h"
#include "store/series.h"
#include "store/store.h"
#include "uplink/uplink.h"

#define EXIT_USAGE 2
/* MemAvailable must hold the plan and this much more: libc, MHD's pools, thread stacks, page
 * tables. */
#define SL_MEMORY_MARGIN_BYTES (64ull << 20)

struct daemon {
    struct sl_config config;
    int argc; /* kept for SIGHUP: the flags still win over the re-read file */
    char **argv;
    struct sl_live live; /* what SIGHUP changes; both configs point here */
    struct sl_plan plan;
    struct sl_arena arena;
    struct sl_store store;
    struct sl_series series; /* named series of the line protocol */
    struct sl_ingest ingest;
    struct sl_ingest_config ingest_config;
    struct sl_http_config http_config;
    struct sl_http_context http_context;
    struct sl_http *http;
    int udp_fd, tcp_fd, http_fd; /* bound at step 4; -1: off */
    int influx_tcp_fd, influx_udp_fd; /* the line listeners, bound at step 4; -1: off */
    char influx_tcp_host[SL_ADDR_BYTES], influx_udp_host[SL_ADDR_BYTES];
    uint16_t influx_tcp_port, influx_udp_port;
    uint64_t
        udp_rcvbuf_granted_bytes; /* SO_RCVBUF read back, halved (Linux reports twice the grant) */
    struct sl_io_faults io_faults;
    struct sl_log *log;
    struct sl_checkpointer checkpointer;
    struct sl_recover_result recovery;
    struct sl_uplinks uplinks;
    struct sl_mqtt mqtt; /* the subscriber, when --mqtt-broker is on */
};

static struct daemon d; /* large; static keeps it off the stack */

static int die(const char *msg)
{
    sl_say(SL_SAY_ERROR, "daemon", "%s", msg);
    return EXIT_USAGE;
}

/* The live settings from the configuration (start-up, and SIGHUP after it changed them). */
static void fill_live(struct sl_live *live, const struct sl_config *c)
{
    sl_live_set(&live->tcp_idle_timeout_ms, c->tcp_idle_timeout_s * 1000u);
    sl_live_set(&live->tcp_frame_timeout_ms, c->tcp_frame_timeout_ms);
    sl_live_set(&live->tcp_connections_per_ip_max, c->tcp_connections_per_ip_max);
    sl_live_set(&live->http_timeout_ms, c->http_timeout_s * 1000u);
    sl_live_set(&live->http_header_timeout_ms, c->http_header_timeout_ms);
    sl_live_set(&live->http_connections_per_ip_max, c->http_connections_per_ip_max);
    sl_say_configure(c->log_level, c->log_json);
}

/* Fill the ingest and HTTP configurations from the daemon's. */
static int derive_configs(struct daemon *dm, char *err, uint32_t err_bytes)
{
    const struct sl_config *c = &dm->config;
    struct sl_ingest_config *in = &dm->ingest_config;
    memset(in, 0, sizeof *in);
    in->prebound = true;
    in->udp_fd = in->tcp_fd = -1;
    in->streams_max = c->streams_max;
    /* A listener that is off plans no table: no connection memory, no receive buffers. */
    in->tcp_connections_max = strcmp(c->tcp, "off") != 0 ? c->tcp_connections_max : 0;
    in->tcp_idle_timeout_s = c->tcp_idle_timeout_s;
    in->tcp_frame_timeout_ms = c->tcp_frame_timeout_ms;
    in->tcp_connections_per_ip_max = c->tcp_connections_per_ip_max;
    in->live = &dm->live;
    in->udp_batch = strcmp(c->udp, "off") != 0 ? c->udp_batch : 1;
    in->udp_rcvbuf_bytes = c->udp_rcvbuf_bytes;
    in->checkpoint_every_bytes = c->checkpoint_every_bytes;
    in->apply_thread = c->apply_thread;
    in->apply_area_bytes = c->log.buffer_bytes;
    if (strcmp(c->udp, "off") != 0 &&
        sl_config_split_addr(c->udp, in->udp_host, sizeof in->udp_host, &in->udp_port, err,
                             err_bytes) != 0) {
        return -1;
    }
    if (strcmp(c->tcp, "off") != 0 &&
        sl_config_split_addr(c->tcp, in->tcp_host, sizeof in->tcp_host, &in->tcp_port, err,
                             err_bytes) != 0) {
        return -1;
    }
    in->series = &dm->series;
    struct sl_lines_config *lc = &in->lines;
    lc->http_writes = strcmp(c->http, "off") != 0 ? c->http_writes_max : 0;
    lc->http_body_bytes = c->http_max_body_bytes;
    lc->tcp_connections_max = c->tcp_connections_max;
    lc->tcp_idle_timeout_ms = c->tcp_idle_timeout_s * 1000u;
    lc->tcp_line_timeout_ms = c->tcp_frame_timeout_ms;
    lc->tcp_per_ip_max = c->tcp_connections_per_ip_max;
    lc->mqtt_messages = c->mqtt.on ? SL_MQTT_ROUND_MESSAGES : 0;
    lc->live = &dm->live;
    /* On or off for the plan (>= 0: on); the sockets are bound at step 4. */
    lc->tcp_fd = lc->udp_fd = -1;
    if (strcmp(c->influx_tcp, "off") != 0) {
        if (sl_config_split_addr(c->influx_tcp, dm->influx_tcp_host, sizeof dm->influx_tcp_host,
                                 &dm->influx_tcp_port, err, err_bytes) != 0) {
            return -1;
        }
        lc->tcp_fd = 0;
    }
    if (strcmp(c->influx_udp, "off") != 0) {
        if (sl_config_split_addr(c->influx_udp, dm->influx_udp_host, sizeof dm->influx_udp_host,
                                 &dm->influx_udp_port, err, err_bytes) != 0) {
            return -1;
        }
        lc->udp_fd = 0;
    }
    struct sl_http_config *h = &dm->http_config;
    memset(h, 0, sizeof *h);
    h->prebound = true;
    h->listen_fd = -1;
    h->connections_max = c->http_connections_max;
    h->connection_memory_bytes = SL_HTTP_CONNECTION_MEMORY_DEFAULT;
    h->timeout_s = c->http_timeout_s;
    h->threads = c->http_threads;
    h->header_timeout_ms = c->http_header_timeout_ms;
    h->connections_per_ip_max = c->http_connections_per_ip_max;
    h->live = &dm->live;
    if (strcmp(c->http, "off") != 0 &&
        sl_config_split_addr(c->http, h->host, sizeof h->host, &h->port, err, err_bytes) != 0) {
        return -1;
    }
    fill_live(&dm->live, c);
    return 0;
}

/* Descriptors for every connection the tables allow, the log's segments and a margin (daemon/fds.h). */
static int reserve_fds(const struct daemon *dm, char *err, uint32_t err_bytes)
{
    const struct sl_config *c = &dm->config;
    uint64_t need = sl_ingest_fds_needed(&dm->ingest_config) + c->http_connections_max +
                    c->log.bytes_max / c->log.segment_bytes + 2 + SL_FDS_MARGIN;
    uint64_t limit = 0;
    char what[160];
    snprintf(what, sizeof what, "%u TCP and %u HTTP connections, log segments, %u spare",
             c->tcp_connections_max, c->http_connections_max, SL_FDS_MARGIN);
    return sl_fds_reserve(need, what, &limit, err, err_bytes);
}

static void build_plan(struct daemon *dm)
{
    sl_plan_init(&dm->plan);
    sl_store_plan(&dm->config.store, &dm->plan);
    sl_series_plan(dm->config.series_max, dm->config.series_name_bytes, &dm->plan);
    sl_ingest_plan(&dm->ingest_config, &dm->plan);
    sl_log_plan(&dm->config.log, &dm->plan);
    sl_http_plan(&dm->config.store, &dm->http_config, &dm->plan);
    sl_uplinks_plan(&dm->config.uplinks, &dm->plan);
    sl_mqtt_plan(&dm->config.mqtt, &dm->plan);
}

/* MemAvailable from /proc/meminfo, in bytes; 0 when it cannot be read. */
static uint64_t mem_available_bytes(void)
{
    FILE *f = fopen("/proc/meminfo", "re");
    if (f == NULL) {
        return 0;
    }
    char line[256];
    unsigned long long kib = 0;
    for (uint32_t i = 0; i < 256 && fgets(line, sizeof line, f) != NULL; i++) {
        if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1) {
            break;
        }
    }
    fclose(f);
    return (uint64_t)kib * 1024;
}

static double mib(uint64_t bytes)
{
    return (double)bytes / (1 << 20);
}

/* A size for people: "2.3 GiB", "512.0 MiB". */
static const char *human(char out[32], uint64_t bytes)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double v = (double)bytes / 1024;
    uint32_t i = 0;
    while (v >= 1024 && i + 1 < SL_ARRAY_COUNT(units)) {
        v /= 1024;
        i++;
    }
    snprintf(out, 32, "%.1f %s", v, units[i]);
    return out;
}

/* The plan fits when MemAvailable holds it and the margin. */
static bool plan_fits(uint64_t plan_bytes, uint64_t available_bytes)
{
    return available_bytes >= SL_MEMORY_MARGIN_BYTES &&
           plan_bytes <= available_bytes - SL_MEMORY_MARGIN_BYTES;
}

static void print_plan(const struct daemon *dm)
{
    const struct sl_store_config *s = &dm->config.store;
    printf("memory plan: %u sensors x %u readings, %u TCP connections, %u streams a transport\n",
           s->sensors_max, s->ring_readings, dm->config.tcp_connections_max,
           dm->config.streams_max);
    printf("disk: log segments of %llu bytes, at most %llu bytes of log, sync %s\n",
           (unsigned long long)dm->config.log.segment_bytes,
           (unsigned long long)dm->config.log.bytes_max, sl_sync_mode_name(dm->config.log.sync));
    for (uint32_t i = 0; i < dm->plan.count; i++) {
        const struct sl_plan_part *p = &dm->plan.parts[i];
        printf("  %-18s %14llu bytes  %s\n", p->name, (unsigned long long)p->bytes, p->what);
    }
    printf("  %-18s %14llu bytes  (%.1f MiB)\n", "total", (unsigned long long)dm->plan.total_bytes,
           mib(dm->plan.total_bytes));
    printf("raw ring: %.4f bytes per retained reading (slots and padding, records, index)\n",
           sl_store_bytes_per_reading(s));
    uint64_t avail = mem_available_bytes();
    if (avail != 0) {
        printf("available: %llu bytes (%.1f MiB, MemAvailable); the plan %s with %llu MiB to "
               "spare%s\n",
               (unsigned long long)avail, mib(avail),
               plan_fits(dm->plan.total_bytes, avail) ? "fits" : "does NOT fit",
               SL_MEMORY_MARGIN_BYTES >> 20,
               plan_fits(dm->plan.total_bytes, avail)
                   ? ""
                   : " (sluiced refuses to start without --allow-overcommit)");
    }
}

/* Step 3: refuse a plan MemAvailable cannot hold, unless --allow-overcommit. */
static int check_memory(const struct daemon *dm, char *err, uint32_t err_bytes)
{
    uint64_t avail = mem_available_bytes(), plan = dm->plan.total_bytes;
    char plan_h[32], avail_h[32];
    human(plan_h, plan);
    if (avail == 0) {
        sl_say(SL_SAY_WARN, "memory",
               "cannot read MemAvailable from /proc/meminfo: the plan of %s is not "
               "checked against the machine",
               plan_h);
        return 0;
    }
    if (plan_fits(plan, avail)) {
        return 0;
    }
    human(avail_h, avail);
    const struct sl_store_config *s = &dm->config.store;
    if (dm->config.allow_overcommit) {
        sl_say(SL_SAY_WARN, "memory",
               "the memory plan of %s does not fit in MemAvailable (%s) with %llu MiB "
               "to spare: starting anyway (--allow-overcommit)",
               plan_h, avail_h, SL_MEMORY_MARGIN_BYTES >> 20);
        return 0;
    }
    snprintf(
        err, err_bytes,
        "the memory plan of %llu bytes (%s) does not fit: MemAvailable is %llu bytes (%s) and %llu "
        "MiB "
        "more is kept for the heap and thread stacks; size it with --max-sensors (now %u) and "
        "--ring-readings (now %u; about 8 bytes a reading a sensor), see --print-memory-plan, or "
        "start anyway with --allow-overcommit",
        (unsigned long long)plan, plan_h, (unsigned long long)avail, avail_h,
        SL_MEMORY_MARGIN_BYTES >> 20, s->sensors_max, s->ring_readings);
    return -1;
}

/* A one-number file under /proc/sys, for messages; -1 when unreadable. */
static long long proc_sys_number(const char *path)
{
    FILE *f = fopen(path, "re");
    long long n = -1;
    if (f != NULL) {
        if (fscanf(f, "%lld", &n) != 1) {
            n = -1;
        }
        fclose(f);
    }
    return n;
}

/*
 * Ask for the UDP receive buffer (SO_RCVBUFFORCE when permitted, else
 * SO_RCVBUF, which net.core.rmem_max caps) and read back what was granted.
 * Linux stores and reports twice the grant (half is its bookkeeping), so
 * the grant is the read-back value halved; a grant below the request is
 * one warning line.
 */
static void udp_buffer(struct daemon *dm, int fd)
{
    int want = (int)dm->config.udp_rcvbuf_bytes, got = 0;
    socklen_t len = sizeof got;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof want) != 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof want);
    }
    if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &got, &len) != 0) {
        got = 0;
    }
    dm->udp_rcvbuf_granted_bytes = (uint64_t)got / 2;
    if (dm->udp_rcvbuf_granted_bytes < (uint64_t)want) {
        sl_say(
            SL_SAY_WARN, "udp",
            "receive buffer is %llu bytes, not the %d asked for (--udp-rcvbuf): capped by "
            "net.core.rmem_max (%lld) without CAP_NET_ADMIN; bursts beyond it are dropped by the "
            "kernel (counted); raise it with sysctl -w net.core.rmem_max=%d",
            (unsigned long long)dm->udp_rcvbuf_granted_bytes, want,
            proc_sys_number("/proc/sys/net/core/rmem_max"), want);
    }
}

/* Step 4: every listener bound before anything else is touched; the fds go to the ingest and HTTP
 * configs. */
static int bind_listeners(struct daemon *dm, char *err, uint32_t err_bytes)
{
    struct sl_ingest_config *in = &dm->ingest_config;
    struct sl_http_config *h = &dm->http_config;
    dm->udp_fd = dm->tcp_fd = dm->http_fd = dm->influx_tcp_fd = dm->influx_udp_fd = -1;
    if (in->udp_host[0] != '\0') {
        dm->udp_fd = sl_sock_listen("udp", in->udp_host, in->udp_port, SOCK_DGRAM, err, err_bytes);
        if (dm->udp_fd < 0) {
            return -1;
        }
        udp_buffer(dm, dm->udp_fd);
    }
    if (in->tcp_host[0] != '\0') {
        dm->tcp_fd = sl_sock_listen("tcp", in->tcp_host, in->tcp_port, SOCK_STREAM, err, err_bytes);
        if (dm->tcp_fd < 0) {
            return -1;
        }
    }
    if (strcmp(dm->config.http, "off") != 0) {
        dm->http_fd = sl_sock_listen("http", h->host, h->port, SOCK_STREAM, err, err_bytes);
        if (dm->http_fd < 0) {
            return -1;
        }
    }
    if (in->lines.tcp_fd >= 0) {
        dm->influx_tcp_fd = sl_sock_listen("influx-tcp", dm->influx_tcp_host, dm->influx_tcp_port,
                                           SOCK_STREAM, err, err_bytes);
        if (dm->influx_tcp_fd < 0) {
            return -1;
        }
    }
    if (in->lines.udp_fd >= 0) {
        dm->influx_udp_fd = sl_sock_listen("influx-udp", dm->influx_udp_host, dm->influx_udp_port,
                                           SOCK_DGRAM, err, err_bytes);
        if (dm->influx_udp_fd < 0) {
            return -1;
        }
        udp_buffer(dm, dm->influx_udp_fd);
    }
    in->udp_fd = dm->udp_fd;
    in->tcp_fd = dm->tcp_fd;
    in->lines.tcp_fd = dm->influx_tcp_fd;
    in->lines.udp_fd = dm->influx_udp_fd;
    h->listen_fd = dm->http_fd;
    return 0;
}

/* mkdir -p for the data directory. */
static int make_dirs(const char *path, char *err, uint32_t err_bytes)
{
    char buf[SL_PATH_BYTES];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p != '\0'; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
                snprintf(err, err_bytes, "--data-dir %.300s: %s", buf, strerror(errno));
                return -1;
            }
            *p = '/';
        }
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
        snprintf(err, err_bytes, "--data-dir %.300s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode) || access(buf, W_OK) != 0) {
        snprintf(err, err_bytes, "--data-dir %.300s: not a writable directory", path);
        return -1;
    }
    return 0;
}

/* One daemon per data directory: an exclusive lock held for the process's life. */
static int lock_data_dir(const char *dir, char *err, uint32_t err_bytes)
{
    char path[SL_PATH_BYTES + 16];
    snprintf(path, sizeof path, "%s/LOCK", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(err, err_bytes, "--data-dir %.300s: %s", dir,
                 fd < 0 ? strerror(errno) : "in use by another sluiced");
        return -1;
    }
    return 0; /* the fd stays open: the lock lives as long as the process */
}

/*
 * The arena was mapped but not locked (core/plan.c tries mlock once): try
 * once more to learn why, and say it in one line with what to do.
 */
static void say_unlocked(struct sl_arena *arena)
{
    int e = mlock(arena->base, arena->bytes) == 0 ? 0 : errno;
    if (e == 0) {
        arena->locked = true;
        return;
    }
    struct rlimit rl = {0, 0};
    char limit[32] = "unknown";
    if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0) {
        if (rl.rlim_cur == RLIM_INFINITY) {
            snprintf(limit, sizeof limit, "unlimited");
        } else {
            snprintf(limit, sizeof limit, "%llu bytes", (unsigned long long)rl.rlim_cur);
        }
    }
    sl_say(
        SL_SAY_WARN, "memory",
        "the memory plan (%llu bytes) is not locked in RAM: mlock: %s (RLIMIT_MEMLOCK %s, no "
        "CAP_IPC_LOCK), so the kernel may swap it out under pressure; set LimitMEMLOCK=infinity in "
        "the systemd unit, run ulimit -l unlimited, or grant CAP_IPC_LOCK",
        (unsigned long long)arena->bytes, strerror(e), limit);
}

/* Load the newest checkpoint and replay the log after it; set up the checkpointer. */
static int recover(struct daemon *dm, char *err, uint32_t err_bytes)
{
    const struct sl_io *io = &sl_io_posix;
    if (dm->config.io_faults[0] != '\0') {
        const char *why = NULL;
        if (sl_io_faults_init(&dm->io_faults, &sl_io_posix, dm->config.io_faults, &why) != 0) {
            snprintf(err, err_bytes, "--io-faults: %s", why);
            return -1;
        }
        io = &dm->io_faults.io;
    }
    dm->config.log.io = io;
    dm->log = sl_recover(&dm->config.log, &dm->arena, &dm->store, &dm->ingest.tcp_streams,
                         &dm->ingest.udp_streams, &dm->series, &dm->recovery, err, err_bytes);
    if (dm->log == NULL) {
        return -1;
    }
    struct sl_checkpoint_config ck = {.step_bytes = SL_CHECKPOINT_STEP_BYTES_DEFAULT, .io = io};
    snprintf(ck.dir, sizeof ck.dir, "%s", dm->config.data_dir);
    sl_checkpoint_init(&dm->checkpointer, &ck, &dm->store, &dm->ingest.tcp_streams,
                       &dm->ingest.udp_streams, sl_checkpoint_next_seq(dm->config.data_dir));
    sl_checkpoint_set_series(&dm->checkpointer, &dm->series);
    return 0;
}

/* Step 5: data directory, arena, store, recovery, ingest side. */
static int open_state(struct daemon *dm, char *err, uint32_t err_bytes)
{
    if (make_dirs(dm->config.data_dir, err, err_bytes) != 0 ||
        lock_data_dir(dm->config.data_dir, err, err_bytes) != 0) {
        return -1;
    }
    /* libmicrohttpd, libcurl, libsnappy and libmosquitto malloc their parts of the plan
     * themselves: stated (and checked above), not mapped. */
    int rc = sl_arena_map(&dm->arena, dm->plan.total_bytes -
                                          sl_plan_part_bytes(&dm->plan, SL_HTTP_PLAN_MHD_PART) -
                                          sl_plan_part_bytes(&dm->plan, SL_UPLINK_PLAN_LIBRARY_PART) -
                                          sl_plan_part_bytes(&dm->plan, SL_MQTT_PLAN_LIBRARY_PART));
    if (rc != 0) {
        snprintf(err, err_bytes, "cannot map the memory plan of %llu bytes: %s",
                 (unsigned long long)dm->plan.total_bytes, strerror(-rc));
        return -1;
    }
    if (!dm->arena.locked) {
        say_unlocked(&dm->arena);
    }
    sl_store_init(&dm->store, &dm->config.store, &dm->arena);
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed) {
        seed = (uint64_t)sl_clock_realtime_us() ^ ((uint64_t)getpid() << 32); /* no entropy yet */
    }
    sl_series_init(&dm->series, dm->config.series_max, dm->config.series_name_bytes,
                   dm->config.series_id_base, seed, &dm->arena);
    sl_ingest_take_streams(&dm->ingest, &dm->ingest_config, &dm->arena);
    if (recover(dm, err, err_bytes) != 0) {
        return -1;
    }
    const struct sl_recover_result *r = &dm->recovery;
    char line[512];
    snprintf(line, sizeof line,
             "recovered in %.2f s: %s, %llu log records replayed (%llu readings) from %u segments, "
             "%llu corrupt records skipped, %llu torn bytes cut, %u named series",
             r->seconds, r->checkpoint_used ? "from a checkpoint" : "no checkpoint",
             (unsigned long long)r->records_replayed, (unsigned long long)r->readings_applied,
             r->log.segments, (unsigned long long)r->log.corrupt_records,
             (unsigned long long)r->log.torn_tail_bytes, sl_series_count(&dm->series));
    if (!dm->config.quiet) {
        printf("sluiced: %s\n", line);
    }
    sl_say(SL_SAY_INFO, "store", "%s", line);
    if (sl_uplinks_open(&dm->uplinks, &dm->config.uplinks, &dm->arena, dm->log, &dm->store,
                        &dm->series, err, err_bytes) != 0) {
        return -1;
    }
    if (sl_ingest_open(&dm->ingest, &dm->ingest_config, &dm->store, dm->log, &dm->checkpointer,
                       &dm->arena, err, err_bytes) != 0) {
        return -1;
    }
    return dm->config.mqtt.on ? sl_mqtt_open(&dm->mqtt, &dm->config.mqtt,
                                             &dm->ingest.lines.mqtt_hub, &dm->arena, err, err_bytes)
                              : 0;
}

static int start_http(struct daemon *dm, char *err, uint32_t err_bytes)
{
    if (dm->http_fd < 0) {
        return 0;
    }
    struct sl_http_context *ctx = &dm->http_context;
    ctx->store = &dm->store;
    ctx->net = &dm->ingest.counters;
    ctx->tcp_streams = &dm->ingest.tcp_streams;
    ctx->udp_streams = &dm->ingest.udp_streams;
    ctx->plan = &dm->plan;
    ctx->log = dm->log;
    ctx->checkpointer = &dm->checkpointer;
    ctx->recovery = &dm->recovery;
    ctx->series = &dm->series;
    ctx->writes = dm->ingest_config.lines.http_writes > 0 ? &dm->ingest.lines.hub : NULL;
    ctx->lines = &dm->ingest.lines.counters;
    ctx->view_memory =
        sl_arena_take(&dm->arena, sl_http_views_bytes(&dm->config.store, &dm->http_config));
    ctx->sorted_ids = sl_arena_take(&dm->arena, 2ull * dm->config.store.sensors_max * sizeof(uint32_t));
    ctx->connection_memory = sl_arena_take(&dm->arena, sl_http_connections_bytes(&dm->http_config));
    ctx->version = SL_VERSION;
    ctx->memory_locked = dm->arena.locked;
    ctx->udp_receive_buffer_bytes = dm->udp_rcvbuf_granted_bytes;
    ctx->uplinks = &dm->uplinks;
    ctx->mqtt = dm->config.mqtt.on ? &dm->mqtt : NULL;
    dm->http = sl_http_start(&dm->http_config, ctx, err, err_bytes);
    return dm->http == NULL ? -1 : 0;
}

static void print_started(const struct daemon *dm)
{
    char udp[300] = "off", tcp[300] = "off", http[300] = "off", line[SL_PATH_BYTES + 2048];
    if (dm->udp_fd >= 0) {
        sl_sock_endpoint(udp, sizeof udp, dm->ingest_config.udp_host, sl_sock_port(dm->udp_fd));
    }
    if (dm->tcp_fd >= 0) {
        sl_sock_endpoint(tcp, sizeof tcp, dm->ingest_config.tcp_host, sl_sock_port(dm->tcp_fd));
    }
    if (dm->http_fd >= 0) {
        sl_sock_endpoint(http, sizeof http, dm->http_config.host, sl_sock_port(dm->http_fd));
    }
    char influx[700] = "";
    if (dm->influx_tcp_fd >= 0 || dm->influx_udp_fd >= 0) {
        char it[300] = "off", iu[300] = "off";
        if (dm->influx_tcp_fd >= 0) {
            sl_sock_endpoint(it, sizeof it, dm->influx_tcp_host, sl_sock_port(dm->influx_tcp_fd));
        }
        if (dm->influx_udp_fd >= 0) {
            sl_sock_endpoint(iu, sizeof iu, dm->influx_udp_host, sl_sock_port(dm->influx_udp_fd));
        }
        snprintf(influx, sizeof influx, " influx_tcp=%s influx_udp=%s", it, iu);
    }
    char mqtt[SL_MQTT_HOST_MAX + 64] = "";
    if (dm->config.mqtt.on) {
        snprintf(mqtt, sizeof mqtt, " mqtt=%s", dm->config.mqtt.broker);
    }
    snprintf(line, sizeof line,
             "listening udp=%s tcp=%s http=%s%s%s data=%s memory_planned_bytes=%llu "
             "(%.1f MiB; %u sensors x %u readings%s)",
             udp, tcp, http, influx, mqtt, dm->config.data_dir, (unsigned long long)dm->plan.total_bytes,
             mib(dm->plan.total_bytes), dm->config.store.sensors_max,
             dm->config.store.ring_readings, dm->arena.locked ? ", locked" : "");
    if (!dm->config.quiet) {
        printf("sluiced %s %s\n", SL_VERSION, line);
        fflush(stdout);
    }
    sl_say(SL_SAY_INFO, "daemon", "sluiced %s %s", SL_VERSION, line);
}

/* SIGHUP's report of one changed key. */
static void say_change(void *arg, const char *key, const char *old_value, const char *new_value,
                       bool live)
{
    const struct daemon *dm = arg;
    if (live) {
        sl_say(SL_SAY_INFO, "config", "%s changed in %s: %s -> %s, applied", key,
               dm->config.config_file, old_value, new_value);
    } else {
        sl_say(SL_SAY_WARN, "config",
               "%s changed in %s: needs a restart (running with %s, the file says %s)", key,
               dm->config.config_file, old_value, new_value);
    }
}

/* A key the file sets and a flag overrides: said at start-up and on SIGHUP, so an edit that
 * seems to do nothing explains itself. */
static void say_overridden(void *arg, const char *key, uint32_t file_line)
{
    const struct sl_config *c = arg;
    sl_say(SL_SAY_INFO, "config", "%s in %s:%u is overridden by --%s on the command line", key,
           c->config_file, file_line, key);
}

/* A per-address cap may not exceed the table the daemon runs with (its size needs a restart). */
static void clamp_per_ip(uint32_t *per_ip, uint32_t table, const char *key)
{
    if (*per_ip > table) {
        sl_say(SL_SAY_WARN, "config", "%s %u is more than the %u connections running: using %u",
               key, *per_ip, table, table);
        *per_ip = table;
    }
}

/*
 * SIGHUP: re-read the file (same parser, same argv: the flags still win),
 * report every changed key, apply the live ones. Main thread; the other
 * threads see the new values at their next use (relaxed atomics). A new
 * live key: mark it live in config.c's table, give it a field in struct
 * sl_live (and fill_live), and copy it here.
 */
static void reload(struct daemon *dm)
{
    static struct sl_config fresh; /* large; static keeps it off the stack */
    struct sl_config *c = &dm->config;
    if (c->config_file[0] == '\0') {
        sl_say(SL_SAY_INFO, "config", "SIGHUP: no --config file to re-read; nothing changed");
        return;
    }
    char err[600];
    sl_config_default(&fresh);
    if (sl_config_parse(&fresh, dm->argc, dm->argv, err, sizeof err) != 0) {
        sl_say(SL_SAY_ERROR, "config", "SIGHUP: %s; keeping the running settings", err);
        return;
    }
    clamp_per_ip(&fresh.tcp_connections_per_ip_max, c->tcp_connections_max,
                 "max-tcp-connections-per-ip");
    clamp_per_ip(&fresh.http_connections_per_ip_max, c->http_connections_max,
                 "max-http-connections-per-ip");
    /* The new level and format first: the lines about this reload already follow them. */
    sl_say_configure(fresh.log_level, fresh.log_json);
    sl_say(SL_SAY_DEBUG, "config", "SIGHUP: re-reading %s", c->config_file);
    sl_config_overridden(&fresh, say_overridden, &fresh);
    uint32_t changed = sl_config_diff(c, &fresh, say_change, dm);
    c->tcp_idle_timeout_s = fresh.tcp_idle_timeout_s;
    c->tcp_frame_timeout_ms = fresh.tcp_frame_timeout_ms;
    c->tcp_connections_per_ip_max = fresh.tcp_connections_per_ip_max;
    c->http_timeout_s = fresh.http_timeout_s;
    c->http_header_timeout_ms = fresh.http_header_timeout_ms;
    c->http_connections_per_ip_max = fresh.http_connections_per_ip_max;
    c->log_level = fresh.log_level;
    c->log_json = fresh.log_json;
    if (c->mqtt.on && fresh.mqtt.on) {
        memcpy(c->mqtt.subscriptions, fresh.mqtt.subscriptions, sizeof c->mqtt.subscriptions);
        c->mqtt.subscription_count = fresh.mqtt.subscription_count;
        c->mqtt_subscribe_specs = fresh.mqtt_subscribe_specs;
        sl_mqtt_reload(&dm->mqtt, &c->mqtt);
    }
    fill_live(&dm->live, c);
    sl_say(SL_SAY_INFO, "config", "SIGHUP: %s re-read, %u key%s changed", c->config_file, changed,
           changed == 1 ? "" : "s");
}

/* Steps 6 to 8: threads, the start line, signals until SIGINT or SIGTERM. */
static int run(struct daemon *dm, sigset_t *signals, char *err, uint32_t err_bytes)
{
    if (start_http(dm, err, err_bytes) != 0) {
        return die(err);
    }
    sl_arena_seal(&dm->arena);
    pthread_t ingest_thread;
    if (pthread_create(&ingest_thread, NULL, sl_ingest_run, &dm->ingest) != 0) {
        return die("cannot start the ingest thread");
    }
    if (sl_uplinks_start(&dm->uplinks, err, err_bytes) != 0) {
        return die(err); /* exit 2: the ingest thread dies with the process, nothing acked yet */
    }
    if (dm->config.mqtt.on && sl_mqtt_start(&dm->mqtt, err, err_bytes) != 0) {
        return die(err);
    }
    print_started(dm);
    int sig = 0;
    for (;;) { /* the main thread's one loop: a signal a turn, until SIGINT or SIGTERM */
        if (sigwait(signals, &sig) != 0 || sig != SIGHUP) {
            break;
        }
        reload(dm);
    }
    /* The forwarders first: a request in flight gets 1.5 s of the 2 s stop, then every cursor is
     * durable; a forwarder never waits for the ingest thread, so the order costs ingest nothing. */
    sl_uplinks_stop(&dm->uplinks, sl_clock_monotonic_ns() + 1500ll * 1000000);
    /* The subscriber's round under way is committed and acknowledged: it needs the ingest thread. */
    sl_mqtt_stop(&dm->mqtt);
    sl_ingest_stop(&dm->ingest);
    pthread_join(ingest_thread, NULL);
    sl_uplinks_join(&dm->uplinks);
    if (dm->http != NULL) {
        sl_http_stop(dm->http);
    }
    sl_ingest_close(&dm->ingest);
    sl_log_close(dm->log);
    char line[300];
    snprintf(line, sizeof line,
             "stopped on %s: %llu readings accepted, %llu heap allocations on the ingest path "
             "after start",
             sig == SIGINT ? "SIGINT" : "SIGTERM",
             (unsigned long long)atomic_load(&dm->store.counters.readings_accepted),
             (unsigned long long)sl_alloc_count(SL_ALLOC_INGEST));
    if (!dm->config.quiet) {
        printf("sluiced: %s\n", line);
    }
    sl_say(SL_SAY_INFO, "daemon", "%s", line);
    return 0;
}

int main(int argc, char **argv)
{
    char err[600];
    /* SIGHUP is blocked from the start (its default kills) and taken by sigwait in run(). */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    d.argc = argc;
    d.argv = argv;
    sl_config_default(&d.config);
    int rc = sl_config_parse(&d.config, argc, argv, err, sizeof err);
    if (rc != 0) {
        if (rc > 0) {
            return 0;
        }
        fprintf(stderr, "sluiced: %s\n", err); /* before the event-line format is known */
        return EXIT_USAGE;
    }
    if (derive_configs(&d, err, sizeof err) != 0) {
        return die(err);
    }
    sl_config_overridden(&d.config, say_overridden, &d.config);
    build_plan(&d);
    if (d.config.print_memory_plan) {
        print_plan(&d);
        return 0;
    }
    if (sl_uplinks_global_init() != 0) {
        return die("libcurl: curl_global_init failed"); /* and libmosquitto's, for both uses */
    }
    if (check_memory(&d, err, sizeof err) != 0 || reserve_fds(&d, err, sizeof err) != 0 ||
        bind_listeners(&d, err, sizeof err) != 0 || open_state(&d, err, sizeof err) != 0) {
        return die(err);
    }
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, NULL); /* inherited by every thread started below */
    signal(SIGPIPE, SIG_IGN);
    return run(&d, &signals, err, sizeof err);
}
