/*
 * The uplinks' configuration (uplink.h): `--uplink NAME=URL` and the
 * options that refer to an output by its name. An mqtt:// URL is
 * `mqtt://HOST[:PORT]/TOPIC[?format=line|native&qos=1]`: the topic is
 * everything after the first '/' up to '?', taken as it is written (no
 * percent-decoding, so '%' is refused; no wildcard, since one publishes to
 * a topic, never to a filter). Pure: no I/O (token files
 * are read by sl_uplinks_open), start-up and SIGHUP's re-parse.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "uplink/uplink.h"
#include "daemon/config.h"

void sl_uplinks_config_default(struct sl_uplinks_config *config)
{
    memset(config, 0, sizeof *config);
    config->timeout_ms = SL_UPLINK_TIMEOUT_MS_DEFAULT;
    config->backoff_max_ms = SL_UPLINK_BACKOFF_MAX_MS_DEFAULT;
    config->flush_interval_ms = SL_UPLINK_FLUSH_MS_DEFAULT;
    config->batch_bytes = SL_UPLINK_BATCH_BYTES_DEFAULT;
    config->dead_bytes = SL_UPLINK_DEAD_BYTES_DEFAULT;
}

static int fail(char *err, uint32_t err_bytes, const char *fmt, const char *a, const char *b)
{
    snprintf(err, err_bytes, fmt, a, b);
    return -1;
}

static bool valid_name(const char *s, size_t n)
{
    if (n == 0 || n > SL_UPLINK_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '_')) {
            return false;
        }
    }
    return true;
}

static struct sl_uplink_output_config *find(struct sl_uplinks_config *c, const char *name, size_t n)
{
    for (uint32_t i = 0; i < c->count; i++) {
        if (strlen(c->outputs[i].name) == n && memcmp(c->outputs[i].name, name, n) == 0) {
            return &c->outputs[i];
        }
    }
    return NULL;
}

/* Query parameters whose values are secrets (InfluxDB 1.x credentials, tokens): shown as ***. */
static bool secret_key(const char *key, size_t n)
{
    static const char *const keys[] = {"p", "u", "password", "token", "authorization"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (strlen(keys[i]) == n && strncasecmp(keys[i], key, n) == 0) {
            return true;
        }
    }
    return false;
}

/* The query with secret values masked, appended to out. */
static void mask_query(char *out, size_t out_bytes, const char *query)
{
    size_t len = strlen(out);
    const char *p = query;
    while (*p != '\0' && len + 1 < out_bytes) {
        const char *amp = strchr(p, '&');
        size_t n = amp != NULL ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        int w;
        if (eq != NULL && secret_key(p, (size_t)(eq - p))) {
            w = snprintf(out + len, out_bytes - len, "%.*s=***", (int)(eq - p), p);
        } else {
            w = snprintf(out + len, out_bytes - len, "%.*s", (int)n, p);
        }
        if (w < 0 || (size_t)w >= out_bytes - len) {
            return;
        }
        len += (size_t)w;
        p += n;
        if (*p == '&') {
            if (len + 1 < out_bytes) {
                out[len++] = '&';
                out[len] = '\0';
            }
            p++;
        }
    }
}

/* An HTTP output's URL as before mqtt:// came (its topic needs the longer SL_UPLINK_URL_BYTES). */
#define SL_UPLINK_HTTP_URL_MAX 1024u

