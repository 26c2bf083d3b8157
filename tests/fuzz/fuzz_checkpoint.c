/*
 * libFuzzer target for the checkpoint loader (src/store/checkpoint.c):
 * recovery from an arbitrary file.
 *
 * Each input is written as the only checkpoint file of a temporary
 * directory (created once; the file is named after the seq the input's
 * header claims, so a header that is otherwise valid is not refused for its
 * name) and loaded into a small store: 64 sensors, 16 readings, 4 coarse
 * buckets (+1), the default windows and half-life, the geometry of the
 * seeds in tests/fuzz/seeds/fuzz_checkpoint (written by test_checkpoint
 * with SL_CHECKPOINT_SEED_DIR set: v2-* by commit 778a1ef, v3-* (with a series chunk) by today's, v1-* by commit 15e3ceb's,
 * the last to write format version 1, so both versions' paths are fuzzed).
 *
 * Proves: the loader never crashes, never reads or writes out of bounds
 * (ASan) and never trips UBSan; it either loads a consistent store (every
 * sensor findable by id at its index, every snapshot taken without
 * tripping the store's assertions, a new reading appended to every sensor
 * without tripping the writer's) or leaves the store, the stream tables and
 * sensor_lsn exactly as they were: all zero.
 *
 * A random mutation almost never carries valid CRCs, so each input is also
 * tried with every CRC recomputed along the file's own chunk structure
 * (header, chunk payloads and headers, the trailer's running CRC): that lets
 * the fuzzer reach the field checks and the sensor-record validation behind
 * the CRCs.
 *
 * Also proves that sl_checkpoint_verify (sluice-log's check, without a
 * store) agrees with the loader on every input (see verify_agrees).
 *
 * Memory: one arena for the store (re-zeroed between runs), a heap copy of
 * each input (freed).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/crc32c.h"
#include "core/io.h"
#include "core/plan.h"
#include "sluice/protocol.h"
#include "store/checkpoint.h"
#include "store/store.h"
#include "store/streams.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_checkpoint: check failed: %s (line %d)\n", #cond, __LINE__);     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define FUZZ_SENSORS 64u
#define FUZZ_RING 16u
#define FUZZ_COARSE 4u
#define FUZZ_STREAMS 8u

static struct {
    bool ready;
    char dir[64];
    struct sl_store_config config;
    struct sl_arena arena;
    struct sl_store store;
    struct sl_streams tcp, udp;
    uint64_t sensor_lsn[FUZZ_SENSORS];
    struct sl_sensor_view view;
    void *view_memory;
} fz;

static void fuzz_reset(void)
{
    memset(fz.arena.base, 0, fz.arena.used_bytes);
    fz.arena.used_bytes = 0;
    sl_store_init(&fz.store, &fz.config, &fz.arena);
    sl_streams_init(&fz.tcp, FUZZ_STREAMS, &fz.arena);
    sl_streams_init(&fz.udp, FUZZ_STREAMS, &fz.arena);
    memset(fz.sensor_lsn, 0, sizeof fz.sensor_lsn);
}

/* The directory is empty between runs (each run removes its file). */
static void fuzz_cleanup(void)
{
    rmdir(fz.dir);
}

static void fuzz_setup(void)
{
    snprintf(fz.dir, sizeof fz.dir, "/tmp/sl-fuzz-ckpt-XXXXXX");
    FUZZ_CHECK(mkdtemp(fz.dir) != NULL);
    atexit(fuzz_cleanup);
    sl_store_config_default(&fz.config);
    fz.config.sensors_max = FUZZ_SENSORS;
    fz.config.ring_readings = FUZZ_RING;
    fz.config.coarse_buckets = FUZZ_COARSE;
    struct sl_plan plan;
    sl_plan_init(&plan);
    sl_store_plan(&fz.config, &plan);
    sl_streams_plan(FUZZ_STREAMS, &plan, "streams_tcp");
    sl_streams_plan(FUZZ_STREAMS, &plan, "streams_udp");
    FUZZ_CHECK(sl_arena_map(&fz.arena, plan.total_bytes) == 0);
    fz.view_memory = malloc(sl_store_view_bytes(&fz.config));
    sl_store_view_init(&fz.view, &fz.config, fz.view_memory);
    fuzz_reset();
    fz.ready = true;
}

/* Recompute every CRC along the file's own structure (as test_checkpoint's fix_crcs). */
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

static bool all_zero(const void *p, size_t bytes)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < bytes; i++) {
        if (b[i] != 0) {
            return false;
        }
    }
    return true;
}

