/*
 * The durable log: a write-ahead log of accepted batches.
 *
 * Layout (docs/STORAGE.md has the byte tables): the data directory holds
 * segment files `log-<16 hex digits of segment_seq>.seg`, each preallocated
 * to segment_bytes, starting with a 64-byte segment header, then records
 * back to back at 8-byte alignment, then zeros. A record is a 64-byte header
 * (magic "SLR1", length, lsn, segment_seq, the gateway clock at acceptance,
 * the batch header fields, a CRC-32C of the readings and a CRC-32C of the
 * header) followed by the batch's readings verbatim (12 bytes each) and
 * padding to 8 bytes.
 *
 * Writing (ingest thread only): sl_log_append copies a batch into the
 * in-memory buffer and gives it the next lsn; sl_log_commit writes the
 * buffer to the segment (one pwrite per commit: group commit) and syncs it
 * per the sync mode. Only records at or below the lsn a commit reports may
 * be applied to the store and acknowledged; the rest failed and are
 * answered OVERLOADED, never applied. A segment whose write or sync failed
 * is never synced again (fsyncgate): it is retired and a fresh segment
 * takes the next records. When the log cannot get a fresh segment it is
 * "failed": appends return -EIO until sl_log_tick succeeds in opening one.
 *
 * Reading (start-up): sl_log_open scans every segment in order and hands
 * each valid record to a visitor, cutting a torn tail at the last whole
 * record, and skipping (and counting) damaged records in the middle while
 * keeping every later record and segment. The scanner of one segment's
 * bytes, sl_log_scan_segment, is pure and is what the fuzz target drives.
 *
 * Memory: the append buffer (buffer_bytes, from the arena). Disk: at most
 * bytes_max of segments; when a new segment would exceed it, the oldest is
 * recycled (renamed and rewritten in place) and the records it held that no
 * checkpoint covers are counted as dropped.
 */
#ifndef SL_STORE_LOG_H
#define SL_STORE_LOG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/io.h"
#include "core/plan.h"
#include "sluice/protocol.h"

#define SL_LOG_SEGMENT_HEADER_BYTES 64u
#define SL_LOG_RECORD_HEADER_BYTES 64u
#define SL_LOG_ALIGN 8u
/* Largest record: a whole 65,535-reading batch. */
#define SL_LOG_RECORD_BYTES_MAX                                                                    \
    ((SL_LOG_RECORD_HEADER_BYTES + SL_READING_BYTES * SL_BATCH_COUNT_MAX + SL_LOG_ALIGN - 1) /     \
     SL_LOG_ALIGN * SL_LOG_ALIGN)

#define SL_LOG_SEGMENT_BYTES_DEFAULT (64ull << 20)
#define SL_LOG_SEGMENT_BYTES_MIN (2ull << 20) /* > header + the largest record */
#define SL_LOG_SEGMENT_BYTES_MAX (1ull << 30)
#define SL_LOG_BYTES_MAX_DEFAULT (1ull << 30)
#define SL_LOG_BYTES_MAX_MAX (1ull << 40)
#define SL_LOG_BUFFER_BYTES_DEFAULT (32ull << 20) /* memory: the append buffer */
#define SL_LOG_WRITEBACK_BYTES (1ull << 20) /* batch, never: writeback is started every this much */
#define SL_LOG_BUFFER_BYTES_MIN (2ull << 20)
#define SL_LOG_BUFFER_BYTES_MAX (1ull << 30)
#define SL_LOG_SYNC_INTERVAL_MS_DEFAULT 100u
#define SL_LOG_SYNC_INTERVAL_MS_MAX 60000u
#define SL_LOG_RETRY_NS (1000000000LL) /* a failed log retries a fresh segment once a second */
#define SL_LOG_HOLDS_MAX 8u       /* uplinks */
#define SL_LOG_RETIRED_SLOTS 16u  /* retired segments remembered for readers */

