/*
 * test_store: the sensor store keeps exactly what PROTOCOL.md and
 * HTTP_API.md say it keeps.
 *
 * - Boundaries: empty store, one reading, a full ring and one more, a full
 *   sensor table and one more, a batch of the maximum count, equal times,
 *   the future-skew edge, base + offset overflow, gaps wider than 32 bits.
 * - Rejected readings never change what is stored.
 * - A randomized run of over a million readings on 1,000 sensors, with ring
 *   wrap-around, out-of-order, non-finite, future, unknown-sensor readings
 *   and wide gaps mixed in, checked against a brute-force reference model:
 *   the retained readings (times and values, exactly), every window
 *   statistic (exact ones against the full history, coarse ones against the
 *   history bucketed the same way), the exact flag, the EWMA and the
 *   counters.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/plan.h"
#include "store/store.h"
#include "testlib.h"

#define NOW_US 1800000000000000LL /* the tests' fixed clock: 2027-01-15 */

struct harness {
    struct sl_store store;
    struct sl_arena arena;
    struct sl_sensor_view view;
    void *view_memory;
};

static void harness_open(struct harness *h, const struct sl_store_config *config)
{
    struct sl_plan plan;
    sl_plan_init(&plan);
    sl_store_plan(config, &plan);
    CHECK(sl_arena_map(&h->arena, plan.total_bytes) == 0);
    sl_store_init(&h->store, config, &h->arena);
    CHECK(h->arena.used_bytes == plan.total_bytes);
    h->view_memory = malloc(sl_store_view_bytes(config));
    sl_store_view_init(&h->view, config, h->view_memory);
}

static void harness_close(struct harness *h)
{
    free(h->view_memory);
    sl_arena_unmap(&h->arena);
}

static void small_config(struct sl_store_config *c, uint32_t sensors, uint32_t ring)
{
    sl_store_config_default(c);
    c->sensors_max = sensors;
    c->ring_readings = ring;
}

static int apply(struct harness *h, uint32_t id, int64_t t, float v)
{
    return sl_store_apply_reading(&h->store, id, t, v, NOW_US);
}

static void test_config_checks(void)
{
    struct sl_store_config c;
    const char *why = NULL;
    sl_store_config_default(&c);
    CHECK(sl_store_config_check(&c, &why) == 0);
    CHECK(c.sensors_max == 65536 && c.ring_readings == 4096 && c.windows_count == 3);
    c.sensors_max = 0;
    CHECK(sl_store_config_check(&c, &why) == -EINVAL && why != NULL);
    c.sensors_max = SL_SENSORS_MAX + 1;
    CHECK(sl_store_config_check(&c, &why) == -EINVAL);
    c.sensors_max = SL_SENSORS_MAX;
    CHECK(sl_store_config_check(&c, &why) == 0);
    c.ring_readings = 3;
    CHECK(sl_store_config_check(&c, &why) == -EINVAL);
    c.ring_readings = 4;
    c.windows_us[1] = c.windows_us[0];
    CHECK(sl_store_config_check(&c, &why) == -EINVAL);
    c.windows_us[1] = 1500000; /* not whole seconds */
    CHECK(sl_store_config_check(&c, &why) == -EINVAL);
}

static void test_empty_and_one(void)
{
    struct harness h;
    struct sl_store_config c;
    small_config(&c, 8, 16);
    harness_open(&h, &c);
    CHECK(sl_store_sensors_count(&h.store) == 0);
    CHECK(sl_store_snapshot(&h.store, 1, &h.view) == -ENOENT);
    CHECK(apply(&h, 0, NOW_US - 5, 21.5f) == 0); /* id 0 is a valid id */
    CHECK(sl_store_sensors_count(&h.store) == 1);
    CHECK(sl_store_snapshot(&h.store, 0, &h.view) == 0);
    CHECK(h.view.id == 0 && h.view.count == 1 && h.view.readings_total == 1);
    CHECK(h.view.t_us[0] == NOW_US - 5 && h.view.value[0] == 21.5f);
    CHECK(h.view.ewma == 21.5);
    struct sl_window_stats w;
    sl_view_window(&h.view, 10000000, &w);
    CHECK(w.count == 1 && w.exact && w.mean == 21.5 && w.min == 21.5 && w.max == 21.5);
    CHECK(sl_store_snapshot(&h.store, 1, &h.view) == -ENOENT);
    harness_close(&h);
}