/* `?format=line|native&qos=1`: 0, or -1 with err set. */
static int mqtt_query(struct sl_uplink_output_config *o, const char *spec, const char *query,
                      char *err, uint32_t err_bytes)
{
    const char *p = query;
    /* Bounded: each turn consumes one key=value and its '&'. */
    while (*p != '\0') {
        size_t n = strcspn(p, "&");
        const char *eq = memchr(p, '=', n);
        size_t kn = eq != NULL ? (size_t)(eq - p) : n;
        const char *v = eq != NULL ? eq + 1 : "";
        size_t vn = eq != NULL ? n - kn - 1 : 0;
        if (kn == 6 && memcmp(p, "format", 6) == 0 && vn == 4 && memcmp(v, "line", 4) == 0) {
            o->format = SL_UPLINK_FORMAT_LINE;
        } else if (kn == 6 && memcmp(p, "format", 6) == 0 && vn == 6 &&
                   memcmp(v, "native", 6) == 0) {
            o->format = SL_UPLINK_FORMAT_NATIVE;
        } else if (kn == 6 && memcmp(p, "format", 6) == 0) {
            return fail(err, err_bytes, "--uplink: '%s': format must be line or native%s", spec,
                        "");
        } else if (kn == 3 && memcmp(p, "qos", 3) == 0 && !(vn == 1 && v[0] == '1')) {
            return fail(err, err_bytes,
                        "--uplink: '%s': qos must be 1 (the cursor moves on the broker's PUBACK; "
                        "QoS 0 has none, QoS 2 is not supported)%s",
                        spec, "");
        } else if (!(kn == 3 && memcmp(p, "qos", 3) == 0)) {
            snprintf(err, err_bytes,
                     "--uplink: '%s': unknown query key '%.*s' (mqtt:// takes format and qos)",
                     spec, (int)(kn < 64 ? kn : 64), p);
            return -1;
        }
        p += n;
        if (*p == '&') {
            p++;
        }
    }
    return 0;
}

/* `mqtt://HOST[:PORT]/TOPIC[?QUERY]` into the next output. */
static int add_mqtt(struct sl_uplinks_config *c, const char *spec, size_t name_len, const char *url,
                    char *err, uint32_t err_bytes)
{
    const char *rest = url + 7;
    size_t hp_len = strcspn(rest, "/?");
    if (memchr(rest, '@', hp_len) != NULL) {
        return fail(err, err_bytes,
                    "--uplink: '%s': mqtt:// takes no user or password in this version%s", spec,
                    "");
    }
    if (hp_len == 0 || hp_len >= SL_UPLINK_HOST_BYTES) {
        return fail(err, err_bytes, "--uplink: '%s': needs HOST[:PORT] after mqtt://%s", spec, "");
    }
    char hp[SL_UPLINK_HOST_BYTES + 8], host[SL_UPLINK_HOST_BYTES], why[300];
    memcpy(hp, rest, hp_len);
    hp[hp_len] = '\0';
    const char *colon = strrchr(hp, ':');
    bool has_port = colon != NULL && (hp[0] != '[' || colon[-1] == ']');
    if (!has_port) { /* the default port; "[v6]" or a name */
        snprintf(hp + hp_len, sizeof hp - hp_len, ":%u", SL_UPLINK_MQTT_PORT_DEFAULT);
    }
    uint16_t port = 0;
    if (sl_config_split_addr(hp, host, sizeof host, &port, why, sizeof why) != 0 || port == 0) {
        return fail(err, err_bytes, "--uplink: '%s': needs HOST[:PORT] after mqtt://%s", spec, "");
    }
    if (rest[hp_len] != '/') {
        return fail(err, err_bytes,
                    "--uplink: '%s': mqtt:// needs a topic: mqtt://HOST:PORT/TOPIC%s", spec, "");
    }
    const char *topic = rest + hp_len + 1;
    size_t topic_len = strcspn(topic, "?");
    if (topic_len == 0) {
        return fail(err, err_bytes,
                    "--uplink: '%s': mqtt:// needs a topic: mqtt://HOST:PORT/TOPIC%s", spec, "");
    }
    if (topic_len > SL_UPLINK_TOPIC_MAX) {
        snprintf(err, err_bytes, "--uplink: '%.*s': the topic is longer than 1024 bytes (%zu)",
                 (int)name_len, spec, topic_len);
        return -1;
    }
    if (memchr(topic, '+', topic_len) != NULL || memchr(topic, '#', topic_len) != NULL) {
        return fail(err, err_bytes,
                    "--uplink: '%s': the topic has a wildcard (+ or #): one publishes to a topic, "
                    "not a filter%s",
                    spec, "");
    }
    if (memchr(topic, '%', topic_len) != NULL) {
        return fail(err, err_bytes,
                    "--uplink: '%s': no '%%' in the topic (it is taken as written, not "
                    "percent-decoded)%s",
                    spec, "");
    }
    struct sl_uplink_output_config *o = &c->outputs[c->count];
    memset(o, 0, sizeof *o);
    memcpy(o->name, spec, name_len);
    o->kind = SL_UPLINK_MQTT;
    o->format = SL_UPLINK_FORMAT_LINE;
    const char *q = topic[topic_len] == '?' ? topic + topic_len + 1 : "";
    if (mqtt_query(o, spec, q, err, err_bytes) != 0) {
        return -1;
    }
    snprintf(o->url, sizeof o->url, "%s", url);
    snprintf(o->host, sizeof o->host, "%s", host);
    o->port = port;
    memcpy(o->topic, topic, topic_len);
    o->topic[topic_len] = '\0';
    /* No credentials in an mqtt:// URL: shown as given, with the port the output uses. */
    const char *v6 = strchr(host, ':') != NULL ? "[" : "";
    snprintf(o->shown_url, sizeof o->shown_url, "mqtt://%s%s%s:%u/%.*s?format=%s&qos=1", v6, host,
             v6[0] != '\0' ? "]" : "", (unsigned)port, (int)topic_len, topic,
             o->format == SL_UPLINK_FORMAT_NATIVE ? "native" : "line");
    c->count++;
    return 0;
}

