/*
 * The ingest thread (see ingest.h): socket set-up, the epoll loop, UDP.
 * TCP connections are in tcp.c, the path every batch takes to the log,
 * the store and its answer in commit.c.
 *
 * The loop is the one infinite loop in the daemon. Each tick waits up to
 * SL_TICK_MS, serves the ready sockets with capped work each, delivers the
 * groups the apply worker finished, commits the group the tick gathered,
 * and once a second sweeps the connection table. Stopping: sl_ingest_stop
 * writes the eventfd; the loop then stops accepting, drains what the UDP
 * socket already holds, serves what each TCP connection already sent,
 * settles the pipeline, flushes the acks (bounded by SL_TCP_DRAIN_NS) and
 * closes.
 *
 * Memory: udp_batch x (64 KiB buffer + headers), the connection table, the
 * two stream tables and the pipeline's parts, all from the arena. Thread:
 * the ingest thread; sl_ingest_open and sl_ingest_close run on main.
 */
#include "net/ingest.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/alloc_count.h"
#include "core/assert.h"
#include "core/clock.h"
#include "core/say.h"
#include "net/sock.h"

#define SL_TICK_MS 100
#define SL_STALL_NS 250000000LL /* a tick's work longer than this is a stall (counted, excused) */
#define SL_UDP_BUFFER_BYTES 65536u
#define SL_UDP_CALLS_PER_TICK 16u
#define SL_EVENTS_PER_TICK 256
#define SL_TAG_WAKE 0u
#define SL_TAG_UDP 1u
#define SL_UDP_CONTROL_BYTES 64u

_Static_assert(SL_UDP_BUFFER_BYTES > SL_UDP_PAYLOAD_MAX, "a datagram never truncates");
_Static_assert(SL_TAG_WAKE != SL_TAG_LISTEN && SL_TAG_UDP != SL_TAG_LISTEN && SL_TAG_LISTEN < SL_TAG_CONN,
               "epoll tags are distinct");

static struct sl_commit_config commit_config(const struct sl_ingest_config *config)
{
    return (struct sl_commit_config){.apply_thread = config->apply_thread,
                                     .apply_area_bytes = config->apply_area_bytes,
                                     .checkpoint_every_bytes = config->checkpoint_every_bytes};
}

void sl_ingest_plan(const struct sl_ingest_config *config, struct sl_plan *plan)
{
    uint64_t b = config->udp_batch;
    sl_plan_add(plan, "udp_buffers", b * SL_UDP_BUFFER_BYTES, "recvmmsg buffers, 64 KiB a datagram");
    sl_plan_add(plan, "udp_headers",
                b * (sizeof(struct mmsghdr) + sizeof(struct iovec) + SL_UDP_CONTROL_BYTES),
                "recvmmsg headers and control space");
    sl_tcp_plan(config->tcp_connections_max, plan);
    sl_streams_plan(config->streams_max, plan, "streams_tcp");
    sl_streams_plan(config->streams_max, plan, "streams_udp");
    struct sl_commit_config cc = commit_config(config);
    sl_commit_plan(&cc, plan);
    if (config->series != NULL) {
        sl_lines_plan(&config->lines, plan);
    }
}

uint64_t sl_ingest_fds_needed(const struct sl_ingest_config *config)
{
    /* A descriptor a connection, the listeners, epoll and eventfd, and headroom for accept's newcomer. */
    return (uint64_t)config->tcp_connections_max + 8 +
           (config->series != NULL ? sl_lines_fds_needed(&config->lines) : 0);
}

void sl_ingest_take_streams(struct sl_ingest *ing, const struct sl_ingest_config *config,
                            struct sl_arena *arena)
{
    sl_streams_init(&ing->tcp_streams, config->streams_max, arena);
    sl_streams_init(&ing->udp_streams, config->streams_max, arena);
}

static int epoll_add(int epoll_fd, int fd, uint32_t events, uint64_t tag)
{
    struct epoll_event ev = {.events = events, .data.u64 = tag};
    return epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev);
}

static void udp_take(struct sl_ingest *ing, struct sl_arena *arena)
{
    uint32_t b = ing->config.udp_batch;
    ing->udp_buffers = sl_arena_take(arena, (uint64_t)b * SL_UDP_BUFFER_BYTES);
    uint8_t *headers = sl_arena_take(
        arena, (uint64_t)b * (sizeof(struct mmsghdr) + sizeof(struct iovec) + SL_UDP_CONTROL_BYTES));
    ing->udp_msgs = (struct mmsghdr *)headers;
    ing->udp_iovs = (struct iovec *)(headers + (uint64_t)b * sizeof(struct mmsghdr));
    ing->udp_controls = headers + (uint64_t)b * (sizeof(struct mmsghdr) + sizeof(struct iovec));
}