static void test_full_ring(void)
{
    struct harness h;
    struct sl_store_config c;
    small_config(&c, 4, 8);
    harness_open(&h, &c);
    for (int i = 0; i < 8; i++) {
        CHECK(apply(&h, 7, 1000 + i, (float)i) == 0);
    }
    CHECK(sl_store_snapshot(&h.store, 7, &h.view) == 0);
    CHECK(h.view.count == 8 && h.view.readings_total == 8);
    struct sl_window_stats w;
    sl_view_window(&h.view, 3600000000LL, &w);
    CHECK(w.exact && w.count == 8 && w.mean == 3.5 && w.min == 0 && w.max == 7);
    CHECK(apply(&h, 7, 1008, 8.0f) == 0); /* one more: the oldest goes */
    CHECK(sl_store_snapshot(&h.store, 7, &h.view) == 0);
    CHECK(h.view.count == 8 && h.view.readings_total == 9);
    CHECK(h.view.t_us[0] == 1001 && h.view.value[0] == 1.0f);
    CHECK(h.view.t_us[7] == 1008 && h.view.value[7] == 8.0f);
    /* The window reaches past the ring: answered from the coarse tier. */
    sl_view_window(&h.view, 3600000000LL, &w);
    CHECK(!w.exact && w.count == 9 && w.resolution_us == 60000000 && w.min == 0 && w.max == 8);
    CHECK_NEAR(w.mean, 4.0, 1e-12);
    CHECK_NEAR(w.stddev, sqrt(7.5), 1e-9);
    /* A window inside the ring stays exact: t > 1008 - 3 covers 1006..1008. */
    sl_view_window(&h.view, 3, &w);
    CHECK(w.exact && w.count == 3 && w.mean == 7.0 && w.stddev == 1.0);
    harness_close(&h);
}

static void test_full_table_and_rejects(void)
{
    struct harness h;
    struct sl_store_config c;
    small_config(&c, 4, 8);
    harness_open(&h, &c);
    for (uint32_t id = 10; id < 14; id++) {
        CHECK(apply(&h, id, 100, 1.0f) == 0);
    }
    CHECK(apply(&h, 99, 100, 1.0f) == -1 - SL_REJECT_SENSOR_LIMIT);
    CHECK(sl_store_sensors_count(&h.store) == 4);
    CHECK(sl_store_snapshot(&h.store, 99, &h.view) == -ENOENT);
    CHECK(apply(&h, 10, 100, 2.0f) == 0); /* equal time: accepted */
    CHECK(apply(&h, 10, 99, 3.0f) == -1 - SL_REJECT_OUT_OF_ORDER);
    CHECK(apply(&h, 10, 101, NAN) == -1 - SL_REJECT_NONFINITE);
    CHECK(apply(&h, 10, 101, INFINITY) == -1 - SL_REJECT_NONFINITE);
    CHECK(apply(&h, 10, 101, -INFINITY) == -1 - SL_REJECT_NONFINITE);
    CHECK(apply(&h, 10, NOW_US + c.future_skew_us + 1, 1.0f) == -1 - SL_REJECT_FUTURE);
    CHECK(apply(&h, 11, NOW_US + c.future_skew_us, 1.0f) == 0); /* exactly at the edge */
    /* A new sensor's first reading, if rejected, creates nothing. */
    CHECK(apply(&h, 50, 1, NAN) == -1 - SL_REJECT_NONFINITE);
    CHECK(sl_store_sensors_count(&h.store) == 4);
    CHECK(sl_store_snapshot(&h.store, 10, &h.view) == 0);
    CHECK(h.view.count == 2 && h.view.readings_total == 2);
    CHECK(h.view.t_us[1] == 100 && h.view.value[1] == 2.0f);
    harness_close(&h);
}

