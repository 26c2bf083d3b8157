/*
 * client_check: libsluice driven from the command line, for
 * tests/integration/test_client_c.py (which starts, kills and restarts the
 * real sluiced around it) and for the checks that need no gateway.
 *
 *   client_check send TARGET [key=value ...]   send, flush, print one JSON line
 *   client_check api                           argument, error and memory checks (exit 0/1)
 *
 * send keys: stream, first_seq, readings, sensors, sensor_base, batch, frame_bytes,
 * window, step_us (event time between one sensor's readings), nan_every
 * (every n-th reading NaN), single (1: sl_client_append one at a time),
 * chunk (readings per append_array call), pace_us (pause between chunks),
 * flush_ms, block_ms, nonblock, no_ack. The JSON has the flush's return
 * code and text, the last error, every count, and the heap allocations made
 * between open and the end of the flush (the library promises none).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc_count.h"
#include "sluice/client.h"

#define CHUNK_MAX 65536u

static uint32_t ids[CHUNK_MAX];
static float values[CHUNK_MAX];
static int64_t times[CHUNK_MAX];

struct params {
    uint64_t stream, first_seq, readings, sensors, sensor_base, batch, frame_bytes, window, step_us;
    uint64_t nan_every, single, chunk, pace_us, flush_ms, block_ms, nonblock, no_ack;
};

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int parse_params(int argc, char **argv, struct params *p)
{
    *p = (struct params){.stream = 1, .readings = 10000, .sensors = 10, .sensor_base = 1, .step_us = 1000,
                         .chunk = 1000, .flush_ms = 30000};
    static const struct {
        const char *name;
        size_t offset;
    } keys[] = {
#define KEY(k) {#k, offsetof(struct params, k)}
        KEY(stream), KEY(first_seq), KEY(readings), KEY(sensors), KEY(sensor_base), KEY(batch), KEY(frame_bytes),
        KEY(window), KEY(step_us), KEY(nan_every), KEY(single), KEY(chunk), KEY(pace_us),
        KEY(flush_ms), KEY(block_ms), KEY(nonblock), KEY(no_ack),
#undef KEY
    };
    for (int i = 0; i < argc; i++) {
        const char *eq = strchr(argv[i], '=');
        bool found = false;
        for (size_t k = 0; eq != NULL && k < sizeof keys / sizeof keys[0]; k++) {
            if (strlen(keys[k].name) == (size_t)(eq - argv[i]) &&
                strncmp(argv[i], keys[k].name, (size_t)(eq - argv[i])) == 0) {
                *(uint64_t *)((char *)p + keys[k].offset) = strtoull(eq + 1, NULL, 10);
                found = true;
            }
        }
        if (!found) {
            fprintf(stderr, "client_check: unknown parameter '%s'\n", argv[i]);
            return -1;
        }
    }
    if (p->chunk == 0 || p->chunk > CHUNK_MAX || p->sensors == 0) {
        fprintf(stderr, "client_check: chunk must be 1..%u and sensors > 0\n", CHUNK_MAX);
        return -1;
    }
    return 0;
}

static void print_counts(const struct sl_client_counts *n)
{
    printf("\"batches\":%" PRIu64 ",\"readings\":%" PRIu64 ",\"sent\":%" PRIu64
           ",\"sent_readings\":%" PRIu64 ",\"acked\":%" PRIu64 ",\"duplicate\":%" PRIu64
           ",\"accepted\":%" PRIu64 ",\"rejected\":%" PRIu64 ",\"overloaded\":%" PRIu64
           ",\"resent\":%" PRIu64 ",\"reconnects\":%" PRIu64 ",\"connect_failures\":%" PRIu64
           ",\"ack_timeouts\":%" PRIu64 ",\"refused\":%" PRIu64 ",\"refused_seq\":%" PRIu64
           ",\"refused_status\":%u,\"udp_errors\":%" PRIu64 ",\"pending\":%" PRIu64
           ",\"buffered\":%" PRIu64 ",\"next_seq\":%" PRIu64,
           n->batches, n->readings, n->sent, n->sent_readings, n->acked, n->duplicate, n->accepted,
           n->rejected, n->overloaded, n->resent, n->reconnects, n->connect_failures,
           n->ack_timeouts, n->refused, n->refused_seq, n->refused_status, n->udp_errors,
           n->pending, n->buffered, n->next_seq);
}

static int run_send(const char *target, const struct params *p)
{
    struct sl_client_options o;
    sl_client_options_init(&o);
    o.stream_id = (uint32_t)p->stream;
    o.first_seq = p->first_seq;
    o.batch_readings = (uint32_t)p->batch;
    o.frame_bytes_max = (uint32_t)p->frame_bytes;
    o.window = (uint32_t)p->window;
    o.block_timeout_ms = (int32_t)p->block_ms;
    o.flags = (p->nonblock ? SL_CLIENT_NONBLOCK : 0) | (p->no_ack ? SL_CLIENT_NO_ACK : 0);
    struct sl_client *c;
    int rc = sl_client_open(&c, target, &o);
    if (rc < 0) {
        printf("{\"open\":%d,\"error\":\"%s\"}\n", rc, sl_client_strerror(rc));
        return 1;
    }
    sl_alloc_track(SL_ALLOC_INGEST);
    uint64_t allocs_before = sl_alloc_count(SL_ALLOC_INGEST);
    int64_t t0 = wall_us() - 3600000000ll; /* an hour ago: never "future" */
    uint64_t taken_total = 0;
    int append_rc = 0;
    for (uint64_t i = 0; i < p->readings && append_rc >= 0;) {
        uint64_t n = p->readings - i < p->chunk ? p->readings - i : p->chunk;
        for (uint64_t k = 0; k < n; k++) {
            uint64_t r = i + k;
            ids[k] = (uint32_t)(r % p->sensors + p->sensor_base);
            times[k] = t0 + (int64_t)(r / p->sensors) * (int64_t)p->step_us;
            values[k] = p->nan_every > 0 && (r + 1) % p->nan_every == 0 ? NAN : (float)(r % 1000) * 0.5f;
        }
        if (p->single) {
            for (uint64_t k = 0; k < n && append_rc >= 0; k++) {
                append_rc = sl_client_append(c, ids[k], times[k], values[k]);
                taken_total += append_rc >= 0;
            }
        } else {
            int64_t taken = sl_client_append_array(c, ids, values, times, n);
            if (taken >= 0) {
                taken_total += (uint64_t)taken;
                if ((uint64_t)taken < n) {
                    /* Partial, like write(2): the call for the rest says why. */
                    int64_t again = sl_client_append_array(c, ids + taken, values + taken,
                                                           times + taken, n - (uint64_t)taken);
                    append_rc = again < 0 ? (int)again : -ETIMEDOUT;
                }
            } else {
                append_rc = (int)taken;
            }
        }
        i += n;
        if (p->pace_us > 0) {
            struct timespec ts = {.tv_sec = (time_t)(p->pace_us / 1000000),
                                  .tv_nsec = (long)(p->pace_us % 1000000) * 1000};
            nanosleep(&ts, NULL);
            (void)sl_client_poll(c, 0); /* read the acks that came in meanwhile */
        }
    }
    int flush_rc = append_rc >= 0 ? sl_client_flush(c, (int)p->flush_ms) : 0;
    uint64_t allocs = sl_alloc_count(SL_ALLOC_INGEST) - allocs_before;
    sl_alloc_track(SL_ALLOC_UNTRACKED);
    struct sl_client_counts n;
    sl_client_counts(c, &n);
    int last = sl_client_last_error(c);
    printf("{\"append_rc\":%d,\"append_error\":\"%s\",\"taken\":%" PRIu64 ",\"flush_rc\":%d,"
           "\"flush_error\":\"%s\",\"last_error\":%d,\"last_error_text\":\"%s\","
           "\"allocations\":%" PRIu64 ",\"counting\":%s,",
           append_rc, sl_client_strerror(append_rc), taken_total, flush_rc,
           sl_client_strerror(flush_rc), last, sl_client_strerror(last), allocs,
           sl_alloc_counting_active() ? "true" : "false");
    print_counts(&n);
    printf("}\n");
    sl_client_close(c);
    return 0;
}

