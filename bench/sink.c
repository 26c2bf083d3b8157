/*
 * sluice-sink: the bare baseline receivers the benchmarks compare the gateway
 * against ("sluiced vs bare sink"). Bare means no CRC, no decode beyond frame
 * boundaries and no store, but the same socket setup as a real receiver, so
 * the ratio measures what the gateway's own work costs.
 *
 * UDP (--udp HOST:PORT): one non-blocking socket with a large receive buffer
 * (SO_RCVBUF, then SO_RCVBUFFORCE where permitted), drained with recvmmsg 64
 * datagrams at a time until EAGAIN, then epoll_wait. A datagram counts when
 * its length equals 36 + 12 x count (count read at offset 6); others count as
 * malformed. No acks on UDP.
 *
 * TCP (--tcp HOST:PORT): a non-blocking listener and a fixed connection table
 * driven by epoll (edge-triggered for connections). Each connection tracks
 * only frame boundaries: the first 24 header bytes (magic, flags, count,
 * stream_id, batch_seq), then skips 36 + 12 x count - 24 bytes. A completed
 * frame with ACK_REQUESTED gets an OK ack (accepted = count) built with
 * sl_ack_encode, so sluice-load runs unchanged against it. Acks are queued
 * per connection and written once per read; when a connection's ack queue
 * cannot take the acks a read might produce, it is not read until the peer
 * drains its acks (backpressure, never growth). A bad magic or count 0
 * closes the connection.
 *
 * Output: on SIGINT/SIGTERM, after --idle-exit S seconds without traffic, or
 * as soon as --expect N readings arrived, one JSON line on stdout; elapsed_s
 * runs from the first to the last packet. The listening address (useful with
 * port 0) goes to stderr.
 *
 * Memory, all taken at start: UDP 64 x 64 KiB datagram buffers; TCP a
 * 256 KiB read buffer plus --max-conns x ~32 KiB (ack queue). Single thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "sluice/protocol.h"
#include "core/assert.h"
#include "core/clock.h"
#include "tools/tool.h"

#ifndef SL_VERSION
#define SL_VERSION "0.0.0"
#endif

#define SINK_UDP_VLEN 64u
#define SINK_DATAGRAM_BYTES 65536u      /* > SL_UDP_PAYLOAD_MAX */
#define SINK_RCVBUF_DEFAULT (32u << 20) /* bytes */
#define SINK_CONNS_DEFAULT 256u
#define SINK_CONNS_MAX 65536u
#define SINK_READ_BYTES (256u << 10)                /* shared TCP read buffer */
#define SINK_ACK_QUEUE_BYTES (SL_ACK_BYTES * 1024u) /* per connection */
#define SINK_HEADER_BYTES 24u                       /* magic..batch_seq: what an ack needs */
#define SINK_READS_PER_TURN 8u                      /* fairness: reads per connection per turn */
#define SINK_EVENTS_MAX 256u
#define SINK_WAIT_MS 1000
#define SINK_FLUSH_TIMEOUT_MS 2000 /* final ack flush before exit */

_Static_assert(SINK_DATAGRAM_BYTES > SL_UDP_PAYLOAD_MAX, "a datagram never truncates");
_Static_assert(SL_BATCH_BYTES(1) > SINK_HEADER_BYTES, "the header prefix is inside every frame");
_Static_assert(SINK_ACK_QUEUE_BYTES % SL_ACK_BYTES == 0, "whole acks");

struct sink_config {
    bool udp;
    const char *address;
    struct sockaddr_storage addr;
    socklen_t addr_bytes;
    double idle_exit_s; /* 0 = never */
    uint64_t expect;    /* 0 = never */
    uint32_t rcvbuf_bytes;
    uint32_t conns_max;
    bool quiet;
};

struct sink_stats {
    uint64_t frames; /* datagrams on UDP */
    uint64_t readings;
    uint64_t bytes;
    uint64_t malformed;
    uint64_t connections;
    uint64_t refused; /* connections beyond --max-conns */
    int64_t first_ns; /* 0 until the first packet */
    int64_t last_ns;
    int64_t activity_ns; /* for --idle-exit: start, then every packet */
};

