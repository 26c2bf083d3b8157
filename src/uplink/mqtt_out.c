/*
 * The mqtt:// output's client (mqtt_out.h): libmosquitto 2.0 with
 * mosquitto_threaded_set(true), driven by hand on the forwarder's thread.
 *
 * A publish is: connect when not connected (connect_async the first time
 * on a handle, reconnect_async after; then poll the socket and run
 * loop_read, loop_write and loop_misc until on_connect says CONNACK, the
 * broker refuses, the socket fails, or --uplink-timeout passes), then
 * mosquitto_publish at QoS 1 and poll until on_publish names its mid or
 * the same deadline passes. Every wait is a poll of at most POLL_MS, so a
 * stop past its deadline is seen within that.
 *
 * After a failed publish the handle is reinitialised (mosquitto_reinitialise
 * frees the message and every packet): a clean session holds nothing on
 * the broker's side, and the library holds nothing on ours, so the only
 * copy of a request that may resend it is the forwarder's, from its cursor.
 * A failed connect (nothing published) keeps the handle and reconnects.
 *
 * Memory: the handle (a few KiB), the one message in flight (malloc'd by
 * mosquitto_publish, and again in its PUBLISH packet until that is
 * written; the message is freed at its PUBACK), the CONNECT, PINGREQ and
 * PUBACK-sized packets. No allocator hook exists; the bound is stated in
 * the plan (uplink.c, uplink_libraries).
 */
#include "uplink/mqtt_out.h"

#include <errno.h>
#include <mosquitto.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/assert.h"
#include "core/clock.h"

#define POLL_MS 100

int sl_mqtt_out_global_init(void)
{
    return mosquitto_lib_init() == MOSQ_ERR_SUCCESS ? 0 : -1;
}

/* Callbacks: inside loop_read/_write/_misc, on the forwarder's thread. */
static void on_connect(struct mosquitto *mosq, void *obj, int rc)
{
    (void)mosq;
    struct sl_mqtt_out *m = obj;
    if (rc == 0) {
        m->connected = true;
    } else {
        m->connack_rc = rc;
    }
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc)
{
    (void)mosq;
    (void)rc;
    struct sl_mqtt_out *m = obj;
    m->connected = false;
    m->lost = true;
}

static void on_publish(struct mosquitto *mosq, void *obj, int mid)
{
    (void)mosq;
    struct sl_mqtt_out *m = obj;
    if (m->pending_mid != 0 && mid == m->pending_mid) {
        m->acked = true;
    }
}

/* Options and callbacks of a new (or reinitialised) handle. */
static int setup(struct sl_mqtt_out *m)
{
    mosquitto_connect_callback_set(m->mosq, on_connect);
    mosquitto_disconnect_callback_set(m->mosq, on_disconnect);
    mosquitto_publish_callback_set(m->mosq, on_publish);
    if (mosquitto_threaded_set(m->mosq, true) != MOSQ_ERR_SUCCESS ||
        mosquitto_int_option(m->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311) !=
            MOSQ_ERR_SUCCESS) {
        return -1;
    }
    m->connected = false;
    m->started = false;
    m->connack_rc = 0;
    m->lost = false;
    m->pending_mid = 0;
    m->acked = false;
    return 0;
}

int sl_mqtt_out_open(struct sl_mqtt_out *m, const struct sl_uplink_output_config *cfg,
                     uint32_t timeout_ms, char *err, uint32_t err_bytes)
{
    memset(m, 0, sizeof *m);
    m->cfg = cfg;
    m->timeout_ms = timeout_ms;
    char host[65] = "localhost";
    if (gethostname(host, sizeof host - 1) != 0) {
        snprintf(host, sizeof host, "localhost");
    }
    host[sizeof host - 1] = '\0';
    snprintf(m->client_id, sizeof m->client_id, "sluice-up-%s-%s", cfg->name, host);
    m->mosq = mosquitto_new(m->client_id, true, m);
    if (m->mosq == NULL || setup(m) != 0) {
        snprintf(err, err_bytes, "uplink %s: cannot start libmosquitto: %s", cfg->name,
                 strerror(errno));
        return -1;
    }
    return 0;
}

