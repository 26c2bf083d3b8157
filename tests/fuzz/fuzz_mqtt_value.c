/*
 * libFuzzer target for the MQTT `value` payload (src/proto/mqtt.c).
 *
 * Input: byte 0 is the topic's length (0 to 255), then the topic, then the
 * payload (the rest); the receive time is fixed. Proves, on arbitrary
 * bytes: no read outside topic or payload and no write outside the output
 * (each sits in a heap block of exactly its length, so ASan sees one byte
 * over); a refusal is one of the named errors; a line fits
 * SL_MQTT_LINE_MAX, ends in its one '\n', and the line protocol parser
 * reads it back as measurement `mqtt`, the one tag `topic` whose
 * unescaped value is the topic byte for byte, the one float field `value`
 * equal to strtof of the number as written (for numbers up to 4,096 bytes),
 * and a time: the payload's microseconds x 1,000, or the receive time's.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "proto/line.h"
#include "proto/mqtt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NOW_US 1700000000123456ll
#define CHECKED_MAX 4096u

static struct sl_line line;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    size_t topic_len = data[0] < size - 1 ? data[0] : size - 1;
    char *topic = malloc(topic_len ? topic_len : 1);
    memcpy(topic, data + 1, topic_len);
    size_t payload_len = size - 1 - topic_len;
    uint8_t *payload = malloc(payload_len ? payload_len : 1);
    memcpy(payload, data + 1 + topic_len, payload_len);
    size_t cap = SL_MQTT_LINE_MAX(payload_len);
    char *out = malloc(cap);
    long n = sl_mqtt_value_line(topic, topic_len, payload, payload_len, NOW_US, out, cap);
    if (n < 0) {
        FUZZ_CHECK(n >= -4 && strcmp(sl_mqtt_error_name((int)n), "unknown") != 0);
        FUZZ_CHECK(n != -SL_MQTT_TOO_LONG); /* SL_MQTT_LINE_MAX is enough */
    } else {
        FUZZ_CHECK(n > 0 && (size_t)n <= cap && out[n - 1] == '\n');
        FUZZ_CHECK(memchr(out, '\n', (size_t)n - 1) == NULL);
        FUZZ_CHECK(sl_line_parse(out, (size_t)n - 1, &line) == SL_LINE_OK);
        FUZZ_CHECK(line.measurement.n == 4 && memcmp(line.measurement.p, "mqtt", 4) == 0);
        FUZZ_CHECK(line.tag_count == 1 && line.tags[0].key.n == 5 &&
                   memcmp(line.tags[0].key.p, "topic", 5) == 0);
        char *tv = malloc(line.tags[0].value.n + 1);
        size_t tn = sl_line_unescape_key(line.tags[0].value, tv);
        FUZZ_CHECK(tn == topic_len && memcmp(tv, topic, tn) == 0);
        free(tv);
        FUZZ_CHECK(line.field_count == 1 && line.fields[0].type == SL_LINE_FLOAT &&
                   line.fields[0].key.n == 5 && memcmp(line.fields[0].key.p, "value", 5) == 0);
        const struct sl_line_span *text = &line.fields[0].text;
        FUZZ_CHECK(text->n <= payload_len && memcmp(text->p, payload, text->n) == 0);
        if (text->n <= CHECKED_MAX) {
            char copy[CHECKED_MAX + 1];
            memcpy(copy, text->p, text->n);
            copy[text->n] = '\0';
            float ref = strtof(copy, NULL);
            FUZZ_CHECK(memcmp(&ref, &line.fields[0].value, sizeof ref) == 0);
        }
        FUZZ_CHECK(line.has_time);
        if (text->n == payload_len || payload[text->n] == '\n' || payload[text->n] == '\r') {
            FUZZ_CHECK(line.time == NOW_US * 1000);
        } else {
            FUZZ_CHECK(payload[text->n] == ' ');
            char copy[24] = {0};
            size_t tl = payload_len - text->n - 1;
            while (tl > 0 && (payload[text->n + 1 + tl - 1] == '\n' || payload[text->n + 1 + tl - 1] == '\r')) {
                tl--;
            }
            FUZZ_CHECK(tl >= 1 && tl < sizeof copy);
            memcpy(copy, payload + text->n + 1, tl);
            FUZZ_CHECK(line.time == strtoll(copy, NULL, 10) * 1000);
        }
    }
    free(out);
    free(payload);
    free(topic);
    return 0;
}
