/*
 * Line protocol in: HTTP writes, the TCP and UDP line listeners, named
 * series (see lines.h).
 *
 * One line, on the ingest thread: parse (proto/line.c); the timestamp to
 * microseconds in the source's precision (none: the receive time); the
 * canonical name's prefix once, then per numeric field its name, its id
 * (sl_series_intern: an existing name is a lookup, a new one is created
 * and its record logged before any reading uses it), and the reading into
 * the batch being gathered. A string field is refused `unsupported_type`;
 * a name over 1,024 bytes `name_too_long`; a full registry `series_limit`;
 * a value that is not finite goes on to the store, which refuses it
 * `nonfinite` like any other. The batch is logged (sl_commit_log_batch,
 * transport SL_LOG_LINE) when it is full, when a reading's time does not
 * fit its span, when the source changes, and at the end of each input
 * slice; its intent carries the source (an HTTP slot and its generation),
 * so the outcome comes back to the write it belongs to.
 *
 * Names' durability. Entries [0, series_logged) of the registry have a
 * record appended; [0, series_durable) are known durable. After each commit
 * (the producer's `committed` callback) the pipeline says up to which lsn
 * records are durable: the newest series record at or below it moves
 * durable up to logged; above it (a failed write or sync), logged goes back
 * to durable, so the names are appended again before their next use.
 * Restoring a name twice is harmless (sl_series_restore), so re-logging
 * never damages recovery.
 */
#include "net/lines.h"

#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/assert.h"
#include "core/clock.h"
#include "core/say.h"
#include "net/commit.h"
#include "net/counters.h"
#include "net/peers.h"
#include "store/streams.h"
#include "sluice/protocol.h"

#define UDP_BUFFER_BYTES (64u * 1024)
#define ACCEPTS_PER_TICK 64u
#define TAG_NONE UINT32_MAX /* TCP and UDP records: nobody waits for their outcome */
/* feed_line: the log refused a series record (distinct from every negated enum sl_line_error). */
#define FEED_LOG_REFUSED (-1000)

struct sl_line_conn {
    int fd;
    uint32_t fill;  /* bytes of an unfinished line in buf */
    bool skipping;  /* a line over SL_LINES_LINE_MAX: drop bytes up to its newline */
    uint8_t ip[16];
    uint16_t port;
    int64_t last_ns;       /* last byte received */
    int64_t line_start_ns; /* first byte of the unfinished line; 0: none */
    char *buf;             /* SL_LINES_LINE_MAX */
};

static struct sl_say_limit say_refused, say_evicted, say_timeout, say_too_long;

static const char *const reject_names[SL_LINES_REJECT_COUNT] = {"series_limit", "name_too_long",
                                                                "unsupported_type"};

const char *sl_lines_reject_name(uint32_t reason)
{
    return reason < SL_LINES_REJECT_COUNT ? reject_names[reason] : "unknown";
}

static uint64_t staging_bytes(void)
{
    return (uint64_t)SL_BATCH_COUNT_MAX * SL_READING_BYTES;
}

static uint64_t write_bytes(const struct sl_lines_config *config)
{
    return sl_align_up(config->http_body_bytes, SL_PLAN_ALIGN) + SL_LINES_INFLATE_BYTES;
}

static uint64_t conn_bytes(uint32_t n)
{
    return (uint64_t)n * (sizeof(struct sl_line_conn) + sizeof(uint32_t) + SL_LINES_LINE_MAX) +
           sl_peers_bytes(n);
}

void sl_lines_plan(const struct sl_lines_config *config, struct sl_plan *plan)
{
    sl_plan_add(plan, "line_staging",
                staging_bytes() + sizeof(struct sl_line) + SL_LINE_TAGS_MAX * sizeof(uint16_t) +
                    SL_LINE_NAME_MAX + 1,
                "line protocol: the batch being gathered (65,535 readings), one parsed line");
    if (config->http_writes > 0) {
        sl_plan_add(plan, "http_write_bodies",
                    (uint64_t)config->http_writes * (write_bytes(config) + sizeof(struct sl_write)),
                    "HTTP write bodies: --max-http-writes x (--http-max-body + 64 KiB for gzip)");
    }
    if (config->mqtt_messages > 0) {
        sl_plan_add(plan, "mqtt_slots", (uint64_t)config->mqtt_messages * sizeof(struct sl_write),
                    "MQTT: a round's messages handed to the ingest thread (their bodies: mqtt_round)");
    }
    if (config->tcp_fd >= 0) {
        sl_plan_add(plan, "line_tcp", conn_bytes(config->tcp_connections_max),
                    "line protocol over TCP: --max-tcp-connections x 64 KiB line buffer");
    }
    if (config->udp_fd >= 0) {
        sl_plan_add(plan, "line_udp", UDP_BUFFER_BYTES, "line protocol over UDP: one datagram");
    }
}

uint64_t sl_lines_fds_needed(const struct sl_lines_config *config)
{
    return (config->tcp_fd >= 0 ? 1u + config->tcp_connections_max : 0) + (config->udp_fd >= 0);
}

