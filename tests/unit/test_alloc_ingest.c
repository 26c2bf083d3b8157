/*
 * test_alloc_ingest: the ingest path makes no heap allocation after start-up.
 *
 * The allocator is interposed (src/core/alloc_count.c; ASan's hooks under
 * sanitizers). The test first proves the counter sees a malloc (so it can
 * fail), then fills a 65,536-sensor table, and ingests 10 million readings
 * through the whole ingest path: frame CRC patch, decode and validation,
 * the per-stream dedup table, the write-ahead log (append, group commit
 * with fdatasync every 64 batches, segment rotation and recycling in a
 * temporary directory), lookup, append, coarse tier, EWMA, rejects of every
 * kind (non-finite, out-of-order, future, sensor_limit), plus reader
 * snapshots and window statistics. The allocation count must not move.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/alloc_count.h"
#include "core/clock.h"
#include "core/crc32c.h"
#include "core/plan.h"
#include "store/log.h"
#include "store/store.h"
#include "store/streams.h"
#include "testlib.h"

#define NOW_US 1800000000000000LL
#define BATCH 100u
#define FRAMES 64u

static uint8_t frames[FRAMES][SL_BATCH_BYTES(BATCH)];

int main(void)
{
    CHECK(sl_alloc_counting_active());
    sl_alloc_track(SL_ALLOC_INGEST);
    uint64_t before_probe = sl_alloc_count(SL_ALLOC_INGEST);
    void *volatile probe = malloc(32);
    free(probe);
    CHECK(sl_alloc_count(SL_ALLOC_INGEST) == before_probe + 1); /* the counter works */
    sl_alloc_track(SL_ALLOC_UNTRACKED);

    struct sl_store_config c;
    sl_store_config_default(&c);
    c.ring_readings = 256;
    struct sl_plan plan;
    sl_plan_init(&plan);
    sl_store_plan(&c, &plan);
    sl_streams_plan(64, &plan, "streams");
    struct sl_log_config log_config;
    sl_log_config_default(&log_config);
    char dir[] = "/tmp/sluice-alloc-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    snprintf(log_config.dir, sizeof log_config.dir, "%s", dir);
    log_config.segment_bytes = 4u << 20; /* small: rotation and recycling happen often */
    log_config.bytes_max = 16u << 20;
    log_config.buffer_bytes = 4u << 20;
    log_config.sync = SL_SYNC_NEVER;
    log_config.io = &sl_io_posix;
    sl_log_plan(&log_config, &plan);
    struct sl_arena arena;
    CHECK(sl_arena_map(&arena, plan.total_bytes) == 0);
    static struct sl_store store;
    static struct sl_streams streams;
    sl_store_init(&store, &c, &arena);
    sl_streams_init(&streams, 64, &arena);
    struct sl_log_recovery recovery;
    char err[256];
    struct sl_log *log = sl_log_open(&log_config, &arena, NULL, NULL, &recovery, err, sizeof err);
    CHECK(log != NULL);
    sl_arena_seal(&arena);
    void *view_memory = malloc(sl_store_view_bytes(&c));
    struct sl_sensor_view view;
    sl_store_view_init(&view, &c, view_memory);

    /* Frame f holds sensors f*BATCH .. f*BATCH+99 of every 1,024-sensor block, one reading each. */
    struct sl_reading readings[BATCH];
    for (uint32_t f = 0; f < FRAMES; f++) {
        for (uint32_t i = 0; i < BATCH; i++) {
            readings[i].sensor_id = (f * BATCH + i) % 65536;
            readings[i].offset_us = i;
            readings[i].value = (float)i;
        }
        if (f == FRAMES - 1) {
            readings[0].value = NAN;            /* nonfinite */
            readings[1].sensor_id = 0x7fffffff; /* sensor_limit once the table is full */
            readings[2].offset_us = 0xffffffff; /* future */
        }
        struct sl_batch_header h = {.flags = SL_FLAG_ACK_REQUESTED, .count = BATCH, .stream_id = f % 8};
        CHECK(sl_batch_encode(frames[f], sizeof frames[f], &h, readings) == sizeof frames[f]);
    }
    /* Start-up: fill the table (65,536 sensors) before tracking. */
    for (uint32_t id = 0; id < 65536; id++) {
        CHECK(sl_store_apply_reading(&store, id, NOW_US - 3600000000LL, 1.0f, NOW_US) == 0);
    }

    sl_alloc_track(SL_ALLOC_INGEST);
    uint64_t allocs_before = sl_alloc_count(SL_ALLOC_INGEST);
    uint64_t accepted = 0, rejected = 0, duplicates = 0;
    int64_t base = NOW_US - 3000000000LL;
    for (uint64_t n = 0; n < 10000000 / BATCH; n++) {
        uint8_t *frame = frames[n % FRAMES];
        if (n % FRAMES == 0) {
            base += 1000; /* every sensor's next reading is later */
        }
        sl_store_u64(frame + SL_BATCH_OFF_BATCH_SEQ, n + 1);
        sl_store_u64(frame + SL_BATCH_OFF_BASE_TIME, (uint64_t)(n % 97 == 5 ? base - 500000000 : base));
        sl_store_u32(frame + SL_BATCH_BYTES(BATCH) - SL_CRC_BYTES, sl_crc32c(frame, SL_BATCH_BYTES(BATCH) - SL_CRC_BYTES));
        struct sl_batch batch;
        if (sl_batch_decode(frame, SL_BATCH_BYTES(BATCH), &batch) != 0) {
            CHECK(0);
            break;
        }
        struct sl_stream_slot *slot = NULL;
        uint64_t seq = n % 1000 == 999 ? 1 : n + 1; /* now and then a resend */
        int admit = sl_streams_admit(&streams, batch.header.stream_id, seq, &slot);
        if (admit == 1) {
            duplicates++;
            continue;
        }
        uint64_t lsn;
        const struct sl_log_record *record;
        int rc = sl_log_append(log, &batch, SL_LOG_TCP, NOW_US, &lsn, &record);
        uint64_t applicable = 0;
        if (rc == -ENOBUFS) {
            CHECK(sl_log_commit(log, sl_clock_monotonic_ns(), &applicable) == 0);
            rc = sl_log_append(log, &batch, SL_LOG_TCP, NOW_US, &lsn, &record);
        }
        CHECK(rc == 0);
        if (n % 64 == 63) {
            CHECK(sl_log_commit(log, sl_clock_monotonic_ns(), &applicable) == 0);
        }
        struct sl_apply_result r;
        sl_store_apply(&store, &record->batch, record->now_us, &r);
        sl_streams_applied(slot, seq);
        accepted += r.accepted;
        rejected += r.rejected;
        if (n % 10007 == 0) {
            struct sl_window_stats w;
            CHECK(sl_store_snapshot(&store, (uint32_t)(n % 65536), &view) == 0);
            sl_view_window(&view, c.windows_us[0], &w);
        }
    }
    uint64_t allocs = sl_alloc_count(SL_ALLOC_INGEST) - allocs_before;
    sl_alloc_track(SL_ALLOC_UNTRACKED);
    printf("ingested %llu accepted + %llu rejected readings (%llu duplicate batches), "
           "%llu heap allocations\n",
           (unsigned long long)accepted, (unsigned long long)rejected,
           (unsigned long long)duplicates, (unsigned long long)allocs);
    CHECK_EQ_U64(allocs, 0);
    CHECK(accepted + rejected + duplicates * BATCH == 10000000);
    CHECK(duplicates > 0);
    for (uint32_t k = 0; k < SL_REJECT_COUNT; k++) {
        CHECK(atomic_load(&store.counters.readings_rejected[k]) > 0);
    }
    CHECK(sl_store_sensors_count(&store) == 65536);
    CHECK(sl_log_counters(log)->segments_recycled > 0); /* the log really rotated and recycled */
    sl_log_close(log);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    free(view_memory);
    sl_arena_unmap(&arena);
    TEST_END("test_alloc_ingest");
}