/* Forget the connection and anything the library holds (clean session: the broker does too). */
static void reset(struct sl_mqtt_out *m)
{
    mosquitto_disconnect(m->mosq);
    if (mosquitto_reinitialise(m->mosq, m->client_id, true, m) != MOSQ_ERR_SUCCESS ||
        setup(m) != 0) {
        /* Out of memory: the next publish finds the handle unusable and fails again. */
        m->connected = false;
    }
}

/* The broker's CONNACK refusal, as MQTT 3.1.1 names it. */
static const char *connack_text(int rc)
{
    static const char *const text[] = {
        "accepted",           "unacceptable protocol version", "identifier rejected",
        "server unavailable", "bad user name or password",     "not authorised"};
    return rc >= 0 && rc <= 5 ? text[rc] : "unknown reason";
}

/*
 * One poll of the socket and the loop calls it asks for. 0, or -1 with why
 * (`stage`: "connect" while no CONNACK came, else "connection").
 */
static int serve(struct sl_mqtt_out *m, int ms, const char *stage, char *why, uint32_t why_bytes)
{
    int fd = mosquitto_socket(m->mosq);
    if (fd < 0) {
        snprintf(why, why_bytes, "%s: connection lost", stage);
        return -1;
    }
    struct pollfd p = {.fd = fd, .events = POLLIN | (mosquitto_want_write(m->mosq) ? POLLOUT : 0)};
    int n = poll(&p, 1, ms);
    if (n < 0 && errno != EINTR) {
        snprintf(why, why_bytes, "%s: poll: %s", stage, strerror(errno));
        return -1;
    }
    int sock_err = 0;
    if (n > 0 && (p.revents & POLLERR) != 0) {
        socklen_t len = sizeof sock_err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &sock_err, &len) != 0) {
            sock_err = errno;
        }
    }
    int rc = MOSQ_ERR_SUCCESS;
    if (n > 0 && (p.revents & (POLLIN | POLLERR | POLLHUP)) != 0) {
        rc = mosquitto_loop_read(m->mosq, 1);
    }
    int saved = errno;
    if (rc == MOSQ_ERR_SUCCESS && mosquitto_want_write(m->mosq)) {
        rc = mosquitto_loop_write(m->mosq, 1);
        saved = errno;
    }
    if (rc == MOSQ_ERR_SUCCESS) {
        rc = mosquitto_loop_misc(m->mosq);
        saved = errno;
    }
    if (m->connack_rc != 0) {
        snprintf(why, why_bytes, "broker refused: %s", connack_text(m->connack_rc));
        return -1;
    }
    if (rc == MOSQ_ERR_SUCCESS && !m->lost) {
        return 0;
    }
    m->connected = false;
    if (sock_err != 0) {
        snprintf(why, why_bytes, "%s: %s", stage, strerror(sock_err));
    } else if (rc == MOSQ_ERR_ERRNO && saved != 0) {
        snprintf(why, why_bytes, "%s: %s", stage, strerror(saved));
    } else if (rc == MOSQ_ERR_CONN_LOST || rc == MOSQ_ERR_NO_CONN || rc == MOSQ_ERR_SUCCESS) {
        snprintf(why, why_bytes, "%s: connection lost", stage);
    } else {
        snprintf(why, why_bytes, "%s: %s", stage, mosquitto_strerror(rc));
    }
    return -1;
}

static bool aborted(const struct sl_mqtt_out *m)
{
    return m->abort_now != NULL && m->abort_now(m->abort_ctx);
}

