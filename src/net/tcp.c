/*
 * TCP connections of the native protocol (PROTOCOL.md), inside the ingest
 * loop.
 *
 * A fixed table of connections, each with a receive buffer that holds one
 * whole maximum frame (786,456 bytes) and a send buffer of
 * SL_TCP_ACKS_QUEUED acks, taken from the arena at start-up.
 *
 * Per ready connection and tick: one recv of whatever fits, then every
 * whole frame in the buffer is handled in order: decoded and validated,
 * checked against the stream's last applied batch_seq (DUPLICATE), and
 * handed to the commit pipeline, which logs it, applies it and gives its
 * answer back (tcp_deliver) in arrival order. Acks are queued and written
 * once per delivery pass, so a pipelining sender gets one send per group,
 * not per batch. When the ack queue is full (the peer is not reading), the
 * connection stops being read until the queue drains: a slow reader slows
 * only itself.
 *
 * Hostile peers. A frame must complete within the frame timeout of its
 * first byte (a trickle of bytes does not keep it alive), a connection
 * with no byte in or out for the idle timeout is closed, one address holds
 * at most per_ip_max connections, and a newcomer at a full table evicts
 * the connection idle, or with a frame incomplete, longest (never one that
 * is waiting for our acks). Out of descriptors (EMFILE), accepting pauses
 * for SL_TCP_ACCEPT_BACKOFF_NS instead of spinning on the ready listener.
 * Each is counted by reason and said in a rate-limited event line.
 *
 * Endings. A bad frame (BAD_CRC, MALFORMED) is answered with its status,
 * then the write side is shut and the connection drained until the peer
 * closes or SL_TCP_LINGER_NS passes (closing with unread data would reset
 * the connection and could destroy the ack in flight). A peer that shuts
 * its write side still gets an ack for every batch read (PROTOCOL.md): the
 * connection waits, CLOSING, for the answers of the groups still in the
 * pipeline, writes them, then closes.
 *
 * Thread: the ingest thread only.
 */
#include "net/tcp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/assert.h"
#include "core/clock.h"
#include "core/hash.h"
#include "core/say.h"

#define SL_TCP_RX_BYTES SL_BATCH_BYTES_MAX
#define SL_TCP_TX_BYTES (SL_TCP_ACKS_QUEUED * SL_ACK_BYTES)
#define SL_TCP_ACCEPTS_PER_TICK 64u
#define SL_TCP_LINGER_NS (2LL * 1000000000)
#define SL_TCP_DRAIN_NS (1LL * 1000000000)
#define SL_TCP_ACCEPT_BACKOFF_NS (100LL * 1000000)

/*
 * OPEN: reading. PAUSED: its acks are not being read, so neither is it.
 * FAILING: a bad frame arrived; the acks of the frames before it and then
 * its error ack go out at the next delivery, then it drains. DRAINING: the
 * write side is shut; input is discarded until the peer leaves. CLOSING:
 * the peer shut its write side; the answers still in the pipeline go out,
 * then it closes.
 */
enum conn_state { CONN_FREE = 0, CONN_OPEN, CONN_PAUSED, CONN_FAILING, CONN_DRAINING, CONN_CLOSING };

struct sl_conn {
    int fd;
    uint32_t state; /* enum conn_state */
    uint32_t rx_len;
    uint32_t tx_head, tx_len; /* pending ack bytes are tx[tx_head, tx_len) */
    uint32_t events;          /* registered epoll events */
    uint32_t generation;      /* bumped on close: answers for an earlier peer are dropped */
    uint32_t acks_reserved;   /* acks of batches still in the pipeline */
    bool touched;             /* in tcp->conn_touched: acks queued since the last flush pass */
    uint8_t ip[16];           /* the peer's address (per-address count, messages) */
    uint16_t port;
    int64_t last_activity_ns;
    int64_t frame_started_ns; /* when the incomplete frame in rx began; 0: none */
    uint8_t *rx; /* SL_TCP_RX_BYTES */
    uint8_t *tx; /* SL_TCP_TX_BYTES */
};

static struct sl_say_limit say_evicted, say_refused, say_timeout, say_backoff;

