/*
 * The MQTT subscriber: see subscriber.h for what a PUBACK promises and why
 * the thread works in rounds.
 *
 * The thread's loop, connected:
 *
 *   poll the socket (read; write when libmosquitto has packets queued)
 *   writable: mosquitto_loop_write (PUBACKs of rounds already durable, pings)
 *   readable: a round: mosquitto_loop_read one packet at a time while the
 *             socket has bytes and the round has room; on_message copies each
 *             message (a value payload as its line) into the round buffer and
 *             a line-hub slot; then every slot is submitted, the thread waits
 *             for their outcomes, counts them and, if the log took them all,
 *             writes the PUBACKs; else it drops the connection unacknowledged
 *   every turn: mosquitto_loop_misc (keepalive), SIGHUP's subscriptions
 *
 * Not connected: wait a backoff (full jitter in [100 ms, min(30 s, 100 ms x
 * 2^attempt)]), then mosquitto_reconnect_async (which also throws away any
 * PUBACK queued for a refused round), with SL_MQTT_CONNECT_TIMEOUT_MS for the
 * TCP connect and the CONNACK. On CONNACK every subscription in force is
 * (re)subscribed at QoS 1: harmless with a session present, and needed when
 * the broker lost it.
 *
 * A message's format is that of the first subscription in force whose filter
 * matches its topic (mosquitto_topic_matches_sub). A retained copy (retain
 * set: sent because a subscription was made, MQTT 3.1.1 3.3.1.3) is counted
 * and skipped: it is an old reading, and it comes again at each subscribe.
 */
#include "mqtt/subscriber.h"

#include <errno.h>
#include <inttypes.h>
#include <mosquitto.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/assert.h"
#include "core/clock.h"
#include "core/say.h"
#include "proto/mqtt.h"
#include "sluice/protocol.h"

/* A reason into the caller's err, and -1. */
#define FAIL(...) (snprintf(err, err_bytes, __VA_ARGS__), -1)
#define POLL_MS 100               /* the loop's longest sleep: stop, SIGHUP, keepalive */
#define LOG_TOPIC_BYTES 200u      /* of a topic named in a log line */

struct sl_mqtt_message {
    uint32_t slot;    /* the line hub's MQTT slot */
    uint8_t format;   /* enum sl_mqtt_format */
    char topic[LOG_TOPIC_BYTES + 1]; /* for the log line of a bad message (cut) */
};

static struct sl_say_limit say_bad, say_refused;

/* ---- plan and start-up ---- */

static uint64_t round_bytes(const struct sl_mqtt_config *c)
{
    uint64_t two = 2 * (c->max_payload + SL_MQTT_LINE_MAX(0));
    return two > SL_MQTT_ROUND_BYTES_MIN ? two : SL_MQTT_ROUND_BYTES_MIN;
}

void sl_mqtt_plan(const struct sl_mqtt_config *c, struct sl_plan *plan)
{
    if (!c->on) {
        return;
    }
    sl_plan_add(plan, "mqtt_round",
                round_bytes(c) + (uint64_t)SL_MQTT_ROUND_MESSAGES * sizeof(struct sl_mqtt_message) +
                    2ull * SL_MQTT_SUBSCRIPTIONS_MAX * sizeof(struct sl_mqtt_subscription),
                "MQTT: a round of messages (2 x --mqtt-max-payload, at least 4 MiB) and the "
                "subscriptions");
    /* libmosquitto's heap on the subscriber thread: the packet being read and its copy as a
     * message (each up to the broker's message_size_limit, which --mqtt-max-payload should
     * match), the queued PUBACKs of a round (64 B each), and its fixed state. */
    sl_plan_add(plan, SL_MQTT_PLAN_LIBRARY_PART,
                3 * (c->max_payload + SL_MQTT_FILTER_MAX) +
                    (uint64_t)SL_MQTT_ROUND_MESSAGES * 64 + (64u << 10),
                "MQTT: libmosquitto's heap (not mapped): a packet, its message copy, a round's "
                "PUBACKs");
}

