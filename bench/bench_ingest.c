/*
 * bench_ingest: in-process decode + apply throughput of the core, on one
 * core, and the window-query latency on a full ring. A benchmark, never a
 * test: it prints figures and does not judge them.
 *
 *   bench_ingest [--sensors N] [--batch B] [--ring R] [--rounds K] [--runs M]
 *
 * Frames of B readings cover the N sensors in order (N / B frames a round);
 * each round moves every sensor one second forward. Before each round the
 * frames' base time and CRC are patched (untimed: that is the sender's
 * work); the timed part is what the gateway does per frame: CRC check,
 * decode and validation, lookup, append, coarse tier, EWMA. The first
 * round (which creates the sensors) is not timed. Each run also times the
 * baseline, CRC check and decode alone over the same frames. Prints one
 * JSON line per run and a summary with the medians and their ratio.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/crc32c.h"
#include "core/plan.h"
#include "store/store.h"

#define NOW_US 1800000000000000LL

struct args {
    uint32_t sensors, batch, ring, rounds, runs;
};

static uint32_t arg_u32(int argc, char **argv, const char *name, uint32_t def)
{
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], name) == 0) {
            return (uint32_t)strtoul(argv[i + 1], NULL, 10);
        }
    }
    return def;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static uint8_t *build_frames(const struct args *a, uint32_t frames)
{
    size_t frame_bytes = SL_BATCH_BYTES(a->batch);
    uint8_t *buf = malloc(frame_bytes * frames);
    struct sl_reading *r = malloc(sizeof *r * a->batch);
    for (uint32_t f = 0; f < frames; f++) {
        for (uint32_t i = 0; i < a->batch; i++) {
            uint32_t k = f * a->batch + i;
            r[i].sensor_id = k % a->sensors * 2654435761u; /* scattered ids */
            r[i].offset_us = i;
            r[i].value = 20.0f + (float)(k % 100) / 10.0f;
        }
        struct sl_batch_header h = {.count = (uint16_t)a->batch, .stream_id = f % 100, .batch_seq = 1};
        sl_batch_encode(buf + f * frame_bytes, frame_bytes, &h, r);
    }
    free(r);
    return buf;
}

static void patch_round(uint8_t *frames, uint32_t count, uint32_t batch, int64_t base)
{
    size_t frame_bytes = SL_BATCH_BYTES(batch);
    for (uint32_t f = 0; f < count; f++) {
        uint8_t *p = frames + f * frame_bytes;
        sl_store_u64(p + 24, (uint64_t)base);
        sl_store_u32(p + frame_bytes - 4, sl_crc32c(p, frame_bytes - 4));
    }
}

/* One run: returns readings/s of the timed rounds. */
static double run_once(const struct args *a, struct sl_store *store, uint8_t *frames, uint32_t count,
                       int64_t *base)
{
    size_t frame_bytes = SL_BATCH_BYTES(a->batch);
    int64_t timed_ns = 0;
    uint64_t readings = 0, accepted = 0;
    for (uint32_t round = 0; round < a->rounds; round++) {
        *base += 1000000;
        patch_round(frames, count, a->batch, *base);
        int64_t t0 = sl_clock_monotonic_ns();
        for (uint32_t f = 0; f < count; f++) {
            struct sl_batch batch;
            if (sl_batch_decode(frames + f * frame_bytes, frame_bytes, &batch) != 0) {
                abort();
            }
            struct sl_apply_result res;
            sl_store_apply(store, &batch, NOW_US, &res);
            accepted += res.accepted;
        }
        timed_ns += sl_clock_monotonic_ns() - t0;
        readings += (uint64_t)count * a->batch;
    }
    if (accepted != readings) {
        fprintf(stderr, "bench_ingest: %" PRIu64 " of %" PRIu64 " accepted\n", accepted, readings);
        abort();
    }
    return (double)readings / ((double)timed_ns / 1e9);
}

/*
 * The baseline, measured in the same run on the same frames: CRC check and
 * decode of every reading (what any receiver must do), without the store.
 */
static double decode_only_rate(const struct args *a, uint8_t *frames, uint32_t count)
{
    size_t frame_bytes = SL_BATCH_BYTES(a->batch);
    volatile double sink = 0;
    int64_t t0 = sl_clock_monotonic_ns();
    for (uint32_t round = 0; round < a->rounds; round++) {
        double sum = 0;
        for (uint32_t f = 0; f < count; f++) {
            struct sl_batch batch;
            if (sl_batch_decode(frames + f * frame_bytes, frame_bytes, &batch) != 0) {
                abort();
            }
            for (uint32_t i = 0; i < batch.header.count; i++) {
                struct sl_reading r;
                sl_batch_reading(&batch, i, &r);
                sum += r.value + (double)r.sensor_id + r.offset_us;
            }
        }
        sink = sink + sum;
    }
    double secs = (double)(sl_clock_monotonic_ns() - t0) / 1e9;
    return (double)a->rounds * count * a->batch / secs;
}

