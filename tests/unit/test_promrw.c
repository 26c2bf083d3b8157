/*
 * The Prometheus remote write encoder (proto/promrw.c):
 * - a hand-worked golden message, byte for byte (one label, one sample);
 * - random series (labels of 0 to 300 bytes, 0 to 40 samples, negative and
 *   huge timestamps, every double bit pattern class) decoded by an
 *   independent reader of the protobuf wire format written here, field by
 *   field, with the sizes agreeing and nothing left over;
 * - a buffer one byte short writes nothing.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "proto/promrw.h"
#include "testlib.h"

/* ---- an independent reader ---- */

struct rd {
    const uint8_t *p, *end;
    int bad;
};

static uint64_t rd_varint(struct rd *r)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (r->p >= r->end) {
            r->bad = 1;
            return 0;
        }
        uint8_t b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            return v;
        }
    }
    r->bad = 1;
    return 0;
}

/* The next field's number and wire type; a length-delimited one's payload in *sub. */
static int rd_field(struct rd *r, uint32_t *field, uint32_t *wire, struct rd *sub, uint64_t *scalar)
{
    if (r->p >= r->end) {
        return 0;
    }
    uint64_t key = rd_varint(r);
    *field = (uint32_t)(key >> 3);
    *wire = (uint32_t)(key & 7);
    if (*wire == 2) {
        uint64_t len = rd_varint(r);
        if (len > (uint64_t)(r->end - r->p)) {
            r->bad = 1;
            return 0;
        }
        sub->p = r->p;
        sub->end = r->p + len;
        sub->bad = 0;
        r->p += len;
    } else if (*wire == 1) {
        if (r->end - r->p < 8) {
            r->bad = 1;
            return 0;
        }
        uint64_t v = 0;
        for (int i = 7; i >= 0; i--) {
            v = v << 8 | r->p[i];
        }
        r->p += 8;
        *scalar = v;
    } else if (*wire == 0) {
        *scalar = rd_varint(r);
    } else {
        r->bad = 1;
        return 0;
    }
    return !r->bad;
}

/* ---- the golden message ---- */

static void test_golden(void)
{
    struct sl_promrw_label l = {"__name__", 8, "up", 2};
    double v = 1.0;
    int64_t t = 1000;
    static const uint8_t want[] = {
        0x0a, 0x1e,                                                /* timeseries, 30 bytes */
        0x0a, 0x0e,                                                /*  label, 14 bytes */
        0x0a, 0x08, '_', '_', 'n', 'a', 'm', 'e', '_', '_',        /*   name */
        0x12, 0x02, 'u', 'p',                                      /*   value */
        0x12, 0x0c,                                                /*  sample, 12 bytes */
        0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf0, 0x3f,      /*   value 1.0 */
        0x10, 0xe8, 0x07,                                          /*   timestamp 1000 */
    };
    uint8_t out[64];
    CHECK_EQ(sl_promrw_series_bytes(&l, 1, &v, &t, 1), sizeof want);
    CHECK_EQ(sl_promrw_put_series(out, sizeof out, &l, 1, &v, &t, 1), sizeof want);
    CHECK(memcmp(out, want, sizeof want) == 0);
    CHECK_EQ(sl_promrw_put_series(out, sizeof want - 1, &l, 1, &v, &t, 1), 0); /* one short */
}

/* ---- random series, decoded ---- */

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void test_random(void)
{
    static char text[64][300];
    static struct sl_promrw_label labels[32];
    static double values[40];
    static int64_t times[40];
    static uint8_t buf[1 << 16];
    for (int round = 0; round < 2000; round++) {
        uint32_t nl = (uint32_t)(next() % 8), ns = (uint32_t)(next() % 41);
        for (uint32_t i = 0; i < nl; i++) {
            uint32_t a = (uint32_t)(next() % 300), b = (uint32_t)(next() % (i == 0 ? 300 : 20));
            for (uint32_t k = 0; k < a; k++) {
                text[2 * i][k] = (char)next();
            }
            for (uint32_t k = 0; k < b; k++) {
                text[2 * i + 1][k] = (char)next();
            }
            labels[i] = (struct sl_promrw_label){text[2 * i], a, text[2 * i + 1], b};
        }
        for (uint32_t i = 0; i < ns; i++) {
            uint64_t bits = next();
            if (i % 5 == 1) {
                bits = 0; /* +0.0 */
            }
            memcpy(&values[i], &bits, sizeof bits);
            times[i] = i % 3 == 0 ? (int64_t)(next() >> 20) : i % 3 == 1 ? -(int64_t)(next() % 5000)
                                                                          : (int64_t)next();
        }
        size_t want = sl_promrw_series_bytes(labels, nl, values, times, ns);
        size_t got = sl_promrw_put_series(buf, sizeof buf, labels, nl, values, times, ns);
        CHECK_EQ(got, want);
        struct rd r = {buf, buf + got, 0}, ts, item, inner;
        uint32_t field, wire;
        uint64_t scalar = 0;
        CHECK(rd_field(&r, &field, &wire, &ts, &scalar) && field == 1 && wire == 2);
        CHECK(r.p == r.end); /* one timeseries, nothing after it */
        uint32_t seen_labels = 0, seen_samples = 0;
        while (rd_field(&ts, &field, &wire, &item, &scalar)) {
            CHECK_EQ(wire, 2);
            if (field == 1) {
                CHECK(seen_samples == 0); /* labels first */
                const struct sl_promrw_label *l = &labels[seen_labels++];
                CHECK(rd_field(&item, &field, &wire, &inner, &scalar) && field == 1 && wire == 2);
                CHECK((size_t)(inner.end - inner.p) == l->name_len &&
                      memcmp(inner.p, l->name, l->name_len) == 0);
                CHECK(rd_field(&item, &field, &wire, &inner, &scalar) && field == 2 && wire == 2);
                CHECK((size_t)(inner.end - inner.p) == l->value_len &&
                      memcmp(inner.p, l->value, l->value_len) == 0);
                CHECK(item.p == item.end);
            } else {
                CHECK_EQ(field, 2);
                uint32_t k = seen_samples++;
                CHECK(rd_field(&item, &field, &wire, &inner, &scalar) && field == 1 && wire == 1);
                uint64_t bits;
                memcpy(&bits, &values[k], sizeof bits);
                CHECK(scalar == bits);
                CHECK(rd_field(&item, &field, &wire, &inner, &scalar) && field == 2 && wire == 0);
                CHECK((int64_t)scalar == times[k]);
                CHECK(item.p == item.end);
            }
        }
        CHECK(!ts.bad && ts.p == ts.end);
        CHECK_EQ(seen_labels, nl);
        CHECK_EQ(seen_samples, ns);
        CHECK_EQ(sl_promrw_put_series(buf, want - 1, labels, nl, values, times, ns), 0);
    }
}

int main(void)
{
    test_golden();
    test_random();
    TEST_END("test_promrw");
}