_Static_assert(SL_LOG_SEGMENT_BYTES_MIN > SL_LOG_SEGMENT_HEADER_BYTES + SL_LOG_RECORD_BYTES_MAX,
               "a segment holds the largest record");
_Static_assert(SL_LOG_BUFFER_BYTES_MIN >= SL_LOG_RECORD_BYTES_MAX, "the buffer holds the largest record");

enum sl_sync_mode {
    SL_SYNC_ALWAYS = 0, /* fdatasync before any record is applied or acked */
    SL_SYNC_BATCH = 1,  /* apply and ack after the write; fdatasync every sync_interval_ms */
    SL_SYNC_NEVER = 2,  /* apply and ack after the write; syncing is left to the OS */
};

/*
 * What a record holds, by its transport byte: a native batch received over
 * UDP or TCP, a batch of line protocol readings (HTTP writes and the line
 * listeners: no stream, no dedup), or a series name (LINE_PROTOCOL.md): the
 * header's stream_id is the series id, count the name's length in bytes,
 * and the payload the name, so the record is 64 + count bytes unpadded.
 */
enum sl_log_transport { SL_LOG_UDP = 0, SL_LOG_TCP = 1, SL_LOG_LINE = 2, SL_LOG_SERIES = 3 };
#define SL_LOG_TRANSPORT_COUNT 4

struct sl_log_config {
    char dir[4096];
    uint64_t segment_bytes;
    uint64_t bytes_max; /* >= 2 segments */
    uint64_t buffer_bytes;
    enum sl_sync_mode sync;
    uint32_t sync_interval_ms;
    const struct sl_io *io;
    /*
     * true: never recycle a segment holding records no checkpoint covers;
     * when the log is full of them, refuse appends (the failed state, with
     * its own reason) until a checkpoint covers the oldest segment. Nothing
     * acknowledged is then dropped from recovery: overload is shed as
     * OVERLOADED instead. false (no checkpoints): recycle and count.
     */
    bool wait_for_checkpoint;
    /*
     * Start-up: records with lsn below this are held by the checkpoint that
     * recovery loaded (its start lsn + 1; 0: none), as if
     * sl_log_set_checkpoint_lsn had been called before the log resumes, so
     * segments wholly below it can be recycled at once after a restart.
     * sl_recover sets it; others leave it 0.
     */
    uint64_t checkpoint_lsn;
};

void sl_log_config_default(struct sl_log_config *config);

/* 0, or -EINVAL with a reason in *why. */
int sl_log_config_check(const struct sl_log_config *config, const char **why);

/* ---- the format: pure, no I/O ---- */

/* A record decoded from bytes; batch.readings points into those bytes. */
struct sl_log_record {
    uint64_t lsn;
    uint64_t segment_seq;
    int64_t now_us; /* the gateway clock when the batch was accepted (the `future` rule) */
    uint8_t transport; /* enum sl_log_transport */
    struct sl_batch batch; /* header: version 1, key_id 0, the frame's flags, count, stream, seq, base */
    uint32_t record_bytes; /* on disk, padding included */
};

/* Why a record did not decode. Negated by the decoder. */
enum sl_log_decode_error {
    SL_LOG_END = 1,             /* an all-zero header: the end of the segment's data */
    SL_LOG_TRUNCATED = 2,       /* fewer bytes than the header or the record needs */
    SL_LOG_BAD_MAGIC = 3,
    SL_LOG_BAD_HEADER_CRC = 4,
    SL_LOG_BAD_LENGTH = 5,      /* length != 64 + payload (12 x count; a name: count), count 0, or an unknown transport */
    SL_LOG_STALE = 6,           /* segment_seq of an earlier use of a recycled file */
    SL_LOG_BAD_PAYLOAD_CRC = 7,
};

/* Bytes a record of `count` readings takes on disk (header, readings, padding). */
uint32_t sl_log_record_bytes(uint32_t count);

