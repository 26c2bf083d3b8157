/*
 * test_checkpoint: checkpoints and start-up recovery give back exactly the
 * state that was written.
 *
 * - A fuzzy checkpoint written in many small chunks while batches keep
 *   arriving (new sensors among them, the table filling up) loads into a
 *   fresh store where every sensor equals, byte for byte, the live sensor
 *   as it was at its chunk's lsn (checked against a reference store built
 *   from the same batches, applying to each sensor only the readings up to
 *   its chunk's lsn), and the stream tables equal the live ones when the
 *   stream chunk was written. begin/step never allocate.
 * - Full recovery (checkpoint + log replay through sl_recover) into a fresh
 *   store equals the live store byte for byte (records, rings, coarse
 *   buckets, the index) and every snapshot view, and the stream tables:
 *   with the newest checkpoint, with the newest corrupted (falls back to the
 *   older one), with both corrupted and with none (full replay).
 * - A checkpoint of another geometry is skipped; a truncated file, a bad
 *   CRC, a leftover .tmp, and records with valid CRCs but broken invariants
 *   (nonzero ring padding among them) are skipped; only the newest
 *   SL_CHECKPOINTS_KEPT files are kept.
 * - A version 1 file (separate value and delta arrays, unpadded rings),
 *   kept in tests/data/checkpoint-v1/, loads into today's layout equal to
 *   the same readings applied today.
 * - I/O faults in the writer (pwrite EIO mid-checkpoint, fdatasync EIO at
 *   the end, a failing open, short writes): the partial file is removed,
 *   the error returned, a later checkpoint succeeds and loads.
 * - A version 2 file (no series chunk), kept in tests/data/checkpoint-v2/,
 *   loads the same way and leaves a registry empty; the next checkpoint
 *   is version 3.
 * - The series chunk (version 3): a registry of a few hundred names (some
 *   1,024 bytes, bytes like '"', '\\', 0x01, 0xff) loads into a fresh one
 *   with every id and name, the chunk's bytes as docs/STORAGE.md says;
 *   holes stay holes and the next id is the same; a smaller running
 *   registry keeps what fits and counts the rest; a damaged chunk (CRC,
 *   counts, a bad entry, ids not ascending) makes the file skipped and the
 *   registry is left as the fallback has it (or empty).
 * - The trailer's running CRC equals a plain CRC-32C of the file.
 *
 * SL_CHECKPOINT_SEED_DIR=dir: also write fuzz seeds (the fuzz target's
 * geometry) into dir.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc_count.h"
#include "core/assert.h"
#include "core/clock.h"
#include "core/crc32c.h"
#include "core/io.h"
#include "core/plan.h"
#include "store/checkpoint.h"
#include "store/log.h"
#include "store/recover.h"
#include "store/series.h"
#include "store/store.h"
#include "store/streams.h"
#include "testlib.h"

#define CLOCK0_US 1800000000000000LL
#define READINGS_MAX 64u
#define STREAMS_CAPACITY 16u
#define CK_VERSION_TODAY 3u /* what the writer writes; 2 and 1 are still read */

/* ---- environment: a store and two stream tables in one arena (plus the log's part) ---- */

struct env {
    struct sl_arena arena;
    struct sl_store store;
    struct sl_streams tcp, udp;
};

static void env_open(struct env *e, const struct sl_store_config *config,
                     const struct sl_log_config *log_config)
{
    struct sl_plan plan;
    sl_plan_init(&plan);
    sl_store_plan(config, &plan);
    sl_streams_plan(STREAMS_CAPACITY, &plan, "streams_tcp");
    sl_streams_plan(STREAMS_CAPACITY, &plan, "streams_udp");
    if (log_config != NULL) {
        sl_log_plan(log_config, &plan);
    }
    memset(e, 0, sizeof *e);
    CHECK(sl_arena_map(&e->arena, plan.total_bytes) == 0);
    sl_store_init(&e->store, config, &e->arena);
    sl_streams_init(&e->tcp, STREAMS_CAPACITY, &e->arena);
    sl_streams_init(&e->udp, STREAMS_CAPACITY, &e->arena);
}

static void env_close(struct env *e)
{
    sl_arena_unmap(&e->arena);
}

static void small_config(struct sl_store_config *c, uint32_t sensors, uint32_t ring)
{
    sl_store_config_default(c);
    c->sensors_max = sensors;
    c->ring_readings = ring;
}

/* ---- files ---- */

static void make_dir(char *out, size_t bytes)
{
    snprintf(out, bytes, "/tmp/sl-ckpt-test-XXXXXX");
    CHECK(mkdtemp(out) != NULL);
}

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return;
    }
    char path[4400];
    for (struct dirent *e = readdir(d); e != NULL; e = readdir(d)) {
        if (e->d_name[0] != '.') {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    }
    closedir(d);
    rmdir(dir);
}

static uint32_t count_files(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    uint32_t n = 0;
    size_t sl = strlen(suffix);
    for (struct dirent *e = d ? readdir(d) : NULL; e != NULL; e = readdir(d)) {
        size_t l = strlen(e->d_name);
        if (l >= sl && strcmp(e->d_name + l - sl, suffix) == 0) {
            n++;
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    return n;
}

static void ckpt_path(char *out, size_t bytes, const char *dir, uint64_t seq, const char *ext)
{
    snprintf(out, bytes, "%s/ckpt-%016llx%s", dir, (unsigned long long)seq, ext);
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (f == NULL) {
        *len = 0;
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(*len ? *len : 1);
    CHECK(fread(buf, 1, *len, f) == *len);
    fclose(f);
    return buf;
}

static void write_file(const char *path, const uint8_t *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f != NULL) {
        CHECK(fwrite(buf, 1, len, f) == len);
        fclose(f);
    }
}

static void flip_bit(const char *path, size_t offset)
{
    size_t len;
    uint8_t *buf = read_file(path, &len);
    CHECK(offset < len);
    if (buf != NULL && offset < len) {
        buf[offset] ^= 0x10;
        write_file(path, buf, len);
    }
    free(buf);
}

/*
 * Recompute every CRC of a checkpoint image after an edit (same walk as the
 * fuzz target's): header, each chunk's payload and header, the trailer.
 */
static void fix_crcs(uint8_t *buf, size_t len)
{
    if (len < 128) {
        return;
    }
    sl_store_u32(buf + 124, sl_crc32c(buf, 124));
    size_t off = 128;
    for (uint32_t i = 0; i < 100000 && off + 64 <= len; i++) {
        uint8_t *h = buf + off;
        if (memcmp(h, "SLEN", 4) == 0) {
            sl_store_u32(h + 56, sl_crc32c(buf, off));
            sl_store_u32(h + 60, sl_crc32c(h, 60));
            return;
        }
        uint64_t payload = sl_load_u64(h + 24);
        if (payload > len - off - 64) {
            return;
        }
        sl_store_u32(h + 56, sl_crc32c(h + 64, payload));
        sl_store_u32(h + 60, sl_crc32c(h, 60));
        off += 64 + payload;
    }
}

/* ---- a deterministic workload ---- */

struct gen {
    uint64_t rng;
    uint32_t ids;     /* sensor ids drawn from [0, ids) */
    int64_t clock_us; /* event time; the gateway clock runs 1 s ahead */
    uint64_t tcp_seq[4];
    uint64_t udp_seq[4];
};

struct rec {
    struct sl_batch_header header;
    uint8_t transport;
    int64_t now_us;
    uint8_t readings[READINGS_MAX * SL_READING_BYTES];
};

static void gen_init(struct gen *g, uint64_t seed, uint32_t ids)
{
    memset(g, 0, sizeof *g);
    g->rng = seed;
    g->ids = ids;
    g->clock_us = CLOCK0_US;
}

static void gen_streams(struct gen *g, struct rec *r, uint64_t x)
{
    uint32_t k = (uint32_t)(x >> 20) % 4;
    r->transport = (x >> 16) & 1 ? SL_LOG_TCP : SL_LOG_UDP;
    if (r->transport == SL_LOG_TCP) {
        g->tcp_seq[k] += 1 + ((x >> 24) % 8 == 0 ? 5 : 0);
        r->header.stream_id = 1 + k;
        r->header.batch_seq = g->tcp_seq[k];
    } else {
        uint32_t step = (uint32_t)(x >> 24) % 10;
        g->udp_seq[k] = step == 0 && g->udp_seq[k] > 3 ? g->udp_seq[k] - 3 : g->udp_seq[k] + step;
        r->header.stream_id = 100 + k;
        r->header.batch_seq = g->udp_seq[k];
    }
}

/* A batch with every kind of reading: normal, late, future, overflowing, non-finite, wide gaps. */
static void gen_batch(struct gen *g, struct rec *r)
{
    memset(r, 0, sizeof *r);
    uint64_t x = tl_rand(&g->rng);
    uint32_t count = 1 + (uint32_t)(x % READINGS_MAX);
    g->clock_us += 1000 + (int64_t)(tl_rand(&g->rng) % 50000);
    uint32_t kind = (uint32_t)(x >> 8) % 100;
    if (kind == 0) {
        g->clock_us += (int64_t)1 << 33; /* a gap wider than 32 bits: escape slots */
    }
    int64_t base = g->clock_us;
    base = kind == 1 ? base - 30000000 : kind == 2 ? base + 400000000 : base;
    base = kind == 3 ? INT64_MAX - 1000 : base;
    r->now_us = g->clock_us + 1000000;
    r->header.version = 1;
    r->header.count = (uint16_t)count;
    r->header.base_time_us = base;
    gen_streams(g, r, x);
    for (uint32_t i = 0; i < count; i++) {
        uint64_t y = tl_rand(&g->rng);
        uint8_t *p = r->readings + i * SL_READING_BYTES;
        float v = (float)(y % 100000) / 7.0f;
        v = (y >> 20) % 300 == 0 ? NAN : (y >> 20) % 300 == 1 ? INFINITY : v;
        sl_store_u32(p, (uint32_t)((y >> 32) % g->ids));
        sl_store_u32(p + 4, i * 10 + (uint32_t)(y >> 40) % 10);
        sl_store_f32(p + 8, v);
    }
}

static void rec_batch(const struct rec *r, struct sl_batch *b)
{
    b->header = r->header;
    b->readings = r->readings;
}

/* What the ingest thread does once a record is durable: apply it, update its stream. */
static void apply_live(struct env *e, const struct rec *r)
{
    struct sl_batch b;
    rec_batch(r, &b);
    struct sl_apply_result res;
    sl_store_apply(&e->store, &b, r->now_us, &res);
    if (r->transport == SL_LOG_TCP) {
        struct sl_stream_slot *slot = NULL;
        int rc = sl_streams_admit(&e->tcp, r->header.stream_id, r->header.batch_seq, &slot);
        CHECK(rc == 0);
        if (rc == 0) {
            sl_streams_applied(slot, r->header.batch_seq);
        }
    } else {
        int oos;
        (void)sl_streams_observe(&e->udp, r->header.stream_id, r->header.batch_seq, &oos);
    }
}

/* ---- comparisons ---- */

static void check_streams_equal(const struct sl_streams *a, const struct sl_streams *b)
{
    CHECK_EQ(atomic_load(&a->count), atomic_load(&b->count));
    for (uint32_t i = 0; i <= a->mask; i++) {
        const struct sl_stream_slot *s = &a->slots[i];
        if (!s->used) {
            continue;
        }
        struct sl_stream_slot *t = sl_streams_get((struct sl_streams *)b, s->stream_id, 0);
        CHECK(t != NULL);
        if (t != NULL) {
            CHECK_EQ(t->has_seq, s->has_seq);
            CHECK_EQ_U64(t->last_seq, s->last_seq);
        }
    }
}

static void check_views_equal(const struct sl_store *a, const struct sl_store *b)
{
    uint64_t bytes = sl_store_view_bytes(&a->config);
    void *ma = malloc(bytes), *mb = malloc(bytes);
    struct sl_sensor_view va, vb;
    sl_store_view_init(&va, &a->config, ma);
    sl_store_view_init(&vb, &b->config, mb);
    uint32_t n = sl_store_sensors_count(a);
    uint32_t bad = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t id = sl_store_sensor_id(a, i);
        CHECK(sl_store_snapshot(a, id, &va) == 0);
        CHECK(sl_store_snapshot(b, id, &vb) == 0);
        bool same = va.id == vb.id && va.readings_total == vb.readings_total &&
                    memcmp(&va.ewma, &vb.ewma, sizeof va.ewma) == 0 && va.count == vb.count &&
                    memcmp(va.t_us, vb.t_us, va.count * sizeof va.t_us[0]) == 0 &&
                    memcmp(va.value, vb.value, va.count * sizeof va.value[0]) == 0 &&
                    va.coarse_count == vb.coarse_count &&
                    va.coarse_first_bucket == vb.coarse_first_bucket &&
                    memcmp(va.coarse, vb.coarse, va.coarse_count * sizeof va.coarse[0]) == 0;
        bad += same ? 0 : 1;
    }
    CHECK_EQ(bad, 0);
    free(ma);
    free(mb);
}

/*
 * Records byte-identical but for the writer's coarse cache, which a load
 * resets by design (the coarse tier itself is compared byte for byte, so a
 * wrongly reset cache still shows).
 */
static bool records_equal(const struct sl_sensor *a, const struct sl_sensor *b, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        struct sl_sensor x, y;
        memcpy(&x, &a[i], sizeof x);
        memcpy(&y, &b[i], sizeof y);
        x.coarse_slot = y.coarse_slot = 0;
        x.coarse_end_us = y.coarse_end_us = 0;
        if (memcmp(&x, &y, sizeof x) != 0) {
            return false;
        }
    }
    return true;
}

