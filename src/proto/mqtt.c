/*
 * MQTT `value` payloads to line protocol (mqtt.h).
 */
#include "proto/mqtt.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static const char *const error_names[SL_MQTT_ERROR_COUNT] = {
    "ok", "bad_number", "bad_time", "bad_topic", "too_long",
};

const char *sl_mqtt_error_name(int error)
{
    if (error < 0) {
        error = -error;
    }
    return error >= 0 && error < SL_MQTT_ERROR_COUNT ? error_names[error] : "unknown";
}

static bool is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

/* The length of the float literal at p[0, n), or 0 when there is none. */
static size_t number_len(const uint8_t *p, size_t n)
{
    size_t i = 0;
    if (i < n && (p[i] == '-' || p[i] == '+')) {
        i++;
    }
    size_t int_digits = 0, frac_digits = 0;
    while (i < n && is_digit(p[i])) {
        i++;
        int_digits++;
    }
    if (i < n && p[i] == '.') {
        i++;
        while (i < n && is_digit(p[i])) {
            i++;
            frac_digits++;
        }
    }
    if (int_digits == 0 && frac_digits == 0) {
        return 0;
    }
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        if (i < n && (p[i] == '-' || p[i] == '+')) {
            i++;
        }
        size_t exp_digits = 0;
        while (i < n && is_digit(p[i])) {
            i++;
            exp_digits++;
        }
        if (exp_digits == 0) {
            return 0;
        }
    }
    return i;
}

/* " <time>" at p[0, n) into *t_ns: false when it is not one whose nanoseconds fit. */
static bool parse_time(const uint8_t *p, size_t n, int64_t *t_ns)
{
    size_t i = 0;
    if (i >= n || p[i] != ' ') {
        return false;
    }
    i++;
    bool negative = i < n && p[i] == '-';
    i += negative;
    if (i == n || n - i > 19) {
        return false;
    }
    uint64_t v = 0;
    for (; i < n; i++) {
        if (!is_digit(p[i])) {
            return false;
        }
        v = v * 10 + (uint64_t)(p[i] - '0'); /* 19 digits fit a uint64 */
    }
    if (v > (uint64_t)INT64_MAX / 1000u) {
        return false;
    }
    *t_ns = negative ? -(int64_t)(v * 1000u) : (int64_t)(v * 1000u);
    return true;
}

long sl_mqtt_value_line(const char *topic, size_t topic_len, const uint8_t *payload,
                        size_t payload_len, int64_t now_us, char *out, size_t cap)
{
    if (topic_len == 0 || topic_len > SL_MQTT_TOPIC_MAX) {
        return -SL_MQTT_BAD_TOPIC;
    }
    for (size_t i = 0; i < topic_len; i++) {
        uint8_t c = (uint8_t)topic[i];
        if (c < 0x20 || c == 0x7f || c == '\\') {
            return -SL_MQTT_BAD_TOPIC;
        }
    }
    size_t n = payload_len;
    if (n > 0 && payload[n - 1] == '\n') {
        n--;
        if (n > 0 && payload[n - 1] == '\r') {
            n--;
        }
    }
    size_t num = number_len(payload, n);
    if (num == 0) {
        return -SL_MQTT_BAD_NUMBER;
    }
    int64_t t_ns;
    if (num == n) {
        if (now_us > INT64_MAX / 1000 || now_us < INT64_MIN / 1000) {
            return -SL_MQTT_BAD_TIME;
        }
        t_ns = now_us * 1000;
    } else if (!parse_time(payload + num, n - num, &t_ns)) {
        return -SL_MQTT_BAD_TIME;
    }
    static const char head[] = "mqtt,topic=", field[] = " value=";
    size_t o = 0;
    /* Bounded: the escaped topic, the number and 21 bytes of time at most. */
    if (cap < sizeof head - 1 + 2 * topic_len + sizeof field - 1 + num + 1 + 21 + 1) {
        return -SL_MQTT_TOO_LONG;
    }
    memcpy(out, head, sizeof head - 1);
    o += sizeof head - 1;
    for (size_t i = 0; i < topic_len; i++) {
        char c = topic[i];
        if (c == ',' || c == '=' || c == ' ') {
            out[o++] = '\\';
        }
        out[o++] = c;
    }
    memcpy(out + o, field, sizeof field - 1);
    o += sizeof field - 1;
    memcpy(out + o, payload, num);
    o += num;
    int w = snprintf(out + o, cap - o, " %" PRId64 "\n", t_ns); /* room checked above */
    return (long)o + w;
}
