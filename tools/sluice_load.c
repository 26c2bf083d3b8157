/*
 * sluice-load: the load generator for the native protocol (docs/spec/PROTOCOL.md).
 *
 * What: sends batches of synthetic readings to a gateway over UDP (fire and
 * forget) or TCP (pipelined, acknowledged), then prints ONE JSON object on
 * stdout: what was sent, what the acks said, and ack latency percentiles.
 * Progress and errors go to stderr. Exit 0 success, 1 runtime failure (the
 * JSON is still printed), 2 bad usage (no JSON).
 *
 * How: single-threaded, so that on a small box the gateway keeps the other
 * cores. Each stream owns a cursor (next sensor, next per-sensor reading
 * index) and its own seeded PRNGs, so what a stream sends depends only on the
 * flags, never on timing. A batch is generated into three arrays (ids,
 * times, values) and handed to the stream's libsluice client
 * (include/sluice/client.h), which packs, checksums, sends, matches acks and
 * resends: the load generator and the client library are one code path.
 * TCP: one client a stream, non-blocking, driven by one edge-triggered epoll
 * set (sl_client_service on readiness, re-registered when a reconnect opens a
 * new socket); up to --window batches in flight each. UDP: one client a
 * stream, frames handed to the kernel in rounds of about 4 MiB per sendmmsg,
 * with UDP GSO (UDP_SEGMENT, default on, --no-gso) carrying several whole
 * frames a message that the kernel splits into one datagram per frame.
 * --rate is a token bucket refilled from CLOCK_MONOTONIC once per batch.
 *
 * Memory: taken once at start (its size is printed on stderr): the clients'
 * buffers (sl_client_memory: TCP window + 1 frames a stream, UDP a round of
 * frames a stream), a batch of scratch arrays (16 B a reading), 4 B per
 * sensor for --pattern walk, 16 B per sensor for --pattern drift and 8 B per
 * sensor for --ooo-rate, and a 58 KiB latency histogram (log-linear, 1/128
 * relative precision, any u64 ns). Nothing is allocated per batch. The plan
 * is capped at 1 GiB.
 *
 * Limits: streams <= 4096, window <= 65536, batch <= 5455 (UDP) / 65535
 * (TCP); a batch is cut short when its readings would span more than
 * 2^32-1 us. A lost connection or OVERLOADED is retried by the library
 * (capped backoff, resend in order with the original batch_seq, so no batch
 * is lost or applied twice); a stream that makes no progress for --retry-for
 * seconds fails the run.
 */
#include <endian.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "sluice/client.h"
#include "sluice/protocol.h"
#include "core/assert.h"
#include "core/clock.h"
#include "tools/tool.h"
#include "core/crc32c.h"

#ifndef SL_VERSION
#define SL_VERSION "0.0.0"
#endif

#define LOAD_STREAMS_MAX 4096u
#define LOAD_WINDOW_MAX 65536u
#define LOAD_UDP_SLOTS_MIN 64u   /* UDP frames a sendmmsg round, over all streams ... */
#define LOAD_UDP_SLOTS_MAX 1024u /* ... sized to about LOAD_UDP_ROUND_BYTES */
#define LOAD_UDP_ROUND_BYTES (4u << 20)
#define LOAD_EVENTS_MAX 256u         /* epoll events per wait */
#define LOAD_MEMORY_MAX (1ull << 30) /* refuse plans above 1 GiB */
#define LOAD_ALIGN 64u
#define LOAD_SINE_PERIOD 600u /* readings per sine cycle */
#define LOAD_SINE_PHASES 60u  /* per-sensor phase: sensor_id mod 60 steps */
/*
 * --pattern drift, a plausible sensor (a temperature, say): a per-sensor base
 * in [15, 25), a slow sine of amplitude [1, 3) and random phase with a period
 * of 6 h of event time, a mean-reverting random walk (steps uniform in
 * +-0.02, pulled back by 1/4096 of itself a reading: about 0.5 standard
 * deviation, correlated over about an hour at 1 Hz) and noise of standard
 * deviation 0.05 (the sum of four uniforms, nearly Gaussian, bounded).
 */
#define LOAD_DRIFT_PERIOD_US 21600000000ull /* 6 h */
#define LOAD_DRIFT_BASE_MIN 15.0
#define LOAD_DRIFT_BASE_SPAN 10.0
#define LOAD_DRIFT_AMPLITUDE_MIN 1.0
#define LOAD_DRIFT_AMPLITUDE_SPAN 2.0
#define LOAD_DRIFT_WALK_STEP 0.02f
#define LOAD_DRIFT_WALK_KEEP (1.0f - 1.0f / 4096.0f)
#define LOAD_DRIFT_NOISE_SD 0.05f
#define LOAD_READINGS_DEFAULT 1000000u
#define LOAD_READINGS_MAX (1ull << 50)
#define LOAD_INTERVAL_MAX_US (1ull << 40) /* about 12.7 days */
#define LOAD_START_MAX_US (1ll << 62)
#define LOAD_FUTURE_SKEW_US 300000000ll /* the gateway's default max future skew */
#define LOAD_DRAIN_TIMEOUT_MS 5000 /* --no-ack: wait this long for the gateway's EOF */
#define LOAD_RETRY_FOR_DEFAULT_S 15.0
#define LOAD_FLUSH_TIMEOUT_MS 10000 /* UDP: hand the last round to the kernel */
#define LOAD_UDP_PAUSE_NS 50000ll   /* UDP: the local queue is full, let it drain */
#define LOAD_PROGRESS_CHECK_NS 100000000ll /* a stream's progress is looked at every 100 ms */
#define LOAD_PROGRESS_NS 1000000000ll
#define LOAD_NS_PER_S 1000000000ll

#define HIST_SUB_BITS 7u
#define HIST_SUB_COUNT (1u << HIST_SUB_BITS)
#define HIST_BUCKETS ((64u - HIST_SUB_BITS + 1u) * HIST_SUB_COUNT)

_Static_assert(SL_UDP_COUNT_MAX < SL_BATCH_COUNT_MAX, "UDP frames are the smaller ones");

enum load_transport { LOAD_UDP, LOAD_TCP };
enum load_pattern {
    LOAD_PATTERN_CONSTANT,
    LOAD_PATTERN_SINE,
    LOAD_PATTERN_WALK,
    LOAD_PATTERN_DRIFT
};
enum load_kind { LOAD_KIND_NORMAL, LOAD_KIND_NAN, LOAD_KIND_OOO };

struct load_config {
    const char *target; /* as given, for the report */
    enum load_transport transport;
    uint32_t streams;
    uint32_t sensors; /* total, split evenly across streams */
    uint32_t batch;   /* readings per batch */
    uint32_t window;  /* TCP: batches in flight per connection */
    uint32_t stream_id_base;
    uint32_t sensor_id_base;
    double rate_per_s; /* 0 = unpaced */
    double duration_s; /* 0 = no time limit */
    uint64_t readings; /* UINT64_MAX = no count limit */
    bool readings_set;
    enum load_pattern pattern;
    uint64_t seed;
    const char *start_time_text; /* NULL = now */
    int64_t start_time_us;
    uint64_t interval_us;
    double nan_rate;
    double ooo_rate;
    uint64_t start_seq;
    double retry_for_s; /* a stream without progress this long fails the run */
    bool ack; /* TCP: set ACK_REQUESTED */
    bool gso; /* UDP: use UDP_SEGMENT when the kernel has it */
    bool quiet;
};

/* Read-only generation parameters shared by all streams. */
struct load_gen {
    enum load_pattern pattern;
    int64_t start_us;
    int64_t interval_us;
    uint64_t k_limit; /* per-sensor reading index where event times would near overflow */
    double nan_rate;
    double ooo_rate;
    bool inject; /* nan_rate > 0 || ooo_rate > 0 */
    float sine[LOAD_SINE_PERIOD + LOAD_SINE_PHASES];
};

/* --pattern drift: one sensor's parameters and walk state, 16 B. */
struct load_drift {
    float base;
    float amp_cos; /* amplitude x cos(phase) */
    float amp_sin; /* amplitude x sin(phase) */
    float walk;
};

