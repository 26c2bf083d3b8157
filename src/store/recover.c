/*
 * Start-up recovery (see recover.h): checkpoint, then log replay.
 *
 * How. sl_checkpoint_load fills the store and the stream tables and gives,
 * per sensor, the lsn of the chunk that copied it (sensor_lsn). The log is
 * then scanned by sl_log_open with replay_record as the visitor:
 *
 * - a record at or below the checkpoint's start lsn is wholly in the
 *   checkpoint and skipped;
 * - each reading of a later record: t = base + offset (beyond INT64_MAX is
 *   `future`, as in sl_store_apply); when its sensor exists and its chunk
 *   lsn is >= the record's lsn, the chunk already holds it; otherwise it is
 *   applied with sl_store_apply_reading and the record's now_us, which
 *   repeats the original decision. A sensor created during replay has
 *   sensor_lsn 0, so all its readings apply, and it takes the same dense
 *   index it had: every sensor that existed when the checkpoint completed
 *   is in it, so the sensors created after are created in the same order.
 *   Records above the checkpoint's end lsn skip the per-sensor lookup: no
 *   chunk lsn is above it (a full replay never looks).
 * - a record above the stream chunk's lsn updates its transport's table:
 *   TCP keeps the highest applied batch_seq, UDP the latest one seen; a
 *   line protocol record (HTTP, the line listeners) has no stream.
 * - a series record (a name and its id) is restored into the registry
 *   whatever its lsn: one the checkpoint already holds is restored again to
 *   the same id, which changes nothing (sl_series_restore).
 *
 * Why this is exact. A chunk copied at lsn C holds, for its sensors, the
 * effect of every record <= C and nothing later (the writer applies records
 * in lsn order and copies a chunk between records). A sensor's state is a
 * function of its own readings in order, so skipping its readings <= C and
 * applying the rest gives its state after the last record.
 *
 * Memory: sensor_lsn (sensors_max x 8 B) is malloc'd and freed here;
 * start-up only. Thread: main, before the ingest thread exists.
 */
#include "store/recover.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/assert.h"
#include "core/clock.h"
#include "core/say.h"

struct replay {
    struct sl_store *store;
    struct sl_streams *tcp;
    struct sl_streams *udp;
    struct sl_series *series; /* NULL: series records are skipped */
    const uint64_t *sensor_lsn;
    uint64_t start_lsn;
    uint64_t end_lsn; /* no chunk lsn is above it: later records need no per-sensor check */
    uint64_t streams_lsn;
    struct sl_recover_result *out;
};

static void replay_readings(struct replay *rp, const struct sl_log_record *record)
{
    const struct sl_batch *batch = &record->batch;
    int64_t base = batch->header.base_time_us;
    bool maybe_in_checkpoint = record->lsn <= rp->end_lsn;
    for (uint32_t i = 0; i < batch->header.count; i++) {
        struct sl_reading r;
        sl_batch_reading(batch, i, &r);
        uint32_t index;
        if (maybe_in_checkpoint && sl_store_find(rp->store, r.sensor_id, &index) == 0 &&
            rp->sensor_lsn[index] >= record->lsn) {
            rp->out->readings_skipped_by_checkpoint++;
            continue;
        }
        if (base > INT64_MAX - (int64_t)r.offset_us) {
            rp->out->readings_rejected++; /* `future`: beyond any clock */
            continue;
        }
        int rc = sl_store_apply_reading(rp->store, r.sensor_id, base + (int64_t)r.offset_us,
                                        r.value, record->now_us);
        if (rc == 0) {
            rp->out->readings_applied++;
        } else {
            rp->out->readings_rejected++;
        }
    }
}

static void replay_streams(struct replay *rp, const struct sl_log_record *record)
{
    if (record->lsn <= rp->streams_lsn) {
        return; /* the checkpoint's stream chunk already holds it */
    }
    uint32_t stream_id = record->batch.header.stream_id;
    uint64_t seq = record->batch.header.batch_seq;
    struct sl_streams *table = record->transport == SL_LOG_TCP ? rp->tcp : rp->udp;
    struct sl_stream_slot *slot = sl_streams_get(table, stream_id, 1);
    if (slot == NULL) {
        rp->out->streams_full++;
        return;
    }
    if (record->transport == SL_LOG_TCP) {
        if (!slot->has_seq || seq > slot->last_seq) {
            slot->last_seq = seq; /* dedup keeps the highest applied */
        }
    } else {
        slot->last_seq = seq; /* UDP resynchronises to the latest seen */
    }
    slot->has_seq = 1;
}

