/*
 * The MQTT `value` payload (src/proto/mqtt.c): the lines it becomes, read
 * back by the line protocol parser as one float field `value` of the
 * series `mqtt,topic=<topic>`; every way a payload or a topic is refused;
 * the time given or the receive time; the limits at their edges.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/line.h"
#include "proto/mqtt.h"
#include "testlib.h"

static char out[SL_MQTT_LINE_MAX(4096)];
static struct sl_line line;

static long value_line(const char *topic, const char *payload, int64_t now_us)
{
    return sl_mqtt_value_line(topic, strlen(topic), (const uint8_t *)payload, strlen(payload), now_us,
                              out, sizeof out);
}

/* The line for (topic, payload) is `want`, and the line parser reads it back as topic, v, t_ns. */
static void check_line(const char *topic, const char *payload, int64_t now_us, const char *want,
                       float v, int64_t t_ns)
{
    long n = value_line(topic, payload, now_us);
    CHECK(n > 0);
    if (n <= 0) {
        fprintf(stderr, "  refused %s %s: %s\n", topic, payload, sl_mqtt_error_name((int)n));
        return;
    }
    CHECK((size_t)n == strlen(want) && memcmp(out, want, (size_t)n) == 0);
    if ((size_t)n != strlen(want) || memcmp(out, want, (size_t)n) != 0) {
        fprintf(stderr, "  got %.*s  want %s", (int)n, out, want);
    }
    CHECK(out[n - 1] == '\n');
    CHECK_EQ(sl_line_parse(out, (size_t)n - 1, &line), SL_LINE_OK);
    CHECK(line.measurement.n == 4 && memcmp(line.measurement.p, "mqtt", 4) == 0);
    CHECK_EQ(line.tag_count, 1);
    char tv[2 * SL_MQTT_TOPIC_MAX];
    size_t tn = sl_line_unescape_key(line.tags[0].value, tv);
    CHECK(tn == strlen(topic) && memcmp(tv, topic, tn) == 0);
    CHECK_EQ(line.field_count, 1);
    CHECK(line.fields[0].type == SL_LINE_FLOAT && line.fields[0].key.n == 5 &&
          memcmp(line.fields[0].key.p, "value", 5) == 0);
    CHECK(line.fields[0].value == v);
    CHECK(line.has_time && line.time == t_ns);
}

static void check_refused(const char *topic, const char *payload, int error)
{
    long n = value_line(topic, payload, 1);
    CHECK_EQ(n, -error);
    if (n != -error) {
        fprintf(stderr, "  %s %s: %ld, want %s\n", topic, payload, n, sl_mqtt_error_name(error));
    }
}