struct load_stream {
    uint32_t stream_id;
    uint32_t sensor_id_first;
    uint32_t sensor_count;
    uint32_t sensor_index; /* sensor of the next reading, 0-based in this stream */
    uint64_t reading_k;    /* per-sensor index of the next reading */
    uint64_t readings_left;
    uint64_t rng_walk;
    uint64_t rng_inject;
    float *walk_value;        /* sensor_count, or NULL unless --pattern walk */
    struct load_drift *drift; /* sensor_count, or NULL unless --pattern drift */
    uint64_t drift_k;         /* the reading index drift_sin and drift_cos are for */
    float drift_sin;          /* sin and cos of the drift's angle at reading drift_k */
    float drift_cos;
    int64_t *last_good_us; /* sensor_count, or NULL unless --ooo-rate > 0 */
};

/* One generated batch, handed to a client (which copies it into its frame). */
struct load_scratch {
    uint32_t *ids;
    int64_t *times;
    float *values;
};

struct load_hist {
    uint64_t counts[HIST_BUCKETS];
    uint64_t total;
    uint64_t max;
};

/* What the generator itself injected; the rest of the report is the clients' counts. */
struct load_counts {
    uint64_t injected_nan;
    uint64_t injected_ooo;
};

struct load_pacer {
    bool on;
    double rate_per_ns;
    double tokens; /* readings that may be sent now */
    double burst;  /* token cap: max(batch, 10 ms of rate) */
    int64_t last_ns;
};

/* One stream's sender. */
struct load_conn {
    struct sl_client *client;
    struct load_stream *stream;
    uint64_t sockets;  /* counts.sockets when the socket was put in the epoll set */
    short revents;     /* readiness seen since the last service */
    bool live;
    int64_t progress_ns;    /* when progress_mark last changed */
    int64_t checked_ns;     /* when progress was last looked at */
    uint64_t progress_mark; /* sent + acked + duplicate + overloaded + resent */
};

struct load_run {
    uint8_t *memory; /* the one block everything below is carved from */
    struct load_config cfg;
    struct load_gen gen;
    struct load_counts counts;
    struct load_pacer pacer;
    struct load_hist *hist;
    struct load_stream *streams;
    struct load_conn *conns;
    struct load_scratch scratch;
    uint32_t streams_left; /* streams with readings_left > 0 */
    uint64_t batches_generated;
    uint32_t window;       /* per client: TCP --window; UDP frames a round */
    size_t client_bytes;   /* what the clients allocate, in the plan */
    bool failed;           /* exit 1 at the end */
    int64_t started_ns;
    int64_t finished_ns;
    int64_t deadline_ns; /* --duration, or INT64_MAX */
    int64_t progress_ns; /* next progress line */
    uint64_t progress_readings;
};

/* Bump allocator over one block; with base == NULL it only measures. */
struct load_arena {
    uint8_t *base;
    size_t used;
};

/* ---------------------------------------------------------------- PRNG, histogram */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* xorshift64*: fast, and good enough for synthetic values and reject draws. */
static inline uint64_t xorshift64(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* A uniform double in [0, 1). */
static inline double unit_draw(uint64_t *state)
{
    return (double)(xorshift64(state) >> 11) * 0x1.0p-53;
}

/* A uniform double in [0, 1) from splitmix64, for set-up draws. */
static double unit_draw_from(uint64_t *state)
{
    return (double)(splitmix64(state) >> 11) * 0x1.0p-53;
}

/* Values below 2 x 128 have exact buckets; above, 128 buckets per power of two. */
static uint32_t hist_index(uint64_t value)
{
    if (value < 2u * HIST_SUB_COUNT) {
        return (uint32_t)value;
    }
    uint32_t shift = (uint32_t)(63 - __builtin_clzll(value)) - HIST_SUB_BITS;
    return (shift << HIST_SUB_BITS) + (uint32_t)(value >> shift);
}

/* The middle of a bucket's range. */
static uint64_t hist_value(uint32_t index)
{
    if (index < 2u * HIST_SUB_COUNT) {
        return index;
    }
    uint32_t shift = (index >> HIST_SUB_BITS) - 1u;
    uint64_t sub = (uint64_t)(index & (HIST_SUB_COUNT - 1u)) + HIST_SUB_COUNT;
    return (sub << shift) + ((1ull << shift) >> 1);
}

static void hist_record(struct load_hist *hist, uint64_t value)
{
    uint32_t index = hist_index(value);
    SL_ASSERT(index < HIST_BUCKETS);
    hist->counts[index]++;
    hist->total++;
    if (value > hist->max) {
        hist->max = value;
    }
}

static uint64_t hist_percentile(const struct load_hist *hist, double q)
{
    SL_ASSERT(hist->total > 0);
    uint64_t target = (uint64_t)ceil(q * (double)hist->total);
    uint64_t seen = 0;
    if (target == 0) {
        target = 1;
    }
    for (uint32_t i = 0; i < HIST_BUCKETS; i++) {
        seen += hist->counts[i];
        if (seen >= target) {
            uint64_t value = hist_value(i);
            return value < hist->max ? value : hist->max;
        }
    }
    return hist->max;
}

/* ---------------------------------------------------------------- pacing */

static void pacer_init(struct load_pacer *pacer, double rate_per_s, uint32_t batch, int64_t now)
{
    pacer->on = rate_per_s > 0;
    pacer->rate_per_ns = rate_per_s / 1e9;
    pacer->burst = fmax((double)batch, rate_per_s * 0.01);
    pacer->tokens = (double)batch;
    pacer->last_ns = now;
}

/* 0 when `count` readings may go now, else nanoseconds to wait. */
static int64_t pacer_wait_ns(struct load_pacer *pacer, uint64_t count, int64_t now)
{
    if (!pacer->on) {
        return 0;
    }
    if (now > pacer->last_ns) {
        pacer->tokens += (double)(now - pacer->last_ns) * pacer->rate_per_ns;
        pacer->last_ns = now;
    }
    if (pacer->tokens > pacer->burst) {
        pacer->tokens = pacer->burst;
    }
    if (pacer->tokens >= (double)count) {
        return 0;
    }
    return (int64_t)(((double)count - pacer->tokens) / pacer->rate_per_ns) + 1;
}

static void pacer_charge(struct load_pacer *pacer, uint32_t count)
{
    if (pacer->on) {
        pacer->tokens -= (double)count;
    }
}

static void sleep_ns(int64_t ns)
{
    struct timespec ts = {.tv_sec = ns / LOAD_NS_PER_S, .tv_nsec = ns % LOAD_NS_PER_S};
    while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR && !tool_stop_signal) {
    }
}

/* ---------------------------------------------------------------- batch generation */

/* The drift's sine at a sensor's k-th reading: once per round of the stream's sensors. */
static void drift_angle(const struct load_gen *gen, struct load_stream *s, uint64_t k)
{
    uint64_t phase_us = (k * (uint64_t)gen->interval_us) % LOAD_DRIFT_PERIOD_US;
    double angle = 2.0 * M_PI * (double)phase_us / (double)LOAD_DRIFT_PERIOD_US;
    s->drift_k = k;
    s->drift_sin = (float)sin(angle);
    s->drift_cos = (float)cos(angle);
}

/* Base + slow sine (sin(a + phase) expanded) + mean-reverting walk + noise. */
static inline float drift_value(const struct load_gen *gen, struct load_stream *s,
                                uint32_t sensor_index, uint64_t k)
{
    if (s->drift_k != k) {
        drift_angle(gen, s, k);
    }
    struct load_drift *d = &s->drift[sensor_index];
    int64_t step = (int64_t)(xorshift64(&s->rng_walk) >> 40) - (1 << 23); /* [-2^23, 2^23) */
    d->walk = d->walk * LOAD_DRIFT_WALK_KEEP + (float)step * (LOAD_DRIFT_WALK_STEP / 8388608.0f);
    /* Four 16-bit uniforms: the sum has mean 131070 and standard deviation 65536 / sqrt(3). */
    uint64_t draw = xorshift64(&s->rng_walk);
    uint32_t sum = (uint32_t)(draw & 0xFFFFu) + (uint32_t)((draw >> 16) & 0xFFFFu) +
                   (uint32_t)((draw >> 32) & 0xFFFFu) + (uint32_t)(draw >> 48);
    float noise = ((float)sum - 131070.0f) * (LOAD_DRIFT_NOISE_SD * 1.7320508f / 65536.0f);
    return d->base + d->amp_cos * s->drift_sin + d->amp_sin * s->drift_cos + d->walk + noise;
}

