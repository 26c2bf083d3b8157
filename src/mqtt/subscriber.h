/*
 * The MQTT subscriber (docs/spec/MQTT.md): one thread, `sluice-mqtt`, a
 * durable client of one broker through libmosquitto (MQTT 3.1.1, a fixed
 * client id, clean session off, QoS 1), handing each message to the ingest
 * thread through the line hub's MQTT slots (net/lines.h), so every message
 * goes through the commit pipeline like any other input.
 *
 * What a PUBACK promises. Debian's libmosquitto 2.0.11 sends the PUBACK of a
 * QoS 1 message before it calls on_message (eclipse/mosquitto#2884), unless
 * the client is in "threaded" mode (mosquitto_threaded_set): then every
 * packet the library sends is queued and leaves only from
 * mosquitto_loop_write, which this thread calls itself. So the thread works
 * in rounds: it reads whatever messages the socket holds (up to a round:
 * SL_MQTT_ROUND_MESSAGES, or the round buffer's room for one more largest
 * payload), copies each into the round buffer, submits them all, waits until
 * the ingest thread says each is durable under --sync and applied (or
 * refused), and only then writes the queued PUBACKs. A round the log refused
 * is never acknowledged: the connection is dropped (reconnecting discards the
 * queued PUBACKs) and the broker delivers those messages again from the
 * persistent session.
 *
 * Memory: the round buffer and the message table from the arena at start;
 * libmosquitto's own heap on this thread only (one incoming packet at a time
 * and the queued PUBACKs), planned as mqtt_library.
 */
#ifndef SL_MQTT_SUBSCRIBER_H
#define SL_MQTT_SUBSCRIBER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/plan.h"
#include "net/lines.h"

#define SL_MQTT_SUBSCRIPTIONS_MAX 32u
#define SL_MQTT_FILTER_MAX 1024u /* bytes of a topic filter */
#define SL_MQTT_CLIENT_ID_MAX 128u
#define SL_MQTT_USERNAME_MAX 256u
#define SL_MQTT_PASSWORD_MAX 1024u /* bytes of the password file */
#define SL_MQTT_HOST_MAX 253u
#define SL_MQTT_PAYLOAD_DEFAULT (1ull << 20) /* --mqtt-max-payload */
#define SL_MQTT_PAYLOAD_MIN 64u
#define SL_MQTT_PAYLOAD_MAX (64ull << 20)
#define SL_MQTT_KEEPALIVE_S_DEFAULT 30u /* --mqtt-keepalive */
#define SL_MQTT_KEEPALIVE_S_MIN 5u      /* libmosquitto's least */
#define SL_MQTT_KEEPALIVE_S_MAX 65535u  /* MQTT's field */
/* Messages a round takes before their readings are committed and acknowledged. */
#define SL_MQTT_ROUND_MESSAGES 256u
/* The round buffer: at least this, and room for two largest payloads. */
#define SL_MQTT_ROUND_BYTES_MIN (4ull << 20)
#define SL_MQTT_BACKOFF_MIN_MS 100u /* reconnects: full jitter from here ... */
#define SL_MQTT_BACKOFF_MAX_MS 30000u /* ... doubling up to here */
#define SL_MQTT_CONNECT_TIMEOUT_MS 10000u /* TCP connect and CONNACK */
#define SL_MQTT_ERROR_BYTES 256u
#define SL_MQTT_PLAN_LIBRARY_PART "mqtt_library" /* stated, not mapped: libmosquitto mallocs */

enum sl_mqtt_format { SL_MQTT_NATIVE = 0, SL_MQTT_LINE = 1, SL_MQTT_VALUE = 2 };

/* Message results, the label of sluice_mqtt_messages_total. */
enum sl_mqtt_result {
    SL_MQTT_OK = 0,
    SL_MQTT_BAD = 1,       /* did not parse (a line of it, or the frame), too large, no format */
    SL_MQTT_DUPLICATE = 2, /* native: a batch_seq already applied */
    SL_MQTT_RETAINED = 3,  /* a retained copy sent at subscribe time: not a new reading */
};
#define SL_MQTT_RESULT_COUNT 4

struct sl_mqtt_subscription {
    char filter[SL_MQTT_FILTER_MAX + 1];
    uint8_t format; /* enum sl_mqtt_format */
};

