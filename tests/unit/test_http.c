/*
 * test_http: the HTTP API answers exactly what docs/spec/HTTP_API.md says,
 * over real sockets.
 *
 * A store is built in an arena the way the daemon builds it (sl_store_plan,
 * sl_streams_plan, sl_http_plan, one mapping, takes in plan order) and
 * filled with the spec's example (sensor 1: 21.5 then 22.0, sensor 2:
 * -3.25), a sensor whose 200 readings wrap a 64-slot ring (so its 1h window
 * is inexact), and a sensor holding awkward f32 values. The server runs on
 * 127.0.0.1, port 0; a tiny HTTP/1.1 client (Connection: close, read to EOF,
 * 5 s receive timeout) checks:
 * - /healthz; the sensor list byte for byte against the spec's example
 *   (compacted), pagination and total, and the sorted id list extended
 *   incrementally as sensors arrive in random order;
 * - /sensors/{id} (count, mean, stddev as the spec prints it, exact, the
 *   inexact window with its resolution), /stats, the three readings formats
 *   (json columns, csv lines, bin bytes and X-Count), from/to/limit with the
 *   oldest N returned, and shortest round-trip float output;
 * - 404 for unknown sensors and paths, 405 with Allow, 503 with Retry-After
 *   when a snapshot keeps meeting the writer, and a table of bad parameters
 *   that must give 400 with an "error" key (and the boundaries that must not);
 * - every JSON body parses (python3's json module, when present);
 * - /metrics carries HELP and TYPE for every required family and passes
 *   `promtool check metrics` when promtool is installed;
 * - hostile clients (a 100 KB request line, a header flood, garbage, silent
 *   connections up to the connection limit) never stop the server from
 *   answering another client, and silent connections are closed on timeout;
 * - the server runs its pool of workers and one watchdog thread;
 * - HEAD on every GET route (the GET's status and headers, no body, bin's
 *   Content-Length); 64 query parameters served, 65 and 1,500 get 400;
 * - the connection table: silent connections over the per-address cap and
 *   over the table (from eight addresses) are evicted, oldest first, and a
 *   new client is answered; a request trickling its headers is shut at the
 *   header deadline; all of it counted in /metrics;
 * - start-up errors: the port in use, a bad host; a prebound socket is served.
 * Sockets go to 127.0.0.1 only and every wait is bounded.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "api/http.h"
#include "core/assert.h"
#include "core/plan.h"
#include "net/sock.h"
#include "store/store.h"
#include "store/streams.h"
#include "testlib.h"

#define NOW_US 1900000000000000LL /* far after every reading: nothing is "future" */
#define T0 1700000000000000LL
#define SENSORS_MAX 128u
#define RING 64u
#define STREAMS 16u
#define REPLY_BYTES_MAX (16u << 20)
#define IO_TIMEOUT_S 5

struct fixture {
    struct sl_arena arena;
    struct sl_plan plan;
    struct sl_store store;
    struct sl_streams tcp, udp;
    struct sl_net_counters net;
    struct sl_http_context context;
    struct sl_http *http;
    uint16_t port;
};

static struct fixture fx;

/* ---- the client ---- */

struct reply {
    int status; /* 0 when no status line arrived */
    char *raw;  /* everything read, NUL-terminated */
    size_t raw_bytes;
    char *body; /* into raw */
    size_t body_bytes;
    size_t head_bytes; /* status line and headers, up to the blank line */
    bool chunked;      /* Transfer-Encoding: chunked, decoded in place into body */
    bool chunks_ended; /* the last (zero) chunk arrived: the body is complete */
};

static bool header(const struct reply *r, const char *name, char *out, size_t out_bytes);

/* Decode a chunked body in place (strict: hex size, CRLF, data, CRLF; ends at the 0 chunk). */
static void dechunk(struct reply *r)
{
    char *in = r->body, *out = r->body, *end = r->body + r->body_bytes;
    while (in < end) { /* each pass consumes one chunk, or stops */
        char *stop = NULL;
        unsigned long n = strtoul(in, &stop, 16);
        if (stop == in || stop + 2 > end || stop[0] != '\r' || stop[1] != '\n') {
            break;
        }
        in = stop + 2;
        if (n == 0) {
            r->chunks_ended = true;
            break;
        }
        if ((size_t)(end - in) < n + 2 || in[n] != '\r' || in[n + 1] != '\n') {
            break;
        }
        memmove(out, in, n);
        out += n;
        in += n + 2;
    }
    r->body_bytes = (size_t)(out - r->body);
    *out = '\0';
}

static int connect_local(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Send everything that the peer takes; a server may close early on hostile input. */
static void send_all(int fd, const char *data, size_t bytes)
{
    size_t sent = 0;
    while (sent < bytes) {
        ssize_t n = send(fd, data + sent, bytes - sent, MSG_NOSIGNAL);
        if (n <= 0) {
            return;
        }
        sent += (size_t)n;
    }
}

/* Read to EOF (or error, timeout, REPLY_BYTES_MAX) and split status, headers and body. */
static void read_reply(int fd, struct reply *r)
{
    size_t cap = 4096;
    memset(r, 0, sizeof *r);
    r->raw = malloc(cap + 1);
    while (r->raw_bytes < REPLY_BYTES_MAX) {
        if (r->raw_bytes == cap) {
            cap *= 2;
            r->raw = realloc(r->raw, cap + 1);
        }
        ssize_t n = recv(fd, r->raw + r->raw_bytes, cap - r->raw_bytes, 0);
        if (n <= 0) {
            break;
        }
        r->raw_bytes += (size_t)n;
    }
    r->raw[r->raw_bytes] = '\0';
    if (sscanf(r->raw, "HTTP/1.1 %d", &r->status) != 1) {
        r->status = 0;
    }
    char *end = strstr(r->raw, "\r\n\r\n");
    if (end != NULL) {
        r->head_bytes = (size_t)(end - r->raw) + 2;
        r->body = end + 4;
        r->body_bytes = r->raw_bytes - (size_t)(r->body - r->raw);
        char te[64];
        r->chunked = header(r, "Transfer-Encoding", te, sizeof te) && strcmp(te, "chunked") == 0;
        if (r->chunked) {
            dechunk(r);
        }
    } else {
        r->body = r->raw + r->raw_bytes;
    }
}

static void reply_free(struct reply *r)
{
    free(r->raw);
    memset(r, 0, sizeof *r);
}

static void exchange(const char *request, size_t bytes, struct reply *r)
{
    int fd = connect_local(fx.port);
    CHECK(fd >= 0);
    if (fd < 0) {
        memset(r, 0, sizeof *r);
        r->raw = calloc(1, 1);
        r->body = r->raw;
        return;
    }
    send_all(fd, request, bytes);
    read_reply(fd, r);
    close(fd);
}

static void request(const char *method, const char *path, struct reply *r)
{
    char text[2048];
    int n =
        snprintf(text, sizeof text,
                 "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", method, path);
    CHECK(n > 0 && (size_t)n < sizeof text);
    exchange(text, (size_t)n, r);
}

static void get(const char *path, struct reply *r)
{
    request("GET", path, r);
}

/* A header's value (trimmed) into out; false when absent. */
static bool header(const struct reply *r, const char *name, char *out, size_t out_bytes)
{
    size_t name_bytes = strlen(name);
    const char *line = strstr(r->raw, "\r\n");
    while (line != NULL && (size_t)(line - r->raw) < r->head_bytes) {
        line += 2;
        if (strncasecmp(line, name, name_bytes) == 0 && line[name_bytes] == ':') {
            const char *v = line + name_bytes + 1;
            v += strspn(v, " ");
            size_t len = strcspn(v, "\r");
            len = len < out_bytes - 1 ? len : out_bytes - 1;
            memcpy(out, v, len);
            out[len] = '\0';
            return true;
        }
        line = strstr(line, "\r\n");
    }
    return false;
}

static bool header_is(const struct reply *r, const char *name, const char *value)
{
    char v[256];
    return header(r, name, v, sizeof v) && strcmp(v, value) == 0;
}

/* The body is complete by its framing: a matching Content-Length, or chunks through the last. */
static bool content_length_ok(const struct reply *r)
{
    char v[64];
    if (r->chunked) {
        return r->chunks_ended && !header(r, "Content-Length", v, sizeof v);
    }
    return header(r, "Content-Length", v, sizeof v) && strtoull(v, NULL, 10) == r->body_bytes;
}

static bool have_tool(const char *name)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", name);
    return system(cmd) == 0;
}

