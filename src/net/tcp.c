/*
 * TCP connections of the native protocol (PROTOCOL.md), inside the ingest
 * loop.
 *
 * A fixed table of connections, each with a receive buffer that holds one
 * whole maximum frame (786,456 bytes) and a send buffer of
 * SL_TCP_ACKS_QUEUED acks, taken from the arena at start-up. Over the limit
 * a new connection is accepted and closed at once, and counted.
 *
 * Per ready connection and tick: one recv of whatever fits, then every
 * whole frame in the buffer is handled in order: decoded and validated,
 * checked against the stream's last applied batch_seq (DUPLICATE),
 * applied, and acked when it asked for it. Acks are queued and written once
 * per tick, so a pipelining sender gets one send per recv, not per batch.
 * When the ack queue is full (the peer is not reading), the connection
 * stops being read until the queue drains: a slow reader slows only itself.
 *
 * A bad frame (BAD_CRC, MALFORMED) is answered with its status, then the
 * write side is shut and the connection drained until the peer closes or
 * SL_TCP_LINGER_NS passes (closing with unread data would reset the
 * connection and could destroy the ack in flight). Idle connections (no
 * byte in or out for tcp_idle_timeout_s) are closed by the once-a-second
 * sweep.
 *
 * Thread: the ingest thread only.
 */
#include "net/tcp.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/assert.h"
#include "core/clock.h"

#define SL_TCP_RX_BYTES SL_BATCH_BYTES_MAX
#define SL_TCP_TX_BYTES (SL_TCP_ACKS_QUEUED * SL_ACK_BYTES)
#define SL_TCP_ACCEPTS_PER_TICK 64u
#define SL_TCP_LINGER_NS (2LL * 1000000000)
#define SL_TCP_DRAIN_NS (1LL * 1000000000)

enum conn_state { CONN_FREE = 0, CONN_OPEN, CONN_PAUSED, CONN_DRAINING };

struct sl_conn {
    int fd;
    uint32_t state; /* enum conn_state */
    uint32_t rx_len;
    uint32_t tx_head, tx_len; /* pending ack bytes are tx[tx_head, tx_len) */
    uint32_t events;          /* registered epoll events */
    int64_t last_activity_ns;
    uint8_t *rx; /* SL_TCP_RX_BYTES */
    uint8_t *tx; /* SL_TCP_TX_BYTES */
};

void sl_tcp_plan(const struct sl_ingest_config *config, struct sl_plan *plan)
{
    uint64_t n = config->tcp_connections_max;
    sl_plan_add(plan, "tcp_connections", n * (sizeof(struct sl_conn) + sizeof(uint32_t)),
                "TCP connection table");
    sl_plan_add(plan, "tcp_buffers",
                n * (sl_align_up(SL_TCP_RX_BYTES, SL_PLAN_ALIGN) + SL_TCP_TX_BYTES),
                "TCP receive (one whole max frame) and ack buffers, per connection");
}

void sl_tcp_take(struct sl_ingest *ing, struct sl_arena *arena)
{
    uint32_t n = ing->config.tcp_connections_max;
    ing->conns = sl_arena_take(arena, (uint64_t)n * sizeof(struct sl_conn));
    ing->conn_free = sl_arena_take(arena, (uint64_t)n * sizeof(uint32_t));
    uint8_t *buffers = sl_arena_take(
        arena, (uint64_t)n * (sl_align_up(SL_TCP_RX_BYTES, SL_PLAN_ALIGN) + SL_TCP_TX_BYTES));
    for (uint32_t i = 0; i < n; i++) {
        struct sl_conn *c = &ing->conns[i];
        c->fd = -1;
        c->rx = buffers;
        buffers += sl_align_up(SL_TCP_RX_BYTES, SL_PLAN_ALIGN);
        c->tx = buffers;
        buffers += SL_TCP_TX_BYTES;
        ing->conn_free[i] = n - 1 - i; /* pop order: 0, 1, 2, ... */
    }
    ing->conn_free_count = n;
}