static void lines_deliver(void *ctx, const struct sl_intent *in, enum sl_status status,
                          const struct sl_apply_result *result);
static void lines_committed(void *ctx, uint64_t durable_lsn);

static int epoll_add(int epoll_fd, int fd, uint64_t tag)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag};
    return epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev);
}

int sl_lines_open(struct sl_lines *L, const struct sl_lines_config *config,
                  struct sl_commit *commit, struct sl_series *series, int epoll_fd, int wake_fd,
                  struct sl_arena *arena, char *err, uint32_t err_bytes)
{
    memset(L, 0, sizeof *L);
    L->config = *config;
    L->commit = commit;
    L->series = series;
    L->epoll_fd = epoll_fd;
    L->series_logged = L->series_durable = sl_series_count(series); /* recovered: durable */
    L->staging = sl_arena_take(arena, staging_bytes());
    L->line = sl_arena_take(arena, sizeof(struct sl_line));
    L->order = sl_arena_take(arena, SL_LINE_TAGS_MAX * sizeof(uint16_t));
    L->name = sl_arena_take(arena, SL_LINE_NAME_MAX + 1);
    struct sl_lines_hub *hub = &L->hub;
    hub->count = config->http_writes;
    hub->body_bytes = config->http_body_bytes;
    hub->wake_fd = wake_fd;
    pthread_mutex_init(&hub->mu, NULL);
    if (hub->count > 0) {
        hub->writes = sl_arena_take(arena, (uint64_t)hub->count * sizeof(struct sl_write));
        for (uint32_t i = 0; i < hub->count; i++) {
            uint8_t *m = sl_arena_take(arena, write_bytes(config));
            hub->writes[i].body = (char *)m;
            hub->writes[i].inflate_memory = m + sl_align_up(config->http_body_bytes, SL_PLAN_ALIGN);
        }
    }
    struct sl_lines_hub *mq = &L->mqtt_hub;
    mq->count = config->mqtt_messages;
    mq->wake_fd = wake_fd;
    pthread_mutex_init(&mq->mu, NULL);
    if (mq->count > 0) {
        mq->writes = sl_arena_take(arena, (uint64_t)mq->count * sizeof(struct sl_write));
    }
    if (config->tcp_fd >= 0) {
        uint32_t n = config->tcp_connections_max;
        L->conns = sl_arena_take(arena, (uint64_t)n * sizeof(struct sl_line_conn));
        L->conn_free = sl_arena_take(arena, (uint64_t)n * sizeof(uint32_t));
        char *bufs = sl_arena_take(arena, (uint64_t)n * SL_LINES_LINE_MAX);
        sl_peers_init(&L->peers, sl_arena_take(arena, sl_peers_bytes(n)), n);
        for (uint32_t i = 0; i < n; i++) {
            L->conns[i].fd = -1;
            L->conns[i].buf = bufs + (uint64_t)i * SL_LINES_LINE_MAX;
            L->conn_free[i] = n - 1 - i;
        }
        L->conn_free_count = n;
        if (epoll_add(epoll_fd, config->tcp_fd, SL_LINES_TAG_LISTEN) != 0) {
            snprintf(err, err_bytes, "epoll: %s", strerror(errno));
            return -1;
        }
    }
    if (config->udp_fd >= 0) {
        L->udp_buffer = sl_arena_take(arena, UDP_BUFFER_BYTES);
        if (epoll_add(epoll_fd, config->udp_fd, SL_LINES_TAG_UDP) != 0) {
            snprintf(err, err_bytes, "epoll: %s", strerror(errno));
            return -1;
        }
    }
    struct sl_commit_producer producer = {
        .deliver = lines_deliver, .committed = lines_committed, .ctx = L};
    L->producer = sl_commit_add_producer(commit, &producer);
    return 0;
}

/* ---- the registry's records ---- */

static void lines_committed(void *ctx, uint64_t durable_lsn)
{
    struct sl_lines *L = ctx;
    if (L->series_logged == L->series_durable) {
        return;
    }
    if (L->series_last_lsn <= durable_lsn) {
        L->series_durable = L->series_logged;
    } else {
        L->series_logged = L->series_durable; /* lost with the commit: append them again */
    }
}

/*
 * Append the records of entries [series_logged, index] (index: the entry a
 * reading is about to use). 0, or -EIO when the log refuses appends.
 */
static int series_log_through(struct sl_lines *L, uint32_t index, int64_t now_us)
{
    while (L->series_logged <= index) {
        uint32_t id = L->series->id_base + L->series_logged;
        const char *name;
        uint32_t len;
        if (sl_series_name(L->series, id, &name, &len) != 0) {
            L->series_logged++; /* a hole left by recovery: nothing to log */
            continue;
        }
        int room = sl_log_room_bytes(L->commit->log, sl_log_series_record_bytes(len));
        if (room == -ENOBUFS) {
            sl_commit_flush(L->commit); /* after a commit it fits */
        } else if (room != 0) {
            return room;
        }
        struct sl_batch b = {.header = {.version = SL_PROTOCOL_VERSION, .count = (uint16_t)len,
                                        .stream_id = id},
                             .readings = (const uint8_t *)name};
        uint64_t lsn = 0;
        const struct sl_log_record *record = NULL;
        int rc = sl_log_append(L->commit->log, &b, SL_LOG_SERIES, now_us, &lsn, &record);
        if (rc != 0) {
            return rc == -ENOBUFS ? -EIO : rc;
        }
        L->series_last_lsn = lsn;
        L->series_logged++;
        sl_counter_add(&L->counters.series_records, 1);
    }
    return 0;
}