static const struct {
    const char *scheme;
    enum sl_uplink_kind kind;
    const char *default_path;
} schemes[] = {
    {"influx://", SL_UPLINK_INFLUX, "/write"},
    {"influx2://", SL_UPLINK_INFLUX2, "/api/v2/write"},
    {"promrw://", SL_UPLINK_PROMRW, "/api/v1/write"},
};

int sl_uplinks_add(struct sl_uplinks_config *c, const char *spec, char *err, uint32_t err_bytes)
{
    const char *eq = strchr(spec, '=');
    if (eq == NULL) {
        return fail(err, err_bytes, "--uplink: '%s' is not NAME=URL%s", spec, "");
    }
    size_t name_len = (size_t)(eq - spec);
    if (!valid_name(spec, name_len)) {
        return fail(err, err_bytes,
                    "--uplink: '%s': the name must be 1 to 32 of a-z, 0-9 and _%s", spec, "");
    }
    if (find(c, spec, name_len) != NULL) {
        return fail(err, err_bytes, "--uplink: '%s': that name is taken%s", spec, "");
    }
    if (c->count == SL_UPLINKS_MAX) {
        return fail(err, err_bytes, "--uplink: '%s': at most 8 outputs%s", spec, "");
    }
    const char *url = eq + 1;
    if (strlen(url) >= SL_UPLINK_URL_BYTES) {
        return fail(err, err_bytes, "--uplink: '%s': the URL is longer than 2047 bytes%s", spec,
                    "");
    }
    for (const char *p = url; *p != '\0'; p++) {
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f) {
            return fail(err, err_bytes,
                        "--uplink: '%s': a space, control or non-ASCII byte in the URL "
                        "(percent-encode it)%s", spec, "");
        }
    }
    int k = -1;
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
        if (strncmp(url, schemes[i].scheme, strlen(schemes[i].scheme)) == 0) {
            k = (int)i;
        }
    }
    if (k < 0) {
        if (strncmp(url, "mqtt://", 7) == 0) {
            return add_mqtt(c, spec, name_len, url, err, err_bytes);
        }
        return fail(err, err_bytes,
                    "--uplink: '%s': the URL must start influx://, influx2://, promrw:// or "
                    "mqtt://%s",
                    spec, "");
    }
    if (strlen(url) >= SL_UPLINK_HTTP_URL_MAX) {
        return fail(err, err_bytes, "--uplink: '%s': the URL is longer than 1023 bytes%s", spec,
                    "");
    }
    const char *rest = url + strlen(schemes[k].scheme);
    /* [user[:password]@]HOST:PORT[/PATH][?QUERY] */
    size_t auth_len = strcspn(rest, "/?");
    const char *at = memchr(rest, '@', auth_len);
    const char *hostport = at != NULL ? at + 1 : rest;
    size_t hp_len = auth_len - (size_t)(hostport - rest);
    char hp[SL_UPLINK_URL_BYTES], host[SL_UPLINK_URL_BYTES], why[300];
    memcpy(hp, hostport, hp_len);
    hp[hp_len] = '\0';
    uint16_t port = 0;
    if (sl_config_split_addr(hp, host, sizeof host, &port, why, sizeof why) != 0 || port == 0) {
        return fail(err, err_bytes, "--uplink: '%s': needs HOST:PORT after the scheme%s", spec, "");
    }
    const char *path = rest + auth_len;
    const char *q = strchr(path, '?');
    size_t path_len = q != NULL ? (size_t)(q - path) : strlen(path);
    const char *query = q != NULL ? q + 1 : "";
    char path_buf[SL_UPLINK_URL_BYTES];
    if (path_len == 0) {
        snprintf(path_buf, sizeof path_buf, "%s", schemes[k].default_path);
    } else {
        snprintf(path_buf, sizeof path_buf, "%.*s", (int)path_len, path);
    }
    if (schemes[k].kind == SL_UPLINK_INFLUX2 && (strstr(query, "bucket=") == NULL)) {
        return fail(err, err_bytes, "--uplink: '%s': influx2:// needs ?org=O&bucket=B%s", spec, "");
    }
    struct sl_uplink_output_config *o = &c->outputs[c->count];
    memset(o, 0, sizeof *o);
    memcpy(o->name, spec, name_len);
    snprintf(o->url, sizeof o->url, "%s", url);
    o->kind = schemes[k].kind;
    /* precision: InfluxDB 1.x says u, 2.x us (both are microseconds; VictoriaMetrics takes both). */
    const char *precision = o->kind == SL_UPLINK_INFLUX ? "precision=u"
                            : o->kind == SL_UPLINK_INFLUX2 ? "precision=us"
                                                            : "";
    const char *sep = query[0] != '\0' && precision[0] != '\0' ? "&" : "";
    int n = snprintf(o->http_url, sizeof o->http_url, "http://%.*s%s%s%s%s%s", (int)auth_len, rest,
                     path_buf, query[0] != '\0' || precision[0] != '\0' ? "?" : "", query, sep,
                     precision);
    if (n < 0 || (size_t)n >= sizeof o->http_url) {
        return fail(err, err_bytes, "--uplink: '%s': the URL is too long%s", spec, "");
    }
    int m = snprintf(o->shown_url, sizeof o->shown_url, "%s%s", schemes[k].scheme, hp);
    if (m > 0 && (size_t)m < sizeof o->shown_url) {
        snprintf(o->shown_url + m, sizeof o->shown_url - (size_t)m, "%.*s%s",
                 (int)(sizeof o->shown_url - (size_t)m - 2), path_buf, query[0] != '\0' ? "?" : "");
    }
    mask_query(o->shown_url, sizeof o->shown_url, query);
    c->count++;
    return 0;
}