/*
 * Every JSON body is queued, one a line with its path, and checked at the end
 * by one python3 process (json.loads of each); its exit status is the count
 * of bodies that failed to parse.
 */
static FILE *json_queue;

static void json_queue_open(void)
{
    json_queue = have_tool("python3") ? tmpfile() : NULL;
    if (json_queue == NULL) {
        printf("note: python3 not found; JSON bodies are not parsed\n");
    }
}

static void json_enqueue(const char *path, const struct reply *r)
{
    if (json_queue != NULL) {
        fprintf(json_queue, "%s\t", path);
        fwrite(r->body, 1, r->body_bytes, json_queue);
        fputc('\n', json_queue);
    }
}

static void json_queue_check(void)
{
    static const char script[] =
        "python3 -c 'import json,sys\n"
        "bad = 0\n"
        "for line in sys.stdin:\n"
        "    path, _, body = line.rstrip(\"\\n\").partition(\"\\t\")\n"
        "    try: json.loads(body)\n"
        "    except ValueError as e: bad += 1; print(\"invalid JSON from\", path, e, body)\n"
        "sys.exit(min(bad, 100))'";
    if (json_queue == NULL) {
        return;
    }
    long bodies_bytes = ftell(json_queue);
    rewind(json_queue);
    FILE *p = popen(script, "w");
    CHECK(p != NULL && bodies_bytes > 0);
    if (p == NULL) {
        return;
    }
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, json_queue)) > 0) {
        fwrite(chunk, 1, n, p);
    }
    CHECK(pclose(p) == 0);
    fclose(json_queue);
}

/* GET path; expect `status`, a JSON body with a correct Content-Length. */
static void get_json(const char *path, int status, struct reply *r)
{
    get(path, r);
    CHECK_EQ_U64(r->status, status);
    CHECK(header_is(r, "Content-Type", "application/json"));
    CHECK(content_length_ok(r));
    json_enqueue(path, r);
    if (r->status != status) {
        fprintf(stderr, "  GET %s -> %d %s\n", path, r->status, r->body);
    }
}

static void expect_json(const char *path, int status, const char *body)
{
    struct reply r;
    get_json(path, status, &r);
    CHECK(strcmp(r.body, body) == 0);
    if (strcmp(r.body, body) != 0) {
        fprintf(stderr, "  GET %s\n    got:  %s\n    want: %s\n", path, r.body, body);
    }
    reply_free(&r);
}

/* ---- the fixture ---- */

static void apply(uint32_t id, int64_t t_us, float value)
{
    CHECK(sl_store_apply_reading(&fx.store, id, t_us, value, NOW_US) == 0);
}

/* Threads in this process (/proc/self/task), or 0 when unreadable. */
static uint32_t thread_count(void)
{
    DIR *dir = opendir("/proc/self/task");
    uint32_t n = 0;
    if (dir == NULL) {
        return 0;
    }
    for (struct dirent *e = readdir(dir); e != NULL && n < 1000; e = readdir(dir)) {
        n += e->d_name[0] != '.';
    }
    closedir(dir);
    return n;
}

/* The server's configuration (the plan and the start use the same one). */
static const struct sl_http_config server_config = {.host = "127.0.0.1",
                                                    .port = 0,
                                                    .connections_max = 8,
                                                    .connections_per_ip_max = 8,
                                                    .connection_memory_bytes = 32 * 1024,
                                                    .timeout_s = 2,
                                                    .threads = 3};

static void start_server(void)
{
    uint32_t threads_before = thread_count();
    char err[256] = "";
    fx.http = sl_http_start(&server_config, &fx.context, err, sizeof err);
    CHECK(fx.http != NULL);
    if (fx.http == NULL) {
        fprintf(stderr, "sl_http_start: %s\n", err);
        exit(1);
    }
    fx.port = sl_http_port(fx.http);
    CHECK(fx.port != 0);
    /* the pool's workers and the header watchdog (and TSan's own thread, started with the first) */
    uint32_t extra = 0;
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
    extra = 1;
#endif
#endif
    CHECK_EQ_U64(thread_count(), threads_before + server_config.threads + 1 + extra);
}

