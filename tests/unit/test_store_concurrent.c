/*
 * test_store_concurrent: readers on other threads always see a consistent
 * sensor, and never block the writer.
 *
 * One writer thread appends readings to 8 sensors on a tiny ring (so every
 * append also evicts) with values derived from their times (v = t mod 1000,
 * widened gaps now and then so escapes come and go). Two reader threads
 * snapshot and summarise those sensors as fast as they can. Every snapshot
 * must be internally consistent: times non-decreasing, each value equal to
 * its time's function, count and readings_total coherent, the newest
 * reading equal to the summary's when both were taken without a write in
 * between. A torn read would break one of these. The writer counts its
 * appends (at least APPENDS, and on until the readers took SNAPSHOTS_MIN
 * snapshots, so the race does not depend on the threads' relative speed);
 * the test asserts every one is stored (it was never blocked) and that the
 * readers really raced it.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "core/plan.h"
#include "store/store.h"
#include "testlib.h"

#define NOW_US 1800000000000000LL
#define SENSORS 8u
#define RING 16u
#define APPENDS 3000000u          /* at least; more until the readers took SNAPSHOTS_MIN */
#define APPENDS_MAX (100u * APPENDS) /* a bound: past it the test fails rather than spins */
#define SNAPSHOTS_MIN 1000u

static struct sl_store store;
static _Atomic int writer_done;
static _Atomic uint64_t appends;
static _Atomic uint64_t snapshots_ok, snapshots_busy, bad_views;

static float value_of(int64_t t)
{
    return (float)(t % 1000);
}

static void *writer(void *arg)
{
    (void)arg;
    int64_t t[SENSORS];
    for (uint32_t s = 0; s < SENSORS; s++) {
        t[s] = 1000000;
    }
    /*
     * Keep writing until the readers have taken enough snapshots to have
     * really raced the writer, however the two threads' speeds compare (a
     * faster writer, or a sanitizer build, must not make the race vanish).
     */
    uint32_t n = 0;
    for (; n < APPENDS_MAX && (n < APPENDS || atomic_load(&snapshots_ok) < SNAPSHOTS_MIN); n++) {
        uint32_t s = n % SENSORS;
        t[s] += (n % 4099 == 0) ? 5000000000LL : 1 + n % 7; /* a 32-bit escape now and then */
        if (sl_store_apply_reading(&store, s, t[s], value_of(t[s]), NOW_US) != 0) {
            atomic_fetch_add(&bad_views, 1);
        }
    }
    atomic_store(&appends, n);
    atomic_store(&writer_done, 1);
    return NULL;
}

static int view_consistent(const struct sl_sensor_view *v)
{
    if (v->count == 0 || v->count > RING || v->readings_total < v->count) {
        return 0;
    }
    for (uint32_t i = 0; i < v->count; i++) {
        if (v->value[i] != value_of(v->t_us[i]) || (i > 0 && v->t_us[i] < v->t_us[i - 1])) {
            return 0;
        }
    }
    return 1;
}

static void *reader(void *arg)
{
    (void)arg;
    struct sl_store_config *c = &store.config;
    void *mem = malloc(sl_store_view_bytes(c));
    struct sl_sensor_view view;
    sl_store_view_init(&view, c, mem);
    for (uint32_t n = 0; !atomic_load(&writer_done); n++) {
        uint32_t id = n % SENSORS;
        int rc = sl_store_snapshot(&store, id, &view);
        if (rc == -EBUSY) {
            atomic_fetch_add(&snapshots_busy, 1);
            continue;
        }
        if (rc == -ENOENT) {
            continue; /* not created yet */
        }
        if (!view_consistent(&view)) {
            atomic_fetch_add(&bad_views, 1);
        }
        struct sl_window_stats w;
        sl_view_window(&view, c->windows_us[0], &w);
        if (w.count == 0 || (w.exact && w.count > view.count) || !(w.min <= w.max)) {
            atomic_fetch_add(&bad_views, 1);
        }
        struct sl_sensor_summary sum;
        if (sl_store_summary(&store, id, &sum) == 0 &&
            (sum.last_value != value_of(sum.last_t_us) || sum.readings_total < view.readings_total)) {
            atomic_fetch_add(&bad_views, 1);
        }
        atomic_fetch_add(&snapshots_ok, 1);
    }
    free(mem);
    return NULL;
}

int main(void)
{
    struct sl_store_config c;
    sl_store_config_default(&c);
    c.sensors_max = SENSORS;
    c.ring_readings = RING;
    struct sl_plan plan;
    sl_plan_init(&plan);
    sl_store_plan(&c, &plan);
    struct sl_arena arena;
    CHECK(sl_arena_map(&arena, plan.total_bytes) == 0);
    sl_store_init(&store, &c, &arena);
    pthread_t w, r1, r2;
    CHECK(pthread_create(&r1, NULL, reader, NULL) == 0);
    CHECK(pthread_create(&r2, NULL, reader, NULL) == 0);
    CHECK(pthread_create(&w, NULL, writer, NULL) == 0);
    pthread_join(w, NULL);
    pthread_join(r1, NULL);
    pthread_join(r2, NULL);
    printf("%llu appends; %llu consistent snapshots, %llu busy, %llu inconsistent\n",
           (unsigned long long)appends,
           (unsigned long long)snapshots_ok, (unsigned long long)snapshots_busy,
           (unsigned long long)bad_views);
    CHECK_EQ_U64(atomic_load(&bad_views), 0);
    CHECK(atomic_load(&snapshots_ok) >= SNAPSHOTS_MIN); /* the readers really raced the writer */
    uint64_t total = 0;
    for (uint32_t s = 0; s < SENSORS; s++) {
        struct sl_sensor_summary sum;
        CHECK(sl_store_summary(&store, s, &sum) == 0);
        total += sum.readings_total;
    }
    CHECK_EQ_U64(total, atomic_load(&appends)); /* the writer was never blocked or refused */
    sl_arena_unmap(&arena);
    TEST_END("test_store_concurrent");
}