/* Bytes a series record with a name of `name_len` bytes takes on disk. */
uint32_t sl_log_series_record_bytes(uint32_t name_len);

/* Encode a record into out (sl_log_record_bytes(count) bytes, padding zeroed). */
void sl_log_record_encode(uint8_t *out, const struct sl_batch *batch, uint8_t transport,
                          int64_t now_us, uint64_t lsn, uint64_t segment_seq);

/* Decode the record at buf[0, len) that must belong to segment_seq. 0 or a negated enum. */
int sl_log_record_decode(const uint8_t *buf, size_t len, uint64_t segment_seq,
                         struct sl_log_record *out);

struct sl_log_segment_header {
    uint64_t segment_seq;
    uint64_t first_lsn; /* the lsn its first record has (or will have) */
    uint64_t segment_bytes;
    int64_t created_us;
};

void sl_log_segment_header_encode(uint8_t out[SL_LOG_SEGMENT_HEADER_BYTES],
                                  const struct sl_log_segment_header *header);

/* 0, or -EINVAL (bad magic, version or CRC, or len < 64). */
int sl_log_segment_header_decode(const uint8_t *buf, size_t len, struct sl_log_segment_header *out);

/* ---- scanning ---- */

/* Called for every valid record, in order. Return 0 to go on, nonzero to stop the scan. */
typedef int (*sl_log_visit_fn)(void *ctx, const struct sl_log_record *record);

struct sl_log_scan {
    uint64_t records;         /* valid records visited */
    uint64_t readings;        /* readings in them */
    uint64_t last_lsn;        /* of the last valid record (0: none) */
    uint64_t end_offset;      /* just past the last valid record: where appending resumes */
    uint64_t corrupt_regions; /* damaged regions skipped with valid records after them */
    uint64_t corrupt_records; /* records lost in them (see sl_log_scan_segment) */
    uint64_t corrupt_bytes;   /* bytes in those regions */
    uint64_t tail_bytes;      /* damaged bytes after the last valid record (a torn tail) */
    int tail_error;           /* the decode error that ended the data (SL_LOG_END when clean) */
};

/*
 * Scan one segment's bytes: the header, then records from offset 64.
 * Records must have strictly increasing lsns greater than min_lsn. On a
 * damaged record the scanner resynchronises at the next 8-byte offset that
 * holds a valid record of this segment (its header CRC checked first, so
 * the search is cheap), bounded to 16 x len bytes of CRC work in all so any
 * input ends quickly. The records lost in a region are the lsn gap between
 * the last valid record before it (or the segment header's first_lsn - 1)
 * and the first after it (lsns within a segment are consecutive), at least
 * 1 and at most as many as could start in its bytes (80 each at least).
 * Returns 0, or -EINVAL when the segment header is bad (nothing visited).
 * Never reads outside buf[0, len).
 */
int sl_log_scan_segment(const uint8_t *buf, size_t len, uint64_t min_lsn, sl_log_visit_fn visit,
                        void *ctx, struct sl_log_scan *scan);

/* ---- the log ---- */

/* What start-up found; also the metrics' starting values. */
struct sl_log_recovery {
    uint32_t segments;         /* segment files found */
    uint32_t segments_bad;     /* with an unreadable header: left in place, skipped, counted */
    uint64_t records;          /* valid records visited */
    uint64_t readings;
    uint64_t corrupt_regions;  /* damaged regions skipped (a closed segment's damaged end is one) */
    uint64_t corrupt_records;  /* records lost in them (a closed segment's damaged end: 1) */
    uint64_t corrupt_bytes;    /* bytes in them */
    uint64_t torn_tail_bytes;  /* cut from the last segment */
    uint64_t last_lsn;
    uint64_t bytes;            /* of log data scanned */
    double seconds;            /* wall time of the scan and replay */
};

struct sl_log; /* defined in log.c: the writer's state */

