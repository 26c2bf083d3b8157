/*
 * libsluice: one sender of the native protocol (include/sluice/client.h).
 *
 * Memory. sl_client_open takes one block: the client, `window + 1` frame
 * buffers of `stride` bytes (the frame being filled plus up to `window` cut
 * frames), their slot records, and for UDP one mmsghdr and iovec per frame.
 * Nothing else is allocated until close.
 *
 * The frame ring. Slots [tail, tail + pending) hold cut frames in batch_seq
 * order; the slot after them is the frame being filled (open_count
 * readings, base time open_base). A TCP frame stays in its slot until an OK
 * or DUPLICATE ack (a slot acked out of turn is marked done and retired when
 * it reaches the tail); a UDP frame until it was handed to the kernel.
 *
 * TCP cursors, as positions counted from the tail: frames before `wpos` were
 * written whole on the current connection (woff bytes of frame wpos are
 * written too); frames in [apos, wpos) await their ack, which arrives in
 * that order. The writer skips done slots and so does the ack matcher, so
 * both walk the same sequence. After OVERLOADED the writer stops (finishing
 * a frame it is half-way through), the acks of what was written still come
 * back (the gateway answers every later batch of the stream OVERLOADED until
 * the refused one is applied, PROTOCOL.md), and once none is outstanding and
 * the backoff has passed, both cursors go back to 0: everything not acked is
 * written again, oldest first, each under its own batch_seq. A lost
 * connection does the same after the backoff, on a new socket.
 *
 * Waiting. Every blocking call is the same loop: service (read, write,
 * connect, timers), test its condition, poll the one socket until the
 * nearest of its readiness, the client's next timer and the call's deadline.
 */
#include "sluice/client.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <netinet/udp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "sluice/protocol.h"
#include "core/crc32c.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

#define CLIENT_ALIGN 64u
#define CLIENT_IOV_MAX 256u         /* frames per TCP sendmsg */
#define CLIENT_ACK_BUFFER_ACKS 64u  /* acks read per read call */
#define CLIENT_READS_PER_SERVICE 16u
#define CLIENT_GSO_SEGMENTS_MAX 64u /* UDP_MAX_SEGMENTS of older kernels */
#define CLIENT_ENOBUFS_PAUSE_NS 1000000ll
#define CLIENT_HOST_MAX 256u
#define NS_PER_MS 1000000ll

enum conn_state {
    CONN_DOWN,       /* no socket; connect at resume_ns once there is something to write */
    CONN_CONNECTING, /* non-blocking connect under way, until connect_deadline_ns */
    CONN_UP,
    CONN_FINISHING,  /* write side shut (sl_client_finish): reading until the gateway's EOF */
    CONN_CLOSED,     /* finished: nothing more is sent */
};

struct slot {
    uint64_t seq;
    int64_t written_ns; /* when the write that completed the frame started */
    uint32_t bytes;
    uint32_t count;
    bool done;    /* acked OK or DUPLICATE, waiting to reach the tail */
    bool written; /* written whole at least once: a later write is a resend */
};

struct sl_client {
    struct sl_client_options opt; /* with the defaults filled in */
    bool tcp;
    bool ack; /* TCP and not SL_CLIENT_NO_ACK */
    struct sockaddr_storage addr;
    socklen_t addr_bytes;

    int fd;
    enum conn_state state;
    bool readable;  /* readiness seen, not yet read to EAGAIN */
    bool writable;  /* no EAGAIN since the last POLLOUT */
    bool connected_once;
    int64_t resume_ns;           /* DOWN: connect no sooner; UP: write no sooner (backoff) */
    int64_t connect_deadline_ns; /* CONNECTING */
    int64_t finish_deadline_ns;
    uint32_t backoff_attempt;
    uint64_t rng;
    int last_error;
    int fatal; /* sticky: every later call returns it */

    /* The ring of frames. */
    uint32_t cap;          /* window + 1 slots */
    uint32_t stride;       /* bytes per frame buffer */
    uint32_t readings_max; /* readings per frame, from batch and frame size */
    uint8_t *frames;
    struct slot *slots;
    uint32_t tail;
    uint32_t pending;
    uint32_t open_count;
    int64_t open_base;
    uint64_t next_seq;

    /* TCP cursors, positions from the tail. */
    uint32_t wpos;
    uint32_t woff;
    uint32_t apos;
    bool rewind; /* OVERLOADED: stop writing, rewind when the written frames are answered */

    uint32_t ack_bytes;
    uint8_t ack_buffer[SL_ACK_BYTES * CLIENT_ACK_BUFFER_ACKS];

    /* UDP. */
    struct mmsghdr *msgs;
    struct iovec *iovs;
    uint32_t gso_frames; /* frames per message: 1, or more with UDP GSO */

    struct sl_client_counts counts;
};

/* ---------------------------------------------------------------- small helpers */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t realtime_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t next_random(struct sl_client *c)
{
    c->rng ^= c->rng << 13;
    c->rng ^= c->rng >> 7;
    c->rng ^= c->rng << 17;
    return c->rng;
}

static struct slot *slot_at(struct sl_client *c, uint32_t position)
{
    return &c->slots[(c->tail + position) % c->cap];
}

static uint8_t *frame_at(struct sl_client *c, uint32_t position)
{
    return c->frames + (size_t)((c->tail + position) % c->cap) * c->stride;
}

static bool has_work(const struct sl_client *c)
{
    return c->pending > 0;
}

/* Capped exponential backoff with jitter: a delay in [d/2, d], d = min(max, min x 2^attempt). */
static int64_t backoff_ns(struct sl_client *c)
{
    int64_t delay = (int64_t)c->opt.backoff_min_ms * NS_PER_MS;
    int64_t cap = (int64_t)c->opt.backoff_max_ms * NS_PER_MS;
    for (uint32_t i = 0; i < c->backoff_attempt && delay < cap; i++) {
        delay *= 2;
    }
    if (delay > cap) {
        delay = cap;
    }
    if (c->backoff_attempt < 64) {
        c->backoff_attempt++;
    }
    int64_t half = delay / 2;
    return half + (half > 0 ? (int64_t)(next_random(c) % (uint64_t)(half + 1)) : 0);
}

/* ---------------------------------------------------------------- options and target */

void sl_client_options_init(struct sl_client_options *o)
{
    memset(o, 0, sizeof *o);
}

struct target {
    bool tcp;
    char host[CLIENT_HOST_MAX];
    char port[8];
};