/* Byte-identical: records, ring ranges, coarse ranges, the index; then every view. */
static void check_stores_equal(const struct sl_store *a, const struct sl_store *b)
{
    uint32_t n = sl_store_sensors_count(a);
    CHECK_EQ(n, sl_store_sensors_count(b));
    if (n != sl_store_sensors_count(b)) {
        return;
    }
    uint64_t stride = a->ring_stride, coarse = a->coarse_buckets_total;
    CHECK(records_equal(a->sensors, b->sensors, n));
    CHECK(memcmp(a->slots, b->slots, n * stride * sizeof(struct sl_slot)) == 0); /* padding too */
    CHECK(memcmp(a->coarse, b->coarse, n * coarse * sizeof(struct sl_coarse_bucket)) == 0);
    CHECK(memcmp(a->index, b->index, ((uint64_t)a->index_mask + 1) * 8) == 0);
    check_views_equal(a, b);
}

/* Every loaded sensor is findable by its id at its index. */
static void check_findable(const struct sl_store *s)
{
    uint32_t n = sl_store_sensors_count(s), bad = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t index;
        bad += sl_store_find(s, s->sensors[i].id, &index) == 0 && index == i ? 0 : 1;
    }
    CHECK_EQ(bad, 0);
}

/* ---- checkpoint driving ---- */

static void ck_config(struct sl_checkpoint_config *c, const char *dir, uint64_t step_bytes,
                      const struct sl_io *io)
{
    memset(c, 0, sizeof *c);
    snprintf(c->dir, sizeof c->dir, "%s", dir);
    c->step_bytes = step_bytes;
    c->io = io;
}

/* begin/step on a "tracked ingest thread": they must not allocate. */
static uint64_t ingest_allocs;

static int tracked_begin(struct sl_checkpointer *ck, uint64_t lsn)
{
    uint64_t before = sl_alloc_count(SL_ALLOC_INGEST);
    sl_alloc_track(SL_ALLOC_INGEST);
    int rc = sl_checkpoint_begin(ck, lsn);
    sl_alloc_track(SL_ALLOC_UNTRACKED);
    ingest_allocs += sl_alloc_count(SL_ALLOC_INGEST) - before;
    return rc;
}

static int tracked_step(struct sl_checkpointer *ck, uint64_t lsn)
{
    uint64_t before = sl_alloc_count(SL_ALLOC_INGEST);
    sl_alloc_track(SL_ALLOC_INGEST);
    int rc = sl_checkpoint_step(ck, lsn);
    sl_alloc_track(SL_ALLOC_UNTRACKED);
    ingest_allocs += sl_alloc_count(SL_ALLOC_INGEST) - before;
    return rc;
}

/* A whole checkpoint of a quiet store; returns the last step's result. */
static int checkpoint_all(struct sl_checkpointer *ck, uint64_t lsn)
{
    int rc = tracked_begin(ck, lsn);
    if (rc != 0) {
        return rc;
    }
    for (uint32_t i = 0; i < 1000000; i++) {
        rc = tracked_step(ck, lsn);
        if (rc != 0) {
            return rc;
        }
    }
    return -ETIMEDOUT;
}

static uint64_t one_sensor_bytes(const struct sl_store *s)
{
    return 64 + (uint64_t)s->ring_stride * 8 + (uint64_t)s->coarse_buckets_total * 32;
}

/* ---- (a) a fuzzy checkpoint under load ---- */

#define A_BEFORE 300u
#define A_MAX 6000u

/* The reference: a record's readings for sensors whose chunk was copied at or after it. */
static void apply_filtered(struct env *ref, const struct env *loaded, const uint64_t *sensor_lsn,
                           const struct rec *r, uint64_t lsn)
{
    struct sl_batch b;
    rec_batch(r, &b);
    for (uint32_t i = 0; i < r->header.count; i++) {
        struct sl_reading rd;
        sl_batch_reading(&b, i, &rd);
        uint32_t index;
        if (sl_store_find(&loaded->store, rd.sensor_id, &index) != 0 || lsn > sensor_lsn[index]) {
            continue;
        }
        if (r->header.base_time_us > INT64_MAX - (int64_t)rd.offset_us) {
            continue;
        }
        (void)sl_store_apply_reading(&ref->store, rd.sensor_id,
                                     r->header.base_time_us + rd.offset_us, rd.value, r->now_us);
    }
}

/* A private copy of a stream table (the live one moves on). */
static void streams_copy(struct sl_streams *out, const struct sl_streams *in)
{
    *out = *in;
    size_t bytes = ((size_t)in->mask + 1) * sizeof(struct sl_stream_slot);
    out->slots = malloc(bytes);
    memcpy(out->slots, in->slots, bytes);
}

/* Step a checkpoint while batches keep coming; returns the lsn at completion. */
static uint64_t drive_under_load(struct sl_checkpointer *ck, struct env *live, struct gen *g,
                                 struct rec *recs, uint64_t *lsn)
{
    int rc = 0;
    while (*lsn < A_MAX - 200) {
        rc = tracked_step(ck, *lsn);
        if (rc != 0) {
            break;
        }
        uint32_t more = 1 + (uint32_t)(*lsn % 3);
        for (uint32_t k = 0; k < more; k++, (*lsn)++) {
            gen_batch(g, &recs[*lsn]);
            apply_live(live, &recs[*lsn]);
        }
    }
    CHECK_EQ(rc, 1);
    return *lsn;
}

/* What the live side knew when the checkpoint completed. */
struct a_expect {
    const struct rec *recs;
    uint64_t records;  /* applied in all, after it completed too */
    uint64_t lsn_done; /* applied when it completed */
    uint32_t sensors;  /* sensors then */
    uint64_t bytes;
    struct sl_streams tcp, udp; /* copies of the tables then */
};

/* Load, then compare with a reference built from each sensor's records up to its chunk lsn. */
static void check_fuzzy_load(const char *dir, const struct sl_store_config *c,
                             const struct a_expect *x)
{
    struct env loaded, ref;
    env_open(&loaded, c, NULL);
    uint64_t *sensor_lsn = calloc(c->sensors_max, sizeof *sensor_lsn);
    struct sl_checkpoint_loaded info;
    CHECK(sl_checkpoint_load(dir, &sl_io_posix, &loaded.store, &loaded.tcp, &loaded.udp, NULL, sensor_lsn,
                             &info) == 0);
    CHECK_EQ_U64(info.seq, 1);
    CHECK_EQ_U64(info.start_lsn, A_BEFORE);
    CHECK_EQ_U64(info.end_lsn, x->lsn_done);
    CHECK_EQ_U64(info.streams_lsn, x->lsn_done);
    CHECK_EQ(info.sensors, x->sensors);
    CHECK_EQ_U64(info.bytes, x->bytes);
    check_findable(&loaded.store);
    uint32_t lsn_order_bad = 0;
    for (uint32_t i = 0; i < x->sensors; i++) {
        bool in_range = sensor_lsn[i] >= A_BEFORE && sensor_lsn[i] <= x->lsn_done;
        lsn_order_bad += in_range && (i == 0 || sensor_lsn[i] >= sensor_lsn[i - 1]) ? 0 : 1;
    }
    CHECK_EQ(lsn_order_bad, 0);
    CHECK(sensor_lsn[x->sensors - 1] > sensor_lsn[0]); /* really fuzzy */
    env_open(&ref, c, NULL);
    for (uint64_t i = 0; i < x->records; i++) {
        apply_filtered(&ref, &loaded, sensor_lsn, &x->recs[i], i + 1);
    }
    check_stores_equal(&ref.store, &loaded.store);
    check_streams_equal(&x->tcp, &loaded.tcp);
    check_streams_equal(&x->udp, &loaded.udp);
    free(sensor_lsn);
    env_close(&ref);
    env_close(&loaded);
}

