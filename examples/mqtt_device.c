/*
 * mqtt_device: a device that publishes native batch frames to an MQTT
 * broker, for a Sluice subscribing with `--mqtt-subscribe TOPIC=native`
 * (docs/spec/MQTT.md). Reads lines "sensor_id,time_us,value" on stdin
 * (time_us empty: now), packs up to 1,000 readings a frame with libsluice's
 * codec (sl_batch_encode: header, readings, CRC-32C), and publishes each
 * frame at QoS 1 with libmosquitto; at end of input it waits for every
 * PUBACK and says how many frames the broker took.
 *
 *     build/mqtt_device 127.0.0.1 1883 plant/dev-42/batches 42 < readings.csv
 *
 * The stream id (42) is the device's identity; batch_seq starts at the wall
 * clock in microseconds (PROTOCOL.md's restart rule) and goes up by one a
 * frame, so a frame the broker delivers twice is stored once, and a device
 * that restarts is never taken for a duplicate.
 * Build it outside this tree with:
 *     cc mqtt_device.c $(pkg-config --cflags --libs sluice libmosquitto)
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <mosquitto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice/protocol.h"

#define FRAME_READINGS 1000

static int published;
static _Atomic int acked; /* written by libmosquitto's thread */

static void on_publish(struct mosquitto *mosq, void *ctx, int mid)
{
    (void)mosq, (void)ctx, (void)mid;
    acked++;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Encode the readings gathered into one frame and publish it at QoS 1. */
static int send_frame(struct mosquitto *mosq, const char *topic, struct sl_batch_header *h,
                      const struct sl_reading *readings, uint32_t count)
{
    static uint8_t frame[SL_BATCH_BYTES(FRAME_READINGS)];
    h->count = (uint16_t)count;
    size_t bytes = sl_batch_encode(frame, sizeof frame, h, readings);
    if (bytes == 0) {
        fprintf(stderr, "mqtt_device: the frame does not encode\n");
        return -1;
    }
    int rc = mosquitto_publish(mosq, NULL, topic, (int)bytes, frame, 1, false);
    if (rc != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "mqtt_device: publish: %s\n", mosquitto_strerror(rc));
        return -1;
    }
    published++;
    h->batch_seq++;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s HOST PORT TOPIC STREAM_ID < lines of id,time_us,value\n", argv[0]);
        return 2;
    }
    mosquitto_lib_init();
    struct mosquitto *mosq = mosquitto_new(NULL, true, NULL);
    if (mosq == NULL) {
        fprintf(stderr, "mqtt_device: mosquitto_new failed\n");
        return 1;
    }
    mosquitto_publish_callback_set(mosq, on_publish);
    int rc = mosquitto_connect(mosq, argv[1], atoi(argv[2]), 30);
    if (rc == MOSQ_ERR_SUCCESS) {
        rc = mosquitto_loop_start(mosq);
    }
    if (rc != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "mqtt_device: %s:%s: %s\n", argv[1], argv[2], mosquitto_strerror(rc));
        return 1;
    }
    struct sl_batch_header h = {.version = SL_PROTOCOL_VERSION,
                                .stream_id = (uint32_t)strtoul(argv[4], NULL, 10),
                                .batch_seq = (uint64_t)now_us()};
    static struct sl_reading readings[FRAME_READINGS];
    uint32_t count = 0;
    char line[256];
    while (fgets(line, sizeof line, stdin) != NULL) {
        char *end;
        uint32_t id = (uint32_t)strtoul(line, &end, 10);
        if (*end != ',') {
            continue;
        }
        char *time_text = end + 1;
        int64_t t = strtoll(time_text, &end, 10);
        if (end == time_text) {
            t = now_us();
        }
        float value = strtof(end + 1, NULL);
        /* A frame's readings lie in [base, base + 2^32 - 1] us: cut before one that does not. */
        if (count > 0 && (count == FRAME_READINGS || t < h.base_time_us ||
                          (uint64_t)(t - h.base_time_us) > UINT32_MAX)) {
            if (send_frame(mosq, argv[3], &h, readings, count) != 0) {
                return 1;
            }
            count = 0;
        }
        if (count == 0) {
            h.base_time_us = t;
        }
        readings[count++] = (struct sl_reading){id, (uint32_t)(t - h.base_time_us), value};
    }
    if (count > 0 && send_frame(mosq, argv[3], &h, readings, count) != 0) {
        return 1;
    }
    for (int waited = 0; acked < published && waited < 300; waited++) {
        struct timespec ms100 = {0, 100000000};
        nanosleep(&ms100, NULL); /* the library's thread takes the PUBACKs; 30 s at most */
    }
    mosquitto_disconnect(mosq);
    mosquitto_loop_stop(mosq, false);
    mosquitto_destroy(mosq);
    mosquitto_lib_cleanup();
    printf("mqtt_device: %d frames published, %d acknowledged by the broker\n", published, acked);
    return acked == published ? 0 : 1;
}
