/*
 * The uplink's text encoders (proto/lpout.c):
 * - sl_lpout_f32 against the slow reference (snprintf "%.*g" with 1..9
 *   digits, the first that strtof reads back): on edge values (zeros,
 *   denormals, FLT_MIN, FLT_MAX, powers of two and ten and their neighbours,
 *   0.1, 1/3, integers up to 2^24 and beyond) and a few million random bit
 *   patterns: the output reads back exactly through strtof and through
 *   strtod then a cast, has no more digits than the reference, and is the
 *   reference byte for byte when it has as many; NaN and inf give "0";
 * - sl_lpout_line_ns, the same lines with nanosecond times (x 1000);
 * - sl_lpout_line, golden lines for named and numbered sensors, extra tags,
 *   names with `\ ` `\,` `\=` `\\` in every part, negative and extreme
 *   times, and every line read back by the real parser (sl_line_parse) to
 *   the same canonical name, value bits and time; one byte short gives 0;
 * - sl_lpout_tags' escapes and refusals;
 * - sl_lpout_split on names made by the real canonicalizer (line.c) from
 *   random raw lines: each part equals line.c's own unescaping of the raw
 *   span, and re-escaping the parts gives the name back; malformed names are
 *   refused, a short scratch gives -ENOSPC;
 * - the metric name mapping (kept as VictoriaMetrics keeps it, or sanitized
 *   as its -usePromCompatibleNaming does) and the sorted, deduplicated
 *   labels.
 *
 * `test_lpout --exhaustive [threads]` (not part of the suite) checks every
 * finite float: read back through strtof and strtod, no shorter decimal
 * reads back, and -v is "-" and the text of v.
 */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proto/line.h"
#include "proto/lpout.h"
#include "testlib.h"

/* ---------------------------------------------------------------- floats */