static void test_fuzzy_checkpoint(void)
{
    char dir[64];
    make_dir(dir, sizeof dir);
    struct sl_store_config c;
    small_config(&c, 200, 16);
    struct env live;
    env_open(&live, &c, NULL);
    struct rec *recs = calloc(A_MAX, sizeof *recs);
    struct gen g;
    gen_init(&g, 42, 60);
    uint64_t lsn = 0; /* record i has lsn i + 1 */
    for (; lsn < A_BEFORE; lsn++) {
        gen_batch(&g, &recs[lsn]);
        apply_live(&live, &recs[lsn]);
    }
    g.ids = 300; /* new sensors from now on, until the table is full */
    uint32_t sensors_at_begin = sl_store_sensors_count(&live.store);
    struct sl_checkpointer *ck = malloc(sizeof *ck);
    struct sl_checkpoint_config cc;
    ck_config(&cc, dir, 3 * one_sensor_bytes(&live.store) + 64, &sl_io_posix);
    sl_checkpoint_init(ck, &cc, &live.store, &live.tcp, &live.udp, sl_checkpoint_next_seq(dir));
    CHECK_EQ_U64(ck->seq, 1);
    CHECK(tracked_begin(ck, lsn) == 0);
    CHECK(sl_checkpoint_begin(ck, lsn) == -EBUSY);
    struct a_expect x = {.recs = recs};
    x.lsn_done = drive_under_load(ck, &live, &g, recs, &lsn);
    x.sensors = sl_store_sensors_count(&live.store);
    x.bytes = atomic_load(&ck->counters.last_bytes);
    streams_copy(&x.tcp, &live.tcp);
    streams_copy(&x.udp, &live.udp);
    CHECK(ck->chunks >= x.sensors / 3);
    CHECK(x.sensors > sensors_at_begin);
    CHECK_EQ(atomic_load(&ck->counters.completed), 1);
    for (uint32_t k = 0; k < 100; k++, lsn++) { /* after completion: not in it */
        gen_batch(&g, &recs[lsn]);
        apply_live(&live, &recs[lsn]);
    }
    x.records = lsn;
    check_fuzzy_load(dir, &c, &x);
    if (sl_alloc_counting_active()) {
        CHECK_EQ_U64(ingest_allocs, 0);
    }
    free(x.tcp.slots);
    free(x.udp.slots);
    free(ck);
    free(recs);
    env_close(&live);
    remove_dir(dir);
}

/* ---- (b) recovery: checkpoint + log replay ---- */

#define B_BATCHES 9000u

struct b_state {
    struct sl_log_config lc;
    struct sl_store_config c;
    struct env live;
    uint16_t counts[B_BATCHES + 1]; /* readings per lsn */
    uint64_t records;
};

static int count_visit(void *ctx, const struct sl_log_record *record)
{
    (void)record;
    (*(uint64_t *)ctx)++;
    return 0;
}

static uint64_t log_append(struct sl_log *log, const struct rec *r)
{
    struct sl_batch b;
    rec_batch(r, &b);
    uint64_t lsn = 0, applicable = 0;
    const struct sl_log_record *record = NULL;
    int rc = sl_log_append(log, &b, r->transport, r->now_us, &lsn, &record);
    CHECK_EQ(rc, 0);
    CHECK_EQ(sl_log_commit(log, sl_clock_monotonic_ns(), &applicable), 0);
    CHECK(applicable >= lsn);
    return lsn;
}

/* The live side: log every batch, apply it, and take two checkpoints along the way. */
static void b_write(struct b_state *st, const char *dir)
{
    char err[256] = "";
    struct sl_log_recovery lr;
    uint64_t visited = 0;
    struct sl_log *log =
        sl_log_open(&st->lc, &st->live.arena, count_visit, &visited, &lr, err, sizeof err);
    CHECK(log != NULL);
    if (log == NULL) {
        fprintf(stderr, "sl_log_open: %s\n", err);
        return;
    }
    CHECK_EQ_U64(visited, 0);
    struct sl_checkpointer *ck = malloc(sizeof *ck);
    struct sl_checkpoint_config cc;
    ck_config(&cc, dir, 8 * one_sensor_bytes(&st->live.store), &sl_io_posix);
    sl_checkpoint_init(ck, &cc, &st->live.store, &st->live.tcp, &st->live.udp, 1);
    struct gen g;
    gen_init(&g, 7, 400);
    uint64_t applied = 0;
    for (uint32_t b = 0; b < B_BATCHES; b++) {
        struct rec r;
        g.ids = 150 + b / 30; /* sensors keep arriving: during, between and after checkpoints */
        gen_batch(&g, &r);
        uint64_t lsn = log_append(log, &r);
        CHECK_EQ_U64(lsn, applied + 1);
        apply_live(&st->live, &r);
        applied = lsn;
        st->counts[lsn] = r.header.count;
        if (b == 3000 || b == 6000) {
            CHECK_EQ(tracked_begin(ck, applied), 0);
        }
        if (ck->active && b % 2 == 0) {
            CHECK(tracked_step(ck, applied) >= 0);
        }
    }
    st->records = applied;
    CHECK(!ck->active);
    CHECK_EQ(atomic_load(&ck->counters.completed), 2);
    free(ck);
    sl_log_close(log);
}

/* Recover into a fresh store and compare with the live one. */
static void b_recover(struct b_state *st, bool expect_used, uint64_t expect_seq)
{
    struct env rec;
    env_open(&rec, &st->c, &st->lc);
    struct sl_recover_result res;
    char err[256] = "";
    struct sl_log *log =
        sl_recover(&st->lc, &rec.arena, &rec.store, &rec.tcp, &rec.udp, NULL, &res, err, sizeof err);
    CHECK(log != NULL);
    if (log == NULL) {
        fprintf(stderr, "sl_recover: %s\n", err);
        env_close(&rec);
        return;
    }
    CHECK_EQ(res.checkpoint_used, expect_used);
    CHECK_EQ_U64(res.checkpoint.seq, expect_seq);
    CHECK_EQ_U64(res.records_replayed + res.records_skipped, st->records);
    CHECK_EQ_U64(res.records_skipped, res.checkpoint.start_lsn);
    CHECK_EQ_U64(res.log.last_lsn, st->records);
    uint64_t replayed_readings = 0;
    for (uint64_t lsn = res.checkpoint.start_lsn + 1; lsn <= st->records; lsn++) {
        replayed_readings += st->counts[lsn];
    }
    CHECK_EQ_U64(res.readings_applied + res.readings_rejected + res.readings_skipped_by_checkpoint,
                 replayed_readings);
    CHECK(expect_used ? res.readings_skipped_by_checkpoint > 0
                      : res.readings_skipped_by_checkpoint == 0);
    CHECK(res.readings_rejected > 0); /* the workload's bad readings are rejected again */
    CHECK_EQ_U64(atomic_load(&rec.store.counters.readings_accepted), 0);
    CHECK_EQ_U64(sl_log_next_lsn(log), st->records + 1);
    check_stores_equal(&st->live.store, &rec.store);
    check_streams_equal(&st->live.tcp, &rec.tcp);
    check_streams_equal(&st->live.udp, &rec.udp);
    sl_log_close(log);
    env_close(&rec);
}

static void test_recovery(void)
{
    char dir[64];
    make_dir(dir, sizeof dir);
    struct b_state *st = calloc(1, sizeof *st);
    sl_log_config_default(&st->lc);
    snprintf(st->lc.dir, sizeof st->lc.dir, "%s", dir);
    st->lc.segment_bytes = SL_LOG_SEGMENT_BYTES_MIN;
    st->lc.buffer_bytes = SL_LOG_BUFFER_BYTES_MIN;
    st->lc.sync = SL_SYNC_NEVER;
    st->lc.io = &sl_io_posix;
    small_config(&st->c, 300, 32);
    env_open(&st->live, &st->c, &st->lc);
    b_write(st, dir);
    CHECK_EQ(count_files(dir, ".ckpt"), 2);
    CHECK(count_files(dir, ".seg") >= 2);

    b_recover(st, true, 2); /* the newest */
    char path[4200];
    ckpt_path(path, sizeof path, dir, 2, ".ckpt");
    flip_bit(path, 128 + 64 + 64 * 8 + 100); /* inside the first chunk's ring slots */
    b_recover(st, true, 1);                  /* falls back to the older one */
    ckpt_path(path, sizeof path, dir, 1, ".ckpt");
    flip_bit(path, 24);      /* the header's start_lsn */
    b_recover(st, false, 0); /* both bad: the whole log */
    ckpt_path(path, sizeof path, dir, 1, ".ckpt");
    unlink(path);
    ckpt_path(path, sizeof path, dir, 2, ".ckpt");
    unlink(path);
    b_recover(st, false, 0); /* none at all */
    env_close(&st->live);
    free(st);
    remove_dir(dir);
}

/* ---- a small populated store, for the remaining tests ---- */

static void populate(struct env *e, uint64_t seed, uint32_t batches, uint32_t ids)
{
    struct gen g;
    gen_init(&g, seed, ids);
    for (uint32_t b = 0; b < batches; b++) {
        struct rec r;
        gen_batch(&g, &r);
        apply_live(e, &r);
    }
}

/* Write one whole checkpoint of e (and the registry, if any) into dir; its seq (0 on failure). */
static uint64_t write_checkpoint_series(struct env *e, const struct sl_series *series,
                                        const char *dir, uint64_t step_bytes, uint64_t lsn)
{
    struct sl_checkpointer *ck = malloc(sizeof *ck);
    struct sl_checkpoint_config cc;
    ck_config(&cc, dir, step_bytes, &sl_io_posix);
    sl_checkpoint_init(ck, &cc, &e->store, &e->tcp, &e->udp, sl_checkpoint_next_seq(dir));
    if (series != NULL) {
        sl_checkpoint_set_series(ck, series);
    }
    uint64_t seq = ck->seq;
    int rc = checkpoint_all(ck, lsn);
    CHECK_EQ(rc, 1);
    free(ck);
    return rc == 1 ? seq : 0;
}

static uint64_t write_checkpoint(struct env *e, const char *dir, uint64_t step_bytes, uint64_t lsn)
{
    return write_checkpoint_series(e, NULL, dir, step_bytes, lsn);
}

/*
 * Load dir into a fresh store of config c and into `series` (a fresh
 * registry, or NULL): the rc, and what was loaded in *info.
 */
static int load_into_fresh_series(const char *dir, const struct sl_store_config *c,
                                  struct sl_series *series, struct sl_checkpoint_loaded *info,
                                  struct env *keep)
{
    struct env e;
    env_open(&e, c, NULL);
    uint64_t *sensor_lsn = calloc(c->sensors_max, sizeof *sensor_lsn);
    int rc = sl_checkpoint_load(dir, &sl_io_posix, &e.store, &e.tcp, &e.udp, series, sensor_lsn,
                                info);
    if (rc != 0) {
        /* Left empty: no sensor, an all-zero index, empty stream tables, an empty registry. */
        CHECK_EQ(sl_store_sensors_count(&e.store), 0);
        uint64_t nonzero = 0;
        for (uint32_t i = 0; i <= e.store.index_mask; i++) {
            nonzero += e.store.index[i] != 0;
        }
        CHECK_EQ_U64(nonzero, 0);
        CHECK_EQ(atomic_load(&e.tcp.count) + atomic_load(&e.udp.count), 0);
        if (series != NULL) {
            CHECK_EQ(sl_series_count(series), 0);
            CHECK_EQ_U64(sl_series_name_bytes(series), 0);
        }
    } else {
        check_findable(&e.store);
    }
    free(sensor_lsn);
    if (keep != NULL) {
        *keep = e;
    } else {
        env_close(&e);
    }
    return rc;
}

/* Load dir into a fresh store of config c: the rc, and the seq loaded in *seq. */
static int load_into_fresh(const char *dir, const struct sl_store_config *c, uint64_t *seq,
                           struct env *keep)
{
    struct sl_checkpoint_loaded info;
    int rc = load_into_fresh_series(dir, c, NULL, &info, keep);
    *seq = info.seq;
    return rc;
}