struct sink_conn {
    int fd; /* -1 when free */
    bool readable;
    bool writable;
    bool queued; /* on the ready ring */
    uint32_t header_bytes;
    uint32_t skip_bytes; /* rest of the current frame after its header prefix */
    uint32_t ack_head;
    uint32_t ack_bytes;
    uint8_t header[SINK_HEADER_BYTES];
    uint8_t acks[SINK_ACK_QUEUE_BYTES];
};

struct sink_tcp {
    int listen_fd;
    int epoll_fd;
    struct sink_conn *conns;
    uint32_t *free_ids; /* stack */
    uint32_t free_count;
    uint32_t *ready; /* ring of connection ids with work left */
    uint32_t ready_head;
    uint32_t ready_count;
    uint8_t *read_buffer;
};

static void *take(size_t bytes)
{
    void *p = calloc(1, bytes);
    if (p == NULL) {
        log_error("cannot allocate %zu bytes", bytes);
        exit(1);
    }
    memset(p, 0, bytes); /* fault the pages in now */
    return p;
}

static void stats_packet(struct sink_stats *stats, int64_t now)
{
    if (stats->first_ns == 0) {
        stats->first_ns = now;
    }
    stats->last_ns = now;
    stats->activity_ns = now;
}

static bool stats_expect_met(const struct sink_config *cfg, const struct sink_stats *stats)
{
    return cfg->expect > 0 && stats->readings >= cfg->expect;
}

/* Milliseconds for epoll_wait, or -1 when --idle-exit has run out. */
static int wait_ms(const struct sink_config *cfg, const struct sink_stats *stats, int64_t now)
{
    if (cfg->idle_exit_s <= 0) {
        return SINK_WAIT_MS;
    }
    int64_t due_ns = stats->activity_ns + (int64_t)(cfg->idle_exit_s * 1e9);
    if (now >= due_ns) {
        return -1;
    }
    int64_t ms = (due_ns - now + 999999) / 1000000;
    return ms < SINK_WAIT_MS ? (int)ms : SINK_WAIT_MS;
}

static void print_report(const struct sink_config *cfg, const struct sink_stats *stats)
{
    double elapsed_s = (double)(stats->last_ns - stats->first_ns) / 1e9;
    double rate = elapsed_s > 0 ? (double)stats->readings / elapsed_s : 0.0;
    printf("{\"transport\":\"%s\",\"%s\":%" PRIu64 ",\"readings\":%" PRIu64 ",\"bytes\":%" PRIu64
           ",\"malformed\":%" PRIu64,
           cfg->udp ? "udp" : "tcp", cfg->udp ? "datagrams" : "frames", stats->frames,
           stats->readings, stats->bytes, stats->malformed);
    if (!cfg->udp) {
        printf(",\"connections\":%" PRIu64 ",\"refused\":%" PRIu64, stats->connections,
               stats->refused);
    }
    printf(",\"elapsed_s\":%.6f,\"rate_readings_per_s\":%.1f}\n", elapsed_s, rate);
    fflush(stdout);
}

/* ---------------------------------------------------------------- sockets */