/* Connect and wait for the CONNACK: 0, or -1 with why. */
static int connect_now(struct sl_mqtt_out *m, char *why, uint32_t why_bytes)
{
    m->connack_rc = 0;
    m->lost = false;
    errno = 0;
    int rc = m->started ? mosquitto_reconnect_async(m->mosq)
                        : mosquitto_connect_async(m->mosq, m->cfg->host, m->cfg->port,
                                                  SL_MQTT_OUT_KEEPALIVE_S);
    m->started = true;
    if (rc != MOSQ_ERR_SUCCESS) {
        int e = errno;
        if (rc == MOSQ_ERR_ERRNO && e != 0) {
            snprintf(why, why_bytes, "connect: %s", strerror(e));
        } else if (rc == MOSQ_ERR_EAI) {
            snprintf(why, why_bytes, "connect: cannot resolve %s", m->cfg->host);
        } else {
            snprintf(why, why_bytes, "connect: %s", mosquitto_strerror(rc));
        }
        return -1;
    }
    int64_t deadline = sl_clock_monotonic_ns() + (int64_t)m->timeout_ms * 1000000;
    /* Bounded by the deadline: each turn polls at most POLL_MS. */
    while (!m->connected) {
        int64_t left_ms = (deadline - sl_clock_monotonic_ns()) / 1000000;
        if (left_ms <= 0) {
            snprintf(why, why_bytes, "connect: no CONNACK within %u ms", m->timeout_ms);
            return -1;
        }
        if (aborted(m)) {
            snprintf(why, why_bytes, "connect: the gateway is stopping");
            return -1;
        }
        if (serve(m, left_ms < POLL_MS ? (int)left_ms : POLL_MS, "connect", why, why_bytes) != 0) {
            return -1;
        }
    }
    return 0;
}

/* The message left (no packet waits for the socket): its bytes count as sent, once. */
static void note_written(struct sl_mqtt_out *m, bool *wrote, uint32_t bytes)
{
    if (!*wrote && m->bytes_sent != NULL) {
        atomic_fetch_add_explicit(m->bytes_sent, bytes, memory_order_relaxed);
    }
    *wrote = true;
}

int sl_mqtt_out_publish(struct sl_mqtt_out *m, const void *payload, uint32_t bytes, char *why,
                        uint32_t why_bytes)
{
    bool wrote_flag = false;
    bool *wrote = &wrote_flag;
    if (!m->connected && connect_now(m, why, why_bytes) != 0) {
        if (m->connack_rc != 0) {
            reset(m); /* the broker closes a refused connection: start afresh */
        }
        return -1;
    }
    int mid = 0;
    m->acked = false;
    int rc = mosquitto_publish(m->mosq, &mid, m->cfg->topic, (int)bytes, payload, 1, false);
    if (rc != MOSQ_ERR_SUCCESS) {
        snprintf(why, why_bytes, "publish refused: %s", mosquitto_strerror(rc));
        reset(m);
        return -1;
    }
    SL_ASSERT(mid != 0);
    m->pending_mid = mid;
    int64_t deadline = sl_clock_monotonic_ns() + (int64_t)m->timeout_ms * 1000000;
    /* Bounded by the deadline: each turn polls at most POLL_MS. */
    while (!m->acked) {
        int64_t left_ms = (deadline - sl_clock_monotonic_ns()) / 1000000;
        if (left_ms <= 0) {
            snprintf(why, why_bytes, "no PUBACK within %u ms", m->timeout_ms);
            break;
        }
        if (aborted(m)) {
            snprintf(why, why_bytes, "publish: the gateway is stopping");
            break;
        }
        if (serve(m, left_ms < POLL_MS ? (int)left_ms : POLL_MS, "connection", why, why_bytes) !=
            0) {
            break;
        }
        if (!mosquitto_want_write(m->mosq)) {
            note_written(m, wrote, bytes);
        }
    }
    m->pending_mid = 0;
    if (m->acked) {
        note_written(m, wrote, bytes);
        return 0;
    }
    reset(m); /* the library must not resend it on its own */
    return -1;
}

void sl_mqtt_out_idle(struct sl_mqtt_out *m, int ms)
{
    if (!m->connected) {
        return;
    }
    char why[SL_MQTT_OUT_WHY_BYTES];
    if (serve(m, ms, "connection", why, sizeof why) != 0) {
        m->connected = false; /* nothing is in flight: the next publish reconnects */
    }
}

void sl_mqtt_out_close(struct sl_mqtt_out *m)
{
    if (m->mosq == NULL) {
        return;
    }
    if (m->connected) {
        mosquitto_disconnect(m->mosq);
        if (mosquitto_want_write(m->mosq)) {
            mosquitto_loop_write(m->mosq, 1); /* the DISCONNECT, best effort */
        }
    }
    mosquitto_destroy(m->mosq);
    m->mosq = NULL;
    m->connected = false;
}