/* dir loads (as checkpoint seq) into a fresh store equal to want: store and both stream tables. */
static void check_loads_equal(const char *dir, const struct sl_store_config *c, uint64_t seq,
                              const struct env *want)
{
    uint64_t got_seq = 0;
    struct env got;
    CHECK_EQ(load_into_fresh(dir, c, &got_seq, &got), 0);
    CHECK_EQ_U64(got_seq, seq);
    check_stores_equal(&want->store, &got.store);
    check_streams_equal(&want->tcp, &got.tcp);
    check_streams_equal(&want->udp, &got.udp);
    env_close(&got);
}

/* ---- (c) geometry ---- */

static void test_geometry_mismatch(void)
{
    char dir[64];
    make_dir(dir, sizeof dir);
    struct sl_store_config c16, c32, c64, half;
    small_config(&c16, 50, 16);
    small_config(&c32, 50, 32);
    small_config(&c64, 64, 16);
    small_config(&half, 50, 16);
    half.ewma_half_life_us = 30LL * 1000000;
    struct env a, b;
    env_open(&a, &c16, NULL);
    env_open(&b, &c32, NULL);
    populate(&a, 1, 200, 40);
    populate(&b, 2, 200, 40);
    CHECK_EQ_U64(write_checkpoint(&a, dir, 1 << 20, 200), 1);
    CHECK_EQ_U64(write_checkpoint(&b, dir, 1 << 20, 200), 2);
    uint64_t seq = 0;
    struct env got;
    /* The newest (ring 32) is skipped for the ring-16 store; the older one loads. */
    CHECK_EQ(load_into_fresh(dir, &c16, &seq, &got), 0);
    CHECK_EQ_U64(seq, 1);
    check_stores_equal(&a.store, &got.store);
    check_streams_equal(&a.tcp, &got.tcp);
    env_close(&got);
    CHECK_EQ(load_into_fresh(dir, &c32, &seq, &got), 0);
    CHECK_EQ_U64(seq, 2);
    check_stores_equal(&b.store, &got.store);
    env_close(&got);
    CHECK_EQ(load_into_fresh(dir, &c64, &seq, NULL), -ENOENT);  /* sensors_max differs */
    CHECK_EQ(load_into_fresh(dir, &half, &seq, NULL), -ENOENT); /* EWMA half-life differs */
    env_close(&a);
    env_close(&b);
    remove_dir(dir);
}

/* ---- damaged and hostile files ---- */

/* Write image (edited) as checkpoint `seq` in dir, its CRCs recomputed when `fix`. */
static void write_image(const char *dir, uint64_t seq, const uint8_t *image, size_t len, bool fix,
                        void (*edit)(uint8_t *, size_t))
{
    uint8_t *copy = malloc(len + 16);
    memcpy(copy, image, len);
    sl_store_u64(copy + 16, seq);
    sl_store_u32(copy + 124, sl_crc32c(copy, 124)); /* the header stays valid */
    if (edit != NULL) {
        edit(copy, len);
    }
    if (fix) {
        fix_crcs(copy, len);
    }
    char path[4200];
    ckpt_path(path, sizeof path, dir, seq, ".ckpt");
    write_file(path, copy, len);
    free(copy);
}

/* Edits of a checkpoint of the 50 x 16 store; the first chunk starts at 128. */
#define REC0 (128 + 64)
static void edit_head(uint8_t *b, size_t len)
{
    (void)len;
    sl_store_u32(b + REC0 + 32, 16); /* head == ring */
}
static void edit_dup_id(uint8_t *b, size_t len)
{
    (void)len;
    memcpy(b + REC0 + 64, b + REC0, 4); /* sensor 1 takes sensor 0's id */
}
static void edit_count(uint8_t *b, size_t len)
{
    (void)len;
    sl_store_u32(b + REC0 + 40, sl_load_u32(b + REC0 + 40) + 1); /* count off by one */
}
static void edit_last_t(uint8_t *b, size_t len)
{
    (void)len;
    sl_store_u64(b + REC0 + 16, sl_load_u64(b + REC0 + 16) + 1); /* times do not add up */
}
static void edit_odd_seq(uint8_t *b, size_t len)
{
    (void)len;
    sl_store_u32(b + REC0 + 4, sl_load_u32(b + REC0 + 4) | 1); /* a writer mid-change */
}
static void edit_chunk_first(uint8_t *b, size_t len)
{
    (void)len;
    sl_store_u32(b + 128 + 4, 1); /* does not start at sensor 0 */
}
static void edit_stream_entry(uint8_t *b, size_t len)
{
    /* The stream chunk's first entry: has_seq = 2. Its header is 64 + entries before the trailer.
     */
    uint32_t entries = 0;
    for (size_t off = 128; off + 64 <= len - 64;) {
        if (memcmp(b + off, "SLST", 4) == 0) {
            entries = sl_load_u32(b + off + 4) + sl_load_u32(b + off + 8);
            CHECK(entries > 0);
            sl_store_u16(b + off + 64 + 4, 2);
            return;
        }
        off += 64 + sl_load_u64(b + off + 24);
    }
    CHECK(entries > 0);
}
static void edit_padding(uint8_t *b, size_t len)
{
    (void)len;
    /* Sensor 0's padding (a 16-slot ring is padded to 24), after the chunk's 4 records. */
    b[REC0 + 4 * 64 + 16 * 8 + 2] = 0x01;
}
static void edit_trailer_count(uint8_t *b, size_t len)
{
    sl_store_u32(b + len - 64 + 8, sl_load_u32(b + len - 64 + 8) + 1);
}

static size_t flip_offset;
static void edit_flip(uint8_t *b, size_t len)
{
    (void)len;
    b[flip_offset] ^= 0x10;
}

static void edit_ring_2(uint8_t *b, size_t len)
{
    (void)len;
    sl_store_u32(b + 36, 2); /* ring_readings below the minimum */
    sl_store_u32(b + 124, sl_crc32c(b, 124));
}

/* The path of checkpoint seq in dir (a static buffer). */
static const char *dir2_path(const char *dir, uint64_t seq)
{
    static char path[4200];
    ckpt_path(path, sizeof path, dir, seq, ".ckpt");
    return path;
}

/* sl_checkpoint_verify of checkpoint seq in dir: its rc; the reason must contain `why` if given. */
static int verify_says(const char *dir, uint64_t seq, const char *why)
{
    char name[64];
    snprintf(name, sizeof name, "ckpt-%016llx.ckpt", (unsigned long long)seq);
    struct sl_checkpoint_verdict v;
    int rc = sl_checkpoint_verify(dir, name, &sl_io_posix, &v);
    CHECK(rc >= 0);
    CHECK((rc == 0) == (v.why[0] == '\0'));
    if (why != NULL && strstr(v.why, why) == NULL) {
        fprintf(stderr, "verify %s: '%s', want '%s'\n", name, v.why, why);
        CHECK(0);
    }
    return rc;
}

/* Damaged copies of a good checkpoint: each must be skipped. */
static const struct damage {
    bool fix; /* recompute the CRCs after the edit: only the edit is wrong */
    void (*edit)(uint8_t *, size_t);
    size_t cut_bytes; /* from the end */
} damages[] = {
    {false, NULL, 10},
    {false, NULL, 64},
    {false, edit_head, 0},
    {true, edit_head, 0},
    {true, edit_dup_id, 0},
    {true, edit_count, 0},
    {true, edit_last_t, 0},
    {true, edit_odd_seq, 0},
    {true, edit_chunk_first, 0},
    {true, edit_stream_entry, 0},
    {true, edit_padding, 0},
    {true, edit_trailer_count, 0},
};

static void test_damaged_files(void)
{
    char dir[64];
    make_dir(dir, sizeof dir);
    struct sl_store_config c;
    small_config(&c, 50, 16);
    struct env a;
    env_open(&a, &c, NULL);
    populate(&a, 3, 300, 45);
    uint64_t per = one_sensor_bytes(&a.store);
    CHECK_EQ_U64(write_checkpoint(&a, dir, 64 + 4 * per, 300), 1);
    char path[4200];
    ckpt_path(path, sizeof path, dir, 1, ".ckpt");
    size_t len;
    uint8_t *image = read_file(path, &len);
    /* The trailer's running CRC is a plain CRC-32C of everything before it. */
    CHECK_EQ(sl_load_u32(image + len - 8), sl_crc32c(image, len - 64));
    CHECK_EQ_U64(sl_load_u64(image + len - 40), len);

    uint64_t seq = 0;
    CHECK_EQ(verify_says(dir, 1, NULL), 0);
    for (uint32_t i = 0; i < SL_ARRAY_COUNT(damages); i++) {
        /* seq 2 is the bad newest each time; the loader must fall back to seq 1. */
        write_image(dir, 2, image, len - damages[i].cut_bytes, damages[i].fix, damages[i].edit);
        CHECK_EQ(load_into_fresh(dir, &c, &seq, NULL), 0);
        CHECK_EQ_U64(seq, 1);
        CHECK_EQ(verify_says(dir, 2, NULL), 1); /* and sl_checkpoint_verify says unusable */
    }
    /* Truncated to half; a damaged payload byte: unusable, and why. */
    write_image(dir, 2, image, len / 2, false, NULL);
    CHECK_EQ(verify_says(dir, 2, "truncated"), 1);
    write_image(dir, 2, image, len, false, NULL);
    flip_bit(dir2_path(dir, 2), REC0 + 5 * 64 + 3);
    CHECK_EQ(verify_says(dir, 2, "bad chunk payload CRC"), 1);
    /* Bytes after the trailer. */
    uint8_t *longer = calloc(1, len + 8);
    memcpy(longer, image, len);
    write_image(dir, 2, longer, len + 8, false, NULL);
    CHECK_EQ(load_into_fresh(dir, &c, &seq, NULL), 0);
    CHECK_EQ_U64(seq, 1);
    CHECK_EQ(verify_says(dir, 2, "bytes after the trailer"), 1);
    /* The same image under seq 2 with its CRCs recomputed is valid: fix_crcs is right. */
    write_image(dir, 2, image, len, true, NULL);
    check_loads_equal(dir, &c, 2, &a);
    CHECK_EQ(verify_says(dir, 2, NULL), 0);
    /* A header whose geometry no store can have: the loader skips it, verify says why. */
    write_image(dir, 2, image, len, true, edit_ring_2);
    CHECK_EQ(load_into_fresh(dir, &c, &seq, NULL), 0);
    CHECK_EQ_U64(seq, 1);
    CHECK_EQ(verify_says(dir, 2, "unreadable geometry: ring_readings"), 1);
    /* One decoder: wherever a byte is flipped, verify accepts exactly what the loader loads. */
    /* (Also with the CRCs made good again, so that only the other checks can tell.) */
    uint32_t disagree = 0, accepted = 0, positions = 0;
    for (int fix = 0; fix < 2; fix++) {
        for (size_t at = 0; at < len - 64; at += len / 251 + 1, positions++) {
            flip_offset = at;
            write_image(dir, 2, image, len, fix, edit_flip);
            CHECK_EQ(load_into_fresh(dir, &c, &seq, NULL), 0);
            int v = verify_says(dir, 2, NULL);
            accepted += v == 0;
            disagree += (v == 0) != (seq == 2);
        }
    }
    CHECK_EQ(disagree, 0);
    CHECK(accepted > 0);
    printf("verify and load agree on %u flipped positions (%u still usable)\n", positions,
           accepted);
    write_image(dir, 2, image, len, true, NULL);
    /* A leftover .tmp is not a checkpoint, but its number is never reused. */
    ckpt_path(path, sizeof path, dir, 9, ".ckpt.tmp");
    write_file(path, image, len);
    CHECK_EQ(load_into_fresh(dir, &c, &seq, NULL), 0);
    CHECK_EQ_U64(seq, 2);
    CHECK_EQ_U64(sl_checkpoint_next_seq(dir), 10);
    /* The next complete checkpoint removes it and keeps the newest two. */
    CHECK_EQ_U64(write_checkpoint(&a, dir, 1 << 20, 300), 10);
    CHECK_EQ(count_files(dir, ".tmp"), 0);
    CHECK_EQ(count_files(dir, ".ckpt"), 2);
    free(longer);
    free(image);
    env_close(&a);
    remove_dir(dir);
}

