/*
 * Checkpoints: a copy of the store, the stream tables and the named-series
 * registry on disk, so that
 * recovery replays only the log written since, whatever the log's size, and
 * so that recycling old log segments loses nothing.
 *
 * A checkpoint is fuzzy and incremental, written a chunk at a time (at
 * most step_bytes; by the store's writer, between the groups it applies:
 * the apply thread, or the ingest thread with --apply-thread off) straight
 * from the store's
 * memory, so it never stops ingestion for long and needs no buffer. Each
 * chunk holds a contiguous range of sensors (their records, ring slots and
 * coarse buckets, all copied within one tick, so each sensor is
 * consistent) and the lsn of the last record applied when it was
 * copied. The stream tables go last, with their lsn. Recovery loads the
 * newest complete checkpoint whose store geometry matches the running
 * configuration, then replays the log from the checkpoint's start lsn,
 * skipping, per sensor, readings of records at or below its chunk's lsn.
 *
 * Files: `ckpt-<16 hex digits>.ckpt`, written as `.tmp`, fsynced, renamed,
 * directory fsynced; the newest two complete ones are kept. Format in
 * docs/STORAGE.md: a 128-byte header, chunks (64-byte header + payload,
 * each with CRC-32Cs), a streams chunk, a series chunk, a 64-byte trailer. A file without a
 * valid trailer is incomplete and ignored.
 *
 * Memory: a 16 KiB staging buffer inside struct sl_checkpointer (stream
 * entries, directory listings); sensor data is written straight from the
 * store. Threads: begin and finish on the ingest thread (which owns the
 * stream tables), the sensor chunks on the store's writer (net/commit.c has
 * the handshake); loading at start-up on main.
 */
#ifndef SL_STORE_CHECKPOINT_H
#define SL_STORE_CHECKPOINT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/io.h"
#include "store/series.h"
#include "store/store.h"
#include "store/streams.h"

#define SL_CHECKPOINT_STEP_BYTES_DEFAULT (4ull << 20) /* written per loop tick at most: ~5 ms */
#define SL_CHECKPOINTS_KEPT 2u
/* The writer's only memory: stream entries are staged here, 1,024 at a time. */
#define SL_CHECKPOINT_BUFFER_BYTES 16384u

struct sl_checkpoint_config {
    char dir[4096];
    uint64_t step_bytes;
    const struct sl_io *io;
};

struct sl_checkpoint_counters {
    _Atomic uint64_t started;
    _Atomic uint64_t completed;
    _Atomic uint64_t failed;
    _Atomic uint64_t bytes_written;
    _Atomic uint64_t last_start_lsn; /* of the newest complete checkpoint */
    _Atomic uint64_t last_bytes;     /* its size */
};

/* The writer's state; caller-owned (embed it), initialised by sl_checkpoint_init. */
struct sl_checkpointer {
    struct sl_checkpoint_config config;
    const struct sl_store *store;
    const struct sl_streams *tcp_streams;
    const struct sl_streams *udp_streams;
    const struct sl_series *series; /* NULL: the series chunk is empty */
    struct sl_checkpoint_counters counters;
    /* in-progress state */
    bool active;
    int fd;
    uint64_t seq;          /* this checkpoint's number; when idle, the next one's */
    uint64_t start_lsn;
    uint64_t offset;       /* bytes written so far */
    uint32_t next_sensor;  /* first sensor index of the next chunk */
    uint32_t chunks;
    uint32_t crc_running;  /* CRC-32C of everything before the trailer */
    uint64_t chunk_lsn;    /* lsn of the newest chunk written (chunk lsns never go down) */
    char tmp_path[4160];
    char path[4160];
    /* Staging for the stream tables' entries and for directory listings (no heap). */
    _Alignas(8) uint8_t buffer[SL_CHECKPOINT_BUFFER_BYTES];
};

void sl_checkpoint_init(struct sl_checkpointer *ck, const struct sl_checkpoint_config *config,
                        const struct sl_store *store, const struct sl_streams *tcp_streams,
                        const struct sl_streams *udp_streams, uint64_t next_seq);

/*
 * The named-series registry to keep in the series chunk (version 3), read
 * by sl_checkpoint_finish on the registry's writer thread (the ingest
 * thread). Without one the chunk is empty.
 */
void sl_checkpoint_set_series(struct sl_checkpointer *ck, const struct sl_series *series);

/*
 * Start a checkpoint. start_lsn is the lsn of the last record applied to the
 * store (0: none): every record at or below it is wholly in the checkpoint,
 * and recovery replays the records above it (once this completes, the log
 * may recycle records at or below it: sl_log_set_checkpoint_lsn(log,
 * start_lsn + 1)). 0 or -errno (nothing started);
 * -EBUSY while one is in progress. Ingest thread; never allocates.
 */
int sl_checkpoint_begin(struct sl_checkpointer *ck, uint64_t start_lsn);