/* ---------------------------------------------------------------- api: no gateway needed */

static int failures;

static void expect(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "client_check api: FAILED: %s\n", what);
        failures++;
    }
}

static int open_rc(const char *target, const struct sl_client_options *o)
{
    struct sl_client *c = (struct sl_client *)&failures; /* must come back NULL on failure */
    int rc = sl_client_open(&c, target, o);
    if (rc < 0) {
        expect(c == NULL, "a failed open leaves *out NULL");
    }
    sl_client_close(c);
    return rc;
}

static void api_targets(void)
{
    struct sl_client_options o;
    sl_client_options_init(&o);
    static const char *bad[] = {"", "127.0.0.1:7409", "http://127.0.0.1:7409", "tcp://127.0.0.1",
                                "tcp://:7409", "tcp://127.0.0.1:0", "tcp://127.0.0.1:65536",
                                "tcp://127.0.0.1:74x9", "udp://[::1]7409", "tcp://a:b:1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        expect(open_rc(bad[i], &o) == SL_CLIENT_ETARGET, bad[i]);
    }
    expect(open_rc(NULL, &o) == SL_CLIENT_ETARGET, "NULL target");
    expect(open_rc("tcp://no-such-host.invalid:7409", &o) == SL_CLIENT_ERESOLVE,
           "an unknown host is ERESOLVE");
    expect(open_rc("udp://[::1]:7409", &o) == 0, "an IPv6 literal opens");
    expect(sl_client_open(NULL, "tcp://127.0.0.1:1", &o) == -EINVAL, "NULL out is EINVAL");
    expect(open_rc("tcp://127.0.0.1:1", NULL) == -EINVAL, "NULL options is EINVAL");
}

