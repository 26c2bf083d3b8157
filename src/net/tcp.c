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

/*
 * OPEN: reading. PAUSED: its acks are not being read, so neither is it.
 * FAILING: a bad frame arrived; the acks of the frames before it and then
 * its error ack go out at the next commit, then it drains. DRAINING: the
 * write side is shut; input is discarded until the peer leaves.
 */
enum conn_state { CONN_FREE = 0, CONN_OPEN, CONN_PAUSED, CONN_FAILING, CONN_DRAINING };

struct sl_conn {
    int fd;
    uint32_t state; /* enum conn_state */
    uint32_t rx_len;
    uint32_t tx_head, tx_len; /* pending ack bytes are tx[tx_head, tx_len) */
    uint32_t events;          /* registered epoll events */
    uint32_t generation;      /* bumped on close: intents of an earlier peer are dropped */
    uint32_t acks_reserved;   /* acks of this commit group still to be queued */
    bool touched;             /* in ing->conn_touched: acks queued since the last flush pass */
    int64_t last_activity_ns;
    uint8_t *rx; /* SL_TCP_RX_BYTES */
    uint8_t *tx; /* SL_TCP_TX_BYTES */
};

void sl_tcp_plan(const struct sl_ingest_config *config, struct sl_plan *plan)
{
    uint64_t n = config->tcp_connections_max;
    sl_plan_add(plan, "tcp_connections", n * (sizeof(struct sl_conn) + 2 * sizeof(uint32_t)),
                "TCP connection table, its free stack and its touched list");
    sl_plan_add(plan, "tcp_buffers",
                n * (sl_align_up(SL_TCP_RX_BYTES, SL_PLAN_ALIGN) + SL_TCP_TX_BYTES),
                "TCP receive (one whole max frame) and ack buffers, per connection");
}