static void conn_set_events(struct sl_ingest *ing, uint32_t index, uint32_t events)
{
    struct sl_conn *c = &ing->conns[index];
    if (c->events == events) {
        return;
    }
    struct epoll_event ev = {.events = events, .data.u64 = SL_TAG_CONN + index};
    epoll_ctl(ing->epoll_fd, EPOLL_CTL_MOD, c->fd, &ev);
    c->events = events;
}

static void conn_close(struct sl_ingest *ing, uint32_t index)
{
    struct sl_conn *c = &ing->conns[index];
    SL_ASSERT(c->state != CONN_FREE);
    close(c->fd); /* also removes it from the epoll set */
    c->fd = -1;
    c->state = CONN_FREE;
    c->rx_len = c->tx_head = c->tx_len = 0;
    SL_ASSERT(ing->conn_free_count < ing->config.tcp_connections_max);
    ing->conn_free[ing->conn_free_count++] = index;
    uint32_t open = atomic_load_explicit(&ing->counters.tcp_connections, memory_order_relaxed);
    atomic_store_explicit(&ing->counters.tcp_connections, open - 1, memory_order_relaxed);
}

void sl_tcp_accept(struct sl_ingest *ing)
{
    for (uint32_t k = 0; k < SL_TCP_ACCEPTS_PER_TICK; k++) {
        int fd = accept4(ing->tcp_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            return; /* EAGAIN, or a transient error (EMFILE, ECONNABORTED): retried next tick */
        }
        if (ing->conn_free_count == 0) {
            close(fd);
            sl_counter_add(&ing->counters.tcp_connections_refused, 1);
            continue;
        }
        uint32_t index = ing->conn_free[--ing->conn_free_count];
        struct sl_conn *c = &ing->conns[index];
        SL_ASSERT(c->state == CONN_FREE);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->fd = fd;
        c->state = CONN_OPEN;
        c->events = EPOLLIN | EPOLLRDHUP;
        c->last_activity_ns = sl_clock_monotonic_ns();
        struct epoll_event ev = {.events = c->events, .data.u64 = SL_TAG_CONN + index};
        if (epoll_ctl(ing->epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            conn_close(ing, index);
            continue;
        }
        uint32_t open = atomic_load_explicit(&ing->counters.tcp_connections, memory_order_relaxed);
        atomic_store_explicit(&ing->counters.tcp_connections, open + 1, memory_order_relaxed);
        sl_counter_add(&ing->counters.tcp_connections_accepted, 1);
    }
}

/* Write queued acks. Returns 0, or -1 when the connection failed (the caller closes it). */
static int conn_flush(struct sl_conn *c)
{
    while (c->tx_head < c->tx_len) {
        ssize_t n = send(c->fd, c->tx + c->tx_head, c->tx_len - c->tx_head, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
        }
        c->tx_head += (uint32_t)n;
    }
    c->tx_head = c->tx_len = 0;
    return 0;
}

static bool conn_tx_room(struct sl_conn *c)
{
    if (c->tx_len + SL_ACK_BYTES <= SL_TCP_TX_BYTES) {
        return true;
    }
    if (c->tx_head > 0) { /* compact the partly written queue */
        memmove(c->tx, c->tx + c->tx_head, c->tx_len - c->tx_head);
        c->tx_len -= c->tx_head;
        c->tx_head = 0;
    }
    return c->tx_len + SL_ACK_BYTES <= SL_TCP_TX_BYTES;
}

static void conn_queue_ack(struct sl_conn *c, enum sl_status status, uint32_t stream_id,
                           uint64_t seq, uint32_t accepted, uint32_t rejected)
{
    struct sl_ack ack = {.status = (uint8_t)status, .stream_id = stream_id, .accepted = accepted,
                         .batch_seq = seq, .rejected = rejected};
    SL_ASSERT(c->tx_len + SL_ACK_BYTES <= SL_TCP_TX_BYTES);
    sl_ack_encode(c->tx + c->tx_len, &ack);
    c->tx_len += SL_ACK_BYTES;
}

/* A bad frame: answer with its status, shut the write side, drain until the peer leaves. */
static void conn_reject(struct sl_ingest *ing, uint32_t index, const uint8_t *frame, int rc)
{
    struct sl_conn *c = &ing->conns[index];
    enum sl_status status = sl_decode_status(rc);
    sl_counter_add(&ing->counters.decode_errors[SL_TRANSPORT_TCP][-rc], 1);
    sl_counter_add(&ing->counters.batches[SL_TRANSPORT_TCP][status], 1);
    sl_counter_add(&ing->counters.tcp_connections_closed_on_error, 1);
    if (conn_tx_room(c)) {
        conn_queue_ack(c, status, sl_load_u32(frame + 8), sl_load_u64(frame + 16), 0, 0);
    }
    if (conn_flush(c) != 0) {
        conn_close(ing, index);
        return;
    }
    shutdown(c->fd, SHUT_WR);
    c->state = CONN_DRAINING;
    c->rx_len = 0;
    c->last_activity_ns = sl_clock_monotonic_ns();
    conn_set_events(ing, index, EPOLLIN | EPOLLRDHUP);
}

/* Handle one whole, validated frame. */
static void conn_batch(struct sl_ingest *ing, struct sl_conn *c, const struct sl_batch *batch,
                       int64_t now_us)
{
    const struct sl_batch_header *h = &batch->header;
    struct sl_stream_slot *slot = NULL;
    enum sl_status status = SL_STATUS_OK;
    struct sl_apply_result result = {0};
    int admit = sl_streams_admit(&ing->tcp_streams, h->stream_id, h->batch_seq, &slot);
    if (admit == 1) {
        status = SL_STATUS_DUPLICATE;
    } else if (admit < 0) {
        status = SL_STATUS_OVERLOADED;
        sl_counter_add(&ing->counters.streams_table_full, 1);
    } else {
        sl_store_apply(ing->store, batch, now_us, &result);
        sl_streams_applied(slot, h->batch_seq);
    }
    sl_counter_add(&ing->counters.batches[SL_TRANSPORT_TCP][status], 1);
    if (h->flags & SL_FLAG_ACK_REQUESTED) {
        conn_queue_ack(c, status, h->stream_id, h->batch_seq, result.accepted, result.rejected);
    }
}

/*
 * Handle every whole frame in the receive buffer. Returns -1 when the
 * connection was rejected or closed, 1 when it paused on a full ack queue.
 */
static int conn_process(struct sl_ingest *ing, uint32_t index)
{
    struct sl_conn *c = &ing->conns[index];
    uint32_t pos = 0;
    int rc = 0;
    int64_t now_us = sl_clock_realtime_us();
    while (c->rx_len - pos >= SL_BATCH_HEADER_BYTES) {
        const uint8_t *frame = c->rx + pos;
        struct sl_batch_header h;
        int hrc = sl_batch_header_decode(frame, c->rx_len - pos, &h);
        if (hrc < 0) {
            conn_reject(ing, index, frame, hrc);
            return -1;
        }
        uint32_t frame_bytes = SL_BATCH_BYTES(h.count);
        if (c->rx_len - pos < frame_bytes) {
            break;
        }
        if (!conn_tx_room(c)) {
            rc = 1; /* the peer is not reading its acks: stop reading it */
            break;
        }
        struct sl_batch batch;
        int drc = sl_batch_decode(frame, frame_bytes, &batch);
        if (drc < 0) {
            conn_reject(ing, index, frame, drc);
            return -1;
        }
        conn_batch(ing, c, &batch, now_us);
        pos += frame_bytes;
    }
    if (pos > 0) {
        memmove(c->rx, c->rx + pos, c->rx_len - pos);
        c->rx_len -= pos;
    }
    return rc;
}

/* Serve one connection: read once, handle frames, write acks, set interest. */
static void conn_serve(struct sl_ingest *ing, uint32_t index, uint32_t events)
{
    struct sl_conn *c = &ing->conns[index];
    if (c->tx_len > c->tx_head && conn_flush(c) != 0) { /* make room first */
        sl_counter_add(&ing->counters.tcp_connections_closed_on_error, 1);
        conn_close(ing, index);
        return;
    }
    if (c->state == CONN_OPEN && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
        ssize_t n = recv(c->fd, c->rx + c->rx_len, SL_TCP_RX_BYTES - c->rx_len, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            conn_flush(c); /* acks for frames handled earlier, best effort */
            if (n < 0) {
                sl_counter_add(&ing->counters.tcp_connections_closed_on_error, 1);
            }
            conn_close(ing, index);
            return;
        }
        if (n > 0) {
            sl_counter_add(&ing->counters.tcp_bytes, (uint64_t)n);
            c->rx_len += (uint32_t)n;
            c->last_activity_ns = sl_clock_monotonic_ns();
        }
    }
    int rc = conn_process(ing, index);
    if (rc < 0) {
        return;
    }
    uint32_t pending_before = c->tx_len - c->tx_head;
    if (conn_flush(c) != 0) {
        sl_counter_add(&ing->counters.tcp_connections_closed_on_error, 1);
        conn_close(ing, index);
        return;
    }
    if (c->tx_len - c->tx_head < pending_before) {
        c->last_activity_ns = sl_clock_monotonic_ns();
    }
    bool tx_pending = c->tx_len > c->tx_head;
    c->state = rc == 1 ? CONN_PAUSED : CONN_OPEN;
    uint32_t want = (c->state == CONN_OPEN ? EPOLLIN | EPOLLRDHUP : 0) | (tx_pending ? EPOLLOUT : 0);
    conn_set_events(ing, index, want);
}

static void conn_drain_input(struct sl_ingest *ing, uint32_t index)
{
    struct sl_conn *c = &ing->conns[index];
    uint8_t sink[4096];
    ssize_t n = recv(c->fd, sink, sizeof sink, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        conn_close(ing, index);
    }
}

void sl_tcp_event(struct sl_ingest *ing, uint32_t index, uint32_t events)
{
    SL_ASSERT(index < ing->config.tcp_connections_max);
    struct sl_conn *c = &ing->conns[index];
    if (c->state == CONN_FREE) {
        return; /* closed earlier in this tick */
    }
    if (c->state == CONN_DRAINING) {
        conn_drain_input(ing, index);
        return;
    }
    conn_serve(ing, index, events);
}

void sl_tcp_sweep(struct sl_ingest *ing, int64_t now_ns)
{
    int64_t idle_ns = (int64_t)ing->config.tcp_idle_timeout_s * 1000000000;
    for (uint32_t i = 0; i < ing->config.tcp_connections_max; i++) {
        struct sl_conn *c = &ing->conns[i];
        if (c->state == CONN_FREE) {
            continue;
        }
        int64_t limit = c->state == CONN_DRAINING ? SL_TCP_LINGER_NS : idle_ns;
        if (now_ns - c->last_activity_ns > limit) {
            if (c->state != CONN_DRAINING) {
                sl_counter_add(&ing->counters.tcp_connections_timed_out, 1);
            }
            conn_close(ing, i);
        }
    }
}

void sl_tcp_drain_all(struct sl_ingest *ing)
{
    int64_t deadline = sl_clock_monotonic_ns() + SL_TCP_DRAIN_NS;
    for (uint32_t i = 0; i < ing->config.tcp_connections_max; i++) {
        struct sl_conn *c = &ing->conns[i];
        if (c->state == CONN_OPEN || c->state == CONN_PAUSED) {
            /* What the peer already sent and the kernel holds: one last read. */
            conn_serve(ing, i, EPOLLIN);
        }
    }
    for (uint32_t i = 0; i < ing->config.tcp_connections_max; i++) {
        struct sl_conn *c = &ing->conns[i];
        while (c->state != CONN_FREE && c->tx_len > c->tx_head &&
               sl_clock_monotonic_ns() < deadline) {
            if (conn_flush(c) != 0) {
                break;
            }
            if (c->tx_len > c->tx_head) {
                usleep(1000);
            }
        }
        if (c->state != CONN_FREE) {
            conn_close(ing, i);
        }
    }
}