static void api_options(void)
{
    struct {
        struct sl_client_options o;
        const char *what;
    } bad[] = {
        {{.batch_readings = 65536}, "batch above 65,535"},
        {{.frame_bytes_max = 47}, "a frame smaller than one reading"},
        {{.window = SL_CLIENT_WINDOW_MAX + 1}, "window above the maximum"},
        {{.block_timeout_ms = -2}, "a negative block timeout other than FOREVER"},
        {{.backoff_min_ms = 500, .backoff_max_ms = 100}, "backoff min above max"},
        {{.flags = 0x80}, "an unknown flag"},
        {{.connect_timeout_ms = SL_CLIENT_TIMEOUT_MAX_MS + 1}, "a connect timeout above a day"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        expect(open_rc("tcp://127.0.0.1:1", &bad[i].o) == -EINVAL, bad[i].what);
    }
    struct sl_client_options udp_big = {.frame_bytes_max = SL_CLIENT_UDP_FRAME_MAX + 1};
    expect(open_rc("udp://127.0.0.1:1", &udp_big) == -EINVAL, "a UDP frame above 65,507 bytes");
    struct sl_client_options huge = {.batch_readings = 65535, .window = SL_CLIENT_WINDOW_MAX};
    expect(sl_client_memory("tcp://127.0.0.1:1", &huge) == -ENOMEM, "a plan above 4 GiB is ENOMEM");
    struct sl_client_options d;
    sl_client_options_init(&d);
    int64_t bytes = sl_client_memory("tcp://127.0.0.1:1", &d);
    /* 65 frames of 12,036 bytes (64-byte aligned: 12,096) plus slots and the client. */
    expect(bytes >= 65 * 12096 && bytes < 65 * 12096 + 16384, "the default TCP plan");
    int64_t udp = sl_client_memory("udp://127.0.0.1:1", &d);
    expect(udp > 0 && udp < 16384, "the default UDP plan: two 1,472-byte frames and change");
}

static void api_strerror(void)
{
    int codes[] = {0, SL_CLIENT_ETARGET, SL_CLIENT_ERESOLVE, SL_CLIENT_EREFUSED,
                   SL_CLIENT_EPROTOCOL, SL_CLIENT_ECLOSED, -EINVAL, -ETIMEDOUT, -EAGAIN,
                   -ECONNREFUSED, -12345, 7};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        const char *text = sl_client_strerror(codes[i]);
        expect(text != NULL && text[0] != '\0', "every code has a text");
    }
    expect(strcmp(sl_client_strerror(-12345), "unknown error") == 0, "unknown codes say so");
    expect(strstr(sl_client_strerror(-ECONNREFUSED), "refused") != NULL, "errno codes use errno's text");
}