/* ---- gathering batches ---- */

/* A slot by its tag: an HTTP write's index, or an MQTT message's with SL_LINES_MQTT_SLOT. */
static struct sl_lines_hub *hub_of(struct sl_lines *L, uint32_t tag)
{
    return (tag & SL_LINES_MQTT_SLOT) != 0 ? &L->mqtt_hub : &L->hub;
}

static struct sl_write *write_at(struct sl_lines *L, uint32_t tag)
{
    return &hub_of(L, tag)->writes[tag & ~SL_LINES_MQTT_SLOT];
}

/* Sources whose batches carry a slot that waits for its outcome. */
static bool slot_transport(uint8_t transport)
{
    return transport == SL_LINES_HTTP || transport == SL_LINES_MQTT;
}

/* Is the batch being gathered this slot's? */
static bool staged_for(const struct sl_lines *L, uint32_t tag)
{
    return L->staged > 0 && slot_transport(L->staged_transport) && L->staged_write == tag;
}

/* Log the gathered batch, if any. */
static void staged_flush(struct sl_lines *L)
{
    if (L->staged == 0) {
        return;
    }
    uint32_t count = L->staged;
    L->staged = 0;
    struct sl_batch b = {.header = {.version = SL_PROTOCOL_VERSION,
                                    .count = (uint16_t)count,
                                    .base_time_us = L->staged_base_us},
                         .readings = L->staging};
    bool http = slot_transport(L->staged_transport);
    struct sl_intent in = {.producer = L->producer,
                           .tag = http ? L->staged_write : TAG_NONE,
                           .tag_gen = http ? write_at(L, L->staged_write)->gen : 0,
                           .ack = http,
                           .status = L->staged_transport};
    sl_commit_make_room(L->commit, count);
    if (sl_commit_log_batch(L->commit, &b, SL_LOG_LINE, L->staged_now_us, &in) != 0) {
        sl_counter_add(&L->counters.shed[L->staged_transport], count);
        if (http) {
            write_at(L, L->staged_write)->outcome = SL_WRITE_LOG_REFUSED;
        }
        return;
    }
    sl_counter_add(&L->counters.records[L->staged_transport], 1);
    if (http) {
        write_at(L, L->staged_write)->records_pending++;
    }
}

/* Where the next reading goes: a new batch when the source, the clock or the time span differ. */
static void stage(struct sl_lines *L, uint8_t transport, uint32_t write, int64_t now_us,
                  uint32_t id, int64_t t_us, float value)
{
    if (L->staged > 0 &&
        (L->staged == SL_BATCH_COUNT_MAX || transport != L->staged_transport ||
         (slot_transport(transport) && write != L->staged_write) || now_us != L->staged_now_us ||
         t_us < L->staged_base_us || (uint64_t)(t_us - L->staged_base_us) > UINT32_MAX)) {
        staged_flush(L);
    }
    if (L->staged == 0) {
        L->staged_transport = transport;
        L->staged_write = write;
        L->staged_now_us = now_us;
        L->staged_base_us = t_us;
    }
    uint8_t *p = L->staging + (uint64_t)L->staged * SL_READING_BYTES;
    sl_store_u32(p + SL_READING_OFF_SENSOR_ID, id);
    sl_store_u32(p + SL_READING_OFF_OFFSET_US, (uint32_t)(t_us - L->staged_base_us));
    sl_store_f32(p + SL_READING_OFF_VALUE, value);
    L->staged++;
}

/* A reading refused before the store: counted, and charged to its write. */
static void refuse(struct sl_lines *L, struct sl_write *w, uint32_t reason)
{
    sl_counter_add(&L->counters.rejected[reason], 1);
    if (w != NULL) {
        w->rejected++;
    }
}

/*
 * One line (without its '\n'). Returns SL_LINE_OK, SL_LINE_SKIP, a negated
 * enum sl_line_error, or FEED_LOG_REFUSED when the log refused a series
 * record (the line's readings from there are shed).
 */