/* Build a batch frame by hand (no CRC needed: sl_store_apply takes a decoded batch). */
static void test_apply_batch(void)
{
    static uint8_t readings[SL_BATCH_COUNT_MAX * SL_READING_BYTES];
    struct harness h;
    struct sl_store_config c;
    small_config(&c, 70000, 4);
    harness_open(&h, &c);
    for (uint32_t i = 0; i < SL_BATCH_COUNT_MAX; i++) {
        uint8_t *p = readings + (size_t)i * SL_READING_BYTES;
        sl_store_u32(p, i);
        sl_store_u32(p + 4, i);
        sl_store_f32(p + 8, i % 1000 == 0 ? NAN : (float)i);
    }
    struct sl_batch batch = {.header = {.count = SL_BATCH_COUNT_MAX, .base_time_us = 5000},
                             .readings = readings};
    struct sl_apply_result r;
    sl_store_apply(&h.store, &batch, NOW_US, &r);
    CHECK_EQ_U64(r.rejected, 66);
    CHECK_EQ_U64(r.rejected_by_reason[SL_REJECT_NONFINITE], 66);
    CHECK_EQ_U64(r.accepted, SL_BATCH_COUNT_MAX - 66);
    CHECK_EQ_U64(sl_store_sensors_count(&h.store), SL_BATCH_COUNT_MAX - 66);
    CHECK_EQ_U64(atomic_load(&h.store.counters.readings_accepted), r.accepted);
    CHECK_EQ_U64(atomic_load(&h.store.counters.readings_rejected[SL_REJECT_NONFINITE]), 66);
    CHECK(sl_store_snapshot(&h.store, 65534, &h.view) == 0);
    CHECK(h.view.t_us[0] == 5000 + 65534 && h.view.value[0] == 65534.0f);
    /* base + offset past INT64_MAX is beyond any clock: future, not a wrap. */
    sl_store_u32(readings, 1);
    sl_store_u32(readings + 4, 10);
    sl_store_f32(readings + 8, 1.0f);
    batch.header.count = 1;
    batch.header.base_time_us = INT64_MAX - 5;
    sl_store_apply(&h.store, &batch, NOW_US, &r);
    CHECK(r.rejected_by_reason[SL_REJECT_FUTURE] == 1 && r.accepted == 0);
    harness_close(&h);
}

/* Gaps wider than 32 bits of microseconds take an escape slot. */
static void test_wide_gaps(void)
{
    struct harness h;
    struct sl_store_config c;
    small_config(&c, 2, 5);
    harness_open(&h, &c);
    int64_t hour2 = 2LL * 3600 * 1000000;
    int64_t t0 = -3 * hour2; /* negative times are valid event times */
    for (int i = 0; i < 4; i++) {
        CHECK(apply(&h, 1, t0 + i * hour2, (float)i) == 0);
    }
    /* 4 readings, 3 escapes = 7 slots > 5: only the newest that fit remain. */
    CHECK(sl_store_snapshot(&h.store, 1, &h.view) == 0);
    CHECK(h.view.readings_total == 4);
    CHECK(h.view.count == 3); /* 1 + 2 + 2 slots: the oldest's escape is dropped */
    CHECK(h.view.t_us[0] == t0 + hour2 && h.view.t_us[2] == t0 + 3 * hour2);
    CHECK(h.view.value[0] == 1.0f && h.view.value[2] == 3.0f);
    CHECK(apply(&h, 1, t0 + 3 * hour2 + 1, 9.0f) == 0);
    CHECK(sl_store_snapshot(&h.store, 1, &h.view) == 0);
    CHECK(h.view.count == 3 && h.view.t_us[2] == t0 + 3 * hour2 + 1);
    /* The largest possible gap: INT64_MIN-ish to now. */
    CHECK(apply(&h, 2, INT64_MIN + 1, 1.0f) == 0);
    CHECK(apply(&h, 2, NOW_US, 2.0f) == 0);
    CHECK(sl_store_snapshot(&h.store, 2, &h.view) == 0);
    CHECK(h.view.count == 2 && h.view.t_us[0] == INT64_MIN + 1 && h.view.t_us[1] == NOW_US);
    harness_close(&h);
}