static int parse_target(const char *text, struct target *out)
{
    if (text == NULL) {
        return SL_CLIENT_ETARGET;
    }
    const char *rest;
    if (strncmp(text, "tcp://", 6) == 0) {
        out->tcp = true;
    } else if (strncmp(text, "udp://", 6) == 0) {
        out->tcp = false;
    } else {
        return SL_CLIENT_ETARGET;
    }
    rest = text + 6;
    const char *colon;
    const char *host = rest;
    size_t host_len;
    if (rest[0] == '[') {
        const char *close = strchr(rest, ']');
        if (close == NULL || close[1] != ':') {
            return SL_CLIENT_ETARGET;
        }
        host = rest + 1;
        host_len = (size_t)(close - host);
        colon = close + 1;
    } else {
        colon = strrchr(rest, ':');
        if (colon == NULL || memchr(rest, ':', (size_t)(colon - rest)) != NULL) {
            return SL_CLIENT_ETARGET;
        }
        host_len = (size_t)(colon - rest);
    }
    const char *port = colon + 1;
    size_t port_len = strlen(port);
    if (host_len == 0 || host_len >= sizeof out->host || port_len == 0 || port_len > 5) {
        return SL_CLIENT_ETARGET;
    }
    unsigned long value = 0;
    for (size_t i = 0; i < port_len; i++) {
        if (port[i] < '0' || port[i] > '9') {
            return SL_CLIENT_ETARGET;
        }
        value = value * 10 + (unsigned long)(port[i] - '0');
    }
    if (value == 0 || value > 65535) {
        return SL_CLIENT_ETARGET;
    }
    memcpy(out->host, host, host_len);
    out->host[host_len] = '\0';
    snprintf(out->port, sizeof out->port, "%lu", value);
    return 0;
}

/* Fill the defaults and check the limits. */
static int resolve_options(const struct sl_client_options *in, bool tcp,
                           struct sl_client_options *o)
{
    if (in == NULL) {
        return -EINVAL;
    }
    *o = *in;
    if (o->flags & ~(SL_CLIENT_NONBLOCK | SL_CLIENT_NO_ACK | SL_CLIENT_NO_GSO)) {
        return -EINVAL;
    }
    if (o->batch_readings == 0) {
        o->batch_readings = SL_CLIENT_BATCH_DEFAULT;
    }
    if (o->frame_bytes_max == 0) {
        o->frame_bytes_max = tcp ? SL_BATCH_BYTES(SL_CLIENT_BATCH_MAX) : SL_CLIENT_UDP_FRAME_DEFAULT;
    }
    if (o->window == 0) {
        o->window = tcp ? SL_CLIENT_WINDOW_DEFAULT : 1;
    }
    if (o->block_timeout_ms == 0) {
        o->block_timeout_ms = SL_CLIENT_BLOCK_DEFAULT_MS;
    }
    if (o->connect_timeout_ms == 0) {
        o->connect_timeout_ms = SL_CLIENT_CONNECT_DEFAULT_MS;
    }
    if (o->ack_timeout_ms == 0) {
        o->ack_timeout_ms = SL_CLIENT_ACK_DEFAULT_MS;
    }
    if (o->backoff_min_ms == 0) {
        o->backoff_min_ms = SL_CLIENT_BACKOFF_MIN_DEFAULT_MS;
    }
    if (o->backoff_max_ms == 0) {
        o->backoff_max_ms = SL_CLIENT_BACKOFF_MAX_DEFAULT_MS;
    }
    uint32_t frame_cap = tcp ? SL_BATCH_BYTES_MAX : SL_CLIENT_UDP_FRAME_MAX;
    if (o->batch_readings > SL_CLIENT_BATCH_MAX || o->frame_bytes_max < SL_BATCH_BYTES(1) ||
        o->frame_bytes_max > frame_cap || o->window > SL_CLIENT_WINDOW_MAX ||
        (o->block_timeout_ms < 0 && o->block_timeout_ms != SL_CLIENT_FOREVER) ||
        (o->block_timeout_ms > 0 && (uint32_t)o->block_timeout_ms > SL_CLIENT_TIMEOUT_MAX_MS) ||
        o->connect_timeout_ms > SL_CLIENT_TIMEOUT_MAX_MS ||
        o->ack_timeout_ms > SL_CLIENT_TIMEOUT_MAX_MS ||
        o->backoff_max_ms > SL_CLIENT_TIMEOUT_MAX_MS || o->backoff_min_ms > o->backoff_max_ms ||
        o->socket_buffer_bytes > (1u << 30)) {
        return -EINVAL;
    }
    return 0;
}

struct layout {
    uint32_t readings_max;
    uint32_t stride;
    uint32_t cap;
    size_t slots_at, msgs_at, iovs_at, frames_at, total;
};

static size_t align_up(size_t n)
{
    return (n + CLIENT_ALIGN - 1) & ~(size_t)(CLIENT_ALIGN - 1);
}

static int plan_layout(const struct sl_client_options *o, bool tcp, struct layout *l)
{
    uint32_t by_size = (o->frame_bytes_max - SL_BATCH_HEADER_BYTES - SL_CRC_BYTES) / SL_READING_BYTES;
    l->readings_max = o->batch_readings < by_size ? o->batch_readings : by_size;
    l->stride = (uint32_t)align_up(SL_BATCH_BYTES(l->readings_max));
    l->cap = o->window + 1;
    size_t at = align_up(sizeof(struct sl_client));
    l->slots_at = at;
    at = align_up(at + sizeof(struct slot) * l->cap);
    l->msgs_at = at;
    if (!tcp) {
        at = align_up(at + sizeof(struct mmsghdr) * l->cap);
    }
    l->iovs_at = at;
    if (!tcp) {
        at = align_up(at + sizeof(struct iovec) * l->cap);
    }
    l->frames_at = at;
    at += (size_t)l->stride * l->cap;
    l->total = at;
    return l->total > SL_CLIENT_MEMORY_MAX ? -ENOMEM : 0;
}

/* Target, options and memory layout, checked: what open and sl_client_memory share. */
static int plan(const char *target, const struct sl_client_options *in, struct target *t,
                struct sl_client_options *o, struct layout *l)
{
    int rc = parse_target(target, t);
    if (rc == 0) {
        rc = resolve_options(in, t->tcp, o);
    }
    if (rc == 0) {
        rc = plan_layout(o, t->tcp, l);
    }
    return rc;
}

int64_t sl_client_memory(const char *target, const struct sl_client_options *in)
{
    struct target t;
    struct sl_client_options o;
    struct layout l;
    int rc = plan(target, in, &t, &o, &l);
    return rc < 0 ? rc : (int64_t)l.total;
}