static inline float gen_value(const struct load_gen *gen, struct load_stream *s,
                              uint32_t sensor_index, uint64_t k, uint32_t k_mod)
{
    switch (gen->pattern) {
    case LOAD_PATTERN_CONSTANT:
        return 1.0f;
    case LOAD_PATTERN_SINE:
        return gen->sine[k_mod + (s->sensor_id_first + sensor_index) % LOAD_SINE_PHASES];
    case LOAD_PATTERN_DRIFT:
        return drift_value(gen, s, sensor_index, k);
    case LOAD_PATTERN_WALK:
    default: {
        /* A step uniform in [-0.1, 0.1). */
        int64_t raw = (int64_t)(xorshift64(&s->rng_walk) >> 40) - (1 << 23);
        s->walk_value[sensor_index] += (float)raw * (0.1f / 8388608.0f);
        return s->walk_value[sensor_index];
    }
    }
}

/* Both draws are made for every reading, so the sequence does not depend on state. */
static inline enum load_kind gen_kind(const struct load_gen *gen, struct load_stream *s,
                                      uint32_t sensor_index)
{
    double ooo_draw = unit_draw(&s->rng_inject);
    double nan_draw = unit_draw(&s->rng_inject);
    if (ooo_draw < gen->ooo_rate && s->last_good_us[sensor_index] != INT64_MIN) {
        return LOAD_KIND_OOO;
    }
    if (nan_draw < gen->nan_rate) {
        return LOAD_KIND_NAN;
    }
    return LOAD_KIND_NORMAL;
}

/* Header, base time, CRC; offsets were written relative to t_first and move to t_min. */
/*
 * Write the stream's next batch (at most count_max readings) into the
 * scratch arrays and return its count, or 0 when the stream is exhausted. A sensor's k-th reading
 * is stamped start + k x interval; an injected out-of-order reading is
 * stamped one interval before the sensor's last good reading, so a fresh
 * gateway rejects exactly the injected ones.
 */
static uint32_t gen_batch(const struct load_gen *gen, struct load_stream *s,
                          const struct load_scratch *out, uint32_t count_max,
                          struct load_counts *counts)
{
    uint64_t want = s->readings_left < count_max ? s->readings_left : count_max;
    if (want == 0 || s->reading_k >= gen->k_limit) {
        s->readings_left = 0;
        return 0;
    }
    uint32_t index = s->sensor_index;
    uint64_t k = s->reading_k;
    uint32_t k_mod = (uint32_t)(k % LOAD_SINE_PERIOD);
    int64_t t_nominal = gen->start_us + (int64_t)k * gen->interval_us;
    int64_t t_min = INT64_MAX, t_max = INT64_MIN;
    uint64_t nan_count = 0, ooo_count = 0;
    uint32_t n;
    for (n = 0; n < want; n++) {
        int64_t t = t_nominal;
        enum load_kind kind = LOAD_KIND_NORMAL;
        uint64_t rng_saved = s->rng_inject;
        if (gen->inject) {
            kind = gen_kind(gen, s, index);
            t = kind == LOAD_KIND_OOO ? s->last_good_us[index] - gen->interval_us : t;
        }
        int64_t lo = t < t_min ? t : t_min;
        int64_t hi = t > t_max ? t : t_max;
        if ((uint64_t)(hi - lo) > UINT32_MAX) {
            s->rng_inject = rng_saved; /* this reading opens the next batch */
            break;
        }
        t_min = lo;
        t_max = hi;
        float value = gen_value(gen, s, index, k, k_mod);
        if (kind == LOAD_KIND_NAN) {
            value = NAN;
            nan_count++;
        } else if (kind == LOAD_KIND_OOO) {
            ooo_count++;
        } else if (s->last_good_us != NULL) {
            s->last_good_us[index] = t;
        }
        out->ids[n] = s->sensor_id_first + index;
        out->times[n] = t;
        out->values[n] = value;
        if (++index == s->sensor_count) {
            index = 0;
            k++;
            t_nominal += gen->interval_us;
            k_mod = k_mod + 1 == LOAD_SINE_PERIOD ? 0 : k_mod + 1;
        }
    }
    SL_ASSERT(n >= 1);
    s->sensor_index = index;
    s->reading_k = k;
    s->readings_left -= n;
    counts->injected_nan += nan_count;
    counts->injected_ooo += ooo_count;
    return n;
}

/* gen_batch plus the run's bookkeeping. Returns the count, 0 when the stream is done. */
static uint32_t run_gen(struct load_run *run, struct load_stream *s)
{
    uint32_t count = gen_batch(&run->gen, s, &run->scratch, run->cfg.batch, &run->counts);
    if (s->readings_left == 0) {
        SL_ASSERT(run->streams_left > 0);
        run->streams_left--;
    }
    return count;
}

/* Stop all streams (deadline or signal); pending TCP batches still complete. */
static void run_stop_streams(struct load_run *run)
{
    for (uint32_t i = 0; i < run->cfg.streams; i++) {
        run->streams[i].readings_left = 0;
    }
    run->streams_left = 0;
}

static void run_tick(struct load_run *run, int64_t now)
{
    if (run->streams_left > 0 && (now >= run->deadline_ns || tool_stop_signal)) {
        run_stop_streams(run);
    }
    if (run->cfg.quiet || now < run->progress_ns) {
        return;
    }
    double elapsed_s = (double)(now - run->started_ns) / 1e9;
    double window_s = 1.0 + (double)(now - run->progress_ns) / 1e9;
    uint64_t sent = 0;
    for (uint32_t i = 0; i < run->cfg.streams; i++) {
        struct sl_client_counts n;
        sl_client_counts(run->conns[i].client, &n);
        sent += n.sent_readings;
    }
    fprintf(stderr, "sluice-load: %.1f s  %" PRIu64 " readings sent  %.0f readings/s\n", elapsed_s,
            sent, (double)(sent - run->progress_readings) / window_s);
    run->progress_readings = sent;
    run->progress_ns = now + LOAD_PROGRESS_NS;
}

/* The clock starts once the sockets are ready: elapsed, --duration and pacing count from here. */
static void run_start(struct load_run *run)
{
    run->started_ns = sl_clock_monotonic_ns();
    run->progress_ns = run->started_ns + LOAD_PROGRESS_NS;
    run->deadline_ns = INT64_MAX;
    if (run->cfg.duration_s > 0) {
        run->deadline_ns = run->started_ns + (int64_t)(run->cfg.duration_s * 1e9);
    }
    pacer_init(&run->pacer, run->cfg.rate_per_s, run->cfg.batch, run->started_ns);
}

/* ---------------------------------------------------------------- senders */

static void on_ack(void *context, const struct sl_client_ack *ack)
{
    struct load_run *run = context;
    if (ack->status == SL_STATUS_OK || ack->status == SL_STATUS_DUPLICATE) {
        hist_record(run->hist, ack->latency_ns > 0 ? (uint64_t)ack->latency_ns : 0);
    }
}

static void client_options(const struct load_run *run, uint32_t index, struct sl_client_options *o)
{
    const struct load_config *cfg = &run->cfg;
    sl_client_options_init(o);
    o->stream_id = cfg->stream_id_base + index;
    o->first_seq = cfg->start_seq;
    o->batch_readings = cfg->batch;
    o->frame_bytes_max = SL_BATCH_BYTES(cfg->batch);
    o->window = run->window;
    o->flags = SL_CLIENT_NONBLOCK | (cfg->ack ? 0 : SL_CLIENT_NO_ACK) | (cfg->gso ? 0 : SL_CLIENT_NO_GSO);
    o->socket_buffer_bytes = cfg->transport == LOAD_UDP ? 4u << 20 : 0;
    o->on_ack = on_ack;
    o->context = (void *)run;
}