int main(void)
{
    /* The spec's examples, with and without a time. */
    check_line("plant/1/temp", "21.5", 1700000000123456, "mqtt,topic=plant/1/temp value=21.5 1700000000123456000\n",
               21.5f, 1700000000123456000);
    check_line("plant/1/temp", "-3e2 1700000000000001", 5, "mqtt,topic=plant/1/temp value=-3e2 1700000000000001000\n",
               -300.0f, 1700000000000001000);
    /* The literal's forms, kept as written. */
    check_line("t", "7", 0, "mqtt,topic=t value=7 0\n", 7.0f, 0);
    check_line("t", "+.5", 0, "mqtt,topic=t value=+.5 0\n", 0.5f, 0);
    check_line("t", "2.", 0, "mqtt,topic=t value=2. 0\n", 2.0f, 0);
    check_line("t", "1E-3", 0, "mqtt,topic=t value=1E-3 0\n", 0.001f, 0);
    check_line("t", "0.1000000000000000000000000001", 0,
               "mqtt,topic=t value=0.1000000000000000000000000001 0\n", 0.1f, 0);
    /* One line end may follow; times before the epoch and at the int64 edge. */
    check_line("t", "1\n", 3, "mqtt,topic=t value=1 3000\n", 1.0f, 3000);
    check_line("t", "1 -5\r\n", 3, "mqtt,topic=t value=1 -5000\n", 1.0f, -5000);
    check_line("t", "1 9223372036854775", 0, "mqtt,topic=t value=1 9223372036854775000\n", 1.0f,
               9223372036854775000);
    check_line("t", "1 -9223372036854775", 0, "mqtt,topic=t value=1 -9223372036854775000\n", 1.0f,
               -9223372036854775000);
    /* Topics: commas, equals signs and spaces escaped; '#', '+', UTF-8 as they are. */
    check_line("a,b=c d", "1", 0, "mqtt,topic=a\\,b\\=c\\ d value=1 0\n", 1.0f, 0);
    check_line("caf\xc3\xa9/#/+", "1", 0, "mqtt,topic=caf\xc3\xa9/#/+ value=1 0\n", 1.0f, 0);

    /* Refused numbers. */
    const char *bad_numbers[] = {"", " 1", "x", "nan", "inf", "-", "+", ".", "e5", "1e", "1e+",
                                 "\n", "\r\n", ".e1"};
    for (size_t i = 0; i < sizeof bad_numbers / sizeof bad_numbers[0]; i++) {
        check_refused("t", bad_numbers[i], SL_MQTT_BAD_NUMBER);
    }
    /* Refused times, and anything else after the number. */
    const char *bad_times[] = {"1 ", "1  5", "1 5 ", "1 5x", "1\t5", "1 +5", "1 -", "1 5.0", "1i",
                               "1 10000000000000000000", "1 9223372036854776", "1 -9223372036854776",
                               "1\n\n", "1\r", "1 5\n5", "1,2", "0x10"};
    for (size_t i = 0; i < sizeof bad_times / sizeof bad_times[0]; i++) {
        check_refused("t", bad_times[i], SL_MQTT_BAD_TIME);
    }
    /* The receive time must fit too. */
    CHECK_EQ(sl_mqtt_value_line("t", 1, (const uint8_t *)"1", 1, INT64_MAX / 1000 + 1, out, sizeof out),
             -SL_MQTT_BAD_TIME);
    /* Refused topics. */
    const char *bad_topics[] = {"", "a\\b", "a\\", "a\nb", "a\tb", "a\x7f", "\x01"};
    for (size_t i = 0; i < sizeof bad_topics / sizeof bad_topics[0]; i++) {
        check_refused(bad_topics[i], "1", SL_MQTT_BAD_TOPIC);
    }
    static char topic[SL_MQTT_TOPIC_MAX + 2];
    memset(topic, ',', SL_MQTT_TOPIC_MAX + 1);
    CHECK_EQ(sl_mqtt_value_line(topic, SL_MQTT_TOPIC_MAX + 1, (const uint8_t *)"1", 1, 0, out, sizeof out),
             -SL_MQTT_BAD_TOPIC);
    /* The longest topic, all escaped, fits SL_MQTT_LINE_MAX; a buffer one short of the bound is refused. */
    long n = sl_mqtt_value_line(topic, SL_MQTT_TOPIC_MAX, (const uint8_t *)"1 -9223372036854775", 19, 0, out,
                                SL_MQTT_LINE_MAX(19));
    CHECK(n > 0 && (size_t)n <= SL_MQTT_LINE_MAX(19));
    CHECK_EQ(sl_mqtt_value_line("t", 1, (const uint8_t *)"1", 1, 0, out, 11 + 2 + 7 + 1 + 1 + 21), -SL_MQTT_TOO_LONG);
    CHECK(sl_mqtt_value_line("t", 1, (const uint8_t *)"1", 1, 0, out, 11 + 2 + 7 + 1 + 1 + 21 + 1) > 0);
    /* Names of the errors. */
    CHECK(strcmp(sl_mqtt_error_name(-SL_MQTT_BAD_NUMBER), "bad_number") == 0);
    CHECK(strcmp(sl_mqtt_error_name(SL_MQTT_TOO_LONG), "too_long") == 0);
    CHECK(strcmp(sl_mqtt_error_name(99), "unknown") == 0);
    TEST_END("test_mqtt");
}
