/*
 * bench_line: the line protocol parser in-process, one core.
 *
 * Builds a buffer of --lines lines of one shape, then times, --runs times:
 *   split: finding the line ends only (memchr), the floor under any parser;
 *   parse: split + sl_line_parse of every line (values converted);
 *   names: parse + the canonical series name of every field (what the
 *          ingest path does before looking a name up).
 * Shapes: "telegraf" (cpu,host=hN,cpu=cpuM usage_user=..,usage_system=..,
 * usage_idle=.. <ns>, 100 hosts x 8 cpus) and "one" (sensor,id=N value=.. <ns>).
 * Prints, for each shape, MB/s and lines/s (medians), and the ratio of parse
 * to split. Anchor (BENCHMARKS.md): influxdata's Go parser, ~145 MB/s.
 *
 *   build/bench_line [--lines 1000000] [--runs 7]
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "proto/line.h"

static struct sl_line line;
static char name[SL_LINE_NAME_MAX];
static uint16_t order[SL_LINE_TAGS_MAX];
static volatile uint64_t sink;

static size_t build(char *buf, size_t cap, const char *shape, uint32_t lines)
{
    size_t n = 0;
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    int64_t t = 1700000000000000000ll;
    for (uint32_t i = 0; i < lines && n + 256 < cap; i++) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        double a = (double)(rng % 10000) / 100.0, b = (double)((rng >> 20) % 1000) / 100.0;
        if (strcmp(shape, "telegraf") == 0) {
            n += (size_t)snprintf(buf + n, cap - n,
                                  "cpu,host=h%u,cpu=cpu%u usage_user=%.2f,usage_system=%.2f,usage_idle=%.1f %" PRId64 "\n",
                                  i % 100, (i / 100) % 8, a, b, 100.0 - a - b, t + (int64_t)i * 1000);
        } else {
            n += (size_t)snprintf(buf + n, cap - n, "sensor,id=%u value=%.3f %" PRId64 "\n", i % 1000, a,
                                  t + (int64_t)i * 1000);
        }
    }
    return n;
}

static double run(const char *buf, size_t n, int mode)
{
    int64_t t0 = sl_clock_monotonic_ns();
    uint64_t acc = 0;
    for (size_t at = 0; at < n;) {
        size_t end = sl_line_end(buf, n, at);
        if (mode >= 1) {
            int rc = sl_line_parse(buf + at, end - at, &line);
            acc += (uint64_t)rc + line.field_count;
            if (mode == 2 && rc == SL_LINE_OK) {
                int prefix = sl_line_series_prefix(&line, order, name, sizeof name);
                for (uint32_t k = 0; prefix >= 0 && k < line.field_count; k++) {
                    acc += (uint64_t)sl_line_series_name(&line, k, name, (size_t)prefix, sizeof name);
                }
            }
        } else {
            acc += end - at;
        }
        at = end + 1;
    }
    sink = acc;
    return (double)(sl_clock_monotonic_ns() - t0) / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    uint32_t lines = 1000000, runs = 7;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--lines") == 0) {
            lines = (uint32_t)strtoul(argv[i + 1], NULL, 10);
        } else if (strcmp(argv[i], "--runs") == 0) {
            runs = (uint32_t)strtoul(argv[i + 1], NULL, 10);
        }
    }
    if (runs == 0 || runs > 101 || lines == 0) {
        fprintf(stderr, "usage: bench_line [--lines N] [--runs 1..101]\n");
        return 2;
    }
    size_t cap = (size_t)lines * 160 + 4096;
    char *buf = malloc(cap);
    if (buf == NULL) {
        return 1;
    }
    static const char *const shapes[] = {"telegraf", "one"};
    static const char *const modes[] = {"split", "parse", "names"};
    printf("| shape | lines | bytes a line | step | MB/s (median of %u) | M lines/s | ratio to split |\n", runs);
    printf("|---|---|---|---|---|---|---|\n");
    for (size_t s = 0; s < 2; s++) {
        size_t n = build(buf, cap, shapes[s], lines);
        double split_secs = 0;
        for (int mode = 0; mode < 3; mode++) {
            double secs[101];
            for (uint32_t r = 0; r < runs; r++) {
                secs[r] = run(buf, n, mode);
            }
            qsort(secs, runs, sizeof secs[0], cmp_double);
            double median = secs[runs / 2];
            if (mode == 0) {
                split_secs = median;
            }
            printf("| %s | %u | %.1f | %s | %.0f | %.2f | %.2f |\n", shapes[s], lines, (double)n / lines,
                   modes[mode], (double)n / median / 1e6, lines / median / 1e6, split_secs / median);
        }
    }
    free(buf);
    return 0;
}