/* ---- (d) I/O faults in the writer ---- */

/* One checkpoint of e through a fault spec; the rc of the run. */
static int checkpoint_with_faults(struct env *e, const char *dir, const char *spec,
                                  struct sl_checkpoint_counters *counters)
{
    struct sl_io_faults *faults = calloc(1, sizeof *faults);
    const char *why = NULL;
    CHECK(sl_io_faults_init(faults, &sl_io_posix, spec, &why) == 0);
    struct sl_checkpointer *ck = malloc(sizeof *ck);
    struct sl_checkpoint_config cc;
    ck_config(&cc, dir, 64 + 3 * one_sensor_bytes(&e->store), &faults->io);
    sl_checkpoint_init(ck, &cc, &e->store, &e->tcp, &e->udp, sl_checkpoint_next_seq(dir));
    int rc = checkpoint_all(ck, 100);
    CHECK(!ck->active);
    CHECK(ck->fd < 0);
    if (rc < 0) {
        CHECK_EQ(atomic_load(&ck->counters.failed), 1);
        CHECK_EQ(atomic_load(&ck->counters.completed), 0);
    }
    if (counters != NULL) {
        *counters = ck->counters;
    }
    free(ck);
    free(faults);
    return rc;
}

static void test_faults(void)
{
    char dir[64];
    make_dir(dir, sizeof dir);
    struct sl_store_config c;
    small_config(&c, 50, 16);
    struct env a;
    env_open(&a, &c, NULL);
    populate(&a, 4, 300, 45);
    uint64_t seq = 0;

    /* pwrite EIO in the middle (the 3rd write: inside the first chunk). */
    CHECK_EQ(checkpoint_with_faults(&a, dir, "pwrite:EIO:3", NULL), -EIO);
    CHECK_EQ(count_files(dir, ".tmp") + count_files(dir, ".ckpt"), 0);
    CHECK_EQ(load_into_fresh(dir, &c, &seq, NULL), -ENOENT);
    /* ENOSPC on a later chunk. */
    CHECK_EQ(checkpoint_with_faults(&a, dir, "pwrite:ENOSPC:12", NULL), -ENOSPC);
    CHECK_EQ(count_files(dir, ".tmp") + count_files(dir, ".ckpt"), 0);
    /* A later checkpoint succeeds (seq 1: failed ones leave no number behind). */
    CHECK_EQ(checkpoint_with_faults(&a, dir, "pwrite:EIO:100000", NULL), 1);
    CHECK_EQ(count_files(dir, ".ckpt"), 1);
    /* fdatasync EIO at the end: removed, never retried, the error returned. */
    CHECK_EQ(checkpoint_with_faults(&a, dir, "fdatasync:EIO:1", NULL), -EIO);
    CHECK_EQ(count_files(dir, ".tmp"), 0);
    CHECK_EQ(count_files(dir, ".ckpt"), 1);
    /* rename and directory fsync failures: nothing left to be trusted. */
    CHECK_EQ(checkpoint_with_faults(&a, dir, "rename:EIO:1", NULL), -EIO);
    CHECK_EQ(checkpoint_with_faults(&a, dir, "fsync:EIO:1", NULL), -EIO);
    CHECK_EQ(count_files(dir, ".tmp"), 0);
    CHECK_EQ(count_files(dir, ".ckpt"), 1);
    /* open fails: nothing started. */
    struct sl_checkpoint_counters counters;
    CHECK_EQ(checkpoint_with_faults(&a, dir, "open:ENOSPC:1", &counters), -ENOSPC);
    CHECK_EQ(atomic_load(&counters.started), 1);
    /* Short writes (a retry may be short again): pwrite_all finishes them. */
    CHECK_EQ(
        checkpoint_with_faults(&a, dir, "pwrite_short:EIO:1-3,pwrite_short:EIO:9-11", &counters),
        1);
    CHECK_EQ(atomic_load(&counters.completed), 1);
    CHECK(atomic_load(&counters.bytes_written) == atomic_load(&counters.last_bytes));
    check_loads_equal(dir, &c, 2, &a);
    /* Older ones go: after two more only the newest two remain. */
    CHECK_EQ(checkpoint_with_faults(&a, dir, "pwrite:EIO:100000", NULL), 1);
    CHECK_EQ(checkpoint_with_faults(&a, dir, "pwrite:EIO:100000", NULL), 1);
    CHECK_EQ(count_files(dir, ".ckpt"), 2);
    CHECK_EQ_U64(sl_checkpoint_next_seq(dir), 5);
    CHECK_EQ(load_into_fresh(dir, &c, &seq, NULL), 0);
    CHECK_EQ_U64(seq, 4);
    env_close(&a);
    remove_dir(dir);
}

/* An empty store checkpoints and loads as empty (0 chunks), and an empty dir has none. */
static void test_empty(void)
{
    char dir[64];
    make_dir(dir, sizeof dir);
    struct sl_store_config c;
    small_config(&c, 8, 4);
    struct env a;
    env_open(&a, &c, NULL);
    uint64_t seq = 0;
    CHECK_EQ(load_into_fresh(dir, &c, &seq, NULL), -ENOENT);
    CHECK_EQ(load_into_fresh("/nonexistent/sluice", &c, &seq, NULL), -ENOENT);
    CHECK_EQ_U64(sl_checkpoint_next_seq(dir), 1);
    CHECK_EQ_U64(write_checkpoint(&a, dir, 1, 0), 1);
    CHECK_EQ(load_into_fresh(dir, &c, &seq, NULL), 0);
    CHECK_EQ_U64(seq, 1);
    /* step_bytes smaller than one sensor: one sensor a chunk. */
    CHECK(sl_store_apply_reading(&a.store, 5, CLOCK0_US, 1.0f, CLOCK0_US) == 0);
    CHECK(sl_store_apply_reading(&a.store, 6, CLOCK0_US, 2.0f, CLOCK0_US) == 0);
    CHECK_EQ_U64(write_checkpoint(&a, dir, 1, 0), 2);
    check_loads_equal(dir, &c, 2, &a);
    env_close(&a);
    remove_dir(dir);
}

/*
 * ---- (e) a version 1 file ----
 *
 * tests/data/checkpoint-v1/ holds a checkpoint written by commit 15e3ceb,
 * the last with format version 1 (separate value and delta arrays, no ring
 * padding) from the store below: 40 x 16 (so padded today), coarse 8,
 * written after all its readings, at lsn 400, in 4 KiB steps. It must load
 * into today's layout exactly as the same batches apply today.
 */
static void v1_config(struct sl_store_config *c)
{
    small_config(c, 40, 16);
    c->coarse_buckets = 8;
}

/* The newest reading's time in the store. */
static int64_t newest_t(const struct sl_store *s)
{
    int64_t t = INT64_MIN;
    for (uint32_t i = 0; i < sl_store_sensors_count(s); i++) {
        t = s->sensors[i].last_t_us > t ? s->sensors[i].last_t_us : t;
    }
    return t;
}

/* The store both fixtures (version 1 and version 2) were written from, built today. */
static void fixture_reference(struct sl_store_config *c, struct env *ref)
{
    v1_config(c);
    env_open(ref, c, NULL);
    populate(ref, 0x5EEDull, 400, 48);
    for (uint32_t id = 0; id < 48; id += 3) { /* then a gap of 4.8 h: escape slots */
        int64_t t = newest_t(&ref->store) + ((int64_t)1 << 34) + id;
        (void)sl_store_apply_reading(&ref->store, id, t, (float)id * 0.5f, t + 1000000);
    }
}

/* The chunk with this magic in a checkpoint image (walking the chunk headers): its offset, or 0. */
static size_t find_chunk(const uint8_t *b, size_t len, const char *magic)
{
    for (size_t off = 128; off + 64 <= len;) {
        if (memcmp(b + off, magic, 4) == 0) {
            return off;
        }
        if (memcmp(b + off, "SLEN", 4) == 0) {
            return 0;
        }
        uint64_t payload = sl_load_u64(b + off + 24);
        if (payload > len - off - 64) {
            return 0;
        }
        off += 64 + payload;
    }
    return 0;
}

static void test_version_1(void)
{
    struct sl_store_config c;
    struct env ref;
    fixture_reference(&c, &ref);
    CHECK_EQ(ref.store.ring_stride, 24); /* the layouts differ: the loader converts */
    /* The fixture covers what a conversion could get wrong: full rings, escapes, every sensor. */
    uint32_t escapes = 0, full = 0;
    for (uint32_t i = 0; i < sl_store_sensors_count(&ref.store); i++) {
        full += ref.store.sensors[i].used_slots == 16;
        for (uint32_t k = 0; k < 16; k++) {
            escapes += isnan(ref.store.slots[i * 24 + k].value) ? 1 : 0;
        }
    }
    CHECK_EQ(sl_store_sensors_count(&ref.store), 40);
    CHECK(full >= 20);
    CHECK(escapes >= 1);
    printf("version 1 fixture: %u sensors, %u full rings, %u escape slots\n",
           sl_store_sensors_count(&ref.store), full, escapes);

    char dir[64];
    make_dir(dir, sizeof dir);
    char path[4200];
    size_t len;
    uint8_t *image =
        read_file(SL_SOURCE_DIR "/tests/data/checkpoint-v1/ckpt-0000000000000001.ckpt", &len);
    CHECK(image != NULL && len > 128 && sl_load_u32(image + 8) == 1);
    ckpt_path(path, sizeof path, dir, 1, ".ckpt");
    write_file(path, image, len);
    check_loads_equal(dir, &c, 1, &ref);
    CHECK_EQ(verify_says(dir, 1, NULL), 0); /* the verifier reads version 1 too */
    uint64_t seq = 0;
    /* A version 1 file is as hostile as any: a flipped ring byte fails its CRC (and is skipped). */
    if (image != NULL && len > 128 + 64 + 40 * 64 + 8) {
        image[128 + 64 + 40 * 64 + 5] ^= 0x10; /* inside the first chunk's ring values */
        write_file(path, image, len);
        CHECK_EQ(load_into_fresh(dir, &c, &seq, NULL), -ENOENT);
        CHECK_EQ(verify_says(dir, 1, "bad chunk payload CRC"), 1);
    }
    /* The next checkpoint is today's version, and loads the same. */
    CHECK_EQ_U64(write_checkpoint(&ref, dir, 4096, 400), 2);
    ckpt_path(path, sizeof path, dir, 2, ".ckpt");
    size_t len2;
    uint8_t *image2 = read_file(path, &len2);
    CHECK(image2 != NULL && len2 > 128 && sl_load_u32(image2 + 8) == CK_VERSION_TODAY);
    check_loads_equal(dir, &c, 2, &ref);
    free(image2);
    free(image);
    env_close(&ref);
    remove_dir(dir);
}