void sl_tcp_plan(uint32_t n, struct sl_plan *plan)
{
    sl_plan_add(plan, "tcp_connections",
                (uint64_t)n * (sizeof(struct sl_conn) + 2 * sizeof(uint32_t)) + sl_peers_bytes(n),
                "TCP connection table, its free stack, touched list and per-address counts");
    sl_plan_add(plan, "tcp_buffers",
                (uint64_t)n * (sl_align_up(SL_TCP_RX_BYTES, SL_PLAN_ALIGN) + SL_TCP_TX_BYTES),
                "TCP receive (one whole max frame) and ack buffers, per connection");
}

static void tcp_deliver(void *ctx, const struct sl_intent *in, enum sl_status status,
                        const struct sl_apply_result *result);
static void tcp_flush_touched(void *ctx);

void sl_tcp_open(struct sl_tcp *tcp, const struct sl_tcp_config *config, struct sl_commit *commit,
                 struct sl_streams *streams, struct sl_net_counters *counters, int epoll_fd,
                 int listen_fd, struct sl_arena *arena)
{
    memset(tcp, 0, sizeof *tcp);
    tcp->config = *config;
    tcp->commit = commit;
    tcp->streams = streams;
    tcp->counters = counters;
    tcp->epoll_fd = epoll_fd;
    tcp->listen_fd = listen_fd;
    uint32_t n = config->connections_max;
    tcp->conns = sl_arena_take(arena, (uint64_t)n * sizeof(struct sl_conn));
    tcp->conn_free = sl_arena_take(arena, (uint64_t)n * sizeof(uint32_t));
    tcp->conn_touched = sl_arena_take(arena, (uint64_t)n * sizeof(uint32_t));
    sl_peers_init(&tcp->peers, sl_arena_take(arena, sl_peers_bytes(n)), n);
    uint8_t *buffers = sl_arena_take(
        arena, (uint64_t)n * (sl_align_up(SL_TCP_RX_BYTES, SL_PLAN_ALIGN) + SL_TCP_TX_BYTES));
    for (uint32_t i = 0; i < n; i++) {
        struct sl_conn *c = &tcp->conns[i];
        c->fd = -1;
        c->rx = buffers;
        buffers += sl_align_up(SL_TCP_RX_BYTES, SL_PLAN_ALIGN);
        c->tx = buffers;
        buffers += SL_TCP_TX_BYTES;
        tcp->conn_free[i] = n - 1 - i; /* pop order: 0, 1, 2, ... */
    }
    tcp->conn_free_count = n;
    struct sl_commit_producer producer = {.deliver = tcp_deliver, .flush = tcp_flush_touched, .ctx = tcp};
    tcp->producer = sl_commit_add_producer(commit, &producer);
}

/* ---- live settings ---- */

static int64_t idle_timeout_ns(const struct sl_tcp *tcp)
{
    const struct sl_live *l = tcp->config.live;
    return (int64_t)(l ? sl_live_get(&l->tcp_idle_timeout_ms) : tcp->config.idle_timeout_ms) * 1000000;
}

static int64_t frame_timeout_ns(const struct sl_tcp *tcp)
{
    const struct sl_live *l = tcp->config.live;
    return (int64_t)(l ? sl_live_get(&l->tcp_frame_timeout_ms) : tcp->config.frame_timeout_ms) * 1000000;
}

static uint32_t per_ip_max(const struct sl_tcp *tcp)
{
    const struct sl_live *l = tcp->config.live;
    return l ? sl_live_get(&l->tcp_connections_per_ip_max) : tcp->config.per_ip_max;
}

/* ---- connections ---- */

static void conn_set_events(struct sl_tcp *tcp, uint32_t index, uint32_t events)
{
    struct sl_conn *c = &tcp->conns[index];
    if (c->events == events) {
        return;
    }
    struct epoll_event ev = {.events = events, .data.u64 = SL_TAG_CONN + index};
    epoll_ctl(tcp->epoll_fd, EPOLL_CTL_MOD, c->fd, &ev);
    c->events = events;
}