static float bits_float(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

static uint32_t float_bits(float f)
{
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

/* Significant digits of a decimal text (leading zeros and the exponent excluded). */
static int significant_digits(const char *s)
{
    int n = 0;
    int started = 0;
    for (; *s != '\0' && *s != 'e'; s++) {
        if (*s >= '1' && *s <= '9') {
            started = 1;
        }
        if (started && *s >= '0' && *s <= '9') {
            n++;
        }
    }
    return n;
}

/* The slow reference: %.{p}g for p = 1..9, the first that strtof, and strtod then a cast, read back. */
static int reference(char *out, size_t cap, float v)
{
    for (int p = 1; p <= 9; p++) {
        snprintf(out, cap, "%.*g", p, (double)v);
        if (float_bits(strtof(out, NULL)) == float_bits(v) &&
            float_bits((float)strtod(out, NULL)) == float_bits(v)) {
            return p;
        }
    }
    return -1;
}

static unsigned long shorter_than_reference;

static void check_f32(float v)
{
    char got[SL_LPOUT_F32_MAX + 1], want[64];
    size_t n = sl_lpout_f32(got, v);
    CHECK(n >= 1 && n <= 15);
    got[n] = '\0';
    CHECK(float_bits(strtof(got, NULL)) == float_bits(v));
    CHECK(float_bits((float)strtod(got, NULL)) == float_bits(v));
    if (float_bits(strtof(got, NULL)) != float_bits(v) || float_bits((float)strtod(got, NULL)) != float_bits(v)) {
        fprintf(stderr, "  %08x %a: got %s\n", float_bits(v), (double)v, got);
    }
    int p = reference(want, sizeof want, v);
    int mine = significant_digits(got);
    if (v == 0) {
        CHECK(strcmp(got, signbit(v) ? "-0" : "0") == 0);
        return;
    }
    CHECK(p > 0 && mine <= p);
    if (mine == p) {
        CHECK(strcmp(got, want) == 0);
        if (strcmp(got, want) != 0) {
            fprintf(stderr, "  %a: got %s, reference %s\n", (double)v, got, want);
        }
    } else {
        shorter_than_reference++; /* a power of two, whose lower gap is half: %g rounds outside it */
    }
}

static void test_f32_edges(void)
{
    static const float fixed[] = {0.0f, 1.0f, 0.1f, 1.0f / 3.0f, 2.0f / 3.0f, 21.5f, 1e-7f, 1.5e-7f,
                                  1e20f, 123456789.0f, 16777216.0f, 16777217.0f, 3.4028235e38f,
                                  1.17549435e-38f, 1.4e-45f, 1e-45f, 9.999999e-5f, 1e-4f, 1e-5f,
                                  123456.7f, 1234567.0f, 99999999.0f, 1e9f, 1e10f, 33554432.0f,
                                  0.3f, 2.5f, 1e38f, 1e-38f, 7.038531e-26f, 4.7019774e-38f};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        check_f32(fixed[i]);
        check_f32(-fixed[i]);
    }
    char out[SL_LPOUT_F32_MAX + 1];
    out[sl_lpout_f32(out, 21.5f)] = '\0';
    CHECK(strcmp(out, "21.5") == 0);
    out[sl_lpout_f32(out, -0.0f)] = '\0';
    CHECK(strcmp(out, "-0") == 0);
    out[sl_lpout_f32(out, 1e20f)] = '\0';
    CHECK(strcmp(out, "1e+20") == 0);
    out[sl_lpout_f32(out, 1.5e-7f)] = '\0';
    CHECK(strcmp(out, "1.5e-07") == 0);
    out[sl_lpout_f32(out, 0.1f)] = '\0';
    CHECK(strcmp(out, "0.1") == 0);
    out[sl_lpout_f32(out, 16777216.0f)] = '\0';
    CHECK(strcmp(out, "16777216") == 0);
    out[sl_lpout_f32(out, 3.4028235e38f)] = '\0';
    CHECK(strcmp(out, "3.4028235e+38") == 0);
    out[sl_lpout_f32(out, 7.038531e-26f)] = '\0';
    CHECK(strcmp(out, "7.0385307e-26") == 0); /* 7.038531e-26 does not survive strtod */
    out[sl_lpout_f32(out, 1.4e-45f)] = '\0';
    CHECK(strcmp(out, "1e-45") == 0);
    CHECK(sl_lpout_f32(out, NAN) == 1 && out[0] == '0');
    CHECK(sl_lpout_f32(out, -NAN) == 1 && out[0] == '0');
    CHECK(sl_lpout_f32(out, INFINITY) == 1 && out[0] == '0');
    CHECK(sl_lpout_f32(out, -INFINITY) == 1 && out[0] == '0');
    /* Every denormal's first and last few, every power of two and ten with neighbours. */
    for (uint32_t b = 1; b < 5000; b++) {
        check_f32(bits_float(b));
        check_f32(bits_float(0x007fffffu - b));
    }
    for (int e = -149; e <= 127; e++) {
        float p2 = ldexpf(1.0f, e);
        for (int k = -3; k <= 3; k++) {
            uint32_t b = float_bits(p2) + (uint32_t)k;
            if ((b & 0x7f800000u) != 0x7f800000u && (k >= 0 || float_bits(p2) >= 3)) {
                check_f32(bits_float(b));
            }
        }
    }
    for (int e = -45; e <= 38; e++) {
        char text[16];
        snprintf(text, sizeof text, "1e%d", e);
        float p10 = strtof(text, NULL);
        for (int k = -3; k <= 3; k++) {
            uint32_t b = float_bits(p10) + (uint32_t)k;
            if ((b & 0x7f800000u) != 0x7f800000u && (k >= 0 || float_bits(p10) >= 3)) {
                check_f32(bits_float(b));
            }
        }
    }
    /* Integers: every one to 2^16, then strided to 2^24, and past 2^24 where they thin out. */
    for (uint32_t i = 0; i <= 65536; i++) {
        check_f32((float)i);
    }
    for (uint32_t i = 65536; i <= (1u << 24); i += 997) {
        check_f32((float)i);
    }
    for (uint64_t i = 1u << 24; i < (1ull << 40); i = i * 3 / 2 + 1) {
        check_f32((float)i);
        check_f32(nextafterf((float)i, 0));
        check_f32(nextafterf((float)i, INFINITY));
    }
}

static void test_f32_random(uint32_t count)
{
    uint64_t state = 0x2545F4914F6CDD1Dull;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t b = (uint32_t)tl_rand(&state);
        if ((b & 0x7f800000u) == 0x7f800000u) {
            continue;
        }
        check_f32(bits_float(b));
    }
    /* Decimal-looking values, as sensors send them: n / 10^k. */
    for (uint32_t i = 0; i < count / 4; i++) {
        uint64_t r = tl_rand(&state);
        double d = (double)(r % 2000001) - 1000000.0;
        check_f32((float)(d / pow(10.0, (double)((r >> 40) % 7))));
    }
}

/* ---------------------------------------------------------------- the exhaustive check */

struct sweep {
    uint32_t from, to; /* positive bit patterns [from, to) */
    unsigned long failures;
};