/*
 * ---- a version 2 file ----
 *
 * tests/data/checkpoint-v2/ holds a checkpoint written by commit 778a1ef,
 * the last with format version 2 (interleaved, padded ring slots; no series
 * chunk: the trailer follows the stream chunk), from the same store as the
 * version 1 file (fixture_reference: 40 x 16, coarse 8, at lsn 400, in
 * 4 KiB steps, seq 1). It was written by a throwaway copy of that commit's
 * test_version_1 which, after its own checks, wrote the same store with
 * write_checkpoint(&ref, <empty dir>, 4096, 400) and copied the file here.
 * It must load into today's store exactly as the same batches apply today,
 * and leave a registry empty.
 */
static void test_version_2(void)
{
    struct sl_store_config c;
    struct env ref;
    fixture_reference(&c, &ref);
    char dir[64];
    make_dir(dir, sizeof dir);
    char path[4200];
    size_t len;
    uint8_t *image =
        read_file(SL_SOURCE_DIR "/tests/data/checkpoint-v2/ckpt-0000000000000001.ckpt", &len);
    CHECK(image != NULL && len > 128 + 64 && sl_load_u32(image + 8) == 2);
    if (image == NULL || len <= 128 + 64) {
        free(image);
        env_close(&ref);
        remove_dir(dir);
        return;
    }
    /* The fixture's shape: no series chunk, the trailer right after the stream chunk. */
    size_t streams = find_chunk(image, len, "SLST");
    CHECK(streams != 0 && find_chunk(image, len, "SLSR") == 0);
    CHECK(streams + 64 + sl_load_u64(image + streams + 24) == len - 64);
    CHECK(memcmp(image + len - 64, "SLEN", 4) == 0);
    ckpt_path(path, sizeof path, dir, 1, ".ckpt");
    write_file(path, image, len);
    check_loads_equal(dir, &c, 1, &ref);
    CHECK_EQ(verify_says(dir, 1, NULL), 0); /* the verifier reads version 2 too */
    /* Into a registry: it loads, and the registry stays empty (no series chunk to read). */
    struct sl_plan plan;
    sl_plan_init(&plan);
    sl_series_plan(64, 4096, &plan);
    struct sl_arena arena;
    CHECK(sl_arena_map(&arena, plan.total_bytes) == 0);
    struct sl_series series;
    sl_series_init(&series, 64, 4096, SL_SERIES_ID_BASE_DEFAULT, 1, &arena);
    struct sl_checkpoint_loaded info;
    CHECK_EQ(load_into_fresh_series(dir, &c, &series, &info, NULL), 0);
    CHECK_EQ_U64(info.seq, 1);
    CHECK_EQ(info.sensors, 40);
    CHECK_EQ(info.series, 0);
    CHECK_EQ_U64(info.series_dropped, 0);
    CHECK_EQ(sl_series_count(&series), 0);
    sl_arena_unmap(&arena);
    /* A version 2 header on a file with a series chunk (or 3 on one without): skipped. */
    uint8_t *v3 = malloc(len);
    memcpy(v3, image, len);
    sl_store_u32(v3 + 8, CK_VERSION_TODAY);
    sl_store_u32(v3 + 124, sl_crc32c(v3, 124));
    fix_crcs(v3, len);
    write_image(dir, 2, v3, len, true, NULL);
    uint64_t seq = 0;
    CHECK_EQ(load_into_fresh(dir, &c, &seq, NULL), 0);
    CHECK_EQ_U64(seq, 1);
    CHECK_EQ(verify_says(dir, 2, "no series chunk"), 1);
    free(v3);
    ckpt_path(path, sizeof path, dir, 2, ".ckpt");
    unlink(path);
    /* A flipped byte in the first sensor's ring slots fails the chunk's CRC: skipped. */
    uint32_t first_count = sl_load_u32(image + 128 + 8);
    CHECK(memcmp(image + 128, "SLCK", 4) == 0 && first_count >= 1);
    size_t ring_byte = 128 + 64 + (size_t)first_count * 64 + 5;
    CHECK(ring_byte < len);
    image[ring_byte] ^= 0x10;
    ckpt_path(path, sizeof path, dir, 1, ".ckpt");
    write_file(path, image, len);
    CHECK_EQ(load_into_fresh(dir, &c, &seq, NULL), -ENOENT);
    CHECK_EQ(verify_says(dir, 1, "bad chunk payload CRC"), 1);
    /* The next checkpoint is today's version (an empty series chunk), and loads the same. */
    CHECK_EQ_U64(write_checkpoint(&ref, dir, 4096, 400), 2);
    ckpt_path(path, sizeof path, dir, 2, ".ckpt");
    size_t len2;
    uint8_t *image2 = read_file(path, &len2);
    CHECK(image2 != NULL && len2 > 128 && sl_load_u32(image2 + 8) == CK_VERSION_TODAY);
    size_t sr = image2 != NULL ? find_chunk(image2, len2, "SLSR") : 0;
    CHECK(sr != 0 && sr + 64 == len2 - 64); /* then the trailer */
    if (sr != 0) {
        CHECK_EQ(sl_load_u32(image2 + sr + 4), 0);
        CHECK_EQ(sl_load_u32(image2 + sr + 8), 0);
        CHECK_EQ_U64(sl_load_u64(image2 + sr + 16), 400);
        CHECK_EQ_U64(sl_load_u64(image2 + sr + 24), 0);
    }
    check_loads_equal(dir, &c, 2, &ref);
    CHECK_EQ(verify_says(dir, 2, NULL), 0);
    free(image2);
    free(image);
    env_close(&ref);
    remove_dir(dir);
}

/* Sensors larger than the verifier's scratch: read a window (one sensor) at a time. */
static void test_verify_windows(void)
{
    struct sl_store_config c;
    small_config(&c, 3, 1u << 20); /* 8 MiB a sensor: a window of one */
    struct env e;
    env_open(&e, &c, NULL);
    populate(&e, 9, 60, 3);
    CHECK_EQ(sl_store_sensors_count(&e.store), 3);
    char dir[64];
    make_dir(dir, sizeof dir);
    CHECK_EQ_U64(write_checkpoint(&e, dir, 1, 60), 1);        /* a sensor a chunk */
    CHECK_EQ_U64(write_checkpoint(&e, dir, 1u << 30, 60), 2); /* all in one chunk */
    struct sl_checkpoint_verdict v;
    CHECK_EQ(sl_checkpoint_verify(dir, "ckpt-0000000000000001.ckpt", &sl_io_posix, &v), 0);
    CHECK(v.chunks == 3 && v.loaded.sensors == 3 && v.header.ring_readings == (1u << 20));
    CHECK_EQ(sl_checkpoint_verify(dir, "ckpt-0000000000000002.ckpt", &sl_io_posix, &v), 0);
    CHECK(v.chunks == 1 && v.loaded.sensors == 3 && v.loaded.start_lsn == 60);
    /* The third sensor takes the first's id (CRCs made good): only the id check sees it. */
    size_t len = 0;
    uint8_t *image = read_file(dir2_path(dir, 2), &len);
    CHECK(image != NULL);
    if (image != NULL) {
        memcpy(image + REC0 + 2 * 64, image + REC0, 4);
        fix_crcs(image, len);
        write_file(dir2_path(dir, 2), image, len);
        CHECK_EQ(verify_says(dir, 2, "duplicate sensor id"), 1);
        uint64_t seq = 0;
        CHECK_EQ(load_into_fresh(dir, &c, &seq, NULL), 0); /* the loader agrees: falls back */
        CHECK_EQ_U64(seq, 1);
        /* A flipped byte in the last sensor's ring, past the first window: the chunk CRC. */
        write_image(dir, 2, image, len, false, NULL);
        uint64_t stride = e.store.ring_stride;
        flip_bit(dir2_path(dir, 2), REC0 + 3 * 64 + 2 * stride * 8 + 16);
        CHECK_EQ(verify_says(dir, 2, "bad chunk payload CRC"), 1);
        free(image);
    }
    env_close(&e);
    remove_dir(dir);
}

/*
 * ---- named series: the series chunk (version 3) ----
 *
 * A registry in its own arena, as the daemon plans it. Names are made of
 * the bytes a line protocol name may carry and a parser could trip on
 * ('"', '\\', 0x01, 0xff, ' ', ',', '='), a quarter of them the longest a
 * name may be (1,024 bytes), so the chunk spans several of the writer's
 * 16 KiB stages and the loader's 64 KiB windows, entries cut at each edge.
 */
#define NAMES 300u
#define NAME_BASE SL_SERIES_ID_BASE_DEFAULT

struct reg {
    struct sl_arena arena;
    struct sl_series s;
};

static void reg_open(struct reg *r, uint32_t capacity, uint64_t name_bytes, uint32_t id_base,
                     uint64_t seed)
{
    struct sl_plan plan;
    sl_plan_init(&plan);
    sl_series_plan(capacity, name_bytes, &plan);
    memset(r, 0, sizeof *r);
    CHECK(sl_arena_map(&r->arena, plan.total_bytes) == 0);
    sl_series_init(&r->s, capacity, name_bytes, id_base, seed, &r->arena);
}

static void reg_close(struct reg *r)
{
    sl_arena_unmap(&r->arena);
}

/* Name i into out (SL_SERIES_NAME_MAX bytes): its length. Distinct for distinct i. */
static uint32_t make_name(uint32_t i, char *out)
{
    static const char filler[] = {'"', '\\', 0x01, (char)0xff, ' ', ',', '=', 'x'};
    static const char singles[] = {'"', '\\', 0x01, (char)0xff};
    if (i >= 1 && i <= 4) {
        out[0] = singles[i - 1]; /* one-byte names */
        return 1;
    }
    uint64_t rng = 0x9E3779B97F4A7C15ull * (i + 1);
    uint32_t len = i % 4 == 0 ? SL_SERIES_NAME_MAX : 8 + (uint32_t)(tl_rand(&rng) % 300);
    int n = snprintf(out, SL_SERIES_NAME_MAX, "s%u:", i); /* the filler has no digit nor ':' */
    for (uint32_t k = (uint32_t)n; k < len; k++) {
        out[k] = filler[tl_rand(&rng) % sizeof filler];
    }
    return len;
}

/* Intern names [0, n) in order; their ids (NAME_BASE + i) in ids[]. Their bytes. */
static uint64_t fill_registry(struct sl_series *s, uint32_t n, uint32_t *ids)
{
    char name[SL_SERIES_NAME_MAX];
    uint64_t bytes = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t len = make_name(i, name);
        int created = 0;
        CHECK_EQ(sl_series_intern(s, name, len, &ids[i], &created), 0);
        CHECK(created);
        CHECK_EQ_U64(ids[i], s->id_base + i);
        bytes += len;
    }
    return bytes;
}