static int feed_line(struct sl_lines *L, uint8_t transport, uint32_t write_index,
                     struct sl_write *w, const char *p, size_t n, enum sl_line_precision precision,
                     int64_t now_us)
{
    struct sl_line *line = L->line;
    int rc = sl_line_parse(p, n, line);
    if (rc != SL_LINE_OK) {
        return rc;
    }
    int64_t t_us = now_us;
    if (line->has_time && sl_line_time_us(line->time, precision, &t_us) != 0) {
        return -SL_LINE_BAD_TIMESTAMP; /* beyond the clock's range in microseconds */
    }
    int prefix = sl_line_series_prefix(line, L->order, L->name, SL_LINE_NAME_MAX);
    for (uint32_t f = 0; f < line->field_count; f++) {
        const struct sl_line_field *field = &line->fields[f];
        if (field->type == SL_LINE_STRING) {
            refuse(L, w, SL_LINES_REJECT_UNSUPPORTED_TYPE);
            continue;
        }
        int len = prefix < 0 ? -1
                             : sl_line_series_name(line, f, L->name, (size_t)prefix,
                                                   SL_LINE_NAME_MAX);
        if (len < 0) {
            refuse(L, w, SL_LINES_REJECT_NAME_TOO_LONG);
            continue;
        }
        uint32_t id;
        int created;
        int irc = sl_series_intern(L->series, L->name, (uint32_t)len, &id, &created);
        if (irc == -SL_SERIES_TOO_LONG) {
            refuse(L, w, SL_LINES_REJECT_NAME_TOO_LONG);
            continue;
        }
        if (irc != 0) {
            refuse(L, w, SL_LINES_REJECT_SERIES_LIMIT);
            continue;
        }
        uint32_t index = id - L->series->id_base;
        if (index >= L->series_logged) {
            /* Its record goes before the batch that holds its first reading. */
            if (series_log_through(L, index, now_us) != 0) {
                sl_counter_add(&L->counters.shed[transport], line->field_count - f);
                if (w != NULL) {
                    w->outcome = SL_WRITE_LOG_REFUSED;
                }
                return FEED_LOG_REFUSED;
            }
        }
        stage(L, transport, write_index, now_us, id, t_us, field->value);
    }
    return SL_LINE_OK;
}

/* Count one line's outcome for its transport (and write). */
static void count_line(struct sl_lines *L, uint8_t transport, struct sl_write *w, int rc)
{
    if (rc == SL_LINE_SKIP) {
        return;
    }
    if (rc == SL_LINE_OK || rc == FEED_LOG_REFUSED) {
        sl_counter_add(&L->counters.lines_ok[transport], 1);
        if (w != NULL) {
            w->lines_ok++;
        }
        return;
    }
    sl_counter_add(&L->counters.lines_bad[transport], 1);
    if (w != NULL) {
        w->lines_bad++;
        if (w->first_bad_line == 0) {
            w->first_bad_line = w->line_no;
            w->first_bad_error = -rc;
        }
    }
}

/* Whole lines of a TCP connection or a UDP datagram. */
static void feed_text(struct sl_lines *L, uint8_t transport, const char *p, size_t n,
                      int64_t now_us)
{
    size_t at = 0;
    while (at < n) {
        size_t end = sl_line_end(p, n, at);
        int rc = feed_line(L, transport, 0, NULL, p + at, end - at, SL_LINE_NS, now_us);
        count_line(L, transport, NULL, rc);
        at = end + 1;
    }
}

/* ---- HTTP writes ---- */

static void write_finish(struct sl_lines *L, uint32_t index)
{
    struct sl_lines_hub *hub = hub_of(L, index);
    struct sl_write *w = write_at(L, index);
    pthread_mutex_lock(&hub->mu);
    uint32_t state = atomic_load_explicit(&w->state, memory_order_relaxed);
    SL_ASSERT(state == SL_WRITE_SUBMITTED || state == SL_WRITE_ABANDONED);
    void *waiter = state == SL_WRITE_SUBMITTED ? w->waiter : NULL;
    atomic_store_explicit(&w->state, state == SL_WRITE_ABANDONED ? SL_WRITE_FREE : SL_WRITE_DONE,
                          memory_order_release);
    pthread_mutex_unlock(&hub->mu);
    /* The waiter's connection is suspended until this: the slot stays DONE, untouched by us. */
    if (waiter != NULL && hub->notify != NULL) {
        hub->notify(hub->notify_ctx, waiter);
    }
}

/* A write is done when its body is parsed and every batch of it came back. */
static void write_maybe_done(struct sl_lines *L, uint32_t index)
{
    struct sl_write *w = write_at(L, index);
    if (w->parsed_all && w->records_pending == 0 && !staged_for(L, index)) {
        write_finish(L, index);
    }
}

static void lines_deliver(void *ctx, const struct sl_intent *in, enum sl_status status,
                          const struct sl_apply_result *result)
{
    struct sl_lines *L = ctx;
    uint8_t transport = in->status; /* the record's source, kept in the intent */
    if (status != SL_STATUS_OK) {
        sl_counter_add(&L->counters.records_failed[transport], 1);
    }
    if (in->tag == TAG_NONE) {
        return;
    }
    struct sl_write *w = write_at(L, in->tag);
    if (w->gen != in->tag_gen) {
        return;
    }
    SL_ASSERT(w->records_pending > 0);
    w->records_pending--;
    if (status != SL_STATUS_OK) {
        w->outcome = SL_WRITE_LOG_REFUSED;
    } else {
        w->accepted += result->accepted;
        w->rejected += result->rejected;
    }
    write_maybe_done(L, in->tag);
}