/* ---- the randomized brute-force comparison ---- */

struct ref_sensor {
    uint32_t id;
    uint32_t n, cap;
    int64_t *t;
    float *v;
    double ewma;
};

static void ref_push(struct ref_sensor *r, int64_t t, float v, int64_t half_life_us)
{
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 64;
        r->t = realloc(r->t, r->cap * sizeof *r->t);
        r->v = realloc(r->v, r->cap * sizeof *r->v);
    }
    if (r->n == 0) {
        r->ewma = v;
    } else {
        double keep = exp2(-(double)((uint64_t)t - (uint64_t)r->t[r->n - 1]) / (double)half_life_us);
        r->ewma = v + keep * (r->ewma - v);
    }
    r->t[r->n] = t;
    r->v[r->n] = v;
    r->n++;
}

/*
 * Index of the oldest reading the ring retains: the longest suffix whose
 * slots fit, where each reading takes 1 slot plus 1 for an escape when its
 * gap exceeds 32 bits, except the oldest, whose escape is dropped.
 */
static uint32_t ref_retained_from(const struct ref_sensor *r, uint32_t ring)
{
    uint64_t slots = 0;
    uint32_t k = r->n;
    while (k > 0) {
        uint32_t j = k - 1;
        uint32_t escape = j > 0 && (uint64_t)r->t[j] - (uint64_t)r->t[j - 1] > UINT32_MAX;
        slots += 1 + escape;
        if (slots - escape > ring) {
            break;
        }
        k = j;
    }
    return k;
}