/* Text `digits` e `exp` read back as v? */
static int reads_back(uint64_t digits, int exp, uint32_t bits)
{
    char text[48];
    size_t n = 0;
    char rev[24];
    do {
        rev[n++] = (char)('0' + digits % 10);
        digits /= 10;
    } while (digits != 0);
    for (size_t k = 0; k < n; k++) {
        text[k] = rev[n - 1 - k];
    }
    text[n++] = 'e';
    if (exp < 0) {
        text[n++] = '-';
        exp = -exp;
    }
    if (exp >= 10) {
        text[n++] = (char)('0' + exp / 10);
    }
    text[n++] = (char)('0' + exp % 10);
    text[n] = '\0';
    return float_bits(strtof(text, NULL)) == bits;
}

static void *sweep_run(void *arg)
{
    struct sweep *w = arg;
    for (uint32_t b = w->from; b < w->to; b++) {
        if (w->from == 0 && (b & 0x0fffffffu) == 0) {
            fprintf(stderr, "exhaustive: at %08x\n", b);
        }
        char s[SL_LPOUT_F32_MAX + 1], neg[SL_LPOUT_F32_MAX + 1];
        float v = bits_float(b);
        size_t n = sl_lpout_f32(s, v);
        s[n] = '\0';
        size_t nn = sl_lpout_f32(neg, -v);
        neg[nn] = '\0';
        int ok = float_bits(strtof(s, NULL)) == b && float_bits((float)strtod(s, NULL)) == b &&
                 nn == n + 1 && neg[0] == '-' && memcmp(neg + 1, s, n) == 0;
        /* The digits and the exponent of the last one; then no decimal one digit shorter reads back. */
        uint64_t digits = 0;
        int exp = 0, after_point = 0, seen_point = 0;
        const char *c = s;
        for (; *c != '\0' && *c != 'e'; c++) {
            if (*c == '.') {
                seen_point = 1;
            } else {
                digits = digits * 10 + (uint64_t)(*c - '0');
                after_point += seen_point;
            }
        }
        exp = (*c == 'e' ? atoi(c + 1) : 0) - after_point;
        while (digits % 10 == 0 && digits != 0) {
            digits /= 10;
            exp++;
        }
        if (b != 0 && (reads_back(digits / 10, exp + 1, b) || reads_back(digits / 10 + 1, exp + 1, b))) {
            ok = 0;
        }
        if (!ok) {
            if (w->failures++ < 200) {
                fprintf(stderr, "exhaustive: %08x (%a) -> %s (strtof %d, strtod %d)\n", b, (double)v, s,
                        float_bits(strtof(s, NULL)) == b, float_bits((float)strtod(s, NULL)) == b);
            }
        }
    }
    return NULL;
}

static int exhaustive(int threads)
{
    if (threads < 1 || threads > 64) {
        threads = 1;
    }
    struct sweep w[64];
    pthread_t t[64];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const uint32_t end = 0x7f800000u; /* +inf: every finite positive pattern is below */
    for (int i = 0; i < threads; i++) {
        w[i] = (struct sweep){.from = (uint32_t)((uint64_t)end * (uint64_t)i / (uint64_t)threads),
                              .to = (uint32_t)((uint64_t)end * (uint64_t)(i + 1) / (uint64_t)threads)};
        pthread_create(&t[i], NULL, sweep_run, &w[i]);
    }
    unsigned long failures = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        failures += w[i].failures;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("exhaustive: %u positive finite floats and their negatives, %lu failures, %.0f s on %d "
           "thread(s)\n",
           end, failures, s, threads);
    return failures == 0 ? 0 : 1;
}

/* ---------------------------------------------------------------- lines */

static struct sl_line parsed;
static uint16_t order[SL_LINE_TAGS_MAX];

/* The canonical name of field 0 of a raw line, into out; its length, or -1. */
static int canonical(const char *raw, char *out, size_t cap)
{
    if (sl_line_parse(raw, strlen(raw), &parsed) != SL_LINE_OK) {
        return -1;
    }
    int prefix = sl_line_series_prefix(&parsed, order, out, cap);
    return prefix < 0 ? -1 : sl_line_series_name(&parsed, 0, out, (size_t)prefix, cap);
}

/* A line of ours read back: the same canonical name (without extras), value bits and time. */
static void check_line_reads_back(const char *line, size_t n, const char *name, uint32_t name_len,
                                  float v, int64_t t_us)
{
    CHECK(n > 0 && line[n - 1] == '\n');
    int rc = sl_line_parse(line, n - 1, &parsed);
    CHECK_EQ(rc, SL_LINE_OK);
    if (rc != SL_LINE_OK) {
        return;
    }
    CHECK(parsed.has_time && parsed.time == t_us);
    CHECK(parsed.field_count == 1 && parsed.fields[0].type == SL_LINE_FLOAT);
    CHECK(float_bits(parsed.fields[0].value) == float_bits(v));
    if (name != NULL) {
        char again[SL_LINE_NAME_MAX];
        int prefix = sl_line_series_prefix(&parsed, order, again, sizeof again);
        int len = prefix < 0 ? -1 : sl_line_series_name(&parsed, 0, again, (size_t)prefix, sizeof again);
        CHECK(len == (int)name_len && memcmp(again, name, name_len) == 0);
    }
}