/*
 * Write the next chunk (at most config.step_bytes; at least one sensor).
 * applied_lsn is the lsn of the last record applied to the store. Returns
 * 0 while in progress, 1 when the checkpoint completed (durably: fsynced,
 * renamed, directory fsynced, older ones beyond SL_CHECKPOINTS_KEPT
 * removed), or -errno when it failed (the partial file is removed; the
 * caller tries again later).
 */
int sl_checkpoint_step(struct sl_checkpointer *ck, uint64_t applied_lsn);

/*
 * sl_checkpoint_step in two halves, for a store written by another thread
 * than the one that owns the stream tables. step_sensors: the next chunk of
 * sensors, copied at applied_lsn by the store's writer between records;
 * 0 while sensors remain, 1 when every sensor the store has now is written,
 * -errno (abandoned). finish: the stream tables, trailer, sync, rename, by
 * their owner; lsn is the last record whose effect on the stream tables is
 * in them now (>= every chunk's lsn). 1, or -errno (abandoned).
 */
int sl_checkpoint_step_sensors(struct sl_checkpointer *ck, uint64_t applied_lsn);
int sl_checkpoint_finish(struct sl_checkpointer *ck, uint64_t lsn);

/* What recovery needs from a loaded checkpoint. */
struct sl_checkpoint_loaded {
    uint64_t seq;
    uint64_t start_lsn;    /* replay the log's records above this */
    uint64_t end_lsn;      /* the stream chunk's lsn: no chunk lsn is above it */
    uint32_t sensors;
    uint64_t streams_lsn;  /* stream-table updates of records at or below this are in it */
    uint32_t series;       /* named series restored */
    uint64_t series_dropped; /* named series that did not fit the running registry */
    uint64_t bytes;
};

/*
 * Load the newest complete, valid checkpoint in dir whose geometry matches
 * store->config into a freshly initialised store, stream tables and
 * series registry (sensors re-inserted in their dense order; series, from
 * a version 3 file, with their ids; `series` may be NULL: checked only). sensor_lsn[i] receives the
 * chunk lsn of sensor i (sensors_max entries, caller-provided). Returns 0,
 * -ENOENT when there is none usable (the store is left empty), or -errno
 * on an I/O error. Invalid or mismatched files are skipped, with a line on
 * stderr saying why. Start-up, main thread.
 */
int sl_checkpoint_load(const char *dir, const struct sl_io *io, struct sl_store *store,
                       struct sl_streams *tcp_streams, struct sl_streams *udp_streams,
                       struct sl_series *series,
                       uint64_t *sensor_lsn, struct sl_checkpoint_loaded *out);

/* A checkpoint file's 128-byte header, decoded (docs/STORAGE.md). */
#define SL_CHECKPOINT_HEADER_BYTES 128u
struct sl_checkpoint_header {
    uint32_t version;
    uint64_t seq;
    uint64_t start_lsn;
    uint32_t sensors_max;
    uint32_t ring_readings;
    uint32_t coarse_buckets_total;
    int64_t coarse_resolution_us;
    int64_t ewma_half_life_us;
    int64_t created_us;
};

/*
 * Decode a header: 0, or -EINVAL with the reason in *why (bad magic, bad
 * header CRC). The version is not judged here: the loader reads 1, 2 and 3.
 * Any thread; the loader and sluice-log share it.
 */
int sl_checkpoint_header_decode(const uint8_t h[SL_CHECKPOINT_HEADER_BYTES],
                                struct sl_checkpoint_header *out, const char **why);

/* What sl_checkpoint_verify found in one file. */
struct sl_checkpoint_verdict {
    bool header_valid; /* the header decoded: `header` holds it */
    struct sl_checkpoint_header header;
    struct sl_checkpoint_loaded loaded; /* when usable: what loading it would give */
    uint32_t chunks;                    /* sensor chunks checked */
    char why[256];                      /* when unusable: the loader's reason */
};

/*
 * Check the checkpoint `name` in dir the way sl_checkpoint_load does, with
 * the loader's own code and every one of its checks (header, version, seq
 * against the name, chunks contiguous, both CRCs of each, every sensor
 * record's invariants, distinct ids, stream entries, trailer counts and
 * running CRC, nothing after it), but without a store: against the
 * geometry its own header gives, which must be one a store can have
 * ("unreadable geometry" otherwise). A file this accepts loads into any
 * store of its geometry. Returns 0 usable, 1 unusable (the reason in
 * out->why), or -errno on an I/O error. Reads sensors through at most
 * 16 MiB of heap (one sensor at least), plus 4 B per sensor for the id
 * check; freed before it returns. Any thread; sluice-log uses it.
 */
int sl_checkpoint_verify(const char *dir, const char *name, const struct sl_io *io,
                         struct sl_checkpoint_verdict *out);

/* The number to give the next checkpoint written in dir (1 + the highest found). */
uint64_t sl_checkpoint_next_seq(const char *dir);

#endif
