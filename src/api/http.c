/*
 * The HTTP query API and /metrics (docs/spec/HTTP_API.md; contract in http.h).
 *
 * How. libmicrohttpd (MHD) runs a pool of `threads` workers (epoll where
 * MHD has it); each connection stays on the worker that accepted it, and a
 * worker runs one callback at a time, so at most `threads` handlers run at
 * once. We bind the socket with net/sock.h (or take the daemon's, prebound)
 * and hand it to MHD (MHD_OPTION_LISTEN_SOCKET); MHD then owns it.
 *
 * Views. Every handler that reads a sensor takes one of `threads` views
 * (view_memory: a snapshot's arrays and a /metrics buffer each) from a
 * small pool under http->lock, and gives it back before it returns: since
 * at most `threads` callbacks run at once, one is always free. A view
 * remembers which readings it holds (sensor id and absolute reading
 * numbers: a sensor's readings are appended in time order and dropped
 * oldest first, so reading k of a view is number readings_total - count + k
 * for good), and a piece of a response reuses a view that still holds what
 * it needs instead of taking a new snapshot.
 *
 * Bounded pieces. No response body is ever built whole. The readings and
 * the sensor list are MHD callback responses: at the request the handler
 * fixes what will be sent (the readings' absolute numbers [start, end), or
 * the list's total, first id and count) in the connection's cursor, and each
 * callback fills the connection's piece buffer (SL_HTTP_PIECE_BYTES, from
 * the arena) with the next readings that fit, from a view, and hands it out.
 * When the ring has dropped the next reading before it was sent (a reader
 * slower than the ring turns over), the response ends with an error (MHD
 * closes the connection mid-body) and sluice_http_responses_cut_total
 * {reason="overwritten"} counts it. json and csv go out chunked; bin knows
 * its length (12 B a reading) and sends Content-Length. Small bodies (a
 * sensor, a window, an error) are built in the piece buffer or on the stack;
 * /metrics in the worker's buffer, copied once by MHD (<= 64 KiB).
 *
 * The connection table. MHD tells us when a connection starts and closes
 * (MHD_OPTION_NOTIFY_CONNECTION), when its request line arrives
 * (MHD_OPTION_URI_LOG_CALLBACK), when its headers are complete (the first
 * access-handler call) and when its request is done
 * (MHD_OPTION_NOTIFY_COMPLETED); each reader callback is progress. A slot
 * holds the state (incomplete, active, idle), the time it entered it or
 * last made progress, the descriptor and the peer address. MHD's own limit
 * is ours plus SL_HTTP_CONNECTIONS_SLACK slots, so a newcomer is always
 * accepted and seen; then, under the lock: when its address holds more
 * than the per-address cap, the connection of that address idle or
 * incomplete longest is shut down; when the table holds more than
 * connections_max, the one idle or incomplete longest of all is. A
 * newcomer is never the one chosen: one address flooding the table churns
 * its own connections and cannot keep a new client (even from the same
 * address, as in the tests) from being answered. A watchdog thread shuts
 * down every connection whose request line and headers are not complete
 * header_timeout_ms after it was accepted (or after its request line, for
 * a later request on a kept-alive connection). Shutting down is
 * shutdown(fd, SHUT_RDWR) under the lock: MHD sees the socket fail and
 * closes it on its own worker. MHD calls the CLOSED notification, where the
 * slot is freed under the same lock, before it closes the descriptor, so a
 * shutdown never reaches a reused descriptor. The inactivity timeout is
 * MHD's (per connection, from live->http_timeout_ms when the connection
 * starts): it counts time the socket made no progress, which with a pool
 * and pieces is the client's own inactivity.
 *
 * Hostile requests. MHD answers 414 to a request line and 431 to headers
 * larger than its pool. More than SL_HTTP_QUERY_PARAMS_MAX query parameters
 * get 400: the URI log callback counts them in the raw request line before
 * MHD parses them, and then cuts the query off (it writes a NUL after the
 * '?' in MHD's own read buffer, the one mutable byte MHD has not parsed
 * yet), so the parameters never fill the pool.
 *
 * Reading the store. Only the store's reader API: sl_store_snapshot into a
 * view (a seqlock copy that never blocks the store's writer; -EBUSY becomes
 * 503 with Retry-After: 1), sl_view_window and sl_view_lower_bound. The
 * sensor list wants ascending ids while the store keeps dense indices in
 * arrival order and never removes a sensor, so the first half of
 * sorted_ids holds the ids of the first sorted_count sensors in order, and
 * each listing piece extends it with the newcomers under http->sorted_lock:
 * their ids go into the second half, are heap-sorted there (glibc's qsort
 * may malloc, heapsort never does and needs no recursion), and are merged
 * in from the back, in place. A list piece resumes at the first id above
 * the last one sent.
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
 * Memory and limits (all in the plan, sl_http_plan). From the arena: the
 * views (threads x (view + 64 KiB)), the sorted ids, the connection table
 * ((connections_max + slack) x (record + 32 KiB piece)). Malloc'd by MHD
 * and stated in the plan as SL_HTTP_PLAN_MHD_PART: per connection slot its
 * pool (connection_memory_bytes), one response (a callback response's
 * block of SL_HTTP_PIECE_BYTES, or a copied body of at most 64 KiB) and its
 * connection record. The struct sl_http (a few KiB) is calloc'd at start.
 * Allocations on the workers are counted as SL_ALLOC_HTTP.
 *
 * Threads. sl_http_start and sl_http_stop run on the main thread; handlers
 * on MHD's workers; the watchdog on its own thread. http->lock guards the
 * connection table and the view pool, http->sorted_lock the sorted ids;
 * neither is ever held across a call into MHD or the store, except that
 * list pieces read summaries (O(1), lock-free) under sorted_lock. Counters
 * read by /metrics are relaxed atomics.
 */
#include "api/http.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "core/alloc_count.h"
#include "core/assert.h"
#include "mqtt/subscriber.h"
#include "net/sock.h"
#include "uplink/uplink.h"

/*
 * The allocation counter is linked only into binaries that want it
 * (alloc_count.h), and the server library must not depend on it: weak
 * references resolve to NULL when it is absent, and the calls are skipped.
 */
#pragma weak sl_alloc_track
#pragma weak sl_alloc_count

#define SL_HTTP_LIST_LIMIT_DEFAULT 100u
#define SL_HTTP_CONNECTION_MEMORY_MIN 4096u /* below this MHD cannot hold a request line */
#define SL_HTTP_READING_TEXT_BYTES 48u      /* one reading in JSON or CSV: 20 + 1 + 16 + 1 < 48 */
#define SL_HTTP_NAME_JSON_BYTES (6u * SL_SERIES_NAME_MAX + 16u) /* a series name as a JSON string */
#define SL_HTTP_LIST_ENTRY_BYTES (128u + SL_HTTP_NAME_JSON_BYTES) /* one entry of the sensor list */
#define SL_HTTP_SERIES_LIMIT_DEFAULT 100u
#define SL_HTTP_SERIES_LIMIT_MAX 1000u
#define SL_HTTP_WINDOW_TEXT_BYTES 256u      /* one window object and its key */
#define SL_HTTP_NUMBER_BYTES 32u            /* the longest number we print, with its NUL */
#define SL_HTTP_LABEL_BYTES_MAX 256u        /* longer label values (the version) are cut */
#define SL_HTTP_PIECE_HEAD_BYTES 64u        /* room for a response's opening or closing text */
#define SL_HTTP_WATCHDOG_TICK_MS 50u        /* how often the header deadline is checked */
#define SL_HTTP_EVICT_PROBES 8u             /* candidates with input waiting passed over, at most */

_Static_assert(512 + SL_HTTP_NAME_JSON_BYTES + SL_WINDOWS_MAX * SL_HTTP_WINDOW_TEXT_BYTES <=
                   SL_HTTP_PIECE_BYTES,
               "a sensor's JSON fits one piece");
_Static_assert(SL_HTTP_PIECE_BYTES >= 4 * (SL_HTTP_PIECE_HEAD_BYTES + SL_HTTP_LIST_ENTRY_BYTES),
               "a piece holds a few entries besides its head");

/* The status codes we answer with, for sluice_http_requests_total{code}. */
static const unsigned http_codes[] = {200, 204, 400, 404, 405, 413, 415, 500, 503};
#define SL_HTTP_CODES_COUNT (sizeof http_codes / sizeof http_codes[0])

enum conn_state { CONN_FREE, CONN_INCOMPLETE, CONN_ACTIVE, CONN_IDLE };

/* Why a connection was shut down or a response cut, for the metrics. */
enum evict_reason { EVICT_IDLE, EVICT_INCOMPLETE, EVICT_COUNT };
static const char *const evict_names[EVICT_COUNT] = {"idle", "incomplete"};
enum cut_reason { CUT_OVERWRITTEN, CUT_BUSY, CUT_UNKNOWN, CUT_COUNT };
static const char *const cut_names[CUT_COUNT] = {"overwritten", "busy", "no_view"};

enum readings_format { FORMAT_JSON, FORMAT_CSV, FORMAT_BIN };
enum piece_kind { PIECE_NONE, PIECE_READINGS, PIECE_LIST };
/* Where a piecewise response is: its opening, the times (or rows, or list entries), between, the
 * values, its end. */
enum piece_phase { PHASE_HEAD, PHASE_TIMES, PHASE_MID, PHASE_VALUES, PHASE_TAIL, PHASE_DONE };

/* What a piecewise response still has to send; fixed at the request except the positions. */
struct cursor {
    enum piece_kind kind;
    enum readings_format format;
    enum piece_phase phase;
    uint32_t sensor_id;
    uint64_t start_abs, next_abs, end_abs; /* readings: absolute reading numbers */
    uint64_t next_id;                      /* list: the next entry is the first id >= next_id */
    uint32_t left;                         /* list: entries still to send */
    uint32_t total;                        /* list: sensors known at the request */
    bool first;                            /* list: no entry sent yet */
    uint32_t piece_bytes, piece_sent;      /* of the piece buffer */
};

/* One slot of the connection table. The fields before `cursor` are under http->lock. */
struct conn {
    enum conn_state state;
    bool shut; /* shutdown issued; the CLOSED notification frees the slot */
    int fd;
    int64_t since_ms; /* incomplete: since accepted or its request line; else its last progress */
    uint8_t family;
    uint8_t addr[16];
    struct sl_http *http;
    /* The worker's own, between the request line and the request's end: */
    bool answered;        /* this request has its response */
    bool too_many_params; /* the request line held more than SL_HTTP_QUERY_PARAMS_MAX */
    bool headers_seen;    /* the access handler was called for this request already */
    struct cursor cursor;
    /* An HTTP write: its slot + 1 (0: none), and the body's decoding. */
    uint32_t write_slot;
    bool write_gzip;      /* Content-Encoding: gzip, inflated into the slot */
    bool write_gzip_done; /* the gzip stream ended */
    bool write_too_big;   /* over --http-max-body: the rest is discarded, 413 */
    bool write_bad_gzip;  /* not valid gzip: 400 */
    bool write_waiting;   /* submitted; the connection is suspended until the outcome */
    bool write_shutdown;  /* the ingest thread no longer takes writes: 503 */
    z_stream zs;
    char *piece; /* SL_HTTP_PIECE_BYTES, from connection_memory */
};

/* A worker's snapshot and /metrics buffer, taken for one callback at a time. */
struct view_slot {
    struct sl_sensor_view view;
    char *text; /* SL_HTTP_METRICS_BODY_BYTES */
    bool busy;  /* under http->lock */
    bool valid; /* view holds sensor view.id's readings [lo_abs, hi_abs) */
    uint64_t lo_abs, hi_abs;
};