/*
 * An MQTT message holding one native batch frame: decoded and deduplicated
 * exactly as a TCP frame is (the TCP stream table, so a device may use
 * either), and logged as a TCP record, so that recovery restores its stream's
 * last seq. A frame that does not decode is counted bad; a seq at or below
 * the stream's last applied one is a duplicate; neither is logged. A batch
 * behind a hole, or one the log refuses, makes the message's outcome
 * LOG_REFUSED: the subscriber does not acknowledge it and the broker
 * delivers it again.
 */
static void native_feed(struct sl_lines *L, uint32_t tag, struct sl_write *w)
{
    const uint8_t *frame = (const uint8_t *)w->body;
    w->pos = w->body_len;
    struct sl_batch_header h;
    struct sl_batch batch;
    int rc = sl_batch_header_decode(frame, w->body_len, &h);
    if (rc == 0) {
        rc = sl_batch_decode(frame, w->body_len, &batch);
    }
    if (rc < 0) {
        w->frame_error = rc;
        w->lines_bad = 1;
        return;
    }
    staged_flush(L);
    sl_commit_make_room(L->commit, h.count);
    struct sl_intent in = {.producer = L->producer, .tag = tag, .tag_gen = w->gen,
                           .stream_id = h.stream_id, .batch_seq = h.batch_seq, .ack = 1,
                           .status = SL_LINES_MQTT};
    struct sl_stream_slot *slot = NULL;
    int admit = sl_streams_admit(L->streams, h.stream_id, h.batch_seq, &slot);
    if (admit == 1) {
        w->duplicate = true;
        return;
    }
    if (admit < 0) {
        w->streams_full = true;
        sl_counter_add(L->streams_full_total, 1);
        return;
    }
    if (slot->hole_seq != 0 && h.batch_seq > slot->hole_seq) {
        w->outcome = SL_WRITE_LOG_REFUSED; /* behind a batch not yet applied: redelivered after it */
        return;
    }
    in.slot = slot;
    in.prev_seq = slot->last_seq;
    in.prev_has_seq = (uint8_t)slot->has_seq;
    if (slot->hole_seq == h.batch_seq) {
        slot->hole_seq = 0;
    }
    sl_streams_applied(slot, h.batch_seq);
    if (sl_commit_log_batch(L->commit, &batch, SL_LOG_TCP, w->received_us, &in) != 0) {
        sl_commit_stream_failed(slot, in.prev_seq, in.prev_has_seq, h.batch_seq);
        sl_counter_add(&L->counters.shed[SL_LINES_MQTT], h.count);
        w->outcome = SL_WRITE_LOG_REFUSED;
        return;
    }
    sl_counter_add(&L->counters.records[SL_LINES_MQTT], 1);
    w->lines_ok = 1;
    w->records_pending++;
}

/*
 * Parse up to `budget` bytes of a submitted write. Returns true while body
 * is left. Once the write may be done the slot is the HTTP thread's again
 * (it may be reused at once): nothing here touches it after that.
 */
static bool write_parse(struct sl_lines *L, uint32_t index, uint64_t budget)
{
    struct sl_write *w = write_at(L, index);
    uint8_t transport = (index & SL_LINES_MQTT_SLOT) != 0 ? SL_LINES_MQTT : SL_LINES_HTTP;
    if (w->native) {
        native_feed(L, index, w);
    }
    uint64_t start = w->pos;
    while (w->pos < w->body_len && w->pos - start < budget) {
        size_t end = sl_line_end(w->body, w->body_len, w->pos);
        w->line_no++;
        int rc = feed_line(L, transport, index, w, w->body + w->pos, end - w->pos,
                           (enum sl_line_precision)w->precision, w->received_us);
        count_line(L, transport, w, rc);
        w->pos = end + 1;
        if (rc == FEED_LOG_REFUSED) {
            w->pos = w->body_len; /* the log refuses: the rest would be shed too */
        }
    }
    if (w->pos < w->body_len) {
        return true;
    }
    w->parsed_all = true;
    if (staged_for(L, index)) {
        staged_flush(L);
    }
    write_maybe_done(L, index);
    return false;
}

/* A submitted slot with body left to parse? */
static bool write_waiting(const struct sl_write *w)
{
    uint32_t state = atomic_load_explicit(&w->state, memory_order_acquire);
    return (state == SL_WRITE_SUBMITTED || state == SL_WRITE_ABANDONED) && !w->parsed_all;
}

/* HTTP writes and MQTT messages share a turn's SL_LINES_TICK_BYTES. */
static void writes_serve(struct sl_lines *L)
{
    uint32_t active = 0;
    for (uint32_t i = 0; i < L->hub.count; i++) {
        active += write_waiting(&L->hub.writes[i]);
    }
    for (uint32_t i = 0; i < L->mqtt_hub.count; i++) {
        active += write_waiting(&L->mqtt_hub.writes[i]);
    }
    L->busy = false;
    if (active == 0) {
        return;
    }
    uint64_t share = SL_LINES_TICK_BYTES / active;
    for (uint32_t i = 0; i < L->hub.count; i++) {
        struct sl_write *w = write_at(L, i);
        if (write_waiting(w)) {
            if (w->pos == 0 && w->line_no == 0) {
                sl_counter_add(&L->counters.http_writes, 1);
            }
            L->busy |= write_parse(L, i, share);
        }
    }
    for (uint32_t i = 0; i < L->mqtt_hub.count; i++) {
        if (write_waiting(&L->mqtt_hub.writes[i])) {
            L->busy |= write_parse(L, i | SL_LINES_MQTT_SLOT, share);
        }
    }
}