struct sl_log_counters {
    _Atomic uint64_t records_written;
    _Atomic uint64_t bytes_written;
    _Atomic uint64_t commits;
    _Atomic uint64_t syncs;                   /* fdatasync calls that succeeded */
    _Atomic uint64_t write_errors;            /* failed or short pwrite */
    _Atomic uint64_t sync_errors;             /* failed fdatasync */
    _Atomic uint64_t records_failed;          /* dropped from a failed commit: answered OVERLOADED */
    _Atomic uint64_t acked_at_risk;           /* acked records (batch/never) whose later sync failed */
    _Atomic uint64_t segments_created;
    _Atomic uint64_t segments_retired;        /* abandoned after an error */
    _Atomic uint64_t segments_recycled;
    _Atomic uint64_t recycled_records;        /* records dropped by recycling that no checkpoint held */
    _Atomic uint64_t corrupt_records;         /* lost to damage, found at start-up */
    _Atomic uint64_t corrupt_bytes;           /* damaged bytes skipped at start-up */
    _Atomic uint64_t recycled_on_enospc;      /* segments recycled because the disk was full */
    _Atomic uint64_t torn_tail_bytes;         /* found at start-up */
    _Atomic uint64_t bytes_on_disk;           /* segment files */
    _Atomic uint64_t durable_lsn;             /* highest lsn known synced */
    _Atomic int failed;                       /* 1 while appends are refused */
    /*
     * For readers of the files on other threads (uplinks): the oldest and
     * newest segment names (release), the last record applied to the store
     * (every record at or below it is whole in its file), the bytes of
     * records committed (since the records of the segments found at
     * start-up), and the segments given up after an error with the last lsn
     * each validly holds (sl_log_retired_last).
     */
    _Atomic uint64_t oldest_seq;
    _Atomic uint64_t newest_seq;
    _Atomic uint64_t applied_lsn;
    _Atomic uint64_t appended_bytes;
    _Atomic uint64_t retired_seq[SL_LOG_RETIRED_SLOTS];
    _Atomic uint64_t retired_last[SL_LOG_RETIRED_SLOTS];
};

/*
 * Is segment `seq` one given up after an error? 1 with the last lsn it
 * validly holds in *last_lsn (records after it there are not to be read:
 * they were rewritten in the next segment, or failed), else 0. Any thread.
 * Only the last SL_LOG_RETIRED_SLOTS retirements are remembered.
 */
int sl_log_retired_last(const struct sl_log_counters *counters, uint64_t seq, uint64_t *last_lsn);

/* What a hold is told about a segment about to be recycled. */
struct sl_log_segment_info {
    uint64_t seq, name_seq;
    uint64_t first_lsn, last_lsn; /* 0, 0: no records */
    uint64_t records;
    uint64_t readings;   /* in its records */
    uint64_t data_bytes; /* of its records */
};

/*
 * A reader's claim on the log (an uplink): records with lsn >= need_lsn
 * are still needed (UINT64_MAX: none). When the log must recycle a segment
 * a hold needs, a `block` hold makes appends fail (the failed state, health
 * "uplink backlog full: NAME") until need_lsn passes it; otherwise
 * `dropping` is called first, on the writer's thread, and the segment is
 * recycled.
 */
struct sl_log_hold {
    const char *name;
    _Atomic uint64_t need_lsn;
    bool block;
    void (*dropping)(void *ctx, const struct sl_log_segment_info *segment);
    void *ctx;
};

/* Register a hold (start-up, before the writer runs). 0, or -ENOSPC past SL_LOG_HOLDS_MAX. */
int sl_log_add_hold(struct sl_log *log, struct sl_log_hold *hold);

/* The commit pipeline: every record at or below lsn is applied (release). */
void sl_log_set_applied(struct sl_log *log, uint64_t lsn);


/* Memory the log takes from the arena: the append buffer. */
void sl_log_plan(const struct sl_log_config *config, struct sl_plan *plan);

