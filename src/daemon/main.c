/*
 * sluiced: start-up and shutdown order.
 *
 * 1. Parse the configuration (flags over file over defaults). Bad input:
 *    a message and exit 2.
 * 2. Plan every byte: store, ingest (sockets, connection table, stream
 *    tables), HTTP scratch. --print-memory-plan prints it and exits.
 * 3. Create and lock the data directory, map and pre-fault the arena,
 *    initialise the store, recover (load the newest checkpoint, replay the
 *    log after it), bind every socket. Any failure: a message and exit 2,
 *    before a single thread has started, so there is never a half-started
 *    daemon.
 * 4. Seal the arena, block SIGINT/SIGTERM in every thread, start the HTTP
 *    thread and the ingest thread, print one line, wait for a signal.
 * 5. On SIGINT/SIGTERM: the ingest thread stops accepting, finishes what is
 *    in flight (logged, applied, acked) and exits; the log is synced and
 *    closed; HTTP stops; exit 0, well within 2 s.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/http.h"
#include "core/alloc_count.h"
#include "core/plan.h"
#include "daemon/config.h"
#include "core/io.h"
#include "net/ingest.h"
#include "store/checkpoint.h"
#include "store/log.h"
#include "store/recover.h"
#include "store/store.h"

#define EXIT_USAGE 2

struct daemon {
    struct sl_config config;
    struct sl_plan plan;
    struct sl_arena arena;
    struct sl_store store;
    struct sl_ingest ingest;
    struct sl_ingest_config ingest_config;
    struct sl_http_config http_config;
    struct sl_http_context http_context;
    struct sl_http *http;
    struct sl_io_faults io_faults;
    struct sl_log *log;
    struct sl_checkpointer checkpointer;
    struct sl_recover_result recovery;
};

static struct daemon d; /* large; static keeps it off the stack */

static int die(const char *msg)
{
    fprintf(stderr, "sluiced: %s\n", msg);
    return EXIT_USAGE;
}

/* Fill the ingest and HTTP configurations from the daemon's. */
static int derive_configs(struct daemon *dm, char *err, uint32_t err_bytes)
{
    const struct sl_config *c = &dm->config;
    struct sl_ingest_config *in = &dm->ingest_config;
    memset(in, 0, sizeof *in);
    in->streams_max = c->streams_max;
    in->tcp_connections_max = c->tcp_connections_max;
    in->tcp_idle_timeout_s = c->tcp_idle_timeout_s;
    in->udp_batch = c->udp_batch;
    in->udp_rcvbuf_bytes = c->udp_rcvbuf_bytes;
    in->checkpoint_every_bytes = c->checkpoint_every_bytes;
    in->apply_thread = c->apply_thread;
    in->apply_area_bytes = c->log.buffer_bytes;
    if (strcmp(c->udp, "off") != 0 &&
        sl_config_split_addr(c->udp, in->udp_host, sizeof in->udp_host, &in->udp_port, err, err_bytes) != 0) {
        return -1;
    }
    if (strcmp(c->tcp, "off") != 0 &&
        sl_config_split_addr(c->tcp, in->tcp_host, sizeof in->tcp_host, &in->tcp_port, err, err_bytes) != 0) {
        return -1;
    }
    struct sl_http_config *h = &dm->http_config;
    memset(h, 0, sizeof *h);
    h->connections_max = c->http_connections_max;
    h->connection_memory_bytes = SL_HTTP_CONNECTION_MEMORY_DEFAULT;
    h->timeout_s = c->http_timeout_s;
    if (strcmp(c->http, "off") != 0 &&
        sl_config_split_addr(c->http, h->host, sizeof h->host, &h->port, err, err_bytes) != 0) {
        return -1;
    }
    return 0;
}

static void build_plan(struct daemon *dm)
{
    sl_plan_init(&dm->plan);
    sl_store_plan(&dm->config.store, &dm->plan);
    sl_ingest_plan(&dm->ingest_config, &dm->plan);
    sl_log_plan(&dm->config.log, &dm->plan);
    sl_http_plan(&dm->config.store, &dm->http_config, &dm->plan);
}

static void print_plan(const struct daemon *dm)
{
    const struct sl_store_config *s = &dm->config.store;
    printf("memory plan: %u sensors x %u readings, %u TCP connections, %u streams a transport\n",
           s->sensors_max, s->ring_readings, dm->config.tcp_connections_max, dm->config.streams_max);
    printf("disk: log segments of %llu bytes, at most %llu bytes of log, sync %s\n",
           (unsigned long long)dm->config.log.segment_bytes,
           (unsigned long long)dm->config.log.bytes_max, sl_sync_mode_name(dm->config.log.sync));
    for (uint32_t i = 0; i < dm->plan.count; i++) {
        const struct sl_plan_part *p = &dm->plan.parts[i];
        printf("  %-18s %14llu bytes  %s\n", p->name, (unsigned long long)p->bytes, p->what);
    }
    printf("  %-18s %14llu bytes  (%.1f MiB)\n", "total", (unsigned long long)dm->plan.total_bytes,
           (double)dm->plan.total_bytes / (1 << 20));
    printf("raw ring: %.4f bytes per retained reading (slots and padding, records, index)\n",
           sl_store_bytes_per_reading(s));
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
                         &dm->ingest.udp_streams, &dm->recovery, err, err_bytes);
    if (dm->log == NULL) {
        return -1;
    }
    struct sl_checkpoint_config ck = {.step_bytes = SL_CHECKPOINT_STEP_BYTES_DEFAULT, .io = io};
    snprintf(ck.dir, sizeof ck.dir, "%s", dm->config.data_dir);
    sl_checkpoint_init(&dm->checkpointer, &ck, &dm->store, &dm->ingest.tcp_streams,
                       &dm->ingest.udp_streams, sl_checkpoint_next_seq(dm->config.data_dir));
    return 0;
}