int sl_uplinks_add_tag(struct sl_uplinks_config *c, const char *spec, char *err, uint32_t err_bytes)
{
    const char *eq = strchr(spec, '=');
    if (eq == NULL || eq == spec || eq[1] == '\0') {
        return fail(err, err_bytes, "--uplink-tag: '%s' is not KEY=VALUE%s", spec, "");
    }
    size_t kn = (size_t)(eq - spec), vn = strlen(eq + 1);
    if (kn >= SL_UPLINK_TAG_BYTES || vn >= SL_UPLINK_TAG_BYTES) {
        return fail(err, err_bytes, "--uplink-tag: '%s': key and value are at most 255 bytes%s",
                    spec, "");
    }
    for (size_t i = 0; spec[i] != '\0'; i++) {
        if (spec[i] == '\n' || spec[i] == '\r' || spec[i] == '\\' || spec[i] == '"') {
            return fail(err, err_bytes,
                        "--uplink-tag: '%s': no newline, backslash or quote in a tag%s", spec, "");
        }
    }
    if (c->tags_count == SL_UPLINK_TAGS_MAX) {
        return fail(err, err_bytes, "--uplink-tag: '%s': at most 16 tags%s", spec, "");
    }
    memcpy(c->tag_keys[c->tags_count], spec, kn);
    c->tag_keys[c->tags_count][kn] = '\0';
    memcpy(c->tag_values[c->tags_count], eq + 1, vn + 1);
    c->tags_count++;
    return 0;
}

