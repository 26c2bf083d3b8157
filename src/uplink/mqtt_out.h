/*
 * The mqtt:// output's client (uplink.h): one MQTT 3.1.1 connection of
 * libmosquitto, driven by the forwarder thread that owns it. It publishes
 * one message at a time at QoS 1 and waits for that message's PUBACK; it
 * never runs libmosquitto's own thread or loop (mosquitto_loop_start,
 * _forever): it polls mosquitto_socket and calls mosquitto_loop_read,
 * _write and _misc itself, so every callback runs on the forwarder's
 * thread, inside those calls.
 *
 * Clean session, and after any failure of a publish the handle is
 * reinitialised: the library never keeps (or resends on a reconnect) a
 * message of its own. The forwarder resends the request whole from its
 * cursor, after its backoff. Memory: libmosquitto has no allocator hook;
 * it mallocs the one message in flight twice until it is written (its
 * message and its packet) and once until the PUBACK, plus the handle and
 * a few small packets (SL_UPLINK_MOSQUITTO_SLACK_BYTES): uplink.c states
 * the bound in the plan's uplink_libraries row.
 */
#ifndef SL_UPLINK_MQTT_OUT_H
#define SL_UPLINK_MQTT_OUT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "uplink/uplink.h"

#define SL_MQTT_OUT_KEEPALIVE_S 30
#define SL_MQTT_OUT_CLIENT_ID_BYTES (SL_UPLINK_NAME_MAX + 80u) /* sluice-up-NAME-<hostname> */
#define SL_MQTT_OUT_WHY_BYTES 256u

struct mosquitto;

/* One output's connection. Every field is the forwarder thread's. */
struct sl_mqtt_out {
    struct mosquitto *mosq;
    char client_id[SL_MQTT_OUT_CLIENT_ID_BYTES];
    const struct sl_uplink_output_config *cfg;
    uint32_t timeout_ms; /* the CONNACK's and the PUBACK's deadline (--uplink-timeout) */
    bool connected;      /* CONNACK 0 seen, not lost since */
    bool started;        /* a connect was started on this handle: reconnect_async next */
    int connack_rc;      /* the broker's refusal (1..5); 0: none */
    bool lost;           /* the connection closed (on_disconnect) */
    int pending_mid;     /* the message waited for; 0: none */
    bool acked;          /* its PUBACK came */
    /* Asked between polls: give up now (the gateway stops past its deadline). */
    bool (*abort_now)(void *ctx);
    void *abort_ctx;
    _Atomic uint64_t *bytes_sent; /* the payload bytes that left are added here (or NULL) */
};

/* Once, main thread, before any thread starts: mosquitto_lib_init. 0 or -1. */
int sl_mqtt_out_global_init(void);

/*
 * Start-up, main thread: a handle for output `cfg` (kept by pointer),
 * client id `sluice-up-NAME-<hostname>`, clean session, not connected yet.
 * 0, or -1 with a reason in err.
 */
int sl_mqtt_out_open(struct sl_mqtt_out *m, const struct sl_uplink_output_config *cfg,
                     uint32_t timeout_ms, char *err, uint32_t err_bytes);

/*
 * Forwarder thread: publish payload[0, bytes) to cfg->topic at QoS 1,
 * retain false, connecting first when not connected (a CONNACK within
 * timeout_ms), and wait up to timeout_ms for its PUBACK. 0 when the broker
 * acknowledged it; -1 with why ("connect: Connection refused", "broker
 * refused: not authorised", "no PUBACK within 10000 ms", "connection lost")
 * when it may not have: the handle is then reset, nothing of the message is
 * kept, and the caller resends after its backoff. Once the message is
 * handed to the socket, `bytes` is added to *m->bytes_sent.
 */
int sl_mqtt_out_publish(struct sl_mqtt_out *m, const void *payload, uint32_t bytes, char *why,
                        uint32_t why_bytes);

/*
 * Forwarder thread, between requests: serve the connection (keepalive
 * pings, the broker closing it) for up to ms milliseconds; returns at once
 * when not connected.
 */
void sl_mqtt_out_idle(struct sl_mqtt_out *m, int ms);

/* Shutdown, after the forwarder joined: disconnect and free the handle. */
void sl_mqtt_out_close(struct sl_mqtt_out *m);

#endif