/* Nothing listening: appends fill the window, then block (timeout), non-block (EAGAIN), flush times out. */
static void api_no_gateway(const char *closed_target)
{
    struct sl_client_options o = {.stream_id = 9, .batch_readings = 10, .window = 2,
                                  .block_timeout_ms = 200, .backoff_min_ms = 5, .backoff_max_ms = 20};
    struct sl_client *c;
    expect(sl_client_open(&c, closed_target, &o) == 0, "open succeeds with the gateway down");
    int64_t t = wall_us();
    uint32_t id[30];
    float v[30];
    int64_t ts[30];
    for (int i = 0; i < 30; i++) {
        id[i] = 1;
        v[i] = (float)i;
        ts[i] = t + i;
    }
    expect(sl_client_room(c) == 20, "room: two frames of ten");
    /* Two frames cut into the window, the third fills the open frame without being cut. */
    expect(sl_client_append_array(c, id, v, ts, 30) == 30, "window and open frame take 30");
    expect(sl_client_room(c) == 0, "room: none");
    expect(sl_client_append(c, 1, t + 40, 1.0f) == -ETIMEDOUT, "the next reading waits, then times out");
    struct sl_client_counts n;
    sl_client_counts(c, &n);
    expect(n.batches == 2 && n.pending == 2 && n.buffered == 10, "two frames cut, ten readings open");
    expect(sl_client_flush(c, 300) == -ETIMEDOUT, "flush times out with nothing listening");
    sl_client_counts(c, &n);
    expect(n.connect_failures >= 1 && n.acked == 0, "connection attempts failed, nothing acked");
    expect(sl_client_last_error(c) == -ECONNREFUSED, "the last error says connection refused");
    sl_client_close(c);

    o.flags = SL_CLIENT_NONBLOCK;
    expect(sl_client_open(&c, closed_target, &o) == 0, "open (non-blocking)");
    expect(sl_client_append_array(c, id, v, ts, 30) == 30, "non-blocking: what fits");
    expect(sl_client_append_array(c, id, v, ts + 20, 10) == -EAGAIN, "non-blocking: EAGAIN, none taken");
    sl_client_close(c);

    expect(sl_client_open(&c, closed_target, &o) == 0, "open");
    expect(sl_client_append_array(c, NULL, v, ts, 3) == -EINVAL, "NULL ids with n > 0");
    expect(sl_client_append_array(c, id, v, ts, 0) == 0, "n = 0 is fine");
    sl_client_close(c);
    sl_client_close(NULL);
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "send") == 0) {
        struct params p;
        if (parse_params(argc - 3, argv + 3, &p) != 0) {
            return 2;
        }
        return run_send(argv[2], &p);
    }
    if (argc == 3 && strcmp(argv[1], "api") == 0) {
        api_targets();
        api_options();
        api_strerror();
        api_no_gateway(argv[2]);
        printf("client_check api: %d failures\n", failures);
        return failures == 0 ? 0 : 1;
    }
    fprintf(stderr, "usage: client_check send TARGET [key=value ...] | client_check api CLOSED_TCP_TARGET\n");
    return 2;
}