struct sl_http {
    struct MHD_Daemon *daemon;
    struct sl_http_context context;
    struct sl_http_config config; /* effective: defaults filled in */
    pthread_mutex_t lock;         /* conns, views[].busy */
    pthread_mutex_t sorted_lock;  /* sorted_ids, sorted_count */
    pthread_cond_t watchdog_wake;
    pthread_t watchdog;
    bool watchdog_started;
    bool stopping; /* under lock */
    struct conn *conns;
    uint32_t slots_count; /* connections_max + SL_HTTP_CONNECTIONS_SLACK */
    struct view_slot views[SL_HTTP_THREADS_MAX];
    uint32_t sorted_count; /* sorted_ids[0, sorted_count) is sorted */
    int64_t window_s_max;  /* the longest configured window, in seconds */
    uint16_t port;
    _Atomic uint32_t connections_open;
    _Atomic uint64_t requests[SL_HTTP_CODES_COUNT];
    _Atomic uint64_t evicted[EVICT_COUNT];
    _Atomic uint64_t over_ip_cap;     /* newcomers that found their address at its cap */
    _Atomic uint64_t header_timeouts; /* shut for not completing headers in time */
    _Atomic uint64_t no_slot;         /* newcomers with no free slot (slack exhausted) */
    _Atomic uint64_t cut[CUT_COUNT];  /* piecewise responses ended early */
    _Atomic uint64_t params_refused;  /* requests with too many query parameters */
};

static void count(_Atomic uint64_t *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

static uint64_t counted(const _Atomic uint64_t *c)
{
    return atomic_load_explicit((_Atomic uint64_t *)c, memory_order_relaxed);
}

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* The live value when the daemon gave one, else the start-up value. */
static uint32_t live_or(const _Atomic uint32_t *live_field, uint32_t fixed)
{
    return live_field != NULL ? sl_live_get(live_field) : fixed;
}

static uint32_t header_timeout_ms(const struct sl_http *http)
{
    const struct sl_live *live = http->config.live;
    return live_or(live ? &live->http_header_timeout_ms : NULL, http->config.header_timeout_ms);
}

static uint32_t per_ip_max(const struct sl_http *http)
{
    const struct sl_live *live = http->config.live;
    return live_or(live ? &live->http_connections_per_ip_max : NULL,
                   http->config.connections_per_ip_max);
}

static uint32_t idle_timeout_s(const struct sl_http *http)
{
    const struct sl_live *live = http->config.live;
    uint32_t ms = live_or(live ? &live->http_timeout_ms : NULL, http->config.timeout_s * 1000);
    return ms / 1000 + (ms % 1000 != 0); /* MHD counts whole seconds: round up */
}

static void track_allocations(void)
{
    if (sl_alloc_track != NULL) {
        sl_alloc_track(SL_ALLOC_HTTP); /* a thread-local store: cheap every time */
    }
}

static void conn_progress(struct sl_http *http, struct conn *c);
static void conn_headers_complete(struct sl_http *http, struct conn *c);

/* ---- response bodies ---- */

/* A body under construction in a caller's buffer (a piece, the worker's, the stack). */
struct body {
    char *data;
    size_t len;
    size_t cap;
    bool overflow; /* a write did not fit: a bug in our bound, answered 500 */
};

static void body_open(struct body *b, char *buf, size_t cap)
{
    b->data = buf;
    b->len = 0;
    b->cap = cap;
    b->overflow = false;
}

static size_t body_room(const struct body *b)
{
    return b->cap - b->len;
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

/* Bytes of the UTF-8 sequence at p[0, n): 1 to 4, or 0 when it is not one (overlong, surrogate). */
static uint32_t utf8_sequence(const uint8_t *p, size_t n)
{
    uint8_t c = p[0];
    uint32_t len = c < 0xC2 ? 0 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF5 ? 4 : 0;
    if (len == 0 || len > n) {
        return 0;
    }
    for (uint32_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80) {
            return 0;
        }
    }
    if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] > 0x9F) || (c == 0xF0 && p[1] < 0x90) ||
        (c == 0xF4 && p[1] > 0x8F)) {
        return 0;
    }
    return len;
}

/*
 * A series name as a JSON string: quotes and backslashes escaped, control
 * bytes as \u00XX, a byte that is not UTF-8 as \ufffd (so the body is
 * always valid JSON; such a name is then not found by ?name= with the
 * text shown). At most SL_HTTP_NAME_JSON_BYTES.
 */
static void body_json_name(struct body *b, const char *name, uint32_t len)
{
    const uint8_t *p = (const uint8_t *)name;
    body_put(b, "\"", 1);
    for (uint32_t i = 0; i < len;) {
        uint8_t c = p[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            body_put(b, e, 2);
            i++;
        } else if (c < 0x20 || c == 0x7F) {
            body_fmt(b, "\\u%04x", c);
            i++;
        } else if (c < 0x80) {
            body_put(b, (const char *)p + i, 1);
            i++;
        } else {
            uint32_t n = utf8_sequence(p + i, len - i);
            if (n == 0) {
                body_str(b, "\\ufffd");
                i++;
            } else {
                body_put(b, (const char *)p + i, n);
                i += n;
            }
        }
    }
    body_put(b, "\"", 1);
}

/* ,"name":"..." for a named sensor; nothing for a bare id. */
static void body_sensor_name(struct body *b, const struct sl_http *http, uint32_t id)
{
    const char *name;
    uint32_t len;
    if (http->context.series != NULL && sl_series_name(http->context.series, id, &name, &len) == 0) {
        body_str(b, ",\"name\":");
        body_json_name(b, name, len);
    }
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
    struct conn *conn;
    const char *id_text; /* the {id} path segment, not NUL-terminated */
    size_t id_len;
};

static void count_request(struct sl_http *http, unsigned code)
{
    for (uint32_t i = 0; i < SL_HTTP_CODES_COUNT; i++) {
        if (http_codes[i] == code) {
            count(&http->requests[i]);
            return;
        }
    }
    SL_ASSERT(0 && "a status code missing from http_codes");
}

/* Queue a response; the content type and the extra header (either name may be NULL) when given. */
static enum MHD_Result queue(struct request *req, unsigned code, struct MHD_Response *response,
                             const char *content_type, const char *extra_name,
                             const char *extra_value)
{
    if (response == NULL) {
        return MHD_NO; /* out of memory: MHD closes the connection */
    }
    enum MHD_Result ok = MHD_YES;
    if (content_type != NULL) {
        ok = MHD_add_response_header(response, "Content-Type", content_type);
    }
    if (ok == MHD_YES && extra_name != NULL) {
        ok = MHD_add_response_header(response, extra_name, extra_value);
    }
    if (ok == MHD_YES) {
        ok = MHD_queue_response(req->connection, code, response);
    }
    MHD_destroy_response(response);
    if (ok == MHD_YES) {
        req->conn->answered = true;
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
        return queue(req, code, response, "application/json", "Allow", "GET, HEAD");
    }
    if (code == MHD_HTTP_SERVICE_UNAVAILABLE) {
        return queue(req, code, response, "application/json", "Retry-After", "1");
    }
    return queue(req, code, response, "application/json", NULL, NULL);
}

/*
 * Send a body built in the connection's piece buffer: MHD reads it from
 * there (the buffer is this connection's until its next request). 500 when
 * it overflowed its bound.
 */