static int read_password(struct sl_mqtt *m, char *err, uint32_t err_bytes)
{
    const char *path = m->config.password_file;
    if (path[0] == '\0') {
        return 0;
    }
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        return FAIL("--mqtt-password-file: %s: %s", path, strerror(errno));
    }
    size_t n = fread(m->password, 1, SL_MQTT_PASSWORD_MAX + 1, f);
    bool error = ferror(f) != 0;
    fclose(f);
    if (error || n > SL_MQTT_PASSWORD_MAX) {
        return FAIL("--mqtt-password-file: %s: %s", path,
                    error ? "cannot be read" : "longer than 1,024 bytes");
    }
    while (n > 0 && (m->password[n - 1] == '\n' || m->password[n - 1] == '\r')) {
        n--;
    }
    m->password[n] = '\0';
    if (memchr(m->password, '\0', n) != NULL) {
        return FAIL("--mqtt-password-file: %s: holds a NUL byte", path);
    }
    m->has_password = true;
    return 0;
}

static void on_notify(void *ctx, void *waiter)
{
    struct sl_mqtt *m = ctx;
    (void)waiter;
    pthread_mutex_lock(&m->mu);
    m->done++;
    pthread_cond_signal(&m->cond);
    pthread_mutex_unlock(&m->mu);
}

int sl_mqtt_open(struct sl_mqtt *m, const struct sl_mqtt_config *config, struct sl_lines_hub *hub,
                 struct sl_arena *arena, char *err, uint32_t err_bytes)
{
    memset(m, 0, sizeof *m);
    m->config = *config;
    SL_ASSERT(config->on && hub->count == SL_MQTT_ROUND_MESSAGES);
    if (config->client_id[0] != '\0') {
        snprintf(m->client_id, sizeof m->client_id, "%s", config->client_id);
    } else {
        char host[64] = "";
        gethostname(host, sizeof host - 1);
        snprintf(m->client_id, sizeof m->client_id, "sluice-%s", host[0] ? host : "gateway");
    }
    if (read_password(m, err, err_bytes) != 0) {
        return -1;
    }
    if (m->has_password && config->username[0] == '\0') {
        return FAIL("--mqtt-password-file needs --mqtt-username");
    }
    m->hub = hub;
    m->round_bytes = round_bytes(config);
    m->round = sl_arena_take(arena, m->round_bytes);
    m->messages = sl_arena_take(arena, (uint64_t)SL_MQTT_ROUND_MESSAGES * sizeof *m->messages);
    m->active = sl_arena_take(arena, SL_MQTT_SUBSCRIPTIONS_MAX * sizeof *m->active);
    m->wanted = sl_arena_take(arena, SL_MQTT_SUBSCRIPTIONS_MAX * sizeof *m->wanted);
    memcpy(m->active, config->subscriptions, config->subscription_count * sizeof *m->active);
    m->active_count = config->subscription_count;
    pthread_mutex_init(&m->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cond, &ca);
    pthread_condattr_destroy(&ca);
    hub->notify = on_notify;
    hub->notify_ctx = m;
    snprintf(m->last_error, sizeof m->last_error, "not connected yet");
    return 0;
}

/* ---- state readers ---- */

