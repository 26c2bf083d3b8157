/*
 * bench_lpout: the uplink's text encoders in-process, one core.
 *
 * Times, --runs times over --count readings each, and prints the median ns
 * per reading of:
 *   line named:    sl_lpout_line of `boiler,room=a,site=north temp` with the
 *                  extra tag `,gateway=edge-7`;
 *   line numbered: sl_lpout_line of a numbered sensor, same extra tag;
 *   f32 ryu:       sl_lpout_f32 alone;
 *   f32 snprintf:  the slow baseline, snprintf("%.*g") + strtof for
 *                  precision 6..9 until the text reads back.
 * for two sets of values: "sensor" (n/100 with |n| < 10^5, as sensors send)
 * and "random" (random finite bit patterns: 8 or 9 digits mostly).
 *
 *   build/bench_lpout [--count 1000000] [--runs 5]
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "proto/lpout.h"

static volatile uint64_t sink;

enum mode { LINE_NAMED, LINE_NUMBERED, F32_RYU, F32_SNPRINTF, MODE_COUNT };

static size_t baseline_f32(char *out, size_t cap, float v)
{
    int n = 0;
    for (int p = 6; p <= 9; p++) {
        n = snprintf(out, cap, "%.*g", p, (double)v);
        if (strtof(out, NULL) == v) {
            break;
        }
    }
    return (size_t)n;
}

static double run(enum mode mode, const float *values, uint32_t count)
{
    static const char name[] = "boiler,room=a,site=north temp";
    static const char extra[] = ",gateway=edge-7";
    char out[256];
    uint64_t acc = 0;
    int64_t t = 1700000000000000ll;
    int64_t t0 = sl_clock_monotonic_ns();
    for (uint32_t i = 0; i < count; i++) {
        switch (mode) {
        case LINE_NAMED:
            acc += sl_lpout_line(out, sizeof out, name, sizeof name - 1, 0, extra, sizeof extra - 1,
                                 t + i, values[i]);
            break;
        case LINE_NUMBERED:
            acc += sl_lpout_line(out, sizeof out, NULL, 0, i & 1023, extra, sizeof extra - 1, t + i,
                                 values[i]);
            break;
        case F32_RYU:
            acc += sl_lpout_f32(out, values[i]);
            break;
        default:
            acc += baseline_f32(out, sizeof out, values[i]);
            break;
        }
        acc += (uint8_t)out[0];
    }
    sink = acc;
    return (double)(sl_clock_monotonic_ns() - t0) / count;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    uint32_t count = 1000000, runs = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--count") == 0) {
            count = (uint32_t)strtoul(argv[i + 1], NULL, 10);
        } else if (strcmp(argv[i], "--runs") == 0) {
            runs = (uint32_t)strtoul(argv[i + 1], NULL, 10);
        }
    }
    if (runs == 0 || runs > 101 || count == 0) {
        fprintf(stderr, "usage: bench_lpout [--count N] [--runs 1..101]\n");
        return 2;
    }
    float *values = malloc((size_t)count * sizeof *values);
    if (values == NULL) {
        return 1;
    }
    static const char *const sets[] = {"sensor", "random"};
    static const char *const modes[] = {"line named", "line numbered", "f32 ryu", "f32 snprintf"};
    printf("| values | step | ns a reading (median of %u) | M/s |\n|---|---|---|---|\n", runs);
    for (int s = 0; s < 2; s++) {
        uint64_t rng = 0x9E3779B97F4A7C15ull;
        for (uint32_t i = 0; i < count; i++) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            if (s == 0) {
                values[i] = (float)((double)((int64_t)(rng % 200001) - 100000) / 100.0);
            } else {
                uint32_t b = (uint32_t)rng;
                if ((b & 0x7f800000u) == 0x7f800000u) {
                    b &= 0xbfffffffu;
                }
                memcpy(&values[i], &b, sizeof b);
            }
        }
        for (int mode = 0; mode < MODE_COUNT; mode++) {
            double ns[101];
            for (uint32_t r = 0; r < runs; r++) {
                ns[r] = run((enum mode)mode, values, count);
            }
            qsort(ns, runs, sizeof ns[0], cmp_double);
            printf("| %s | %s | %.1f | %.1f |\n", sets[s], modes[mode], ns[runs / 2], 1e3 / ns[runs / 2]);
        }
    }
    free(values);
    return 0;
}
