/*
 * The HTTP query API and /metrics (docs/spec/HTTP_API.md; contract in http.h).
 *
 * How. libmicrohttpd (MHD) runs exactly one internal polling thread (epoll
 * where MHD has it), with no thread pool: every handler shares the one
 * preallocated sensor view (context->view_memory) and the sorted id list
 * (context->sorted_ids), so one thread is what makes them safe without a
 * lock. We bind and listen on the socket ourselves and hand it to MHD
 * (MHD_OPTION_LISTEN_SOCKET), so a failed bind reports its errno exactly;
 * MHD then owns the socket and closes it in MHD_stop_daemon. Every request
 * is answered from the first access-handler call (a GET has no body); the
 * body is built into one malloc'd buffer whose size is bounded up front,
 * and MHD frees it after sending (MHD_RESPMEM_MUST_FREE), so every response
 * has a Content-Length.
 *
 * Reading the store. Only the store's reader API: sl_store_snapshot into
 * the shared view (a seqlock copy that never blocks the store's writer;
 * -EBUSY becomes 503 with Retry-After: 1), sl_view_window and
 * sl_view_lower_bound. The sensor list wants ascending ids while the store
 * keeps dense indices in arrival order and never removes a sensor, so the
 * first half of sorted_ids holds the ids of the first sorted_count sensors
 * in order, and each listing request extends it with the newcomers: their
 * ids go into the second half, are heap-sorted there (glibc's qsort may
 * malloc, heapsort never does and needs no recursion), and are merged in
 * from the back, in place. No allocation on that path.
 *
 * Parameters. Query values come from MHD_lookup_connection_value_n; when a
 * parameter is repeated the first one wins. Numbers are parsed strictly:
 * an optional '-' only where negatives are allowed, then decimal digits to
 * the end of the value (no spaces, '+', fractions, trailing bytes or
 * embedded NULs), no overflow, and within the documented range; anything
 * else is 400 naming the parameter. Unknown parameters are ignored.
 *
 * Numbers out. Integers exactly. Doubles (mean, stddev, ewma) print with
 * the fewest of 15..17 significant digits that read back to the same
 * double, f32 values (readings, last value, min, max) with the fewest of
 * 6..9 that read back to the same float; an integral value gets ".0" so it
 * stays a float to typed readers (22.0 as in the spec), and a non-finite
 * value prints as null, so the JSON is always valid. This relies on the C
 * locale for '.' (the daemon never calls setlocale).
 *
 * Memory and limits. The struct sl_http (a few hundred bytes) is calloc'd at
 * start. Per connection, MHD's pool of connection_memory_bytes, for at most
 * connections_max connections, each closed after timeout_s of inactivity,
 * so a slow, idle or hostile client costs a bounded amount (a request line
 * or header block larger than the pool gets MHD's 414/431 or a close).
 * Response bodies are transient mallocs bounded by the request's limits:
 * readings at most 48 B each (limit <= 1,000,000 and <= ring_readings),
 * the sensor list at most ~128 B per entry (limit <= 10,000), /metrics 64 KiB.
 * These allocations are the HTTP thread's, counted as SL_ALLOC_HTTP.
 *
 * Threads. sl_http_start and sl_http_stop run on the main thread; every
 * handler runs on MHD's single internal thread; counters shared with other
 * threads (connections open, requests by code) are relaxed atomics.
 */
#include "api/http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc_count.h"
#include "core/assert.h"

/*
 * The allocation counter is linked only into binaries that want it
 * (alloc_count.h), and the server library must not depend on it: weak
 * references resolve to NULL when it is absent, and the calls are skipped.
 */
#pragma weak sl_alloc_track
#pragma weak sl_alloc_count

#define SL_HTTP_LIST_LIMIT_DEFAULT 100u
#define SL_HTTP_LISTEN_BACKLOG 128
#define SL_HTTP_CONNECTION_MEMORY_MIN 4096u /* below this MHD cannot hold a request line */
#define SL_HTTP_METRICS_BODY_BYTES (64u * 1024)
#define SL_HTTP_READING_TEXT_BYTES 48u /* one reading in JSON or CSV: 20 + 1 + 16 + 1 < 48 */
#define SL_HTTP_LIST_ENTRY_BYTES 128u  /* one entry of the sensor list */
#define SL_HTTP_WINDOW_TEXT_BYTES 256u /* one window object and its key */
#define SL_HTTP_NUMBER_BYTES 32u       /* the longest number we print, with its NUL */
#define SL_HTTP_LABEL_BYTES_MAX 256u   /* longer label values (the version) are cut */

/* The status codes we answer with, for sluice_http_requests_total{code}. */
static const unsigned http_codes[] = {200, 400, 404, 405, 500, 503};
#define SL_HTTP_CODES_COUNT (sizeof http_codes / sizeof http_codes[0])

struct sl_http {
    struct MHD_Daemon *daemon;
    struct sl_http_context context;
    struct sl_sensor_view view; /* points into context.view_memory; MHD thread only */
    uint32_t sorted_count;      /* sorted_ids[0, sorted_count) is sorted; MHD thread only */
    int64_t window_s_max;       /* the longest configured window, in seconds */
    uint16_t port;
    _Atomic uint32_t connections_open;
    _Atomic uint64_t requests[SL_HTTP_CODES_COUNT];
};

/* ---- response bodies ---- */

/* A body under construction: a fixed-capacity malloc'd buffer (sizes are bounded up front). */
struct body {
    char *data;
    size_t len;
    size_t cap;
    bool overflow; /* a write did not fit: a bug in our bound, answered 500 */
};

static int body_open(struct body *b, size_t cap)
{
    b->data = malloc(cap > 0 ? cap : 1);
    b->len = 0;
    b->cap = cap;
    b->overflow = false;
    return b->data == NULL ? -ENOMEM : 0;
}

