/*
 * The named-series registry (src/store/series.c): ids from the base in
 * creation order, the same id for the same name, lookups both ways, each
 * limit refusing without creating anything, restore in id order (and its
 * refusals of damaged input), a full index of colliding probes, the memory
 * plan at 32 B a series plus the names, and readers on another thread that
 * only ever see whole entries while the writer creates them (run under TSan
 * in the suite's TSan stage).
 */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>

#include "store/series.h"
#include "testlib.h"

struct harness {
    struct sl_plan plan;
    struct sl_arena arena;
    struct sl_series s;
};

static void setup(struct harness *h, uint32_t capacity, uint64_t name_bytes, uint32_t base)
{
    memset(h, 0, sizeof *h);
    sl_plan_init(&h->plan);
    sl_series_plan(capacity, name_bytes, &h->plan);
    CHECK(sl_arena_map(&h->arena, h->plan.total_bytes) == 0);
    sl_series_init(&h->s, capacity, name_bytes, base, 0x1234567890abcdefull, &h->arena);
    CHECK(h->arena.used_bytes <= h->plan.total_bytes);
}

static void teardown(struct harness *h)
{
    sl_arena_unmap(&h->arena);
}

static int intern(struct sl_series *s, const char *name, uint32_t *id, int *created)
{
    return sl_series_intern(s, name, (uint32_t)strlen(name), id, created);
}

static void test_basics(void)
{
    struct harness h;
    setup(&h, 4, 64, SL_SERIES_ID_BASE_DEFAULT);
    uint32_t id, id2;
    int created;
    CHECK(intern(&h.s, "boiler,room=a temp", &id, &created) == 0 && created && id == SL_SERIES_ID_BASE_DEFAULT);
    CHECK(intern(&h.s, "boiler,room=b temp", &id2, &created) == 0 && created && id2 == id + 1);
    CHECK(intern(&h.s, "boiler,room=a temp", &id2, &created) == 0 && !created && id2 == id);
    CHECK(sl_series_lookup(&h.s, "boiler,room=b temp", 18, &id2) == 0 && id2 == id + 1);
    CHECK(sl_series_lookup(&h.s, "boiler,room=c temp", 18, &id2) == -1);
    CHECK(sl_series_lookup(&h.s, "boiler,room=a tem", 17, &id2) == -1); /* a prefix is another name */
    const char *name;
    uint32_t len;
    CHECK(sl_series_name(&h.s, id + 1, &name, &len) == 0 && len == 18 && memcmp(name, "boiler,room=b temp", 18) == 0);
    CHECK(sl_series_name(&h.s, id + 2, &name, &len) == -1);
    CHECK(sl_series_name(&h.s, id - 1, &name, &len) == -1);
    CHECK(sl_series_count(&h.s) == 2 && sl_series_name_bytes(&h.s) == 36);
    /* Limits: too long, the name arena, the table; nothing is created by a refusal. */
    char big[SL_SERIES_NAME_MAX + 2];
    memset(big, 'x', sizeof big);
    CHECK(sl_series_intern(&h.s, big, SL_SERIES_NAME_MAX + 1, &id2, &created) == -SL_SERIES_TOO_LONG);
    CHECK(sl_series_intern(&h.s, big, 0, &id2, &created) == -SL_SERIES_TOO_LONG);
    CHECK(sl_series_intern(&h.s, big, 29, &id2, &created) == -SL_SERIES_NAMES_FULL && !created);
    CHECK(sl_series_intern(&h.s, big, 28, &id2, &created) == 0 && created && id2 == id + 2);
    CHECK(sl_series_name_bytes(&h.s) == 64);
    CHECK(intern(&h.s, "", &id2, &created) == -SL_SERIES_TOO_LONG);
    CHECK(sl_series_count(&h.s) == 3);
    teardown(&h);

    setup(&h, 2, 1024, 100);
    CHECK(intern(&h.s, "a", &id, &created) == 0 && id == 100);
    CHECK(intern(&h.s, "b", &id, &created) == 0 && id == 101);
    CHECK(intern(&h.s, "c", &id, &created) == -SL_SERIES_FULL && !created);
    CHECK(intern(&h.s, "a", &id, &created) == 0 && id == 100); /* a known name still resolves when full */
    teardown(&h);
}