static void replay_series(struct replay *rp, const struct sl_log_record *record)
{
    if (rp->series == NULL) {
        return;
    }
    int rc = sl_series_restore(rp->series, record->batch.header.stream_id,
                               (const char *)record->batch.readings, record->batch.header.count);
    if (rc != 0) {
        rp->out->series_dropped++;
    }
}

static int replay_record(void *ctx, const struct sl_log_record *record)
{
    struct replay *rp = ctx;
    if (record->transport == SL_LOG_SERIES) {
        replay_series(rp, record);
        return 0;
    }
    if (record->lsn <= rp->start_lsn) {
        rp->out->records_skipped++;
        return 0;
    }
    rp->out->records_replayed++;
    replay_readings(rp, record);
    if (record->transport == SL_LOG_TCP || record->transport == SL_LOG_UDP) {
        replay_streams(rp, record);
    }
    return 0;
}

static void reset_counters(struct sl_store *store, struct sl_streams *tcp, struct sl_streams *udp)
{
    atomic_store_explicit(&store->counters.readings_accepted, 0, memory_order_relaxed);
    for (uint32_t r = 0; r < SL_REJECT_COUNT; r++) {
        atomic_store_explicit(&store->counters.readings_rejected[r], 0, memory_order_relaxed);
    }
    atomic_store_explicit(&tcp->full_total, 0, memory_order_relaxed);
    atomic_store_explicit(&udp->full_total, 0, memory_order_relaxed);
}

struct sl_log *sl_recover(const struct sl_log_config *log_config, struct sl_arena *arena,
                          struct sl_store *store, struct sl_streams *tcp_streams,
                          struct sl_streams *udp_streams, struct sl_series *series,
                          struct sl_recover_result *out, char *err, uint32_t err_bytes)
{
    int64_t started_ns = sl_clock_monotonic_ns();
    memset(out, 0, sizeof *out);
    SL_ASSERT(sl_store_sensors_count(store) == 0);
    uint64_t *sensor_lsn = calloc(store->config.sensors_max, sizeof *sensor_lsn);
    if (sensor_lsn == NULL) {
        snprintf(err, err_bytes, "recovery: out of memory for %u sensor lsns",
                 store->config.sensors_max);
        return NULL;
    }
    int rc = sl_checkpoint_load(log_config->dir, log_config->io, store, tcp_streams, udp_streams,
                                series, sensor_lsn, &out->checkpoint);
    if (rc != 0 && rc != -ENOENT) {
        snprintf(err, err_bytes, "checkpoint: loading from %s: %s", log_config->dir, strerror(-rc));
        free(sensor_lsn);
        return NULL;
    }
    out->checkpoint_used = rc == 0;
    struct replay rp = {
        .store = store,
        .tcp = tcp_streams,
        .udp = udp_streams,
        .series = series,
        .sensor_lsn = sensor_lsn,
        .start_lsn = out->checkpoint.start_lsn,
        .end_lsn = out->checkpoint.end_lsn,
        .streams_lsn = out->checkpoint.streams_lsn,
        .out = out,
    };
    /* The log may recycle what the loaded checkpoint holds from the start, not only after the
     * next checkpoint completes (as sl_log_set_checkpoint_lsn when a checkpoint completes). */
    struct sl_log_config config = *log_config;
    config.checkpoint_lsn = out->checkpoint_used ? out->checkpoint.start_lsn + 1 : 0;
    struct sl_log *log = sl_log_open(&config, arena, replay_record, &rp, &out->log, err, err_bytes);
    free(sensor_lsn);
    if (log == NULL) {
        return NULL;
    }
    reset_counters(store, tcp_streams, udp_streams);
    const struct sl_log_recovery *lr = &out->log;
    if (lr->corrupt_regions > 0) {
        sl_say(SL_SAY_WARN, "recovery",
               "the log was damaged: %llu records (%llu bytes) lost in %llu damaged regions, "
               "skipped; every later record was kept",
               (unsigned long long)lr->corrupt_records, (unsigned long long)lr->corrupt_bytes,
               (unsigned long long)lr->corrupt_regions);
    }
    if (out->series_dropped > 0) {
        sl_say(SL_SAY_WARN, "recovery",
               "%llu series records of the log did not fit the registry (--max-series, "
               "--series-name-bytes, --series-id-base): their names are forgotten",
               (unsigned long long)out->series_dropped);
    }
    out->seconds = (double)(sl_clock_monotonic_ns() - started_ns) / 1e9;
    return log;
}