static void fixture_open(void)
{
    struct sl_store_config c;
    sl_store_config_default(&c);
    c.sensors_max = SENSORS_MAX;
    c.ring_readings = RING;
    sl_plan_init(&fx.plan);
    sl_store_plan(&c, &fx.plan);
    sl_streams_plan(STREAMS, &fx.plan, "tcp_streams");
    sl_streams_plan(STREAMS, &fx.plan, "udp_streams");
    sl_http_plan(&c, &server_config, &fx.plan);
    CHECK(sl_plan_part_bytes(&fx.plan, "http_sorted_ids") == SENSORS_MAX * 8);
    CHECK(sl_plan_part_bytes(&fx.plan, "http_views") == sl_http_views_bytes(&c, &server_config));
    CHECK(sl_plan_part_bytes(&fx.plan, "http_connections") ==
          sl_http_connections_bytes(&server_config));
    uint64_t mhd_bytes = sl_plan_part_bytes(&fx.plan, SL_HTTP_PLAN_MHD_PART);
    CHECK(mhd_bytes >= (8 + SL_HTTP_CONNECTIONS_SLACK) * 32 * 1024);
    CHECK(sl_arena_map(&fx.arena, fx.plan.total_bytes - mhd_bytes) == 0);
    sl_store_init(&fx.store, &c, &fx.arena);
    sl_streams_init(&fx.tcp, STREAMS, &fx.arena);
    sl_streams_init(&fx.udp, STREAMS, &fx.arena);
    fx.context.view_memory = sl_arena_take(&fx.arena, sl_http_views_bytes(&c, &server_config));
    fx.context.sorted_ids = sl_arena_take(&fx.arena, (uint64_t)SENSORS_MAX * 2 * sizeof(uint32_t));
    fx.context.connection_memory =
        sl_arena_take(&fx.arena, sl_http_connections_bytes(&server_config));
    CHECK_EQ_U64(fx.arena.used_bytes, fx.plan.total_bytes - mhd_bytes);
    sl_arena_seal(&fx.arena);
    fx.context.store = &fx.store;
    fx.context.net = &fx.net;
    fx.context.tcp_streams = &fx.tcp;
    fx.context.udp_streams = &fx.udp;
    fx.context.plan = &fx.plan;
    fx.context.version = "0.1.0-test";
    /* The spec's example. */
    apply(1, T0, 21.5f);
    apply(2, T0 + 1000, -3.25f);
    apply(1, T0 + 2000, 22.0f);
    start_server();
}

/* ---- the spec's examples ---- */

/* The first ```json block after `heading` in HTTP_API.md, with all whitespace removed. */
static bool spec_example(const char *heading, char *out, size_t out_bytes)
{
    static char spec[65536];
    FILE *f = fopen(SL_SPEC_DIR "/HTTP_API.md", "r");
    if (f == NULL) {
        return false;
    }
    size_t n = fread(spec, 1, sizeof spec - 1, f);
    fclose(f);
    spec[n] = '\0';
    const char *at = strstr(spec, heading);
    const char *start = at ? strstr(at, "```json\n") : NULL;
    const char *end = start ? strstr(start + 8, "```") : NULL;
    if (end == NULL) {
        return false;
    }
    size_t k = 0;
    for (const char *p = start + 8; p < end && k + 1 < out_bytes; p++) {
        if (*p != ' ' && *p != '\n') {
            out[k++] = *p;
        }
    }
    out[k] = '\0';
    return true;
}

static const char list_example[] =
    "{\"total\":2,\"sensors\":["
    "{\"id\":1,\"readings_total\":2,\"last_t_us\":1700000000002000,\"last_value\":22.0},"
    "{\"id\":2,\"readings_total\":1,\"last_t_us\":1700000000001000,\"last_value\":-3.25}]}";

static const char window_10s_example[] = "{\"count\":2,\"mean\":21.75,\"min\":21.5,\"max\":22.0,"
                                         "\"stddev\":0.3535533905932738,\"exact\":true}";

static void test_health_and_list_example(void)
{
    struct reply r;
    get("/healthz", &r);
    CHECK(r.status == 200 && strcmp(r.body, "ok") == 0);
    CHECK(header_is(&r, "Content-Type", "text/plain"));
    CHECK(content_length_ok(&r));
    reply_free(&r);

    char spec[1024];
    CHECK(spec_example("## GET /api/v1/sensors?offset", spec, sizeof spec));
    CHECK(strcmp(spec, list_example) == 0);
    expect_json("/api/v1/sensors", 200, list_example);
    expect_json("/api/v1/sensors?offset=0&limit=100", 200, list_example);
    expect_json("/api/v1/sensors?unknown=1&limit=2", 200, list_example); /* unknown: ignored */
    expect_json("/api/v1/sensors?limit=1&limit=xyz", 200, /* a repeated parameter: first wins */
                "{\"total\":2,\"sensors\":[{\"id\":1,\"readings_total\":2,"
                "\"last_t_us\":1700000000002000,\"last_value\":22.0}]}");
}

static void test_sensor_example(void)
{
    struct reply r;
    get_json("/api/v1/sensors/1", 200, &r);
    CHECK(strncmp(r.body, "{\"id\":1,\"readings_total\":2,", 27) == 0);
    CHECK(strstr(r.body, "\"last\":{\"t_us\":1700000000002000,\"value\":22.0}") != NULL);
    CHECK(strstr(r.body, "\"retained\":{\"count\":2,\"from_t_us\":1700000000000000,"
                         "\"to_t_us\":1700000000002000}") != NULL);
    char key[64];
    static const char *const keys[] = {"10s", "1m", "1h"};
    for (int i = 0; i < 3; i++) {
        snprintf(key, sizeof key, "\"%s\":", keys[i]);
        char *at = strstr(r.body, key);
        CHECK(at != NULL &&
              strncmp(at + strlen(key), window_10s_example, strlen(window_10s_example)) == 0);
    }
    const char *ewma = strstr(r.body, "\"ewma\":");
    CHECK(ewma != NULL);
    double keep = exp2(-2000.0 / (double)SL_EWMA_HALF_LIFE_US_DEFAULT);
    double want = 22.0f + keep * (21.5 - 22.0f);
    CHECK_NEAR(ewma ? strtod(ewma + 7, NULL) : 0, want, 1e-15);
    reply_free(&r);

    expect_json("/api/v1/sensors/1/stats?window_s=10", 200, window_10s_example);
    expect_json("/api/v1/sensors/1/stats?window_s=1", 200, window_10s_example);
    expect_json("/api/v1/sensors/1/stats?window_s=3600", 200, window_10s_example);
    expect_json("/api/v1/sensors/2/stats?window_s=10", 200,
                "{\"count\":1,\"mean\":-3.25,\"min\":-3.25,\"max\":-3.25,\"stddev\":null,"
                "\"exact\":true}");
    expect_json("/api/v1/sensors/01/stats?window_s=10", 200, window_10s_example);
}