struct sl_mqtt_config {
    bool on;
    char broker[SL_MQTT_HOST_MAX + 32]; /* mqtt://HOST:PORT as shown */
    char host[SL_MQTT_HOST_MAX + 1];
    uint16_t port;
    char client_id[SL_MQTT_CLIENT_ID_MAX + 1]; /* "": sluice-<hostname> */
    char username[SL_MQTT_USERNAME_MAX + 1];
    char password_file[4096];
    uint32_t keepalive_s;
    uint64_t max_payload;
    uint32_t subscription_count;
    struct sl_mqtt_subscription subscriptions[SL_MQTT_SUBSCRIPTIONS_MAX];
};

void sl_mqtt_config_default(struct sl_mqtt_config *config);

/* --mqtt-broker: "off" or mqtt://HOST[:PORT]. 0, or -1 with a reason. */
int sl_mqtt_set_broker(struct sl_mqtt_config *config, const char *url, char *err, uint32_t err_bytes);

/* One --mqtt-subscribe FILTER=FORMAT, appended. 0, or -1 with a reason. */
int sl_mqtt_add_subscription(struct sl_mqtt_config *config, const char *spec, char *err,
                             uint32_t err_bytes);

const char *sl_mqtt_format_name(uint32_t format);
const char *sl_mqtt_result_name(uint32_t result);

/* Counters: the subscriber thread writes them, /metrics and /api/v1/mqtt read them. */
struct sl_mqtt_stats {
    _Atomic uint32_t connected;
    _Atomic uint64_t messages[SL_MQTT_RESULT_COUNT];
    _Atomic uint64_t reconnects;  /* connections made after the first */
    _Atomic uint64_t rounds;      /* rounds committed and acknowledged */
    _Atomic uint64_t rounds_refused; /* rounds the log refused: not acknowledged, delivered again */
    _Atomic uint64_t readings_accepted;
    _Atomic uint64_t readings_rejected;
};

struct sl_mqtt_message; /* a round's entry (subscriber.c) */

struct sl_mqtt {
    struct sl_mqtt_config config;
    char client_id[SL_MQTT_CLIENT_ID_MAX + 1]; /* the one used */
    char password[SL_MQTT_PASSWORD_MAX + 1];
    bool has_password;
    struct sl_lines_hub *hub; /* the line side's MQTT slots */
    struct sl_mqtt_stats stats;
    /* The round: its buffer and messages (arena). */
    uint8_t *round;
    uint64_t round_bytes;
    uint64_t round_used;
    struct sl_mqtt_message *messages;
    uint32_t message_count;
    uint32_t done; /* under mu: messages the ingest thread finished */
    bool overflow; /* a message found no room in the round (never, with libmosquitto 2.0) */
    /* Under mu: the subscriptions in force, those SIGHUP asked for, the last error. */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct sl_mqtt_subscription *active; /* SL_MQTT_SUBSCRIPTIONS_MAX (arena) */
    uint32_t active_count;
    struct sl_mqtt_subscription *wanted; /* SL_MQTT_SUBSCRIPTIONS_MAX (arena) */
    uint32_t wanted_count;
    bool reload;
    char last_error[SL_MQTT_ERROR_BYTES];
    _Atomic int stop;
    bool started;
    pthread_t thread;
    void *mosq; /* struct mosquitto, the thread's */
    void *conn; /* the thread's connection state (subscriber.c) */
};

/* The subscriber's parts of the plan (nothing when off). */
void sl_mqtt_plan(const struct sl_mqtt_config *config, struct sl_plan *plan);

/* libmosquitto's global set-up is sl_uplinks_global_init's (main thread, before any thread). */

/*
 * Take the planned parts, read the password file, hook into the line hub's
 * MQTT slots (hub->count must be SL_MQTT_ROUND_MESSAGES). Main thread,
 * before the ingest thread starts. 0, or -1 with a reason.
 */
int sl_mqtt_open(struct sl_mqtt *m, const struct sl_mqtt_config *config, struct sl_lines_hub *hub,
                 struct sl_arena *arena, char *err, uint32_t err_bytes);

int sl_mqtt_start(struct sl_mqtt *m, char *err, uint32_t err_bytes);

/* SIGHUP: subscribe to what is new, unsubscribe from what is gone (main thread). */
void sl_mqtt_reload(struct sl_mqtt *m, const struct sl_mqtt_config *config);

/* Finish the round under way (its messages acknowledged), disconnect, join. */
void sl_mqtt_stop(struct sl_mqtt *m);

/* Readers (any thread): the last error ("" when none), a subscription in force (false past the end). */
void sl_mqtt_last_error(struct sl_mqtt *m, char *out, uint32_t out_bytes);
bool sl_mqtt_subscription_at(struct sl_mqtt *m, uint32_t i, struct sl_mqtt_subscription *out);

#endif