/*
 * The UDP socket's options: the receive buffer (the daemon sets it and
 * reads it back before handing a prebound socket over, and says when the
 * kernel capped it; setting it again is harmless) and the kernel's drop
 * count on every datagram (SO_RXQ_OVFL).
 */
static void udp_configure(struct sl_ingest *ing)
{
    int bytes = (int)ing->config.udp_rcvbuf_bytes, one = 1;
    if (!ing->config.prebound &&
        setsockopt(ing->udp_fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) != 0) {
        setsockopt(ing->udp_fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes); /* capped by rmem_max */
    }
    setsockopt(ing->udp_fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof one);
}

static void udp_deliver(void *ctx, const struct sl_intent *in, enum sl_status status,
                        const struct sl_apply_result *result)
{
    struct sl_ingest *ing = ctx;
    (void)in;
    (void)result;
    sl_counter_add(&ing->counters.batches[SL_TRANSPORT_UDP][status], 1);
}

/* The listeners: handed over by the daemon (prebound), or bound here. -1 with err set. */
static int listeners_open(struct sl_ingest *ing, char *err, uint32_t err_bytes)
{
    const struct sl_ingest_config *c = &ing->config;
    if (c->prebound) {
        ing->udp_fd = c->udp_fd;
        ing->tcp_fd = c->tcp_fd;
        return 0;
    }
    if (c->udp_host[0] != '\0') {
        ing->udp_fd = sl_sock_listen("udp", c->udp_host, c->udp_port, SOCK_DGRAM, err, err_bytes);
        if (ing->udp_fd < 0) {
            return -1;
        }
    }
    if (c->tcp_host[0] != '\0') {
        ing->tcp_fd = sl_sock_listen("tcp", c->tcp_host, c->tcp_port, SOCK_STREAM, err, err_bytes);
        if (ing->tcp_fd < 0) {
            return -1;
        }
    }
    return 0;
}

int sl_ingest_open(struct sl_ingest *ing, const struct sl_ingest_config *config,
                   struct sl_store *store, struct sl_log *log, struct sl_checkpointer *checkpointer,
                   struct sl_arena *arena, char *err, uint32_t err_bytes)
{
    /* The stream tables were taken and filled by recovery: keep them. */
    ing->config = *config;
    ing->store = store;
    ing->udp_fd = ing->tcp_fd = ing->wake_fd = -1;
    udp_take(ing, arena);
    ing->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    ing->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ing->epoll_fd < 0 || ing->wake_fd < 0 ||
        epoll_add(ing->epoll_fd, ing->wake_fd, EPOLLIN, SL_TAG_WAKE) != 0) {
        snprintf(err, err_bytes, "epoll: %s", strerror(errno));
        return -1;
    }
    struct sl_commit_config cc = commit_config(config);
    sl_commit_open(&ing->commit, &cc, store, log, checkpointer, &ing->counters, ing->wake_fd, arena);
    struct sl_commit_producer udp = {.deliver = udp_deliver, .flush = NULL, .ctx = ing};
    ing->udp_producer = sl_commit_add_producer(&ing->commit, &udp);
    struct sl_tcp_config tc = {.connections_max = config->tcp_connections_max,
                               .idle_timeout_ms = config->tcp_idle_timeout_s * 1000,
                               .frame_timeout_ms = config->tcp_frame_timeout_ms ? config->tcp_frame_timeout_ms
                                                                               : SL_TCP_FRAME_TIMEOUT_MS_DEFAULT,
                               .per_ip_max = config->tcp_connections_per_ip_max ? config->tcp_connections_per_ip_max
                                                                                : config->tcp_connections_max,
                               .live = config->live};
    if (listeners_open(ing, err, err_bytes) != 0) {
        return -1;
    }
    sl_tcp_open(&ing->tcp, &tc, &ing->commit, &ing->tcp_streams, &ing->counters, ing->epoll_fd,
                ing->tcp_fd, arena);
    if (config->series != NULL &&
        sl_lines_open(&ing->lines, &config->lines, &ing->commit, config->series, ing->epoll_fd,
                      ing->wake_fd, arena, err, err_bytes) != 0) {
        return -1;
    }
    ing->lines.streams = &ing->tcp_streams; /* native MQTT payloads dedup as TCP frames do */
    ing->lines.streams_full_total = &ing->counters.streams_table_full;
    if (ing->udp_fd >= 0) {
        udp_configure(ing);
        ing->udp_port_bound = sl_sock_port(ing->udp_fd);
        if (epoll_add(ing->epoll_fd, ing->udp_fd, EPOLLIN, SL_TAG_UDP) != 0) {
            snprintf(err, err_bytes, "epoll: %s", strerror(errno));
            return -1;
        }
    }
    if (ing->tcp_fd >= 0) {
        ing->tcp_port_bound = sl_sock_port(ing->tcp_fd);
        if (epoll_add(ing->epoll_fd, ing->tcp_fd, EPOLLIN, SL_TAG_LISTEN) != 0) {
            snprintf(err, err_bytes, "epoll: %s", strerror(errno));
            return -1;
        }
    }
    return 0;
}