static void test_readings_example(void)
{
    expect_json("/api/v1/sensors/1/readings", 200,
                "{\"id\":1,\"t_us\":[1700000000000000,1700000000002000],\"value\":[21.5,22.0]}");
    expect_json("/api/v1/sensors/1/readings?format=json&from_us=-5", 200,
                "{\"id\":1,\"t_us\":[1700000000000000,1700000000002000],\"value\":[21.5,22.0]}");
    expect_json("/api/v1/sensors/1/readings?from_us=1700000000002000", 200,
                "{\"id\":1,\"t_us\":[1700000000002000],\"value\":[22.0]}");
    expect_json("/api/v1/sensors/1/readings?to_us=1700000000000000", 200,
                "{\"id\":1,\"t_us\":[1700000000000000],\"value\":[21.5]}");
    expect_json("/api/v1/sensors/1/readings?to_us=1699999999999999", 200,
                "{\"id\":1,\"t_us\":[],\"value\":[]}");
    expect_json("/api/v1/sensors/1/readings?from_us=1700000000002001&to_us=1700000000000000", 200,
                "{\"id\":1,\"t_us\":[],\"value\":[]}");
    expect_json("/api/v1/sensors/1/readings?limit=1", 200,
                "{\"id\":1,\"t_us\":[1700000000000000],\"value\":[21.5]}");

    struct reply r;
    get("/api/v1/sensors/1/readings?format=csv", &r);
    CHECK(r.status == 200 && header_is(&r, "Content-Type", "text/csv") && content_length_ok(&r));
    CHECK(strcmp(r.body, "t_us,value\n1700000000000000,21.5\n1700000000002000,22.0\n") == 0);
    reply_free(&r);

    get("/api/v1/sensors/1/readings?format=bin", &r);
    CHECK(r.status == 200 && header_is(&r, "Content-Type", "application/octet-stream"));
    CHECK(header_is(&r, "X-Count", "2") && content_length_ok(&r));
    uint8_t want[24];
    sl_store_u64(want, (uint64_t)T0);
    sl_store_u64(want + 8, (uint64_t)(T0 + 2000));
    sl_store_f32(want + 16, 21.5f);
    sl_store_f32(want + 20, 22.0f);
    CHECK(r.body_bytes == sizeof want && memcmp(r.body, want, sizeof want) == 0);
    reply_free(&r);

    get("/api/v1/sensors/1/readings?format=bin&from_us=1800000000000000", &r);
    CHECK(r.status == 200 && header_is(&r, "X-Count", "0") && r.body_bytes == 0);
    CHECK(content_length_ok(&r));
    reply_free(&r);
}

/* ---- the wrapped ring, float output, pagination ---- */

static void test_wrapped_sensor(void)
{
    for (int i = 0; i < 200; i++) {
        apply(77, T0 + i * 1000000LL, (float)i * 0.5f);
    }
    struct reply r;
    get_json("/api/v1/sensors/77", 200, &r);
    CHECK(strstr(r.body, "\"readings_total\":200,") != NULL);
    CHECK(strstr(r.body, "\"retained\":{\"count\":64,\"from_t_us\":1700000136000000,"
                         "\"to_t_us\":1700000199000000}") != NULL);
    /* 10s: readings 190..199; 1m: 140..199, still retained, so exact. */
    CHECK(strstr(r.body, "\"10s\":{\"count\":10,\"mean\":97.25,\"min\":95.0,\"max\":99.5,") !=
          NULL);
    CHECK(strstr(r.body, "\"1m\":{\"count\":60,\"mean\":84.75,\"min\":70.0,\"max\":99.5,") != NULL);
    /* 1h reaches past the ring: the coarse tier answers, and says so. */
    static const char hour_key[] = "\"1h\":{\"count\":200,\"mean\":";
    char *hour = strstr(r.body, hour_key);
    CHECK(hour != NULL);
    if (hour != NULL) {
        CHECK_NEAR(strtod(hour + sizeof hour_key - 1, NULL), 49.75, 1e-12);
        CHECK(strstr(hour, ",\"min\":0.0,\"max\":99.5,") != NULL);
        CHECK(strstr(hour, "\"exact\":false,\"resolution_us\":60000000}") != NULL);
    }
    reply_free(&r);

    get_json("/api/v1/sensors/77/stats?window_s=3600", 200, &r);
    CHECK(strstr(r.body, "\"count\":200,") && strstr(r.body, "\"exact\":false,\"resolution_us\":"));
    reply_free(&r);

    /* limit takes the oldest N; from_us moves the start. */
    expect_json("/api/v1/sensors/77/readings?limit=3", 200,
                "{\"id\":77,\"t_us\":[1700000136000000,1700000137000000,1700000138000000],"
                "\"value\":[68.0,68.5,69.0]}");
    expect_json("/api/v1/sensors/77/readings?from_us=1700000150000000&to_us=1700000160000000&"
                "limit=2",
                200,
                "{\"id\":77,\"t_us\":[1700000150000000,1700000151000000],\"value\":[75.0,75.5]}");
    get("/api/v1/sensors/77/readings?format=bin&limit=1000000", &r);
    CHECK(r.status == 200 && header_is(&r, "X-Count", "64") && r.body_bytes == 64 * 12);
    reply_free(&r);
    get("/api/v1/sensors/77/readings?format=csv&from_us=1700000198000000", &r);
    CHECK(r.status == 200 &&
          strcmp(r.body, "t_us,value\n1700000198000000,99.0\n1700000199000000,99.5\n") == 0);
    reply_free(&r);
}

static void test_float_output(void)
{
    apply(5, T0, 0.1f);
    apply(5, T0 + 1, 16777216.0f);
    apply(5, T0 + 2, 1e20f);
    apply(5, T0 + 3, FLT_MAX);
    apply(5, T0 + 4, -0.0f);
    apply(5, T0 + 5, 1.17549435e-38f);
    expect_json("/api/v1/sensors/5/readings", 200,
                "{\"id\":5,\"t_us\":[1700000000000000,1700000000000001,1700000000000002,"
                "1700000000000003,1700000000000004,1700000000000005],"
                "\"value\":[0.1,16777216.0,1e+20,3.4028235e+38,-0.0,1.1754944e-38]}");
    struct reply r;
    get_json("/api/v1/sensors/5", 200, &r); /* huge values: still finite, valid JSON */
    reply_free(&r);
}