static uint64_t progress_mark(const struct sl_client_counts *n)
{
    return n->sent + n->acked + n->duplicate + n->overloaded + n->resent;
}

/* Stop a stream for good: its readings are no longer generated. */
static void conn_fail(struct load_run *run, struct load_conn *c)
{
    run->failed = true;
    c->live = false;
    if (c->stream->readings_left > 0) {
        c->stream->readings_left = 0;
        SL_ASSERT(run->streams_left > 0);
        run->streams_left--;
    }
}

static void report_client_error(struct load_conn *c, int rc)
{
    struct sl_client_counts n;
    sl_client_counts(c->client, &n);
    if (rc == SL_CLIENT_EREFUSED) {
        log_error("stream %" PRIu32 ": gateway answered %s for batch_seq %" PRIu64
                  "; it closes the connection",
                  c->stream->stream_id,
                  n.refused_status < SL_STATUS_COUNT ? sl_status_name((enum sl_status)n.refused_status)
                                                     : "an unknown status",
                  n.refused_seq);
        return;
    }
    log_error("stream %" PRIu32 ": %s", c->stream->stream_id, sl_client_strerror(rc));
}

/* A stream whose client made no progress for --retry-for while it had work fails. */
static void check_progress(struct load_run *run, struct load_conn *c, int64_t now)
{
    if (now - c->checked_ns < LOAD_PROGRESS_CHECK_NS) {
        return;
    }
    c->checked_ns = now;
    struct sl_client_counts n;
    sl_client_counts(c->client, &n);
    uint64_t mark = progress_mark(&n);
    if (mark != c->progress_mark || (n.pending == 0 && n.buffered == 0)) {
        c->progress_mark = mark;
        c->progress_ns = now;
        return;
    }
    if ((double)(now - c->progress_ns) / 1e9 >= run->cfg.retry_for_s) {
        int why = sl_client_last_error(c->client);
        log_error("stream %" PRIu32 ": no progress for %.0f s with %" PRIu64
                  " batches unacknowledged (%s)",
                  c->stream->stream_id, run->cfg.retry_for_s, n.pending,
                  why != 0 ? sl_client_strerror(why) : "no answer");
        conn_fail(run, c);
    }
}

/*
 * Generate batches into the stream's client while it can cut them without
 * waiting and the pacer allows. *wait_ns gets the pacer's wait when it said no.
 */
static void conn_fill(struct load_run *run, struct load_conn *c, int64_t now, int64_t *wait_ns,
                      uint32_t batches_max)
{
    struct load_stream *s = c->stream;
    for (uint32_t b = 0; b < batches_max && s->readings_left > 0 && c->live; b++) {
        uint64_t want = s->readings_left < run->cfg.batch ? s->readings_left : run->cfg.batch;
        if (sl_client_room(c->client) < want) {
            return;
        }
        int64_t pace_ns = pacer_wait_ns(&run->pacer, want, now);
        if (pace_ns > 0) {
            *wait_ns = pace_ns < *wait_ns ? pace_ns : *wait_ns;
            return;
        }
        uint32_t count = run_gen(run, s);
        if (count == 0) {
            return;
        }
        run->batches_generated++;
        pacer_charge(&run->pacer, count);
        const struct load_scratch *out = &run->scratch;
        int64_t taken = sl_client_append_array(c->client, out->ids, out->values, out->times, count);
        int rc = taken == (int64_t)count ? 0 : (taken < 0 ? (int)taken : -EAGAIN);
        if (rc == 0 && count < run->cfg.batch) {
            rc = sl_client_push(c->client); /* a short batch: cut it as generated */
        }
        if (rc != 0) {
            report_client_error(c, rc);
            conn_fail(run, c);
            return;
        }
        if (run->pacer.on) {
            now = sl_clock_monotonic_ns();
        }
    }
}

static int open_clients(struct load_run *run)
{
    for (uint32_t i = 0; i < run->cfg.streams; i++) {
        struct sl_client_options o;
        client_options(run, i, &o);
        struct load_conn *c = &run->conns[i];
        c->stream = &run->streams[i];
        int rc = sl_client_open(&c->client, run->cfg.target, &o);
        if (rc < 0) {
            log_error("stream %" PRIu32 ": %s: %s", c->stream->stream_id, run->cfg.target,
                      sl_client_strerror(rc));
            return -1;
        }
        c->live = true;
    }
    return 0;
}

/* ---------------------------------------------------------------- UDP */

static int udp_run(struct load_run *run)
{
    run_start(run);
    for (uint32_t i = 0; i < run->cfg.streams; i++) {
        run->conns[i].progress_ns = run->started_ns;
    }
    uint32_t rr = 0;
    while (run->streams_left > 0) {
        int64_t now = sl_clock_monotonic_ns();
        int64_t wait_ns = INT64_MAX;
        run_tick(run, now);
        uint64_t generated = run->batches_generated;
        /* One batch from each stream in turn, so the streams' datagrams interleave. */
        for (uint32_t turn = 0; turn < run->cfg.streams; turn++) {
            struct load_conn *c = &run->conns[rr];
            rr = rr + 1 == run->cfg.streams ? 0 : rr + 1;
            if (c->live && c->stream->readings_left > 0) {
                (void)sl_client_service(c->client, sl_client_events(c->client));
                conn_fill(run, c, now, &wait_ns, 1);
                check_progress(run, c, now);
            }
        }
        if (run->batches_generated == generated) {
            /* Paced, or every round waits for the socket: send partial rounds, then pause. */
            for (uint32_t i = 0; i < run->cfg.streams; i++) {
                if (run->conns[i].live) {
                    (void)sl_client_push(run->conns[i].client);
                }
            }
            sleep_ns(wait_ns != INT64_MAX ? wait_ns : LOAD_UDP_PAUSE_NS);
        }
    }
    for (uint32_t i = 0; i < run->cfg.streams; i++) {
        struct load_conn *c = &run->conns[i];
        int rc = c->live ? sl_client_flush(c->client, LOAD_FLUSH_TIMEOUT_MS) : 0;
        if (rc != 0) {
            report_client_error(c, rc);
            run->failed = true;
        }
    }
    run->finished_ns = sl_clock_monotonic_ns();
    return run->failed ? -1 : 0;
}

/* ---------------------------------------------------------------- TCP */

/* Put the client's current socket in the epoll set when a (re)connect opened a new one. */
static int conn_register(struct load_run *run, struct load_conn *c, int epoll_fd)
{
    struct sl_client_counts n;
    sl_client_counts(c->client, &n);
    int fd = sl_client_fd(c->client);
    if (fd < 0 || n.sockets == c->sockets) {
        return 0;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0 &&
        (errno != EEXIST || epoll_ctl(epoll_fd, EPOLL_CTL_MOD, fd, &ev) != 0)) {
        log_error("epoll_ctl: %s", strerror(errno));
        run->failed = true;
        return -1;
    }
    c->sockets = n.sockets;
    return 0;
}

/* Every batch of a stream answered: done (acked), or half-close and wait for EOF (no acks). */
static void conn_check_done(struct load_run *run, struct load_conn *c)
{
    struct sl_client_counts n;
    sl_client_counts(c->client, &n);
    if (c->stream->readings_left > 0 || n.pending > 0 || n.buffered > 0) {
        return;
    }
    c->live = false;
    if (!run->cfg.ack) {
        int rc = sl_client_finish(c->client, LOAD_DRAIN_TIMEOUT_MS);
        if (rc == -ETIMEDOUT) {
            log_error("stream %" PRIu32 ": no EOF from the gateway after the last frame",
                      c->stream->stream_id);
        } else if (rc != 0) {
            report_client_error(c, rc);
            run->failed = true;
        }
    }
}