static void set_error(struct sl_mqtt *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(struct sl_mqtt *m, const char *fmt, ...)
{
    char text[SL_MQTT_ERROR_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&m->mu);
    memcpy(m->last_error, text, sizeof text);
    pthread_mutex_unlock(&m->mu);
}

void sl_mqtt_last_error(struct sl_mqtt *m, char *out, uint32_t out_bytes)
{
    pthread_mutex_lock(&m->mu);
    snprintf(out, out_bytes, "%s", m->last_error);
    pthread_mutex_unlock(&m->mu);
}

bool sl_mqtt_subscription_at(struct sl_mqtt *m, uint32_t i, struct sl_mqtt_subscription *out)
{
    pthread_mutex_lock(&m->mu);
    bool ok = i < m->active_count;
    if (ok) {
        *out = m->active[i];
    }
    pthread_mutex_unlock(&m->mu);
    return ok;
}

/* ---- the round ---- */

static void count(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static void bad(struct sl_mqtt *m, const char *topic, const char *why)
{
    count(&m->stats.messages[SL_MQTT_BAD], 1);
    sl_say_limited(&say_bad, SL_SAY_WARN, "mqtt", "bad message on '%.*s': %s",
                   (int)LOG_TOPIC_BYTES, topic, why);
}

/* The format of the first subscription in force that matches, or -1. */
static int format_of(struct sl_mqtt *m, const char *topic)
{
    for (uint32_t i = 0; i < m->active_count; i++) {
        bool match = false;
        if (mosquitto_topic_matches_sub(m->active[i].filter, topic, &match) == MOSQ_ERR_SUCCESS &&
            match) {
            return m->active[i].format;
        }
    }
    return -1;
}

/* Room for one more message of any size the round takes? */
static bool round_has_room(const struct sl_mqtt *m)
{
    return m->message_count < SL_MQTT_ROUND_MESSAGES &&
           m->round_bytes - m->round_used >= m->config.max_payload + SL_MQTT_LINE_MAX(0);
}

static void on_message(struct mosquitto *mosq, void *ctx, const struct mosquitto_message *msg)
{
    struct sl_mqtt *m = ctx;
    (void)mosq;
    if (!round_has_room(m)) {
        /* The read loop stops before this (libmosquitto hands one packet a read call); if a
         * library ever hands more, the round is not acknowledged and the broker sends it again. */
        m->overflow = true;
        return;
    }
    const char *topic = msg->topic != NULL ? msg->topic : "";
    if (msg->retain) {
        count(&m->stats.messages[SL_MQTT_RETAINED], 1);
        return;
    }
    int format = format_of(m, topic);
    if (format < 0) {
        bad(m, topic, "no subscription in force matches it (unsubscribed since?)");
        return;
    }
    uint64_t len = msg->payloadlen > 0 ? (uint64_t)msg->payloadlen : 0;
    if (len > m->config.max_payload) {
        char why[96];
        snprintf(why, sizeof why, "%" PRIu64 " bytes, over --mqtt-max-payload %" PRIu64, len,
                 m->config.max_payload);
        bad(m, topic, why);
        return;
    }
    char *body = (char *)m->round + m->round_used;
    uint64_t room = m->round_bytes - m->round_used;
    if (format == SL_MQTT_VALUE) {
        long n = sl_mqtt_value_line(topic, strlen(topic), msg->payload, len,
                                    sl_clock_realtime_us(), body, room);
        if (n < 0) {
            bad(m, topic, sl_mqtt_error_name((int)n));
            return;
        }
        len = (uint64_t)n;
    } else {
        if (len > 0) {
            memcpy(body, msg->payload, len);
        }
    }
    int slot = sl_lines_write_acquire(m->hub);
    SL_ASSERT(slot >= 0); /* a round never holds more messages than the hub's slots */
    struct sl_write *w = &m->hub->writes[slot];
    w->body = body;
    w->body_len = len;
    w->precision = SL_LINE_NS;
    w->native = format == SL_MQTT_NATIVE;
    w->waiter = m; /* hub->notify (on_notify) is called only for a slot with a waiter */
    struct sl_mqtt_message *e = &m->messages[m->message_count++];
    e->slot = (uint32_t)slot;
    e->format = (uint8_t)format;
    snprintf(e->topic, sizeof e->topic, "%s", topic);
    m->round_used += sl_align_up(len, 8);
}

/* One message's outcome: counted. False when the log did not take it. */
static bool take_outcome(struct sl_mqtt *m, const struct sl_mqtt_message *e)
{
    struct sl_write *w = &m->hub->writes[e->slot];
    bool durable = w->outcome == SL_WRITE_OK;
    count(&m->stats.readings_accepted, w->accepted);
    count(&m->stats.readings_rejected, w->rejected);
    if (!durable) {
        return false;
    }
    char why[160];
    if (w->frame_error != 0) {
        snprintf(why, sizeof why, "not a native batch frame: %s",
                 sl_decode_error_name(-w->frame_error));
        bad(m, e->topic, why);
    } else if (w->streams_full) {
        bad(m, e->topic, "a new stream, and the stream table is full (--max-streams)");
    } else if (w->duplicate) {
        count(&m->stats.messages[SL_MQTT_DUPLICATE], 1);
    } else if (w->lines_bad > 0) {
        snprintf(why, sizeof why, "line %" PRIu32 ": %s (%" PRIu64 " of %" PRIu64 " lines bad)",
                 w->first_bad_line, sl_line_error_name(w->first_bad_error), w->lines_bad,
                 w->lines_bad + w->lines_ok);
        bad(m, e->topic, e->format == SL_MQTT_VALUE ? "not a value" : why);
    } else if (w->lines_ok == 0 && w->accepted + w->rejected == 0) {
        bad(m, e->topic, "empty");
    } else {
        count(&m->stats.messages[SL_MQTT_OK], 1);
    }
    return true;
}

/*
 * Hand the round to the ingest thread and wait for every message's outcome.
 * True when the log took them all (their PUBACKs may go).
 */
static bool round_commit(struct sl_mqtt *m)
{
    uint32_t submitted = 0;
    bool durable = true;
    pthread_mutex_lock(&m->mu);
    m->done = 0;
    pthread_mutex_unlock(&m->mu);
    for (uint32_t i = 0; i < m->message_count; i++) {
        if (sl_lines_write_submit(m->hub, m->messages[i].slot) != 0) {
            durable = false; /* shutting down: the rest are not taken */
            for (uint32_t j = i; j < m->message_count; j++) {
                sl_lines_write_release(m->hub, m->messages[j].slot);
            }
            break;
        }
        submitted++;
    }
    pthread_mutex_lock(&m->mu);
    while (m->done < submitted) {
        pthread_cond_wait(&m->cond, &m->mu);
    }
    pthread_mutex_unlock(&m->mu);
    for (uint32_t i = 0; i < submitted; i++) {
        durable &= take_outcome(m, &m->messages[i]);
        sl_lines_write_release(m->hub, m->messages[i].slot);
    }
    m->message_count = 0;
    m->round_used = 0;
    return durable;
}

/* The connection went while a round was read: its messages come again, so none is stored. */
static void round_discard(struct sl_mqtt *m)
{
    for (uint32_t i = 0; i < m->message_count; i++) {
        sl_lines_write_release(m->hub, m->messages[i].slot);
    }
    m->message_count = 0;
    m->round_used = 0;
}

/* ---- the connection ---- */

enum conn_state { DOWN = 0, CONNECTING = 1, UP = 2 };

struct conn {
    enum conn_state state;
    uint32_t attempt;     /* connections tried since the last one that worked */
    uint32_t refused;     /* rounds the log refused in a row (their reconnects back off too) */
    int64_t next_try_ns;  /* DOWN: when to try again */
    int64_t deadline_ns;  /* CONNECTING: the CONNACK's */
    bool ever_up;
    bool connack;         /* set by on_connect */
    int connack_rc;
};

/* What a failed socket means: no CONNACK yet, or a connection that was up. */
static const char *lost_what(const struct conn *c)
{
    return c->state == CONNECTING ? "connect" : "connection lost";
}

static uint64_t jitter_ms(uint32_t attempt)
{
    uint64_t cap = SL_MQTT_BACKOFF_MIN_MS;
    for (uint32_t i = 0; i < attempt && cap < SL_MQTT_BACKOFF_MAX_MS; i++) {
        cap *= 2;
    }
    cap = cap < SL_MQTT_BACKOFF_MAX_MS ? cap : SL_MQTT_BACKOFF_MAX_MS;
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
        r = (uint64_t)sl_clock_monotonic_ns() * 0x9E3779B97F4A7C15ull;
    }
    return SL_MQTT_BACKOFF_MIN_MS + r % (cap - SL_MQTT_BACKOFF_MIN_MS + 1);
}

static void go_down(struct sl_mqtt *m, struct conn *c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void go_down(struct sl_mqtt *m, struct conn *c, const char *fmt, ...)
{
    char text[SL_MQTT_ERROR_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    struct mosquitto *mosq = m->mosq;
    int fd = mosquitto_socket(mosq);
    if (fd >= 0) {
        shutdown(fd, SHUT_RDWR); /* nothing more leaves; reconnecting closes it and drops the queue */
    }
    bool was_up = c->state == UP;
    c->state = DOWN;
    uint64_t wait_ms = jitter_ms(c->attempt++);
    c->next_try_ns = sl_clock_monotonic_ns() + (int64_t)wait_ms * 1000000;
    atomic_store_explicit(&m->stats.connected, 0, memory_order_relaxed);
    set_error(m, "%s", text);
    sl_say(was_up ? SL_SAY_WARN : SL_SAY_INFO, "mqtt", "%s %s: %s; trying again in %" PRIu64 " ms",
           was_up ? "lost" : "cannot connect to", m->config.broker, text, wait_ms);
}

static void on_subscribe(struct mosquitto *mosq, void *ctx, int mid, int qos_count,
                         const int *granted)
{
    struct sl_mqtt *m = ctx;
    (void)mosq;
    (void)mid;
    for (int i = 0; i < qos_count; i++) {
        if (granted[i] == 0x80) {
            set_error(m, "the broker refused a subscription (SUBACK 0x80)");
            sl_say(SL_SAY_WARN, "mqtt", "%s refused a subscription (mid %d)", m->config.broker,
                   mid);
        }
    }
}

/* Subscribe to every filter in force (QoS 1). */
static void subscribe_all(struct sl_mqtt *m)
{
    for (uint32_t i = 0; i < m->active_count; i++) {
        int rc = mosquitto_subscribe(m->mosq, NULL, m->active[i].filter, 1);
        if (rc != MOSQ_ERR_SUCCESS) {
            sl_say(SL_SAY_WARN, "mqtt", "subscribe '%s': %s", m->active[i].filter,
                   mosquitto_strerror(rc));
        }
    }
}

/* SIGHUP's subscriptions: unsubscribe what is gone, subscribe what is new, keep the rest. */
static void apply_reload(struct sl_mqtt *m, bool connected)
{
    pthread_mutex_lock(&m->mu);
    if (!m->reload) {
        pthread_mutex_unlock(&m->mu);
        return;
    }
    m->reload = false;
    struct sl_mqtt_subscription old[SL_MQTT_SUBSCRIPTIONS_MAX];
    uint32_t old_count = m->active_count;
    memcpy(old, m->active, old_count * sizeof old[0]);
    memcpy(m->active, m->wanted, m->wanted_count * sizeof old[0]);
    m->active_count = m->wanted_count;
    pthread_mutex_unlock(&m->mu);
    for (uint32_t i = 0; i < old_count; i++) {
        bool kept = false;
        for (uint32_t j = 0; j < m->active_count; j++) {
            kept |= strcmp(old[i].filter, m->active[j].filter) == 0;
        }
        if (!kept) {
            sl_say(SL_SAY_INFO, "mqtt", "unsubscribed from '%s'", old[i].filter);
            if (connected) {
                mosquitto_unsubscribe(m->mosq, NULL, old[i].filter);
            }
        }
    }
    for (uint32_t j = 0; j < m->active_count; j++) {
        bool had = false;
        for (uint32_t i = 0; i < old_count; i++) {
            had |= strcmp(old[i].filter, m->active[j].filter) == 0;
        }
        if (!had) {
            sl_say(SL_SAY_INFO, "mqtt", "subscribed to '%s' (%s)", m->active[j].filter,
                   sl_mqtt_format_name(m->active[j].format));
            if (connected) {
                mosquitto_subscribe(m->mosq, NULL, m->active[j].filter, 1);
            }
        }
    }
}

void sl_mqtt_reload(struct sl_mqtt *m, const struct sl_mqtt_config *config)
{
    pthread_mutex_lock(&m->mu);
    memcpy(m->wanted, config->subscriptions, config->subscription_count * sizeof *m->wanted);
    m->wanted_count = config->subscription_count;
    m->reload = true;
    pthread_mutex_unlock(&m->mu);
}

static bool readable_now(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR)) != 0;
}

/* Connected and readable: read a round, commit it, acknowledge it. -1: the connection went. */
static int serve_round(struct sl_mqtt *m, struct conn *c)
{
    int fd = mosquitto_socket(m->mosq);
    do {
        int rc = mosquitto_loop_read(m->mosq, 1);
        if (rc != MOSQ_ERR_SUCCESS) {
            round_discard(m); /* not stored, not acknowledged: the broker sends them again */
            if (c->state == CONNECTING && c->connack && c->connack_rc != 0) {
                go_down(m, c, "the broker refused the connection: %s",
                        mosquitto_connack_string(c->connack_rc)); /* its CONNACK says why */
            } else {
                go_down(m, c, "%s: %s", lost_what(c), mosquitto_strerror(rc));
            }
            return -1;
        }
        fd = mosquitto_socket(m->mosq);
    } while (fd >= 0 && round_has_room(m) && readable_now(fd) &&
             atomic_load_explicit(&m->stop, memory_order_relaxed) == 0);
    if (m->overflow) {
        m->overflow = false;
        round_discard(m);
        go_down(m, c, "a round overflowed: not acknowledged, delivered again");
        return -1;
    }
    if (m->message_count == 0) {
        return fd >= 0 ? 0 : -1;
    }
    if (!round_commit(m)) {
        count(&m->stats.rounds_refused, 1);
        c->attempt = c->refused++; /* refused again and again: back off, never flood the broker */
        sl_say_limited(&say_refused, SL_SAY_WARN, "mqtt",
                       "the log did not take a round of messages: not acknowledged, the broker "
                       "delivers them again after reconnecting");
        go_down(m, c, "the log refused messages (not acknowledged; delivered again)");
        return -1;
    }
    count(&m->stats.rounds, 1);
    c->refused = 0;
    int rc = mosquitto_loop_write(m->mosq, SL_MQTT_ROUND_MESSAGES + 8);
    if (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_NO_CONN) {
        go_down(m, c, "%s: %s", lost_what(c), mosquitto_strerror(rc));
        return -1;
    }
    return 0;
}

/* CONNACK (inside mosquitto_loop_read, on the thread): taken up by the loop. */
static void on_connect(struct mosquitto *mosq, void *ctx, int rc)
{
    struct sl_mqtt *m = ctx;
    struct conn *c = m->conn;
    (void)mosq;
    c->connack = true;
    c->connack_rc = rc;
}

static void try_connect(struct sl_mqtt *m, struct conn *c)
{
    int rc = c->ever_up || c->attempt > 0 ? mosquitto_reconnect_async(m->mosq)
                                           : mosquitto_connect_async(m->mosq, m->config.host,
                                                                     (int)m->config.port,
                                                                     (int)m->config.keepalive_s);
    if (rc == MOSQ_ERR_ERRNO) {
        go_down(m, c, "connect: %s", strerror(errno));
        return;
    }
    if (rc != MOSQ_ERR_SUCCESS) {
        go_down(m, c, "connect: %s", mosquitto_strerror(rc));
        return;
    }
    c->state = CONNECTING;
    c->connack = false;
    c->deadline_ns = sl_clock_monotonic_ns() + (int64_t)SL_MQTT_CONNECT_TIMEOUT_MS * 1000000;
}

static void connected(struct sl_mqtt *m, struct conn *c)
{
    if (c->connack_rc != 0) {
        go_down(m, c, "the broker refused the connection: %s",
                mosquitto_connack_string(c->connack_rc));
        return;
    }
    c->state = UP;
    if (c->ever_up) {
        count(&m->stats.reconnects, 1);
    }
    c->ever_up = true;
    c->attempt = 0;
    atomic_store_explicit(&m->stats.connected, 1, memory_order_relaxed);
    set_error(m, "%s", "");
    sl_say(SL_SAY_INFO, "mqtt", "connected to %s as '%s'; %u subscriptions at QoS 1",
           m->config.broker, m->client_id, m->active_count);
    subscribe_all(m);
}

static void *run(void *arg)
{
    struct sl_mqtt *m = arg;
    struct conn c = {.state = DOWN, .next_try_ns = 0};
    m->conn = &c;
    while (atomic_load_explicit(&m->stop, memory_order_relaxed) == 0) {
        int64_t now = sl_clock_monotonic_ns();
        apply_reload(m, c.state == UP);
        if (c.state == DOWN) {
            if (now < c.next_try_ns) {
                int64_t ms = (c.next_try_ns - now) / 1000000 + 1;
                poll(NULL, 0, (int)(ms < POLL_MS ? ms : POLL_MS));
                continue;
            }
            try_connect(m, &c);
            continue;
        }
        int fd = mosquitto_socket(m->mosq);
        if (fd < 0) {
            go_down(m, &c, "%s", lost_what(&c));
            continue;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (mosquitto_want_write(m->mosq)) {
            p.events |= POLLOUT;
        }
        int n = poll(&p, 1, POLL_MS);
        if (n < 0 && errno != EINTR) {
            go_down(m, &c, "poll: %s", strerror(errno));
            continue;
        }
        if (n > 0 && (p.revents & POLLOUT) != 0) {
            int rc = mosquitto_loop_write(m->mosq, SL_MQTT_ROUND_MESSAGES + 8);
            if (rc != MOSQ_ERR_SUCCESS) {
                go_down(m, &c, "%s: %s", lost_what(&c), mosquitto_strerror(rc));
                continue;
            }
        }
        if (n > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
            if (serve_round(m, &c) != 0) {
                continue;
            }
        }
        if (c.state == CONNECTING && c.connack) {
            connected(m, &c);
        } else if (c.state == CONNECTING && sl_clock_monotonic_ns() > c.deadline_ns) {
            go_down(m, &c, "no CONNACK within %u ms", SL_MQTT_CONNECT_TIMEOUT_MS);
            continue;
        }
        int rc = mosquitto_loop_misc(m->mosq);
        if (rc != MOSQ_ERR_SUCCESS || mosquitto_socket(m->mosq) < 0) {
            go_down(m, &c, "%s",
                    rc == MOSQ_ERR_SUCCESS ? "connection lost (keepalive)" : mosquitto_strerror(rc));
        }
    }
    if (c.state == UP) {
        mosquitto_disconnect(m->mosq);
        mosquitto_loop_write(m->mosq, SL_MQTT_ROUND_MESSAGES + 8);
    }
    atomic_store_explicit(&m->stats.connected, 0, memory_order_relaxed);
    m->conn = NULL;
    return NULL;
}

int sl_mqtt_start(struct sl_mqtt *m, char *err, uint32_t err_bytes)
{
    struct mosquitto *mosq = mosquitto_new(m->client_id, false, m);
    if (mosq == NULL) {
        return FAIL("mqtt: mosquitto_new: %s", strerror(errno));
    }
    m->mosq = mosq;
    mosquitto_threaded_set(mosq, true); /* every packet waits for our loop_write: see the header */
    mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    if (m->config.username[0] != '\0' &&
        mosquitto_username_pw_set(mosq, m->config.username,
                                  m->has_password ? m->password : NULL) != MOSQ_ERR_SUCCESS) {
        return FAIL("mqtt: the username or password is not accepted by libmosquitto");
    }
    mosquitto_connect_callback_set(mosq, on_connect);
    mosquitto_message_callback_set(mosq, on_message);
    mosquitto_subscribe_callback_set(mosq, on_subscribe);
    if (pthread_create(&m->thread, NULL, run, m) != 0) {
        return FAIL("mqtt: cannot start its thread");
    }
    pthread_setname_np(m->thread, "sluice-mqtt");
    m->started = true;
    return 0;
}

void sl_mqtt_stop(struct sl_mqtt *m)
{
    if (!m->started) {
        return;
    }
    atomic_store_explicit(&m->stop, 1, memory_order_relaxed);
    pthread_join(m->thread, NULL);
    m->started = false;
    mosquitto_destroy(m->mosq);
    m->mosq = NULL;
    pthread_cond_destroy(&m->cond);
    pthread_mutex_destroy(&m->mu);
}