static void conn_close(struct sl_tcp *tcp, uint32_t index)
{
    struct sl_conn *c = &tcp->conns[index];
    SL_ASSERT(c->state != CONN_FREE);
    close(c->fd); /* also removes it from the epoll set */
    sl_peers_release(&tcp->peers, c->ip);
    c->fd = -1;
    c->state = CONN_FREE;
    c->rx_len = c->tx_head = c->tx_len = 0;
    c->frame_started_ns = 0;
    c->acks_reserved = 0; /* `touched` stays: the index may still be listed, the flush skips it */
    c->generation++;
    SL_ASSERT(tcp->conn_free_count < tcp->config.connections_max);
    tcp->conn_free[tcp->conn_free_count++] = index;
    uint32_t open = atomic_load_explicit(&tcp->counters->tcp_connections, memory_order_relaxed);
    atomic_store_explicit(&tcp->counters->tcp_connections, open - 1, memory_order_relaxed);
}

/*
 * How long a connection has given us nothing to do: since the first byte
 * of its incomplete frame, or since its last byte in or out (a peer that
 * leaves its acks unread counts as idle). -1 for one we must not evict: it
 * waits for answers still in our pipeline, or has an error ack to get.
 */
static int64_t conn_idle_ns(const struct sl_conn *c, int64_t now_ns)
{
    if (c->state == CONN_FAILING || c->acks_reserved > 0) {
        return -1;
    }
    if (c->state == CONN_DRAINING) {
        return INT64_MAX; /* leaving anyway */
    }
    int64_t since = c->frame_started_ns != 0 ? c->frame_started_ns : c->last_activity_ns;
    return now_ns - since;
}

/* The connection idle or incomplete longest, of all or of one address; UINT32_MAX when none may go. */
static uint32_t evict_candidate(const struct sl_tcp *tcp, int64_t now_ns, const uint8_t *ip, int64_t *idle_out)
{
    uint32_t victim = UINT32_MAX;
    int64_t longest = -1;
    for (uint32_t i = 0; i < tcp->config.connections_max; i++) {
        const struct sl_conn *c = &tcp->conns[i];
        if (c->state == CONN_FREE || (ip != NULL && memcmp(c->ip, ip, 16) != 0)) {
            continue;
        }
        int64_t idle = conn_idle_ns(c, now_ns);
        if (idle > longest) {
            longest = idle;
            victim = i;
        }
    }
    *idle_out = longest;
    return victim;
}

/*
 * Make room: close the connection idle or incomplete longest, of all (a
 * full table) or of one address (`ip`, at its cap). A candidate whose
 * input already waits in its socket is not idle, only not served yet this
 * tick (a burst of newcomers): it counts as active now, and the next one
 * is tried, a bounded number of times. false when none may go.
 */
#define SL_TCP_EVICT_TRIES 8u

static bool evict_one(struct sl_tcp *tcp, int64_t now_ns, const uint8_t *ip)
{
    uint32_t victim = UINT32_MAX;
    int64_t longest = -1;
    for (uint32_t tries = 0; tries < SL_TCP_EVICT_TRIES; tries++) {
        victim = evict_candidate(tcp, now_ns, ip, &longest);
        int waiting = 0;
        if (victim == UINT32_MAX || tcp->conns[victim].state == CONN_DRAINING ||
            ioctl(tcp->conns[victim].fd, FIONREAD, &waiting) != 0 || waiting == 0) {
            break;
        }
        tcp->conns[victim].last_activity_ns = now_ns;
        if (tcp->conns[victim].frame_started_ns != 0) {
            tcp->conns[victim].frame_started_ns = now_ns;
        }
        victim = UINT32_MAX;
    }
    if (victim == UINT32_MAX) {
        return false;
    }
    struct sl_conn *c = &tcp->conns[victim];
    char peer[64];
    sl_peer_text(c->ip, c->port, peer);
    bool incomplete = c->frame_started_ns != 0;
    sl_counter_add(incomplete ? &tcp->counters->tcp_evicted_incomplete : &tcp->counters->tcp_evicted_idle, 1);
    if (c->state != CONN_DRAINING) {
        sl_say_limited(&say_evicted, SL_SAY_WARN, "tcp", "%s: evicted %s, %s for %.1f s",
                       ip != NULL ? "its address at --max-tcp-connections-per-ip" : "connection table full",
                       peer, incomplete ? "its frame incomplete" : "idle", (double)longest / 1e9);
    }
    conn_close(tcp, victim);
    return true;
}