static int resolve_host(const struct target *t, struct sockaddr_storage *addr, socklen_t *bytes)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = t->tcp ? SOCK_STREAM : SOCK_DGRAM,
                             .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(t->host, t->port, &hints, &res);
    if (rc != 0 || res == NULL) {
        return SL_CLIENT_ERESOLVE;
    }
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    *bytes = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/* ---------------------------------------------------------------- connection */

static void set_error(struct sl_client *c, int err)
{
    c->last_error = err > 0 ? -err : err;
}

static void close_socket(struct sl_client *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    c->readable = false;
    c->writable = false;
    c->ack_bytes = 0;
}

/* Give up the connection; everything not acked is written again on the next one. */
static void conn_drop(struct sl_client *c, int err, int64_t now)
{
    close_socket(c);
    if (err != 0) {
        set_error(c, err);
    }
    c->state = CONN_DOWN;
    c->resume_ns = now + backoff_ns(c);
    c->wpos = 0;
    c->woff = 0;
    c->apos = 0;
    c->rewind = false;
}

static void conn_failed(struct sl_client *c, int err, int64_t now)
{
    c->counts.connect_failures++;
    conn_drop(c, err, now);
}

static void conn_up(struct sl_client *c)
{
    c->state = CONN_UP;
    c->writable = true;
    if (c->connected_once) {
        c->counts.reconnects++;
    }
    c->connected_once = true;
}

static int open_socket(struct sl_client *c)
{
    int fd = socket(c->addr.ss_family, (c->tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    0);
    if (fd < 0) {
        return -errno;
    }
    if (c->opt.socket_buffer_bytes > 0) {
        int bytes = (int)c->opt.socket_buffer_bytes;
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
    }
    if (c->tcp) {
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    c->fd = fd;
    c->counts.sockets++;
    return 0;
}

static void conn_start(struct sl_client *c, int64_t now)
{
    int rc = open_socket(c);
    if (rc < 0) {
        conn_failed(c, rc, now);
        return;
    }
    if (connect(c->fd, (const struct sockaddr *)&c->addr, c->addr_bytes) == 0) {
        conn_up(c);
        return;
    }
    int err = errno;
    if (err == EINPROGRESS || err == EINTR) {
        c->state = CONN_CONNECTING;
        c->writable = false;
        c->connect_deadline_ns = now + (int64_t)c->opt.connect_timeout_ms * NS_PER_MS;
        return;
    }
    conn_failed(c, -err, now);
}

static void conn_check_connect(struct sl_client *c, int64_t now)
{
    if (c->writable) {
        int err = 0;
        socklen_t err_bytes = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &err_bytes) != 0) {
            err = errno;
        }
        if (err == 0) {
            conn_up(c);
            return;
        }
        if (err != EINPROGRESS && err != EALREADY) {
            conn_failed(c, -err, now);
            return;
        }
        c->writable = false;
    }
    if (now >= c->connect_deadline_ns) {
        conn_failed(c, -ETIMEDOUT, now);
    }
}

/* ---------------------------------------------------------------- the ring */

static void retire_done(struct sl_client *c)
{
    while (c->pending > 0 && slot_at(c, 0)->done) {
        c->tail = (c->tail + 1) % c->cap;
        c->pending--;
        c->wpos = c->wpos > 0 ? c->wpos - 1 : 0;
        c->apos = c->apos > 0 ? c->apos - 1 : 0;
    }
}

/* Position of the first slot at or after p that is not done (pending when none). */
static uint32_t skip_done(struct sl_client *c, uint32_t p)
{
    while (p < c->pending && slot_at(c, p)->done) {
        p++;
    }
    return p;
}

/* Seal the frame being filled into the next slot. Precondition: open_count > 0, pending < window. */
static void seal(struct sl_client *c)
{
    uint32_t position = c->pending;
    uint8_t *frame = frame_at(c, position);
    uint32_t count = c->open_count;
    uint8_t flags = c->ack ? SL_FLAG_ACK_REQUESTED : 0;
    frame[0] = SL_BATCH_MAGIC_0;
    frame[1] = SL_BATCH_MAGIC_1;
    frame[2] = SL_BATCH_MAGIC_2;
    frame[3] = SL_BATCH_MAGIC_3;
    frame[SL_BATCH_OFF_VERSION] = SL_PROTOCOL_VERSION;
    frame[SL_BATCH_OFF_FLAGS] = flags;
    sl_store_u16(frame + SL_BATCH_OFF_COUNT, (uint16_t)count);
    sl_store_u32(frame + SL_BATCH_OFF_STREAM_ID, c->opt.stream_id);
    sl_store_u32(frame + SL_BATCH_OFF_KEY_ID, 0);
    sl_store_u64(frame + SL_BATCH_OFF_BATCH_SEQ, c->next_seq);
    sl_store_u64(frame + SL_BATCH_OFF_BASE_TIME, (uint64_t)c->open_base);
    uint32_t body = SL_BATCH_HEADER_BYTES + SL_READING_BYTES * count;
    sl_store_u32(frame + body, sl_crc32c(frame, body));
    *slot_at(c, position) = (struct slot){.seq = c->next_seq, .bytes = body + SL_CRC_BYTES, .count = count};
    c->next_seq++;
    c->pending++;
    c->open_count = 0;
    c->counts.batches++;
    c->counts.readings += count;
}

/* ---------------------------------------------------------------- TCP */

static void on_ack_event(struct sl_client *c, const struct slot *s, const struct sl_ack *ack,
                         int64_t now)
{
    if (c->opt.on_ack == NULL) {
        return;
    }
    struct sl_client_ack event = {.batch_seq = ack->batch_seq,
                                  .status = ack->status,
                                  .count = s != NULL ? s->count : 0,
                                  .accepted = ack->accepted,
                                  .rejected = ack->rejected,
                                  .latency_ns = s != NULL ? now - s->written_ns : 0};
    c->opt.on_ack(c->opt.context, &event);
}

static void refuse(struct sl_client *c, const struct sl_ack *ack)
{
    c->counts.refused++;
    c->counts.refused_seq = ack->batch_seq;
    c->counts.refused_status = ack->status;
    c->fatal = SL_CLIENT_EREFUSED;
    set_error(c, SL_CLIENT_EREFUSED);
    close_socket(c);
    c->state = CONN_CLOSED;
}