static void udp_frame(struct sl_ingest *ing, const uint8_t *buf, uint32_t len, int64_t now_us)
{
    struct sl_batch batch;
    int rc = sl_batch_decode(buf, len, &batch);
    if (rc < 0) {
        sl_counter_add(&ing->counters.decode_errors[SL_TRANSPORT_UDP][-rc], 1);
        sl_counter_add(&ing->counters.batches[SL_TRANSPORT_UDP][sl_decode_status(rc)], 1);
        return;
    }
    sl_commit_make_room(&ing->commit, batch.header.count);
    int seen = 0;
    uint64_t lost = sl_streams_observe(&ing->udp_streams, batch.header.stream_id,
                                       batch.header.batch_seq, &seen);
    if (lost != 0) {
        sl_counter_add(&ing->counters.udp_lost_batches, lost);
    }
    if (seen == SL_STREAMS_OUT_OF_SEQUENCE) {
        sl_counter_add(&ing->counters.udp_out_of_sequence_batches, 1);
    } else if (seen == SL_STREAMS_RESYNC) {
        sl_counter_add(&ing->counters.udp_resyncs, 1);
    }
    struct sl_intent intent = {.producer = ing->udp_producer, .stream_id = batch.header.stream_id,
                               .batch_seq = batch.header.batch_seq};
    if (sl_commit_log_batch(&ing->commit, &batch, SL_LOG_UDP, now_us, &intent) != 0) {
        /* The log refuses appends: the datagram is shed, visibly. */
        sl_counter_add(&ing->counters.batches[SL_TRANSPORT_UDP][SL_STATUS_OVERLOADED], 1);
    }
}

static void udp_note_drops(struct sl_ingest *ing, struct msghdr *msg)
{
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(msg); cm != NULL; cm = CMSG_NXTHDR(msg, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SO_RXQ_OVFL) {
            uint32_t drops;
            memcpy(&drops, CMSG_DATA(cm), sizeof drops);
            /* The kernel reports the socket's running total. */
            atomic_store_explicit(&ing->counters.udp_kernel_drops, drops, memory_order_relaxed);
        }
    }
}

/* Receive and apply up to SL_UDP_CALLS_PER_TICK x udp_batch datagrams. */
static void udp_serve(struct sl_ingest *ing)
{
    uint32_t b = ing->config.udp_batch;
    for (uint32_t call = 0; call < SL_UDP_CALLS_PER_TICK; call++) {
        for (uint32_t i = 0; i < b; i++) {
            ing->udp_iovs[i].iov_base = ing->udp_buffers + (uint64_t)i * SL_UDP_BUFFER_BYTES;
            ing->udp_iovs[i].iov_len = SL_UDP_BUFFER_BYTES;
            struct msghdr *m = &ing->udp_msgs[i].msg_hdr;
            memset(m, 0, sizeof *m);
            m->msg_iov = &ing->udp_iovs[i];
            m->msg_iovlen = 1;
            m->msg_control = ing->udp_controls + (uint64_t)i * SL_UDP_CONTROL_BYTES;
            m->msg_controllen = SL_UDP_CONTROL_BYTES;
        }
        int n = recvmmsg(ing->udp_fd, ing->udp_msgs, b, MSG_DONTWAIT, NULL);
        if (n <= 0) {
            return; /* EAGAIN: drained; other errors (ECONNREFUSED, ...) are transient on UDP */
        }
        int64_t now_us = sl_clock_realtime_us();
        uint64_t bytes = 0;
        for (int i = 0; i < n; i++) {
            uint32_t len = ing->udp_msgs[i].msg_len;
            bytes += len;
            udp_frame(ing, ing->udp_buffers + (uint64_t)i * SL_UDP_BUFFER_BYTES, len, now_us);
        }
        udp_note_drops(ing, &ing->udp_msgs[n - 1].msg_hdr);
        sl_counter_add(&ing->counters.udp_datagrams, (uint64_t)n);
        sl_counter_add(&ing->counters.udp_bytes, bytes);
        if ((uint32_t)n < b) {
            return;
        }
    }
}