static void accept_pause(struct sl_tcp *tcp, int e)
{
    sl_counter_add(&tcp->counters->tcp_accept_backoffs, 1);
    sl_say_limited(&say_backoff, SL_SAY_WARN, "tcp",
                   "accept: %s: pausing new connections for %lld ms (raise the descriptor limit, "
                   "ulimit -n, or lower --max-tcp-connections)",
                   strerror(e), SL_TCP_ACCEPT_BACKOFF_NS / 1000000);
    struct epoll_event ev = {.events = 0, .data.u64 = SL_TAG_LISTEN};
    epoll_ctl(tcp->epoll_fd, EPOLL_CTL_MOD, tcp->listen_fd, &ev);
    tcp->accept_paused = true;
    tcp->accept_resume_ns = sl_clock_monotonic_ns() + SL_TCP_ACCEPT_BACKOFF_NS;
}

void sl_tcp_tick(struct sl_tcp *tcp, int64_t now_ns)
{
    if (tcp->accept_paused && now_ns >= tcp->accept_resume_ns) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = SL_TAG_LISTEN};
        epoll_ctl(tcp->epoll_fd, EPOLL_CTL_MOD, tcp->listen_fd, &ev);
        tcp->accept_paused = false;
    }
}

/*
 * Take a newcomer into the table, or refuse it (counted). An address at its
 * cap makes room from its own connections (the one idle or incomplete
 * longest), so one address can never take more, and a busy one still
 * renews its idle connections; a full table makes room from all.
 */