/* One turn for one stream. */
static void conn_turn(struct load_run *run, struct load_conn *c, int epoll_fd, int64_t now,
                      int64_t *wait_ns)
{
    int rc = sl_client_service(c->client, c->revents);
    c->revents = 0;
    if (rc != 0) {
        report_client_error(c, rc);
        conn_fail(run, c);
        return;
    }
    conn_fill(run, c, now, wait_ns, UINT32_MAX);
    if (c->live) {
        rc = sl_client_service(c->client, 0); /* the frames just cut, in one sendmsg */
        if (rc != 0) {
            report_client_error(c, rc);
            conn_fail(run, c);
        }
    }
    if (!c->live || conn_register(run, c, epoll_fd) != 0) {
        return;
    }
    check_progress(run, c, now);
    if (c->live) {
        conn_check_done(run, c);
    }
    int timer_ms = c->live ? sl_client_timeout_ms(c->client) : -1;
    if (timer_ms >= 0 && (int64_t)timer_ms * 1000000 < *wait_ns) {
        *wait_ns = (int64_t)timer_ms * 1000000;
    }
}

static void tcp_wait(struct load_run *run, int epoll_fd, int64_t wait_ns)
{
    struct epoll_event events[LOAD_EVENTS_MAX];
    int64_t capped_ns = wait_ns < LOAD_PROGRESS_NS ? wait_ns : LOAD_PROGRESS_NS;
    int timeout_ms = (int)((capped_ns + 999999) / 1000000);
    int n = epoll_wait(epoll_fd, events, LOAD_EVENTS_MAX, timeout_ms);
    if (n < 0 && errno != EINTR) {
        log_error("epoll_wait: %s", strerror(errno));
        run->failed = true;
    }
    for (int i = 0; i < n; i++) {
        struct load_conn *c = events[i].data.ptr;
        uint32_t e = events[i].events;
        c->revents |= (short)(((e & (EPOLLIN | EPOLLRDHUP)) ? POLLIN : 0) | ((e & EPOLLOUT) ? POLLOUT : 0) |
                              ((e & EPOLLERR) ? POLLERR : 0) | ((e & EPOLLHUP) ? POLLHUP : 0));
    }
}

static int tcp_run(struct load_run *run)
{
    int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd < 0) {
        log_error("epoll_create1: %s", strerror(errno));
        return -1;
    }
    run_start(run);
    for (uint32_t i = 0; i < run->cfg.streams; i++) {
        run->conns[i].progress_ns = run->started_ns;
        (void)conn_register(run, &run->conns[i], epoll_fd);
    }
    uint32_t live = run->cfg.streams;
    while (live > 0) {
        int64_t now = sl_clock_monotonic_ns();
        int64_t wait_ns = INT64_MAX;
        run_tick(run, now);
        live = 0;
        for (uint32_t i = 0; i < run->cfg.streams; i++) {
            struct load_conn *c = &run->conns[i];
            if (c->live) {
                conn_turn(run, c, epoll_fd, now, &wait_ns);
                live += c->live;
            }
        }
        if (live > 0) {
            tcp_wait(run, epoll_fd, wait_ns);
        }
    }
    run->finished_ns = sl_clock_monotonic_ns();
    close(epoll_fd);
    return run->failed ? -1 : 0;
}

/* ---------------------------------------------------------------- output */

static void print_json_string(const char *text)
{
    putchar('"');
    for (const char *p = text; *p != '\0'; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '"' || ch == '\\') {
            printf("\\%c", ch);
        } else if (ch < 0x20) {
            printf("\\u%04x", ch);
        } else {
            putchar(ch);
        }
    }
    putchar('"');
}

/* The clients' counts, summed over the streams. */
static struct sl_client_counts sum_counts(const struct load_run *run)
{
    struct sl_client_counts sum = {0};
    for (uint32_t i = 0; i < run->cfg.streams; i++) {
        struct sl_client_counts n;
        if (run->conns[i].client == NULL) {
            continue;
        }
        sl_client_counts(run->conns[i].client, &n);
        sum.sent += n.sent;
        sum.sent_readings += n.sent_readings;
        sum.acked += n.acked;
        sum.duplicate += n.duplicate;
        sum.accepted += n.accepted;
        sum.rejected += n.rejected;
        sum.overloaded += n.overloaded;
        sum.resent += n.resent;
        sum.reconnects += n.reconnects;
        sum.refused += n.refused;
        sum.udp_errors += n.udp_errors;
    }
    return sum;
}

static void print_report(const struct load_run *run)
{
    struct sl_client_counts n = sum_counts(run);
    double elapsed_s = (double)(run->finished_ns - run->started_ns) / 1e9;
    double rate = elapsed_s > 0 ? (double)n.sent_readings / elapsed_s : 0.0;
    fputs("{\"target\":", stdout);
    print_json_string(run->cfg.target);
    printf(",\"transport\":\"%s\",\"streams\":%" PRIu32 ",\"sensors\":%" PRIu32
           ",\"batch\":%" PRIu32,
           run->cfg.transport == LOAD_UDP ? "udp" : "tcp", run->cfg.streams, run->cfg.sensors,
           run->cfg.batch);
    printf(",\"sent_readings\":%" PRIu64 ",\"sent_batches\":%" PRIu64 ",\"acked_batches\":%" PRIu64
           ",\"accepted\":%" PRIu64 ",\"rejected\":%" PRIu64 ",\"duplicate_batches\":%" PRIu64
           ",\"overloaded_batches\":%" PRIu64 ",\"error_batches\":%" PRIu64
           ",\"resent_batches\":%" PRIu64 ",\"reconnects\":%" PRIu64
           ",\"injected_nan\":%" PRIu64 ",\"injected_ooo\":%" PRIu64,
           n.sent_readings, n.sent, n.acked + n.duplicate, n.accepted, n.rejected, n.duplicate,
           n.overloaded, n.refused + n.udp_errors, n.resent, n.reconnects, run->counts.injected_nan,
           run->counts.injected_ooo);
    printf(",\"elapsed_s\":%.6f,\"rate_readings_per_s\":%.1f,\"latency_us\":", elapsed_s, rate);
    const struct load_hist *h = run->hist;
    if (run->cfg.transport == LOAD_TCP && run->cfg.ack && h->total > 0) {
        printf("{\"p50\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f}",
               (double)hist_percentile(h, 0.50) / 1e3, (double)hist_percentile(h, 0.99) / 1e3,
               (double)hist_percentile(h, 0.999) / 1e3, (double)h->max / 1e3);
    } else {
        fputs("null", stdout);
    }
    fputs("}\n", stdout);
    fflush(stdout);
}

static void print_help(void)
{
    fputs("Usage: sluice-load --target udp://HOST:PORT|tcp://HOST:PORT [options]\n"
          "Send synthetic readings to a Sluice gateway; print one JSON report on stdout.\n"
          "\n"
          "  --target URL          udp://HOST:PORT or tcp://HOST:PORT (required)\n"
          "  --streams N           streams, each with its own stream_id and TCP connection [1]\n"
          "  --stream-id-base N    stream_id of the first stream [1]\n"
          "  --sensors N           sensors in total, split evenly across streams [1000]\n"
          "  --sensor-id-base N    first sensor id [1]\n"
          "  --batch N             readings per batch, max 5455 (UDP) / 65535 (TCP) [100]\n"
          "  --rate R              readings/s across all streams, 0 = unpaced [0]\n"
          "  --duration S          stop after S seconds (float)\n"
          "  --readings N          stop after exactly N readings [1000000 if neither is given]\n"
          "  --pattern P           constant | sine | walk | drift [sine]; drift: per-sensor\n"
          "                        base 15..25, a 6 h sine of event time, a slow random\n"
          "                        walk and noise (realistic values for soak runs)\n"
          "  --seed N              seed for walk and drift values and injected rejects [1]\n"
          "  --start-time-us T     event time of each sensor's first reading: microseconds\n"
          "                        since the epoch, or relative to now: -24h, -90m, -3600s [now]\n"
          "  --interval-us D       event-time step between a sensor's readings [1000000]\n"
          "  --window N            TCP: batches in flight per connection [256]\n"
          "  --no-ack              TCP: do not request acks\n"
          "  --no-gso              UDP: one datagram per message (no UDP_SEGMENT batching;\n"
          "                        receivers see the same datagrams either way)\n"
          "  --nan-rate P          fraction of readings sent as NaN [0]\n"
          "  --ooo-rate P          fraction sent one interval before the sensor's last good\n"
          "                        reading [0]; over TCP to a fresh gateway the report's\n"
          "                        injected_nan and injected_ooo equal its nonfinite and\n"
          "                        out_of_order rejects exactly\n"
          "  --start-seq N         first batch_seq of each stream [1]\n"
          "  --retry-for S         a stream that makes no progress (nothing written, no ack)\n"
          "                        for S seconds fails the run [15]; until then a lost\n"
          "                        connection or OVERLOADED is retried (libsluice)\n"
          "  --quiet               no progress on stderr\n"
          "  --help, --version\n"
          "\n"
          "Exit status: 0 success, 1 runtime failure (the report is still printed), 2 bad usage.\n"
          "Memory is taken at start (TCP: streams x (window + 1) x frame bytes), at most 1 GiB.\n",
          stdout);
}