static void print_recovery(const struct daemon *dm)
{
    const struct sl_recover_result *r = &dm->recovery;
    printf("sluiced: recovered in %.2f s: %s, %llu log records replayed (%llu readings) from %u "
           "segments, %llu corrupt records skipped, %llu torn bytes cut\n",
           r->seconds, r->checkpoint_used ? "from a checkpoint" : "no checkpoint",
           (unsigned long long)r->records_replayed, (unsigned long long)r->readings_applied,
           r->log.segments, (unsigned long long)r->log.corrupt_records,
           (unsigned long long)r->log.torn_tail_bytes);
}

static int start_http(struct daemon *dm, char *err, uint32_t err_bytes)
{
    if (strcmp(dm->config.http, "off") == 0) {
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
    ctx->view_memory =
        sl_arena_take(&dm->arena, sl_http_views_bytes(&dm->config.store, &dm->http_config));
    ctx->sorted_ids = sl_arena_take(&dm->arena, 2ull * dm->config.store.sensors_max * sizeof(uint32_t));
    ctx->connection_memory = sl_arena_take(&dm->arena, sl_http_connections_bytes(&dm->http_config));
    ctx->version = SL_VERSION;
    dm->http = sl_http_start(&dm->http_config, ctx, err, err_bytes);
    return dm->http == NULL ? -1 : 0;
}

static void print_started(const struct daemon *dm)
{
    char udp[300] = "off", tcp[300] = "off", http[300] = "off";
    if (dm->ingest.udp_fd >= 0) {
        snprintf(udp, sizeof udp, "%s:%u", dm->ingest_config.udp_host, dm->ingest.udp_port_bound);
    }
    if (dm->ingest.tcp_fd >= 0) {
        snprintf(tcp, sizeof tcp, "%s:%u", dm->ingest_config.tcp_host, dm->ingest.tcp_port_bound);
    }
    if (dm->http != NULL) {
        snprintf(http, sizeof http, "%s:%u", dm->http_config.host, sl_http_port(dm->http));
    }
    printf("sluiced %s listening udp=%s tcp=%s http=%s data=%s memory_planned_bytes=%llu "
           "(%.1f MiB; %u sensors x %u readings%s)\n",
           SL_VERSION, udp, tcp, http, dm->config.data_dir, (unsigned long long)dm->plan.total_bytes,
           (double)dm->plan.total_bytes / (1 << 20), dm->config.store.sensors_max,
           dm->config.store.ring_readings, dm->arena.locked ? ", locked" : "");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    char err[512];
    sl_config_default(&d.config);
    int rc = sl_config_parse(&d.config, argc, argv, err, sizeof err);
    if (rc != 0) {
        return rc > 0 ? 0 : die(err);
    }
    if (derive_configs(&d, err, sizeof err) != 0) {
        return die(err);
    }
    build_plan(&d);
    if (d.config.print_memory_plan) {
        print_plan(&d);
        return 0;
    }
    if (make_dirs(d.config.data_dir, err, sizeof err) != 0 ||
        lock_data_dir(d.config.data_dir, err, sizeof err) != 0) {
        return die(err);
    }
    /* libmicrohttpd mallocs its part of the plan itself: stated, not mapped. */
    rc = sl_arena_map(&d.arena, d.plan.total_bytes - sl_plan_part_bytes(&d.plan, SL_HTTP_PLAN_MHD_PART));
    if (rc != 0) {
        snprintf(err, sizeof err, "cannot map the memory plan of %llu bytes: %s",
                 (unsigned long long)d.plan.total_bytes, strerror(-rc));
        return die(err);
    }
    sl_store_init(&d.store, &d.config.store, &d.arena);
    sl_ingest_take_streams(&d.ingest, &d.ingest_config, &d.arena);
    if (recover(&d, err, sizeof err) != 0) {
        return die(err);
    }
    if (!d.config.quiet) {
        print_recovery(&d);
    }
    if (sl_ingest_open(&d.ingest, &d.ingest_config, &d.store, d.log, &d.checkpointer, &d.arena, err,
                       sizeof err) != 0) {
        return die(err);
    }
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, NULL); /* inherited by every thread started below */
    signal(SIGPIPE, SIG_IGN);
    if (start_http(&d, err, sizeof err) != 0) {
        return die(err);
    }
    sl_arena_seal(&d.arena);
    pthread_t ingest_thread;
    if (pthread_create(&ingest_thread, NULL, sl_ingest_run, &d.ingest) != 0) {
        return die("cannot start the ingest thread");
    }
    if (!d.config.quiet) {
        print_started(&d);
    }
    int sig = 0;
    sigwait(&signals, &sig);
    sl_ingest_stop(&d.ingest);
    pthread_join(ingest_thread, NULL);
    if (d.http != NULL) {
        sl_http_stop(d.http);
    }
    sl_ingest_close(&d.ingest);
    sl_log_close(d.log);
    if (!d.config.quiet) {
        printf("sluiced: stopped on %s: %llu readings accepted, %llu heap allocations on the "
               "ingest path after start\n",
               sig == SIGINT ? "SIGINT" : "SIGTERM",
               (unsigned long long)atomic_load(&d.store.counters.readings_accepted),
               (unsigned long long)sl_alloc_count(SL_ALLOC_INGEST));
    }
    return 0;
}