/* The ids listed, in order, from every {"id": in the body. */
static uint32_t listed_ids(const char *body, uint32_t *ids, uint32_t cap)
{
    uint32_t n = 0;
    const char *p = body;
    while (n < cap && (p = strstr(p, "{\"id\":")) != NULL) {
        p += 6;
        ids[n++] = (uint32_t)strtoul(p, NULL, 10);
    }
    return n;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* The whole list equals the sorted set of ids known. */
static void check_full_list(const uint32_t *known, uint32_t known_count)
{
    uint32_t want[SENSORS_MAX], got[SENSORS_MAX];
    memcpy(want, known, known_count * sizeof *want);
    qsort(want, known_count, sizeof *want, cmp_u32);
    struct reply r;
    get_json("/api/v1/sensors?limit=10000", 200, &r);
    char total[64];
    snprintf(total, sizeof total, "{\"total\":%u,", known_count);
    CHECK(strncmp(r.body, total, strlen(total)) == 0);
    uint32_t n = listed_ids(r.body, got, SENSORS_MAX);
    CHECK_EQ_U64(n, known_count);
    CHECK(n == known_count && memcmp(got, want, n * sizeof *got) == 0);
    reply_free(&r);
}

static void test_pagination(void)
{
    /* Known so far, in arrival order: 1, 2, 77, 5. More arrive out of order. */
    uint32_t known[SENSORS_MAX] = {1, 2, 77, 5};
    uint32_t count = 4;
    static const uint32_t more[] = {40, 3, 1000, 4294967295u, 0};
    for (uint32_t i = 0; i < SL_ARRAY_COUNT(more); i++) {
        apply(more[i], T0, 1.0f);
        known[count++] = more[i];
    }
    check_full_list(known, count); /* 0 1 2 3 5 40 77 1000 4294967295 */
    struct reply r;
    uint32_t ids[16];
    get_json("/api/v1/sensors?limit=3", 200, &r);
    CHECK(strncmp(r.body, "{\"total\":9,", 11) == 0);
    CHECK(listed_ids(r.body, ids, 16) == 3 && ids[0] == 0 && ids[1] == 1 && ids[2] == 2);
    reply_free(&r);
    get_json("/api/v1/sensors?offset=3&limit=3", 200, &r);
    CHECK(listed_ids(r.body, ids, 16) == 3 && ids[0] == 3 && ids[1] == 5 && ids[2] == 40);
    reply_free(&r);
    get_json("/api/v1/sensors?offset=8", 200, &r);
    CHECK(listed_ids(r.body, ids, 16) == 1 && ids[0] == 4294967295u);
    reply_free(&r);
    expect_json("/api/v1/sensors?offset=9", 200, "{\"total\":9,\"sensors\":[]}");
    expect_json("/api/v1/sensors?offset=9223372036854775807", 200, "{\"total\":9,\"sensors\":[]}");
    /* Rounds of random arrivals: the incremental sort and merge stay exact. */
    uint64_t seed = 0x5EED;
    for (int round = 0; round < 6; round++) {
        uint32_t arrivals = 1 + (uint32_t)(tl_rand(&seed) % 25);
        for (uint32_t i = 0; i < arrivals && count < SENSORS_MAX; i++) {
            uint32_t id = (uint32_t)tl_rand(&seed);
            uint32_t index;
            if (sl_store_find(&fx.store, id, &index) == 0) {
                continue;
            }
            apply(id, T0, (float)i);
            known[count++] = id;
        }
        check_full_list(known, count);
    }
    CHECK(count > 60);
}

/* ---- errors ---- */

static void test_not_found_and_methods(void)
{
    static const char *const unknown_paths[] = {
        "/",
        "/nope",
        "/healthz/",
        "/metrics/",
        "/api/v1/sensors/",
        "/api/v1/sensors/1/",
        "/api/v1/sensors//stats",
        "/api/v1/sensors/1/stats/x",
        "/api/v1/sensors/1/readingsx",
        "/api/v1/sensorsx",
        "/api/v2/sensors",
    };
    for (uint32_t i = 0; i < SL_ARRAY_COUNT(unknown_paths); i++) {
        expect_json(unknown_paths[i], 404, "{\"error\": \"not found\"}");
    }
    expect_json("/api/v1/sensors/99", 404, "{\"error\": \"unknown sensor\"}");
    expect_json("/api/v1/sensors/4294967294", 404, "{\"error\": \"unknown sensor\"}");
    expect_json("/api/v1/sensors/99/stats?window_s=10", 404, "{\"error\": \"unknown sensor\"}");
    expect_json("/api/v1/sensors/99/readings?format=bin", 404, "{\"error\": \"unknown sensor\"}");

    static const char *const methods[] = {"POST", "PUT", "DELETE", "PATCH"};
    for (uint32_t i = 0; i < SL_ARRAY_COUNT(methods); i++) {
        struct reply r;
        request(methods[i], i % 2 ? "/api/v1/sensors/1" : "/healthz", &r);
        CHECK_EQ_U64(r.status, 405);
        CHECK(header_is(&r, "Allow", "GET, HEAD"));
        CHECK(header_is(&r, "Content-Type", "application/json"));
        CHECK(strstr(r.body, "\"error\"") != NULL && content_length_ok(&r));
        json_enqueue(methods[i], &r);
        reply_free(&r);
    }
    /* A POST with a body: answered, body discarded. */
    static const char post[] = "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                               "Connection: close\r\n\r\nhello";
    struct reply r;
    exchange(post, sizeof post - 1, &r);
    CHECK(r.status == 405 && header_is(&r, "Allow", "GET, HEAD"));
    reply_free(&r);
}

static void test_bad_parameters(void)
{
    static const char *const bad[] = {
        "/api/v1/sensors?limit=0",
        "/api/v1/sensors?limit=10001",
        "/api/v1/sensors?limit=abc",
        "/api/v1/sensors?limit=",
        "/api/v1/sensors?limit",
        "/api/v1/sensors?limit=+5",
        "/api/v1/sensors?limit=%205",
        "/api/v1/sensors?limit=5%20",
        "/api/v1/sensors?limit=5%00",
        "/api/v1/sensors?limit=0x10",
        "/api/v1/sensors?offset=-1",
        "/api/v1/sensors?offset=1.0",
        "/api/v1/sensors?offset=99999999999999999999",
        "/api/v1/sensors/1/stats",
        "/api/v1/sensors/1/stats?window_s=0",
        "/api/v1/sensors/1/stats?window_s=3601",
        "/api/v1/sensors/1/stats?window_s=1.5",
        "/api/v1/sensors/1/stats?window_s=-10",
        "/api/v1/sensors/1/stats?window_s=99999999999999999999",
        "/api/v1/sensors/1/readings?from_us=12x",
        "/api/v1/sensors/1/readings?from_us=--1",
        "/api/v1/sensors/1/readings?to_us=99999999999999999999",
        "/api/v1/sensors/1/readings?to_us=-99999999999999999999",
        "/api/v1/sensors/1/readings?limit=0",
        "/api/v1/sensors/1/readings?limit=1000001",
        "/api/v1/sensors/1/readings?format=xml",
        "/api/v1/sensors/1/readings?format=JSON",
        "/api/v1/sensors/1/readings?format=",
        "/api/v1/sensors/4294967296",
        "/api/v1/sensors/-1",
        "/api/v1/sensors/+1",
        "/api/v1/sensors/1x",
        "/api/v1/sensors/abc",
        "/api/v1/sensors/99999999999999999999",
        "/api/v1/sensors/abc/stats?window_s=10",
        "/api/v1/sensors/-1/readings",
    };
    for (uint32_t i = 0; i < SL_ARRAY_COUNT(bad); i++) {
        struct reply r;
        get_json(bad[i], 400, &r);
        CHECK(strncmp(r.body, "{\"error\": \"", 11) == 0);
        reply_free(&r);
    }
    static const char *const boundaries[] = {
        "/api/v1/sensors?limit=1",
        "/api/v1/sensors?limit=10000",
        "/api/v1/sensors?offset=0",
        "/api/v1/sensors/1/stats?window_s=3600",
        "/api/v1/sensors/1/readings?limit=1000000",
        "/api/v1/sensors/1/readings?from_us=-9223372036854775808&to_us=9223372036854775807",
        "/api/v1/sensors/4294967295",
        "/api/v1/sensors/0",
    };
    for (uint32_t i = 0; i < SL_ARRAY_COUNT(boundaries); i++) {
        struct reply r;
        get_json(boundaries[i], 200, &r);
        reply_free(&r);
    }
}

/* The writer is always "inside" sensor 1: the snapshot gives up, the API answers 503. */
static void test_busy_sensor(void)
{
    uint32_t index = 0;
    CHECK(sl_store_find(&fx.store, 1, &index) == 0);
    _Atomic uint32_t *seq = &fx.store.sensors[index].seq;
    atomic_fetch_add(seq, 1); /* odd: a write in progress */
    static const char *const paths[] = {"/api/v1/sensors/1", "/api/v1/sensors/1/stats?window_s=10",
                                        "/api/v1/sensors/1/readings", "/api/v1/sensors"};
    for (uint32_t i = 0; i < SL_ARRAY_COUNT(paths); i++) {
        struct reply r;
        get_json(paths[i], 503, &r);
        CHECK(header_is(&r, "Retry-After", "1"));
        CHECK(strcmp(r.body, "{\"error\": \"sensor busy, retry\"}") == 0);
        reply_free(&r);
    }
    atomic_fetch_add(seq, 1);
    struct reply r;
    get_json("/api/v1/sensors/1", 200, &r);
    reply_free(&r);
}

/* ---- /metrics ---- */

static void check_family(const char *body, const char *name, const char *type)
{
    char help[128], type_line[128];
    snprintf(help, sizeof help, "\n# HELP %s ", name);
    snprintf(type_line, sizeof type_line, "\n# TYPE %s %s\n", name, type);
    bool ok = (strncmp(body, help + 1, strlen(help) - 1) == 0 || strstr(body, help) != NULL) &&
              strstr(body, type_line) != NULL;
    CHECK(ok);
    if (!ok) {
        fprintf(stderr, "  metric family %s (%s) missing\n", name, type);
    }
}

static void promtool_check(const struct reply *r)
{
    if (!have_tool("promtool")) {
        printf("note: promtool not found; skipping `promtool check metrics`\n");
        return;
    }
    FILE *p = popen("promtool check metrics", "w");
    CHECK(p != NULL);
    if (p != NULL) {
        fwrite(r->body, 1, r->body_bytes, p);
        CHECK(pclose(p) == 0);
    }
}

static void test_metrics(void)
{
    atomic_store(&fx.store.counters.readings_accepted, 12345);
    atomic_store(&fx.store.counters.readings_rejected[SL_REJECT_FUTURE], 3);
    atomic_store(&fx.net.batches[SL_TRANSPORT_TCP][SL_STATUS_DUPLICATE], 7);
    atomic_store(&fx.net.decode_errors[SL_TRANSPORT_UDP][SL_DECODE_BAD_CRC], 4);
    atomic_store(&fx.net.tcp_connections, 2);
    struct reply r;
    get("/metrics", &r);
    CHECK(r.status == 200 && content_length_ok(&r));
    CHECK(header_is(&r, "Content-Type", "text/plain; version=0.0.4; charset=utf-8"));
    static const char *const families[][2] = {
        {"sluice_readings_accepted_total", "counter"},
        {"sluice_readings_rejected_total", "counter"},
        {"sluice_batches_total", "counter"},
        {"sluice_udp_lost_batches_total", "counter"},
        {"sluice_sensors", "gauge"},
        {"sluice_sensors_capacity", "gauge"},
        {"sluice_memory_planned_bytes", "gauge"},
        {"sluice_memory_planned_part_bytes", "gauge"},
        {"sluice_resident_bytes", "gauge"},
        {"sluice_resident_peak_bytes", "gauge"},
        {"sluice_heap_allocations_after_start_total", "counter"},
        {"sluice_connections", "gauge"},
        {"sluice_frames_refused_total", "counter"},
        {"sluice_http_requests_total", "counter"},
        {"sluice_http_heap_allocations_total", "counter"},
        {"sluice_streams", "gauge"},
        {"sluice_streams_capacity", "gauge"},
        {"sluice_uptime_seconds", "gauge"},
        {"sluice_build_info", "gauge"},
    };
    for (uint32_t i = 0; i < SL_ARRAY_COUNT(families); i++) {
        check_family(r.body, families[i][0], families[i][1]);
    }
    char line[256];
    CHECK(strstr(r.body, "\nsluice_readings_accepted_total 12345\n") != NULL);
    CHECK(strstr(r.body, "\nsluice_readings_rejected_total{reason=\"future\"} 3\n") != NULL);
    static const char *const reasons[] = {"nonfinite", "out_of_order", "future", "sensor_limit"};
    for (uint32_t i = 0; i < 4; i++) {
        snprintf(line, sizeof line, "\nsluice_readings_rejected_total{reason=\"%s\"} ", reasons[i]);
        CHECK(strstr(r.body, line) != NULL);
    }
    static const char *const statuses[] = {"OK",        "DUPLICATE",  "BAD_CRC",
                                           "MALFORMED", "OVERLOADED", "UNAUTHORIZED"};
    for (uint32_t t = 0; t < 2; t++) {
        for (uint32_t s = 0; s < 6; s++) {
            snprintf(line, sizeof line, "\nsluice_batches_total{transport=\"%s\",status=\"%s\"} ",
                     t ? "tcp" : "udp", statuses[s]);
            CHECK(strstr(r.body, line) != NULL);
        }
    }
    CHECK(strstr(r.body, "{transport=\"tcp\",status=\"DUPLICATE\"} 7\n") != NULL);
    CHECK(strstr(r.body, "sluice_frames_refused_total{transport=\"udp\",reason=\"bad_crc\"} 4\n"));
    CHECK(strstr(r.body, "\nsluice_connections{transport=\"tcp\"} 2\n") != NULL);
    static const char http_line[] = "\nsluice_connections{transport=\"http\"} ";
    const char *http = strstr(r.body, http_line);
    CHECK(http != NULL && strtoul(http + sizeof http_line - 1, NULL, 10) >= 1); /* this request */
    snprintf(line, sizeof line, "\nsluice_memory_planned_bytes %llu\n",
             (unsigned long long)fx.plan.total_bytes);
    CHECK(strstr(r.body, line) != NULL);
    snprintf(line, sizeof line, "\nsluice_sensors %u\n", sl_store_sensors_count(&fx.store));
    CHECK(strstr(r.body, line) != NULL);
    CHECK(strstr(r.body, "\nsluice_memory_planned_part_bytes{part=\"http_sorted_ids\"} 1024\n"));
    CHECK(strstr(r.body, "\nsluice_build_info{version=\"0.1.0-test\"} 1\n") != NULL);
    CHECK(strstr(r.body, "\nsluice_http_requests_total{code=\"503\"} 4\n") != NULL);
    CHECK(strstr(r.body, "\nsluice_resident_bytes 0\n") == NULL);
    promtool_check(&r);
    reply_free(&r);
}

/* ---- hostile clients ---- */

static void expect_healthy(void)
{
    struct reply r;
    get("/healthz", &r);
    CHECK(r.status == 200 && strcmp(r.body, "ok") == 0);
    reply_free(&r);
}

/* The server closes an idle connection within the receive timeout: EOF or reset, not EAGAIN. */
static bool closed_by_server(int fd)
{
    char byte;
    ssize_t n = recv(fd, &byte, 1, 0);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

static void test_hostile_clients(void)
{
    /* Silent clients up to the connection limit minus one, and a half-sent request. */
    int idle[7];
    for (int i = 0; i < 7; i++) {
        idle[i] = connect_local(fx.port);
        CHECK(idle[i] >= 0);
    }
    send_all(idle[0], "GET /healthz HTTP/1.1\r\nHost: x\r\n", 33);
    expect_healthy(); /* while they sit there */
    for (int i = 0; i < 7; i++) {
        CHECK(closed_by_server(idle[i])); /* timeout_s = 2, receive timeout 5 s */
        close(idle[i]);
    }
    expect_healthy();

    size_t big = 100 * 1024;
    char *line = malloc(big + 64);
    memcpy(line, "GET /", 5);
    memset(line + 5, 'a', big);
    int n = snprintf(line + 5 + big, 59, " HTTP/1.1\r\nConnection: close\r\n\r\n");
    struct reply r;
    exchange(line, 5 + big + (size_t)n, &r);
    CHECK(r.status != 200);
    reply_free(&r);
    expect_healthy();

    size_t k = 0;
    k += (size_t)snprintf(line, big, "GET /healthz HTTP/1.1\r\n");
    for (int i = 0; k + 64 < big; i++) {
        k += (size_t)snprintf(line + k, big - k, "X-Flood-%d: %032d\r\n", i, i);
    }
    k += (size_t)snprintf(line + k, big + 64 - k, "\r\n");
    exchange(line, k, &r);
    CHECK(r.status != 200);
    reply_free(&r);
    expect_healthy();

    static const char garbage[] = "\x01\x02\xff garbage \x00 more\r\n\r\n";
    exchange(garbage, sizeof garbage - 1, &r);
    CHECK(r.status != 200);
    reply_free(&r);
    free(line);
    expect_healthy();
}

/* A context of its own for a second server (its memory blocks must not be the running one's). */
static void spare_context(const struct sl_http_config *config, struct sl_http_context *out)
{
    *out = fx.context;
    out->view_memory = aligned_alloc(64, sl_http_views_bytes(&fx.store.config, config));
    out->sorted_ids = malloc((size_t)SENSORS_MAX * 2 * sizeof(uint32_t));
    out->connection_memory = aligned_alloc(64, sl_http_connections_bytes(config));
    CHECK(out->view_memory != NULL && out->sorted_ids != NULL && out->connection_memory != NULL);
}

static void spare_free(struct sl_http_context *ctx)
{
    free(ctx->view_memory);
    free(ctx->sorted_ids);
    free(ctx->connection_memory);
}

/* ---- HEAD, query limits ---- */

static void test_head_and_params(void)
{
    static const char *const paths[] = {"/healthz",
                                        "/metrics",
                                        "/api/v1/sensors",
                                        "/api/v1/sensors/1",
                                        "/api/v1/sensors/1/stats?window_s=10",
                                        "/api/v1/sensors/1/readings",
                                        "/api/v1/sensors/1/readings?format=bin",
                                        "/api/v1/sensors/99"};
    for (uint32_t i = 0; i < SL_ARRAY_COUNT(paths); i++) {
        struct reply g, h;
        get(paths[i], &g);
        request("HEAD", paths[i], &h);
        CHECK_EQ_U64(h.status, g.status);
        CHECK_EQ_U64(h.body_bytes, 0);
        char a[64] = "", b[64] = "";
        CHECK(header(&h, "Content-Type", a, sizeof a) && header(&g, "Content-Type", b, sizeof b));
        CHECK(strcmp(a, b) == 0);
        reply_free(&g);
        reply_free(&h);
    }
    struct reply r;
    request("HEAD", "/api/v1/sensors/1/readings?format=bin", &r);
    CHECK(header_is(&r, "X-Count", "2") && header_is(&r, "Content-Length", "24"));
    reply_free(&r);

    /* 64 parameters are served; 65 and 1,500 get 400 before MHD parses them. */
    static const uint32_t counts[] = {SL_HTTP_QUERY_PARAMS_MAX, SL_HTTP_QUERY_PARAMS_MAX + 1, 1500};
    char *path = malloc(32 * 1024);
    for (uint32_t k = 0; k < SL_ARRAY_COUNT(counts); k++) {
        size_t n = (size_t)snprintf(path, 64, "/api/v1/sensors?limit=1");
        for (uint32_t i = 1; i < counts[k]; i++) {
            n += (size_t)snprintf(path + n, 32 * 1024 - n, "&p%u=%u", i, i);
        }
        char *text = malloc(n + 128);
        int len = snprintf(text, n + 128, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                           path);
        exchange(text, (size_t)len, &r);
        if (counts[k] <= SL_HTTP_QUERY_PARAMS_MAX) {
            CHECK_EQ_U64(r.status, 200);
        } else {
            CHECK_EQ_U64(r.status, 400);
            CHECK(strcmp(r.body, "{\"error\": \"too many query parameters\"}") == 0);
        }
        reply_free(&r);
        free(text);
    }
    free(path);
}

/* ---- the connection table: per-address cap, eviction, header deadline ---- */

/* A connection to 127.0.0.1:port from source address 127.0.0.<host>. */
static int connect_from(uint16_t port, uint8_t host)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f000000u | host);
    CHECK(bind(fd, (struct sockaddr *)&src, sizeof src) == 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0);
    return fd;
}