/* ---------------------------------------------------------------- arguments */

enum load_option {
    OPT_TARGET = 256,
    OPT_STREAMS,
    OPT_STREAM_ID_BASE,
    OPT_SENSORS,
    OPT_SENSOR_ID_BASE,
    OPT_BATCH,
    OPT_RATE,
    OPT_DURATION,
    OPT_READINGS,
    OPT_PATTERN,
    OPT_SEED,
    OPT_START_TIME,
    OPT_INTERVAL,
    OPT_WINDOW,
    OPT_NO_ACK,
    OPT_NO_GSO,
    OPT_NAN_RATE,
    OPT_OOO_RATE,
    OPT_START_SEQ,
    OPT_RETRY_FOR,
    OPT_QUIET,
    OPT_HELP,
    OPT_VERSION,
};

static const struct option load_options[] = {
    {"target", required_argument, NULL, OPT_TARGET},
    {"streams", required_argument, NULL, OPT_STREAMS},
    {"stream-id-base", required_argument, NULL, OPT_STREAM_ID_BASE},
    {"sensors", required_argument, NULL, OPT_SENSORS},
    {"sensor-id-base", required_argument, NULL, OPT_SENSOR_ID_BASE},
    {"batch", required_argument, NULL, OPT_BATCH},
    {"rate", required_argument, NULL, OPT_RATE},
    {"duration", required_argument, NULL, OPT_DURATION},
    {"readings", required_argument, NULL, OPT_READINGS},
    {"pattern", required_argument, NULL, OPT_PATTERN},
    {"seed", required_argument, NULL, OPT_SEED},
    {"start-time-us", required_argument, NULL, OPT_START_TIME},
    {"interval-us", required_argument, NULL, OPT_INTERVAL},
    {"window", required_argument, NULL, OPT_WINDOW},
    {"no-ack", no_argument, NULL, OPT_NO_ACK},
    {"no-gso", no_argument, NULL, OPT_NO_GSO},
    {"nan-rate", required_argument, NULL, OPT_NAN_RATE},
    {"ooo-rate", required_argument, NULL, OPT_OOO_RATE},
    {"start-seq", required_argument, NULL, OPT_START_SEQ},
    {"retry-for", required_argument, NULL, OPT_RETRY_FOR},
    {"quiet", no_argument, NULL, OPT_QUIET},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

static bool text_to_double(const char *text, double *out)
{
    char *end = NULL;
    if (text == NULL || *text == '\0') {
        return false;
    }
    errno = 0;
    double value = strtod(text, &end);
    if (errno != 0 || *end != '\0' || !isfinite(value)) {
        return false;
    }
    *out = value;
    return true;
}

/* A whole number, plain ("1000000") or in exponent form ("1e6"). */
static bool text_to_u64(const char *text, uint64_t *out)
{
    char *end = NULL;
    if (text == NULL || *text < '0' || *text > '9') {
        return false;
    }
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno == 0 && *end == '\0') {
        *out = value;
        return true;
    }
    double real;
    if (!text_to_double(text, &real) || real < 0 || real >= 18446744073709551616.0 ||
        real != floor(real)) {
        return false;
    }
    *out = (uint64_t)real;
    return true;
}

static int opt_u64(const char *name, const char *text, uint64_t min, uint64_t max, uint64_t *out)
{
    uint64_t value;
    if (!text_to_u64(text, &value)) {
        return usage_error("--%s: '%s' is not a whole number", name, text);
    }
    if (value < min || value > max) {
        return usage_error("--%s %s: must be between %" PRIu64 " and %" PRIu64, name, text, min,
                           max);
    }
    *out = value;
    return 0;
}

static int opt_u32(const char *name, const char *text, uint32_t min, uint32_t max, uint32_t *out)
{
    uint64_t value;
    int rc = opt_u64(name, text, min, max, &value);
    *out = (uint32_t)value;
    return rc;
}

static int opt_double(const char *name, const char *text, double min, double max, double *out)
{
    double value;
    if (!text_to_double(text, &value)) {
        return usage_error("--%s: '%s' is not a number", name, text);
    }
    if (value < min || value > max) {
        return usage_error("--%s %s: must be between %g and %g", name, text, min, max);
    }
    *out = value;
    return 0;
}

/* udp://HOST:PORT or tcp://HOST:PORT; HOST may be [IPv6]. Checked by libsluice, resolved at open. */
static int parse_target(const char *text, struct load_config *cfg)
{
    struct sl_client_options o;
    sl_client_options_init(&o);
    if (sl_client_memory(text, &o) < 0) {
        return usage_error("--target '%s': expected udp://HOST:PORT or tcp://HOST:PORT "
                           "(HOST a name, an IPv4 address or [IPv6], PORT 1..65535)",
                           text);
    }
    cfg->transport = strncmp(text, "udp://", 6) == 0 ? LOAD_UDP : LOAD_TCP;
    cfg->target = text;
    return 0;
}

static int parse_pattern(const char *text, struct load_config *cfg)
{
    if (strcmp(text, "constant") == 0) {
        cfg->pattern = LOAD_PATTERN_CONSTANT;
    } else if (strcmp(text, "sine") == 0) {
        cfg->pattern = LOAD_PATTERN_SINE;
    } else if (strcmp(text, "walk") == 0) {
        cfg->pattern = LOAD_PATTERN_WALK;
    } else if (strcmp(text, "drift") == 0) {
        cfg->pattern = LOAD_PATTERN_DRIFT;
    } else {
        return usage_error("--pattern '%s': expected constant, sine, walk or drift", text);
    }
    return 0;
}

/*
 * --start-time-us: "now", an absolute count of microseconds since the epoch,
 * or an offset from now with a unit: [+-]N(us|ms|s|m|h|d), e.g. "-24h".
 */
static int resolve_start_time(const char *text, int64_t now_us, int64_t *out)
{
    static const struct {
        const char *suffix;
        double us;
    } units[] = {{"us", 1}, {"ms", 1e3}, {"s", 1e6}, {"m", 60e6}, {"h", 3600e6}, {"d", 86400e6}};
    uint64_t absolute;
    if (text == NULL || strcmp(text, "now") == 0) {
        *out = now_us;
        return 0;
    }
    if (text_to_u64(text, &absolute) && absolute <= (uint64_t)LOAD_START_MAX_US) {
        *out = (int64_t)absolute;
        return 0;
    }
    size_t len = strlen(text);
    for (size_t i = 0; i < SL_ARRAY_COUNT(units); i++) {
        size_t suffix_len = strlen(units[i].suffix);
        char number[64];
        if (len <= suffix_len || len - suffix_len >= sizeof number ||
            strcmp(text + len - suffix_len, units[i].suffix) != 0) {
            continue;
        }
        memcpy(number, text, len - suffix_len);
        number[len - suffix_len] = '\0';
        double amount;
        if (!text_to_double(number, &amount) || (number[0] != '-' && number[0] != '+')) {
            continue;
        }
        double t = (double)now_us + amount * units[i].us;
        if (t < 0 || t > (double)LOAD_START_MAX_US) {
            break;
        }
        *out = (int64_t)t;
        return 0;
    }
    return usage_error("--start-time-us '%s': expected microseconds since the epoch, \"now\", "
                       "or a signed offset such as -24h, -90m, -3600s, +5m",
                       text);
}