/* Name i is in s under id, both ways (lookup, and the bytes at the id). */
static bool has_name(const struct sl_series *s, uint32_t i, uint32_t id)
{
    char name[SL_SERIES_NAME_MAX];
    uint32_t len = make_name(i, name), got_id = 0, got_len = 0;
    const char *got = NULL;
    if (sl_series_lookup(s, name, len, &got_id) != 0) {
        return false;
    }
    return got_id == id && sl_series_name(s, id, &got, &got_len) == 0 && got_len == len &&
           memcmp(got, name, len) == 0;
}

static bool lacks_name(const struct sl_series *s, uint32_t i)
{
    char name[SL_SERIES_NAME_MAX];
    uint32_t len = make_name(i, name), id;
    return sl_series_lookup(s, name, len, &id) != 0;
}

/* The same new name gets the same next id in both registries. */
static void check_next_id(struct sl_series *a, struct sl_series *b, uint32_t want)
{
    uint32_t ia = 0, ib = 0;
    int ca = 0, cb = 0;
    CHECK_EQ(sl_series_intern(a, "after the checkpoint", 20, &ia, &ca), 0);
    CHECK_EQ(sl_series_intern(b, "after the checkpoint", 20, &ib, &cb), 0);
    CHECK(ca && cb);
    CHECK_EQ_U64(ia, want);
    CHECK_EQ_U64(ib, want);
}

/* A store for the series tests, and its checkpoint lsn. */
#define S_LSN 200u
static void series_store(struct sl_store_config *c, struct env *e)
{
    small_config(c, 64, 16);
    env_open(e, c, NULL);
    populate(e, 11, S_LSN, 50);
}

static void test_series_round_trip(void)
{
    char dir[64];
    make_dir(dir, sizeof dir);
    struct sl_store_config c;
    struct env a;
    series_store(&c, &a);
    struct reg live;
    reg_open(&live, 1024, 512u << 10, NAME_BASE, 0x1111);
    uint32_t ids[NAMES];
    uint64_t name_bytes = fill_registry(&live.s, NAMES, ids);
    CHECK(name_bytes + NAMES * 8u > (64u << 10)); /* more than a loader window */
    CHECK_EQ_U64(write_checkpoint_series(&a, &live.s, dir, 4096, S_LSN), 1);

    /* The bytes: the series chunk after the stream chunk, then the trailer; in id order. */
    size_t len = 0;
    uint8_t *image = read_file(dir2_path(dir, 1), &len);
    CHECK(image != NULL && sl_load_u32(image + 8) == CK_VERSION_TODAY);
    size_t st = image != NULL ? find_chunk(image, len, "SLST") : 0;
    size_t sr = image != NULL ? find_chunk(image, len, "SLSR") : 0;
    CHECK(st != 0 && sr == st + 64 + sl_load_u64(image + st + 24));
    if (sr != 0) {
        const uint8_t *h = image + sr, *p = h + 64;
        uint64_t payload = sl_load_u64(h + 24);
        CHECK_EQ(sl_load_u32(h + 4), NAMES);
        CHECK_EQ(sl_load_u32(h + 8), 0);
        CHECK_EQ_U64(sl_load_u64(h + 16), sl_load_u64(image + st + 16)); /* the stream chunk's */
        CHECK_EQ_U64(payload, name_bytes + 8u * NAMES);
        CHECK_EQ(sl_load_u32(h + 56), sl_crc32c(p, payload));
        CHECK_EQ(sl_load_u32(h + 60), sl_crc32c(h, 60));
        CHECK(sr + 64 + payload == len - 64 && memcmp(image + len - 64, "SLEN", 4) == 0);
        uint32_t bad = 0;
        char name[SL_SERIES_NAME_MAX];
        for (uint32_t i = 0, at = 0; i < NAMES && at + 8 <= payload; i++) {
            uint32_t nl = make_name(i, name);
            bad += sl_load_u32(p + at) != ids[i] || sl_load_u32(p + at + 4) != nl ||
                   memcmp(p + at + 8, name, nl) != 0;
            at += 8 + nl;
        }
        CHECK_EQ(bad, 0);
    }
    /* The running CRC still covers every byte before the trailer. */
    CHECK(image != NULL && sl_load_u32(image + len - 8) == sl_crc32c(image, len - 64));

    /* Into a fresh store and a fresh registry (another hash seed): the same ids, the same names. */
    struct reg got;
    reg_open(&got, 1024, 512u << 10, NAME_BASE, 0x2222);
    struct sl_checkpoint_loaded info;
    struct env e;
    CHECK_EQ(load_into_fresh_series(dir, &c, &got.s, &info, &e), 0);
    CHECK_EQ_U64(info.seq, 1);
    CHECK_EQ(info.series, NAMES);
    CHECK_EQ_U64(info.series_dropped, 0);
    check_stores_equal(&a.store, &e.store);
    check_streams_equal(&a.tcp, &e.tcp);
    check_streams_equal(&a.udp, &e.udp);
    env_close(&e);
    CHECK_EQ(sl_series_count(&got.s), NAMES);
    CHECK_EQ_U64(sl_series_name_bytes(&got.s), name_bytes);
    uint32_t missing = 0;
    for (uint32_t i = 0; i < NAMES; i++) {
        missing += has_name(&got.s, i, ids[i]) ? 0 : 1;
    }
    CHECK_EQ(missing, 0);
    check_next_id(&live.s, &got.s, NAME_BASE + NAMES);
    /* Without a registry the entries are checked, not kept; the verifier reads them too. */
    uint64_t seq = 0;
    CHECK_EQ(load_into_fresh(dir, &c, &seq, NULL), 0);
    CHECK_EQ_U64(seq, 1);
    CHECK_EQ(verify_says(dir, 1, NULL), 0);
    free(image);
    reg_close(&got);
    reg_close(&live);
    env_close(&a);
    remove_dir(dir);
}

/* Ids whose names were lost (holes) stay holes, and the next id is the same. */
static void test_series_holes(void)
{
    char dir[64];
    make_dir(dir, sizeof dir);
    struct sl_store_config c;
    struct env a;
    series_store(&c, &a);
    struct reg live;
    reg_open(&live, 64, 64u << 10, NAME_BASE, 0x3333);
    char name[SL_SERIES_NAME_MAX];
    static const uint32_t named[] = {0, 5, 6}; /* 1..4 are holes */
    uint64_t bytes = 0;
    for (uint32_t k = 0; k < SL_ARRAY_COUNT(named); k++) {
        uint32_t nl = make_name(named[k], name);
        CHECK_EQ(sl_series_restore(&live.s, NAME_BASE + named[k], name, nl), 0);
        bytes += nl;
    }
    CHECK_EQ(sl_series_count(&live.s), 7);
    CHECK_EQ_U64(write_checkpoint_series(&a, &live.s, dir, 1 << 20, S_LSN), 1);
    size_t len = 0;
    uint8_t *image = read_file(dir2_path(dir, 1), &len);
    size_t sr = image != NULL ? find_chunk(image, len, "SLSR") : 0;
    CHECK(sr != 0);
    if (sr != 0) {
        CHECK_EQ(sl_load_u32(image + sr + 4), 3); /* the holes are left out */
        CHECK_EQ_U64(sl_load_u64(image + sr + 24), 3 * 8 + bytes);
    }
    free(image);
    struct reg got;
    reg_open(&got, 64, 64u << 10, NAME_BASE, 0x4444);
    struct sl_checkpoint_loaded info;
    CHECK_EQ(load_into_fresh_series(dir, &c, &got.s, &info, NULL), 0);
    CHECK_EQ(info.series, 3);
    CHECK_EQ(sl_series_count(&got.s), 7);
    const char *n;
    uint32_t nl;
    for (uint32_t id = 1; id <= 4; id++) {
        CHECK_EQ(sl_series_name(&got.s, NAME_BASE + id, &n, &nl), -1);
    }
    for (uint32_t k = 0; k < SL_ARRAY_COUNT(named); k++) {
        CHECK(has_name(&got.s, named[k], NAME_BASE + named[k]));
    }
    check_next_id(&live.s, &got.s, NAME_BASE + 7);
    CHECK_EQ(verify_says(dir, 1, NULL), 0);
    reg_close(&got);
    reg_close(&live);

    /* Holes at the start of the range: only id base + 3 has a name. */
    reg_open(&live, 64, 64u << 10, NAME_BASE, 0x5555);
    nl = make_name(3, name);
    CHECK_EQ(sl_series_restore(&live.s, NAME_BASE + 3, name, nl), 0);
    CHECK_EQ_U64(write_checkpoint_series(&a, &live.s, dir, 1 << 20, S_LSN), 2);
    reg_open(&got, 64, 64u << 10, NAME_BASE, 0x6666);
    CHECK_EQ(load_into_fresh_series(dir, &c, &got.s, &info, NULL), 0);
    CHECK_EQ_U64(info.seq, 2);
    CHECK_EQ(info.series, 1);
    CHECK_EQ(sl_series_count(&got.s), 4);
    for (uint32_t id = 0; id < 3; id++) {
        CHECK_EQ(sl_series_name(&got.s, NAME_BASE + id, &n, &nl), -1);
    }
    CHECK(has_name(&got.s, 3, NAME_BASE + 3));
    check_next_id(&live.s, &got.s, NAME_BASE + 4);
    reg_close(&got);
    reg_close(&live);
    env_close(&a);
    remove_dir(dir);
}

/* A smaller running registry than the file's: what fits is kept, the rest counted. */
static void test_series_smaller(void)
{
    char dir[64];
    make_dir(dir, sizeof dir);
    struct sl_store_config c;
    struct env a;
    series_store(&c, &a);
    struct reg live;
    reg_open(&live, 1024, 512u << 10, NAME_BASE, 0x7777);
    uint32_t ids[NAMES];
    (void)fill_registry(&live.s, NAMES, ids);
    CHECK_EQ_U64(write_checkpoint_series(&a, &live.s, dir, 4096, S_LSN), 1);
    struct sl_checkpoint_loaded info;
    struct env e;
    struct reg got;

    /* Fewer series (--max-series): the first 100 ids, the rest dropped. */
    reg_open(&got, 100, 512u << 10, NAME_BASE, 0x8888);
    CHECK_EQ(load_into_fresh_series(dir, &c, &got.s, &info, &e), 0);
    CHECK_EQ(info.series, 100);
    CHECK_EQ_U64(info.series_dropped, NAMES - 100);
    CHECK_EQ(sl_series_count(&got.s), 100);
    check_stores_equal(&a.store, &e.store);
    env_close(&e);
    uint32_t wrong = 0;
    for (uint32_t i = 0; i < NAMES; i++) {
        wrong += (i < 100 ? has_name(&got.s, i, ids[i]) : lacks_name(&got.s, i)) ? 0 : 1;
    }
    CHECK_EQ(wrong, 0);
    reg_close(&got);

    /* Fewer name bytes (--series-name-bytes): what fits, each under its own id. */
    const uint64_t small_names = 16u << 10;
    reg_open(&got, 1024, small_names, NAME_BASE, 0x9999);
    CHECK_EQ(load_into_fresh_series(dir, &c, &got.s, &info, &e), 0);
    CHECK(info.series > 0 && info.series_dropped > 0);
    CHECK_EQ_U64(info.series + info.series_dropped, NAMES);
    CHECK(sl_series_name_bytes(&got.s) <= small_names);
    check_stores_equal(&a.store, &e.store);
    env_close(&e);
    uint32_t kept = 0;
    wrong = 0;
    for (uint32_t i = 0; i < NAMES; i++) {
        bool k = has_name(&got.s, i, ids[i]);
        kept += k;
        wrong += k || lacks_name(&got.s, i) ? 0 : 1;
    }
    CHECK_EQ(wrong, 0);
    CHECK_EQ(kept, info.series);
    reg_close(&got);

    /* Ids based elsewhere (--series-id-base): none of the file's ids is in range. */
    reg_open(&got, 1024, 512u << 10, 1000, 0xAAAA);
    CHECK_EQ(load_into_fresh_series(dir, &c, &got.s, &info, &e), 0);
    CHECK_EQ(info.series, 0);
    CHECK_EQ_U64(info.series_dropped, NAMES);
    CHECK_EQ(sl_series_count(&got.s), 0);
    check_stores_equal(&a.store, &e.store);
    env_close(&e);
    reg_close(&got);
    reg_close(&live);
    env_close(&a);
    remove_dir(dir);
}