int sl_lines_write_acquire(struct sl_lines_hub *hub)
{
    int found = -1;
    pthread_mutex_lock(&hub->mu);
    for (uint32_t i = 0; i < hub->count; i++) {
        struct sl_write *w = &hub->writes[i];
        if (atomic_load_explicit(&w->state, memory_order_relaxed) == SL_WRITE_FREE) {
            atomic_store_explicit(&w->state, SL_WRITE_FILLING, memory_order_relaxed);
            found = (int)i;
            break;
        }
    }
    if (found < 0) {
        atomic_fetch_add_explicit(&hub->refused_busy, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&hub->mu);
    if (found >= 0) {
        struct sl_write *w = &hub->writes[found];
        w->gen++;
        w->body_len = 0;
        w->precision = SL_LINE_NS;
        w->pos = 0;
        w->line_no = 0;
        w->records_pending = 0;
        w->parsed_all = false;
        w->outcome = SL_WRITE_OK;
        w->accepted = w->rejected = w->lines_ok = w->lines_bad = 0;
        w->first_bad_line = 0;
        w->first_bad_error = 0;
        w->frame_error = 0;
        w->duplicate = w->streams_full = false;
        w->native = 0;
        w->inflate_used = 0;
    }
    return found;
}

int sl_lines_write_submit(struct sl_lines_hub *hub, uint32_t index)
{
    struct sl_write *w = &hub->writes[index];
    w->received_us = sl_clock_realtime_us();
    pthread_mutex_lock(&hub->mu);
    bool closed = hub->closed;
    if (!closed) {
        atomic_store_explicit(&w->state, SL_WRITE_SUBMITTED, memory_order_release);
    }
    pthread_mutex_unlock(&hub->mu);
    if (closed) {
        return -1;
    }
    uint64_t one = 1;
    ssize_t r = write(hub->wake_fd, &one, sizeof one);
    (void)r;
    return 0;
}

void sl_lines_write_abandon(struct sl_lines_hub *hub, uint32_t index)
{
    struct sl_write *w = &hub->writes[index];
    pthread_mutex_lock(&hub->mu);
    uint32_t state = atomic_load_explicit(&w->state, memory_order_relaxed);
    if (state == SL_WRITE_SUBMITTED) {
        atomic_store_explicit(&w->state, SL_WRITE_ABANDONED, memory_order_relaxed);
    } else if (state == SL_WRITE_DONE || state == SL_WRITE_FILLING) {
        atomic_store_explicit(&w->state, SL_WRITE_FREE, memory_order_release);
    }
    pthread_mutex_unlock(&hub->mu);
}

void sl_lines_write_release(struct sl_lines_hub *hub, uint32_t index)
{
    struct sl_write *w = &hub->writes[index];
    pthread_mutex_lock(&hub->mu);
    SL_ASSERT(atomic_load_explicit(&w->state, memory_order_relaxed) == SL_WRITE_FILLING ||
              atomic_load_explicit(&w->state, memory_order_relaxed) == SL_WRITE_DONE);
    atomic_store_explicit(&w->state, SL_WRITE_FREE, memory_order_release);
    pthread_mutex_unlock(&hub->mu);
}

/* ---- TCP ---- */

static int64_t idle_timeout_ns(const struct sl_lines *L)
{
    const struct sl_live *l = L->config.live;
    return (int64_t)(l ? sl_live_get(&l->tcp_idle_timeout_ms) : L->config.tcp_idle_timeout_ms) *
           1000000;
}

static int64_t line_timeout_ns(const struct sl_lines *L)
{
    const struct sl_live *l = L->config.live;
    return (int64_t)(l ? sl_live_get(&l->tcp_frame_timeout_ms) : L->config.tcp_line_timeout_ms) *
           1000000;
}

static uint32_t per_ip_max(const struct sl_lines *L)
{
    return L->config.live != NULL ? sl_live_get(&L->config.live->tcp_connections_per_ip_max)
                                  : L->config.tcp_per_ip_max;
}

static void conn_close(struct sl_lines *L, uint32_t index)
{
    struct sl_line_conn *c = &L->conns[index];
    SL_ASSERT(c->fd >= 0);
    close(c->fd);
    sl_peers_release(&L->peers, c->ip);
    c->fd = -1;
    c->fill = 0;
    c->skipping = false;
    c->line_start_ns = 0;
    L->conn_free[L->conn_free_count++] = index;
    uint32_t open = atomic_load_explicit(&L->counters.tcp_open, memory_order_relaxed);
    atomic_store_explicit(&L->counters.tcp_open, open - 1, memory_order_relaxed);
}

/* The open connection idle longest, or UINT32_MAX. */
static uint32_t conn_idlest(const struct sl_lines *L, const uint8_t *ip)
{
    uint32_t best = UINT32_MAX;
    int64_t oldest = INT64_MAX;
    for (uint32_t i = 0; i < L->config.tcp_connections_max; i++) {
        const struct sl_line_conn *c = &L->conns[i];
        if (c->fd < 0 || (ip != NULL && memcmp(c->ip, ip, 16) != 0)) {
            continue;
        }
        int64_t since = c->line_start_ns != 0 ? c->line_start_ns : c->last_ns;
        if (since < oldest) {
            oldest = since;
            best = i;
        }
    }
    return best;
}

static void conn_admit(struct sl_lines *L, int fd, const struct sockaddr_storage *ss, int64_t now_ns)
{
    uint8_t ip[16];
    uint16_t port;
    char peer[64];
    sl_peer_of(ss, ip, &port);
    struct sl_peer_count *a = sl_peers_find(&L->peers, ip);
    uint32_t cap = per_ip_max(L);
    if (a->count > cap) { /* SIGHUP lowered the cap below what the address holds */
        close(fd);
        sl_counter_add(&L->counters.tcp_refused, 1);
        sl_peer_text(ip, port, peer);
        sl_say_limited(&say_refused, SL_SAY_WARN, "lines",
                       "refused %s: its address holds %u line connections "
                       "(--max-tcp-connections-per-ip %u)",
                       peer, a->count, cap);
        return;
    }
    /*
     * As for native TCP: an address at its cap makes room from its own
     * connections (idle longest), a full table from all; a line connection
     * waits for no answer, so there is always one to close.
     */
    bool own = a->count == cap;
    if (own || L->conn_free_count == 0) {
        uint32_t victim = conn_idlest(L, own ? ip : NULL);
        SL_ASSERT(victim != UINT32_MAX);
        sl_peer_text(L->conns[victim].ip, L->conns[victim].port, peer);
        sl_say_limited(&say_evicted, SL_SAY_WARN, "lines",
                       "closed %s, idle longest, to make room: %s", peer,
                       own ? "its address is at --max-tcp-connections-per-ip"
                           : "the line connection table is full (--max-tcp-connections)");
        conn_close(L, victim);
        sl_counter_add(&L->counters.tcp_evicted, 1);
        a = sl_peers_find(&L->peers, ip); /* the close may have moved entries */
    }
    uint32_t index = L->conn_free[--L->conn_free_count];
    struct sl_line_conn *c = &L->conns[index];
    if (epoll_add(L->epoll_fd, fd, SL_LINES_TAG_CONN + index) != 0) {
        close(fd);
        L->conn_free_count++;
        sl_counter_add(&L->counters.tcp_refused, 1);
        return;
    }
    if (a->count == 0) {
        memcpy(a->ip, ip, 16);
    }
    a->count++;
    c->fd = fd;
    memcpy(c->ip, ip, 16);
    c->port = port;
    c->fill = 0;
    c->skipping = false;
    c->last_ns = now_ns;
    c->line_start_ns = 0;
    sl_counter_add(&L->counters.tcp_accepted, 1);
    uint32_t open = atomic_load_explicit(&L->counters.tcp_open, memory_order_relaxed);
    atomic_store_explicit(&L->counters.tcp_open, open + 1, memory_order_relaxed);
}

static void tcp_accept(struct sl_lines *L)
{
    int64_t now_ns = sl_clock_monotonic_ns();
    for (uint32_t i = 0; i < ACCEPTS_PER_TICK; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = accept4(L->config.tcp_fd, (struct sockaddr *)&ss, &len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                sl_counter_add(&L->counters.tcp_refused, 1);
            }
            return;
        }
        conn_admit(L, fd, &ss, now_ns);
    }
}