static int parse_option_numbers(int opt, const char *arg, struct load_config *cfg)
{
    switch (opt) {
    case OPT_STREAMS:
        return opt_u32("streams", arg, 1, LOAD_STREAMS_MAX, &cfg->streams);
    case OPT_STREAM_ID_BASE:
        return opt_u32("stream-id-base", arg, 0, UINT32_MAX, &cfg->stream_id_base);
    case OPT_SENSORS:
        return opt_u32("sensors", arg, 1, UINT32_MAX, &cfg->sensors);
    case OPT_SENSOR_ID_BASE:
        return opt_u32("sensor-id-base", arg, 0, UINT32_MAX, &cfg->sensor_id_base);
    case OPT_BATCH:
        return opt_u32("batch", arg, 1, UINT32_MAX, &cfg->batch);
    case OPT_RATE:
        return opt_double("rate", arg, 0, 1e12, &cfg->rate_per_s);
    case OPT_DURATION:
        return opt_double("duration", arg, 1e-6, 1e9, &cfg->duration_s);
    case OPT_READINGS:
        cfg->readings_set = true;
        return opt_u64("readings", arg, 1, LOAD_READINGS_MAX, &cfg->readings);
    case OPT_SEED:
        return opt_u64("seed", arg, 0, UINT64_MAX, &cfg->seed);
    case OPT_INTERVAL:
        return opt_u64("interval-us", arg, 0, LOAD_INTERVAL_MAX_US, &cfg->interval_us);
    case OPT_WINDOW:
        return opt_u32("window", arg, 1, LOAD_WINDOW_MAX, &cfg->window);
    case OPT_NAN_RATE:
        return opt_double("nan-rate", arg, 0, 1, &cfg->nan_rate);
    case OPT_OOO_RATE:
        return opt_double("ooo-rate", arg, 0, 1, &cfg->ooo_rate);
    case OPT_START_SEQ:
        return opt_u64("start-seq", arg, 1, UINT64_MAX >> 1, &cfg->start_seq);
    case OPT_RETRY_FOR:
        return opt_double("retry-for", arg, 0.001, 86400, &cfg->retry_for_s);
    default:
        return usage_error("internal: unhandled option %d", opt);
    }
}

/* Returns 0 to go on, 1 when --help/--version was answered, -1 on bad usage. */
static int parse_option(int opt, const char *arg, struct load_config *cfg)
{
    switch (opt) {
    case OPT_TARGET:
        return parse_target(arg, cfg);
    case OPT_PATTERN:
        return parse_pattern(arg, cfg);
    case OPT_START_TIME:
        cfg->start_time_text = arg;
        return 0;
    case OPT_NO_ACK:
        cfg->ack = false;
        return 0;
    case OPT_NO_GSO:
        cfg->gso = false;
        return 0;
    case OPT_QUIET:
        cfg->quiet = true;
        return 0;
    case OPT_HELP:
        print_help();
        return 1;
    case OPT_VERSION:
        printf("sluice-load %s\n", SL_VERSION);
        return 1;
    default:
        return parse_option_numbers(opt, arg, cfg);
    }
}

/* Warn when the last readings would be stamped beyond the gateway's default skew. */
static void check_future(const struct load_config *cfg, double last_time_us, int64_t now_us)
{
    if (!cfg->quiet && last_time_us > (double)(now_us + LOAD_FUTURE_SKEW_US)) {
        fprintf(stderr,
                "sluice-load: warning: readings will be stamped up to %.0f s ahead of now; a "
                "gateway rejects readings more than %lld s in the future (see --start-time-us)\n",
                (last_time_us - (double)now_us) / 1e6, LOAD_FUTURE_SKEW_US / 1000000);
    }
}

static int validate_config(struct load_config *cfg)
{
    if (cfg->target == NULL) {
        return usage_error("--target is required (udp://HOST:PORT or tcp://HOST:PORT)");
    }
    bool udp = cfg->transport == LOAD_UDP;
    uint32_t batch_max = udp ? SL_UDP_COUNT_MAX : SL_BATCH_COUNT_MAX;
    if (cfg->batch > batch_max) {
        return usage_error("--batch %" PRIu32 " exceeds the %s maximum of %" PRIu32
                           " readings per frame",
                           cfg->batch, udp ? "UDP" : "TCP", batch_max);
    }
    if (cfg->sensors < cfg->streams) {
        return usage_error("--sensors %" PRIu32 " is fewer than --streams %" PRIu32
                           ": every stream needs a sensor",
                           cfg->sensors, cfg->streams);
    }
    if ((uint64_t)cfg->sensor_id_base + cfg->sensors - 1 > UINT32_MAX ||
        (uint64_t)cfg->stream_id_base + cfg->streams - 1 > UINT32_MAX) {
        return usage_error("sensor or stream ids would exceed 2^32-1: lower the id base");
    }
    if (cfg->ooo_rate > 0 && cfg->interval_us == 0) {
        return usage_error("--ooo-rate needs --interval-us > 0 (an equal time is not rejected)");
    }
    if (!cfg->readings_set) {
        cfg->readings = cfg->duration_s > 0 ? UINT64_MAX : LOAD_READINGS_DEFAULT;
    }
    int64_t now_us = sl_clock_realtime_us();
    if (resolve_start_time(cfg->start_time_text, now_us, &cfg->start_time_us) != 0) {
        return -1;
    }
    if (cfg->readings != UINT64_MAX) {
        double per_sensor = ceil(ceil((double)cfg->readings / cfg->streams) /
                                 floor((double)cfg->sensors / cfg->streams));
        double last_us = (double)cfg->start_time_us + (per_sensor - 1) * (double)cfg->interval_us;
        if (last_us > (double)(INT64_MAX / 4)) {
            return usage_error("event times would overflow: lower --readings or --interval-us");
        }
        check_future(cfg, last_us, now_us);
    }
    return 0;
}

static void config_defaults(struct load_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->streams = 1;
    cfg->sensors = 1000;
    cfg->batch = 100;
    cfg->window = 256;
    cfg->stream_id_base = 1;
    cfg->sensor_id_base = 1;
    cfg->pattern = LOAD_PATTERN_SINE;
    cfg->seed = 1;
    cfg->interval_us = 1000000;
    cfg->start_seq = 1;
    cfg->retry_for_s = LOAD_RETRY_FOR_DEFAULT_S;
    cfg->ack = true;
    cfg->gso = true;
}

/* Returns 0 to run, 1 when --help/--version was answered, -1 on bad usage. */
static int parse_args(int argc, char **argv, struct load_config *cfg)
{
    config_defaults(cfg);
    int opt;
    while ((opt = getopt_long(argc, argv, "", load_options, NULL)) != -1) {
        if (opt == '?' || opt == ':') {
            fputs("Try 'sluice-load --help'.\n", stderr);
            return -1;
        }
        int rc = parse_option(opt, optarg, cfg);
        if (rc != 0) {
            return rc;
        }
    }
    if (optind < argc) {
        return usage_error("unexpected argument '%s'", argv[optind]);
    }
    return validate_config(cfg);
}

/* ---------------------------------------------------------------- set-up */

static void *arena_take(struct load_arena *arena, size_t bytes)
{
    size_t start = (arena->used + LOAD_ALIGN - 1) & ~(size_t)(LOAD_ALIGN - 1);
    arena->used = start + bytes;
    return arena->base == NULL ? NULL : arena->base + start;
}