/* A loaded store is consistent: findable, snapshots fine, and it takes new readings. */
static void check_loaded(const struct sl_checkpoint_loaded *info)
{
    uint32_t n = sl_store_sensors_count(&fz.store);
    FUZZ_CHECK(n <= FUZZ_SENSORS && n == info->sensors);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t id = fz.store.sensors[i].id, index;
        FUZZ_CHECK(sl_store_find(&fz.store, id, &index) == 0 && index == i);
        FUZZ_CHECK(sl_store_snapshot(&fz.store, id, &fz.view) == 0);
        FUZZ_CHECK(fz.view.count == fz.store.sensors[i].count);
        struct sl_window_stats w;
        sl_view_window(&fz.view, 3600LL * 1000000, &w);
        struct sl_sensor_summary summary;
        FUZZ_CHECK(sl_store_summary(&fz.store, id, &summary) == 0);
    }
    for (uint32_t i = 0; i < n; i++) {
        const struct sl_sensor *s = &fz.store.sensors[i];
        if (s->last_t_us < INT64_MAX - (INT64_C(1) << 34)) {
            int64_t t = s->last_t_us + (i % 2 ? 1 : (INT64_C(1) << 33)); /* plain, or an escape */
            FUZZ_CHECK(sl_store_apply_reading(&fz.store, s->id, t, 1.5f, t) == 0);
            FUZZ_CHECK(sl_store_snapshot(&fz.store, s->id, &fz.view) == 0);
        }
    }
}

/*
 * sl_checkpoint_verify (sluice-log's check, no store) agrees with the loader
 * on a file of the fuzz store's geometry: it accepts what loads, and
 * rejects what does not. The one difference: the loader drops stream
 * entries beyond its table (8) unchecked, so only verify sees a duplicate
 * among them.
 */
static void verify_agrees(const char *path, int load_rc)
{
    struct sl_checkpoint_verdict v;
    const char *name = strrchr(path, '/') + 1;
    int rc = sl_checkpoint_verify(fz.dir, name, &sl_io_posix, &v);
    FUZZ_CHECK(rc == 0 || rc == 1);
    FUZZ_CHECK((rc == 0) == (v.why[0] == '\0'));
    const struct sl_checkpoint_header *h = &v.header;
    bool same = v.header_valid && h->sensors_max == FUZZ_SENSORS && h->ring_readings == FUZZ_RING &&
                h->coarse_buckets_total == fz.store.coarse_buckets_total &&
                h->coarse_resolution_us == fz.store.coarse_resolution_us &&
                h->ewma_half_life_us == fz.config.ewma_half_life_us;
    if (same && rc == 0) {
        FUZZ_CHECK(load_rc == 0);
    }
    if (load_rc == 0) {
        FUZZ_CHECK(rc == 0 || strcmp(v.why, "duplicate stream id") == 0);
    }
}

static void fuzz_one(const uint8_t *data, size_t size)
{
    uint64_t seq = size >= 24 ? sl_load_u64(data + 16) : 1;
    char path[128];
    snprintf(path, sizeof path, "%s/ckpt-%016llx.ckpt", fz.dir, (unsigned long long)seq);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    FUZZ_CHECK(fd >= 0);
    FUZZ_CHECK(size == 0 || write(fd, data, size) == (ssize_t)size);
    close(fd);

    struct sl_checkpoint_loaded info;
    int rc =
        sl_checkpoint_load(fz.dir, &sl_io_posix, &fz.store, &fz.tcp, &fz.udp, NULL, fz.sensor_lsn, &info);
    FUZZ_CHECK(rc == 0 || rc == -ENOENT);
    if (rc == 0) {
        check_loaded(&info);
        fuzz_reset();
    } else {
        /* Left exactly as found: everything zero. */
        FUZZ_CHECK(sl_store_sensors_count(&fz.store) == 0);
        FUZZ_CHECK(all_zero(fz.arena.base, fz.arena.used_bytes));
        FUZZ_CHECK(all_zero(fz.sensor_lsn, sizeof fz.sensor_lsn));
        FUZZ_CHECK(atomic_load(&fz.tcp.count) == 0 && atomic_load(&fz.udp.count) == 0);
    }
    verify_agrees(path, rc);
    unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!fz.ready) {
        fuzz_setup();
    }
    /* An exact-length heap copy, so ASan sees the input's end. */
    uint8_t *copy = malloc(size ? size : 1);
    memcpy(copy, data, size);
    fuzz_one(copy, size);
    fix_crcs(copy, size);
    if (memcmp(copy, data, size) != 0) {
        fuzz_one(copy, size);
    }
    free(copy);
    return 0;
}