static void conn_admit(struct sl_tcp *tcp, int fd, const struct sockaddr_storage *ss)
{
    uint8_t ip[16];
    uint16_t port;
    sl_peer_of(ss, ip, &port);
    struct sl_peer_count *a = sl_peers_find(&tcp->peers, ip);
    char peer[64];
    int64_t now_ns = sl_clock_monotonic_ns();
    if (a->count >= per_ip_max(tcp) && !(a->count == per_ip_max(tcp) && evict_one(tcp, now_ns, ip))) {
        close(fd);
        sl_counter_add(&tcp->counters->tcp_refused_per_ip, 1);
        sl_peer_text(ip, port, peer);
        sl_say_limited(&say_refused, SL_SAY_WARN, "tcp",
                       "refused %s: its address holds %u connections (--max-tcp-connections-per-ip), "
                       "each waiting for acks",
                       peer, a->count);
        return;
    }
    if (tcp->conn_free_count == 0 && !evict_one(tcp, now_ns, NULL)) {
        close(fd);
        sl_counter_add(&tcp->counters->tcp_connections_refused, 1);
        sl_peer_text(ip, port, peer);
        sl_say_limited(&say_refused, SL_SAY_WARN, "tcp",
                       "refused %s: every connection of the full table waits for acks", peer);
        return;
    }
    a = sl_peers_find(&tcp->peers, ip); /* the eviction may have moved entries */
    memcpy(a->ip, ip, 16);
    a->count++;
    uint32_t index = tcp->conn_free[--tcp->conn_free_count];
    struct sl_conn *c = &tcp->conns[index];
    SL_ASSERT(c->state == CONN_FREE);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->state = CONN_OPEN;
    c->acks_reserved = 0;
    c->events = EPOLLIN | EPOLLRDHUP;
    c->last_activity_ns = now_ns;
    c->frame_started_ns = 0;
    memcpy(c->ip, ip, 16);
    c->port = port;
    uint32_t open = atomic_load_explicit(&tcp->counters->tcp_connections, memory_order_relaxed);
    atomic_store_explicit(&tcp->counters->tcp_connections, open + 1, memory_order_relaxed);
    struct epoll_event ev = {.events = c->events, .data.u64 = SL_TAG_CONN + index};
    if (epoll_ctl(tcp->epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        conn_close(tcp, index);
        return;
    }
    sl_counter_add(&tcp->counters->tcp_connections_accepted, 1);
}

void sl_tcp_accept(struct sl_tcp *tcp)
{
    for (uint32_t k = 0; k < SL_TCP_ACCEPTS_PER_TICK; k++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = accept4(tcp->listen_fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
                accept_pause(tcp, e); /* the listener stays ready: do not spin on it */
            }
            return; /* EAGAIN, or a transient error (ECONNABORTED): next tick */
        }
        conn_admit(tcp, fd, &ss);
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

/* Room for one more ack beyond those queued and those reserved for batches in the pipeline. */
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
static void conn_reject(struct sl_tcp *tcp, uint32_t index, const uint8_t *frame, int rc)
{
    struct sl_conn *c = &tcp->conns[index];
    enum sl_status status = sl_decode_status(rc);
    sl_counter_add(&tcp->counters->decode_errors[SL_TRANSPORT_TCP][-rc], 1);
    sl_counter_add(&tcp->counters->batches[SL_TRANSPORT_TCP][status], 1);
    sl_counter_add(&tcp->counters->tcp_connections_closed_on_error, 1);
    struct sl_intent in = {.kind = SL_INTENT_REJECT, .status = (uint8_t)status, .ack = 1,
                           .producer = tcp->producer, .tag = index, .tag_gen = c->generation,
                           .stream_id = sl_load_u32(frame + SL_BATCH_OFF_STREAM_ID),
                           .batch_seq = sl_load_u64(frame + SL_BATCH_OFF_BATCH_SEQ)};
    c->state = CONN_FAILING;
    c->rx_len = 0;
    c->frame_started_ns = 0;
    c->acks_reserved++; /* may exceed the queue: an error ack is dropped, not blocked, if full */
    conn_set_events(tcp, index, 0);
    sl_commit_add_intent(tcp->commit, &in);
}

/* Shut the write side after the error ack, and drain until the peer leaves. */
static void conn_start_draining(struct sl_tcp *tcp, uint32_t index)
{
    struct sl_conn *c = &tcp->conns[index];
    if (conn_flush(c) != 0) {
        conn_close(tcp, index);
        return;
    }
    shutdown(c->fd, SHUT_WR);
    c->state = CONN_DRAINING;
    c->last_activity_ns = sl_clock_monotonic_ns();
    conn_set_events(tcp, index, EPOLLIN | EPOLLRDHUP);
}

/* Handle one whole, validated frame: dedup, then log it (or answer at once). */
static void conn_batch(struct sl_tcp *tcp, uint32_t index, const struct sl_batch *batch, int64_t now_us)
{
    struct sl_conn *c = &tcp->conns[index];
    const struct sl_batch_header *h = &batch->header;
    uint32_t generation = c->generation;
    sl_commit_make_room(tcp->commit, h->count); /* a commit now, not between admitting and logging */
    if (c->generation != generation) {
        return; /* that commit's flush found the peer gone and closed it: nothing to answer */
    }
    struct sl_intent in = {.producer = tcp->producer, .tag = index, .tag_gen = c->generation,
                           .stream_id = h->stream_id, .batch_seq = h->batch_seq,
                           .ack = (h->flags & SL_FLAG_ACK_REQUESTED) != 0};
    struct sl_stream_slot *slot = NULL;
    int admit = sl_streams_admit(tcp->streams, h->stream_id, h->batch_seq, &slot);
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
        if (sl_commit_log_batch(tcp->commit, batch, SL_LOG_TCP, now_us, &in) == 0) {
            return;
        }
        if (in.ack) {
            c->acks_reserved--;
        }
        sl_commit_stream_failed(slot, in.prev_seq, in.prev_has_seq, h->batch_seq);
        in.slot = NULL;
        in.status = SL_STATUS_OVERLOADED;
    } else if (admit == 1) {
        in.status = SL_STATUS_DUPLICATE;
    } else {
        in.status = SL_STATUS_OVERLOADED;
        sl_counter_add(&tcp->counters->streams_table_full, 1);
    }
    in.kind = SL_INTENT_STATUS;
    if (in.ack) {
        c->acks_reserved++;
    }
    sl_commit_add_intent(tcp->commit, &in);
}

/*
 * Open: read, and write when acks wait. Paused: wake when writable, to drain
 * and resume, while acks are queued or the queue has room again. A paused
 * connection with an empty queue but no room waits on acks reserved for a
 * group the apply thread has not finished: it waits for nothing (its socket
 * would be writable at once, and the loop would spin until then); that
 * group's delivery touches it, and the flush asks again. Closing: only to
 * write what is queued.
 */
static uint32_t conn_want(const struct sl_conn *c)
{
    bool pending = c->tx_len > c->tx_head;
    if (c->state == CONN_PAUSED) {
        uint64_t room_after_compaction = SL_TCP_TX_BYTES - (c->tx_len - c->tx_head);
        bool room = (uint64_t)(c->acks_reserved + 1) * SL_ACK_BYTES <= room_after_compaction;
        return pending || room ? EPOLLOUT : 0;
    }
    if (c->state == CONN_CLOSING) {
        return pending ? EPOLLOUT : 0;
    }
    return EPOLLIN | EPOLLRDHUP | (pending ? EPOLLOUT : 0);
}

/* Closing: once every answer the peer is owed is written, close. */
static void conn_closing_progress(struct sl_tcp *tcp, uint32_t index)
{
    struct sl_conn *c = &tcp->conns[index];
    if (conn_flush(c) != 0 || (c->acks_reserved == 0 && c->tx_len == c->tx_head)) {
        conn_close(tcp, index);
        return;
    }
    conn_set_events(tcp, index, conn_want(c));
}

static void tcp_deliver(void *ctx, const struct sl_intent *in, enum sl_status status,
                        const struct sl_apply_result *result)
{
    struct sl_tcp *tcp = ctx;
    sl_counter_add(&tcp->counters->batches[SL_TRANSPORT_TCP][status], in->kind == SL_INTENT_REJECT ? 0 : 1);
    struct sl_conn *c = &tcp->conns[in->tag];
    if (c->state == CONN_FREE || c->generation != in->tag_gen) {
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
            SL_ASSERT(tcp->conn_touched_count < tcp->config.connections_max);
            tcp->conn_touched[tcp->conn_touched_count++] = in->tag;
        }
    }
    if (in->kind == SL_INTENT_REJECT) {
        conn_start_draining(tcp, in->tag);
    }
}