/* "NAME=REST": the output it names, with *rest after the '='; NULL with err set. */
static struct sl_uplink_output_config *named(struct sl_uplinks_config *c, const char *flag,
                                             const char *spec, const char **rest, char *err,
                                             uint32_t err_bytes)
{
    const char *eq = strchr(spec, '=');
    if (eq == NULL || eq[1] == '\0') {
        snprintf(err, err_bytes, "--%s: '%s' is not NAME=VALUE", flag, spec);
        return NULL;
    }
    struct sl_uplink_output_config *o = find(c, spec, (size_t)(eq - spec));
    if (o == NULL) {
        snprintf(err, err_bytes, "--%s: '%s': no --uplink is named '%.*s'", flag, spec,
                 (int)(eq - spec), spec);
        return NULL;
    }
    *rest = eq + 1;
    return o;
}

int sl_uplinks_set_token(struct sl_uplinks_config *c, const char *spec, char *err, uint32_t err_bytes)
{
    const char *file = NULL;
    struct sl_uplink_output_config *o = named(c, "uplink-token", spec, &file, err, err_bytes);
    if (o == NULL) {
        return -1;
    }
    if (o->kind == SL_UPLINK_MQTT) {
        return fail(err, err_bytes,
                    "--uplink-token: '%s': an mqtt:// output takes no token (no broker "
                    "credentials in this version)%s",
                    spec, "");
    }
    if (strlen(file) >= sizeof o->token_file) {
        return fail(err, err_bytes, "--uplink-token: '%s': the path is too long%s", spec, "");
    }
    snprintf(o->token_file, sizeof o->token_file, "%s", file);
    return 0;
}

int sl_uplinks_set_mode(struct sl_uplinks_config *c, const char *spec, char *err, uint32_t err_bytes)
{
    const char *mode = NULL;
    struct sl_uplink_output_config *o = named(c, "uplink-mode", spec, &mode, err, err_bytes);
    if (o == NULL) {
        return -1;
    }
    if (strcmp(mode, "raw") == 0) {
        o->mode = SL_UPLINK_RAW;
        return 0;
    }
    if (strncmp(mode, "aggregate:", 10) == 0 && o->kind == SL_UPLINK_MQTT) {
        return fail(err, err_bytes,
                    "--uplink-mode: '%s': an mqtt:// output forwards raw readings only in this "
                    "version%s",
                    spec, "");
    }
    if (strncmp(mode, "aggregate:", 10) == 0) {
        int64_t us = sl_config_parse_duration_us(mode + 10);
        if (us >= 1000000 && us <= 366LL * 86400 * 1000000 && us % 1000000 == 0) {
            o->mode = SL_UPLINK_AGGREGATE;
            o->bucket_us = us;
            return 0;
        }
    }
    return fail(err, err_bytes,
                "--uplink-mode: '%s' is not NAME=raw or NAME=aggregate:D (D whole seconds, 1s to "
                "366d, e.g. aggregate:60s)%s",
                spec, "");
}

const char *sl_uplink_mode_text(const struct sl_uplink_output_config *o, char *out, uint32_t out_bytes)
{
    if (o->mode == SL_UPLINK_RAW) {
        snprintf(out, out_bytes, "raw");
    } else {
        snprintf(out, out_bytes, "aggregate:%llds", (long long)(o->bucket_us / 1000000));
    }
    return out;
}

int sl_uplinks_set_stream_id(struct sl_uplinks_config *c, const char *spec, char *err,
                             uint32_t err_bytes)
{
    const char *id = NULL;
    struct sl_uplink_output_config *o = named(c, "uplink-stream-id", spec, &id, err, err_bytes);
    if (o == NULL) {
        return -1;
    }
    if (o->kind != SL_UPLINK_MQTT || o->format != SL_UPLINK_FORMAT_NATIVE) {
        return fail(err, err_bytes,
                    "--uplink-stream-id: '%s': only an mqtt:// output with format=native sends a "
                    "stream id%s",
                    spec, "");
    }
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(id, &end, 10);
    if (!isdigit((unsigned char)id[0]) || *end != '\0' || errno != 0 || v > UINT32_MAX) {
        return fail(err, err_bytes,
                    "--uplink-stream-id: '%s' is not NAME=ID with ID from 0 to 4294967295%s", spec,
                    "");
    }
    o->stream_id = (uint32_t)v;
    o->stream_id_set = true;
    return 0;
}