static void dispatch(struct sl_ingest *ing, const struct epoll_event *ev)
{
    uint64_t tag = ev->data.u64;
    if (tag & SL_LINES_TAG) {
        sl_lines_event(&ing->lines, tag, ev->events);
    } else if (tag == SL_TAG_WAKE) {
        uint64_t v;
        ssize_t r = read(ing->wake_fd, &v, sizeof v);
        (void)r;
    } else if (tag == SL_TAG_UDP) {
        udp_serve(ing);
    } else if (tag == SL_TAG_LISTEN) {
        sl_tcp_accept(&ing->tcp);
    } else {
        sl_tcp_event(&ing->tcp, (uint32_t)(tag - SL_TAG_CONN), ev->events);
    }
}

void *sl_ingest_run(void *arg)
{
    struct sl_ingest *ing = arg;
    struct epoll_event events[SL_EVENTS_PER_TICK];
    bool lines_on = ing->config.series != NULL;
    pthread_setname_np(pthread_self(), "sluice-ingest");
    sl_commit_start(&ing->commit); /* before tracking: starting a thread may allocate */
    sl_alloc_track(SL_ALLOC_INGEST);
    atomic_store(&ing->counters.started_at_us, sl_clock_realtime_us());
    while (!atomic_load_explicit(&ing->stop, memory_order_acquire)) {
        bool lines_busy = lines_on && sl_lines_busy(&ing->lines);
        int n = epoll_wait(ing->epoll_fd, events, SL_EVENTS_PER_TICK,
                           lines_busy ? 0 : sl_commit_busy(&ing->commit) ? 1 : SL_TICK_MS);
        int64_t tick_ns = sl_clock_monotonic_ns();
        for (int i = 0; i < n; i++) {
            dispatch(ing, &events[i]);
        }
        if (lines_on) {
            sl_lines_tick(&ing->lines, tick_ns); /* HTTP writes: a slice of their bodies */
        }
        sl_commit_collect(&ing->commit); /* groups the worker finished: their answers go out */
        sl_commit_flush(&ing->commit);   /* group commit: one write (and sync) a tick */
        int64_t now_ns = sl_clock_monotonic_ns();
        sl_commit_tick(&ing->commit, now_ns);
        sl_tcp_tick(&ing->tcp, now_ns);
        now_ns = sl_clock_monotonic_ns();
        if (now_ns - tick_ns > SL_STALL_NS) {
            /*
             * The loop itself stalled (a slow fdatasync on a busy disk, say):
             * peers waited on us, so that time does not count towards their
             * idle or frame timeouts.
             */
            sl_counter_add(&ing->counters.ingest_stalls, 1);
            sl_tcp_excuse(&ing->tcp, now_ns - tick_ns, now_ns);
        }
        if (now_ns >= ing->next_sweep_ns) {
            sl_tcp_sweep(&ing->tcp, now_ns);
            ing->next_sweep_ns = now_ns + 1000000000LL;
        }
    }
    /* Stop accepting; finish what is in flight. */
    if (ing->tcp_fd >= 0) {
        epoll_ctl(ing->epoll_fd, EPOLL_CTL_DEL, ing->tcp_fd, NULL);
        close(ing->tcp_fd);
        ing->tcp_fd = -1;
    }
    if (ing->udp_fd >= 0) {
        udp_serve(ing);
    }
    if (lines_on) {
        sl_lines_drain(&ing->lines); /* writes being parsed finish: their clients wait */
    }
    sl_tcp_drain_all(&ing->tcp); /* settles what it reads (and UDP's), flushes acks, closes */
    sl_commit_settle(&ing->commit);
    sl_commit_stop(&ing->commit);
    return NULL;
}

void sl_ingest_stop(struct sl_ingest *ing)
{
    atomic_store_explicit(&ing->stop, 1, memory_order_release);
    uint64_t one = 1;
    ssize_t r = write(ing->wake_fd, &one, sizeof one);
    (void)r;
}

void sl_ingest_close(struct sl_ingest *ing)
{
    if (ing->udp_fd >= 0) {
        close(ing->udp_fd);
    }
    if (ing->tcp_fd >= 0) {
        close(ing->tcp_fd);
    }
    if (ing->wake_fd >= 0) {
        close(ing->wake_fd);
    }
    if (ing->epoll_fd >= 0) {
        close(ing->epoll_fd);
    }
    ing->udp_fd = ing->tcp_fd = ing->wake_fd = ing->epoll_fd = -1;
    if (ing->config.series != NULL) {
        if (ing->config.lines.tcp_fd >= 0) {
            close(ing->config.lines.tcp_fd);
        }
        if (ing->config.lines.udp_fd >= 0) {
            close(ing->config.lines.udp_fd);
        }
        sl_lines_close(&ing->lines);
    }
    sl_commit_close(&ing->commit);
}