static int open_socket(const struct sink_config *cfg)
{
    int type = cfg->udp ? SOCK_DGRAM : SOCK_STREAM;
    int fd = socket(cfg->addr.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_error("socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (cfg->udp) {
        /* SO_RCVBUF is capped by net.core.rmem_max; SO_RCVBUFFORCE (CAP_NET_ADMIN) is not. */
        int bytes = (int)cfg->rcvbuf_bytes;
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes);
    }
    if (bind(fd, (const struct sockaddr *)&cfg->addr, cfg->addr_bytes) != 0 ||
        (!cfg->udp && listen(fd, 128) != 0)) {
        log_error("bind/listen %s: %s", cfg->address, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* "sluice-sink: listening on udp://127.0.0.1:PORT" on stderr; tests read the port from it. */
static void announce(const struct sink_config *cfg, int fd)
{
    struct sockaddr_storage bound;
    socklen_t bound_bytes = sizeof bound;
    char host[NI_MAXHOST], port[NI_MAXSERV];
    int rcvbuf_bytes = 0;
    socklen_t rcvbuf_len = sizeof rcvbuf_bytes;
    if (getsockname(fd, (struct sockaddr *)&bound, &bound_bytes) != 0 ||
        getnameinfo((struct sockaddr *)&bound, bound_bytes, host, sizeof host, port, sizeof port,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf(host, sizeof host, "?");
        snprintf(port, sizeof port, "?");
    }
    (void)getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf_bytes, &rcvbuf_len);
    bool v6 = bound.ss_family == AF_INET6;
    fprintf(stderr, "sluice-sink: listening on %s://%s%s%s:%s (SO_RCVBUF %d bytes)\n",
            cfg->udp ? "udp" : "tcp", v6 ? "[" : "", host, v6 ? "]" : "", port, rcvbuf_bytes);
    fflush(stderr);
}

/* ---------------------------------------------------------------- UDP */

static void udp_account(struct sink_stats *stats, const struct mmsghdr *msgs,
                        const uint8_t *buffers, int n)
{
    for (int i = 0; i < n; i++) {
        uint32_t len = msgs[i].msg_len;
        const uint8_t *p = buffers + (size_t)i * SINK_DATAGRAM_BYTES;
        uint32_t count = len >= 8 ? sl_load_u16(p + 6) : 0;
        if (count == 0 || len != SL_BATCH_BYTES(count)) {
            stats->malformed++;
            continue;
        }
        stats->frames++;
        stats->readings += count;
        stats->bytes += len;
    }
}

static int udp_run(const struct sink_config *cfg, int fd, struct sink_stats *stats)
{
    uint8_t *buffers = take((size_t)SINK_UDP_VLEN * SINK_DATAGRAM_BYTES);
    struct mmsghdr *msgs = take(sizeof *msgs * SINK_UDP_VLEN);
    struct iovec *iovs = take(sizeof *iovs * SINK_UDP_VLEN);
    for (uint32_t i = 0; i < SINK_UDP_VLEN; i++) {
        iovs[i] = (struct iovec){buffers + (size_t)i * SINK_DATAGRAM_BYTES, SINK_DATAGRAM_BYTES};
        msgs[i].msg_hdr.msg_iov = &iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    if (epoll_fd < 0 || epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        log_error("epoll: %s", strerror(errno));
        return -1;
    }
    int rc = 0;
    while (!tool_stop_signal && !stats_expect_met(cfg, stats)) {
        int n = recvmmsg(fd, msgs, SINK_UDP_VLEN, MSG_DONTWAIT, NULL);
        int64_t now = sl_clock_monotonic_ns();
        if (n > 0) {
            stats_packet(stats, now);
            udp_account(stats, msgs, buffers, n);
            if ((uint32_t)n == SINK_UDP_VLEN) {
                continue; /* probably more queued */
            }
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
            log_error("recvmmsg: %s", strerror(errno));
            rc = -1;
            break;
        }
        int timeout_ms = wait_ms(cfg, stats, now);
        if (timeout_ms < 0) {
            break;
        }
        (void)epoll_wait(epoll_fd, &ev, 1, timeout_ms);
    }
    close(epoll_fd);
    free(iovs);
    free(msgs);
    free(buffers);
    return rc;
}

/* ---------------------------------------------------------------- TCP */

static void conn_close(struct sink_tcp *tcp, uint32_t id)
{
    struct sink_conn *c = &tcp->conns[id];
    SL_ASSERT(c->fd >= 0);
    close(c->fd);
    c->fd = -1;
    tcp->free_ids[tcp->free_count++] = id;
}

static void ready_push(struct sink_tcp *tcp, const struct sink_config *cfg, uint32_t id)
{
    struct sink_conn *c = &tcp->conns[id];
    if (c->queued) {
        return;
    }
    SL_ASSERT(tcp->ready_count < cfg->conns_max);
    tcp->ready[(tcp->ready_head + tcp->ready_count) % cfg->conns_max] = id;
    tcp->ready_count++;
    c->queued = true;
}

static void tcp_accept(struct sink_tcp *tcp, const struct sink_config *cfg,
                       struct sink_stats *stats)
{
    for (uint32_t i = 0; i < 64; i++) {
        int fd = accept4(tcp->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
                log_error("accept: %s", strerror(errno));
            }
            return;
        }
        if (tcp->free_count == 0) {
            if (stats->refused++ == 0) {
                log_error("connection table full (--max-conns %" PRIu32 "): refusing",
                          cfg->conns_max);
            }
            close(fd);
            continue;
        }
        uint32_t id = tcp->free_ids[--tcp->free_count];
        struct sink_conn *c = &tcp->conns[id];
        memset(c, 0, offsetof(struct sink_conn, header));
        c->fd = fd;
        c->writable = true;
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                 .data.u32 = id};
        if (epoll_ctl(tcp->epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            log_error("epoll_ctl: %s", strerror(errno));
            conn_close(tcp, id);
            continue;
        }
        stats->connections++;
    }
}

static void conn_frame_done(struct sink_conn *c, struct sink_stats *stats)
{
    uint32_t count = sl_load_u16(c->header + 6);
    stats->frames++;
    stats->readings += count;
    if (c->header[5] & SL_FLAG_ACK_REQUESTED) {
        struct sl_ack ack = {.status = SL_STATUS_OK,
                             .stream_id = sl_load_u32(c->header + 8),
                             .accepted = count,
                             .batch_seq = sl_load_u64(c->header + 16),
                             .rejected = 0};
        SL_ASSERT(c->ack_head + c->ack_bytes + SL_ACK_BYTES <= SINK_ACK_QUEUE_BYTES);
        sl_ack_encode(c->acks + c->ack_head + c->ack_bytes, &ack);
        c->ack_bytes += SL_ACK_BYTES;
    }
    c->header_bytes = 0;
}

/* Walk frame boundaries through len bytes. Returns false on a malformed header. */
static bool conn_parse(struct sink_conn *c, struct sink_stats *stats, const uint8_t *p, size_t len)
{
    while (len > 0) {
        if (c->skip_bytes > 0) {
            size_t skip = len < c->skip_bytes ? len : c->skip_bytes;
            c->skip_bytes -= (uint32_t)skip;
            p += skip;
            len -= skip;
            if (c->skip_bytes == 0) {
                conn_frame_done(c, stats);
            }
            continue;
        }
        size_t need = SINK_HEADER_BYTES - c->header_bytes;
        size_t part = len < need ? len : need;
        memcpy(c->header + c->header_bytes, p, part);
        c->header_bytes += (uint32_t)part;
        p += part;
        len -= part;
        if (c->header_bytes < SINK_HEADER_BYTES) {
            continue;
        }
        uint16_t count = sl_load_u16(c->header + 6);
        if (c->header[0] != SL_BATCH_MAGIC_0 || c->header[1] != SL_BATCH_MAGIC_1 ||
            c->header[2] != SL_BATCH_MAGIC_2 || c->header[3] != SL_BATCH_MAGIC_3 || count == 0) {
            stats->malformed++;
            return false;
        }
        c->skip_bytes = SL_BATCH_BYTES(count) - SINK_HEADER_BYTES;
    }
    return true;
}

/* Write queued acks. Returns false when the connection failed. */
static bool conn_flush(struct sink_conn *c)
{
    if (c->ack_bytes == 0 || !c->writable) {
        return true;
    }
    ssize_t sent = send(c->fd, c->acks + c->ack_head, c->ack_bytes, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent < 0) {
        if (errno == EAGAIN || errno == EINTR) {
            c->writable = errno == EINTR;
            return true;
        }
        return false;
    }
    c->writable = (uint32_t)sent == c->ack_bytes;
    c->ack_head += (uint32_t)sent;
    c->ack_bytes -= (uint32_t)sent;
    if (c->ack_bytes == 0) {
        c->ack_head = 0;
    }
    return true;
}

/*
 * Bytes to read now: at most as many as can complete frames whose acks still
 * fit (a frame is >= 48 bytes, and one may complete on the first byte).
 */
static size_t conn_read_budget(struct sink_conn *c)
{
    if (c->ack_head > 0) {
        memmove(c->acks, c->acks + c->ack_head, c->ack_bytes);
        c->ack_head = 0;
    }
    size_t ack_room = (SINK_ACK_QUEUE_BYTES - c->ack_bytes) / SL_ACK_BYTES;
    if (ack_room == 0) {
        return 0;
    }
    size_t budget = (ack_room - 1) * SL_BATCH_BYTES(1) + 1;
    return budget < SINK_READ_BYTES ? budget : SINK_READ_BYTES;
}

/* Read, parse and ack. Returns false when the connection is finished. */
static bool conn_service(struct sink_tcp *tcp, struct sink_conn *c, struct sink_stats *stats)
{
    for (uint32_t turn = 0; turn < SINK_READS_PER_TURN && c->readable; turn++) {
        size_t budget = conn_read_budget(c);
        if (budget == 0) {
            break; /* wait for the peer to take its acks */
        }
        ssize_t got = read(c->fd, tcp->read_buffer, budget);
        if (got == 0) {
            (void)conn_flush(c);
            return false;
        }
        if (got < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                c->readable = errno == EINTR;
                continue;
            }
            return false;
        }
        stats_packet(stats, sl_clock_monotonic_ns());
        stats->bytes += (uint64_t)got;
        c->readable = (size_t)got == budget;
        if (!conn_parse(c, stats, tcp->read_buffer, (size_t)got) || !conn_flush(c)) {
            return false;
        }
    }
    return conn_flush(c);
}

/* Service every connection on the ready ring once; requeue those with work left. */
static void tcp_service_ready(struct sink_tcp *tcp, const struct sink_config *cfg,
                              struct sink_stats *stats)
{
    uint32_t turns = tcp->ready_count;
    for (uint32_t i = 0; i < turns && !stats_expect_met(cfg, stats); i++) {
        uint32_t id = tcp->ready[tcp->ready_head];
        tcp->ready_head = (tcp->ready_head + 1) % cfg->conns_max;
        tcp->ready_count--;
        struct sink_conn *c = &tcp->conns[id];
        c->queued = false;
        if (c->fd < 0) {
            continue;
        }
        if (!conn_service(tcp, c, stats)) {
            conn_close(tcp, id);
            continue;
        }
        bool more_reads = c->readable && conn_read_budget(c) > 0;
        bool more_acks = c->writable && c->ack_bytes > 0;
        if (more_reads || more_acks) {
            ready_push(tcp, cfg, id);
        }
    }
}

/* --expect reached: hand every peer its remaining acks before exiting. */
static void tcp_flush_all(struct sink_tcp *tcp, const struct sink_config *cfg)
{
    int64_t deadline_ns = sl_clock_monotonic_ns() + (int64_t)SINK_FLUSH_TIMEOUT_MS * 1000000;
    for (uint32_t id = 0; id < cfg->conns_max; id++) {
        struct sink_conn *c = &tcp->conns[id];
        while (c->fd >= 0 && c->ack_bytes > 0 && sl_clock_monotonic_ns() < deadline_ns) {
            c->writable = true;
            if (!conn_flush(c)) {
                break;
            }
            struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
            if (c->ack_bytes > 0) {
                (void)poll(&pfd, 1, 10);
            }
        }
    }
}

static void tcp_setup(struct sink_tcp *tcp, const struct sink_config *cfg, int listen_fd)
{
    tcp->listen_fd = listen_fd;
    tcp->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    if (tcp->epoll_fd < 0 || epoll_ctl(tcp->epoll_fd, EPOLL_CTL_ADD, listen_fd, &ev) != 0) {
        log_error("epoll: %s", strerror(errno));
        exit(1);
    }
    tcp->conns = take(sizeof *tcp->conns * cfg->conns_max);
    tcp->free_ids = take(sizeof *tcp->free_ids * cfg->conns_max);
    tcp->ready = take(sizeof *tcp->ready * cfg->conns_max);
    tcp->read_buffer = take(SINK_READ_BYTES);
    for (uint32_t i = 0; i < cfg->conns_max; i++) {
        tcp->conns[i].fd = -1;
        tcp->free_ids[i] = cfg->conns_max - 1 - i;
    }
    tcp->free_count = cfg->conns_max;
}

static int tcp_run(const struct sink_config *cfg, int listen_fd, struct sink_stats *stats)
{
    static struct sink_tcp tcp;
    struct epoll_event events[SINK_EVENTS_MAX];
    tcp_setup(&tcp, cfg, listen_fd);
    while (!tool_stop_signal && !stats_expect_met(cfg, stats)) {
        int timeout_ms = wait_ms(cfg, stats, sl_clock_monotonic_ns());
        if (timeout_ms < 0) {
            break;
        }
        int n =
            epoll_wait(tcp.epoll_fd, events, SINK_EVENTS_MAX, tcp.ready_count > 0 ? 0 : timeout_ms);
        for (int i = 0; i < n; i++) {
            uint32_t id = events[i].data.u32;
            if (id == UINT32_MAX) {
                tcp_accept(&tcp, cfg, stats);
                continue;
            }
            struct sink_conn *c = &tcp.conns[id];
            if (c->fd < 0) {
                continue;
            }
            c->readable |= (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
            c->writable |= (events[i].events & (EPOLLOUT | EPOLLERR)) != 0;
            ready_push(&tcp, cfg, id);
        }
        tcp_service_ready(&tcp, cfg, stats);
    }
    if (stats_expect_met(cfg, stats)) {
        tcp_flush_all(&tcp, cfg);
    }
    for (uint32_t id = 0; id < cfg->conns_max; id++) {
        if (tcp.conns[id].fd >= 0) {
            conn_close(&tcp, id);
        }
    }
    close(tcp.epoll_fd);
    free(tcp.read_buffer);
    free(tcp.ready);
    free(tcp.free_ids);
    free(tcp.conns);
    return 0;
}

/* ---------------------------------------------------------------- arguments */

enum sink_option {
    OPT_UDP = 256,
    OPT_TCP,
    OPT_IDLE_EXIT,
    OPT_EXPECT,
    OPT_RCVBUF,
    OPT_MAX_CONNS,
    OPT_QUIET,
    OPT_HELP,
    OPT_VERSION,
};

static const struct option sink_options[] = {
    {"udp", required_argument, NULL, OPT_UDP},
    {"tcp", required_argument, NULL, OPT_TCP},
    {"idle-exit", required_argument, NULL, OPT_IDLE_EXIT},
    {"expect", required_argument, NULL, OPT_EXPECT},
    {"rcvbuf", required_argument, NULL, OPT_RCVBUF},
    {"max-conns", required_argument, NULL, OPT_MAX_CONNS},
    {"quiet", no_argument, NULL, OPT_QUIET},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

static void print_help(void)
{
    fputs("Usage: sluice-sink --udp HOST:PORT | --tcp HOST:PORT [options]\n"
          "Bare baseline receiver: counts frames and readings, acks TCP frames that ask.\n"
          "\n"
          "  --udp HOST:PORT   receive datagrams (recvmmsg, 64 per call); port 0 = any\n"
          "  --tcp HOST:PORT   accept connections, ack ACK_REQUESTED frames with OK\n"
          "  --idle-exit S     exit after S seconds without traffic (0 = never) [0]\n"
          "  --expect N        exit as soon as N readings arrived (0 = never) [0]\n"
          "  --rcvbuf BYTES    UDP receive buffer (SO_RCVBUF, then SO_RCVBUFFORCE) [33554432]\n"
          "  --max-conns N     TCP connection table size [256]\n"
          "  --quiet           nothing on stderr but errors\n"
          "  --help, --version\n"
          "\n"
          "Prints one JSON line on exit (also on SIGINT/SIGTERM). Exit: 0 ok, 1 runtime\n"
          "failure, 2 bad usage.\n",
          stdout);
}

static bool text_to_number(const char *text, double max, double *out)
{
    char *end = NULL;
    if (text == NULL || *text < '0' || *text > '9') {
        return false;
    }
    errno = 0;
    double value = strtod(text, &end);
    if (errno != 0 || *end != '\0' || !isfinite(value) || value > max) {
        return false;
    }
    *out = value;
    return true;
}

/* HOST:PORT or [IPv6]:PORT, port 0 allowed. */
static int parse_address(const char *text, struct sink_config *cfg)
{
    char host[256];
    const char *colon = strrchr(text, ':');
    const char *host_start = text, *host_end = colon;
    if (text[0] == '[') {
        host_start = text + 1;
        host_end = strchr(text, ']');
        colon = host_end != NULL && host_end[1] == ':' ? host_end + 1 : NULL;
    }
    double port;
    if (colon == NULL || host_end == NULL || host_end <= host_start ||
        (size_t)(host_end - host_start) >= sizeof host ||
        !text_to_number(colon + 1, 65535, &port) || port != floor(port)) {
        return usage_error("'%s': expected HOST:PORT", text);
    }
    memcpy(host, host_start, (size_t)(host_end - host_start));
    host[host_end - host_start] = '\0';
    struct addrinfo hints = {.ai_socktype = cfg->udp ? SOCK_DGRAM : SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | AI_PASSIVE};
    struct addrinfo *found = NULL;
    int rc = getaddrinfo(host, colon + 1, &hints, &found);
    if (rc != 0) {
        return usage_error("'%s': cannot resolve '%s': %s", text, host, gai_strerror(rc));
    }
    memcpy(&cfg->addr, found->ai_addr, found->ai_addrlen);
    cfg->addr_bytes = found->ai_addrlen;
    freeaddrinfo(found);
    cfg->address = text;
    return 0;
}

static int parse_option(int opt, const char *arg, struct sink_config *cfg)
{
    double value = 0;
    switch (opt) {
    case OPT_UDP:
    case OPT_TCP:
        if (cfg->address != NULL) {
            return usage_error("give exactly one of --udp and --tcp");
        }
        cfg->udp = opt == OPT_UDP;
        return parse_address(arg, cfg);
    case OPT_IDLE_EXIT:
        if (!text_to_number(arg, 1e9, &cfg->idle_exit_s)) {
            return usage_error("--idle-exit '%s': expected seconds >= 0", arg);
        }
        return 0;
    case OPT_EXPECT:
        if (!text_to_number(arg, 1e18, &value) || value != floor(value)) {
            return usage_error("--expect '%s': expected a whole number of readings", arg);
        }
        cfg->expect = (uint64_t)value;
        return 0;
    case OPT_RCVBUF:
        if (!text_to_number(arg, 1 << 30, &value) || value < 4096) {
            return usage_error("--rcvbuf '%s': expected 4096..2^30 bytes", arg);
        }
        cfg->rcvbuf_bytes = (uint32_t)value;
        return 0;
    case OPT_MAX_CONNS:
        if (!text_to_number(arg, SINK_CONNS_MAX, &value) || value < 1 || value != floor(value)) {
            return usage_error("--max-conns '%s': expected 1..%u", arg, SINK_CONNS_MAX);
        }
        cfg->conns_max = (uint32_t)value;
        return 0;
    case OPT_QUIET:
        cfg->quiet = true;
        return 0;
    case OPT_HELP:
        print_help();
        return 1;
    case OPT_VERSION:
        printf("sluice-sink %s\n", SL_VERSION);
        return 1;
    default:
        return usage_error("internal: unhandled option %d", opt);
    }
}

/* Returns 0 to run, 1 when --help/--version was answered, -1 on bad usage. */
static int parse_args(int argc, char **argv, struct sink_config *cfg)
{
    *cfg =
        (struct sink_config){.rcvbuf_bytes = SINK_RCVBUF_DEFAULT, .conns_max = SINK_CONNS_DEFAULT};
    int opt;
    while ((opt = getopt_long(argc, argv, "", sink_options, NULL)) != -1) {
        if (opt == '?' || opt == ':') {
            fputs("Try 'sluice-sink --help'.\n", stderr);
            return -1;
        }
        int rc = parse_option(opt, optarg, cfg);
        if (rc != 0) {
            return rc;
        }
    }
    if (optind < argc) {
        return usage_error("unexpected argument '%s'", argv[optind]);
    }
    if (cfg->address == NULL) {
        return usage_error("one of --udp HOST:PORT or --tcp HOST:PORT is required");
    }
    return 0;
}

int main(int argc, char **argv)
{
    tool_name = "sluice-sink";
    struct sink_config cfg;
    int rc = parse_args(argc, argv, &cfg);
    if (rc != 0) {
        return rc > 0 ? 0 : 2;
    }
    struct sigaction sa = {.sa_handler = tool_on_stop_signal};
    sigemptyset(&sa.sa_mask);
    (void)sigaction(SIGINT, &sa, NULL);
    (void)sigaction(SIGTERM, &sa, NULL);
    (void)signal(SIGPIPE, SIG_IGN);
    int fd = open_socket(&cfg);
    if (fd < 0) {
        return 1;
    }
    if (!cfg.quiet) {
        announce(&cfg, fd);
    }
    struct sink_stats stats = {.activity_ns = sl_clock_monotonic_ns()};
    rc = cfg.udp ? udp_run(&cfg, fd, &stats) : tcp_run(&cfg, fd, &stats);
    print_report(&cfg, &stats);
    close(fd);
    return rc == 0 ? 0 : 1;
}