static enum MHD_Result reply_piece(struct request *req, struct body *b, const char *content_type)
{
    SL_ASSERT(b->data == req->conn->piece);
    if (b->overflow) {
        /* A bug in a size bound, not a reason to take the daemon down from the query path. */
        return reply_error(req, 500, "internal error: response larger than planned");
    }
    struct MHD_Response *response =
        MHD_create_response_from_buffer(b->len, b->data, MHD_RESPMEM_PERSISTENT);
    return queue(req, MHD_HTTP_OK, response, content_type, NULL, NULL);
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

/* ---- the view pool ---- */

static bool view_covers(const struct view_slot *v, uint32_t sensor_id, uint64_t abs)
{
    return v->valid && v->view.id == sensor_id && v->lo_abs <= abs && abs < v->hi_abs;
}

/*
 * Take a free view, preferring one that already holds reading `abs` of
 * `sensor_id`. NULL only if more callbacks run than there are workers (a
 * bug in that bound; the caller answers 503).
 */
static struct view_slot *view_take(struct sl_http *http, uint32_t sensor_id, uint64_t abs)
{
    struct view_slot *found = NULL;
    pthread_mutex_lock(&http->lock);
    for (uint32_t i = 0; i < http->config.threads; i++) {
        struct view_slot *v = &http->views[i];
        if (v->busy) {
            continue;
        }
        if (found == NULL || view_covers(v, sensor_id, abs)) {
            found = v;
        }
        if (view_covers(v, sensor_id, abs)) {
            break;
        }
    }
    if (found != NULL) {
        found->busy = true;
    }
    pthread_mutex_unlock(&http->lock);
    return found;
}

static void view_give(struct sl_http *http, struct view_slot *v)
{
    pthread_mutex_lock(&http->lock);
    SL_ASSERT(v->busy);
    v->busy = false;
    pthread_mutex_unlock(&http->lock);
}

/* Snapshot a sensor into a taken view: 0, -ENOENT or -EBUSY (the view is then invalid). */
static int view_fill(struct sl_http *http, struct view_slot *v, uint32_t sensor_id)
{
    SL_ASSERT(v->busy);
    int rc = sl_store_snapshot(http->context.store, sensor_id, &v->view);
    v->valid = rc == 0;
    if (rc == 0) {
        SL_ASSERT(v->view.readings_total >= v->view.count);
        v->lo_abs = v->view.readings_total - v->view.count;
        v->hi_abs = v->view.readings_total;
    }
    return rc;
}

/*
 * Take a view holding sensor `id` as it is now; on failure the error is
 * answered (NULL). A view that already holds the sensor at its current
 * readings_total (its summary, O(1)) is the same as a new snapshot: every
 * change to a sensor appends a reading. So a burst of requests for one
 * quiet sensor costs one snapshot, not one each.
 */
static struct view_slot *snapshot(struct request *req, uint32_t id, enum MHD_Result *answered)
{
    struct sl_sensor_summary now;
    int rc = sl_store_summary(req->http->context.store, id, &now);
    uint64_t newest = rc == 0 && now.readings_total > 0 ? now.readings_total - 1 : UINT64_MAX;
    struct view_slot *v = view_take(req->http, id, newest);
    if (v == NULL) {
        *answered = reply_error(req, 503, "server busy, retry");
        return NULL;
    }
    if (rc == 0 && view_covers(v, id, newest) && v->hi_abs == now.readings_total) {
        return v;
    }
    rc = view_fill(req->http, v, id);
    if (rc == 0) {
        return v;
    }
    view_give(req->http, v);
    if (rc == -ENOENT) {
        *answered = reply_error(req, 404, "unknown sensor");
    } else {
        SL_ASSERT(rc == -EBUSY);
        *answered = reply_error(req, 503, "sensor busy, retry");
    }
    return NULL;
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

/* Bring sorted_ids up to the store's current sensor count; returns that count. Under sorted_lock.
 */
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

/* The index of the first id >= id in sorted_ids[0, n). Under sorted_lock. */
static uint32_t sorted_lower_bound(const uint32_t *sorted, uint32_t n, uint64_t id)
{
    uint32_t lo = 0, hi = n;
    while (lo < hi) { /* halves each step */
        uint32_t mid = lo + (hi - lo) / 2;
        if (sorted[mid] < id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

/* ---- piecewise responses ---- */

static ssize_t read_piece(void *cls, uint64_t pos, char *buf, size_t max);

static int fill_list(struct sl_http *http, struct cursor *cur, struct body *b);
static int fill_readings(struct sl_http *http, struct cursor *cur, struct body *b);

/* Fill the connection's piece buffer with what its cursor sends next. 0, or a negative status. */
static int fill_piece(struct sl_http *http, struct conn *c)
{
    struct cursor *cur = &c->cursor;
    struct body b;
    body_open(&b, c->piece, SL_HTTP_PIECE_BYTES);
    int rc = cur->kind == PIECE_LIST ? fill_list(http, cur, &b) : fill_readings(http, cur, &b);
    SL_ASSERT(!b.overflow); /* every write checked its room first */
    cur->piece_bytes = rc == 0 ? (uint32_t)b.len : 0;
    cur->piece_sent = 0;
    return rc;
}

/*
 * Queue the connection's cursor as a callback response (size
 * MHD_SIZE_UNKNOWN: chunked). The first piece is filled here, so a sensor
 * busy from the start still gets its 503 (later pieces can only cut).
 */
static enum MHD_Result reply_pieces(struct request *req, uint64_t size, const char *content_type,
                                    const char *extra_name, const char *extra_value)
{
    int rc = fill_piece(req->http, req->conn);
    if (rc == -EBUSY) {
        return reply_error(req, 503, "sensor busy, retry");
    }
    if (rc != 0) {
        return reply_error(req, 503, "server busy, retry");
    }
    struct MHD_Response *response =
        MHD_create_response_from_callback(size, SL_HTTP_PIECE_BYTES, read_piece, req->conn, NULL);
    return queue(req, MHD_HTTP_OK, response, content_type, extra_name, extra_value);
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
    struct cursor *cur = &req->conn->cursor;
    memset(cur, 0, sizeof *cur);
    cur->kind = PIECE_LIST;
    cur->phase = PHASE_HEAD;
    cur->first = true;
    pthread_mutex_lock(&http->sorted_lock);
    uint32_t total = sorted_extend(http);
    uint64_t from = (uint64_t)offset < total ? (uint64_t)offset : total;
    uint64_t to = from + (uint64_t)limit < total ? from + (uint64_t)limit : total;
    cur->total = total;
    cur->left = (uint32_t)(to - from);
    cur->next_id = from < total ? http->context.sorted_ids[from] : 0;
    pthread_mutex_unlock(&http->sorted_lock);
    return reply_pieces(req, MHD_SIZE_UNKNOWN, "application/json", NULL, NULL);
}

/* The next entries of a listing into b. 0, or -EBUSY (a sensor kept meeting the writer). */
static int fill_list_entries(struct sl_http *http, struct cursor *cur, struct body *b)
{
    const uint32_t *sorted = http->context.sorted_ids;
    int rc = 0;
    pthread_mutex_lock(&http->sorted_lock);
    uint32_t n = sorted_extend(http);
    uint32_t at = sorted_lower_bound(sorted, n, cur->next_id);
    while (cur->left > 0 && at < n && body_room(b) >= SL_HTTP_LIST_ENTRY_BYTES) {
        struct sl_sensor_summary v;
        rc = sl_store_summary(http->context.store, sorted[at], &v);
        if (rc != 0) {
            SL_ASSERT(rc == -EBUSY); /* a listed sensor is never unknown */
            break;
        }
        body_fmt(b, "%s{\"id\":%" PRIu32, cur->first ? "" : ",", v.id);
        body_sensor_name(b, http, v.id);
        body_fmt(b, ",\"readings_total\":%" PRIu64 ",\"last_t_us\":", v.readings_total);
        if (v.count == 0) {
            body_str(b, "null,\"last_value\":null}");
        } else {
            body_fmt(b, "%" PRId64 ",\"last_value\":", v.last_t_us);
            body_f32(b, v.last_value);
            body_str(b, "}");
        }
        cur->first = false;
        cur->next_id = (uint64_t)sorted[at] + 1;
        cur->left--;
        at++;
    }
    pthread_mutex_unlock(&http->sorted_lock);
    if (rc == 0 && (cur->left == 0 || at == n)) {
        cur->phase = PHASE_TAIL;
    }
    return rc;
}

static int fill_list(struct sl_http *http, struct cursor *cur, struct body *b)
{
    while (cur->phase != PHASE_DONE && body_room(b) >= SL_HTTP_PIECE_HEAD_BYTES) {
        if (cur->phase == PHASE_HEAD) {
            body_fmt(b, "{\"total\":%" PRIu32 ",\"sensors\":[", cur->total);
            cur->phase = PHASE_TIMES;
        } else if (cur->phase == PHASE_TIMES) {
            size_t before = b->len;
            int rc = fill_list_entries(http, cur, b);
            if (rc != 0) {
                return rc;
            }
            if (cur->phase == PHASE_TIMES && b->len == before) {
                break; /* the piece is full */
            }
        } else {
            SL_ASSERT(cur->phase == PHASE_TAIL);
            body_str(b, "]}");
            cur->phase = PHASE_DONE;
        }
    }
    return 0;
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

static void json_sensor_head(struct body *b, const struct sl_http *http,
                             const struct sl_sensor_view *v)
{
    body_fmt(b, "{\"id\":%" PRIu32, v->id);
    body_sensor_name(b, http, v->id);
    body_fmt(b, ",\"readings_total\":%" PRIu64 ",\"last\":", v->readings_total);
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
    struct view_slot *slot = snapshot(req, id, &answered);
    if (slot == NULL) {
        return answered;
    }
    const struct sl_store_config *config = &req->http->context.store->config;
    const struct sl_sensor_view *v = &slot->view;
    struct body b;
    body_open(&b, req->conn->piece, SL_HTTP_PIECE_BYTES);
    json_sensor_head(&b, req->http, v);
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
    view_give(req->http, slot);
    return reply_piece(req, &b, "application/json");
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
    struct view_slot *slot = snapshot(req, id, &answered);
    if (slot == NULL) {
        return answered;
    }
    struct sl_window_stats w;
    sl_view_window(&slot->view, window_s * 1000000, &w);
    view_give(req->http, slot);
    struct body b;
    body_open(&b, req->conn->piece, SL_HTTP_PIECE_BYTES);
    json_window(&b, &w);
    return reply_piece(req, &b, "application/json");
}
/* ---- readings ---- */

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

/*
 * Fix what a readings response sends: the absolute numbers [start, end) of
 * the oldest `limit` readings with from_us <= t <= to_us in a snapshot
 * taken now; the pieces then send exactly those.
 */
static enum MHD_Result handle_readings(struct request *req)
{
    uint32_t id = 0;
    struct readings_query q;
    enum MHD_Result answered = MHD_NO;
    if (path_sensor_id(req, &id) != 0) {
        return reply_error(req, 400, "sensor id must be a decimal u32");
    }
    if (readings_params(req, &q, &answered) != 0) {
        return answered;
    }
    struct view_slot *slot = snapshot(req, id, &answered);
    if (slot == NULL) {
        return answered;
    }
    const struct sl_sensor_view *v = &slot->view;
    uint32_t from = sl_view_lower_bound(v, q.from_us);
    uint32_t to = q.to_us == INT64_MAX ? v->count : sl_view_lower_bound(v, q.to_us + 1);
    uint32_t n = to > from ? to - from : 0;
    n = (int64_t)n > q.limit ? (uint32_t)q.limit : n; /* the oldest `limit` of them */
    struct cursor *cur = &req->conn->cursor;
    memset(cur, 0, sizeof *cur);
    cur->kind = PIECE_READINGS;
    cur->format = q.format;
    cur->sensor_id = id;
    cur->start_abs = slot->lo_abs + from;
    cur->next_abs = cur->start_abs;
    cur->end_abs = cur->start_abs + n;
    cur->phase = q.format == FORMAT_BIN ? PHASE_TIMES : PHASE_HEAD;
    view_give(req->http, slot); /* still valid: the first piece likely reuses it */
    if (q.format == FORMAT_JSON) {
        return reply_pieces(req, MHD_SIZE_UNKNOWN, "application/json", NULL, NULL);
    }
    if (q.format == FORMAT_CSV) {
        return reply_pieces(req, MHD_SIZE_UNKNOWN, "text/csv", NULL, NULL);
    }
    char count_text[SL_HTTP_NUMBER_BYTES];
    snprintf(count_text, sizeof count_text, "%" PRIu32, n);
    return reply_pieces(req, (uint64_t)n * 12, "application/octet-stream", "X-Count", count_text);
}

/*
 * Make *slot a view holding reading cur->next_abs: the one held if it
 * does, else a free one that does, else a fresh snapshot. 0, -ESTALE when
 * the ring dropped that reading, -EBUSY or -ENOENT from the snapshot, or
 * -EAGAIN when no view is free (a bug in that bound).
 */
static int view_for(struct sl_http *http, struct cursor *cur, struct view_slot **slot)
{
    if (*slot != NULL && view_covers(*slot, cur->sensor_id, cur->next_abs)) {
        return 0;
    }
    if (*slot == NULL) {
        *slot = view_take(http, cur->sensor_id, cur->next_abs);
        if (*slot == NULL) {
            return -EAGAIN;
        }
        if (view_covers(*slot, cur->sensor_id, cur->next_abs)) {
            return 0;
        }
    }
    int rc = view_fill(http, *slot, cur->sensor_id);
    if (rc != 0) {
        return rc;
    }
    if (cur->next_abs < (*slot)->lo_abs) {
        return -ESTALE;
    }
    SL_ASSERT(cur->next_abs < (*slot)->hi_abs); /* readings before end were there at the request */
    return 0;
}

/* The next readings of the times (or csv rows) or the values phase, as many as fit. */
static void fill_readings_run(struct cursor *cur, const struct view_slot *slot, struct body *b)
{
    const struct sl_sensor_view *v = &slot->view;
    uint64_t stop = cur->end_abs < slot->hi_abs ? cur->end_abs : slot->hi_abs;
    bool text = cur->format != FORMAT_BIN;
    size_t item = text ? SL_HTTP_READING_TEXT_BYTES : cur->phase == PHASE_TIMES ? 8 : 4;
    while (cur->next_abs < stop && body_room(b) >= item) { /* next_abs rises each step */
        uint32_t k = (uint32_t)(cur->next_abs - slot->lo_abs);
        const char *sep = cur->next_abs == cur->start_abs ? "" : ",";
        if (cur->format == FORMAT_BIN) {
            uint8_t *p = (uint8_t *)b->data + b->len;
            if (cur->phase == PHASE_TIMES) {
                sl_store_u64(p, (uint64_t)v->t_us[k]);
            } else {
                sl_store_f32(p, v->value[k]);
            }
            b->len += item;
        } else if (cur->format == FORMAT_CSV) {
            body_fmt(b, "%" PRId64 ",", v->t_us[k]);
            body_f32(b, v->value[k]);
            body_str(b, "\n");
        } else if (cur->phase == PHASE_TIMES) {
            body_fmt(b, "%s%" PRId64, sep, v->t_us[k]);
        } else {
            body_str(b, sep);
            body_f32(b, v->value[k]);
        }
        cur->next_abs++;
    }
}

/* Advance past a finished phase: times to mid (json), to values (bin) or to done (csv). */
static void readings_phase_done(struct cursor *cur)
{
    if (cur->phase == PHASE_VALUES) {
        cur->phase = cur->format == FORMAT_BIN ? PHASE_DONE : PHASE_TAIL;
    } else if (cur->format == FORMAT_CSV) {
        cur->phase = PHASE_DONE;
    } else if (cur->format == FORMAT_BIN) {
        cur->phase = PHASE_VALUES;
        cur->next_abs = cur->start_abs;
    } else {
        cur->phase = PHASE_MID;
    }
}

/* Fill the piece with what comes next. 0, or a negative status from view_for (the response is cut).
 */
static int fill_readings(struct sl_http *http, struct cursor *cur, struct body *b)
{
    struct view_slot *slot = NULL;
    int rc = 0;
    while (rc == 0 && cur->phase != PHASE_DONE && body_room(b) >= SL_HTTP_PIECE_HEAD_BYTES) {
        size_t before = b->len;
        switch (cur->phase) {
        case PHASE_HEAD:
            if (cur->format == FORMAT_JSON) {
                body_fmt(b, "{\"id\":%" PRIu32 ",\"t_us\":[", cur->sensor_id);
            } else {
                body_str(b, "t_us,value\n");
            }
            cur->phase = PHASE_TIMES;
            break;
        case PHASE_TIMES:
        case PHASE_VALUES:
            if (cur->next_abs == cur->end_abs) {
                readings_phase_done(cur);
                continue; /* a phase change writes nothing: not a full piece (bin times end one exactly) */
            }
            rc = view_for(http, cur, &slot);
            if (rc == 0) {
                fill_readings_run(cur, slot, b);
            }
            break;
        case PHASE_MID:
            body_str(b, "],\"value\":[");
            cur->next_abs = cur->start_abs;
            cur->phase = PHASE_VALUES;
            break;
        case PHASE_TAIL:
            body_str(b, "]}");
            cur->phase = PHASE_DONE;
            break;
        case PHASE_DONE:
            break;
        }
        if (rc == 0 && b->len == before &&
            (cur->phase == PHASE_TIMES || cur->phase == PHASE_VALUES) &&
            cur->next_abs != cur->end_abs) {
            break; /* the piece is full */
        }
    }
    if (slot != NULL) {
        view_give(http, slot);
    }
    return rc;
}

/*
 * MHD's reader: hand out the rest of the current piece, filling the next
 * one when it is all sent. Runs on the connection's worker; `pos` is what
 * MHD has taken so far (the pieces keep their own place).
 */
static ssize_t read_piece(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct conn *c = cls;
    struct sl_http *http = c->http;
    struct cursor *cur = &c->cursor;
    (void)pos;
    track_allocations();
    conn_progress(http, c);
    if (cur->piece_sent == cur->piece_bytes) {
        if (cur->phase == PHASE_DONE) {
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        int rc = fill_piece(http, c);
        if (rc != 0) {
            enum cut_reason why = rc == -ESTALE  ? CUT_OVERWRITTEN
                                  : rc == -EBUSY ? CUT_BUSY
                                                 : CUT_UNKNOWN;
            count(&http->cut[why]);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (cur->piece_bytes == 0) {
            SL_ASSERT(cur->phase == PHASE_DONE);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
    }
    size_t n = cur->piece_bytes - cur->piece_sent;
    n = n < max ? n : max;
    memcpy(buf, c->piece + cur->piece_sent, n);
    cur->piece_sent += (uint32_t)n;
    return (ssize_t)n;
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
    for (uint32_t r = 0; http->context.lines != NULL && r < SL_LINES_REJECT_COUNT; r++) {
        body_fmt(b, "sluice_readings_rejected_total{reason=\"%s\"} %" PRIu64 "\n",
                 sl_lines_reject_name(r), sl_counter_get(&http->context.lines->rejected[r]));
    }
    const struct prom_scalar gauges[] = {
        {"sluice_sensors", "gauge", "Sensors known.", sl_store_sensors_count(store)},
        {"sluice_sensors_capacity", "gauge", "Sensor table size.", store->config.sensors_max},
    };
    prom_scalars(b, gauges, SL_ARRAY_COUNT(gauges));
}

static void metrics_frames(struct body *b, const struct sl_http *http)
{
    const struct sl_net_counters *net = http->context.net;
    const struct sl_lines_counters *l = http->context.lines;
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
    if (l != NULL) {
        /* HTTP writes' batches (line records): logged and applied, or not made durable. */
        uint64_t records = sl_counter_get(&l->records[SL_LINES_HTTP]);
        uint64_t failed = sl_counter_get(&l->records_failed[SL_LINES_HTTP]);
        body_fmt(b, "sluice_batches_total{transport=\"http\",status=\"ok\"} %" PRIu64 "\n",
                 records - failed);
        body_fmt(b, "sluice_batches_total{transport=\"http\",status=\"overloaded\"} %" PRIu64 "\n",
                 failed);
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
         "Heap allocations by the HTTP workers (bounded and planned: MHD's pools and responses).",
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
    prom_family(b, "sluice_http_connections_evicted_total", "counter",
                "HTTP connections shut to make room (table full or address at its cap), by the "
                "state they were in: idle (no progress) or incomplete (headers not complete).");
    for (uint32_t r = 0; r < EVICT_COUNT; r++) {
        body_fmt(b, "sluice_http_connections_evicted_total{reason=\"%s\"} %" PRIu64 "\n",
                 evict_names[r], counted(&http->evicted[r]));
    }
    prom_family(b, "sluice_http_responses_cut_total", "counter",
                "Piecewise responses ended early, by reason (overwritten: the ring dropped the "
                "next reading before it was sent).");
    for (uint32_t r = 0; r < CUT_COUNT; r++) {
        body_fmt(b, "sluice_http_responses_cut_total{reason=\"%s\"} %" PRIu64 "\n", cut_names[r],
                 counted(&http->cut[r]));
    }
    const struct prom_scalar m[] = {
        {"sluice_http_header_timeouts_total", "counter",
         "HTTP connections shut because their request line and headers were not complete within "
         "the header timeout.",
         counted(&http->header_timeouts)},
        {"sluice_http_connections_over_ip_cap_total", "counter",
         "New HTTP connections that found their address at its cap (that address's connection "
         "idle or incomplete longest was shut for it).",
         counted(&http->over_ip_cap)},
        {"sluice_http_connections_refused_total", "counter",
         "New HTTP connections shut at once because no slot was free.", counted(&http->no_slot)},
        {"sluice_http_query_params_refused_total", "counter",
         "HTTP requests answered 400 for more query parameters than the limit.",
         counted(&http->params_refused)},
        {"sluice_http_threads", "gauge", "HTTP worker threads.", http->config.threads},
        {"sluice_http_connections_capacity", "gauge", "The HTTP connection limit.",
         http->config.connections_max},
    };
    prom_scalars(b, m, SL_ARRAY_COUNT(m));
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

/* The value of family f (metrics_uplinks' table) for output i; the lag (3) is printed apart. */
static uint64_t uplink_value(const struct sl_uplinks *ups, uint32_t i, uint32_t f)
{
    const struct sl_uplink_stats *st = sl_uplink_stats(ups, i);
    switch (f) {
    case 0:
        return counted(&st->sent_readings);
    case 1:
        return counted(&st->retries);
    case 2:
        return sl_uplink_backlog_bytes(ups, i);
    case 4:
        return counted(&st->dead_readings);
    case 5:
        return (uint64_t)atomic_load_explicit(&st->up, memory_order_relaxed);
    case 6:
        return counted(&st->bytes_sent);
    case 7:
        return counted(&st->bytes_raw);
    case 8:
        return counted(&st->cursor_lsn);
    default:
        return counted(&st->dead_bytes);
    }
}

/* Every output's metrics (UPLINK.md, "Observability"), one family at a time. */
static void metrics_uplinks(struct body *b, const struct sl_http *http)
{
    const struct sl_uplinks *ups = http->context.uplinks;
    if (ups == NULL || ups->count == 0) {
        return;
    }
    static const struct {
        const char *name, *type, *help;
    } families[] = {
        {"sluice_uplink_sent_readings_total", "counter",
         "Readings delivered upstream (2xx; aggregate: the readings its buckets cover)."},
        {"sluice_uplink_retries_total", "counter", "Requests sent again after a retryable failure."},
        {"sluice_uplink_backlog_bytes", "gauge", "Log bytes after the output's position."},
        {"sluice_uplink_lag_seconds", "gauge",
         "How long ago the oldest unsent reading was accepted; 0 when caught up."},
        {"sluice_uplink_dead_readings_total", "counter",
         "Readings of requests the upstream refused for good, written to NAME.dead."},
        {"sluice_uplink_up", "gauge", "1 when the output's last request succeeded."},
        {"sluice_uplink_sent_bytes_total", "counter", "Request bodies on the wire (compressed)."},
        {"sluice_uplink_encoded_bytes_total", "counter", "Request bodies before compression."},
        {"sluice_uplink_cursor_lsn", "gauge", "The durable cursor: every record up to it delivered."},
        {"sluice_uplink_dead_bytes", "gauge", "Bytes in the output's dead-letter files."},
    };
    for (uint32_t f = 0; f < SL_ARRAY_COUNT(families); f++) {
        prom_family(b, families[f].name, families[f].type, families[f].help);
        for (uint32_t i = 0; i < ups->count; i++) {
            const char *name = sl_uplink_config(ups, i)->name;
            if (f == 3) {
                body_fmt(b, "%s{output=\"%s\"} %.3f\n", families[f].name, name,
                         sl_uplink_lag_seconds(ups, i));
            } else {
                body_fmt(b, "%s{output=\"%s\"} %" PRIu64 "\n", families[f].name, name,
                         uplink_value(ups, i, f));
            }
        }
    }
    prom_family(b, "sluice_uplink_dropped_readings_total", "counter",
                "Readings an output gave up: log_full, the log recycled them before they were sent.");
    for (uint32_t i = 0; i < ups->count; i++) {
        body_fmt(b, "sluice_uplink_dropped_readings_total{output=\"%s\",reason=\"log_full\"} %" PRIu64
                    "\n",
                 sl_uplink_config(ups, i)->name, counted(&sl_uplink_stats(ups, i)->dropped_log_full));
    }
    prom_family(b, "sluice_uplink_requests_total", "counter",
                "Requests answered, by HTTP status, or error (no answer: connection, timeout).");
    for (uint32_t i = 0; i < ups->count; i++) {
        const struct sl_uplink_stats *st = sl_uplink_stats(ups, i);
        const char *name = sl_uplink_config(ups, i)->name;
        for (uint32_t k = 0; k < SL_UPLINK_CODES_MAX; k++) {
            uint32_t code = atomic_load_explicit(&st->codes[k], memory_order_acquire);
            if (code != 0) {
                body_fmt(b, "sluice_uplink_requests_total{output=\"%s\",code=\"%u\"} %" PRIu64 "\n",
                         name, code, counted(&st->code_counts[k]));
            }
        }
        body_fmt(b, "sluice_uplink_requests_total{output=\"%s\",code=\"error\"} %" PRIu64 "\n", name,
                 counted(&st->requests_error));
    }
    prom_family(b, "sluice_uplink_library_bytes", "gauge",
                "What libcurl holds now across every output (counted, capped by the plan).");
    body_fmt(b, "sluice_uplink_library_bytes %" PRIu64 "\n", sl_uplinks_library_bytes());
}

/*
 * GET /api/v1/uplinks (UPLINK.md): every output, its state and how far
 * behind it is. URLs as shown_url (credentials masked); the last error is
 * the upstream's answer or libcurl's reason, escaped.
 */
static enum MHD_Result handle_uplinks(struct request *req)
{
    const struct sl_uplinks *ups = req->http->context.uplinks;
    struct body b;
    body_open(&b, req->conn->piece, SL_HTTP_PIECE_BYTES);
    body_str(&b, "{\"uplinks\": [");
    for (uint32_t i = 0; ups != NULL && i < ups->count; i++) {
        const struct sl_uplink_output_config *o = sl_uplink_config(ups, i);
        const struct sl_uplink_stats *st = sl_uplink_stats(ups, i);
        char mode[48], error[SL_UPLINK_ERROR_BYTES];
        body_fmt(&b, "%s{\"name\": \"%s\", \"url\": ", i ? ", " : "", o->name);
        body_json_name(&b, o->shown_url, (uint32_t)strlen(o->shown_url));
        body_fmt(&b,
                 ", \"mode\": \"%s\", \"state\": \"%s\", \"cursor_lsn\": %" PRIu64
                 ", \"backlog_bytes\": %" PRIu64 ", \"lag_s\": %.3f, \"sent_readings\": %" PRIu64
                 ", \"dead_readings\": %" PRIu64 ", \"dropped_readings\": %" PRIu64
                 ", \"retries\": %" PRIu64 ", \"last_error\": ",
                 sl_uplink_mode_text(o, mode, sizeof mode),
                 sl_uplink_state_name(sl_uplink_state(ups, i)), counted(&st->cursor_lsn),
                 sl_uplink_backlog_bytes(ups, i), sl_uplink_lag_seconds(ups, i),
                 counted(&st->sent_readings), counted(&st->dead_readings),
                 counted(&st->dropped_log_full), counted(&st->retries));
        sl_uplink_last_error(ups, i, error, sizeof error);
        if (error[0] == '\0') {
            body_str(&b, "null}");
        } else {
            body_json_name(&b, error, (uint32_t)strlen(error));
            body_str(&b, "}");
        }
    }
    body_str(&b, "]}");
    return reply_piece(req, &b, "application/json");
}

/*
 * GET /api/v1/mqtt (MQTT.md): the broker, whether connected and why not,
 * the client id, the subscriptions in force, the message counts. 404 when
 * the subscriber is off.
 */
static enum MHD_Result handle_mqtt(struct request *req)
{
    struct sl_mqtt *m = req->http->context.mqtt;
    if (m == NULL) {
        return reply_error(req, 404, "the MQTT subscriber is off (--mqtt-broker)");
    }
    struct body b;
    body_open(&b, req->conn->piece, SL_HTTP_PIECE_BYTES);
    const struct sl_mqtt_stats *st = &m->stats;
    body_str(&b, "{\"broker\": ");
    body_json_name(&b, m->config.broker, (uint32_t)strlen(m->config.broker));
    body_fmt(&b, ", \"connected\": %s, \"client_id\": ",
             atomic_load_explicit(&st->connected, memory_order_relaxed) ? "true" : "false");
    body_json_name(&b, m->client_id, (uint32_t)strlen(m->client_id));
    body_str(&b, ", \"subscriptions\": [");
    struct sl_mqtt_subscription s;
    for (uint32_t i = 0; sl_mqtt_subscription_at(m, i, &s); i++) {
        body_str(&b, i ? ", {\"filter\": " : "{\"filter\": ");
        body_json_name(&b, s.filter, (uint32_t)strlen(s.filter));
        body_fmt(&b, ", \"format\": \"%s\"}", sl_mqtt_format_name(s.format));
    }
    body_str(&b, "], \"messages\": {");
    for (uint32_t r = 0; r < SL_MQTT_RESULT_COUNT; r++) {
        body_fmt(&b, "%s\"%s\": %" PRIu64, r ? ", " : "", sl_mqtt_result_name(r),
                 counted(&st->messages[r]));
    }
    body_fmt(&b,
             "}, \"readings_accepted\": %" PRIu64 ", \"readings_rejected\": %" PRIu64
             ", \"rounds\": %" PRIu64 ", \"rounds_refused\": %" PRIu64
             ", \"reconnects\": %" PRIu64 ", \"last_error\": ",
             counted(&st->readings_accepted), counted(&st->readings_rejected), counted(&st->rounds),
             counted(&st->rounds_refused), counted(&st->reconnects));
    char error[SL_MQTT_ERROR_BYTES];
    sl_mqtt_last_error(m, error, sizeof error);
    if (error[0] == '\0') {
        body_str(&b, "null}");
    } else {
        body_json_name(&b, error, (uint32_t)strlen(error));
        body_str(&b, "}");
    }
    return reply_piece(req, &b, "application/json");
}

static void metrics_mqtt(struct body *b, const struct sl_http *http)
{
    const struct sl_mqtt *m = http->context.mqtt;
    if (m == NULL) {
        return;
    }
    const struct sl_mqtt_stats *st = &m->stats;
    const struct prom_scalar scalars[] = {
        {"sluice_mqtt_connected", "gauge", "1 while the subscriber is connected to its broker.",
         atomic_load_explicit(&st->connected, memory_order_relaxed)},
        {"sluice_mqtt_reconnects_total", "counter", "Connections to the broker after the first.",
         counted(&st->reconnects)},
        {"sluice_mqtt_rounds_total", "counter",
         "Rounds of messages made durable, then acknowledged (PUBACK).", counted(&st->rounds)},
        {"sluice_mqtt_rounds_refused_total", "counter",
         "Rounds the log did not take: not acknowledged, delivered again by the broker.",
         counted(&st->rounds_refused)},
    };
    prom_scalars(b, scalars, SL_ARRAY_COUNT(scalars));
    prom_family(b, "sluice_mqtt_messages_total", "counter", "MQTT messages by result.");
    for (uint32_t r = 0; r < SL_MQTT_RESULT_COUNT; r++) {
        body_fmt(b, "sluice_mqtt_messages_total{result=\"%s\"} %" PRIu64 "\n",
                 sl_mqtt_result_name(r), counted(&st->messages[r]));
    }
}

static void metrics_lines(struct body *b, const struct sl_http *http);

static enum MHD_Result handle_metrics(struct request *req)
{
    struct sl_http *http = req->http;
    struct view_slot *slot = view_take(http, 0, UINT64_MAX);
    if (slot == NULL) {
        return reply_error(req, 503, "server busy, retry");
    }
    struct body b;
    body_open(&b, slot->text, SL_HTTP_METRICS_BODY_BYTES);
    metrics_store(&b, http);
    metrics_frames(&b, http);
    metrics_lines(&b, http);
    metrics_net(&b, http->context.net);
    metrics_connections(&b, http);
    metrics_memory(&b, http);
    metrics_http(&b, http);
    metrics_log(&b, http);
    metrics_recovery(&b, http);
    metrics_uplinks(&b, http);
    metrics_mqtt(&b, http);
    struct MHD_Response *response = NULL;
    if (!b.overflow) {
        response = MHD_create_response_from_buffer(b.len, b.data, MHD_RESPMEM_MUST_COPY);
    }
    view_give(http, slot);
    if (b.overflow) {
        return reply_error(req, 500, "internal error: response larger than planned");
    }
    return queue(req, MHD_HTTP_OK, response, "text/plain; version=0.0.4; charset=utf-8", NULL,
                 NULL);
}
/* ---- named series (LINE_PROTOCOL.md, "Queries by name") ---- */

/* Series index a's name before b's, bytewise (a shorter prefix first). */
static bool series_less(const struct sl_series *s, uint32_t a, uint32_t b)
{
    const char *na, *nb;
    uint32_t la, lb;
    (void)sl_series_name(s, s->id_base + a, &na, &la);
    (void)sl_series_name(s, s->id_base + b, &nb, &lb);
    int c = memcmp(na, nb, la < lb ? la : lb);
    return c < 0 || (c == 0 && la < lb);
}

/* Heap sort of series indices by name: no allocation, O(n log n) worst case. */
static void series_sort(const struct sl_series *s, uint32_t *v, uint32_t n)
{
    for (uint32_t start = n / 2; n > 1;) {
        uint32_t root;
        if (start > 0) {
            root = --start;
        } else {
            uint32_t t = v[0];
            v[0] = v[--n];
            v[n] = t;
            root = 0;
        }
        for (;;) {
            uint32_t child = 2 * root + 1;
            if (child >= n) {
                break;
            }
            if (child + 1 < n && series_less(s, v[child], v[child + 1])) {
                child++;
            }
            if (!series_less(s, v[root], v[child])) {
                break;
            }
            uint32_t t = v[root];
            v[root] = v[child];
            v[child] = t;
            root = child;
        }
    }
}

/*
 * ?name=N: {"id": ..., "name": ...} or 404. ?prefix=P&offset=&limit=: the
 * named series whose name starts with P, sorted by name, a page of at
 * most `limit` (1,000) entries that fits one 32 KiB piece (a page cut
 * short by the piece still says the total: page on with offset). The
 * matches are sorted in the second half of sorted_ids (merge scratch,
 * sensors_max entries >= --max-series) under sorted_lock.
 */
static enum MHD_Result handle_series(struct request *req)
{
    struct sl_http *http = req->http;
    const struct sl_series *series = http->context.series;
    const char *name = query_value(req->connection, "name");
    const char *prefix = query_value(req->connection, "prefix");
    if (series == NULL) {
        return reply_error(req, 404, "unknown series");
    }
    struct body b;
    body_open(&b, req->conn->piece, SL_HTTP_PIECE_BYTES);
    if (name != NULL) {
        uint32_t id;
        if (sl_series_lookup(series, name, (uint32_t)strlen(name), &id) != 0) {
            return reply_error(req, 404, "unknown series");
        }
        const char *stored;
        uint32_t len;
        (void)sl_series_name(series, id, &stored, &len);
        body_fmt(&b, "{\"id\": %" PRIu32 ", \"name\": ", id);
        body_json_name(&b, stored, len);
        body_str(&b, "}");
        return reply_piece(req, &b, "application/json");
    }
    if (prefix == NULL) {
        return reply_error(req, 400, "give name= (exact) or prefix= (may be empty)");
    }
    int64_t offset = 0, limit = 0;
    if (param_i64(req, "offset", 0, INT64_MAX, 0, &offset) != 0) {
        return reply_error(req, 400, "offset must be an integer >= 0");
    }
    if (param_i64(req, "limit", 1, SL_HTTP_SERIES_LIMIT_MAX, SL_HTTP_SERIES_LIMIT_DEFAULT, &limit) !=
        0) {
        return reply_error(req, 400, "limit must be an integer from 1 to %u",
                           SL_HTTP_SERIES_LIMIT_MAX);
    }
    size_t plen = strlen(prefix);
    pthread_mutex_lock(&http->sorted_lock);
    uint32_t *match = http->context.sorted_ids + http->context.store->config.sensors_max;
    uint32_t count = sl_series_count(series), total = 0;
    for (uint32_t i = 0; i < count; i++) {
        const char *n;
        uint32_t len;
        if (sl_series_name(series, series->id_base + i, &n, &len) == 0 && len >= plen &&
            memcmp(n, prefix, plen) == 0) {
            match[total++] = i;
        }
    }
    series_sort(series, match, total);
    body_fmt(&b, "{\"total\": %" PRIu32 ", \"series\": [", total);
    uint64_t from = (uint64_t)offset < total ? (uint64_t)offset : total;
    for (uint64_t k = from; k < total && k < from + (uint64_t)limit; k++) {
        if (body_room(&b) < SL_HTTP_NAME_JSON_BYTES + SL_HTTP_PIECE_HEAD_BYTES) {
            break; /* the page is as long as one piece holds */
        }
        const char *n;
        uint32_t len;
        (void)sl_series_name(series, series->id_base + match[k], &n, &len);
        body_fmt(&b, "%s{\"id\": %" PRIu32 ", \"name\": ", k == from ? "" : ", ",
                 series->id_base + match[k]);
        body_json_name(&b, n, len);
        body_str(&b, "}");
    }
    pthread_mutex_unlock(&http->sorted_lock);
    body_str(&b, "]}");
    return reply_piece(req, &b, "application/json");
}

/* ---- HTTP writes (LINE_PROTOCOL.md, "HTTP") ---- */

static struct sl_write *conn_write(struct conn *c)
{
    return &c->http->context.writes->writes[c->write_slot - 1];
}

/* zlib's allocations come from the slot's planned inflate area (a bump allocator, reset per request). */
static void *inflate_alloc(void *opaque, unsigned items, unsigned size)
{
    struct sl_write *w = opaque;
    uint64_t bytes = sl_align_up((uint64_t)items * size, 16);
    if (bytes > SL_LINES_INFLATE_BYTES - w->inflate_used) {
        return NULL; /* zlib reports Z_MEM_ERROR: answered 400 */
    }
    void *p = w->inflate_memory + w->inflate_used;
    w->inflate_used += (uint32_t)bytes;
    return p;
}

static void inflate_free(void *opaque, void *p)
{
    (void)opaque;
    (void)p; /* freed whole when the slot is reused */
}

/* Give the connection's slot back (the request ended, answered or not). */
static void write_release(struct conn *c)
{
    if (c->write_slot == 0) {
        return;
    }
    if (c->write_gzip) {
        inflateEnd(&c->zs);
        c->write_gzip = false;
    }
    if (c->write_waiting) {
        /* The request ended with its write in the ingest thread's hands (MHD stopping). */
        sl_lines_write_abandon(c->http->context.writes, c->write_slot - 1);
    } else {
        sl_lines_write_release(c->http->context.writes, c->write_slot - 1);
    }
    c->write_slot = 0;
    c->write_waiting = false;
}

/* Queue a write response with X-Sluice-Accepted/Rejected (and Retry-After on 503). */
static enum MHD_Result write_reply(struct request *req, unsigned code, const char *json,
                                   uint64_t accepted, uint64_t rejected)
{
    size_t n = json != NULL ? strlen(json) : 0;
    struct MHD_Response *response =
        MHD_create_response_from_buffer(n, (void *)(json != NULL ? json : ""), MHD_RESPMEM_MUST_COPY);
    if (response == NULL) {
        return MHD_NO;
    }
    char a[32], r[32];
    snprintf(a, sizeof a, "%" PRIu64, accepted);
    snprintf(r, sizeof r, "%" PRIu64, rejected);
    if (MHD_add_response_header(response, "X-Sluice-Accepted", a) != MHD_YES ||
        MHD_add_response_header(response, "X-Sluice-Rejected", r) != MHD_YES ||
        (code == MHD_HTTP_SERVICE_UNAVAILABLE &&
         MHD_add_response_header(response, "Retry-After", "1") != MHD_YES)) {
        MHD_destroy_response(response);
        return MHD_NO;
    }
    return queue(req, code, response, json != NULL ? "application/json" : NULL, NULL, NULL);
}

/* A refusal before anything is stored: {"error": ...} with the write headers. */
__attribute__((format(printf, 3, 4))) static enum MHD_Result
write_refuse(struct request *req, unsigned code, const char *fmt, ...)
{
    char message[300], json[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    snprintf(json, sizeof json, "{\"error\": \"%s\"}", message);
    return write_reply(req, code, json, 0, 0);
}

/* The first call: headers complete. Check them, take a slot, or answer at once. */
static enum MHD_Result write_begin(struct request *req)
{
    struct sl_http *http = req->http;
    struct conn *c = req->conn;
    struct sl_lines_hub *hub = http->context.writes;
    enum sl_line_precision precision = SL_LINE_NS;
    const char *p = query_value(req->connection, "precision");
    if (p != NULL && sl_line_precision_parse(p, &precision) != 0) {
        return write_refuse(req, 400, "invalid precision: use n, ns, u, us, ms, s, m or h");
    }
    const char *encoding =
        MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, "Content-Encoding");
    bool gzip = false;
    if (encoding != NULL && strcasecmp(encoding, "gzip") == 0) {
        gzip = true;
    } else if (encoding != NULL && strcasecmp(encoding, "identity") != 0) {
        return write_refuse(req, 415, "unsupported Content-Encoding: use gzip or none");
    }
    const char *length =
        MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, "Content-Length");
    if (length != NULL && !gzip) {
        char *end = NULL;
        errno = 0;
        unsigned long long n = strtoull(length, &end, 10);
        if (errno == 0 && end != length && *end == '\0' && n > hub->body_bytes) {
            return write_refuse(req, 413, "body over --http-max-body (%" PRIu64 " bytes)",
                                hub->body_bytes);
        }
    }
    char reason[256];
    const struct sl_log *log = http->context.log;
    if (log != NULL && sl_log_health(log, reason, sizeof reason) != 0) {
        return write_refuse(req, 503, "the log cannot take writes now (see /healthz)");
    }
    int slot = sl_lines_write_acquire(hub);
    if (slot < 0) {
        return write_refuse(req, 503, "every write slot holds a body (--max-http-writes %u)",
                            hub->count);
    }
    c->write_slot = (uint32_t)slot + 1;
    c->write_gzip = gzip;
    c->write_gzip_done = c->write_too_big = c->write_bad_gzip = false;
    struct sl_write *w = conn_write(c);
    w->precision = (uint8_t)precision;
    if (gzip) {
        memset(&c->zs, 0, sizeof c->zs);
        c->zs.zalloc = inflate_alloc;
        c->zs.zfree = inflate_free;
        c->zs.opaque = w;
        if (inflateInit2(&c->zs, 16 + MAX_WBITS) != Z_OK) { /* 16: gzip framing only */
            c->write_gzip = false;
            write_release(c);
            return write_refuse(req, 503, "cannot inflate now, retry");
        }
    }
    return MHD_YES; /* the body follows */
}

/* A piece of the body: into the slot, inflated when gzip; past the bound it is only counted. */
static void write_take(struct conn *c, const char *data, size_t n)
{
    struct sl_write *w = conn_write(c);
    uint64_t cap = c->http->context.writes->body_bytes;
    if (c->write_too_big || c->write_bad_gzip) {
        return;
    }
    if (!c->write_gzip) {
        if (n > cap - w->body_len) {
            c->write_too_big = true;
            return;
        }
        memcpy(w->body + w->body_len, data, n);
        w->body_len += n;
        return;
    }
    c->zs.next_in = (Bytef *)(uintptr_t)data;
    c->zs.avail_in = (uInt)n;
    while (c->zs.avail_in > 0) {
        if (c->write_gzip_done) {
            c->write_bad_gzip = true; /* bytes after the stream's end */
            return;
        }
        if (w->body_len == cap) {
            c->write_too_big = true; /* the zip bomb stops here */
            return;
        }
        uint64_t room = cap - w->body_len;
        c->zs.next_out = (Bytef *)w->body + w->body_len;
        c->zs.avail_out = room > UINT32_MAX ? UINT32_MAX : (uInt)room;
        uInt before = c->zs.avail_out;
        int rc = inflate(&c->zs, Z_NO_FLUSH);
        w->body_len += before - c->zs.avail_out;
        if (rc == Z_STREAM_END) {
            c->write_gzip_done = true;
        } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
            c->write_bad_gzip = true;
            return;
        }
    }
}

/* The last call: hand the body over, wait for its outcome, answer. */
static enum MHD_Result write_end(struct request *req)
{
    struct conn *c = req->conn;
    struct sl_lines_hub *hub = req->http->context.writes;
    if (c->write_too_big) {
        bool inflated = c->write_gzip;
        write_release(c);
        return write_refuse(req, 413, "body over --http-max-body (%" PRIu64 " bytes%s)",
                            hub->body_bytes, inflated ? " after decompression" : "");
    }
    if (c->write_gzip && (c->write_bad_gzip || !c->write_gzip_done)) {
        write_release(c);
        return write_refuse(req, 400, "the body is not valid gzip");
    }
    uint32_t index = c->write_slot - 1;
    if (c->write_gzip) {
        inflateEnd(&c->zs);
        c->write_gzip = false;
    }
    hub->writes[index].waiter = req->connection;
    /*
     * Suspended until the ingest thread has the outcome (write_resume): this
     * worker serves its other connections meanwhile, and MHD calls us again
     * then. Suspended before the submit, so the resume can never come first.
     */
    MHD_suspend_connection(req->connection);
    c->write_waiting = true;
    if (sl_lines_write_submit(hub, index) != 0) {
        c->write_waiting = false;
        c->write_shutdown = true; /* answered 503 at the next call */
        MHD_resume_connection(req->connection);
    }
    return MHD_YES;
}

/* The ingest thread's notice that a write is DONE: its connection goes on. */
static void write_resume(void *ctx, void *waiter)
{
    (void)ctx;
    MHD_resume_connection(waiter);
}

/* Called again after the resume: answer from the outcome, free the slot. */
static enum MHD_Result write_answer(struct request *req)
{
    struct conn *c = req->conn;
    struct sl_lines_hub *hub = req->http->context.writes;
    uint32_t index = c->write_slot - 1;
    struct sl_write *w = &hub->writes[index];
    if (atomic_load_explicit(&w->state, memory_order_acquire) != SL_WRITE_DONE) {
        MHD_suspend_connection(req->connection); /* not ours yet (never expected) */
        return MHD_YES;
    }
    c->write_waiting = false;
    uint64_t accepted = w->accepted, rejected = w->rejected;
    enum MHD_Result rc;
    if (w->outcome == SL_WRITE_LOG_REFUSED) {
        rc = write_reply(req, 503,
                         "{\"error\": \"the log cannot take writes now (see /healthz)\"}",
                         accepted, rejected);
    } else if (w->lines_bad > 0) {
        char text[160], json[512];
        snprintf(text, sizeof text, "partial write: line %" PRIu32 ": %s (%" PRIu64
                 " line%s dropped)", w->first_bad_line, sl_line_error_name(w->first_bad_error),
                 w->lines_bad, w->lines_bad == 1 ? "" : "s");
        snprintf(json, sizeof json,
                 "{\"error\": \"%s\", \"code\": \"invalid\", \"message\": \"%s\", \"line\": %" PRIu32
                 ", \"lines_dropped\": %" PRIu64 "}",
                 text, text, w->first_bad_line, w->lines_bad);
        rc = write_reply(req, 400, json, accepted, rejected);
    } else {
        rc = write_reply(req, 204, NULL, accepted, rejected);
    }
    write_release(c);
    return rc;
}

/* POST /write, /api/v2/write: the access handler's calls for one request. */
static enum MHD_Result handle_write(struct request *req, const char *upload_data,
                                    size_t *upload_data_size)
{
    struct conn *c = req->conn;
    if (c->write_slot == 0) {
        return write_begin(req);
    }
    if (c->write_waiting) {
        return write_answer(req);
    }
    if (c->write_shutdown) {
        c->write_shutdown = false;
        write_release(c);
        return write_refuse(req, 503, "shutting down");
    }
    if (*upload_data_size > 0) {
        write_take(c, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    return write_end(req);
}

static void metrics_lines(struct body *b, const struct sl_http *http)
{
    static const char *const lt[SL_LINES_TRANSPORT_COUNT] = {"http", "tcp", "udp", "mqtt"};
    const struct sl_series *s = http->context.series;
    const struct sl_lines_counters *l = http->context.lines;
    if (s != NULL) {
        const struct prom_scalar gauges[] = {
            {"sluice_series", "gauge", "Named series (line protocol).", sl_series_count(s)},
            {"sluice_series_capacity", "gauge", "Named series the registry holds (--max-series).",
             s->capacity},
        };
        prom_scalars(b, gauges, SL_ARRAY_COUNT(gauges));
        prom_family(b, "sluice_series_name_bytes", "gauge",
                    "Bytes of series names, used and planned (--series-name-bytes).");
        body_fmt(b, "sluice_series_name_bytes{state=\"used\"} %" PRIu64 "\n",
                 sl_series_name_bytes(s));
        body_fmt(b, "sluice_series_name_bytes{state=\"capacity\"} %" PRIu64 "\n", s->name_capacity);
    }
    if (l == NULL) {
        return;
    }
    prom_family(b, "sluice_lines_total", "counter", "Line protocol lines by transport and result.");
    for (uint32_t t = 0; t < SL_LINES_TRANSPORT_COUNT; t++) {
        body_fmt(b, "sluice_lines_total{transport=\"%s\",result=\"ok\"} %" PRIu64 "\n", lt[t],
                 sl_counter_get(&l->lines_ok[t]));
        body_fmt(b, "sluice_lines_total{transport=\"%s\",result=\"bad\"} %" PRIu64 "\n", lt[t],
                 sl_counter_get(&l->lines_bad[t]));
    }
    prom_family(b, "sluice_line_readings_shed_total", "counter",
                "Line protocol readings the log could not take (the request answered 503).");
    for (uint32_t t = 0; t < SL_LINES_TRANSPORT_COUNT; t++) {
        body_fmt(b, "sluice_line_readings_shed_total{transport=\"%s\"} %" PRIu64 "\n", lt[t],
                 sl_counter_get(&l->shed[t]));
    }
    const struct prom_scalar m[] = {
        {"sluice_line_too_long_total", "counter",
         "TCP lines over 64 KiB, skipped to their newline.", sl_counter_get(&l->lines_too_long)},
        {"sluice_series_records_total", "counter",
         "Series names written to the log (again after a failed commit).",
         sl_counter_get(&l->series_records)},
        {"sluice_http_writes_total", "counter", "HTTP write bodies handed to the ingest thread.",
         sl_counter_get(&l->http_writes)},
        {"sluice_http_writes_busy_total", "counter",
         "HTTP writes refused 503: every slot held a body (--max-http-writes).",
         http->context.writes != NULL
             ? atomic_load_explicit(&http->context.writes->refused_busy, memory_order_relaxed)
             : 0},
        {"sluice_line_tcp_connections", "gauge", "Open line protocol TCP connections.",
         atomic_load_explicit(&((struct sl_lines_counters *)l)->tcp_open, memory_order_relaxed)},
        {"sluice_line_tcp_connections_accepted_total", "counter", "Line TCP connections accepted.",
         sl_counter_get(&l->tcp_accepted)},
        {"sluice_line_tcp_connections_refused_total", "counter",
         "Line TCP connections refused (address at its cap, no descriptor).",
         sl_counter_get(&l->tcp_refused)},
        {"sluice_line_tcp_connections_evicted_total", "counter",
         "Line TCP connections closed to make room (idle longest).", sl_counter_get(&l->tcp_evicted)},
        {"sluice_line_tcp_connections_timed_out_total", "counter",
         "Line TCP connections closed idle or with a line unfinished past the deadline.",
         sl_counter_get(&l->tcp_timed_out)},
        {"sluice_line_udp_datagrams_total", "counter", "Line protocol UDP datagrams.",
         sl_counter_get(&l->udp_datagrams)},
    };
    prom_scalars(b, m, SL_ARRAY_COUNT(m));
}

/* ---- routing ---- */

enum route {
    ROUTE_NOT_FOUND,
    ROUTE_HEALTH,
    ROUTE_PING,
    ROUTE_METRICS,
    ROUTE_LIST,
    ROUTE_SENSOR,
    ROUTE_STATS,
    ROUTE_READINGS,
    ROUTE_WRITE,
    ROUTE_SERIES,
    ROUTE_UPLINKS,
    ROUTE_MQTT,
};

/* Exact paths only (no trailing slash); the {id} segment is checked by the handler. */
static enum route route_of(const char *url, struct request *req)
{
    static const char sensors[] = "/api/v1/sensors";
    if (strcmp(url, "/healthz") == 0) {
        return ROUTE_HEALTH;
    }
    if (strcmp(url, "/ping") == 0) {
        return ROUTE_PING;
    }
    if (strcmp(url, "/metrics") == 0) {
        return ROUTE_METRICS;
    }
    if (strcmp(url, "/write") == 0 || strcmp(url, "/api/v2/write") == 0) {
        return ROUTE_WRITE;
    }
    if (strcmp(url, "/api/v1/series") == 0) {
        return ROUTE_SERIES;
    }
    if (strcmp(url, "/api/v1/uplinks") == 0) {
        return ROUTE_UPLINKS;
    }
    if (strcmp(url, "/api/v1/mqtt") == 0) {
        return ROUTE_MQTT;
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

/*
 * GET|HEAD /ping (LINE_PROTOCOL.md): 204 with the headers InfluxDB clients
 * and Telegraf's outputs.influxdb look for before they write. The version is
 * the InfluxDB 1.x API Sluice speaks; the build names Sluice.
 */
static enum MHD_Result reply_ping(struct request *req)
{
    struct MHD_Response *response =
        MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (response != NULL &&
        MHD_add_response_header(response, "X-Influxdb-Build", "Sluice " SL_VERSION) != MHD_YES) {
        MHD_destroy_response(response);
        return MHD_NO;
    }
    return queue(req, MHD_HTTP_NO_CONTENT, response, NULL, "X-Influxdb-Version", SL_HTTP_INFLUX_VERSION);
}

/*
 * The access handler. *request_state is the connection's slot (the URI log
 * callback returned it); the first call of a request means its headers are
 * complete. HEAD runs the GET handler: MHD sends the same headers and no
 * body (a piecewise response's reader is never called).
 */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *connection, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **request_state)
{
    (void)version;
    struct sl_http *http = cls;
    struct conn *c = *request_state;
    track_allocations();
    if (c == NULL) {
        return MHD_NO; /* a connection refused in conn_started */
    }
    SL_ASSERT(c->http == http);
    if (c->answered) {
        *upload_data_size = 0; /* already answered: discard any body */
        return MHD_YES;
    }
    conn_headers_complete(http, c);
    if (!c->headers_seen) {
        c->headers_seen = true;
        /*
         * A request without a body is answered at MHD's second call, once it
         * knows the request is whole: a response queued at the first would
         * make it close the connection (no keep-alive for queries, pings).
         * One that announces a body (not a write) is answered at once, and
         * its connection closed, rather than read a body nobody wants.
         */
        bool bodyless =
            MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Content-Length") == NULL &&
            MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Transfer-Encoding") == NULL;
        if (bodyless && strcmp(method, MHD_HTTP_METHOD_POST) != 0) {
            return MHD_YES;
        }
    }
    struct request req = {.http = http, .connection = connection, .conn = c};
    if (c->too_many_params) {
        count(&http->params_refused);
        return reply_error(&req, 400, "too many query parameters");
    }
    enum route route = route_of(url, &req);
    if (route == ROUTE_NOT_FOUND || (route == ROUTE_WRITE && http->context.writes == NULL)) {
        return reply_error(&req, 404, "not found");
    }
    if (route == ROUTE_WRITE) {
        if (strcmp(method, MHD_HTTP_METHOD_POST) != 0) {
            struct MHD_Response *response = MHD_create_response_from_buffer(
                strlen("{\"error\": \"method not allowed, use POST\"}"),
                (void *)"{\"error\": \"method not allowed, use POST\"}", MHD_RESPMEM_PERSISTENT);
            return queue(&req, MHD_HTTP_METHOD_NOT_ALLOWED, response, "application/json", "Allow",
                         "POST");
        }
        return handle_write(&req, upload_data, upload_data_size);
    }
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        return reply_error(&req, 405, "method not allowed, use GET or HEAD");
    }
    switch (route) {
    case ROUTE_HEALTH:
        return reply_health(&req);
    case ROUTE_PING:
        return reply_ping(&req);
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
    case ROUTE_SERIES:
        return handle_series(&req);
    case ROUTE_UPLINKS:
        return handle_uplinks(&req);
    case ROUTE_MQTT:
        return handle_mqtt(&req);
    case ROUTE_WRITE:
    case ROUTE_NOT_FOUND:
        break;
    }
    SL_ASSERT(0 && "every route is handled");
    return MHD_NO;
}

/* ---- the connection table ---- */

static struct conn *conn_of(struct MHD_Connection *connection)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return info != NULL ? info->socket_context : NULL;
}

/* Shut a connection down (MHD then closes it on its worker). Under lock. */
static void conn_shut(struct sl_http *http, struct conn *c)
{
    SL_ASSERT(c->state != CONN_FREE);
    SL_ASSERT(!c->shut);
    (void)http;
    shutdown(c->fd, SHUT_RDWR); /* the fd is still this connection's: CLOSED comes before close */
    c->shut = true;
}

/* True when the kernel holds bytes MHD has not read yet: the peer is sending, not stalling. */
static bool conn_has_input(const struct conn *c)
{
    int pending = 0;
    return ioctl(c->fd, FIONREAD, &pending) == 0 && pending > 0;
}

/*
 * The connection idle or incomplete longest, other than `except`, among
 * those from `addr`'s address (any when family is 0): the one with the
 * oldest since_ms, passing over (at most SL_HTTP_EVICT_PROBES times) one
 * whose unread input is already waiting in the kernel (a client whose
 * request arrived but whose worker has not read it yet, as a new client
 * is right after a burst of accepts). NULL when there is none. Under lock.
 */
/*
 * A connection whose response is under way and made progress this recently
 * is never chosen: on a busy machine a worker may not have noticed that the
 * earlier connections of a sequential client closed, and those stale slots
 * must not make the one request being answered the oldest.
 */
#define SL_HTTP_ACTIVE_GRACE_MS 1000

static struct conn *conn_oldest(struct sl_http *http, const struct conn *except, uint8_t family,
                                const uint8_t *addr)
{
    struct conn *passed[SL_HTTP_EVICT_PROBES];
    uint32_t passed_count = 0;
    struct conn *oldest = NULL;
    int64_t now = now_ms();
    for (uint32_t probe = 0; probe <= SL_HTTP_EVICT_PROBES; probe++) {
        oldest = NULL;
        for (uint32_t i = 0; i < http->slots_count; i++) {
            struct conn *c = &http->conns[i];
            if (c->state == CONN_FREE || c->shut || c == except) {
                continue;
            }
            if (c->state == CONN_ACTIVE && now - c->since_ms < SL_HTTP_ACTIVE_GRACE_MS) {
                continue; /* a response under way that made progress lately is not idle */
            }
            if (family != 0 && (c->family != family || memcmp(c->addr, addr, 16) != 0)) {
                continue;
            }
            bool was_passed = false;
            for (uint32_t k = 0; k < passed_count; k++) {
                was_passed |= passed[k] == c;
            }
            if (!was_passed && (oldest == NULL || c->since_ms < oldest->since_ms)) {
                oldest = c;
            }
        }
        if (oldest == NULL || probe == SL_HTTP_EVICT_PROBES || !conn_has_input(oldest)) {
            break;
        }
        passed[passed_count++] = oldest;
    }
    if (oldest == NULL && passed_count > 0) {
        oldest = passed[0]; /* every candidate is sending: the oldest of them */
    }
    return oldest;
}

static void conn_evict(struct sl_http *http, struct conn *victim)
{
    count(&http->evicted[victim->state == CONN_INCOMPLETE ? EVICT_INCOMPLETE : EVICT_IDLE]);
    conn_shut(http, victim);
}

/* Live (not shut) connections, and those from c's address. Under lock. */
static void conn_census(const struct sl_http *http, const struct conn *c, uint32_t *all,
                        uint32_t *same_addr)
{
    *all = 0;
    *same_addr = 0;
    for (uint32_t i = 0; i < http->slots_count; i++) {
        const struct conn *o = &http->conns[i];
        if (o->state == CONN_FREE || o->shut) {
            continue;
        }
        (*all)++;
        *same_addr += o->family == c->family && memcmp(o->addr, c->addr, 16) == 0;
    }
}

/* The peer's address as (family, 16 bytes); family 1 when MHD does not say. */
static void conn_address(struct MHD_Connection *connection, struct conn *c)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    memset(c->addr, 0, sizeof c->addr);
    c->family = 1;
    if (info == NULL || info->client_addr == NULL) {
        return;
    }
    const struct sockaddr *sa = info->client_addr;
    if (sa->sa_family == AF_INET) {
        memcpy(c->addr, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        c->family = 4;
    } else if (sa->sa_family == AF_INET6) {
        memcpy(c->addr, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
        c->family = 6;
    }
}

/* A newcomer: take a slot, then make room (its address's cap, then the table's). */
static void conn_started(struct sl_http *http, struct MHD_Connection *connection,
                         void **socket_context)
{
    const union MHD_ConnectionInfo *fd_info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
    SL_ASSERT(fd_info != NULL);
    int fd = fd_info->connect_fd;
    int64_t now = now_ms();
    pthread_mutex_lock(&http->lock);
    struct conn *c = NULL;
    for (uint32_t i = 0; i < http->slots_count && c == NULL; i++) {
        c = http->conns[i].state == CONN_FREE ? &http->conns[i] : NULL;
    }
    if (c == NULL) {
        /* MHD holds at most slots_count: only a bug gets here. Refuse the newcomer. */
        count(&http->no_slot);
        shutdown(fd, SHUT_RDWR);
        pthread_mutex_unlock(&http->lock);
        return;
    }
    c->state = CONN_INCOMPLETE;
    c->shut = false;
    c->fd = fd;
    c->since_ms = now;
    c->answered = false;
    c->too_many_params = false;
    conn_address(connection, c);
    *socket_context = c;
    uint32_t all = 0, same = 0;
    conn_census(http, c, &all, &same);
    if (same > per_ip_max(http)) {
        count(&http->over_ip_cap);
        struct conn *victim = conn_oldest(http, c, c->family, c->addr);
        SL_ASSERT(victim != NULL); /* same > cap >= 1: another from this address */
        conn_evict(http, victim);
        all--;
    }
    if (all > http->config.connections_max) {
        struct conn *victim = conn_oldest(http, c, 0, NULL);
        SL_ASSERT(victim != NULL);
        conn_evict(http, victim);
    }
    pthread_mutex_unlock(&http->lock);
    atomic_fetch_add_explicit(&http->connections_open, 1, memory_order_relaxed);
    MHD_set_connection_option(connection, MHD_CONNECTION_OPTION_TIMEOUT,
                              (unsigned int)idle_timeout_s(http));
}

static void on_connection(void *cls, struct MHD_Connection *connection, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct sl_http *http = cls;
    track_allocations();
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        conn_started(http, connection, socket_context);
        return;
    }
    SL_ASSERT(code == MHD_CONNECTION_NOTIFY_CLOSED);
    struct conn *c = *socket_context;
    if (c == NULL) {
        return; /* refused in conn_started */
    }
    pthread_mutex_lock(&http->lock);
    SL_ASSERT(c->state != CONN_FREE);
    c->state = CONN_FREE; /* before MHD closes the fd: no later shutdown can reach it */
    c->fd = -1;
    pthread_mutex_unlock(&http->lock);
    *socket_context = NULL;
    atomic_fetch_sub_explicit(&http->connections_open, 1, memory_order_relaxed);
}

/*
 * A request line arrived (before MHD parses its query): a kept-alive
 * connection is incomplete again from now; too many query parameters are
 * noted and cut off. Returns the slot as the request's state.
 */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *connection)
{
    struct sl_http *http = cls;
    struct conn *c = conn_of(connection);
    track_allocations();
    if (c == NULL) {
        return NULL; /* refused in conn_started: on_request closes it */
    }
    SL_ASSERT(c->http == http);
    pthread_mutex_lock(&http->lock);
    if (c->state != CONN_INCOMPLETE) {
        c->state = CONN_INCOMPLETE;
        c->since_ms = now_ms();
    }
    pthread_mutex_unlock(&http->lock);
    c->answered = false;
    c->headers_seen = false;
    c->cursor.kind = PIECE_NONE;
    const char *query = strchr(uri, '?');
    uint32_t params = 0;
    for (const char *p = query; p != NULL && *p != '\0'; p++) { /* bounded by the request line */
        params += *p == '&' || *p == '?';
    }
    c->too_many_params = params > SL_HTTP_QUERY_PARAMS_MAX;
    if (c->too_many_params) {
        /* MHD's own read buffer, not yet parsed: an empty query keeps the pool free. */
        ((char *)query)[1] = '\0';
    }
    return c;
}

/* The request is done (sent, or its connection closed): idle from now. */
static void on_completed(void *cls, struct MHD_Connection *connection, void **request_state,
                         enum MHD_RequestTerminationCode code)
{
    struct sl_http *http = cls;
    (void)connection;
    (void)code;
    track_allocations();
    struct conn *c = *request_state;
    if (c == NULL) {
        return;
    }
    pthread_mutex_lock(&http->lock);
    if (c->state != CONN_FREE) {
        c->state = CONN_IDLE;
        c->since_ms = now_ms();
    }
    pthread_mutex_unlock(&http->lock);
    c->cursor.kind = PIECE_NONE;
    write_release(c); /* a write whose client left mid-body (or that was refused) */
    *request_state = NULL;
}

/* The first access-handler call: headers complete, the request is active. */
static void conn_headers_complete(struct sl_http *http, struct conn *c)
{
    pthread_mutex_lock(&http->lock);
    c->state = CONN_ACTIVE;
    c->since_ms = now_ms();
    pthread_mutex_unlock(&http->lock);
}

/* A response piece went out: progress. */
static void conn_progress(struct sl_http *http, struct conn *c)
{
    pthread_mutex_lock(&http->lock);
    c->since_ms = now_ms();
    pthread_mutex_unlock(&http->lock);
}

/* Shut every connection whose headers are overdue. */
static void *watchdog_run(void *arg)
{
    struct sl_http *http = arg;
    pthread_mutex_lock(&http->lock);
    while (!http->stopping) { /* one pass per tick until sl_http_stop */
        int64_t now = now_ms();
        int64_t limit_ms = header_timeout_ms(http);
        for (uint32_t i = 0; i < http->slots_count; i++) {
            struct conn *c = &http->conns[i];
            if (c->state == CONN_INCOMPLETE && !c->shut && now - c->since_ms >= limit_ms) {
                count(&http->header_timeouts);
                conn_shut(http, c);
            }
        }
        struct timespec wake;
        clock_gettime(CLOCK_MONOTONIC, &wake);
        wake.tv_nsec += (long)SL_HTTP_WATCHDOG_TICK_MS * 1000000;
        wake.tv_sec += wake.tv_nsec / 1000000000;
        wake.tv_nsec %= 1000000000;
        pthread_cond_timedwait(&http->watchdog_wake, &http->lock, &wake);
    }
    pthread_mutex_unlock(&http->lock);
    return NULL;
}

/* ---- start and stop ---- */

/* Limits with 0 meaning "the default"; -EINVAL with a reason when out of range. */
static int effective_config(const struct sl_http_config *in, struct sl_http_config *out,
                            const char **why)
{
    *out = *in;
    out->connections_max = in->connections_max ? in->connections_max : SL_HTTP_CONNECTIONS_DEFAULT;
    out->connection_memory_bytes = in->connection_memory_bytes ? in->connection_memory_bytes
                                                               : SL_HTTP_CONNECTION_MEMORY_DEFAULT;
    out->timeout_s = in->timeout_s ? in->timeout_s : SL_HTTP_TIMEOUT_S_DEFAULT;
    out->threads = in->threads ? in->threads : SL_HTTP_THREADS_DEFAULT;
    out->header_timeout_ms =
        in->header_timeout_ms ? in->header_timeout_ms : SL_HTTP_HEADER_TIMEOUT_MS_DEFAULT;
    if (in->connections_per_ip_max == 0) {
        out->connections_per_ip_max = out->connections_max / 4 > 0 ? out->connections_max / 4 : 1;
    }
    if (out->connections_max > SL_HTTP_CONNECTIONS_MAX) {
        *why = "connections must be 1 .. 4096";
        return -EINVAL;
    }
    if (out->connection_memory_bytes < SL_HTTP_CONNECTION_MEMORY_MIN) {
        *why = "connection memory must be at least 4096 bytes";
        return -EINVAL;
    }
    if (out->threads > SL_HTTP_THREADS_MAX) {
        *why = "threads must be 1 .. 64";
        return -EINVAL;
    }
    return 0;
}

/* The effective config for planning: out-of-range values are planned at their maximum. */
static void plan_config(const struct sl_http_config *in, struct sl_http_config *out)
{
    const char *why = NULL;
    if (effective_config(in, out, &why) != 0) {
        out->connections_max = out->connections_max > SL_HTTP_CONNECTIONS_MAX
                                   ? SL_HTTP_CONNECTIONS_MAX
                                   : out->connections_max;
        out->threads = out->threads > SL_HTTP_THREADS_MAX ? SL_HTTP_THREADS_MAX : out->threads;
    }
}

static uint64_t view_slot_bytes(const struct sl_store_config *store_config)
{
    return sl_align_up(sl_store_view_bytes(store_config), 64) + SL_HTTP_METRICS_BODY_BYTES;
}

static uint64_t conn_record_bytes(void)
{
    return sl_align_up(sizeof(struct conn), 64);
}

uint64_t sl_http_views_bytes(const struct sl_store_config *store_config,
                             const struct sl_http_config *config)
{
    struct sl_http_config c;
    plan_config(config, &c);
    return (uint64_t)c.threads * view_slot_bytes(store_config);
}

uint64_t sl_http_connections_bytes(const struct sl_http_config *config)
{
    struct sl_http_config c;
    plan_config(config, &c);
    uint64_t slots = (uint64_t)c.connections_max + SL_HTTP_CONNECTIONS_SLACK;
    return slots * (conn_record_bytes() + SL_HTTP_PIECE_BYTES);
}

void sl_http_plan(const struct sl_store_config *store_config, const struct sl_http_config *config,
                  struct sl_plan *plan)
{
    struct sl_http_config c;
    plan_config(config, &c);
    uint64_t slots = (uint64_t)c.connections_max + SL_HTTP_CONNECTIONS_SLACK;
    sl_plan_add(plan, "http_views", sl_http_views_bytes(store_config, config),
                "per HTTP worker: a sensor snapshot and a /metrics buffer");
    sl_plan_add(plan, "http_sorted_ids", (uint64_t)store_config->sensors_max * 2 * sizeof(uint32_t),
                "sensor ids in ascending order for listing, and merge scratch, 8 B a sensor");
    sl_plan_add(plan, "http_connections", sl_http_connections_bytes(config),
                "per HTTP connection slot: its record, cursor and 32 KiB response piece");
    sl_plan_add(plan, SL_HTTP_PLAN_MHD_PART,
                slots * ((uint64_t)c.connection_memory_bytes + SL_HTTP_METRICS_BODY_BYTES +
                         SL_HTTP_MHD_CONNECTION_BYTES),
                "per HTTP connection slot, malloc'd by libmicrohttpd: pool, one response, record");
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
    SL_ASSERT(ctx->connection_memory != NULL);
    SL_ASSERT((uintptr_t)ctx->connection_memory % 8 == 0);
}

/* Point the views and the connection slots into the context's memory. */
static void lay_out(struct sl_http *http)
{
    const struct sl_store_config *store_config = &http->context.store->config;
    uint8_t *p = http->context.view_memory;
    for (uint32_t i = 0; i < http->config.threads; i++) {
        struct view_slot *v = &http->views[i];
        sl_store_view_init(&v->view, store_config, p);
        v->text = (char *)p + sl_align_up(sl_store_view_bytes(store_config), 64);
        p += view_slot_bytes(store_config);
    }
    http->slots_count = http->config.connections_max + SL_HTTP_CONNECTIONS_SLACK;
    uint8_t *q = http->context.connection_memory;
    http->conns = (struct conn *)(void *)q;
    char *pieces = (char *)q + sl_align_up((uint64_t)http->slots_count * sizeof(struct conn), 64);
    SL_ASSERT((uint64_t)(pieces - (char *)q) + (uint64_t)http->slots_count * SL_HTTP_PIECE_BYTES <=
              sl_http_connections_bytes(&http->config));
    for (uint32_t i = 0; i < http->slots_count; i++) {
        struct conn *c = &http->conns[i];
        memset(c, 0, sizeof *c);
        c->state = CONN_FREE;
        c->fd = -1;
        c->http = http;
        c->piece = pieces + (uint64_t)i * SL_HTTP_PIECE_BYTES;
    }
}

/* Hand the listening socket to MHD's thread pool. NULL when MHD refuses. */
static struct MHD_Daemon *start_daemon(struct sl_http *http, int fd)
{
    const struct sl_http_config *c = &http->config;
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME;
    flags |= MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES ? MHD_USE_EPOLL : MHD_USE_AUTO;
    return MHD_start_daemon(flags, 0, NULL, NULL, on_request, http, MHD_OPTION_LISTEN_SOCKET,
                            (MHD_socket)fd, MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)c->threads,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned int)http->slots_count,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)c->connection_memory_bytes,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)c->timeout_s,
                            MHD_OPTION_NOTIFY_CONNECTION, on_connection, http,
                            MHD_OPTION_URI_LOG_CALLBACK, on_uri, http, MHD_OPTION_NOTIFY_COMPLETED,
                            on_completed, http, MHD_OPTION_END);
}

/* The listening socket: the daemon's when prebound, else bound here. -1 with err filled. */
static int listening_socket(const struct sl_http_config *config, char *err, uint32_t err_bytes)
{
    if (config->prebound) {
        SL_ASSERT(config->listen_fd >= 0);
        return config->listen_fd;
    }
    return sl_sock_listen("http", config->host, config->port, SOCK_STREAM, err, err_bytes);
}

static void http_free(struct sl_http *http)
{
    pthread_cond_destroy(&http->watchdog_wake);
    pthread_mutex_destroy(&http->sorted_lock);
    pthread_mutex_destroy(&http->lock);
    free(http);
}

/* The server's state, locks and watchdog. NULL when out of memory or threads. */
static struct sl_http *http_new(const struct sl_http_config *c,
                                const struct sl_http_context *context)
{
    struct sl_http *http = calloc(1, sizeof *http);
    if (http == NULL) {
        return NULL;
    }
    http->context = *context;
    http->config = *c;
    pthread_mutex_init(&http->lock, NULL);
    pthread_mutex_init(&http->sorted_lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&http->watchdog_wake, &attr);
    pthread_condattr_destroy(&attr);
    const struct sl_store_config *store_config = &context->store->config;
    http->window_s_max = store_config->windows_us[store_config->windows_count - 1] / 1000000;
    lay_out(http);
    if (pthread_create(&http->watchdog, NULL, watchdog_run, http) != 0) {
        http_free(http);
        return NULL;
    }
    http->watchdog_started = true;
    return http;
}

static void watchdog_stop(struct sl_http *http)
{
    if (!http->watchdog_started) {
        return;
    }
    pthread_mutex_lock(&http->lock);
    http->stopping = true;
    pthread_cond_signal(&http->watchdog_wake);
    pthread_mutex_unlock(&http->lock);
    pthread_join(http->watchdog, NULL);
    http->watchdog_started = false;
}

struct sl_http *sl_http_start(const struct sl_http_config *config,
                              const struct sl_http_context *context, char *err, uint32_t err_bytes)
{
    char where[300];
    struct sl_http_config c;
    const char *why = NULL;
    check_context(context);
    sl_sock_endpoint(where, sizeof where, config->host, config->port);
    if (effective_config(config, &c, &why) != 0) {
        snprintf(err, err_bytes, "http %s: %s", where, why);
        if (config->prebound) {
            close(config->listen_fd);
        }
        return NULL;
    }
    int fd = listening_socket(&c, err, err_bytes);
    if (fd < 0) {
        return NULL;
    }
    struct sl_http *http = http_new(&c, context);
    if (http == NULL) {
        close(fd);
        snprintf(err, err_bytes, "http %s: out of memory", where);
        return NULL;
    }
    http->port = sl_sock_port(fd);
    if (context->writes != NULL) {
        /* Before any worker runs: a DONE write resumes its suspended connection. */
        context->writes->notify = write_resume;
        context->writes->notify_ctx = http;
    }
    http->daemon = start_daemon(http, fd);
    if (http->daemon == NULL) {
        /* MHD closes the socket on some failure paths and not on others. */
        if (fcntl(fd, F_GETFD) != -1) {
            close(fd);
        }
        watchdog_stop(http);
        http_free(http);
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
    watchdog_stop(http);
    MHD_stop_daemon(http->daemon); /* joins the workers, closes every connection and the socket */
    http_free(http);
}