static int64_t floor_div64(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

static void ref_stats(const struct ref_sensor *r, uint32_t from, uint32_t to,
                      struct sl_window_stats *out)
{
    memset(out, 0, sizeof *out);
    if (from >= to) {
        return;
    }
    double sum = 0, m2 = 0;
    out->min = INFINITY;
    out->max = -INFINITY;
    for (uint32_t i = from; i < to; i++) {
        sum += r->v[i];
        out->min = r->v[i] < out->min ? r->v[i] : out->min;
        out->max = r->v[i] > out->max ? r->v[i] : out->max;
    }
    out->count = to - from;
    out->mean = sum / out->count;
    for (uint32_t i = from; i < to; i++) {
        m2 += (r->v[i] - out->mean) * (r->v[i] - out->mean);
    }
    out->stddev = out->count > 1 ? sqrt(m2 / (out->count - 1)) : 0;
}

/* First reference index with t >= x (history is sorted). */
static uint32_t ref_lower(const struct ref_sensor *r, int64_t x)
{
    uint32_t lo = 0, hi = r->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (r->t[mid] < x) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

static void check_stats(const struct sl_window_stats *got, const struct sl_window_stats *want)
{
    CHECK_EQ_U64(got->count, want->count);
    if (want->count == 0) {
        return;
    }
    CHECK_NEAR(got->mean, want->mean, 1e-9);
    CHECK(got->min == want->min && got->max == want->max);
    CHECK_NEAR(got->stddev, want->stddev, 1e-7);
}

static void check_sensor(struct harness *h, const struct ref_sensor *r, unsigned long *windows_exact,
                         unsigned long *windows_coarse)
{
    const struct sl_store_config *c = &h->store.config;
    CHECK(sl_store_snapshot(&h->store, r->id, &h->view) == 0);
    CHECK_EQ_U64(h->view.readings_total, r->n);
    uint32_t from = ref_retained_from(r, c->ring_readings);
    CHECK_EQ_U64(h->view.count, r->n - from);
    int same = h->view.count == r->n - from;
    for (uint32_t i = 0; same && i < h->view.count; i++) {
        same = h->view.t_us[i] == r->t[from + i] && h->view.value[i] == r->v[from + i];
    }
    CHECK(same);
    CHECK_NEAR(h->view.ewma, r->ewma, 1e-9);
    struct sl_sensor_summary sum;
    CHECK(sl_store_summary(&h->store, r->id, &sum) == 0);
    CHECK(sum.id == r->id && sum.readings_total == r->n && sum.count == h->view.count);
    CHECK(sum.last_t_us == r->t[r->n - 1] && sum.last_value == r->v[r->n - 1]);
    int64_t last = r->t[r->n - 1];
    for (uint32_t w = 0; w < c->windows_count; w++) {
        int64_t cutoff = last - c->windows_us[w];
        struct sl_window_stats got, want;
        sl_view_window(&h->view, c->windows_us[w], &got);
        uint32_t first_in = ref_lower(r, cutoff + 1);
        bool stored_rule = from == 0 || r->t[from] <= cutoff;
        CHECK(got.exact == stored_rule);
        if (got.exact) {
            CHECK(first_in >= from); /* exact never claims a dropped reading */
            ref_stats(r, first_in, r->n, &want);
            (*windows_exact)++;
        } else {
            int64_t res = h->store.coarse_resolution_us;
            CHECK(got.resolution_us == res);
            uint32_t b0 = ref_lower(r, floor_div64(cutoff, res) * res);
            ref_stats(r, b0, r->n, &want);
            (*windows_coarse)++;
        }
        check_stats(&got, &want);
    }
}

static int64_t next_time(uint64_t *rng, int64_t last, int *kind)
{
    uint64_t roll = tl_rand(rng) % 1000;
    *kind = 0;
    if (roll < 10) {
        *kind = 1; /* out of order */
        return last - 1 - (int64_t)(tl_rand(rng) % 1000000);
    }
    if (roll < 15) {
        return last + 4295LL * 1000000 + (int64_t)(tl_rand(rng) % 8000000000LL); /* > 2^32 us */
    }
    if (roll < 35) {
        return last; /* equal times are accepted */
    }
    return last + 1 + (int64_t)(tl_rand(rng) % 2000000);
}

static void random_run(uint32_t ring, uint64_t seed, uint32_t readings)
{
    enum { SENSORS = 1000 };
    struct harness h;
    struct sl_store_config c;
    small_config(&c, SENSORS, ring);
    harness_open(&h, &c);
    static struct ref_sensor refs[SENSORS];
    memset(refs, 0, sizeof refs);
    uint64_t rng = seed, expect_rejected[SL_REJECT_COUNT] = {0}, expect_accepted = 0;
    int64_t t_start = NOW_US - 30LL * 24 * 3600 * 1000000;
    for (uint32_t i = 0; i < SENSORS; i++) {
        refs[i].id = (uint32_t)tl_rand(&rng) | 1u; /* odd: distinct from the unknown ids below */
        for (uint32_t j = 0; j < i; j++) {
            if (refs[j].id == refs[i].id) {
                refs[i].id += 2;
                j = (uint32_t)-1;
            }
        }
        CHECK(apply(&h, refs[i].id, t_start, 0.0f) == 0);
        ref_push(&refs[i], t_start, 0.0f, c.ewma_half_life_us);
        expect_accepted++;
    }
    unsigned long exact = 0, coarse = 0;
    for (uint32_t n = 0; n < readings; n++) {
        struct ref_sensor *r = &refs[tl_rand(&rng) % SENSORS];
        int kind;
        int64_t t = next_time(&rng, r->t[r->n - 1], &kind);
        float v = (float)(20.0 + 5.0 * sin((double)r->n / 50.0) + (double)(tl_rand(&rng) % 1000) / 1000.0);
        uint64_t roll = tl_rand(&rng) % 1000;
        uint32_t id = r->id;
        if (roll < 10) {
            v = roll < 5 ? NAN : -INFINITY;
        } else if (roll < 13) {
            t = NOW_US + c.future_skew_us + 1 + (int64_t)(tl_rand(&rng) % 1000);
        } else if (roll < 16) {
            id = (uint32_t)tl_rand(&rng) & ~1u; /* even: never a known sensor */
        }
        /* The rules apply in the store's order: value, clock, table, order. */
        int want = 0;
        if (!isfinite(v)) {
            want = -1 - SL_REJECT_NONFINITE;
        } else if (t > NOW_US + c.future_skew_us) {
            want = -1 - SL_REJECT_FUTURE;
        } else if (id != r->id) {
            want = -1 - SL_REJECT_SENSOR_LIMIT;
        } else if (kind == 1) {
            want = -1 - SL_REJECT_OUT_OF_ORDER;
        }
        int got = apply(&h, id, t, v);
        CHECK(got == want);
        if (got == 0) {
            ref_push(r, t, v, c.ewma_half_life_us);
            expect_accepted++;
        } else {
            expect_rejected[-1 - got]++;
        }
        if ((n + 1) % (readings / 8) == 0) {
            for (uint32_t s = 0; s < SENSORS; s++) {
                check_sensor(&h, &refs[s], &exact, &coarse);
            }
        }
    }
    CHECK_EQ_U64(sl_store_sensors_count(&h.store), SENSORS);
    printf("random_run ring=%u: %u readings, %lu exact and %lu coarse windows checked\n", ring,
           readings, exact, coarse);
    CHECK(exact > 300 && coarse > 300); /* both paths really exercised */
    for (uint32_t k = 0; k < SL_REJECT_COUNT; k++) {
        CHECK(expect_rejected[k] > 300); /* every rule really exercised */
    }
    CHECK(expect_accepted > readings * 9 / 10);
    for (uint32_t s = 0; s < SENSORS; s++) {
        free(refs[s].t);
        free(refs[s].v);
    }
    harness_close(&h);
}

static void test_bytes_per_reading(void)
{
    struct sl_store_config c;
    sl_store_config_default(&c);
    struct sl_plan plan;
    sl_plan_init(&plan);
    sl_store_plan(&c, &plan);
    /* Derive from the plan: the raw tier's parts over the readings it retains. */
    uint64_t raw = sl_plan_part_bytes(&plan, "sensor_index") + sl_plan_part_bytes(&plan, "sensor_records") +
                   sl_plan_part_bytes(&plan, "ring_slots");
    double per_reading = (double)raw / ((double)c.sensors_max * c.ring_readings);
    printf("default config: %.4f bytes per retained reading (raw tier), plan %llu bytes\n",
           per_reading, (unsigned long long)plan.total_bytes);
    CHECK(per_reading <= 8.04);
    CHECK_NEAR(per_reading, sl_store_bytes_per_reading(&c), 1e-12);
    /* A padded ring (a multiple of 16 slots) costs one more line a sensor; others none. */
    CHECK_EQ_U64(sl_plan_part_bytes(&plan, "ring_slots"), (uint64_t)c.sensors_max * (4096 + 8) * 8);
    c.ring_readings = 1000;
    sl_plan_init(&plan);
    sl_store_plan(&c, &plan);
    CHECK_EQ_U64(sl_plan_part_bytes(&plan, "ring_slots"), (uint64_t)c.sensors_max * 1000 * 8);
    /* About 8 bytes a reading across sizes down to a ring of 1,024 readings. */
    for (uint32_t ring = 1024; ring <= (1u << 20); ring *= 4) {
        c.ring_readings = ring;
        CHECK(sl_store_bytes_per_reading(&c) <= 8.15);
    }
    c.sensors_max = SL_SENSORS_MAX;
    c.ring_readings = 1024;
    CHECK(sl_store_bytes_per_reading(&c) <= 8.15);
}

int main(void)
{
    test_config_checks();
    test_empty_and_one();
    test_full_ring();
    test_full_table_and_rejects();
    test_apply_batch();
    test_wide_gaps();
    test_bytes_per_reading();
    random_run(200, 0x1234567, 1200000);
    random_run(5, 0x7654321, 300000);
    TEST_END("test_store");
}