/* A sample from /metrics (the current server, fx.port): "name{labels} ", or -1 when absent. */
static double metric(const char *line_prefix)
{
    struct reply r;
    char key[256];
    snprintf(key, sizeof key, "\n%s", line_prefix);
    get("/metrics", &r);
    const char *at = strstr(r.body, key);
    double v = at != NULL ? strtod(at + strlen(key), NULL) : -1;
    reply_free(&r);
    return v;
}

static void test_connection_table(void)
{
    struct sl_http_config c = {.host = "127.0.0.1",
                               .connections_max = 4,
                               .connections_per_ip_max = 2,
                               .header_timeout_ms = 400,
                               .timeout_s = 60,
                               .threads = 2};
    struct sl_http_context spare;
    spare_context(&c, &spare);
    char err[256] = "";
    struct sl_http *h = sl_http_start(&c, &spare, err, sizeof err);
    CHECK(h != NULL);
    if (h == NULL) {
        return;
    }
    uint16_t saved = fx.port;
    fx.port = sl_http_port(h);

    /* Silent connections from 127.0.0.1, three times its cap: a new client from there is answered.
     */
    int silent[6];
    for (int i = 0; i < 6; i++) {
        silent[i] = connect_from(fx.port, 1);
    }
    expect_healthy();
    CHECK(metric("sluice_http_connections_over_ip_cap_total ") >= 4);
    CHECK(metric("sluice_http_connections_evicted_total{reason=\"incomplete\"} ") >= 4);
    /* The oldest of them were shut: EOF, well before any timeout. */
    CHECK(closed_by_server(silent[0]));
    for (int i = 0; i < 6; i++) {
        close(silent[i]);
    }

    /* Eight silent addresses, twice the table: the table evicts the oldest, a newcomer is answered.
     */
    double evicted = metric("sluice_http_connections_evicted_total{reason=\"incomplete\"} ");
    int many[8];
    for (int i = 0; i < 8; i++) {
        many[i] = connect_from(fx.port, (uint8_t)(10 + i));
    }
    expect_healthy();
    CHECK(metric("sluice_http_connections_evicted_total{reason=\"incomplete\"} ") >= evicted + 4);
    for (int i = 0; i < 8; i++) {
        close(many[i]);
    }

    /* A request whose headers trickle forever is shut at the header deadline (400 ms). */
    int slow = connect_from(fx.port, 3);
    send_all(slow, "GET /healthz HTTP/1.1\r\n", 23);
    bool closed = false;
    struct timeval tv = {.tv_usec = 100 * 1000};
    setsockopt(slow, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    for (int i = 0; i < 100 && !closed; i++) { /* 10 s at most; the deadline is 0.4 s */
        if (send(slow, "X: y\r\n", 6, MSG_NOSIGNAL) != 6) {
            closed = true;
            break;
        }
        char byte;
        ssize_t n = recv(slow, &byte, 1, 0);
        closed = n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
    }
    CHECK(closed);
    close(slow);
    CHECK(metric("sluice_http_header_timeouts_total ") >= 1);
    expect_healthy();

    fx.port = saved;
    sl_http_stop(h);
    spare_free(&spare);
}

/* ---- start-up errors ---- */

static void test_start_errors(void)
{
    struct sl_http_context spare;
    struct sl_http_config defaults = {.host = "127.0.0.1"};
    spare_context(&defaults, &spare);
    char err[256] = "";
    struct sl_http_config c = {.host = "127.0.0.1", .port = fx.port};
    CHECK(sl_http_start(&c, &spare, err, sizeof err) == NULL);
    char want[64];
    snprintf(want, sizeof want, "http 127.0.0.1:%u: Address already in use", fx.port);
    CHECK(strcmp(err, want) == 0);
    if (strcmp(err, want) != 0) {
        fprintf(stderr, "  got \"%s\"\n", err);
    }
    struct sl_http_config named = {.host = "example.invalid", .port = 0};
    CHECK(sl_http_start(&named, &spare, err, sizeof err) == NULL);
    CHECK(strstr(err, "http example.invalid:0: ") == err);
    struct sl_http_config many = {.host = "127.0.0.1", .connections_max = 5000};
    CHECK(sl_http_start(&many, &spare, err, sizeof err) == NULL);
    CHECK(strstr(err, "connections") != NULL);
    /* localhost and an IPv6 literal bind. */
    struct sl_http_config local = {.host = "localhost", .port = 0};
    struct sl_http *h = sl_http_start(&local, &spare, err, sizeof err);
    CHECK(h != NULL && sl_http_port(h) != 0);
    sl_http_stop(h);
    struct sl_http_config v6 = {.host = "::1", .port = 0};
    h = sl_http_start(&v6, &spare, err, sizeof err);
    if (h == NULL) {
        CHECK(strstr(err, "http [::1]:0: ") == err); /* a host without IPv6 */
        printf("note: IPv6 loopback unavailable: %s\n", err);
    } else {
        CHECK(sl_http_port(h) != 0);
        sl_http_stop(h);
    }
    /* Prebound: the daemon's socket (sl_sock_listen) is served as it is, on its port. */
    int fd = sl_sock_listen("http", "127.0.0.1", 0, SOCK_STREAM, err, sizeof err);
    CHECK(fd >= 0);
    uint16_t bound = sl_sock_port(fd);
    struct sl_http_config pre = {.host = "127.0.0.1", .prebound = true, .listen_fd = fd};
    h = sl_http_start(&pre, &spare, err, sizeof err);
    CHECK(h != NULL && sl_http_port(h) == bound);
    if (h != NULL) {
        uint16_t saved = fx.port;
        fx.port = bound;
        expect_healthy();
        fx.port = saved;
        sl_http_stop(h);
    }
    sl_http_stop(NULL);
    spare_free(&spare);
}

int main(void)
{
    json_queue_open();
    fixture_open();
    test_health_and_list_example();
    test_sensor_example();
    test_readings_example();
    test_wrapped_sensor();
    test_float_output();
    test_pagination();
    test_not_found_and_methods();
    test_bad_parameters();
    test_busy_sensor();
    test_metrics();
    test_hostile_clients();
    test_head_and_params();
    test_connection_table();
    test_start_errors();
    expect_healthy();
    sl_http_stop(fx.http);
    json_queue_check();
    sl_arena_unmap(&fx.arena);
    TEST_END("test_http");
}