static void check_golden(const char *name, uint32_t sensor, const char *extra, int64_t t, float v,
                         const char *want)
{
    char out[2048];
    uint32_t name_len = name ? (uint32_t)strlen(name) : 0, extra_len = (uint32_t)strlen(extra);
    size_t n = sl_lpout_line(out, sizeof out, name, name_len, sensor, extra, extra_len, t, v);
    CHECK(n == strlen(want) && memcmp(out, want, n) == 0);
    if (n != strlen(want) || memcmp(out, want, n) != 0) {
        fprintf(stderr, "  got %.*s  want %s", (int)n, out, want);
    }
    /* Exactly enough room works; one byte less writes nothing (0). */
    char *exact = malloc(n);
    CHECK(exact != NULL && sl_lpout_line(exact, n, name, name_len, sensor, extra, extra_len, t, v) == n);
    CHECK(sl_lpout_line(exact, n - 1, name, name_len, sensor, extra, extra_len, t, v) == 0);
    free(exact);
    if (extra_len == 0) {
        check_line_reads_back(out, n, name, name_len, v, t);
    }
}

static void test_lines(void)
{
    check_golden("boiler,room=a,site=north temp", 0, ",gateway=edge-7", 1700000000000000ll, 21.5f,
                 "boiler,room=a,site=north,gateway=edge-7 temp=21.5 1700000000000000\n");
    check_golden("boiler,room=a,site=north temp", 0, "", 1700000000000000ll, 21.5f,
                 "boiler,room=a,site=north temp=21.5 1700000000000000\n");
    check_golden(NULL, 42, "", 1700000000000000ll, 1.0f, "sluice,sensor=42 value=1 1700000000000000\n");
    check_golden(NULL, 4294967295u, ",gateway=edge-7", -1, -0.0f,
                 "sluice,sensor=4294967295,gateway=edge-7 value=-0 -1\n");
    check_golden(NULL, 0, "", INT64_MIN, 3.4028235e38f,
                 "sluice,sensor=0 value=3.4028235e+38 -9223372036854775808\n");
    check_golden(NULL, 7, "", INT64_MAX, 1e-45f, "sluice,sensor=7 value=1e-45 9223372036854775807\n");
    check_golden("m temp", 0, ",a=b", 0, 0.1f, "m,a=b temp=0.1 0\n");
    /* Escapes in every part: the series part ends at the first UNESCAPED space. */
    check_golden("my\\ boiler,ro\\ om=a\\ b,x=y\\,z t\\ emp", 0, ",g=1", 5, 2.0f,
                 "my\\ boiler,ro\\ om=a\\ b,x=y\\,z,g=1 t\\ emp=2 5\n");
    check_golden("my\\ boiler,ro\\ om=a\\ b,x=y\\,z t\\ emp", 0, "", 5, 2.0f,
                 "my\\ boiler,ro\\ om=a\\ b,x=y\\,z t\\ emp=2 5\n");
    check_golden("m\\,x,k\\=1=v\\=2 f\\=\\,", 0, "", -5, 1e10f, "m\\,x,k\\=1=v\\=2 f\\=\\,=1e+10 -5\n");
    /* `\\` before a space: the pair is a kept backslash pair, the space is unescaped. */
    check_golden("m,k=a\\\\ f", 0, ",g=1", 1, 1.0f, "m,k=a\\\\,g=1 f=1 1\n");
    check_golden("m,k=a\\\\\\ b f", 0, ",g=1", 1, 1.0f, "m,k=a\\\\\\ b,g=1 f=1 1\n");
    char out[256];
    CHECK(sl_lpout_line(out, sizeof out, "nospace", 7, 0, "", 0, 0, 1.0f) == 0);
    CHECK(sl_lpout_line(out, sizeof out, "escaped\\ space", 14, 0, "", 0, 0, 1.0f) == 0);
    CHECK(sl_lpout_line(out, 0, NULL, 0, 1, "", 0, 0, 1.0f) == 0);
}