/* One read of a connection: whole lines fed, an unfinished one kept, an over-long one skipped. */
static void tcp_read(struct sl_lines *L, uint32_t index)
{
    struct sl_line_conn *c = &L->conns[index];
    ssize_t n = recv(c->fd, c->buf + c->fill, SL_LINES_LINE_MAX - c->fill, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        /* The peer left: a last line without its newline counts, as InfluxDB's listener does. */
        if (n == 0 && c->fill > 0 && !c->skipping) {
            feed_text(L, SL_LINES_TCP, c->buf, c->fill, sl_clock_realtime_us());
        }
        conn_close(L, index);
        return;
    }
    if (n < 0) {
        return;
    }
    int64_t now_ns = sl_clock_monotonic_ns();
    c->last_ns = now_ns;
    uint32_t scanned = c->fill;
    c->fill += (uint32_t)n;
    if (c->skipping) {
        char *nl = memchr(c->buf, '\n', c->fill);
        if (nl == NULL) {
            c->fill = 0;
            return;
        }
        uint32_t rest = c->fill - (uint32_t)(nl + 1 - c->buf);
        memmove(c->buf, nl + 1, rest);
        c->fill = rest;
        c->skipping = false;
        scanned = 0;
    }
    /* The last newline: everything before it is whole lines. */
    uint32_t last = c->fill;
    while (last > scanned && c->buf[last - 1] != '\n') {
        last--;
    }
    if (last > 0 && c->buf[last - 1] == '\n') {
        feed_text(L, SL_LINES_TCP, c->buf, last - 1, sl_clock_realtime_us());
        memmove(c->buf, c->buf + last, c->fill - last);
        c->fill -= last;
        c->line_start_ns = 0; /* what is left began in this read */
    }
    if (c->fill == SL_LINES_LINE_MAX) {
        sl_counter_add(&L->counters.lines_too_long, 1);
        sl_counter_add(&L->counters.lines_bad[SL_LINES_TCP], 1);
        char peer[64];
        sl_peer_text(c->ip, c->port, peer);
        sl_say_limited(&say_too_long, SL_SAY_WARN, "lines",
                       "%s sent a line longer than %u bytes: skipped to its end", peer,
                       SL_LINES_LINE_MAX);
        c->fill = 0;
        c->skipping = true;
    }
    if (c->fill == 0 && !c->skipping) {
        c->line_start_ns = 0;
    } else if (c->line_start_ns == 0) {
        c->line_start_ns = now_ns;
    }
}