/* After a delivery pass: write the acks queued on every touched connection. */
static void tcp_flush_touched(void *ctx)
{
    struct sl_tcp *tcp = ctx;
    uint32_t count = tcp->conn_touched_count;
    tcp->conn_touched_count = 0;
    for (uint32_t k = 0; k < count; k++) {
        uint32_t i = tcp->conn_touched[k];
        struct sl_conn *c = &tcp->conns[i];
        SL_ASSERT(c->touched);
        c->touched = false;
        if (c->state == CONN_CLOSING) {
            conn_closing_progress(tcp, i);
            continue;
        }
        if (c->state != CONN_OPEN && c->state != CONN_PAUSED) {
            continue;
        }
        uint32_t pending_before = c->tx_len - c->tx_head;
        if (conn_flush(c) != 0) {
            sl_counter_add(&tcp->counters->tcp_connections_closed_on_error, 1);
            conn_close(tcp, i);
            continue;
        }
        if (c->tx_len - c->tx_head < pending_before) {
            c->last_activity_ns = sl_clock_monotonic_ns();
        }
        conn_set_events(tcp, i, conn_want(c));
    }
}

/*
 * Handle every whole frame in the receive buffer. Returns -1 when the
 * connection was rejected or closed, 1 when it paused on a full ack queue.
 */
