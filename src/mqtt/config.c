/*
 * The subscriber's options (MQTT.md): --mqtt-broker and --mqtt-subscribe
 * parsed and checked, the format and result names. No I/O: fuzz_config
 * links it with the daemon's option table (libmosquitto only for its topic
 * filter check, a pure function).
 */
#include <errno.h>
#include <mosquitto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/assert.h"
#include "daemon/config.h" /* sl_config_fail, as uplink/config.c borrows from it */
#include "mqtt/subscriber.h"

static const char *const format_names[] = {"native", "line", "value"};
static const char *const result_names[SL_MQTT_RESULT_COUNT] = {"ok", "bad", "duplicate",
                                                               "retained"};

const char *sl_mqtt_format_name(uint32_t format)
{
    return format < SL_ARRAY_COUNT(format_names) ? format_names[format] : "unknown";
}

const char *sl_mqtt_result_name(uint32_t result)
{
    return result < SL_MQTT_RESULT_COUNT ? result_names[result] : "unknown";
}

/* ---- configuration ---- */

void sl_mqtt_config_default(struct sl_mqtt_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->broker, sizeof c->broker, "off");
    c->keepalive_s = SL_MQTT_KEEPALIVE_S_DEFAULT;
    c->max_payload = SL_MQTT_PAYLOAD_DEFAULT;
}

int sl_mqtt_set_broker(struct sl_mqtt_config *c, const char *url, char *err, uint32_t err_bytes)
{
    if (strcmp(url, "off") == 0) {
        c->on = false;
        snprintf(c->broker, sizeof c->broker, "off");
        return 0;
    }
    if (strncmp(url, "mqtt://", 7) != 0) {
        return sl_config_fail(err, err_bytes,
                              "--mqtt-broker: '%s' is not mqtt://HOST[:PORT] or off", url);
    }
    const char *h = url + 7;
    const char *colon = strrchr(h, ':');
    const char *end = h + strlen(h);
    if (end > h && end[-1] == '/') {
        end--; /* mqtt://host:1883/ */
    }
    unsigned long port = 1883;
    size_t host_len = (size_t)(end - h);
    if (colon != NULL && colon < end && h[0] != '[') {
        char *stop = NULL;
        errno = 0;
        port = strtoul(colon + 1, &stop, 10);
        if (errno != 0 || stop != end || colon + 1 == end || port == 0 || port > 65535) {
            return sl_config_fail(err, err_bytes, "--mqtt-broker: '%s': the port is not 1 to 65535",
                                  url);
        }
        host_len = (size_t)(colon - h);
    }
    if (host_len == 0 || host_len > SL_MQTT_HOST_MAX) {
        return sl_config_fail(err, err_bytes,
                              "--mqtt-broker: '%s': no host, or a host over %u bytes", url,
                              SL_MQTT_HOST_MAX);
    }
    for (size_t i = 0; i < host_len; i++) {
        unsigned char ch = (unsigned char)h[i];
        if (ch <= 0x20 || ch >= 0x7F || ch == '/' || ch == '@' || ch == '?' || ch == '#') {
            return sl_config_fail(
                err, err_bytes,
                "--mqtt-broker: '%s': the host has a character that is not allowed "
                "(credentials go in --mqtt-username and --mqtt-password-file)",
                url);
        }
    }
    memcpy(c->host, h, host_len);
    c->host[host_len] = '\0';
    c->port = (uint16_t)port;
    c->on = true;
    snprintf(c->broker, sizeof c->broker, "mqtt://%s:%lu", c->host, port);
    return 0;
}

int sl_mqtt_add_subscription(struct sl_mqtt_config *c, const char *spec, char *err,
                             uint32_t err_bytes)
{
    const char *eq = strrchr(spec, '=');
    if (eq == NULL || eq == spec) {
        return sl_config_fail(err, err_bytes, "--mqtt-subscribe: '%s' is not FILTER=FORMAT", spec);
    }
    int format = -1;
    for (uint32_t i = 0; i < SL_ARRAY_COUNT(format_names); i++) {
        if (strcmp(eq + 1, format_names[i]) == 0) {
            format = (int)i;
        }
    }
    if (format < 0) {
        return sl_config_fail(err, err_bytes,
                              "--mqtt-subscribe: '%s': the format is not native, line or value",
                              spec);
    }
    size_t len = (size_t)(eq - spec);
    if (len > SL_MQTT_FILTER_MAX) {
        return sl_config_fail(err, err_bytes,
                              "--mqtt-subscribe: the filter is longer than %u bytes",
                              SL_MQTT_FILTER_MAX);
    }
    if (c->subscription_count == SL_MQTT_SUBSCRIPTIONS_MAX) {
        return sl_config_fail(err, err_bytes, "--mqtt-subscribe: more than %u subscriptions",
                              SL_MQTT_SUBSCRIPTIONS_MAX);
    }
    struct sl_mqtt_subscription *s = &c->subscriptions[c->subscription_count];
    memcpy(s->filter, spec, len);
    s->filter[len] = '\0';
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)s->filter[i] < 0x20 || s->filter[i] == 0x7F) {
            return sl_config_fail(err, err_bytes,
                                  "--mqtt-subscribe: the filter has a control character");
        }
    }
    if (mosquitto_sub_topic_check(s->filter) != MOSQ_ERR_SUCCESS) {
        return sl_config_fail(
            err, err_bytes,
            "--mqtt-subscribe: '%s' is not a topic filter ('+' and '#' stand alone "
            "between '/', '#' only last)",
            s->filter);
    }
    for (uint32_t i = 0; i < c->subscription_count; i++) {
        if (strcmp(c->subscriptions[i].filter, s->filter) == 0) {
            return sl_config_fail(err, err_bytes, "--mqtt-subscribe: '%s' is given twice",
                                  s->filter);
        }
    }
    s->format = (uint8_t)format;
    c->subscription_count++;
    return 0;
}