/* Without ACK_REQUESTED nothing waits for an ack; an answer still counts. */
static void on_unrequested_ack(struct sl_client *c, const struct sl_ack *ack, int64_t now)
{
    switch (ack->status) {
    case SL_STATUS_OK:
        c->counts.acked++;
        c->counts.accepted += ack->accepted;
        c->counts.rejected += ack->rejected;
        break;
    case SL_STATUS_DUPLICATE:
        c->counts.duplicate++;
        break;
    case SL_STATUS_OVERLOADED:
        c->counts.overloaded++;
        break;
    case SL_STATUS_BAD_CRC:
    case SL_STATUS_MALFORMED:
    case SL_STATUS_UNAUTHORIZED:
        refuse(c, ack);
        return;
    default:
        c->fatal = SL_CLIENT_EPROTOCOL;
        conn_drop(c, SL_CLIENT_EPROTOCOL, now);
        return;
    }
    on_ack_event(c, NULL, ack, now);
}

/* One ack, for the frame at apos. Returns false when the connection went away. */
static bool on_ack(struct sl_client *c, const uint8_t *bytes, int64_t now)
{
    struct sl_ack ack;
    if (sl_ack_decode(bytes, SL_ACK_BYTES, &ack) != 0) {
        conn_drop(c, SL_CLIENT_EPROTOCOL, now);
        return false;
    }
    if (!c->ack) {
        on_unrequested_ack(c, &ack, now);
        return c->state == CONN_UP || c->state == CONN_FINISHING;
    }
    c->apos = skip_done(c, c->apos);
    if (c->apos >= c->wpos || ack.stream_id != c->opt.stream_id ||
        ack.batch_seq != slot_at(c, c->apos)->seq) {
        conn_drop(c, SL_CLIENT_EPROTOCOL, now); /* an ack for nothing, or out of order */
        return false;
    }
    struct slot *s = slot_at(c, c->apos);
    switch (ack.status) {
    case SL_STATUS_OK:
    case SL_STATUS_DUPLICATE:
        if (ack.status == SL_STATUS_OK) {
            c->counts.acked++;
            c->counts.accepted += ack.accepted;
            c->counts.rejected += ack.rejected;
        } else {
            c->counts.duplicate++;
        }
        s->done = true;
        c->backoff_attempt = 0;
        on_ack_event(c, s, &ack, now);
        c->apos++;
        retire_done(c);
        return true;
    case SL_STATUS_OVERLOADED:
        c->counts.overloaded++;
        on_ack_event(c, s, &ack, now);
        c->apos++;
        if (!c->rewind) {
            c->rewind = true;
            c->resume_ns = now + backoff_ns(c);
        }
        return true;
    case SL_STATUS_BAD_CRC:
    case SL_STATUS_MALFORMED:
    case SL_STATUS_UNAUTHORIZED:
        refuse(c, &ack);
        return false;
    default:
        c->fatal = SL_CLIENT_EPROTOCOL;
        conn_drop(c, SL_CLIENT_EPROTOCOL, now);
        return false;
    }
}

static void tcp_on_eof(struct sl_client *c, int64_t now)
{
    if (c->state == CONN_FINISHING) {
        close_socket(c);
        c->state = CONN_CLOSED;
        return;
    }
    conn_drop(c, -ECONNRESET, now);
}

static void tcp_read(struct sl_client *c, int64_t now)
{
    for (uint32_t reads = 0; reads < CLIENT_READS_PER_SERVICE && c->readable; reads++) {
        size_t room = sizeof c->ack_buffer - c->ack_bytes;
        ssize_t got = recv(c->fd, c->ack_buffer + c->ack_bytes, room, MSG_DONTWAIT);
        if (got == 0) {
            tcp_on_eof(c, now);
            return;
        }
        if (got < 0) {
            int err = errno;
            if (err == EAGAIN || err == EWOULDBLOCK) {
                c->readable = false;
            } else if (err != EINTR) {
                conn_drop(c, -err, now);
                return;
            }
            continue;
        }
        c->ack_bytes += (uint32_t)got;
        uint32_t used = 0;
        while (c->ack_bytes - used >= SL_ACK_BYTES) {
            bool alive = on_ack(c, c->ack_buffer + used, now);
            used += SL_ACK_BYTES;
            if (!alive) {
                return; /* the socket and its buffer are gone */
            }
        }
        memmove(c->ack_buffer, c->ack_buffer + used, c->ack_bytes - used);
        c->ack_bytes -= used;
    }
}

/* After OVERLOADED: once nothing written is still unanswered and the backoff passed, write all again. */
static void tcp_maybe_rewind(struct sl_client *c, int64_t now)
{
    if (!c->rewind || c->woff != 0 || now < c->resume_ns) {
        return;
    }
    c->apos = skip_done(c, c->apos);
    if (c->apos < c->wpos) {
        return;
    }
    c->rewind = false;
    c->wpos = 0;
    c->apos = 0;
}

/* Frames that completed with a write of `written` bytes started at `started_ns`. */
static void tcp_advance(struct sl_client *c, size_t written, int64_t started_ns)
{
    while (written > 0) {
        struct slot *s = slot_at(c, c->wpos);
        uint32_t remaining = s->bytes - c->woff;
        if (written < remaining) {
            c->woff += (uint32_t)written;
            return;
        }
        written -= remaining;
        c->woff = 0;
        s->written_ns = started_ns;
        if (s->written) {
            c->counts.resent++;
        } else {
            c->counts.sent++;
            c->counts.sent_readings += s->count;
        }
        s->written = true;
        if (!c->ack) {
            s->done = true;
        }
        c->wpos = skip_done(c, c->wpos + 1);
    }
    if (!c->ack) {
        c->apos = c->wpos;
        retire_done(c);
    }
}

static void tcp_write(struct sl_client *c, int64_t now)
{
    for (uint32_t turn = 0; turn < 4 && c->state == CONN_UP && c->writable; turn++) {
        if (c->woff == 0) {
            if (c->rewind || now < c->resume_ns) {
                return;
            }
            c->wpos = skip_done(c, c->wpos);
        }
        struct iovec iov[CLIENT_IOV_MAX];
        uint32_t n = 0;
        size_t total = 0;
        for (uint32_t p = c->wpos; p < c->pending && n < CLIENT_IOV_MAX; p++) {
            struct slot *s = slot_at(c, p);
            if (p != c->wpos && s->done) {
                continue;
            }
            uint32_t skip = p == c->wpos ? c->woff : 0;
            iov[n].iov_base = frame_at(c, p) + skip;
            iov[n].iov_len = s->bytes - skip;
            total += iov[n].iov_len;
            n++;
            if (c->rewind) {
                break; /* only the frame half-way out */
            }
        }
        if (n == 0) {
            return;
        }
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = n};
        int64_t started_ns = now_ns(); /* before the call: on loopback an ack can beat its return */
        ssize_t written = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (written < 0) {
            int err = errno;
            if (err == EAGAIN || err == EWOULDBLOCK) {
                c->writable = false;
            } else if (err != EINTR) {
                conn_drop(c, -err, now);
            }
            return;
        }
        tcp_advance(c, (size_t)written, started_ns);
        if ((size_t)written < total) {
            c->writable = false;
        }
    }
}