/* Edits of the series chunk (the CRCs recomputed after, unless the damage is a CRC). */
static uint8_t *series_payload(uint8_t *b, size_t len)
{
    size_t sr = find_chunk(b, len, "SLSR");
    CHECK(sr != 0);
    return sr != 0 ? b + sr + 64 : NULL;
}
static void edit_series_count(uint8_t *b, size_t len, int64_t delta)
{
    uint8_t *p = series_payload(b, len);
    if (p != NULL) {
        sl_store_u32(p - 64 + 4, (uint32_t)((int64_t)sl_load_u32(p - 64 + 4) + delta));
    }
}
static void edit_series_count_up(uint8_t *b, size_t len)
{
    edit_series_count(b, len, 1);
}
static void edit_series_count_down(uint8_t *b, size_t len)
{
    edit_series_count(b, len, -1);
}
static void edit_series_count_zero(uint8_t *b, size_t len)
{
    uint8_t *p = series_payload(b, len);
    if (p != NULL) {
        sl_store_u32(p - 64 + 4, 0);
    }
}
static void edit_series_b(uint8_t *b, size_t len)
{
    uint8_t *p = series_payload(b, len);
    if (p != NULL) {
        sl_store_u32(p - 64 + 8, 1); /* b is 0 */
    }
}
static void edit_series_name_byte(uint8_t *b, size_t len)
{
    uint8_t *p = series_payload(b, len);
    if (p != NULL) {
        p[8 + 3] ^= 0x10; /* inside the first name */
    }
}
static void edit_series_last_byte(uint8_t *b, size_t len)
{
    uint8_t *p = series_payload(b, len);
    if (p != NULL) {
        p[sl_load_u64(p - 64 + 24) - 1] ^= 0x10; /* the last name's last byte */
    }
}
static void edit_series_len_zero(uint8_t *b, size_t len)
{
    uint8_t *p = series_payload(b, len);
    if (p != NULL) {
        sl_store_u32(p + 4, 0);
    }
}
static void edit_series_len_long(uint8_t *b, size_t len)
{
    uint8_t *p = series_payload(b, len);
    if (p != NULL) {
        sl_store_u32(p + 4, SL_SERIES_NAME_MAX + 1);
    }
}
/* The second entry's offset (the first is name 0, 1,024 bytes). */
#define SECOND_ENTRY (8u + SL_SERIES_NAME_MAX)
static void edit_series_ids_swapped(uint8_t *b, size_t len)
{
    uint8_t *p = series_payload(b, len);
    if (p != NULL) {
        uint32_t first = sl_load_u32(p), second = sl_load_u32(p + SECOND_ENTRY);
        sl_store_u32(p, second);
        sl_store_u32(p + SECOND_ENTRY, first);
    }
}
static void edit_series_ids_equal(uint8_t *b, size_t len)
{
    uint8_t *p = series_payload(b, len);
    if (p != NULL) {
        sl_store_u32(p + SECOND_ENTRY, sl_load_u32(p));
    }
}
static void edit_version_2(uint8_t *b, size_t len)
{
    (void)len;
    sl_store_u32(b + 8, 2); /* a version 2 file has no series chunk: it is read as the trailer */
}

static const struct series_damage {
    bool fix;
    void (*edit)(uint8_t *, size_t);
    const char *why;
} series_damages[] = {
    {false, edit_series_name_byte, "bad series chunk CRC"},
    {false, edit_series_last_byte, "bad series chunk CRC"},
    {true, edit_series_count_up, "series chunk counts"},
    {true, edit_series_count_down, "series chunk counts"},
    {true, edit_series_count_zero, "series chunk counts"},
    {true, edit_series_b, "series chunk counts"},
    {true, edit_series_len_zero, "bad series entry"},
    {true, edit_series_len_long, "bad series entry"},
    {true, edit_series_ids_swapped, "bad series entry"},
    {true, edit_series_ids_equal, "bad series entry"},
    {true, edit_version_2, "bad trailer"},
};

/*
 * A damaged series chunk makes the whole file skipped: the loader falls back
 * to the older checkpoint (whose registry is what the registry then holds,
 * nothing of the damaged file's) or to none (the registry left empty), after
 * having restored part of the damaged file's names into it.
 */
static void test_series_damaged(void)
{
    char dir[64];
    make_dir(dir, sizeof dir);
    struct sl_store_config c;
    struct env a;
    series_store(&c, &a);
    struct reg older, live;
    uint32_t ids[NAMES];
    reg_open(&older, 1024, 512u << 10, NAME_BASE, 0xBBBB);
    uint64_t older_bytes = fill_registry(&older.s, 10, ids);
    reg_open(&live, 1024, 512u << 10, NAME_BASE, 0xCCCC);
    (void)fill_registry(&live.s, NAMES, ids);
    CHECK_EQ_U64(write_checkpoint_series(&a, &older.s, dir, 4096, S_LSN), 1);
    CHECK_EQ_U64(write_checkpoint_series(&a, &live.s, dir, 4096, S_LSN), 2);
    size_t len = 0;
    uint8_t *image = read_file(dir2_path(dir, 2), &len);
    char name0[SL_SERIES_NAME_MAX];
    CHECK(image != NULL && make_name(0, name0) == SL_SERIES_NAME_MAX); /* SECOND_ENTRY's premise */
    struct reg got;
    reg_open(&got, 1024, 512u << 10, NAME_BASE, 0xDDDD);
    struct sl_checkpoint_loaded info;
    struct env e;
    /* The undamaged image under seq 2, CRCs recomputed: it loads (fix_crcs knows the chunk). */
    write_image(dir, 2, image, len, true, NULL);
    CHECK_EQ(load_into_fresh_series(dir, &c, &got.s, &info, NULL), 0);
    CHECK_EQ_U64(info.seq, 2);
    CHECK_EQ(info.series, NAMES);
    sl_series_reset(&got.s);
    for (int with_older = 1; with_older >= 0; with_older--) {
        for (uint32_t i = 0; i < SL_ARRAY_COUNT(series_damages); i++) {
            const struct series_damage *d = &series_damages[i];
            write_image(dir, 2, image, len, d->fix, d->edit);
            int rc = load_into_fresh_series(dir, &c, &got.s, &info, &e);
            if (with_older) {
                CHECK_EQ(rc, 0);
                CHECK_EQ_U64(info.seq, 1);
                CHECK_EQ(info.series, 10);
                CHECK_EQ(sl_series_count(&got.s), 10);
                CHECK_EQ_U64(sl_series_name_bytes(&got.s), older_bytes);
                CHECK(has_name(&got.s, 9, ids[9]) && lacks_name(&got.s, 10) &&
                      lacks_name(&got.s, NAMES - 1));
                check_stores_equal(&a.store, &e.store);
            } else {
                CHECK_EQ(rc, -ENOENT); /* the registry left empty: load_into_fresh_series checks */
                CHECK(lacks_name(&got.s, 0) && lacks_name(&got.s, 9));
            }
            env_close(&e);
            CHECK_EQ(verify_says(dir, 2, d->why), 1);
            sl_series_reset(&got.s);
        }
        if (with_older) {
            unlink(dir2_path(dir, 1));
        }
    }
    free(image);
    reg_close(&got);
    reg_close(&live);
    reg_close(&older);
    env_close(&a);
    remove_dir(dir);
}

/* ---- fuzz seeds: the fuzz target's geometry (keep in step with fuzz_checkpoint.c) ---- */

static void write_seeds(const char *dir)
{
    struct sl_store_config c;
    small_config(&c, 64, 16);
    c.coarse_buckets = 4;
    struct env e;
    env_open(&e, &c, NULL);
    uint64_t empty = write_checkpoint(&e, dir, 1, 0); /* empty store, empty series chunk */
    CHECK(empty != 0);
    populate(&e, 5, 3, 6); /* a handful of sensors, both tables, a few named series and a hole */
    struct reg r;
    reg_open(&r, 16, 4096, NAME_BASE, 0xEEEE);
    char name[SL_SERIES_NAME_MAX];
    static const uint32_t named[] = {1, 2, 5, 7, 8}; /* ids base + 0, 3, 4, 6: holes */
    for (uint32_t k = 0; k < SL_ARRAY_COUNT(named); k++) {
        uint32_t nl = make_name(named[k], name);
        nl = nl > 40 ? 40 : nl; /* short: the seeds stay small (still distinct: the prefix) */
        CHECK_EQ(sl_series_restore(&r.s, NAME_BASE + named[k], name, nl), 0);
    }
    uint64_t sensors =
        write_checkpoint_series(&e, &r.s, dir, 64 + 2 * one_sensor_bytes(&e.store), 3);
    CHECK(sensors != 0);
    /* Seeds of today's version: the fuzz target reads what the writer writes now. */
    uint64_t seqs[2] = {empty, sensors};
    for (uint32_t k = 0; k < 2; k++) {
        char path[4200];
        ckpt_path(path, sizeof path, dir, seqs[k], ".ckpt");
        size_t len = 0;
        uint8_t *b = read_file(path, &len);
        CHECK(b != NULL && len > 128 && sl_load_u32(b + 8) == CK_VERSION_TODAY);
        CHECK(b != NULL && find_chunk(b, len, "SLSR") != 0);
        free(b);
    }
    reg_close(&r);
    env_close(&e);
    printf("fuzz seeds (version %u) written to %s\n", CK_VERSION_TODAY, dir);
}

int main(void)
{
    test_empty();
    test_fuzzy_checkpoint();
    test_recovery();
    test_geometry_mismatch();
    test_damaged_files();
    test_faults();
    test_version_1();
    test_version_2();
    test_verify_windows();
    test_series_round_trip();
    test_series_holes();
    test_series_smaller();
    test_series_damaged();
    const char *seeds = getenv("SL_CHECKPOINT_SEED_DIR");
    if (seeds != NULL && seeds[0] != '\0') {
        write_seeds(seeds);
    }
    TEST_END("test_checkpoint");
}