/* Carve every buffer of the run; with a measuring arena this is the memory plan. */
static void run_carve(struct load_run *run, struct load_arena *arena)
{
    const struct load_config *cfg = &run->cfg;
    run->hist = arena_take(arena, sizeof *run->hist);
    run->streams = arena_take(arena, sizeof *run->streams * cfg->streams);
    float *walk = NULL;
    struct load_drift *drift = NULL;
    int64_t *last_good = NULL;
    if (cfg->pattern == LOAD_PATTERN_WALK) {
        walk = arena_take(arena, sizeof *walk * cfg->sensors);
    }
    if (cfg->pattern == LOAD_PATTERN_DRIFT) {
        drift = arena_take(arena, sizeof *drift * cfg->sensors);
    }
    if (cfg->ooo_rate > 0) {
        last_good = arena_take(arena, sizeof *last_good * cfg->sensors);
    }
    for (uint32_t i = 0, first = 0; arena->base != NULL && i < cfg->streams; i++) {
        uint32_t count = cfg->sensors / cfg->streams + (i < cfg->sensors % cfg->streams);
        run->streams[i].walk_value = walk == NULL ? NULL : walk + first;
        run->streams[i].drift = drift == NULL ? NULL : drift + first;
        run->streams[i].last_good_us = last_good == NULL ? NULL : last_good + first;
        run->streams[i].sensor_count = count;
        run->streams[i].sensor_id_first = cfg->sensor_id_base + first;
        first += count;
    }
    run->scratch.ids = arena_take(arena, sizeof *run->scratch.ids * cfg->batch);
    run->scratch.times = arena_take(arena, sizeof *run->scratch.times * cfg->batch);
    run->scratch.values = arena_take(arena, sizeof *run->scratch.values * cfg->batch);
    run->conns = arena_take(arena, sizeof *run->conns * cfg->streams);
}

/* A sensor's drift parameters depend only on the seed and its id, not on the stream split. */
static void drift_init(struct load_drift *d, uint64_t seed, uint32_t sensor_id)
{
    uint64_t state = seed ^ ((uint64_t)sensor_id * 0x9E3779B97F4A7C15ull);
    double base = LOAD_DRIFT_BASE_MIN + LOAD_DRIFT_BASE_SPAN * unit_draw_from(&state);
    double amplitude =
        LOAD_DRIFT_AMPLITUDE_MIN + LOAD_DRIFT_AMPLITUDE_SPAN * unit_draw_from(&state);
    double phase = 2.0 * M_PI * unit_draw_from(&state);
    d->base = (float)base;
    d->amp_cos = (float)(amplitude * cos(phase));
    d->amp_sin = (float)(amplitude * sin(phase));
    d->walk = 0.0f;
}

static void stream_init(struct load_stream *s, const struct load_config *cfg, uint32_t index)
{
    uint64_t seed_state = cfg->seed ^ ((uint64_t)index * 0xD1B54A32D192ED03ull);
    s->stream_id = cfg->stream_id_base + index;
    s->readings_left = cfg->readings == UINT64_MAX
                           ? UINT64_MAX
                           : cfg->readings / cfg->streams + (index < cfg->readings % cfg->streams);
    s->rng_walk = splitmix64(&seed_state) | 1;
    s->rng_inject = splitmix64(&seed_state) | 1;
    for (uint32_t i = 0; s->walk_value != NULL && i < s->sensor_count; i++) {
        s->walk_value[i] = 20.0f;
    }
    s->drift_k = UINT64_MAX;
    for (uint32_t i = 0; s->drift != NULL && i < s->sensor_count; i++) {
        drift_init(&s->drift[i], cfg->seed, s->sensor_id_first + i);
    }
    for (uint32_t i = 0; s->last_good_us != NULL && i < s->sensor_count; i++) {
        s->last_good_us[i] = INT64_MIN;
    }
}

static void gen_init(struct load_gen *gen, const struct load_config *cfg)
{
    gen->pattern = cfg->pattern;
    gen->start_us = cfg->start_time_us;
    gen->interval_us = (int64_t)cfg->interval_us;
    uint64_t step = cfg->interval_us > 0 ? cfg->interval_us : 1;
    gen->k_limit = (uint64_t)(INT64_MAX / 4 - cfg->start_time_us) / step;
    gen->nan_rate = cfg->nan_rate;
    gen->ooo_rate = cfg->ooo_rate;
    gen->inject = cfg->nan_rate > 0 || cfg->ooo_rate > 0;
    for (uint32_t i = 0; i < SL_ARRAY_COUNT(gen->sine); i++) {
        gen->sine[i] = (float)(20.0 + 5.0 * sin(2.0 * M_PI * (double)i / LOAD_SINE_PERIOD));
    }
}

/* Take the whole plan in one block, touch it, and initialise. 0, or -1 when refused. */
static int run_setup(struct load_run *run)
{
    const struct load_config *cfg = &run->cfg;
    struct load_arena measure = {0};
    run->window = cfg->window;
    if (cfg->transport == LOAD_UDP) {
        /* About LOAD_UDP_ROUND_BYTES of frames a round, over all streams. */
        uint32_t frames = LOAD_UDP_ROUND_BYTES / SL_BATCH_BYTES(cfg->batch);
        frames = frames < LOAD_UDP_SLOTS_MIN ? LOAD_UDP_SLOTS_MIN : frames;
        frames = frames > LOAD_UDP_SLOTS_MAX ? LOAD_UDP_SLOTS_MAX : frames;
        run->window = frames / cfg->streams > 0 ? frames / cfg->streams : 1;
    }
    struct sl_client_options o;
    client_options(run, 0, &o);
    int64_t client_bytes = sl_client_memory(cfg->target, &o);
    if (client_bytes < 0) {
        return usage_error("%s", sl_client_strerror((int)client_bytes));
    }
    run->client_bytes = (size_t)client_bytes * cfg->streams;
    run_carve(run, &measure);
    size_t total = measure.used + run->client_bytes;
    if (total > LOAD_MEMORY_MAX) {
        return usage_error("the memory plan needs %zu bytes, more than the %llu limit: lower "
                           "--window, --batch or --streams",
                           total, LOAD_MEMORY_MAX);
    }
    uint8_t *block = aligned_alloc(LOAD_ALIGN, (measure.used + LOAD_ALIGN - 1) & ~(LOAD_ALIGN - 1));
    if (block == NULL) {
        return usage_error("cannot allocate %zu bytes", measure.used);
    }
    memset(block, 0, measure.used); /* fault the pages in now, not on the send path */
    run->memory = block;
    struct load_arena arena = {.base = block};
    run_carve(run, &arena);
    SL_ASSERT(arena.used == measure.used);
    gen_init(&run->gen, cfg);
    for (uint32_t i = 0; i < cfg->streams; i++) {
        stream_init(&run->streams[i], cfg, i);
        run->streams_left += run->streams[i].readings_left > 0;
    }
    if (open_clients(run) != 0) {
        return -1;
    }
    if (!cfg->quiet) {
        fprintf(stderr,
                "sluice-load: %s, %" PRIu32 " streams, batch %" PRIu32 ", memory %zu bytes\n",
                cfg->target, cfg->streams, cfg->batch, total);
    }
    return 0;
}

int main(int argc, char **argv)
{
    tool_name = "sluice-load";
    static struct load_run run;
    int rc = parse_args(argc, argv, &run.cfg);
    if (rc != 0) {
        return rc > 0 ? 0 : 2;
    }
    if (run_setup(&run) != 0) {
        return 2;
    }
    struct sigaction sa = {.sa_handler = tool_on_stop_signal};
    sigemptyset(&sa.sa_mask);
    (void)sigaction(SIGINT, &sa, NULL);
    (void)sigaction(SIGTERM, &sa, NULL);
    (void)signal(SIGPIPE, SIG_IGN);
    rc = run.cfg.transport == LOAD_UDP ? udp_run(&run) : tcp_run(&run);
    struct sl_client_counts total = sum_counts(&run);
    if (run.cfg.transport == LOAD_TCP && !run.cfg.ack && total.overloaded > 0) {
        /* Without acks nothing is kept for a resend: those batches are lost. */
        log_error("the gateway answered OVERLOADED to %" PRIu64 " batches sent without acks",
                  total.overloaded);
        run.failed = true;
    }
    print_report(&run);
    for (uint32_t i = 0; i < run.cfg.streams; i++) {
        sl_client_close(run.conns[i].client);
    }
    free(run.memory);
    return rc == 0 && !run.failed ? 0 : 1;
}