/* No ack for the oldest written frame within ack_timeout_ms: reconnect and resend. */
static void tcp_check_ack_deadline(struct sl_client *c, int64_t now)
{
    if (!c->ack || c->state != CONN_UP) {
        return;
    }
    c->apos = skip_done(c, c->apos);
    if (c->apos < c->wpos &&
        now - slot_at(c, c->apos)->written_ns >= (int64_t)c->opt.ack_timeout_ms * NS_PER_MS) {
        c->counts.ack_timeouts++;
        conn_drop(c, -ETIMEDOUT, now);
    }
}

static void tcp_service(struct sl_client *c, int64_t now)
{
    if (c->state == CONN_DOWN && has_work(c) && now >= c->resume_ns) {
        conn_start(c, now);
    }
    if (c->state == CONN_CONNECTING) {
        conn_check_connect(c, now);
    }
    if (c->state == CONN_UP || c->state == CONN_FINISHING) {
        if (c->readable) {
            tcp_read(c, now);
        }
    }
    if (c->state == CONN_UP) {
        tcp_maybe_rewind(c, now);
        tcp_write(c, now);
        tcp_check_ack_deadline(c, now);
    }
}

/* ---------------------------------------------------------------- UDP */

static void udp_gso_init(struct sl_client *c)
{
    c->gso_frames = 1;
    uint32_t full = SL_BATCH_BYTES(c->readings_max);
    uint32_t frames = SL_UDP_PAYLOAD_MAX / full;
    if ((c->opt.flags & SL_CLIENT_NO_GSO) || c->opt.window < 2 || frames < 2) {
        return;
    }
    int gso_bytes = (int)full;
    if (setsockopt(c->fd, SOL_UDP, UDP_SEGMENT, &gso_bytes, sizeof gso_bytes) != 0) {
        return;
    }
    c->gso_frames = frames < CLIENT_GSO_SEGMENTS_MAX ? frames : CLIENT_GSO_SEGMENTS_MAX;
}

static void udp_gso_disable(struct sl_client *c)
{
    int off = 0;
    (void)setsockopt(c->fd, SOL_UDP, UDP_SEGMENT, &off, sizeof off);
    c->gso_frames = 1;
}

/*
 * Messages over the pending frames from position `first`: up to gso_frames
 * frames each, only whole-size frames before the last one of a message (the
 * kernel cuts at the full frame size). Returns the message count.
 */
static uint32_t udp_layout(struct sl_client *c, uint32_t first)
{
    uint32_t full = SL_BATCH_BYTES(c->readings_max);
    uint32_t m = 0;
    for (uint32_t p = first; p < c->pending; m++) {
        uint32_t n = 0;
        struct iovec *iov = &c->iovs[p];
        do {
            c->iovs[p].iov_base = frame_at(c, p);
            c->iovs[p].iov_len = slot_at(c, p)->bytes;
            n++;
            p++;
        } while (p < c->pending && n < c->gso_frames && c->iovs[p - 1].iov_len == full);
        c->msgs[m].msg_hdr = (struct msghdr){.msg_iov = iov, .msg_iovlen = n};
    }
    return m;
}

static void udp_retire(struct sl_client *c, uint32_t frames, bool sent)
{
    for (uint32_t i = 0; sent && i < frames; i++) {
        c->counts.sent++;
        c->counts.sent_readings += slot_at(c, i)->count;
    }
    c->tail = (c->tail + frames) % c->cap;
    c->pending -= frames;
}

/* Hand every pending frame to the kernel. 0, or -EAGAIN when the socket is full (frames stay). */
static int udp_send(struct sl_client *c, int64_t now)
{
    if (now < c->resume_ns) {
        return -EAGAIN;
    }
    if (c->fd < 0) {
        int rc = open_socket(c);
        if (rc == 0 && connect(c->fd, (const struct sockaddr *)&c->addr, c->addr_bytes) != 0) {
            rc = -errno;
            close_socket(c);
        }
        if (rc < 0) {
            set_error(c, rc); /* e.g. no route: try again after a backoff */
            c->resume_ns = now + backoff_ns(c);
            return rc;
        }
        c->backoff_attempt = 0;
        c->writable = true;
        udp_gso_init(c);
    }
    uint32_t refused = 0;
    while (c->pending > 0) {
        if (now < c->resume_ns) {
            return -EAGAIN;
        }
        uint32_t msgs = udp_layout(c, 0);
        int sent = sendmmsg(c->fd, c->msgs, msgs, MSG_DONTWAIT);
        if (sent > 0) {
            uint32_t frames = 0;
            for (int m = 0; m < sent; m++) {
                frames += (uint32_t)c->msgs[m].msg_hdr.msg_iovlen;
            }
            udp_retire(c, frames, true);
            c->resume_ns = 0;
            continue;
        }
        int err = errno;
        if (err == EINTR) {
            continue;
        }
        if (err == EAGAIN || err == EWOULDBLOCK) {
            c->writable = false;
            return -EAGAIN;
        }
        if (err == ENOBUFS) {
            c->resume_ns = now + CLIENT_ENOBUFS_PAUSE_NS; /* the local queue is full: let it drain */
            return -EAGAIN;
        }
        if ((err == EINVAL || err == EIO || err == EMSGSIZE) && c->gso_frames > 1) {
            udp_gso_disable(c); /* e.g. no checksum offload on this path */
            continue;
        }
        c->counts.udp_errors++;
        set_error(c, -err);
        if (err == ECONNREFUSED && refused++ == 0) {
            continue; /* an earlier datagram's ICMP error, reported on this call: send again */
        }
        udp_retire(c, (uint32_t)c->msgs[0].msg_hdr.msg_iovlen, false); /* dropped: UDP keeps nothing */
    }
    return 0;
}

/* ---------------------------------------------------------------- service and waiting */