static void test_restore(void)
{
    struct harness h;
    setup(&h, 8, 256, 1000);
    CHECK(sl_series_restore(&h.s, 1000, "m f", 3) == 0);
    CHECK(sl_series_restore(&h.s, 1000, "m f", 3) == 0); /* again (a checkpoint, then the log) */
    CHECK(sl_series_restore(&h.s, 1001, "m f", 3) == -SL_SERIES_BAD_ID); /* a name under two ids */
    CHECK(sl_series_restore(&h.s, 1000, "m x", 3) == -SL_SERIES_BAD_ID); /* an id with two names */
    CHECK(sl_series_restore(&h.s, 999, "m y", 3) == -SL_SERIES_BAD_ID);  /* below the base */
    CHECK(sl_series_restore(&h.s, 1008, "m y", 3) == -SL_SERIES_BAD_ID); /* past the capacity */
    CHECK(sl_series_restore(&h.s, 1001, "", 0) == -SL_SERIES_TOO_LONG);
    /* A gap: the ids between stay taken, without names. */
    CHECK(sl_series_restore(&h.s, 1003, "m g", 3) == 0);
    CHECK(sl_series_count(&h.s) == 4);
    const char *name;
    uint32_t len;
    CHECK(sl_series_name(&h.s, 1001, &name, &len) == -1 && sl_series_name(&h.s, 1002, &name, &len) == -1);
    CHECK(sl_series_name(&h.s, 1003, &name, &len) == 0 && len == 3 && memcmp(name, "m g", 3) == 0);
    CHECK(sl_series_restore(&h.s, 1002, "m z", 3) == -SL_SERIES_BAD_ID); /* a hole is never filled */
    uint32_t id;
    int created;
    CHECK(intern(&h.s, "m g", &id, &created) == 0 && !created && id == 1003);
    CHECK(intern(&h.s, "m h", &id, &created) == 0 && created && id == 1004);
    teardown(&h);
}

static void test_many_and_plan(void)
{
    enum { N = 100000 };
    struct harness h;
    setup(&h, N, (uint64_t)N * 40, SL_SERIES_ID_BASE_DEFAULT);
    char name[64];
    int ok = 1;
    for (uint32_t i = 0; i < N && ok; i++) {
        int n = snprintf(name, sizeof name, "cpu,host=h%u,cpu=cpu%u usage", i / 8, i % 8);
        uint32_t id;
        int created;
        ok = sl_series_intern(&h.s, name, (uint32_t)n, &id, &created) == 0 && created &&
             id == SL_SERIES_ID_BASE_DEFAULT + i;
    }
    CHECK(ok);
    for (uint32_t i = 0; i < N && ok; i++) {
        int n = snprintf(name, sizeof name, "cpu,host=h%u,cpu=cpu%u usage", i / 8, i % 8);
        uint32_t id;
        ok = sl_series_lookup(&h.s, name, (uint32_t)n, &id) == 0 && id == SL_SERIES_ID_BASE_DEFAULT + i;
    }
    CHECK(ok);
    /* The plan beyond the names: a 24 B entry and 2^18 slots of 4 B for 100,000 series (10.5 B each). */
    uint64_t beyond = h.plan.total_bytes - (uint64_t)N * 40;
    CHECK(beyond == (uint64_t)N * 24 + (1u << 18) * 4);
    printf("test_series: %u series, %.1f B a series beyond its name\n", (unsigned)N, (double)beyond / N);
    teardown(&h);
}

/* ---- a reader thread beside the writer ---- */

enum { CONCURRENT = 20000 };

struct race {
    struct sl_series *s;
    _Atomic int started;
    _Atomic int done;
    unsigned long seen, bad;
};

static void *reader(void *arg)
{
    struct race *r = arg;
    char name[64];
    atomic_store(&r->started, 1);
    for (;;) {
        int last = atomic_load(&r->done); /* one more pass after the writer is done */
        uint32_t count = sl_series_count(r->s);
        for (uint32_t i = count > 64 ? count - 64 : 0; i < count; i++) {
            int n = snprintf(name, sizeof name, "s%u f", i);
            uint32_t id;
            const char *got;
            uint32_t len;
            /* Every series the count says exists can be found both ways, whole. */
            if (sl_series_lookup(r->s, name, (uint32_t)n, &id) != 0 || id != 7 + i ||
                sl_series_name(r->s, id, &got, &len) != 0 || len != (uint32_t)n || memcmp(got, name, len) != 0) {
                r->bad++;
            }
            r->seen++;
        }
        if (last) {
            break;
        }
    }
    return NULL;
}

static void test_readers(void)
{
    struct harness h;
    setup(&h, CONCURRENT, (uint64_t)CONCURRENT * 16, 7);
    struct race r = {.s = &h.s};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, reader, &r) == 0);
    while (!atomic_load(&r.started)) {
        sched_yield();
    }
    char name[64];
    for (uint32_t i = 0; i < CONCURRENT; i++) {
        if (i % 64 == 0) {
            sched_yield(); /* more interleaving; what is checked does not depend on it */
        }
        int n = snprintf(name, sizeof name, "s%u f", i);
        uint32_t id;
        int created;
        CHECK(sl_series_intern(&h.s, name, (uint32_t)n, &id, &created) == 0);
    }
    atomic_store(&r.done, 1);
    pthread_join(t, NULL);
    CHECK(r.bad == 0 && r.seen > 0);
    printf("test_series: the reader checked %lu lookups beside the writer, %lu bad\n", r.seen, r.bad);
    teardown(&h);
}

int main(void)
{
    test_basics();
    test_restore();
    test_many_and_plan();
    test_readers();
    TEST_END("test_series");
}