/* The ns form: the same line with the time x 1000 (the microseconds' digits, then 000). */
static void check_ns(const char *name, uint32_t sensor, int64_t t, float v, const char *want)
{
    char out[2048];
    uint32_t name_len = name ? (uint32_t)strlen(name) : 0;
    size_t n = sl_lpout_line_ns(out, sizeof out, name, name_len, sensor, "", 0, t, v);
    CHECK(n == strlen(want) && memcmp(out, want, n) == 0);
    if (n != strlen(want) || memcmp(out, want, n) != 0) {
        fprintf(stderr, "  got %.*s  want %s", (int)n, out, want);
    }
    CHECK(n > 0 && sl_lpout_line_ns(out, n, name, name_len, sensor, "", 0, t, v) == n);
    CHECK(n > 0 && sl_lpout_line_ns(out, n - 1, name, name_len, sensor, "", 0, t, v) == 0);
}

static void test_lines_ns(void)
{
    check_ns("boiler,room=a temp", 0, 1700000000000001ll, 21.5f,
             "boiler,room=a temp=21.5 1700000000000001000\n");
    check_ns(NULL, 42, 1, 1.0f, "sluice,sensor=42 value=1 1000\n");
    check_ns(NULL, 42, -7, 1.0f, "sluice,sensor=42 value=1 -7000\n");
    check_ns(NULL, 42, 0, 1.0f, "sluice,sensor=42 value=1 0\n");
    check_ns(NULL, 42, 9223372036854775ll, 1.0f, "sluice,sensor=42 value=1 9223372036854775000\n");
}

static void test_tags(void)
{
    char out[256];
    const char *k1[] = {"gateway", "site"}, *v1[] = {"edge-7", "north"};
    int n = sl_lpout_tags(out, sizeof out, k1, v1, 2);
    CHECK(n == 26 && memcmp(out, ",gateway=edge-7,site=north", 26) == 0);
    CHECK(sl_lpout_tags(out, 25, k1, v1, 2) == -1);
    CHECK(sl_lpout_tags(out, 26, k1, v1, 2) == 26);
    CHECK(sl_lpout_tags(out, sizeof out, k1, v1, 0) == 0);
    const char *k2[] = {"a b,c=d"}, *v2[] = {"x=y z,w\\q"};
    n = sl_lpout_tags(out, sizeof out, k2, v2, 1);
    static const char want2[] = ",a\\ b\\,c\\=d=x\\=y\\ z\\,w\\q";
    CHECK(n == (int)sizeof want2 - 1 && memcmp(out, want2, (size_t)n) == 0);
    /* Rendered extra tags read back through the real parser as the same bytes. */
    char line[512];
    size_t len = sl_lpout_line(line, sizeof line, "m f", 3, 0, out, (uint32_t)n, 1, 1.0f);
    CHECK(len > 0 && sl_line_parse(line, len - 1, &parsed) == SL_LINE_OK && parsed.tag_count == 1);
    char un[64];
    size_t un_len = sl_line_unescape_key(parsed.tags[0].key, un);
    CHECK(un_len == 7 && memcmp(un, "a b,c=d", 7) == 0);
    un_len = sl_line_unescape_key(parsed.tags[0].value, un);
    CHECK(un_len == 9 && memcmp(un, "x=y z,w\\q", 9) == 0);
    /* What line protocol cannot carry. */
    const char *bad[] = {"", "a\\", "a\\,b", "a\\ b", "a\\=b", "a\nb"};
    const char *good[] = {"ok"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(sl_lpout_tags(out, sizeof out, &bad[i], good, 1) == -1);
        CHECK(sl_lpout_tags(out, sizeof out, good, &bad[i], 1) == -1);
    }
    const char *nul[] = {NULL};
    CHECK(sl_lpout_tags(out, sizeof out, nul, good, 1) == -1);
}

/* ---------------------------------------------------------------- split */

static struct sl_lpout_parts parts;

static int str_is(struct sl_lpout_str s, const char *text)
{
    return s.n == strlen(text) && memcmp(s.p, text, s.n) == 0;
}

/* Part escaped again, minimally, by `set`. */
static size_t escape(struct sl_lpout_str s, const char *set, char *out)
{
    size_t o = 0;
    for (uint32_t i = 0; i < s.n; i++) {
        if (s.p[i] != '\0' && strchr(set, s.p[i]) != NULL) {
            out[o++] = '\\';
        }
        out[o++] = s.p[i];
    }
    return o;
}