int sl_client_service(struct sl_client *c, short revents)
{
    if (c == NULL) {
        return -EINVAL;
    }
    if (revents & (POLLIN | POLLHUP | POLLERR)) {
        c->readable = true;
    }
    if (revents & (POLLOUT | POLLERR | POLLHUP)) {
        c->writable = true;
    }
    if (c->fatal != 0) {
        return c->fatal;
    }
    int64_t now = now_ns();
    if (c->tcp) {
        tcp_service(c, now);
    } else if (c->pending > 0 && (c->pending >= c->opt.window || (revents & POLLOUT) ||
                                  (c->resume_ns != 0 && now >= c->resume_ns))) {
        (void)udp_send(c, now); /* a full round, or one that waited for room */
    }
    return c->fatal;
}

int sl_client_fd(const struct sl_client *c)
{
    return c != NULL ? c->fd : -1;
}

short sl_client_events(const struct sl_client *c)
{
    if (c == NULL || c->fd < 0) {
        return 0;
    }
    if (!c->tcp) {
        return c->pending > 0 && !c->writable ? POLLOUT : 0;
    }
    switch (c->state) {
    case CONN_CONNECTING:
        return POLLOUT;
    case CONN_UP: {
        short events = POLLIN;
        bool to_write = c->woff > 0 || (!c->rewind && c->wpos < c->pending);
        if (to_write && !c->writable) {
            events |= POLLOUT;
        }
        return events;
    }
    case CONN_FINISHING:
        return POLLIN;
    default:
        return 0;
    }
}

/* Nanoseconds until the client's next timer from now, or -1. */
static int64_t next_timer_ns(const struct sl_client *c, int64_t now)
{
    int64_t due = INT64_MAX;
    if (c->tcp) {
        switch (c->state) {
        case CONN_DOWN:
            if (has_work(c)) {
                due = c->resume_ns;
            }
            break;
        case CONN_CONNECTING:
            due = c->connect_deadline_ns;
            break;
        case CONN_UP:
            if (c->resume_ns > now) {
                due = c->resume_ns;
            }
            uint32_t p = c->apos; /* the oldest frame awaiting its ack (done ones are skipped) */
            while (p < c->wpos && c->slots[(c->tail + p) % c->cap].done) {
                p++;
            }
            if (c->ack && p < c->wpos) {
                int64_t ack_due = c->slots[(c->tail + p) % c->cap].written_ns +
                                  (int64_t)c->opt.ack_timeout_ms * NS_PER_MS;
                due = ack_due < due ? ack_due : due;
            }
            break;
        case CONN_FINISHING:
            due = c->finish_deadline_ns;
            break;
        default:
            break;
        }
    } else if (c->pending > 0 && c->resume_ns > now) {
        due = c->resume_ns;
    }
    if (due == INT64_MAX) {
        return -1;
    }
    return due > now ? due - now : 0;
}

