/*
 * device_sender: the smallest acked sender, to copy into a device or a
 * collector. Reads lines "sensor_id,time_us,value" on stdin (time_us empty:
 * now), sends them over TCP with acks, and at end of input waits until every
 * batch is stored, then prints what the gateway said.
 *
 *     build/device_sender tcp://127.0.0.1:7400 42 < readings.csv
 *
 * The stream id (42) is this sender's identity. Run it again with the same
 * id and it goes on where the last run stopped: the library starts its
 * batch_seq at the current time, so nothing new is taken for a duplicate.
 * Build it outside this tree with: cc device_sender.c $(pkg-config --cflags --libs sluice)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/client.h"

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s tcp://HOST:PORT STREAM_ID < lines of id,time_us,value\n", argv[0]);
        return 2;
    }
    struct sl_client_options options;
    sl_client_options_init(&options);
    options.stream_id = (uint32_t)strtoul(argv[2], NULL, 10);

    struct sl_client *client;
    int rc = sl_client_open(&client, argv[1], &options);
    if (rc < 0) {
        fprintf(stderr, "device_sender: %s: %s\n", argv[1], sl_client_strerror(rc));
        return 1;
    }
    char line[256];
    uint64_t line_number = 0;
    while (rc >= 0 && fgets(line, sizeof line, stdin) != NULL) {
        line_number++;
        char *end;
        uint32_t id = (uint32_t)strtoul(line, &end, 10);
        if (*end != ',') {
            fprintf(stderr, "device_sender: line %" PRIu64 ": expected id,time_us,value\n", line_number);
            continue;
        }
        char *time_text = end + 1;
        int64_t time_us = strtoll(time_text, &end, 10);
        if (end == time_text) {
            time_us = 0; /* empty: now */
        }
        if (*end != ',') {
            fprintf(stderr, "device_sender: line %" PRIu64 ": expected id,time_us,value\n", line_number);
            continue;
        }
        float value = strtof(end + 1, NULL);
        if (time_us == 0) {
            rc = (int)sl_client_append_array(client, &id, &value, NULL, 1); /* stamped now */
        } else {
            rc = sl_client_append(client, id, time_us, value);
        }
    }
    if (rc >= 0) {
        rc = sl_client_flush(client, 30000); /* wait up to 30 s for every ack */
    }
    struct sl_client_counts n;
    sl_client_counts(client, &n);
    printf("batches %" PRIu64 " readings %" PRIu64 " accepted %" PRIu64 " rejected %" PRIu64
           " duplicate %" PRIu64 " resent %" PRIu64 " reconnects %" PRIu64 "\n",
           n.batches, n.readings, n.accepted, n.rejected, n.duplicate, n.resent, n.reconnects);
    if (rc < 0) {
        int why = sl_client_last_error(client);
        fprintf(stderr, "device_sender: %s (last error: %s)\n", sl_client_strerror(rc),
                sl_client_strerror(why));
    }
    sl_client_close(client);
    return rc < 0 ? 1 : 0;
}