static void body_put(struct body *b, const char *s, size_t n)
{
    if (n > b->cap - b->len) {
        b->overflow = true;
        return;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

static void body_str(struct body *b, const char *s)
{
    body_put(b, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void body_fmt(struct body *b, const char *fmt, ...)
{
    size_t room = b->cap - b->len;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->data + b->len, room, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= room) {
        b->overflow = true;
        return;
    }
    b->len += (size_t)n;
}

/*
 * The shortest "%.*g" from `digits_min` to `digits_max` significant digits
 * that reads back to the same value (FLT_DIG/DBL_DIG make the low end
 * exact), with ".0" added to integral output; "null" when not finite.
 */
static void format_real(char out[SL_HTTP_NUMBER_BYTES], double v, bool is_f32)
{
    if (!isfinite(v)) {
        memcpy(out, "null", 5);
        return;
    }
    int digits_min = is_f32 ? 6 : 15;
    int digits_max = is_f32 ? 9 : 17;
    for (int digits = digits_min; digits <= digits_max; digits++) {
        snprintf(out, SL_HTTP_NUMBER_BYTES, "%.*g", digits, v);
        bool same = is_f32 ? strtof(out, NULL) == (float)v : strtod(out, NULL) == v;
        if (same) {
            break;
        }
    }
    if (strpbrk(out, ".eE") == NULL) {
        size_t n = strlen(out);
        SL_ASSERT(n + 3 <= SL_HTTP_NUMBER_BYTES);
        memcpy(out + n, ".0", 3);
    }
}

static void body_f32(struct body *b, float v)
{
    char text[SL_HTTP_NUMBER_BYTES];
    format_real(text, v, true);
    body_str(b, text);
}

static void body_f64(struct body *b, double v)
{
    char text[SL_HTTP_NUMBER_BYTES];
    format_real(text, v, false);
    body_str(b, text);
}

/* ---- answering ---- */

struct request {
    struct sl_http *http;
    struct MHD_Connection *connection;
    const char *id_text; /* the {id} path segment, not NUL-terminated */
    size_t id_len;
};

static void count_request(struct sl_http *http, unsigned code)
{
    for (uint32_t i = 0; i < SL_HTTP_CODES_COUNT; i++) {
        if (http_codes[i] == code) {
            atomic_fetch_add_explicit(&http->requests[i], 1, memory_order_relaxed);
            return;
        }
    }
    SL_ASSERT(0 && "a status code missing from http_codes");
}

/* Queue a response; the extra header (name may be NULL) is added when given. */
static enum MHD_Result queue(struct request *req, unsigned code, struct MHD_Response *response,
                             const char *content_type, const char *extra_name,
                             const char *extra_value)
{
    if (response == NULL) {
        return MHD_NO; /* out of memory: MHD closes the connection */
    }
    enum MHD_Result ok = MHD_add_response_header(response, "Content-Type", content_type);
    if (ok == MHD_YES && extra_name != NULL) {
        ok = MHD_add_response_header(response, extra_name, extra_value);
    }
    if (ok == MHD_YES) {
        ok = MHD_queue_response(req->connection, code, response);
    }
    MHD_destroy_response(response);
    if (ok == MHD_YES) {
        count_request(req->http, code);
    }
    return ok;
}

/* {"error": "<message>"}. Messages are ours and hold no character JSON must escape. */
__attribute__((format(printf, 3, 4))) static enum MHD_Result
reply_error(struct request *req, unsigned code, const char *fmt, ...)
{
    char message[256];
    char text[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    int n = snprintf(text, sizeof text, "{\"error\": \"%s\"}", message);
    SL_ASSERT(n > 0 && (size_t)n < sizeof text);
    struct MHD_Response *response =
        MHD_create_response_from_buffer((size_t)n, text, MHD_RESPMEM_MUST_COPY);
    if (code == MHD_HTTP_METHOD_NOT_ALLOWED) {
        return queue(req, code, response, "application/json", "Allow", "GET");
    }
    if (code == MHD_HTTP_SERVICE_UNAVAILABLE) {
        return queue(req, code, response, "application/json", "Retry-After", "1");
    }
    return queue(req, code, response, "application/json", NULL, NULL);
}

/* Hand a built body to MHD (which frees it); 500 when it overflowed its bound. */
static enum MHD_Result reply_body(struct request *req, struct body *b, const char *content_type,
                                  const char *extra_name, const char *extra_value)
{
    if (b->overflow) {
        /* A bug in a size bound, not a reason to take the daemon down from the query path. */
        free(b->data);
        return reply_error(req, 500, "internal error: response larger than planned");
    }
    struct MHD_Response *response =
        MHD_create_response_from_buffer(b->len, b->data, MHD_RESPMEM_MUST_FREE);
    if (response == NULL) {
        free(b->data);
        return MHD_NO;
    }
    return queue(req, MHD_HTTP_OK, response, content_type, extra_name, extra_value);
}

static enum MHD_Result reply_no_memory(struct request *req)
{
    return reply_error(req, 503, "out of memory, retry");
}

/* ---- parameters ---- */

/*
 * Strict decimal integer in [min, max]: an optional '-' (only when min < 0),
 * then digits to the end. 0, or -EINVAL.
 */
static int parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    const char *digits = (min < 0 && s[0] == '-') ? s + 1 : s;
    if (!isdigit((unsigned char)digits[0])) {
        return -EINVAL;
    }
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno == ERANGE || *end != '\0' || v < min || v > max) {
        return -EINVAL;
    }
    *out = v;
    return 0;
}

/*
 * The first value of query parameter `name`: NULL when absent; "" (which
 * no parser accepts) when it has no value or holds an embedded NUL.
 */
static const char *query_value(struct MHD_Connection *connection, const char *name)
{
    const char *value = NULL;
    size_t value_bytes = 0;
    if (MHD_lookup_connection_value_n(connection, MHD_GET_ARGUMENT_KIND, name, strlen(name), &value,
                                      &value_bytes) != MHD_YES) {
        return NULL;
    }
    if (value == NULL || strlen(value) != value_bytes) {
        return "";
    }
    return value;
}

/* An optional integer parameter: `fallback` when absent. 0, or -EINVAL. */
static int param_i64(struct request *req, const char *name, int64_t min, int64_t max,
                     int64_t fallback, int64_t *out)
{
    const char *value = query_value(req->connection, name);
    if (value == NULL) {
        *out = fallback;
        return 0;
    }
    return parse_i64(value, min, max, out);
}

/* The {id} path segment as a u32. 0, or -EINVAL. */
static int path_sensor_id(const struct request *req, uint32_t *id)
{
    char text[16];
    int64_t v = 0;
    if (req->id_len == 0 || req->id_len >= sizeof text) {
        return -EINVAL;
    }
    memcpy(text, req->id_text, req->id_len);
    text[req->id_len] = '\0';
    if (parse_i64(text, 0, UINT32_MAX, &v) != 0) {
        return -EINVAL;
    }
    *id = (uint32_t)v;
    return 0;
}

/* Snapshot a sensor into the shared view; on failure the error is answered. */
static int snapshot(struct request *req, uint32_t id, enum MHD_Result *answered)
{
    int rc = sl_store_snapshot(req->http->context.store, id, &req->http->view);
    if (rc == -ENOENT) {
        *answered = reply_error(req, 404, "unknown sensor");
    } else if (rc == -EBUSY) {
        *answered = reply_error(req, 503, "sensor busy, retry");
    } else {
        SL_ASSERT(rc == 0);
    }
    return rc;
}

/* ---- the sorted id list ---- */

/* Restore the max-heap property below `root` in ids[0, n): a bounded sift-down. */
static void heap_sift_down(uint32_t *ids, uint32_t root, uint32_t n)
{
    while (root < n / 2) { /* each step moves root at least one level down */
        uint32_t child = 2 * root + 1;
        if (child + 1 < n && ids[child + 1] > ids[child]) {
            child++;
        }
        if (ids[root] >= ids[child]) {
            return;
        }
        uint32_t tmp = ids[root];
        ids[root] = ids[child];
        ids[child] = tmp;
        root = child;
    }
}

/* In-place heapsort: no allocation, no recursion, O(n log n). */
static void heap_sort_u32(uint32_t *ids, uint32_t n)
{
    for (uint32_t i = n / 2; i > 0; i--) {
        heap_sift_down(ids, i - 1, n);
    }
    for (uint32_t end = n; end > 1; end--) {
        uint32_t tmp = ids[0];
        ids[0] = ids[end - 1];
        ids[end - 1] = tmp;
        heap_sift_down(ids, 0, end - 1);
    }
}

/* Bring sorted_ids up to the store's current sensor count; returns that count. */
static uint32_t sorted_extend(struct sl_http *http)
{
    const struct sl_store *store = http->context.store;
    uint32_t count = sl_store_sensors_count(store);
    uint32_t old = http->sorted_count;
    SL_ASSERT(count >= old && count <= store->config.sensors_max);
    if (count == old) {
        return count;
    }
    uint32_t *sorted = http->context.sorted_ids;
    uint32_t *fresh = sorted + store->config.sensors_max;
    uint32_t fresh_count = count - old;
    for (uint32_t i = 0; i < fresh_count; i++) {
        fresh[i] = sl_store_sensor_id(store, old + i);
    }
    heap_sort_u32(fresh, fresh_count);
    /* Merge from the back: slot k is never ahead of the unread sorted[i - 1]. */
    uint32_t i = old, j = fresh_count, k = count;
    while (j > 0) { /* k falls by one each step, from count */
        if (i > 0 && sorted[i - 1] > fresh[j - 1]) {
            sorted[--k] = sorted[--i];
        } else {
            sorted[--k] = fresh[--j];
        }
    }
    SL_DEBUG_ASSERT(k == i);
    http->sorted_count = count;
    return count;
}

/* ---- JSON endpoints ---- */

static enum MHD_Result handle_list(struct request *req)
{
    int64_t offset = 0, limit = 0;
    if (param_i64(req, "offset", 0, INT64_MAX, 0, &offset) != 0) {
        return reply_error(req, 400, "offset must be an integer >= 0");
    }
    if (param_i64(req, "limit", 1, SL_HTTP_LIST_LIMIT_MAX, SL_HTTP_LIST_LIMIT_DEFAULT, &limit) !=
        0) {
        return reply_error(req, 400, "limit must be an integer from 1 to %u",
                           SL_HTTP_LIST_LIMIT_MAX);
    }
    struct sl_http *http = req->http;
    uint32_t total = sorted_extend(http);
    uint64_t from = (uint64_t)offset < total ? (uint64_t)offset : total;
    uint64_t to = from + (uint64_t)limit < total ? from + (uint64_t)limit : total;
    struct body b;
    if (body_open(&b, 64 + (to - from) * SL_HTTP_LIST_ENTRY_BYTES) != 0) {
        return reply_no_memory(req);
    }
    body_fmt(&b, "{\"total\":%" PRIu32 ",\"sensors\":[", total);
    for (uint64_t i = from; i < to; i++) {
        struct sl_sensor_summary v;
        int rc = sl_store_summary(http->context.store, http->context.sorted_ids[i], &v);
        if (rc != 0) {
            SL_ASSERT(rc == -EBUSY); /* a listed sensor is never unknown */
            free(b.data);
            return reply_error(req, 503, "sensor busy, retry");
        }
        body_fmt(&b, "%s{\"id\":%" PRIu32 ",\"readings_total\":%" PRIu64 ",\"last_t_us\":",
                 i == from ? "" : ",", v.id, v.readings_total);
        if (v.count == 0) {
            body_str(&b, "null,\"last_value\":null}");
            continue;
        }
        body_fmt(&b, "%" PRId64 ",\"last_value\":", v.last_t_us);
        body_f32(&b, v.last_value);
        body_str(&b, "}");
    }
    body_str(&b, "]}");
    return reply_body(req, &b, "application/json", NULL, NULL);
}

/* 10s, 1m, 1h, 90s, 1d: the largest of d, h, m, s that divides the window exactly. */
static void window_key(char out[SL_HTTP_NUMBER_BYTES], int64_t window_us)
{
    static const struct {
        int64_t seconds;
        char unit;
    } units[] = {{86400, 'd'}, {3600, 'h'}, {60, 'm'}, {1, 's'}};
    int64_t s = window_us / 1000000;
    for (uint32_t i = 0; i < SL_ARRAY_COUNT(units); i++) {
        if (s % units[i].seconds == 0) {
            snprintf(out, SL_HTTP_NUMBER_BYTES, "%" PRId64 "%c", s / units[i].seconds,
                     units[i].unit);
            return;
        }
    }
    SL_ASSERT(0 && "1 divides everything");
}

static void json_window(struct body *b, const struct sl_window_stats *w)
{
    body_fmt(b, "{\"count\":%" PRIu64 ",\"mean\":", w->count);
    if (w->count == 0) {
        body_str(b, "null,\"min\":null,\"max\":null,\"stddev\":null");
    } else {
        body_f64(b, w->mean);
        body_str(b, ",\"min\":");
        body_f32(b, (float)w->min); /* min and max are stored values: f32 exactly */
        body_str(b, ",\"max\":");
        body_f32(b, (float)w->max);
        body_str(b, ",\"stddev\":");
        if (w->count < 2) {
            body_str(b, "null");
        } else {
            body_f64(b, w->stddev);
        }
    }
    body_fmt(b, ",\"exact\":%s", w->exact ? "true" : "false");
    if (!w->exact) {
        body_fmt(b, ",\"resolution_us\":%" PRId64, w->resolution_us);
    }
    body_str(b, "}");
}

static void json_sensor_head(struct body *b, const struct sl_sensor_view *v)
{
    body_fmt(b, "{\"id\":%" PRIu32 ",\"readings_total\":%" PRIu64 ",\"last\":", v->id,
             v->readings_total);
    if (v->count == 0) {
        body_str(b, "null,\"retained\":{\"count\":0,\"from_t_us\":null,\"to_t_us\":null}");
        return;
    }
    body_fmt(b, "{\"t_us\":%" PRId64 ",\"value\":", v->t_us[v->count - 1]);
    body_f32(b, v->value[v->count - 1]);
    body_fmt(b,
             "},\"retained\":{\"count\":%" PRIu32 ",\"from_t_us\":%" PRId64 ",\"to_t_us\":%" PRId64
             "}",
             v->count, v->t_us[0], v->t_us[v->count - 1]);
}

static enum MHD_Result handle_sensor(struct request *req)
{
    uint32_t id = 0;
    if (path_sensor_id(req, &id) != 0) {
        return reply_error(req, 400, "sensor id must be a decimal u32");
    }
    enum MHD_Result answered = MHD_NO;
    if (snapshot(req, id, &answered) != 0) {
        return answered;
    }
    const struct sl_store_config *config = &req->http->context.store->config;
    const struct sl_sensor_view *v = &req->http->view;
    struct body b;
    if (body_open(&b, 512 + config->windows_count * SL_HTTP_WINDOW_TEXT_BYTES) != 0) {
        return reply_no_memory(req);
    }
    json_sensor_head(&b, v);
    body_str(&b, ",\"windows\":{");
    for (uint32_t i = 0; i < config->windows_count; i++) {
        char key[SL_HTTP_NUMBER_BYTES];
        struct sl_window_stats w;
        window_key(key, config->windows_us[i]);
        sl_view_window(v, config->windows_us[i], &w);
        body_fmt(&b, "%s\"%s\":", i == 0 ? "" : ",", key);
        json_window(&b, &w);
    }
    body_str(&b, "},\"ewma\":");
    if (v->count == 0) {
        body_str(&b, "null");
    } else {
        body_f64(&b, v->ewma);
    }
    body_str(&b, "}");
    return reply_body(req, &b, "application/json", NULL, NULL);
}

static enum MHD_Result handle_stats(struct request *req)
{
    uint32_t id = 0;
    int64_t window_s = 0;
    if (path_sensor_id(req, &id) != 0) {
        return reply_error(req, 400, "sensor id must be a decimal u32");
    }
    const char *text = query_value(req->connection, "window_s");
    if (text == NULL) {
        return reply_error(req, 400, "window_s is required");
    }
    if (parse_i64(text, 1, req->http->window_s_max, &window_s) != 0) {
        return reply_error(req, 400, "window_s must be an integer from 1 to %" PRId64,
                           req->http->window_s_max);
    }
    enum MHD_Result answered = MHD_NO;
    if (snapshot(req, id, &answered) != 0) {
        return answered;
    }
    struct sl_window_stats w;
    sl_view_window(&req->http->view, window_s * 1000000, &w);
    struct body b;
    if (body_open(&b, SL_HTTP_WINDOW_TEXT_BYTES) != 0) {
        return reply_no_memory(req);
    }
    json_window(&b, &w);
    return reply_body(req, &b, "application/json", NULL, NULL);
}

/* ---- readings ---- */

enum readings_format { FORMAT_JSON, FORMAT_CSV, FORMAT_BIN };

struct readings_query {
    int64_t from_us, to_us, limit;
    enum readings_format format;
};

/* Parse the query of /readings; on a bad value the 400 is answered and -EINVAL returned. */
static int readings_params(struct request *req, struct readings_query *q, enum MHD_Result *answered)
{
    if (param_i64(req, "from_us", INT64_MIN, INT64_MAX, INT64_MIN, &q->from_us) != 0) {
        *answered = reply_error(req, 400, "from_us must be an integer (microseconds)");
        return -EINVAL;
    }
    if (param_i64(req, "to_us", INT64_MIN, INT64_MAX, INT64_MAX, &q->to_us) != 0) {
        *answered = reply_error(req, 400, "to_us must be an integer (microseconds)");
        return -EINVAL;
    }
    if (param_i64(req, "limit", 1, SL_HTTP_READINGS_LIMIT_MAX, SL_HTTP_READINGS_LIMIT_DEFAULT,
                  &q->limit) != 0) {
        *answered = reply_error(req, 400, "limit must be an integer from 1 to %u",
                                SL_HTTP_READINGS_LIMIT_MAX);
        return -EINVAL;
    }
    const char *format = query_value(req->connection, "format");
    if (format == NULL || strcmp(format, "json") == 0) {
        q->format = FORMAT_JSON;
    } else if (strcmp(format, "csv") == 0) {
        q->format = FORMAT_CSV;
    } else if (strcmp(format, "bin") == 0) {
        q->format = FORMAT_BIN;
    } else {
        *answered = reply_error(req, 400, "format must be json, csv or bin");
        return -EINVAL;
    }
    return 0;
}

static void readings_json(struct body *b, const struct sl_sensor_view *v, uint32_t from, uint32_t n)
{
    body_fmt(b, "{\"id\":%" PRIu32 ",\"t_us\":[", v->id);
    for (uint32_t i = 0; i < n; i++) {
        body_fmt(b, "%s%" PRId64, i == 0 ? "" : ",", v->t_us[from + i]);
    }
    body_str(b, "],\"value\":[");
    for (uint32_t i = 0; i < n; i++) {
        if (i > 0) {
            body_str(b, ",");
        }
        body_f32(b, v->value[from + i]);
    }
    body_str(b, "]}");
}

static void readings_csv(struct body *b, const struct sl_sensor_view *v, uint32_t from, uint32_t n)
{
    body_str(b, "t_us,value\n");
    for (uint32_t i = 0; i < n; i++) {
        body_fmt(b, "%" PRId64 ",", v->t_us[from + i]);
        body_f32(b, v->value[from + i]);
        body_str(b, "\n");
    }
}

/* n times as i64 LE, then n values as f32 LE. */
static void readings_bin(struct body *b, const struct sl_sensor_view *v, uint32_t from, uint32_t n)
{
    SL_ASSERT(b->cap - b->len >= (size_t)n * 12);
    uint8_t *p = (uint8_t *)b->data + b->len;
    for (uint32_t i = 0; i < n; i++) {
        sl_store_u64(p + (size_t)i * 8, (uint64_t)v->t_us[from + i]);
    }
    p += (size_t)n * 8;
    for (uint32_t i = 0; i < n; i++) {
        sl_store_f32(p + (size_t)i * 4, v->value[from + i]);
    }
    b->len += (size_t)n * 12;
}

static enum MHD_Result handle_readings(struct request *req)
{
    uint32_t id = 0;
    struct readings_query q;
    enum MHD_Result answered = MHD_NO;
    if (path_sensor_id(req, &id) != 0) {
        return reply_error(req, 400, "sensor id must be a decimal u32");
    }
    if (readings_params(req, &q, &answered) != 0 || snapshot(req, id, &answered) != 0) {
        return answered;
    }
    const struct sl_sensor_view *v = &req->http->view;
    uint32_t from = sl_view_lower_bound(v, q.from_us);
    uint32_t to = q.to_us == INT64_MAX ? v->count : sl_view_lower_bound(v, q.to_us + 1);
    uint32_t n = to > from ? to - from : 0;
    n = (int64_t)n > q.limit ? (uint32_t)q.limit : n; /* the oldest `limit` of them */
    struct body b;
    size_t per_reading = q.format == FORMAT_BIN ? 12 : SL_HTTP_READING_TEXT_BYTES;
    if (body_open(&b, 64 + (size_t)n * per_reading) != 0) {
        return reply_no_memory(req);
    }
    if (q.format == FORMAT_JSON) {
        readings_json(&b, v, from, n);
        return reply_body(req, &b, "application/json", NULL, NULL);
    }
    if (q.format == FORMAT_CSV) {
        readings_csv(&b, v, from, n);
        return reply_body(req, &b, "text/csv", NULL, NULL);
    }
    char count_text[SL_HTTP_NUMBER_BYTES];
    snprintf(count_text, sizeof count_text, "%" PRIu32, n);
    readings_bin(&b, v, from, n);
    return reply_body(req, &b, "application/octet-stream", "X-Count", count_text);
}

/* ---- /metrics ---- */

static void prom_family(struct body *b, const char *name, const char *type, const char *help)
{
    body_fmt(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value with \, " and newline escaped (text format 0.0.4), cut at a bound. */
static void prom_label_value(struct body *b, const char *s)
{
    for (uint32_t i = 0; s[i] != '\0' && i < SL_HTTP_LABEL_BYTES_MAX; i++) {
        if (s[i] == '\\' || s[i] == '"') {
            char pair[2] = {'\\', s[i]};
            body_put(b, pair, 2);
        } else if (s[i] == '\n') {
            body_put(b, "\\n", 2);
        } else {
            body_put(b, &s[i], 1);
        }
    }
}

/* Read a small /proc file into buf without allocating: its length, or -errno. */
static ssize_t read_proc(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    size_t len = 0;
    while (len + 1 < cap) { /* every pass reads at least a byte, or stops */
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    return (ssize_t)len;
}

/* Current RSS (statm's second field, in pages) and peak RSS (VmHWM, kB); 0 when unknown. */
static void process_memory(uint64_t *resident_bytes, uint64_t *peak_bytes)
{
    char buf[4096];
    *resident_bytes = 0;
    *peak_bytes = 0;
    long page = sysconf(_SC_PAGESIZE);
    if (read_proc("/proc/self/statm", buf, sizeof buf) > 0) {
        char *end = NULL;
        strtoull(buf, &end, 10);
        *resident_bytes = strtoull(end, NULL, 10) * (uint64_t)(page > 0 ? page : 4096);
    }
    if (read_proc("/proc/self/status", buf, sizeof buf) > 0) {
        const char *hwm = strstr(buf, "\nVmHWM:");
        if (hwm != NULL) {
            *peak_bytes = strtoull(hwm + 7, NULL, 10) * 1024;
        }
    }
}

struct prom_scalar {
    const char *name;
    const char *type;
    const char *help;
    uint64_t value;
};

static void prom_scalars(struct body *b, const struct prom_scalar *m, uint32_t count)
{
    for (uint32_t i = 0; i < count; i++) {
        prom_family(b, m[i].name, m[i].type, m[i].help);
        body_fmt(b, "%s %" PRIu64 "\n", m[i].name, m[i].value);
    }
}

static const char *const transport_names[SL_TRANSPORT_COUNT] = {"udp", "tcp"};

static void metrics_store(struct body *b, const struct sl_http *http)
{
    const struct sl_store *store = http->context.store;
    const struct sl_store_counters *c = &store->counters;
    prom_family(b, "sluice_readings_accepted_total", "counter", "Readings stored.");
    body_fmt(b, "sluice_readings_accepted_total %" PRIu64 "\n",
             sl_counter_get(&c->readings_accepted));
    prom_family(b, "sluice_readings_rejected_total", "counter",
                "Readings rejected inside accepted batches, by reason.");
    for (uint32_t r = 0; r < SL_REJECT_COUNT; r++) {
        body_fmt(b, "sluice_readings_rejected_total{reason=\"%s\"} %" PRIu64 "\n",
                 sl_reject_reason_name((enum sl_reject_reason)r),
                 sl_counter_get(&c->readings_rejected[r]));
    }
    const struct prom_scalar gauges[] = {
        {"sluice_sensors", "gauge", "Sensors known.", sl_store_sensors_count(store)},
        {"sluice_sensors_capacity", "gauge", "Sensor table size.", store->config.sensors_max},
    };
    prom_scalars(b, gauges, SL_ARRAY_COUNT(gauges));
}

static void metrics_frames(struct body *b, const struct sl_net_counters *net)
{
    prom_family(b, "sluice_batches_total", "counter",
                "Batch frames by transport and ack status (UDP frames get the status they "
                "would have).");
    for (uint32_t t = 0; t < SL_TRANSPORT_COUNT; t++) {
        for (uint32_t s = 0; s < SL_STATUS_COUNT; s++) {
            body_fmt(b, "sluice_batches_total{transport=\"%s\",status=\"%s\"} %" PRIu64 "\n",
                     transport_names[t], sl_status_name((enum sl_status)s),
                     sl_counter_get(&net->batches[t][s]));
        }
    }
    prom_family(b, "sluice_frames_refused_total", "counter",
                "Refused frames by transport and exact decode error.");
    for (uint32_t t = 0; t < SL_TRANSPORT_COUNT; t++) {
        for (int e = 1; e < SL_DECODE_ERROR_COUNT; e++) {
            body_fmt(b, "sluice_frames_refused_total{transport=\"%s\",reason=\"%s\"} %" PRIu64 "\n",
                     transport_names[t], sl_decode_error_name(e),
                     sl_counter_get(&net->decode_errors[t][e]));
        }
    }
}

static void metrics_net(struct body *b, const struct sl_net_counters *n)
{
    const struct prom_scalar m[] = {
        {"sluice_udp_lost_batches_total", "counter", "Gaps in batch_seq seen on UDP.",
         sl_counter_get(&n->udp_lost_batches)},
        {"sluice_udp_out_of_sequence_batches_total", "counter",
         "UDP batches with a seq at or below the last one (reordered or restarted sender).",
         sl_counter_get(&n->udp_out_of_sequence_batches)},
        {"sluice_udp_resyncs_total", "counter",
         "UDP batches whose seq jumped further ahead than any loss (over 65,536): a resync, not "
         "counted as lost.",
         sl_counter_get(&n->udp_resyncs)},
        {"sluice_udp_datagrams_total", "counter", "UDP datagrams received.",
         sl_counter_get(&n->udp_datagrams)},
        {"sluice_udp_bytes_total", "counter", "UDP payload bytes received.",
         sl_counter_get(&n->udp_bytes)},
        {"sluice_udp_kernel_drops_total", "counter",
         "Datagrams dropped by the kernel because the socket buffer overflowed.",
         sl_counter_get(&n->udp_kernel_drops)},
        {"sluice_tcp_bytes_total", "counter", "TCP bytes received.", sl_counter_get(&n->tcp_bytes)},
        {"sluice_tcp_connections_accepted_total", "counter", "TCP connections accepted.",
         sl_counter_get(&n->tcp_connections_accepted)},
        {"sluice_tcp_connections_refused_total", "counter",
         "TCP connections refused at a full table where every connection waited for acks.",
         sl_counter_get(&n->tcp_connections_refused)},
        {"sluice_tcp_connections_refused_per_ip_total", "counter",
         "TCP connections refused: their address held --max-tcp-connections-per-ip.",
         sl_counter_get(&n->tcp_refused_per_ip)},
        {"sluice_tcp_frame_timeouts_total", "counter",
         "TCP connections closed: a frame not complete within --tcp-frame-timeout of its first byte.",
         sl_counter_get(&n->tcp_frame_timeouts)},
        {"sluice_tcp_accept_backoffs_total", "counter",
         "Times accepting paused for 100 ms: the process was out of descriptors (EMFILE, ENFILE).",
         sl_counter_get(&n->tcp_accept_backoffs)},
        {"sluice_tcp_connections_timed_out_total", "counter",
         "TCP connections closed after the idle timeout.",
         sl_counter_get(&n->tcp_connections_timed_out)},
        {"sluice_tcp_connections_closed_on_error_total", "counter",
         "TCP connections closed on BAD_CRC, MALFORMED or a peer reset.",
         sl_counter_get(&n->tcp_connections_closed_on_error)},
        {"sluice_tcp_pauses_total", "counter",
         "Times a TCP connection stopped being read because its ack queue was full (its peer "
         "was not reading acks); it is read again once they drain.",
         sl_counter_get(&n->tcp_pauses)},
        {"sluice_tcp_batches_refused_stream_table_full_total", "counter",
         "TCP batches answered OVERLOADED because the stream table had no room.",
         sl_counter_get(&n->streams_table_full)},
        {"sluice_ingest_stalls_total", "counter",
         "Ingest loop ticks whose work took over 250 ms (a slow sync, say); TCP idle time is "
         "not counted across them.",
         sl_counter_get(&n->ingest_stalls)},
        {"sluice_apply_groups_total", "counter",
         "Commit groups handed to the store's apply (to its thread, or applied at once with "
         "--apply-thread off).",
         sl_counter_get(&n->apply_groups)},
    };
    prom_scalars(b, m, SL_ARRAY_COUNT(m));
    prom_family(b, "sluice_tcp_connections_evicted_total", "counter",
                "TCP connections closed to make room for a newcomer at a full table: the one idle, "
                "or with a frame incomplete, longest.");
    body_fmt(b, "sluice_tcp_connections_evicted_total{reason=\"idle\"} %" PRIu64 "\n",
             sl_counter_get(&n->tcp_evicted_idle));
    body_fmt(b, "sluice_tcp_connections_evicted_total{reason=\"incomplete\"} %" PRIu64 "\n",
             sl_counter_get(&n->tcp_evicted_incomplete));
    prom_family(b, "sluice_apply_wait_seconds_total", "counter",
                "Time the ingest thread waited for the apply thread to finish the group before "
                "(high: the store's apply bounds the rate; low: receive and log do).");
    body_fmt(b, "sluice_apply_wait_seconds_total %.6f\n",
             (double)sl_counter_get(&n->apply_wait_ns) / 1e9);
}

static uint32_t relaxed_u32(const _Atomic uint32_t *v)
{
    return atomic_load_explicit((_Atomic uint32_t *)v, memory_order_relaxed);
}

static void metrics_connections(struct body *b, const struct sl_http *http)
{
    const struct sl_http_context *ctx = &http->context;
    const struct sl_streams *streams[SL_TRANSPORT_COUNT] = {ctx->udp_streams, ctx->tcp_streams};
    prom_family(b, "sluice_connections", "gauge", "Open connections by transport.");
    body_fmt(b, "sluice_connections{transport=\"tcp\"} %" PRIu32 "\n",
             relaxed_u32(&ctx->net->tcp_connections));
    body_fmt(b, "sluice_connections{transport=\"http\"} %" PRIu32 "\n",
             relaxed_u32(&http->connections_open));
    prom_family(b, "sluice_streams", "gauge", "Streams tracked, by transport.");
    for (uint32_t t = 0; t < SL_TRANSPORT_COUNT; t++) {
        body_fmt(b, "sluice_streams{transport=\"%s\"} %" PRIu32 "\n", transport_names[t],
                 relaxed_u32(&streams[t]->count));
    }
    prom_family(b, "sluice_streams_capacity", "gauge", "Stream table size, by transport.");
    for (uint32_t t = 0; t < SL_TRANSPORT_COUNT; t++) {
        body_fmt(b, "sluice_streams_capacity{transport=\"%s\"} %" PRIu32 "\n", transport_names[t],
                 streams[t]->capacity);
    }
    prom_family(b, "sluice_streams_table_full_total", "counter",
                "New streams refused because the stream table was full, by transport.");
    for (uint32_t t = 0; t < SL_TRANSPORT_COUNT; t++) {
        body_fmt(b, "sluice_streams_table_full_total{transport=\"%s\"} %" PRIu64 "\n",
                 transport_names[t], sl_counter_get(&streams[t]->full_total));
    }
}

static void metrics_memory(struct body *b, const struct sl_http *http)
{
    const struct sl_plan *plan = http->context.plan;
    uint64_t resident = 0, peak = 0;
    process_memory(&resident, &peak);
    const struct prom_scalar m[] = {
        {"sluice_memory_planned_bytes", "gauge", "The memory plan computed at start.",
         plan->total_bytes},
        {"sluice_resident_bytes", "gauge", "The process's current RSS.", resident},
        {"sluice_resident_peak_bytes", "gauge", "The process's peak RSS (VmHWM).", peak},
        {"sluice_memory_locked", "gauge", "1 when the memory plan is mlocked in RAM, 0 when it may be swapped.",
         http->context.memory_locked ? 1u : 0u},
        {"sluice_udp_receive_buffer_bytes", "gauge",
         "The UDP socket's receive buffer as granted (SO_RCVBUF read back, halved), 0 when UDP is off.",
         http->context.udp_receive_buffer_bytes},
    };
    prom_scalars(b, m, SL_ARRAY_COUNT(m));
    prom_family(b, "sluice_memory_planned_part_bytes", "gauge",
                "The memory plan computed at start, by part.");
    for (uint32_t i = 0; i < plan->count && i < SL_PLAN_PARTS_MAX; i++) {
        body_str(b, "sluice_memory_planned_part_bytes{part=\"");
        prom_label_value(b, plan->parts[i].name);
        body_fmt(b, "\"} %" PRIu64 "\n", plan->parts[i].bytes);
    }
    if (sl_alloc_count == NULL) {
        return; /* no allocation counter linked in: no figures to report */
    }
    const struct prom_scalar allocs[] = {
        {"sluice_heap_allocations_after_start_total", "counter",
         "Heap allocations by the ingest thread since start-up finished (the aim is 0).",
         sl_alloc_count(SL_ALLOC_INGEST)},
        {"sluice_http_heap_allocations_total", "counter",
         "Heap allocations by the HTTP thread (bounded: response bodies, MHD pools).",
         sl_alloc_count(SL_ALLOC_HTTP)},
    };
    prom_scalars(b, allocs, SL_ARRAY_COUNT(allocs));
}

static void metrics_http(struct body *b, const struct sl_http *http)
{
    prom_family(b, "sluice_http_requests_total", "counter",
                "HTTP requests answered by this API, by status code.");
    for (uint32_t i = 0; i < SL_HTTP_CODES_COUNT; i++) {
        body_fmt(
            b, "sluice_http_requests_total{code=\"%u\"} %" PRIu64 "\n", http_codes[i],
            atomic_load_explicit(&((struct sl_http *)http)->requests[i], memory_order_relaxed));
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t now_us = (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
    int64_t started_us = atomic_load_explicit(
        &((struct sl_net_counters *)http->context.net)->started_at_us, memory_order_relaxed);
    double uptime_s = started_us > 0 && now_us > started_us ? (now_us - started_us) / 1e6 : 0;
    prom_family(b, "sluice_uptime_seconds", "gauge", "Seconds since ingestion began.");
    body_fmt(b, "sluice_uptime_seconds %.3f\n", uptime_s);
    prom_family(b, "sluice_build_info", "gauge", "Build information; the value is always 1.");
    body_str(b, "sluice_build_info{version=\"");
    prom_label_value(b, http->context.version != NULL ? http->context.version : "unknown");
    body_str(b, "\"} 1\n");
}

static void metrics_log(struct body *b, const struct sl_http *http)
{
    const struct sl_log *log = http->context.log;
    if (log == NULL) {
        return;
    }
    const struct sl_log_counters *c = sl_log_counters(log);
    char reason[256];
    const struct prom_scalar m[] = {
        {"sluice_log_healthy", "gauge", "1 while the log accepts writes; 0 while it refuses them.",
         sl_log_health(log, reason, sizeof reason) == 0},
        {"sluice_log_records_written_total", "counter", "Log records written.",
         sl_counter_get(&c->records_written)},
        {"sluice_log_bytes_written_total", "counter", "Log bytes written.", sl_counter_get(&c->bytes_written)},
        {"sluice_log_commits_total", "counter", "Group commits (one write each).", sl_counter_get(&c->commits)},
        {"sluice_log_syncs_total", "counter", "Successful fdatasync calls on the log.", sl_counter_get(&c->syncs)},
        {"sluice_log_write_errors_total", "counter", "Failed or short log writes.",
         sl_counter_get(&c->write_errors)},
        {"sluice_log_sync_errors_total", "counter", "Failed log fdatasync calls.", sl_counter_get(&c->sync_errors)},
        {"sluice_log_records_failed_total", "counter",
         "Records of failed commits: never applied, answered OVERLOADED.", sl_counter_get(&c->records_failed)},
        {"sluice_log_acked_at_risk_total", "counter",
         "Acked records (sync batch or never) whose later sync failed and could not be rewritten.",
         sl_counter_get(&c->acked_at_risk)},
        {"sluice_log_segments_created_total", "counter", "Log segments created.",
         sl_counter_get(&c->segments_created)},
        {"sluice_log_segments_retired_total", "counter", "Log segments abandoned after an I/O error.",
         sl_counter_get(&c->segments_retired)},
        {"sluice_log_segments_recycled_total", "counter", "Oldest log segments recycled at --log-bytes-max.",
         sl_counter_get(&c->segments_recycled)},
        {"sluice_log_recycled_records_total", "counter",
         "Records dropped by recycling that no checkpoint held.", sl_counter_get(&c->recycled_records)},
        {"sluice_log_corrupt_records_total", "counter",
         "Log records lost to damage, skipped at start-up (later records kept).",
         sl_counter_get(&c->corrupt_records)},
        {"sluice_log_corrupt_bytes_total", "counter", "Damaged log bytes skipped at start-up.",
         sl_counter_get(&c->corrupt_bytes)},
        {"sluice_log_recycled_on_enospc_total", "counter",
         "Segments a checkpoint wholly held, recycled because the disk had no room for a new one.",
         sl_counter_get(&c->recycled_on_enospc)},
        {"sluice_log_torn_tail_bytes_total", "counter", "Bytes of a torn log tail cut at start-up.",
         sl_counter_get(&c->torn_tail_bytes)},
        {"sluice_log_bytes", "gauge", "Bytes of log segment files on disk.", sl_counter_get(&c->bytes_on_disk)},
        {"sluice_log_durable_lsn", "gauge", "The highest log sequence number known synced.",
         sl_counter_get(&c->durable_lsn)},
    };
    prom_scalars(b, m, SL_ARRAY_COUNT(m));
}

static void metrics_recovery(struct body *b, const struct sl_http *http)
{
    const struct sl_checkpointer *ck = http->context.checkpointer;
    if (ck != NULL) {
        const struct sl_checkpoint_counters *c = &ck->counters;
        const struct prom_scalar m[] = {
            {"sluice_checkpoints_started_total", "counter", "Checkpoints begun.", sl_counter_get(&c->started)},
            {"sluice_checkpoints_completed_total", "counter", "Checkpoints completed.",
             sl_counter_get(&c->completed)},
            {"sluice_checkpoints_failed_total", "counter", "Checkpoints abandoned after an error.",
             sl_counter_get(&c->failed)},
            {"sluice_checkpoint_bytes_written_total", "counter", "Checkpoint bytes written.",
             sl_counter_get(&c->bytes_written)},
        };
        prom_scalars(b, m, SL_ARRAY_COUNT(m));
    }
    const struct sl_recover_result *r = http->context.recovery;
    if (r != NULL) {
        const struct prom_scalar m[] = {
            {"sluice_recovery_records_replayed", "gauge", "Log records replayed at start-up.",
             r->records_replayed},
            {"sluice_recovery_readings_applied", "gauge", "Readings applied by the replay at start-up.",
             r->readings_applied},
            {"sluice_recovery_corrupt_records", "gauge", "Log records start-up found lost to damage.",
             r->log.corrupt_records},
            {"sluice_recovery_corrupt_bytes", "gauge", "Damaged log bytes start-up skipped.",
             r->log.corrupt_bytes},
        };
        prom_scalars(b, m, SL_ARRAY_COUNT(m));
        prom_family(b, "sluice_recovery_seconds", "gauge", "Wall seconds start-up recovery took.");
        body_fmt(b, "sluice_recovery_seconds %.6f\n", r->seconds);
    }
}

static enum MHD_Result handle_metrics(struct request *req)
{
    struct body b;
    if (body_open(&b, SL_HTTP_METRICS_BODY_BYTES) != 0) {
        return reply_no_memory(req);
    }
    const struct sl_http *http = req->http;
    metrics_store(&b, http);
    metrics_frames(&b, http->context.net);
    metrics_net(&b, http->context.net);
    metrics_connections(&b, http);
    metrics_memory(&b, http);
    metrics_http(&b, http);
    metrics_log(&b, http);
    metrics_recovery(&b, http);
    return reply_body(req, &b, "text/plain; version=0.0.4; charset=utf-8", NULL, NULL);
}

/* ---- routing ---- */

enum route {
    ROUTE_NOT_FOUND,
    ROUTE_HEALTH,
    ROUTE_METRICS,
    ROUTE_LIST,
    ROUTE_SENSOR,
    ROUTE_STATS,
    ROUTE_READINGS,
};

/* Exact paths only (no trailing slash); the {id} segment is checked by the handler. */
static enum route route_of(const char *url, struct request *req)
{
    static const char sensors[] = "/api/v1/sensors";
    if (strcmp(url, "/healthz") == 0) {
        return ROUTE_HEALTH;
    }
    if (strcmp(url, "/metrics") == 0) {
        return ROUTE_METRICS;
    }
    if (strncmp(url, sensors, sizeof sensors - 1) != 0) {
        return ROUTE_NOT_FOUND;
    }
    const char *rest = url + sizeof sensors - 1;
    if (rest[0] == '\0') {
        return ROUTE_LIST;
    }
    if (rest[0] != '/' || rest[1] == '\0' || rest[1] == '/') {
        return ROUTE_NOT_FOUND;
    }
    req->id_text = rest + 1;
    const char *slash = strchr(req->id_text, '/');
    req->id_len = slash != NULL ? (size_t)(slash - req->id_text) : strlen(req->id_text);
    if (slash == NULL) {
        return ROUTE_SENSOR;
    }
    if (strcmp(slash, "/stats") == 0) {
        return ROUTE_STATS;
    }
    if (strcmp(slash, "/readings") == 0) {
        return ROUTE_READINGS;
    }
    return ROUTE_NOT_FOUND;
}

/* 200 "ok"; 503 with the reason while the log refuses writes (a full or failing disk). */
static enum MHD_Result reply_health(struct request *req)
{
    static const char ok[] = "ok";
    char reason[256];
    const struct sl_log *log = req->http->context.log;
    if (log != NULL && sl_log_health(log, reason, sizeof reason) != 0) {
        struct MHD_Response *response =
            MHD_create_response_from_buffer(strlen(reason), reason, MHD_RESPMEM_MUST_COPY);
        return queue(req, MHD_HTTP_SERVICE_UNAVAILABLE, response, "text/plain", NULL, NULL);
    }
    struct MHD_Response *response =
        MHD_create_response_from_buffer(sizeof ok - 1, (void *)ok, MHD_RESPMEM_PERSISTENT);
    return queue(req, MHD_HTTP_OK, response, "text/plain", NULL, NULL);
}

static void track_allocations(void)
{
    if (sl_alloc_track != NULL) {
        sl_alloc_track(SL_ALLOC_HTTP); /* a thread-local store: cheap every time */
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *connection, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **request_state)
{
    (void)version;
    (void)upload_data;
    track_allocations();
    if (*request_state != NULL) {
        *upload_data_size = 0; /* already answered: discard any body */
        return MHD_YES;
    }
    *request_state = cls;
    struct request req = {.http = cls, .connection = connection};
    enum route route = route_of(url, &req);
    if (route == ROUTE_NOT_FOUND) {
        return reply_error(&req, 404, "not found");
    }
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0) {
        return reply_error(&req, 405, "method not allowed, use GET");
    }
    switch (route) {
    case ROUTE_HEALTH:
        return reply_health(&req);
    case ROUTE_METRICS:
        return handle_metrics(&req);
    case ROUTE_LIST:
        return handle_list(&req);
    case ROUTE_SENSOR:
        return handle_sensor(&req);
    case ROUTE_STATS:
        return handle_stats(&req);
    case ROUTE_READINGS:
        return handle_readings(&req);
    case ROUTE_NOT_FOUND:
        break;
    }
    SL_ASSERT(0 && "every route is handled");
    return MHD_NO;
}

static void on_connection(void *cls, struct MHD_Connection *connection, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct sl_http *http = cls;
    (void)connection;
    (void)socket_context;
    track_allocations();
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        atomic_fetch_add_explicit(&http->connections_open, 1, memory_order_relaxed);
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        atomic_fetch_sub_explicit(&http->connections_open, 1, memory_order_relaxed);
    }
}

/* ---- start and stop ---- */

void sl_http_plan(const struct sl_store_config *store_config, struct sl_plan *plan)
{
    sl_plan_add(plan, "http_view", sl_store_view_bytes(store_config),
                "the HTTP thread's sensor snapshot (times, values, coarse buckets, scratch)");
    sl_plan_add(plan, "http_sorted_ids", (uint64_t)store_config->sensors_max * 2 * sizeof(uint32_t),
                "sensor ids in ascending order for listing, and merge scratch, 8 B a sensor");
}

/* "[::1]:80" for IPv6, "127.0.0.1:80" otherwise, for messages. */
static void endpoint_name(char *out, size_t out_bytes, const char *host, uint16_t port)
{
    bool v6 = strchr(host, ':') != NULL && host[0] != '[';
    snprintf(out, out_bytes, "%s%s%s:%u", v6 ? "[" : "", host, v6 ? "]" : "", (unsigned)port);
}

/* A numeric IPv4/IPv6 address (brackets allowed) or "localhost" (127.0.0.1). 0 or -EINVAL. */
static int resolve_host(const char *host, uint16_t port, struct sockaddr_storage *addr,
                        socklen_t *addr_bytes)
{
    char name[sizeof((struct sl_http_config *)0)->host];
    size_t len = strnlen(host, sizeof name);
    if (len == sizeof name) {
        return -EINVAL;
    }
    if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
        memcpy(name, host + 1, len - 2);
        name[len - 2] = '\0';
    } else {
        memcpy(name, host, len + 1);
    }
    const char *numeric = strcmp(name, "localhost") == 0 ? "127.0.0.1" : name;
    char service[8];
    snprintf(service, sizeof service, "%u", (unsigned)port);
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE,
                             .ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM};
    struct addrinfo *found = NULL;
    if (getaddrinfo(numeric, service, &hints, &found) != 0 || found == NULL) {
        return -EINVAL;
    }
    SL_ASSERT(found->ai_addrlen <= sizeof *addr);
    memcpy(addr, found->ai_addr, found->ai_addrlen);
    *addr_bytes = found->ai_addrlen;
    freeaddrinfo(found);
    return 0;
}

/* Socket, SO_REUSEADDR, bind, listen: the descriptor, or -errno. */
static int listen_on(const struct sockaddr_storage *addr, socklen_t addr_bytes)
{
    int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    int one = 1;
    int rc = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (rc == 0) {
        rc = bind(fd, (const struct sockaddr *)addr, addr_bytes);
    }
    if (rc == 0) {
        rc = listen(fd, SL_HTTP_LISTEN_BACKLOG);
    }
    if (rc != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

static uint16_t bound_port(int fd)
{
    struct sockaddr_storage addr;
    socklen_t addr_bytes = sizeof addr;
    if (getsockname(fd, (struct sockaddr *)&addr, &addr_bytes) != 0) {
        return 0;
    }
    if (addr.ss_family == AF_INET6) {
        return ntohs(((struct sockaddr_in6 *)&addr)->sin6_port);
    }
    return ntohs(((struct sockaddr_in *)&addr)->sin_port);
}

/* Limits with 0 meaning "the default"; -EINVAL with a reason when out of range. */
static int effective_config(const struct sl_http_config *in, struct sl_http_config *out,
                            const char **why)
{
    *out = *in;
    out->connections_max = in->connections_max ? in->connections_max : SL_HTTP_CONNECTIONS_DEFAULT;
    out->connection_memory_bytes = in->connection_memory_bytes ? in->connection_memory_bytes
                                                               : SL_HTTP_CONNECTION_MEMORY_DEFAULT;
    out->timeout_s = in->timeout_s ? in->timeout_s : SL_HTTP_TIMEOUT_S_DEFAULT;
    if (out->connections_max > SL_HTTP_CONNECTIONS_MAX) {
        *why = "connections must be 1 .. 4096";
        return -EINVAL;
    }
    if (out->connection_memory_bytes < SL_HTTP_CONNECTION_MEMORY_MIN) {
        *why = "connection memory must be at least 4096 bytes";
        return -EINVAL;
    }
    return 0;
}

static void check_context(const struct sl_http_context *ctx)
{
    SL_ASSERT(ctx->store != NULL);
    SL_ASSERT(ctx->net != NULL);
    SL_ASSERT(ctx->tcp_streams != NULL);
    SL_ASSERT(ctx->udp_streams != NULL);
    SL_ASSERT(ctx->plan != NULL);
    SL_ASSERT(ctx->view_memory != NULL);
    SL_ASSERT((uintptr_t)ctx->view_memory % 8 == 0);
    SL_ASSERT(ctx->sorted_ids != NULL);
}

/* Hand the listening socket to MHD with one internal thread. NULL when MHD refuses. */
static struct MHD_Daemon *start_daemon(struct sl_http *http, const struct sl_http_config *c, int fd)
{
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD;
    flags |= MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES ? MHD_USE_EPOLL : MHD_USE_AUTO;
    return MHD_start_daemon(flags, 0, NULL, NULL, on_request, http, MHD_OPTION_LISTEN_SOCKET,
                            (MHD_socket)fd, MHD_OPTION_CONNECTION_LIMIT,
                            (unsigned int)c->connections_max, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                            (size_t)c->connection_memory_bytes, MHD_OPTION_CONNECTION_TIMEOUT,
                            (unsigned int)c->timeout_s, MHD_OPTION_NOTIFY_CONNECTION, on_connection,
                            http, MHD_OPTION_END);
}

struct sl_http *sl_http_start(const struct sl_http_config *config,
                              const struct sl_http_context *context, char *err, uint32_t err_bytes)
{
    char where[300];
    struct sl_http_config c;
    const char *why = NULL;
    struct sockaddr_storage addr;
    socklen_t addr_bytes = 0;
    check_context(context);
    endpoint_name(where, sizeof where, config->host, config->port);
    if (effective_config(config, &c, &why) != 0) {
        snprintf(err, err_bytes, "http %s: %s", where, why);
        return NULL;
    }
    if (resolve_host(config->host, config->port, &addr, &addr_bytes) != 0) {
        snprintf(err, err_bytes, "http %s: host must be an IPv4 or IPv6 address or localhost",
                 where);
        return NULL;
    }
    int fd = config->prebound ? config->listen_fd : listen_on(&addr, addr_bytes);
    if (fd < 0) {
        snprintf(err, err_bytes, "http %s: %s", where, strerror(-fd));
        return NULL;
    }
    struct sl_http *http = calloc(1, sizeof *http);
    if (http == NULL) {
        close(fd);
        snprintf(err, err_bytes, "http %s: out of memory", where);
        return NULL;
    }
    http->context = *context;
    const struct sl_store_config *store_config = &context->store->config;
    http->window_s_max = store_config->windows_us[store_config->windows_count - 1] / 1000000;
    http->port = bound_port(fd);
    sl_store_view_init(&http->view, store_config, context->view_memory);
    http->daemon = start_daemon(http, &c, fd);
    if (http->daemon == NULL) {
        /* MHD closes the socket on some failure paths and not on others. */
        if (fcntl(fd, F_GETFD) != -1) {
            close(fd);
        }
        free(http);
        snprintf(err, err_bytes, "http %s: libmicrohttpd failed to start", where);
        return NULL;
    }
    return http;
}

uint16_t sl_http_port(const struct sl_http *http)
{
    return http->port;
}

void sl_http_stop(struct sl_http *http)
{
    if (http == NULL) {
        return;
    }
    MHD_stop_daemon(http->daemon); /* joins the thread and closes the listening socket */
    free(http);
}