void sl_tcp_take(struct sl_ingest *ing, struct sl_arena *arena)
{
    uint32_t n = ing->config.tcp_connections_max;
    ing->conns = sl_arena_take(arena, (uint64_t)n * sizeof(struct sl_conn));
    ing->conn_free = sl_arena_take(arena, (uint64_t)n * sizeof(uint32_t));
    ing->conn_touched = sl_arena_take(arena, (uint64_t)n * sizeof(uint32_t));
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
    c->acks_reserved = 0; /* `touched` stays: the index may still be listed, the flush skips it */
    c->generation++;
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
        c->acks_reserved = 0;
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

/* Move the unsent part of the ack queue to its start. */
static void conn_tx_compact(struct sl_conn *c)
{
    if (c->tx_head > 0) {
        memmove(c->tx, c->tx + c->tx_head, c->tx_len - c->tx_head);
        c->tx_len -= c->tx_head;
        c->tx_head = 0;
    }
}

/* Room for one more ack beyond those queued and those reserved for the current group. */
static bool conn_tx_room(struct sl_conn *c)
{
    uint64_t need = (uint64_t)(c->acks_reserved + 1) * SL_ACK_BYTES;
    if (c->tx_len + need <= SL_TCP_TX_BYTES) {
        return true;
    }
    conn_tx_compact(c);
    return c->tx_len + need <= SL_TCP_TX_BYTES;
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

/*
 * A bad frame: count it, stop reading, and leave an intent so that the acks
 * of the frames before it go out first, then its error ack (always, even
 * without ACK_REQUESTED: the peer must learn why it is closed).
 */
static void conn_reject(struct sl_ingest *ing, uint32_t index, const uint8_t *frame, int rc)
{
    struct sl_conn *c = &ing->conns[index];
    enum sl_status status = sl_decode_status(rc);
    sl_counter_add(&ing->counters.decode_errors[SL_TRANSPORT_TCP][-rc], 1);
    sl_counter_add(&ing->counters.batches[SL_TRANSPORT_TCP][status], 1);
    sl_counter_add(&ing->counters.tcp_connections_closed_on_error, 1);
    struct sl_intent in = {.kind = SL_INTENT_REJECT, .status = (uint8_t)status, .ack = 1,
                           .conn = index, .conn_gen = c->generation,
                           .stream_id = sl_load_u32(frame + 8), .batch_seq = sl_load_u64(frame + 16)};
    c->state = CONN_FAILING;
    c->rx_len = 0;
    c->acks_reserved++; /* may exceed the queue: an error ack is dropped, not blocked, if full */
    conn_set_events(ing, index, 0);
    sl_ingest_add_intent(ing, &in);
}

/* Shut the write side after the error ack, and drain until the peer leaves. */
static void conn_start_draining(struct sl_ingest *ing, uint32_t index)
{
    struct sl_conn *c = &ing->conns[index];
    if (conn_flush(c) != 0) {
        conn_close(ing, index);
        return;
    }
    shutdown(c->fd, SHUT_WR);
    c->state = CONN_DRAINING;
    c->last_activity_ns = sl_clock_monotonic_ns();
    conn_set_events(ing, index, EPOLLIN | EPOLLRDHUP);
}

/* Handle one whole, validated frame: dedup, then log it (or answer at once). */
static void conn_batch(struct sl_ingest *ing, uint32_t index, const struct sl_batch *batch,
                       int64_t now_us)
{
    struct sl_conn *c = &ing->conns[index];
    const struct sl_batch_header *h = &batch->header;
    uint32_t generation = c->generation;
    sl_ingest_make_room(ing, h->count); /* a commit now, not between admitting and logging */
    if (c->generation != generation) {
        return; /* that commit's flush found the peer gone and closed it: nothing to answer */
    }
    struct sl_intent in = {.conn = index, .conn_gen = c->generation, .stream_id = h->stream_id,
                           .batch_seq = h->batch_seq, .ack = (h->flags & SL_FLAG_ACK_REQUESTED) != 0};
    struct sl_stream_slot *slot = NULL;
    int admit = sl_streams_admit(&ing->tcp_streams, h->stream_id, h->batch_seq, &slot);
    if (admit == 0 && slot->hole_seq != 0 && h->batch_seq > slot->hole_seq) {
        in.status = SL_STATUS_OVERLOADED; /* behind an unapplied batch: it must be resent first */
    } else if (admit == 0) {
        /* Admitted now, so a resend within this group is DUPLICATE; rolled back if it fails. */
        in.slot = slot;
        in.prev_seq = slot->last_seq;
        in.prev_has_seq = (uint8_t)slot->has_seq;
        if (slot->hole_seq == h->batch_seq) {
            slot->hole_seq = 0;
        }
        sl_streams_applied(slot, h->batch_seq);
        if (in.ack) {
            c->acks_reserved++;
        }
        if (sl_ingest_log_batch(ing, batch, SL_LOG_TCP, now_us, &in) == 0) {
            return;
        }
        if (in.ack) {
            c->acks_reserved--;
        }
        sl_ingest_stream_failed(slot, in.prev_seq, in.prev_has_seq, h->batch_seq);
        in.slot = NULL;
        in.status = SL_STATUS_OVERLOADED;
    } else if (admit == 1) {
        in.status = SL_STATUS_DUPLICATE;
    } else {
        in.status = SL_STATUS_OVERLOADED;
        sl_counter_add(&ing->counters.streams_table_full, 1);
    }
    in.kind = SL_INTENT_STATUS;
    if (in.ack) {
        c->acks_reserved++;
    }
    sl_ingest_add_intent(ing, &in);
}

/*
 * Open: read, and write when acks wait. Paused: wake when writable, to drain
 * and resume, while acks are queued or the queue has room again. A paused
 * connection with an empty queue but no room waits on acks reserved for a
 * group the apply thread has not finished: it waits for nothing (its socket
 * would be writable at once, and the loop would spin until then); that
 * group's delivery touches it, and the flush asks again.
 */
static uint32_t conn_want(const struct sl_conn *c)
{
    if (c->state == CONN_PAUSED) {
        uint64_t room_after_compaction = SL_TCP_TX_BYTES - (c->tx_len - c->tx_head);
        bool room = (uint64_t)(c->acks_reserved + 1) * SL_ACK_BYTES <= room_after_compaction;
        return c->tx_len > c->tx_head || room ? EPOLLOUT : 0;
    }
    return EPOLLIN | EPOLLRDHUP | (c->tx_len > c->tx_head ? EPOLLOUT : 0);
}

void sl_tcp_deliver(struct sl_ingest *ing, const struct sl_intent *in, enum sl_status status,
                    const struct sl_apply_result *result)
{
    sl_counter_add(&ing->counters.batches[SL_TRANSPORT_TCP][status], in->kind == SL_INTENT_REJECT ? 0 : 1);
    struct sl_conn *c = &ing->conns[in->conn];
    if (c->state == CONN_FREE || c->generation != in->conn_gen) {
        return; /* the peer left: its acks have no one to go to */
    }
    if (in->ack) {
        SL_ASSERT(c->acks_reserved > 0);
        c->acks_reserved--;
        if (c->tx_len + SL_ACK_BYTES > SL_TCP_TX_BYTES) {
            conn_tx_compact(c);
        }
        if (c->tx_len + SL_ACK_BYTES <= SL_TCP_TX_BYTES) { /* always, but for an error ack */
            conn_queue_ack(c, status, in->stream_id, in->batch_seq, result->accepted, result->rejected);
        }
        if (!c->touched) {
            c->touched = true;
            SL_ASSERT(ing->conn_touched_count < ing->config.tcp_connections_max);
            ing->conn_touched[ing->conn_touched_count++] = in->conn;
        }
    }
    if (in->kind == SL_INTENT_REJECT) {
        conn_start_draining(ing, in->conn);
    }
}

void sl_tcp_flush_touched(struct sl_ingest *ing)
{
    uint32_t count = ing->conn_touched_count;
    ing->conn_touched_count = 0;
    for (uint32_t k = 0; k < count; k++) {
        uint32_t i = ing->conn_touched[k];
        struct sl_conn *c = &ing->conns[i];
        SL_ASSERT(c->touched);
        c->touched = false;
        if (c->state != CONN_OPEN && c->state != CONN_PAUSED) {
            continue;
        }
        uint32_t pending_before = c->tx_len - c->tx_head;
        if (conn_flush(c) != 0) {
            sl_counter_add(&ing->counters.tcp_connections_closed_on_error, 1);
            conn_close(ing, i);
            continue;
        }
        if (c->tx_len - c->tx_head < pending_before) {
            c->last_activity_ns = sl_clock_monotonic_ns();
        }
        conn_set_events(ing, i, conn_want(c));
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
    uint32_t generation = c->generation;
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
        conn_batch(ing, index, &batch, now_us);
        if (c->generation != generation) {
            return -1; /* closed under us by a commit's flush (the peer reset): stop here */
        }
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
    if (rc == 1 && c->state != CONN_PAUSED) {
        sl_counter_add(&ing->counters.tcp_pauses, 1);
    }
    c->state = rc == 1 ? CONN_PAUSED : CONN_OPEN;
    conn_set_events(ing, index, conn_want(c));
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
    if (c->state == CONN_FAILING) {
        return; /* its error ack goes out at the commit that ends this tick */
    }
    conn_serve(ing, index, events);
}

void sl_tcp_excuse(struct sl_ingest *ing, int64_t ns, int64_t now_ns)
{
    for (uint32_t i = 0; i < ing->config.tcp_connections_max; i++) {
        struct sl_conn *c = &ing->conns[i];
        if (c->state != CONN_FREE) {
            int64_t later = c->last_activity_ns + ns;
            c->last_activity_ns = later < now_ns ? later : now_ns;
        }
    }
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
    sl_ingest_settle(ing); /* log, apply and answer what was just read */
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