int sl_client_timeout_ms(const struct sl_client *c)
{
    if (c == NULL) {
        return -1;
    }
    int64_t ns = next_timer_ns(c, now_ns());
    if (ns < 0) {
        return -1;
    }
    int64_t ms = (ns + NS_PER_MS - 1) / NS_PER_MS;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* Wait for the socket, the next timer or deadline_ns (INT64_MAX: none), whichever comes first. */
static void wait_once(struct sl_client *c, int64_t deadline_ns)
{
    int64_t now = now_ns();
    int64_t wait = next_timer_ns(c, now);
    if (deadline_ns != INT64_MAX) {
        int64_t left = deadline_ns > now ? deadline_ns - now : 0;
        wait = wait < 0 || left < wait ? left : wait;
    }
    int timeout_ms = -1;
    if (wait >= 0) {
        int64_t ms = (wait + NS_PER_MS - 1) / NS_PER_MS;
        timeout_ms = ms > INT_MAX ? INT_MAX : (int)ms;
    }
    struct pollfd pfd = {.fd = c->fd, .events = sl_client_events(c)};
    if (pfd.fd < 0 || pfd.events == 0) {
        pfd.fd = -1; /* only a timer to wait for */
        if (timeout_ms < 0) {
            return; /* nothing can change: the caller's condition decides */
        }
    }
    int ready = poll(&pfd, 1, timeout_ms);
    (void)sl_client_service(c, ready > 0 ? pfd.revents : 0);
}

int sl_client_poll(struct sl_client *c, int timeout_ms)
{
    if (c == NULL) {
        return -EINVAL;
    }
    int rc = sl_client_service(c, 0);
    if (rc != 0 || timeout_ms == 0) {
        return rc;
    }
    wait_once(c, timeout_ms < 0 ? INT64_MAX : now_ns() + (int64_t)timeout_ms * NS_PER_MS);
    return c->fatal;
}

/*
 * Make room for one more cut frame, waiting until deadline_ns (0: not at
 * all, INT64_MAX: no bound). 0, -EAGAIN (deadline 0), -ETIMEDOUT, or a
 * stopping error.
 */
static int wait_for_slot(struct sl_client *c, int64_t deadline_ns)
{
    for (;;) {
        if (c->fatal != 0) {
            return c->fatal;
        }
        if (c->state == CONN_CLOSED || c->state == CONN_FINISHING) {
            return SL_CLIENT_ECLOSED;
        }
        if (c->pending < c->opt.window) {
            return 0;
        }
        int64_t now = now_ns();
        if (c->tcp) {
            tcp_service(c, now);
        } else {
            (void)udp_send(c, now);
        }
        if (c->pending < c->opt.window) {
            return 0;
        }
        if (deadline_ns == 0) {
            return -EAGAIN;
        }
        if (now >= deadline_ns) {
            return -ETIMEDOUT;
        }
        wait_once(c, deadline_ns);
    }
}

/* The deadline of a wait inside append or push: the block timeout from now. */
static int64_t block_deadline(const struct sl_client *c)
{
    if (c->opt.flags & SL_CLIENT_NONBLOCK) {
        return 0;
    }
    if (c->opt.block_timeout_ms == SL_CLIENT_FOREVER) {
        return INT64_MAX;
    }
    return now_ns() + (int64_t)c->opt.block_timeout_ms * NS_PER_MS;
}

/*
 * Start writing what was just cut. Not under SL_CLIENT_NONBLOCK: there the
 * caller's event loop writes (sl_client_service), so that a turn's frames go
 * out in one sendmsg rather than one a frame.
 */
static void kick(struct sl_client *c)
{
    if (c->opt.flags & SL_CLIENT_NONBLOCK) {
        return;
    }
    if (c->tcp) {
        tcp_service(c, now_ns());
    } else if (c->pending >= c->opt.window) {
        (void)udp_send(c, now_ns());
    }
}

/* Cut the frame being filled, waiting for a slot until deadline_ns. */
static int cut(struct sl_client *c, int64_t deadline_ns)
{
    if (c->open_count == 0) {
        return 0;
    }
    int rc = wait_for_slot(c, deadline_ns);
    if (rc < 0) {
        return rc;
    }
    seal(c);
    kick(c);
    return 0;
}

/* A frame that just filled is cut at once when a slot is free; else the next append waits. */
static bool cut_if_full(struct sl_client *c)
{
    if (c->open_count == c->readings_max && c->pending < c->opt.window) {
        seal(c);
        return true;
    }
    return false;
}

static int check_usable(const struct sl_client *c)
{
    if (c == NULL) {
        return -EINVAL;
    }
    if (c->fatal != 0) {
        return c->fatal;
    }
    if (c->state == CONN_CLOSED || c->state == CONN_FINISHING) {
        return SL_CLIENT_ECLOSED;
    }
    return 0;
}

/* Whether a reading at time t can join the frame being filled. */
static bool fits(const struct sl_client *c, int64_t t)
{
    if (c->open_count == 0) {
        return true;
    }
    if (c->open_count >= c->readings_max || t < c->open_base) {
        return false;
    }
    return (uint64_t)t - (uint64_t)c->open_base <= UINT32_MAX;
}

static inline void put_reading(struct sl_client *c, uint32_t id, int64_t t, float value)
{
    uint8_t *p = frame_at(c, c->pending) + SL_BATCH_HEADER_BYTES +
                 (size_t)c->open_count * SL_READING_BYTES;
    sl_store_u32(p + SL_READING_OFF_SENSOR_ID, id);
    sl_store_u32(p + SL_READING_OFF_OFFSET_US, (uint32_t)((uint64_t)t - (uint64_t)c->open_base));
    sl_store_f32(p + SL_READING_OFF_VALUE, value);
    c->open_count++;
}

int sl_client_append(struct sl_client *c, uint32_t sensor_id, int64_t time_us, float value)
{
    int rc = check_usable(c);
    if (rc < 0) {
        return rc;
    }
    if (!fits(c, time_us)) {
        rc = cut(c, block_deadline(c));
        if (rc < 0) {
            return rc;
        }
    }
    if (c->open_count == 0) {
        c->open_base = time_us;
    }
    put_reading(c, sensor_id, time_us, value);
    if (cut_if_full(c)) {
        kick(c);
    }
    return 0;
}

/*
 * The base time for a fresh frame whose first reading is times[0]: the
 * smallest of the next n times, but never so small that times[0] would lie
 * more than 2^32 - 1 us after it (a reading below the base cuts the frame).
 */
static int64_t fresh_base(const int64_t *times, size_t n)
{
    int64_t lo = times[0];
    for (size_t i = 1; i < n; i++) {
        lo = times[i] < lo ? times[i] : lo;
    }
    int64_t floor = times[0] < INT64_MIN + (int64_t)UINT32_MAX ? INT64_MIN
                                                               : times[0] - (int64_t)UINT32_MAX;
    return lo < floor ? floor : lo;
}

/*
 * Pack readings into a frame at p while each lies within the frame's span:
 * (t - base) as unsigned is at most 2^32 - 1 exactly when base <= t <=
 * base + 2^32 - 1. Returns how many were packed.
 */
static size_t store_run(uint8_t *p, const uint32_t *ids, const float *values, const int64_t *times,
                        size_t n, int64_t base)
{
    size_t k;
    for (k = 0; k < n; k++, p += SL_READING_BYTES) {
        uint64_t offset = (uint64_t)times[k] - (uint64_t)base;
        if (offset > UINT32_MAX) {
            break;
        }
        sl_store_u32(p + SL_READING_OFF_SENSOR_ID, ids[k]);
        sl_store_u32(p + SL_READING_OFF_OFFSET_US, (uint32_t)offset);
        sl_store_f32(p + SL_READING_OFF_VALUE, values[k]);
    }
    return k;
}

/* Pack n readings that all share one time (offset from the frame's base). */
static size_t store_now(uint8_t *p, const uint32_t *ids, const float *values, size_t n,
                        uint32_t offset)
{
    for (size_t k = 0; k < n; k++, p += SL_READING_BYTES) {
        sl_store_u32(p + SL_READING_OFF_SENSOR_ID, ids[k]);
        sl_store_u32(p + SL_READING_OFF_OFFSET_US, offset);
        sl_store_f32(p + SL_READING_OFF_VALUE, values[k]);
    }
    return n;
}

int64_t sl_client_append_array(struct sl_client *c, const uint32_t *ids, const float *values,
                               const int64_t *times_us, size_t n)
{
    int rc = check_usable(c);
    if (rc < 0) {
        return rc;
    }
    if (n > 0 && (ids == NULL || values == NULL)) {
        return -EINVAL;
    }
    if (n > (size_t)INT64_MAX) {
        return -EINVAL;
    }
    int64_t now_us = times_us == NULL ? realtime_us() : 0;
    size_t i = 0;
    bool cut_any = false; /* frames cut here are written once, at the end (or by a wait) */
    while (i < n) {
        if (!fits(c, times_us != NULL ? times_us[i] : now_us)) {
            rc = cut(c, block_deadline(c));
            if (rc < 0) {
                if (cut_any) {
                    kick(c);
                }
                return i > 0 ? (int64_t)i : rc;
            }
        }
        size_t room = c->readings_max - c->open_count;
        size_t end = i + (n - i < room ? n - i : room);
        uint8_t *p = frame_at(c, c->pending) + SL_BATCH_HEADER_BYTES +
                     (size_t)c->open_count * SL_READING_BYTES;
        size_t taken;
        if (times_us == NULL) {
            if (c->open_count == 0) {
                c->open_base = now_us;
            }
            taken = store_now(p, ids + i, values + i, end - i, (uint32_t)(now_us - c->open_base));
        } else {
            bool fresh = c->open_count == 0;
            if (fresh) {
                c->open_base = times_us[i]; /* times in order: the first is the smallest */
            }
            taken = store_run(p, ids + i, values + i, times_us + i, end - i, c->open_base);
            if (fresh && taken < end - i && times_us[i + taken] < c->open_base) {
                /* An earlier time in a fresh frame: take the base from the whole share, again. */
                c->open_base = fresh_base(times_us + i, end - i);
                taken = store_run(p, ids + i, values + i, times_us + i, end - i, c->open_base);
            }
        }
        c->open_count += (uint32_t)taken;
        i += taken;
        cut_any |= cut_if_full(c);
    }
    if (cut_any) {
        kick(c);
    }
    return (int64_t)n;
}

uint64_t sl_client_room(const struct sl_client *c)
{
    if (check_usable(c) != 0) {
        return 0;
    }
    /* A whole frame per free slot, less what the frame being filled already holds. */
    uint64_t cuts = c->pending < c->opt.window ? c->opt.window - c->pending : 0;
    return cuts == 0 ? 0 : cuts * c->readings_max - c->open_count;
}

int sl_client_push(struct sl_client *c)
{
    int rc = check_usable(c);
    if (rc < 0) {
        return rc;
    }
    rc = cut(c, block_deadline(c));
    if (rc < 0) {
        return rc;
    }
    /* What the socket does not take now, a later call sends. */
    if (c->tcp) {
        tcp_service(c, now_ns());
    } else if (c->pending > 0) {
        (void)udp_send(c, now_ns());
    }
    return 0;
}

/* flush and finish: timeout_ms from now (negative: no bound; 0: one look). */
static int64_t deadline_after(int timeout_ms)
{
    return timeout_ms < 0 ? INT64_MAX : now_ns() + (int64_t)timeout_ms * NS_PER_MS;
}

int sl_client_flush(struct sl_client *c, int timeout_ms)
{
    int rc = check_usable(c);
    if (rc < 0) {
        return rc;
    }
    int64_t deadline = deadline_after(timeout_ms);
    rc = cut(c, deadline); /* may wait for a slot: within this call's deadline */
    if (rc < 0) {
        return rc;
    }
    for (;;) {
        if (c->fatal != 0) {
            return c->fatal;
        }
        int64_t now = now_ns();
        if (c->tcp) {
            tcp_service(c, now);
        } else {
            (void)udp_send(c, now);
        }
        if (c->pending == 0) {
            return 0;
        }
        if (now >= deadline) {
            return -ETIMEDOUT;
        }
        wait_once(c, deadline);
    }
}

int sl_client_finish(struct sl_client *c, int timeout_ms)
{
    if (c != NULL && c->state == CONN_CLOSED && c->fatal == 0) {
        return 0;
    }
    int64_t deadline = deadline_after(timeout_ms);
    int rc = sl_client_flush(c, timeout_ms);
    if (rc < 0) {
        return rc;
    }
    if (!c->tcp || c->fd < 0 || c->state != CONN_UP) {
        close_socket(c);
        c->state = CONN_CLOSED;
        return 0;
    }
    (void)shutdown(c->fd, SHUT_WR);
    c->state = CONN_FINISHING;
    c->finish_deadline_ns = deadline;
    while (c->state == CONN_FINISHING) {
        int64_t now = now_ns();
        if (c->readable) {
            tcp_read(c, now);
        }
        if (c->state != CONN_FINISHING) {
            break;
        }
        if (now >= deadline) {
            close_socket(c);
            c->state = CONN_CLOSED;
            return -ETIMEDOUT;
        }
        wait_once(c, deadline);
    }
    close_socket(c);
    c->state = CONN_CLOSED;
    return c->fatal;
}

/* ---------------------------------------------------------------- open, counts, close */

int sl_client_open(struct sl_client **out, const char *target, const struct sl_client_options *in)
{
    if (out == NULL) {
        return -EINVAL;
    }
    *out = NULL;
    struct target t;
    struct sl_client_options o;
    struct layout l;
    int rc = plan(target, in, &t, &o, &l);
    struct sockaddr_storage addr;
    socklen_t addr_bytes = 0;
    if (rc == 0) {
        rc = resolve_host(&t, &addr, &addr_bytes);
    }
    if (rc < 0) {
        return rc;
    }
    void *block = NULL;
    if (posix_memalign(&block, CLIENT_ALIGN, l.total) != 0) {
        return -ENOMEM;
    }
    memset(block, 0, l.frames_at); /* the frames are written before they are read */
    struct sl_client *c = block;
    uint8_t *base = block;
    c->opt = o;
    c->tcp = t.tcp;
    c->ack = t.tcp && !(o.flags & SL_CLIENT_NO_ACK);
    c->addr = addr;
    c->addr_bytes = addr_bytes;
    c->fd = -1;
    c->state = CONN_DOWN;
    c->cap = l.cap;
    c->stride = l.stride;
    c->readings_max = l.readings_max;
    c->slots = (struct slot *)(base + l.slots_at);
    c->frames = base + l.frames_at;
    if (!t.tcp) {
        c->msgs = (struct mmsghdr *)(base + l.msgs_at);
        c->iovs = (struct iovec *)(base + l.iovs_at);
    }
    c->gso_frames = 1;
    c->next_seq = o.first_seq != 0 ? o.first_seq : (uint64_t)realtime_us();
    c->rng = (uint64_t)now_ns() ^ ((uint64_t)(uintptr_t)c << 16) ^ 0x9E3779B97F4A7C15ull;
    if (c->rng == 0) {
        c->rng = 1;
    }
    /* First connection attempt now: a gateway that is down is retried later, not an error. */
    if (t.tcp) {
        conn_start(c, now_ns());
    }
    *out = c;
    return 0;
}

void sl_client_counts(const struct sl_client *c, struct sl_client_counts *out)
{
    if (c == NULL || out == NULL) {
        return;
    }
    *out = c->counts;
    out->pending = c->pending;
    out->buffered = c->open_count;
    out->next_seq = c->next_seq;
}

int sl_client_last_error(const struct sl_client *c)
{
    return c != NULL ? c->last_error : 0;
}

void sl_client_close(struct sl_client *c)
{
    if (c == NULL) {
        return;
    }
    close_socket(c);
    free(c);
}

const char *sl_client_strerror(int code)
{
    switch (code) {
    case 0:
        return "success";
    case SL_CLIENT_ETARGET:
        return "bad target: expected tcp://HOST:PORT or udp://HOST:PORT";
    case SL_CLIENT_ERESOLVE:
        return "the target's host name did not resolve";
    case SL_CLIENT_EREFUSED:
        return "the gateway refused a batch (BAD_CRC, MALFORMED or UNAUTHORIZED): not resent";
    case SL_CLIENT_EPROTOCOL:
        return "the gateway's answer breaks the protocol";
    case SL_CLIENT_ECLOSED:
        return "the client was finished: nothing more can be sent";
    case -EINVAL:
        return "invalid argument";
    case -ETIMEDOUT:
        return "timed out";
    case -EAGAIN:
        return "no room now (non-blocking)";
    case -ENOMEM:
        return "out of memory";
    default:
        break;
    }
    if (code < 0 && code > -4096) {
        const char *text = strerrordesc_np(-code); /* static text: safe from any thread */
        if (text != NULL) {
            return text;
        }
    }
    return "unknown error";
}