/*
 * Open the log directory (created if missing): scan every segment in
 * segment_seq order, calling visit for each valid record (records whose lsn
 * is at or below an earlier one are skipped), fill *recovery, then prepare
 * to append after the last valid record (a fresh segment when the last one
 * was damaged or full). Returns the log, or NULL with a reason in err.
 * Start-up, main thread; the returned object lives in the arena.
 */
struct sl_log *sl_log_open(const struct sl_log_config *config, struct sl_arena *arena,
                           sl_log_visit_fn visit, void *ctx, struct sl_log_recovery *recovery,
                           char *err, uint32_t err_bytes);

/*
 * Append a batch as the next record (transport SL_LOG_SERIES: a series
 * name, as the enum says: header.stream_id the id, header.count the name's
 * length, readings the name's bytes). Returns 0 with its lsn in *lsn_out
 * and the record (inside the buffer; valid through the commit that writes
 * it, until the next append after that commit) in *record_out; -ENOBUFS
 * when the buffer or the current segment has no room (commit, then append
 * again: after a commit it always fits);
 * -EIO while the log is failed (answer OVERLOADED).
 */
int sl_log_append(struct sl_log *log, const struct sl_batch *batch, uint8_t transport,
                  int64_t now_us, uint64_t *lsn_out, const struct sl_log_record **record_out);

/*
 * Would sl_log_append of `count` readings go through now? 0 yes (it may
 * rotate to a new segment first), -ENOBUFS when the caller must commit
 * first, -EIO while the log is failed. Lets the caller commit before it
 * changes any state of its own for the batch.
 */
int sl_log_room(const struct sl_log *log, uint32_t count);

/* The same for a record of `bytes` on disk (sl_log_series_record_bytes, say). */
int sl_log_room_bytes(const struct sl_log *log, uint64_t bytes);

/*
 * Write the buffered records and sync per the mode. Returns 0 when every
 * buffered record may be applied and acked, or a negative errno when the
 * write or the sync failed: then only records with lsn <= *applicable_lsn
 * may be applied (for sync=always, none of this commit's). Either way
 * *applicable_lsn is set, and the buffer is emptied of this commit's
 * records. now_ns is CLOCK_MONOTONIC.
 */
int sl_log_commit(struct sl_log *log, int64_t now_ns, uint64_t *applicable_lsn);

/* Periodic work (each loop tick): batch-mode syncs when idle, leaving the failed state. */
void sl_log_tick(struct sl_log *log, int64_t now_ns);

/* Records with lsn < lsn are held by a checkpoint: recycling them loses nothing. */
void sl_log_set_checkpoint_lsn(struct sl_log *log, uint64_t lsn);

/*
 * Should the caller start a checkpoint because the log needs one? True while
 * appends are refused because the log is full (bytes_max) of records no
 * checkpoint holds; and, with wait_for_checkpoint, once after each failed
 * attempt to get a segment on a full disk (ENOSPC, EDQUOT) while the oldest
 * segment holds records no checkpoint does (a checkpoint would let it be
 * recycled): the once keeps a checkpoint that fails on the same disk from
 * being begun again every tick. Ingest thread (the writer's).
 */
bool sl_log_waiting_for_checkpoint(struct sl_log *log);

/* The next lsn to be assigned (1 on an empty log). */
uint64_t sl_log_next_lsn(const struct sl_log *log);

/* Log bytes appended since the last call that reset it (drives checkpoint scheduling). */
uint64_t sl_log_bytes_since(struct sl_log *log, bool reset);

const struct sl_log_counters *sl_log_counters(const struct sl_log *log);

/* 0 when healthy; otherwise copies a one-line reason ("log: fdatasync failed: ...") into buf. */
int sl_log_health(const struct sl_log *log, char *buf, uint32_t buf_bytes);

/* Flush, sync (all modes) and close. Main thread, after the ingest thread stopped. */
void sl_log_close(struct sl_log *log);

const char *sl_sync_mode_name(enum sl_sync_mode mode);

#endif