static void check_split_of(const char *raw)
{
    char name[SL_LINE_NAME_MAX], scratch[SL_LINE_NAME_MAX], want[SL_LINE_NAME_MAX];
    int len = canonical(raw, name, sizeof name);
    if (len < 0) {
        return;
    }
    CHECK_EQ(sl_lpout_split(name, (uint32_t)len, &parts, scratch, (size_t)len), 0);
    /* Each part is line.c's own unescaping of the raw span. */
    size_t n = sl_line_unescape_measurement(parsed.measurement, want);
    CHECK(parts.measurement.n == n && memcmp(parts.measurement.p, want, n) == 0);
    n = sl_line_unescape_key(parsed.fields[0].key, want);
    CHECK(parts.field.n == n && memcmp(parts.field.p, want, n) == 0);
    CHECK_EQ(parts.tag_count, parsed.tag_count);
    for (uint32_t k = 0; k < parts.tag_count && k < parsed.tag_count; k++) {
        const struct sl_line_tag *t = &parsed.tags[order[k]]; /* the canonical (sorted) order */
        n = sl_line_unescape_key(t->key, want);
        CHECK(parts.tags[k].key.n == n && memcmp(parts.tags[k].key.p, want, n) == 0);
        n = sl_line_unescape_key(t->value, want);
        CHECK(parts.tags[k].value.n == n && memcmp(parts.tags[k].value.p, want, n) == 0);
    }
    /* Escaped again, the parts make the name. */
    size_t o = escape(parts.measurement, ", ", want);
    for (uint32_t k = 0; k < parts.tag_count; k++) {
        want[o++] = ',';
        o += escape(parts.tags[k].key, ",= ", want + o);
        want[o++] = '=';
        o += escape(parts.tags[k].value, ",= ", want + o);
    }
    want[o++] = ' ';
    o += escape(parts.field, ",= ", want + o);
    CHECK(o == (size_t)len && memcmp(want, name, o) == 0);
    /* A scratch one byte short of the unescaped total: -ENOSPC (when anything is unescaped, less). */
    size_t unescaped = parts.measurement.n + parts.field.n;
    for (uint32_t k = 0; k < parts.tag_count; k++) {
        unescaped += parts.tags[k].key.n + parts.tags[k].value.n;
    }
    CHECK_EQ(sl_lpout_split(name, (uint32_t)len, &parts, scratch, unescaped - 1), -ENOSPC);
    CHECK_EQ(sl_lpout_split(name, (uint32_t)len, &parts, scratch, unescaped), 0);
}

static void test_split(void)
{
    char scratch[256];
    static const char name[] = "boiler,room=a,site=north temp";
    CHECK_EQ(sl_lpout_split(name, sizeof name - 1, &parts, scratch, sizeof scratch), 0);
    CHECK(str_is(parts.measurement, "boiler") && str_is(parts.field, "temp"));
    CHECK(parts.tag_count == 2 && str_is(parts.tags[0].key, "room") && str_is(parts.tags[0].value, "a"));
    CHECK(str_is(parts.tags[1].key, "site") && str_is(parts.tags[1].value, "north"));
    static const char esc[] = "my\\ b\\=x\\,y,k\\ \\,\\==v\\ \\,\\=\\\\ f\\ \\,\\=\\q";
    CHECK_EQ(sl_lpout_split(esc, sizeof esc - 1, &parts, scratch, sizeof scratch), 0);
    CHECK(str_is(parts.measurement, "my b\\=x,y")); /* `\=` in a measurement is a kept pair */
    CHECK(parts.tag_count == 1 && str_is(parts.tags[0].key, "k ,="));
    CHECK(str_is(parts.tags[0].value, "v ,=\\\\")); /* `\\` stays two bytes, as line.c and InfluxDB */
    CHECK(str_is(parts.field, "f ,=\\q"));
    /* Names that are not canonical. */
    static const char *const bad[] = {"", " f", "m", "m ", "m,k f", "m,=v f", "m,k= f", "m,k=v",
                                      "m,k=v,", "m,k=v, f", "m f g", "m f=", "m f,", "m\\", "m f\\",
                                      "m,k=v\\", "m,k=v=w f", ",k=v f", "m  f"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = sl_lpout_split(bad[i], (uint32_t)strlen(bad[i]), &parts, scratch, sizeof scratch);
        CHECK_EQ(rc, -EINVAL);
        if (rc != -EINVAL) {
            fprintf(stderr, "  accepted: \"%s\"\n", bad[i]);
        }
    }
    CHECK_EQ(sl_lpout_split(name, sizeof name - 1, &parts, scratch, 5), -ENOSPC);
    /* 256 tags fit, 257 do not. */
    static char many[8192];
    size_t o = (size_t)snprintf(many, sizeof many, "m");
    for (int k = 0; k < 257; k++) {
        o += (size_t)snprintf(many + o, sizeof many - o, ",k%03d=v", k);
        if (k == 255) {
            static char scratch_many[8192];
            char tail[8192];
            memcpy(tail, many, o);
            memcpy(tail + o, " f", 2);
            CHECK_EQ(sl_lpout_split(tail, (uint32_t)(o + 2), &parts, scratch_many, sizeof scratch_many), 0);
            CHECK_EQ(parts.tag_count, 256);
        }
    }
    memcpy(many + o, " f", 2);
    static char scratch_many[8192];
    CHECK_EQ(sl_lpout_split(many, (uint32_t)(o + 2), &parts, scratch_many, sizeof scratch_many), -E2BIG);

    /* Names made by the real canonicalizer from raw lines, fixed and random. */
    static const char *const raws[] = {
        "boiler,site=north,room=a temp=21.5",
        "my\\ boiler,ro\\ om=a\\ b,x=y\\,z t\\ emp=1",
        "m\\,x\\=y,k\\=1=v\\=2,a=\\\\ f\\=\\,=1",
        "m,b=2,a=1,a=0 f=1",
        "we\\ird\\\\,t\\a\\g=va\\lue fi\\eld=1",
        "caf\xc3\xa9,\xe2\x82\xac=\xff f=1",
    };
    for (size_t i = 0; i < sizeof raws / sizeof raws[0]; i++) {
        check_split_of(raws[i]);
    }
    static const char *const pieces[] = {"a", "b", "\\,", "\\ ", "\\=", "\\\\", "\\q", "=", "\xc3\xa9", "z9"};
    uint64_t state = 77;
    for (int round = 0; round < 20000; round++) {
        char raw[512];
        size_t r = 0;
        uint32_t tags = (uint32_t)(tl_rand(&state) % 5);
        for (int part = 0; part < (int)(2 + 2 * tags); part++) {
            if (part == 1 + 2 * (int)tags) {
                raw[r++] = ' ';
            } else if (part > 0) {
                raw[r++] = part % 2 ? ',' : '=';
            }
            uint32_t count = 1 + (uint32_t)(tl_rand(&state) % 4);
            for (uint32_t k = 0; k < count; k++) {
                const char *piece = pieces[tl_rand(&state) % (sizeof pieces / sizeof pieces[0])];
                if (part > 0 && strcmp(piece, "=") == 0) {
                    piece = "\\=";
                }
                size_t pl = strlen(piece);
                memcpy(raw + r, piece, pl);
                r += pl;
            }
        }
        memcpy(raw + r, "=1 5", 5);
        check_split_of(raw);
    }
}