static void udp_serve(struct sl_lines *L)
{
    for (uint32_t i = 0; i < SL_LINES_UDP_DATAGRAMS_PER_TICK; i++) {
        ssize_t n = recv(L->config.udp_fd, L->udp_buffer, UDP_BUFFER_BYTES, MSG_DONTWAIT);
        if (n < 0) {
            return;
        }
        sl_counter_add(&L->counters.udp_datagrams, 1);
        feed_text(L, SL_LINES_UDP, (const char *)L->udp_buffer, (size_t)n, sl_clock_realtime_us());
    }
}

void sl_lines_event(struct sl_lines *L, uint64_t tag, uint32_t events)
{
    if (tag == SL_LINES_TAG_LISTEN) {
        tcp_accept(L);
    } else if (tag == SL_LINES_TAG_UDP) {
        udp_serve(L);
    } else {
        uint64_t index = tag - SL_LINES_TAG_CONN;
        if (index < L->config.tcp_connections_max && L->conns[index].fd >= 0) {
            (void)events;
            tcp_read(L, (uint32_t)index);
        }
    }
    staged_flush(L); /* what the socket gave is logged with this turn's group */
}

/* Close connections idle past the timeout, or whose line has taken longer than the deadline. */
static void tcp_sweep(struct sl_lines *L, int64_t now_ns)
{
    int64_t idle = idle_timeout_ns(L), line = line_timeout_ns(L);
    for (uint32_t i = 0; i < L->config.tcp_connections_max; i++) {
        struct sl_line_conn *c = &L->conns[i];
        if (c->fd < 0) {
            continue;
        }
        bool late = c->line_start_ns != 0 && now_ns - c->line_start_ns > line;
        if (late || now_ns - c->last_ns > idle) {
            char peer[64];
            sl_peer_text(c->ip, c->port, peer);
            sl_say_limited(&say_timeout, SL_SAY_INFO, "lines", "closed %s: %s", peer,
                           late ? "a line unfinished past --tcp-frame-timeout"
                                : "idle past --tcp-idle-timeout");
            sl_counter_add(&L->counters.tcp_timed_out, 1);
            conn_close(L, i);
        }
    }
}

void sl_lines_tick(struct sl_lines *L, int64_t now_ns)
{
    writes_serve(L);
    staged_flush(L);
    if (L->conns != NULL && now_ns >= L->next_sweep_ns) {
        tcp_sweep(L, now_ns);
        L->next_sweep_ns = now_ns + 1000000000LL;
    }
}

bool sl_lines_busy(const struct sl_lines *L)
{
    return L->busy;
}

void sl_lines_drain(struct sl_lines *L)
{
    /* From here no write is submitted; those submitted already are finished below. */
    pthread_mutex_lock(&L->hub.mu);
    L->hub.closed = true;
    pthread_mutex_unlock(&L->hub.mu);
    pthread_mutex_lock(&L->mqtt_hub.mu);
    L->mqtt_hub.closed = true;
    pthread_mutex_unlock(&L->mqtt_hub.mu);
    if (L->config.udp_fd >= 0) {
        udp_serve(L);
    }
    for (uint32_t i = 0; L->conns != NULL && i < L->config.tcp_connections_max; i++) {
        if (L->conns[i].fd >= 0) {
            conn_close(L, i);
        }
    }
    /* Writes still being parsed finish (a body a turn's share at a time): their clients wait. */
    uint32_t rounds = 0;
    do {
        writes_serve(L);
        staged_flush(L);
        sl_commit_flush(L->commit);
    } while (L->busy && ++rounds < (1u << 20));
}

void sl_lines_close(struct sl_lines *L)
{
    pthread_mutex_destroy(&L->hub.mu);
    pthread_mutex_destroy(&L->mqtt_hub.mu);
}