static int conn_process(struct sl_tcp *tcp, uint32_t index)
{
    struct sl_conn *c = &tcp->conns[index];
    uint32_t pos = 0;
    int rc = 0;
    int64_t now_us = sl_clock_realtime_us();
    uint32_t generation = c->generation;
    while (c->rx_len - pos >= SL_BATCH_HEADER_BYTES) {
        const uint8_t *frame = c->rx + pos;
        struct sl_batch_header h;
        int hrc = sl_batch_header_decode(frame, c->rx_len - pos, &h);
        if (hrc < 0) {
            conn_reject(tcp, index, frame, hrc);
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
            conn_reject(tcp, index, frame, drc);
            return -1;
        }
        conn_batch(tcp, index, &batch, now_us);
        if (c->generation != generation) {
            return -1; /* closed under us by a commit's flush (the peer reset): stop here */
        }
        pos += frame_bytes;
    }
    if (pos > 0) {
        memmove(c->rx, c->rx + pos, c->rx_len - pos);
        c->rx_len -= pos;
        /* What is left began arriving no earlier than this read. */
        c->frame_started_ns = c->rx_len > 0 ? sl_clock_monotonic_ns() : 0;
    }
    return rc;
}

/* The peer shut its write side: close now, or once the answers it is owed are out. */
static void conn_peer_done(struct sl_tcp *tcp, uint32_t index)
{
    struct sl_conn *c = &tcp->conns[index];
    if (c->acks_reserved == 0) {
        conn_flush(c); /* acks for frames handled earlier, best effort */
        conn_close(tcp, index);
        return;
    }
    c->state = CONN_CLOSING;
    c->rx_len = 0;
    c->frame_started_ns = 0;
    c->last_activity_ns = sl_clock_monotonic_ns();
    conn_closing_progress(tcp, index);
}

/* Serve one connection: read once, handle frames, write acks, set interest. */
static void conn_serve(struct sl_tcp *tcp, uint32_t index, uint32_t events)
{
    struct sl_conn *c = &tcp->conns[index];
    if (c->tx_len > c->tx_head && conn_flush(c) != 0) { /* make room first */
        sl_counter_add(&tcp->counters->tcp_connections_closed_on_error, 1);
        conn_close(tcp, index);
        return;
    }
    if (c->state == CONN_OPEN && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
        ssize_t n = recv(c->fd, c->rx + c->rx_len, SL_TCP_RX_BYTES - c->rx_len, MSG_DONTWAIT);
        if (n == 0) {
            conn_peer_done(tcp, index);
            return;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            sl_counter_add(&tcp->counters->tcp_connections_closed_on_error, 1);
            conn_close(tcp, index);
            return;
        }
        if (n > 0) {
            int64_t now_ns = sl_clock_monotonic_ns();
            sl_counter_add(&tcp->counters->tcp_bytes, (uint64_t)n);
            if (c->rx_len == 0) {
                c->frame_started_ns = now_ns; /* the first byte of a frame */
            }
            c->rx_len += (uint32_t)n;
            c->last_activity_ns = now_ns;
        }
    }
    int rc = conn_process(tcp, index);
    if (rc < 0) {
        return;
    }
    uint32_t pending_before = c->tx_len - c->tx_head;
    if (conn_flush(c) != 0) {
        sl_counter_add(&tcp->counters->tcp_connections_closed_on_error, 1);
        conn_close(tcp, index);
        return;
    }
    if (c->tx_len - c->tx_head < pending_before) {
        c->last_activity_ns = sl_clock_monotonic_ns();
    }
    if (rc == 1 && c->state != CONN_PAUSED) {
        sl_counter_add(&tcp->counters->tcp_pauses, 1);
    }
    if (rc != 1 && c->state == CONN_PAUSED && c->rx_len > 0) {
        /* Resumed: the time it waited for its acks to drain is held against its idle time, not its frame. */
        c->frame_started_ns = sl_clock_monotonic_ns();
    }
    c->state = rc == 1 ? CONN_PAUSED : CONN_OPEN;
    conn_set_events(tcp, index, conn_want(c));
}

static void conn_drain_input(struct sl_tcp *tcp, uint32_t index)
{
    struct sl_conn *c = &tcp->conns[index];
    uint8_t sink[4096];
    ssize_t n = recv(c->fd, sink, sizeof sink, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        conn_close(tcp, index);
    }
}