/* ---------------------------------------------------------------- Prometheus names and labels */

static void test_prometheus(void)
{
    char scratch[256], metric[256], names[256];
    static const char name[] = "boiler,site=north,room=a temp";
    CHECK_EQ(sl_lpout_split(name, sizeof name - 1, &parts, scratch, sizeof scratch), 0);
    size_t m = sl_lpout_metric_name(metric, sizeof metric, &parts, 0);
    CHECK(m == 11 && memcmp(metric, "boiler_temp", 11) == 0);
    CHECK(sl_lpout_metric_name(metric, 11, &parts, 0) == 11);
    CHECK(sl_lpout_metric_name(metric, 10, &parts, 0) == 0);

    struct sl_promrw_label labels[SL_LPOUT_LABELS_MAX];
    struct sl_promrw_label extra[] = {{"gateway", 7, "edge-7", 6}, {"room", 4, "lost", 4}, {"z", 1, "", 0}};
    int n = sl_lpout_labels(labels, SL_LPOUT_LABELS_MAX, metric, (uint32_t)m, &parts, extra, 3, 0,
                            names, sizeof names);
    CHECK_EQ(n, 4);
    static const char *const want[][2] = {{"__name__", "boiler_temp"}, {"gateway", "edge-7"},
                                          {"room", "a"}, {"site", "north"}};
    for (int i = 0; i < n && i < 4; i++) {
        CHECK(labels[i].name_len == strlen(want[i][0]) && memcmp(labels[i].name, want[i][0], labels[i].name_len) == 0);
        CHECK(labels[i].value_len == strlen(want[i][1]) &&
              memcmp(labels[i].value, want[i][1], labels[i].value_len) == 0);
    }
    CHECK_EQ(sl_lpout_labels(labels, 3, metric, (uint32_t)m, &parts, extra, 3, 0, names, sizeof names),
             -ENOSPC);
    CHECK_EQ(sl_lpout_labels(labels, 0, metric, (uint32_t)m, &parts, extra, 0, 0, names, sizeof names),
             -ENOSPC);
    CHECK_EQ(sl_lpout_labels(labels, SL_LPOUT_LABELS_MAX, metric, (uint32_t)m, &parts, extra,
                             SL_LPOUT_EXTRA_MAX + 1, 0, names, sizeof names),
             -E2BIG);

    /* Duplicate tags in the series (the first wins) and a tag called __name__ (the metric wins). */
    static const char dup[] = "m,__name__=x,a=1,a=2,b=3 f";
    CHECK_EQ(sl_lpout_split(dup, sizeof dup - 1, &parts, scratch, sizeof scratch), 0);
    m = sl_lpout_metric_name(metric, sizeof metric, &parts, 0);
    n = sl_lpout_labels(labels, SL_LPOUT_LABELS_MAX, metric, (uint32_t)m, &parts, NULL, 0, 0, names,
                        sizeof names);
    CHECK_EQ(n, 3);
    CHECK(n == 3 && labels[0].value_len == 3 && memcmp(labels[0].value, "m_f", 3) == 0);
    CHECK(n == 3 && labels[1].name[0] == 'a' && labels[1].value[0] == '1' && labels[2].name[0] == 'b');

    /* Names VictoriaMetrics keeps, and what -usePromCompatibleNaming makes of them. */
    static const char odd[] = "cpu.load\\ 1m,host.name=a,caf\xc3\xa9:x=b,9z=c us\xff:er";
    CHECK_EQ(sl_lpout_split(odd, sizeof odd - 1, &parts, scratch, sizeof scratch), 0);
    m = sl_lpout_metric_name(metric, sizeof metric, &parts, 0);
    CHECK(m == 18 && memcmp(metric, "cpu.load 1m_us\xff:er", 18) == 0);
    m = sl_lpout_metric_name(metric, sizeof metric, &parts, SL_LPOUT_PROM_NAMES);
    CHECK(m == 18 && memcmp(metric, "cpu_load_1m_us_:er", 18) == 0);
    n = sl_lpout_labels(labels, SL_LPOUT_LABELS_MAX, metric, (uint32_t)m, &parts, NULL, 0,
                        SL_LPOUT_PROM_NAMES, names, sizeof names);
    CHECK_EQ(n, 4);
    /* sorted: 9z, caf_:x -> caf__x, host_name */
    CHECK(n == 4 && labels[1].name_len == 2 && memcmp(labels[1].name, "9z", 2) == 0);
    CHECK(n == 4 && labels[2].name_len == 6 && memcmp(labels[2].name, "caf__x", 6) == 0);
    CHECK(n == 4 && labels[3].name_len == 9 && memcmp(labels[3].name, "host_name", 9) == 0);
    CHECK_EQ(sl_lpout_labels(labels, SL_LPOUT_LABELS_MAX, metric, (uint32_t)m, &parts, NULL, 0,
                             SL_LPOUT_PROM_NAMES, names, 3),
             -ENOSPC);
    /* Sanitizing can make two names one: the first in the name's order wins. */
    static const char clash[] = "m,a.b=1,a_b=2 f";
    CHECK_EQ(sl_lpout_split(clash, sizeof clash - 1, &parts, scratch, sizeof scratch), 0);
    n = sl_lpout_labels(labels, SL_LPOUT_LABELS_MAX, "m_f", 3, &parts, NULL, 0, SL_LPOUT_PROM_NAMES,
                        names, sizeof names);
    CHECK(n == 2 && labels[1].value[0] == '1');

    /* A numbered sensor: sluice_value{sensor="<id>"}. */
    CHECK_EQ(sl_lpout_numbered(4294967295u, &parts, scratch, 9), -ENOSPC);
    CHECK_EQ(sl_lpout_numbered(4294967295u, &parts, scratch, 10), 0);
    m = sl_lpout_metric_name(metric, sizeof metric, &parts, 0);
    CHECK(m == 12 && memcmp(metric, "sluice_value", 12) == 0);
    struct sl_promrw_label gw = {"gateway", 7, "edge-7", 6};
    n = sl_lpout_labels(labels, SL_LPOUT_LABELS_MAX, metric, (uint32_t)m, &parts, &gw, 1, 0, names,
                        sizeof names);
    CHECK(n == 3 && labels[1].name_len == 7 && labels[2].name_len == 6);
    CHECK(n == 3 && labels[2].value_len == 10 && memcmp(labels[2].value, "4294967295", 10) == 0);
    /* The labels encode. */
    uint8_t wire[512];
    double value = 1.0;
    int64_t t_ms = 1;
    CHECK(n > 0 && sl_promrw_put_series(wire, sizeof wire, labels, (uint32_t)n, &value, &t_ms, 1) > 0);
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "--exhaustive") == 0) {
        return exhaustive(argc >= 3 ? atoi(argv[2]) : 1);
    }
    test_f32_edges();
    test_f32_random(2000000);
    printf("test_lpout: %lu values one digit shorter than the snprintf loop (powers of two)\n",
           shorter_than_reference);
    test_lines();
    test_lines_ns();
    test_tags();
    test_split();
    test_prometheus();
    TEST_END("test_lpout");
}