/* Median microseconds of a snapshot plus every configured window, on full rings. */
static double query_latency_us(struct sl_store *store, const struct args *a)
{
    void *mem = malloc(sl_store_view_bytes(&store->config));
    struct sl_sensor_view view;
    sl_store_view_init(&view, &store->config, mem);
    enum { QUERIES = 2001 };
    static double samples[QUERIES];
    for (uint32_t q = 0; q < QUERIES; q++) {
        uint32_t id = (q * 7919u) % a->sensors * 2654435761u;
        int64_t t0 = sl_clock_monotonic_ns();
        if (sl_store_snapshot(store, id, &view) != 0) {
            abort();
        }
        for (uint32_t w = 0; w < store->config.windows_count; w++) {
            struct sl_window_stats st;
            sl_view_window(&view, store->config.windows_us[w], &st);
        }
        samples[q] = (double)(sl_clock_monotonic_ns() - t0) / 1000.0;
    }
    free(mem);
    qsort(samples, QUERIES, sizeof samples[0], cmp_double);
    return samples[QUERIES / 2];
}

int main(int argc, char **argv)
{
    struct args a = {arg_u32(argc, argv, "--sensors", 10000), arg_u32(argc, argv, "--batch", 100),
                     arg_u32(argc, argv, "--ring", 4096), arg_u32(argc, argv, "--rounds", 0),
                     arg_u32(argc, argv, "--runs", 5)};
    if (a.batch == 0 || a.batch > SL_BATCH_COUNT_MAX || a.sensors % a.batch != 0 || a.runs == 0) {
        fprintf(stderr, "usage: bench_ingest [--sensors N] [--batch B (divides N)] [--ring R] "
                        "[--rounds K] [--runs M]\n");
        return 2;
    }
    if (a.rounds == 0) {
        a.rounds = (uint32_t)(20000000ull / a.sensors) + 1; /* ~20M readings a run */
    }
    struct sl_store_config c;
    sl_store_config_default(&c);
    c.sensors_max = a.sensors;
    c.ring_readings = a.ring;
    struct sl_plan plan;
    sl_plan_init(&plan);
    sl_store_plan(&c, &plan);
    struct sl_arena arena;
    if (sl_arena_map(&arena, plan.total_bytes) != 0) {
        perror("bench_ingest: mmap");
        return 1;
    }
    static struct sl_store store;
    sl_store_init(&store, &c, &arena);
    uint32_t frames_count = a.sensors / a.batch;
    uint8_t *frames = build_frames(&a, frames_count);
    int64_t base = NOW_US - 400LL * 24 * 3600 * 1000000;
    struct args warm = a;
    warm.rounds = 1;
    run_once(&warm, &store, frames, frames_count, &base); /* creates the sensors */
    double rates[64], baseline[64];
    uint32_t runs = a.runs < 64 ? a.runs : 64;
    for (uint32_t r = 0; r < runs; r++) {
        rates[r] = run_once(&a, &store, frames, frames_count, &base);
        baseline[r] = decode_only_rate(&a, frames, frames_count);
        printf("{\"run\":%u,\"readings_per_s\":%.0f,\"decode_only_readings_per_s\":%.0f}\n", r + 1,
               rates[r], baseline[r]);
    }
    qsort(rates, runs, sizeof rates[0], cmp_double);
    qsort(baseline, runs, sizeof baseline[0], cmp_double);
    /* Fill every ring before measuring queries on full rings. */
    while (store.sensors[0].count < a.ring) {
        warm.rounds = 64;
        run_once(&warm, &store, frames, frames_count, &base);
    }
    printf("{\"sensors\":%u,\"batch\":%u,\"ring\":%u,\"median_readings_per_s\":%.0f,"
           "\"median_decode_only_readings_per_s\":%.0f,\"ratio_to_decode_only\":%.3f,"
           "\"ns_per_reading\":%.2f,\"bytes_per_retained_reading\":%.4f,"
           "\"plan_bytes\":%" PRIu64 ",\"query_us_median\":%.2f,\"crc32c_hw\":%s}\n",
           a.sensors, a.batch, a.ring, rates[runs / 2], baseline[runs / 2],
           rates[runs / 2] / baseline[runs / 2], 1e9 / rates[runs / 2],
           sl_store_bytes_per_reading(&c), plan.total_bytes, query_latency_us(&store, &a),
           sl_crc32c_hw_available() ? "true" : "false");
    free(frames);
    sl_arena_unmap(&arena);
    return 0;
}