void sl_tcp_event(struct sl_tcp *tcp, uint32_t index, uint32_t events)
{
    SL_ASSERT(index < tcp->config.connections_max);
    struct sl_conn *c = &tcp->conns[index];
    switch (c->state) {
    case CONN_FREE:
        return; /* closed earlier in this tick */
    case CONN_DRAINING:
        conn_drain_input(tcp, index);
        return;
    case CONN_FAILING:
        return; /* its error ack goes out at the delivery of its group */
    case CONN_CLOSING:
        conn_closing_progress(tcp, index);
        return;
    default:
        conn_serve(tcp, index, events);
    }
}

void sl_tcp_excuse(struct sl_tcp *tcp, int64_t ns, int64_t now_ns)
{
    for (uint32_t i = 0; i < tcp->config.connections_max; i++) {
        struct sl_conn *c = &tcp->conns[i];
        if (c->state == CONN_FREE) {
            continue;
        }
        int64_t later = c->last_activity_ns + ns;
        c->last_activity_ns = later < now_ns ? later : now_ns;
        if (c->frame_started_ns != 0) {
            later = c->frame_started_ns + ns;
            c->frame_started_ns = later < now_ns ? later : now_ns;
        }
    }
}

void sl_tcp_sweep(struct sl_tcp *tcp, int64_t now_ns)
{
    int64_t idle_ns = idle_timeout_ns(tcp), frame_ns = frame_timeout_ns(tcp);
    for (uint32_t i = 0; i < tcp->config.connections_max; i++) {
        struct sl_conn *c = &tcp->conns[i];
        if (c->state == CONN_FREE || c->state == CONN_FAILING) {
            continue;
        }
        char peer[64];
        if (c->state == CONN_DRAINING) {
            if (now_ns - c->last_activity_ns > SL_TCP_LINGER_NS) {
                conn_close(tcp, i);
            }
        } else if (c->state == CONN_OPEN && c->frame_started_ns != 0 &&
                   now_ns - c->frame_started_ns > frame_ns) {
            sl_counter_add(&tcp->counters->tcp_frame_timeouts, 1);
            sl_peer_text(c->ip, c->port, peer);
            sl_say_limited(&say_timeout, SL_SAY_INFO, "tcp",
                           "closed %s: a frame incomplete for %.1f s (--tcp-frame-timeout), %u bytes of it",
                           peer, (double)(now_ns - c->frame_started_ns) / 1e9, c->rx_len);
            conn_close(tcp, i);
        } else if (c->acks_reserved == 0 && now_ns - c->last_activity_ns > idle_ns) {
            sl_counter_add(&tcp->counters->tcp_connections_timed_out, 1);
            sl_peer_text(c->ip, c->port, peer);
            sl_say_limited(&say_timeout, SL_SAY_INFO, "tcp", "closed %s: idle for %.1f s (--tcp-idle-timeout)",
                           peer, (double)(now_ns - c->last_activity_ns) / 1e9);
            conn_close(tcp, i);
        }
    }
}

void sl_tcp_drain_all(struct sl_tcp *tcp)
{
    int64_t deadline = sl_clock_monotonic_ns() + SL_TCP_DRAIN_NS;
    for (uint32_t i = 0; i < tcp->config.connections_max; i++) {
        struct sl_conn *c = &tcp->conns[i];
        if (c->state == CONN_OPEN || c->state == CONN_PAUSED) {
            /* What the peer already sent and the kernel holds: one last read. */
            conn_serve(tcp, i, EPOLLIN);
        }
    }
    sl_commit_settle(tcp->commit); /* log, apply and answer what was just read */
    for (uint32_t i = 0; i < tcp->config.connections_max; i++) {
        struct sl_conn *c = &tcp->conns[i];
        while (c->state != CONN_FREE && c->tx_len > c->tx_head && sl_clock_monotonic_ns() < deadline) {
            if (conn_flush(c) != 0) {
                break;
            }
            if (c->tx_len > c->tx_head) {
                usleep(1000);
            }
        }
        if (c->state != CONN_FREE) {
            conn_close(tcp, i);
        }
    }
}
