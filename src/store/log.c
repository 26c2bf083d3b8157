/*
 * The durable log (see log.h for the contract, docs/STORAGE.md for the bytes).
 *
 * What: a write-ahead log of accepted batches, in preallocated segment files,
 * with group commit, three sync modes, fsyncgate-safe failure handling,
 * recycling at a disk budget, and a scanner that recovers everything intact
 * from damaged files.
 *
 * Format. A segment is a 64-byte header then records back to back at 8-byte
 * alignment. Every commit's single pwrite carries, after its records, an end
 * marker: up to 64 zero bytes (fewer at the very end of a segment). So the
 * data of a segment always ends in a zero header (the scanner's clean end)
 * even in a recycled file full of an earlier life's records, and even after
 * appending resumed over a torn tail.
 *
 * Scanning (sl_log_scan_segment, pure). Records are decoded in order; the
 * header CRC is checked before anything it covers is trusted, and before the
 * payload CRC. A record that fails starts a damaged region: the scanner steps
 * 8 bytes at a time to the next record that is intact and belongs to this
 * segment (magic first, then the header CRC, then the lsn, and only then the
 * payload CRC). A region with a valid record after it is counted as corrupt;
 * its records lost are the lsn gap across it (region_lost); one that runs
 * to the end is the tail: clean when it starts with a zero
 * header (or with a record of an earlier life of the file), torn otherwise,
 * and then its bytes run to the first zero header or stale record after it.
 * An intact record whose lsn is not above the last one seen is a copy already
 * visited (records rescued into a fresh segment are written twice, see
 * below): it is skipped whole, not counted as damage. CRC work is capped at
 * 16 x len bytes, and the 8-byte steps at len / 8, so any input ends quickly.
 *
 * Writing (ingest thread). Appends encode into the append buffer (from the
 * arena); the structs handed out to the caller (struct sl_log_record) are
 * kept at the buffer's far end, growing down, one per record appended since
 * the last commit, and stay readable until the next append after the commit.
 * The buffer maps onto the current segment: buffer[0] is at segment offset
 * buffer_offset; buffer[0, written) is in the file but not yet synced (only
 * in batch mode: kept so that a failed sync can rewrite it elsewhere);
 * buffer[written, used) is appended, not yet written. A commit is one pwrite
 * of [written, used) plus the end marker, then the sync of its mode.
 *
 * Failures (fsyncgate). After a failed pwrite or fdatasync on a segment, its
 * fd is closed and never synced again (segments_retired). The failed commit's
 * records are dropped (records_failed; the caller answers OVERLOADED). A
 * fresh segment is made at once and the kept records (acked in batch mode,
 * never synced) are rewritten into it, their segment_seq patched, and synced
 * there: the rescue. When no fresh segment can be had the log is failed:
 * appends return -EIO, the kept records stay in the buffer (acked_at_risk
 * counts them) and sl_log_tick tries again once per SL_LOG_RETRY_NS.
 *
 * Recycling. Files on disk are tracked in a ring of bytes_max / segment_bytes
 * + 2 entries (oldest first), with their lsn range and record count. Before a
 * new segment would exceed bytes_max (or the ring), the oldest is renamed to
 * the new name and its header rewritten (its old records become STALE).
 * When a new file cannot be had for a full disk (ENOSPC, EDQUOT), the oldest
 * is recycled the same way if a checkpoint holds all its records
 * (segment_when_full; never the newest, never one still needed). The
 * checkpoint lsn comes from sl_log_set_checkpoint_lsn, and at start-up from
 * the config (the checkpoint recovery loaded).
 *
 * Memory: the append buffer (buffer_bytes) and the state with its segment
 * ring, both from the arena. Nothing in append, commit or tick allocates.
 * Start-up reads each segment into one malloc'd buffer, freed before
 * sl_log_open returns. Threads: the writer is the ingest thread's; the
 * counters and the health word are atomics any thread may read.
 * Invariants: written <= used <= buffer capacity; lsns strictly increase;
 * the current fd is -1 exactly while failed or closed; a retired fd is never
 * used again.
 */
#include "store/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/assert.h"
#include "core/clock.h"
#include "core/crc32c.h"

/* ---- the format ---- */

static const uint8_t segment_magic[8] = {'S', 'L', 'U', 'I', 'C', 'E', 'L', 'G'};
static const uint8_t record_magic[4] = {'S', 'L', 'R', '1'};

#define SL_LOG_FORMAT_VERSION 1u

/* Segment header offsets. */
enum {
    SEG_MAGIC = 0,
    SEG_VERSION = 8,
    SEG_RESERVED = 12,
    SEG_SEQ = 16,
    SEG_FIRST_LSN = 24,
    SEG_BYTES = 32,
    SEG_CREATED_US = 40,
    SEG_RESERVED2 = 48, /* 12 zero bytes */
    SEG_CRC = 60,
};

/* Record header offsets. */
enum {
    REC_MAGIC = 0,
    REC_LENGTH = 4, /* 64 + 12 x count, unpadded */
    REC_LSN = 8,
    REC_SEQ = 16,
    REC_NOW_US = 24,
    REC_BATCH_SEQ = 32,
    REC_BASE_US = 40,
    REC_STREAM = 48,
    REC_COUNT = 52,
    REC_TRANSPORT = 54,
    REC_FLAGS = 55,
    REC_PAYLOAD_CRC = 56,
    REC_HEADER_CRC = 60,
};

_Static_assert(SEG_RESERVED2 + 12 == SEG_CRC, "segment header: reserved bytes end at the CRC");
_Static_assert(SEG_CRC + 4 == SL_LOG_SEGMENT_HEADER_BYTES, "segment header is 64 bytes");
_Static_assert(REC_FLAGS + 1 == REC_PAYLOAD_CRC, "record header fields are contiguous");
_Static_assert(REC_HEADER_CRC + 4 == SL_LOG_RECORD_HEADER_BYTES, "record header is 64 bytes");
_Static_assert(SL_LOG_RECORD_BYTES_MAX == 786488u, "largest record: 64 + 12 x 65535, padded");
_Static_assert(SL_LOG_RECORD_HEADER_BYTES % SL_LOG_ALIGN == 0, "records stay 8-byte aligned");

/* Zero bytes written after the records of every commit: the scanner's clean end. */
#define SL_LOG_MARKER_BYTES 64u
/* Internal: the scanner ran out of CRC work (never returned by the public decoder). */
#define SL_LOG_OUT_OF_BUDGET 64
#define SL_LOG_SCAN_WORK_FACTOR 16u
#define SL_LOG_RESCUE_ATTEMPTS 2u
#define SL_LOG_OPEN_FILES_MAX (1u << 20) /* segment files considered at start-up */
#define SL_LOG_NAME_BYTES 24u            /* "log-" + 16 hex digits + ".seg" */
/* Larger segment numbers (in a name or a header) mark a file as bad: they only come from damage. */
#define SL_LOG_SEQ_MAX ((1ull << 38) - 1)
/* A log whose last lsn is beyond this is refused at start-up (it would wrap). */
#define SL_LOG_LSN_MAX (1ull << 62)

_Static_assert(SL_LOG_BUFFER_BYTES_MIN >=
                   SL_LOG_RECORD_BYTES_MAX + SL_LOG_MARKER_BYTES + sizeof(struct sl_log_record),
               "the buffer always holds the largest record, its marker and its struct");

uint32_t sl_log_record_bytes(uint32_t count)
{
    return (uint32_t)sl_align_up(SL_LOG_RECORD_HEADER_BYTES + (uint64_t)SL_READING_BYTES * count,
                                 SL_LOG_ALIGN);
}

uint32_t sl_log_series_record_bytes(uint32_t name_len)
{
    return (uint32_t)sl_align_up(SL_LOG_RECORD_HEADER_BYTES + (uint64_t)name_len, SL_LOG_ALIGN);
}

/* The payload's bytes: readings, or a series record's name. */
static uint32_t payload_bytes(uint8_t transport, uint32_t count)
{
    return transport == SL_LOG_SERIES ? count : SL_READING_BYTES * count;
}

static uint32_t record_bytes_of(uint8_t transport, uint32_t count)
{
    return transport == SL_LOG_SERIES ? sl_log_series_record_bytes(count)
                                      : sl_log_record_bytes(count);
}

static bool all_zero(const uint8_t *p, size_t bytes)
{
    for (size_t i = 0; i < bytes; i++) {
        if (p[i] != 0) {
            return false;
        }
    }
    return true;
}

void sl_log_record_encode(uint8_t *out, const struct sl_batch *batch, uint8_t transport,
                          int64_t now_us, uint64_t lsn, uint64_t segment_seq)
{
    uint32_t count = batch->header.count;
    SL_ASSERT(count >= 1 && transport < SL_LOG_TRANSPORT_COUNT);
    uint32_t payload = payload_bytes(transport, count);
    uint32_t bytes = record_bytes_of(transport, count);
    memcpy(out + REC_MAGIC, record_magic, sizeof record_magic);
    sl_store_u32(out + REC_LENGTH, SL_LOG_RECORD_HEADER_BYTES + payload);
    sl_store_u64(out + REC_LSN, lsn);
    sl_store_u64(out + REC_SEQ, segment_seq);
    sl_store_u64(out + REC_NOW_US, (uint64_t)now_us);
    sl_store_u64(out + REC_BATCH_SEQ, batch->header.batch_seq);
    sl_store_u64(out + REC_BASE_US, (uint64_t)batch->header.base_time_us);
    sl_store_u32(out + REC_STREAM, batch->header.stream_id);
    sl_store_u16(out + REC_COUNT, (uint16_t)count);
    out[REC_TRANSPORT] = transport;
    out[REC_FLAGS] = batch->header.flags;
    memcpy(out + SL_LOG_RECORD_HEADER_BYTES, batch->readings, payload);
    memset(out + SL_LOG_RECORD_HEADER_BYTES + payload, 0,
           bytes - SL_LOG_RECORD_HEADER_BYTES - payload);
    sl_store_u32(out + REC_PAYLOAD_CRC, sl_crc32c(out + SL_LOG_RECORD_HEADER_BYTES, payload));
    sl_store_u32(out + REC_HEADER_CRC, sl_crc32c(out, REC_HEADER_CRC));
}

/* Spend `bytes` of CRC work; false when the budget has not that much left. */
static bool budget_spend(uint64_t *budget, uint64_t bytes)
{
    if (*budget < bytes) {
        *budget = 0;
        return false;
    }
    *budget -= bytes;
    return true;
}

/*
 * The header half of the decoder: everything but the payload CRC. Fewer than
 * 64 bytes that are all zero are the end of the data too (a segment whose
 * last record stops less than a header short of its end).
 */
static int record_header_decode(const uint8_t *buf, size_t len, uint64_t segment_seq,
                                struct sl_log_record *out, uint64_t *budget)
{
    if (len < SL_LOG_RECORD_HEADER_BYTES) {
        return all_zero(buf, len) ? -SL_LOG_END : -SL_LOG_TRUNCATED;
    }
    if (memcmp(buf + REC_MAGIC, record_magic, sizeof record_magic) != 0) {
        return all_zero(buf, SL_LOG_RECORD_HEADER_BYTES) ? -SL_LOG_END : -SL_LOG_BAD_MAGIC;
    }
    if (!budget_spend(budget, REC_HEADER_CRC)) {
        return -SL_LOG_OUT_OF_BUDGET;
    }
    if (sl_crc32c(buf, REC_HEADER_CRC) != sl_load_u32(buf + REC_HEADER_CRC)) {
        return -SL_LOG_BAD_HEADER_CRC;
    }
    uint32_t count = sl_load_u16(buf + REC_COUNT);
    uint8_t transport = buf[REC_TRANSPORT];
    if (count == 0 || transport >= SL_LOG_TRANSPORT_COUNT ||
        sl_load_u32(buf + REC_LENGTH) !=
            SL_LOG_RECORD_HEADER_BYTES + payload_bytes(transport, count)) {
        return -SL_LOG_BAD_LENGTH;
    }
    out->segment_seq = sl_load_u64(buf + REC_SEQ);
    if (out->segment_seq != segment_seq) {
        return -SL_LOG_STALE;
    }
    out->lsn = sl_load_u64(buf + REC_LSN);
    out->now_us = (int64_t)sl_load_u64(buf + REC_NOW_US);
    out->transport = transport;
    out->batch.header = (struct sl_batch_header){
        .version = SL_PROTOCOL_VERSION,
        .flags = buf[REC_FLAGS],
        .count = (uint16_t)count,
        .stream_id = sl_load_u32(buf + REC_STREAM),
        .key_id = 0,
        .batch_seq = sl_load_u64(buf + REC_BATCH_SEQ),
        .base_time_us = (int64_t)sl_load_u64(buf + REC_BASE_US),
    };
    out->batch.readings = buf + SL_LOG_RECORD_HEADER_BYTES;
    out->record_bytes = record_bytes_of(transport, count);
    if (out->record_bytes > len) {
        return -SL_LOG_TRUNCATED;
    }
    return 0;
}

static int record_payload_check(const uint8_t *buf, const struct sl_log_record *record,
                                uint64_t *budget)
{
    uint32_t payload = payload_bytes(record->transport, record->batch.header.count);
    if (!budget_spend(budget, payload)) {
        return -SL_LOG_OUT_OF_BUDGET;
    }
    if (sl_crc32c(buf + SL_LOG_RECORD_HEADER_BYTES, payload) !=
        sl_load_u32(buf + REC_PAYLOAD_CRC)) {
        return -SL_LOG_BAD_PAYLOAD_CRC;
    }
    return 0;
}

int sl_log_record_decode(const uint8_t *buf, size_t len, uint64_t segment_seq,
                         struct sl_log_record *out)
{
    uint64_t budget = UINT64_MAX;
    int rc = record_header_decode(buf, len, segment_seq, out, &budget);
    if (rc != 0) {
        return rc;
    }
    return record_payload_check(buf, out, &budget);
}

void sl_log_segment_header_encode(uint8_t out[SL_LOG_SEGMENT_HEADER_BYTES],
                                  const struct sl_log_segment_header *header)
{
    memset(out, 0, SL_LOG_SEGMENT_HEADER_BYTES);
    memcpy(out + SEG_MAGIC, segment_magic, sizeof segment_magic);
    sl_store_u32(out + SEG_VERSION, SL_LOG_FORMAT_VERSION);
    sl_store_u64(out + SEG_SEQ, header->segment_seq);
    sl_store_u64(out + SEG_FIRST_LSN, header->first_lsn);
    sl_store_u64(out + SEG_BYTES, header->segment_bytes);
    sl_store_u64(out + SEG_CREATED_US, (uint64_t)header->created_us);
    sl_store_u32(out + SEG_CRC, sl_crc32c(out, SEG_CRC));
}

int sl_log_segment_header_decode(const uint8_t *buf, size_t len, struct sl_log_segment_header *out)
{
    if (len < SL_LOG_SEGMENT_HEADER_BYTES ||
        memcmp(buf, segment_magic, sizeof segment_magic) != 0 ||
        sl_load_u32(buf + SEG_VERSION) != SL_LOG_FORMAT_VERSION ||
        sl_crc32c(buf, SEG_CRC) != sl_load_u32(buf + SEG_CRC)) {
        return -EINVAL;
    }
    out->segment_seq = sl_load_u64(buf + SEG_SEQ);
    out->first_lsn = sl_load_u64(buf + SEG_FIRST_LSN);
    out->segment_bytes = sl_load_u64(buf + SEG_BYTES);
    out->created_us = (int64_t)sl_load_u64(buf + SEG_CREATED_US);
    return 0;
}

/* ---- scanning ---- */

struct scanner {
    const uint8_t *buf;
    size_t len;
    uint64_t segment_seq;
    uint64_t last_lsn; /* of the last record visited (or min_lsn) */
    uint64_t base_lsn; /* this segment's last valid lsn, or its header's first_lsn - 1 */
    uint64_t budget;   /* bytes of CRC work left */
    bool out_of_budget;
    bool stopped; /* the visitor asked to stop */
};

/*
 * Try the record at off. 0: intact and newer than the last one; 1: intact
 * but not newer (a copy already visited: skip out->record_bytes); or a
 * negated decode error.
 */
static int scan_try(struct scanner *s, uint64_t off, struct sl_log_record *out)
{
    const uint8_t *p = s->buf + off;
    size_t avail = s->len - (size_t)off;
    int rc = record_header_decode(p, avail, s->segment_seq, out, &s->budget);
    if (rc != 0) {
        return rc;
    }
    if (out->lsn <= s->last_lsn) {
        return 1;
    }
    return record_payload_check(p, out, &s->budget);
}

/* Hand a valid record to the visitor and count it. */
static void scan_visit(struct scanner *s, const struct sl_log_record *record, sl_log_visit_fn visit,
                       void *ctx, struct sl_log_scan *scan)
{
    SL_ASSERT(record->lsn > s->last_lsn);
    SL_ASSERT(record->batch.header.count >= 1);
    s->last_lsn = record->lsn;
    s->base_lsn = record->lsn;
    scan->records++;
    if (record->transport != SL_LOG_SERIES) {
        scan->readings += record->transport == SL_LOG_SERIES ? 0 : record->batch.header.count;
    }
    scan->last_lsn = record->lsn;
    if (visit != NULL && visit(ctx, record) != 0) {
        s->stopped = true;
    }
}

/*
 * Records lost in a damaged region of `bytes` followed by the record with
 * next_lsn (0: by an intact copy, whose lsn says nothing): the lsn gap since
 * the segment's last valid record (lsns within a segment are consecutive),
 * at least 1, and at most as many records as could start in those bytes.
 */
static uint64_t region_lost(const struct scanner *s, uint64_t bytes, uint64_t next_lsn)
{
    SL_ASSERT(bytes >= SL_LOG_ALIGN);
    uint64_t most = (bytes - 1) / sl_log_record_bytes(1) + 1;
    uint64_t gap = next_lsn > s->base_lsn + 1 ? next_lsn - s->base_lsn - 1 : 0;
    return gap < 1 ? 1 : gap > most ? most : gap;
}

/*
 * Damage (or zeros) starts at d0, where the decoder said first_error. Step 8
 * bytes at a time to the next intact record of this segment and return its
 * offset, with its verdict in *rc and the record in *out; or return len when
 * none is left (the tail, accounted here).
 */
static uint64_t scan_resync(struct scanner *s, uint64_t d0, int first_error, int *rc,
                            struct sl_log_record *out, struct sl_log_scan *scan)
{
    bool tail_found = first_error == -SL_LOG_END || first_error == -SL_LOG_STALE;
    uint64_t tail_end = tail_found ? d0 : s->len; /* the first zero header or stale record */
    uint64_t off = d0 + SL_LOG_ALIGN;
    /* Bounded: off grows by 8 each round up to len; CRC work is bounded by the budget. */
    for (; off < s->len; off += SL_LOG_ALIGN) {
        if (tail_found && off + 8 <= s->len && sl_load_u64(s->buf + off) == 0) {
            continue; /* no record starts with a zero word: skip empty space at one load a step */
        }
        *rc = scan_try(s, off, out);
        if (*rc == 0 || *rc == 1) {
            scan->corrupt_regions++;
            scan->corrupt_records += region_lost(s, off - d0, *rc == 0 ? out->lsn : 0);
            scan->corrupt_bytes += off - d0;
            return off;
        }
        if (*rc == -SL_LOG_OUT_OF_BUDGET) {
            s->out_of_budget = true;
            break;
        }
        if (!tail_found && (*rc == -SL_LOG_END || *rc == -SL_LOG_STALE)) {
            tail_found = true;
            tail_end = off;
        }
    }
    scan->tail_error = -first_error;
    scan->tail_bytes = tail_end - d0;
    return s->len;
}

static int scan_run(struct scanner *s, sl_log_visit_fn visit, void *ctx, struct sl_log_scan *scan)
{
    memset(scan, 0, sizeof *scan);
    struct sl_log_segment_header header;
    if (sl_log_segment_header_decode(s->buf, s->len, &header) != 0) {
        return -EINVAL;
    }
    s->segment_seq = header.segment_seq;
    s->base_lsn = header.first_lsn > 0 ? header.first_lsn - 1 : s->last_lsn;
    s->budget = (uint64_t)SL_LOG_SCAN_WORK_FACTOR * s->len;
    scan->end_offset = SL_LOG_SEGMENT_HEADER_BYTES;
    scan->tail_error = SL_LOG_END;
    uint64_t off = SL_LOG_SEGMENT_HEADER_BYTES;
    /* Bounded: each round moves off forward by at least 8 bytes (a record or a resync step). */
    while (off < s->len && !s->stopped) {
        SL_ASSERT(off % SL_LOG_ALIGN == 0);
        struct sl_log_record record;
        int rc = scan_try(s, off, &record);
        if (rc == -SL_LOG_OUT_OF_BUDGET) {
            /* Only after a long resync of a hostile file: the rest counts as a torn tail. */
            s->out_of_budget = true;
            scan->tail_error = SL_LOG_TRUNCATED;
            scan->tail_bytes = s->len - off;
            break;
        }
        if (rc < 0) {
            off = scan_resync(s, off, rc, &rc, &record, scan);
            if (off == s->len) {
                break;
            }
        }
        if (rc == 0) {
            scan_visit(s, &record, visit, ctx, scan);
        }
        off += record.record_bytes;
        scan->end_offset = off;
    }
    SL_ASSERT(scan->end_offset <= s->len);
    return 0;
}

int sl_log_scan_segment(const uint8_t *buf, size_t len, uint64_t min_lsn, sl_log_visit_fn visit,
                        void *ctx, struct sl_log_scan *scan)
{
    struct scanner s = {.buf = buf, .len = len, .last_lsn = min_lsn};
    return scan_run(&s, visit, ctx, scan);
}

/* ---- configuration ---- */

void sl_log_config_default(struct sl_log_config *config)
{
    memset(config, 0, sizeof *config);
    config->segment_bytes = SL_LOG_SEGMENT_BYTES_DEFAULT;
    config->bytes_max = SL_LOG_BYTES_MAX_DEFAULT;
    config->buffer_bytes = SL_LOG_BUFFER_BYTES_DEFAULT;
    config->sync = SL_SYNC_ALWAYS; /* nothing acknowledged is lost, even to a power cut */
    config->sync_interval_ms = SL_LOG_SYNC_INTERVAL_MS_DEFAULT;
    config->io = &sl_io_posix;
}

int sl_log_config_check(const struct sl_log_config *config, const char **why)
{
    const char *reason = NULL;
    if (config->dir[0] == '\0' || memchr(config->dir, '\0', sizeof config->dir) == NULL) {
        reason = "log directory: empty or too long";
    } else if (config->segment_bytes < SL_LOG_SEGMENT_BYTES_MIN ||
               config->segment_bytes > SL_LOG_SEGMENT_BYTES_MAX) {
        reason = "log segment bytes: between 2 MiB and 1 GiB";
    } else if (config->segment_bytes % 4096 != 0) {
        reason = "log segment bytes: a multiple of 4 KiB";
    } else if (config->bytes_max / 2 < config->segment_bytes ||
               config->bytes_max > SL_LOG_BYTES_MAX_MAX) {
        reason = "log bytes max: at least 2 segments and at most 1 TiB";
    } else if (config->buffer_bytes < SL_LOG_BUFFER_BYTES_MIN ||
               config->buffer_bytes > SL_LOG_BUFFER_BYTES_MAX) {
        reason = "log buffer bytes: between 2 MiB and 1 GiB";
    } else if (config->sync != SL_SYNC_ALWAYS && config->sync != SL_SYNC_BATCH &&
               config->sync != SL_SYNC_NEVER) {
        reason = "log sync mode: always, batch or never";
    } else if (config->sync_interval_ms > SL_LOG_SYNC_INTERVAL_MS_MAX) {
        reason = "log sync interval: at most 60 s";
    }
    if (reason != NULL) {
        *why = reason;
        return -EINVAL;
    }
    return 0;
}

const char *sl_sync_mode_name(enum sl_sync_mode mode)
{
    switch (mode) {
    case SL_SYNC_ALWAYS:
        return "always";
    case SL_SYNC_BATCH:
        return "batch";
    case SL_SYNC_NEVER:
        return "never";
    }
    return "unknown";
}

/* ---- the writer's state ---- */

/* One segment file on disk. */
struct sl_log_segment {
    uint64_t name_seq;  /* in its file name */
    uint64_t seq;       /* in its header: its records carry this */
    uint64_t bytes;     /* file size */
    uint64_t first_lsn; /* of the records committed to it (0: none) */
    uint64_t last_lsn;
    uint64_t records;
    uint64_t readings;   /* in its records (series names are no readings) */
    uint64_t data_bytes; /* of its records, from offset 64 */
};

/* Why the log is failed: packed into one atomic word for sl_log_health on other threads. */
enum health_cause { CAUSE_NONE = 0, CAUSE_WRITE = 1, CAUSE_SYNC = 2 };
#define HEALTH_ERRNO_BITS 12
#define HEALTH_ERRNO_MASK ((1u << HEALTH_ERRNO_BITS) - 1)
#define HEALTH_SEQ_SHIFT 26
_Static_assert(SL_LOG_SEQ_MAX >> (64 - HEALTH_SEQ_SHIFT) == 0,
               "a segment number fits the health word");

#define SL_LOG_PATH_BYTES (sizeof(((struct sl_log_config *)0)->dir) + SL_LOG_NAME_BYTES + 2)

struct sl_log {
    struct sl_log_config config; /* a copy; config.io resolved */
    const struct sl_io *io;
    struct sl_log_counters counters;
    _Atomic uint64_t health; /* 0 while healthy, else the packed reason (see health_pack) */

    /* Segment files, oldest first: a ring of segments_cap entries. */
    struct sl_log_segment *segments;
    uint32_t segments_cap, segments_head, segments_count;
    uint64_t disk_bytes; /* sum of the tracked files' sizes */
    uint64_t next_seq;   /* for the next new segment */

    /* The current segment (the newest ring entry) while fd >= 0. */
    int fd;
    uint64_t unsynced_records; /* written to it since its last sync */

    /* The append buffer: buffer[0] is at segment offset buffer_offset. */
    uint8_t *buffer;
    uint64_t buffer_cap; /* bytes, a multiple of 8 */
    uint64_t buffer_offset;
    uint64_t written_bytes; /* buffer[0, written): in the file, not yet synced (batch) */
    uint64_t used_bytes;    /* buffer[written, used): appended, not yet written */
    uint32_t pending_count; /* records in [written, used); their structs end the buffer */
    uint64_t pending_first_lsn;
    uint64_t kept_records; /* records in [0, written) */
    uint64_t kept_readings;
    uint64_t kept_first_lsn;
    uint64_t pending_readings; /* in [written, used) */
    uint64_t written_last_lsn; /* the newest lsn in the file */

    uint64_t next_lsn;
    uint64_t checkpoint_lsn;
    uint64_t bytes_since;
    int64_t now_ns;          /* the latest monotonic time seen */
    int64_t last_sync_ns;    /* of the current segment's last sync (batch mode's clock) */
    uint64_t writeback_offset; /* batch, never: the current segment's writeback was started up to here */
    int64_t retry_ns;        /* failed: when the next attempt is due */
    enum health_cause cause; /* failed: the error that retired the last segment, if any */
    int cause_rc;
    uint64_t cause_seq;
    bool failed;
    bool ask_checkpoint; /* failed for a full disk: ask for a checkpoint once (see waiting) */
    bool closed;
    bool blocked; /* failed because a blocking hold needs the oldest segment */
    uint32_t blocked_by;
    struct sl_log_hold *holds[SL_LOG_HOLDS_MAX];
    uint32_t holds_count;
    char path[SL_LOG_PATH_BYTES];
    char path_to[SL_LOG_PATH_BYTES];
};

static bool disk_full(int rc)
{
    return rc == -ENOSPC || rc == -EDQUOT;
}

/* Single writer: a relaxed load and store, no locked read-modify-write. */
static void counter_add(_Atomic uint64_t *counter, uint64_t n)
{
    uint64_t v = atomic_load_explicit(counter, memory_order_relaxed);
    atomic_store_explicit(counter, v + n, memory_order_relaxed);
}

static void counter_set(_Atomic uint64_t *counter, uint64_t v)
{
    atomic_store_explicit(counter, v, memory_order_relaxed);
}

static uint64_t health_pack(enum health_cause cause, int cause_errno, uint64_t cause_seq,
                            int create_errno)
{
    uint64_t e1 = (uint64_t)(create_errno > 0 ? create_errno : EIO) & HEALTH_ERRNO_MASK;
    uint64_t e2 = (uint64_t)(cause_errno > 0 ? cause_errno : 0) & HEALTH_ERRNO_MASK;
    return e1 | e2 << HEALTH_ERRNO_BITS | (uint64_t)cause << 24 | cause_seq << HEALTH_SEQ_SHIFT;
}

static const char *error_text(int error)
{
    const char *text = strerrordesc_np(error); /* thread-safe, unlike strerror */
    return text != NULL ? text : "unknown error";
}

static void segment_path(const struct sl_log *log, char *out, uint64_t name_seq)
{
    int n = snprintf(out, SL_LOG_PATH_BYTES, "%s/log-%016llx.seg", log->config.dir,
                     (unsigned long long)name_seq);
    SL_ASSERT(n > 0 && (size_t)n < SL_LOG_PATH_BYTES);
}

static struct sl_log_segment *segment_at(struct sl_log *log, uint32_t age)
{
    SL_ASSERT(age < log->segments_count);
    return &log->segments[(log->segments_head + age) % log->segments_cap];
}

static struct sl_log_segment *segment_newest(struct sl_log *log)
{
    return segment_at(log, log->segments_count - 1);
}

/* Where readers on other threads find the files: the oldest and newest names (release). */
static void publish_range(struct sl_log *log)
{
    uint64_t oldest = log->segments_count > 0 ? segment_at(log, 0)->name_seq : 0;
    uint64_t newest = log->segments_count > 0 ? segment_newest(log)->name_seq : 0;
    atomic_store_explicit(&log->counters.oldest_seq, oldest, memory_order_release);
    atomic_store_explicit(&log->counters.newest_seq, newest, memory_order_release);
}

static void segment_push(struct sl_log *log, const struct sl_log_segment *segment)
{
    SL_ASSERT(log->segments_count < log->segments_cap);
    log->segments[(log->segments_head + log->segments_count) % log->segments_cap] = *segment;
    log->segments_count++;
    log->disk_bytes += segment->bytes;
    counter_set(&log->counters.bytes_on_disk, log->disk_bytes);
    publish_range(log);
}

/*
 * A segment given up after an error holds valid records only up to
 * last_lsn (what it was credited with); readers must not take the rest of
 * it (kept records rewritten elsewhere, or a failed commit's). Published
 * before any later record is applied. Slot by seq; 0 marks a slot being
 * written.
 */
static void retired_publish(struct sl_log *log, uint64_t seq, uint64_t last_lsn)
{
    uint32_t i = (uint32_t)(seq % SL_LOG_RETIRED_SLOTS);
    atomic_store_explicit(&log->counters.retired_seq[i], 0, memory_order_release);
    atomic_store_explicit(&log->counters.retired_last[i], last_lsn, memory_order_release);
    atomic_store_explicit(&log->counters.retired_seq[i], seq, memory_order_release);
}

int sl_log_retired_last(const struct sl_log_counters *c, uint64_t seq, uint64_t *last_lsn)
{
    uint32_t i = (uint32_t)(seq % SL_LOG_RETIRED_SLOTS);
    if (atomic_load_explicit(&c->retired_seq[i], memory_order_acquire) != seq) {
        return 0;
    }
    uint64_t last = atomic_load_explicit(&c->retired_last[i], memory_order_acquire);
    if (atomic_load_explicit(&c->retired_seq[i], memory_order_acquire) != seq) {
        return 0;
    }
    *last_lsn = last;
    return 1;
}

/* Does a hold still need records of this segment? */
static bool hold_needs(const struct sl_log_hold *hold, const struct sl_log_segment *seg)
{
    return seg->records > 0 &&
           seg->last_lsn >= atomic_load_explicit(&hold->need_lsn, memory_order_acquire);
}

/* Does a blocking hold need this segment? */
static bool hold_blocks(const struct sl_log *log, const struct sl_log_segment *seg)
{
    for (uint32_t i = 0; i < log->holds_count; i++) {
        if (log->holds[i]->block && hold_needs(log->holds[i], seg)) {
            return true;
        }
    }
    return false;
}

/*
 * The oldest segment is about to be recycled or deleted: -EBUSY when a
 * blocking hold still needs it (log->blocked_by names it); otherwise every
 * dropping hold that needs it is told first (it counts what it loses).
 */
static int holds_release(struct sl_log *log, const struct sl_log_segment *seg)
{
    for (uint32_t i = 0; i < log->holds_count; i++) {
        if (log->holds[i]->block && hold_needs(log->holds[i], seg)) {
            log->blocked_by = i;
            return -EBUSY;
        }
    }
    struct sl_log_segment_info info = {.seq = seg->seq,
                                       .name_seq = seg->name_seq,
                                       .first_lsn = seg->first_lsn,
                                       .last_lsn = seg->last_lsn,
                                       .records = seg->records,
                                       .readings = seg->readings,
                                       .data_bytes = seg->data_bytes};
    for (uint32_t i = 0; i < log->holds_count; i++) {
        if (hold_needs(log->holds[i], seg)) {
            log->holds[i]->dropping(log->holds[i]->ctx, &info);
        }
    }
    return 0;
}

int sl_log_add_hold(struct sl_log *log, struct sl_log_hold *hold)
{
    if (log->holds_count == SL_LOG_HOLDS_MAX) {
        return -ENOSPC;
    }
    log->holds[log->holds_count++] = hold;
    return 0;
}

/*
 * The records of a segment that no checkpoint holds (lsn >= checkpoint_lsn):
 * exact when its lsns are contiguous, an upper bound across a failed
 * commit's gap. 0 means recycling it loses nothing.
 */
static uint64_t segment_uncovered(const struct sl_log *log, const struct sl_log_segment *seg)
{
    if (seg->records == 0 || seg->last_lsn < log->checkpoint_lsn) {
        return 0;
    }
    uint64_t from = seg->first_lsn > log->checkpoint_lsn ? seg->first_lsn : log->checkpoint_lsn;
    uint64_t above = seg->last_lsn - from + 1;
    return above < seg->records ? above : seg->records;
}

/* Forget the oldest file (recycled or deleted): count the records no checkpoint holds. */
static void segment_pop(struct sl_log *log)
{
    struct sl_log_segment *old = segment_at(log, 0);
    counter_add(&log->counters.recycled_records, segment_uncovered(log, old));
    counter_add(&log->counters.segments_recycled, 1);
    SL_ASSERT(log->disk_bytes >= old->bytes);
    log->disk_bytes -= old->bytes;
    counter_set(&log->counters.bytes_on_disk, log->disk_bytes);
    log->segments_head = (log->segments_head + 1) % log->segments_cap;
    log->segments_count--;
    publish_range(log);
}

/* Stats of the records a successful commit (or rescue) put in the current segment. */
static void segment_note(struct sl_log *log, uint64_t first_lsn, uint64_t last_lsn, uint64_t count,
                         uint64_t readings, uint64_t bytes)
{
    struct sl_log_segment *seg = segment_newest(log);
    if (seg->first_lsn == 0) {
        seg->first_lsn = first_lsn;
    }
    seg->last_lsn = last_lsn;
    seg->records += count;
    seg->readings += readings;
    seg->data_bytes += bytes;
}

/* ---- making segments ---- */

static void header_bytes(const struct sl_log *log, uint64_t seq, uint64_t first_lsn,
                         uint8_t out[SL_LOG_SEGMENT_HEADER_BYTES])
{
    struct sl_log_segment_header h = {
        .segment_seq = seq,
        .first_lsn = first_lsn,
        .segment_bytes = log->config.segment_bytes,
        .created_us = sl_clock_realtime_us(),
    };
    sl_log_segment_header_encode(out, &h);
}

static int sync_fd(struct sl_log *log, int fd)
{
    int rc = log->io->fdatasync(log->io, fd);
    counter_add(rc == 0 ? &log->counters.syncs : &log->counters.sync_errors, 1);
    return rc;
}

/* Write the header at offset 0 of fd, sync it, sync the directory. */
static int segment_start(struct sl_log *log, int fd, uint64_t seq, uint64_t first_lsn)
{
    uint8_t header[SL_LOG_SEGMENT_HEADER_BYTES];
    header_bytes(log, seq, first_lsn, header);
    int rc = sl_io_pwrite_all(log->io, fd, header, sizeof header, 0);
    if (rc != 0) {
        counter_add(&log->counters.write_errors, 1);
        return rc;
    }
    rc = sync_fd(log, fd);
    if (rc != 0) {
        return rc;
    }
    return sl_io_fsync_dir(log->io, log->config.dir);
}

/* A new file: O_EXCL, preallocated, header synced. On failure nothing is left behind. */
static int segment_create(struct sl_log *log, uint64_t seq, uint64_t first_lsn, int *fd_out)
{
    segment_path(log, log->path, seq);
    int fd = log->io->open(log->io, log->path, O_CREAT | O_EXCL | O_RDWR, 0644);
    if (fd < 0) {
        return fd;
    }
    int rc = log->io->fallocate(log->io, fd, 0, log->config.segment_bytes);
    if (rc == 0) {
        rc = segment_start(log, fd, seq, first_lsn);
    }
    if (rc != 0) {
        log->io->close(log->io, fd);
        log->io->unlink(log->io, log->path);
        return rc;
    }
    *fd_out = fd;
    return 0;
}

/* Rename the oldest file to seq's name and make it a new segment. */
static int segment_recycle(struct sl_log *log, uint64_t seq, uint64_t first_lsn, int *fd_out)
{
    segment_path(log, log->path, segment_at(log, 0)->name_seq);
    segment_path(log, log->path_to, seq);
    int rc = log->io->rename(log->io, log->path, log->path_to);
    if (rc != 0) {
        return rc; /* the old file is still there, still tracked */
    }
    segment_pop(log);
    int fd = log->io->open(log->io, log->path_to, O_RDWR, 0);
    if (fd < 0) {
        log->io->unlink(log->io, log->path_to);
        return fd;
    }
    rc = segment_start(log, fd, seq, first_lsn);
    if (rc != 0) {
        log->io->close(log->io, fd);
        log->io->unlink(log->io, log->path_to);
        return rc;
    }
    *fd_out = fd;
    return 0;
}

/*
 * Make room for one more segment: while one more would exceed bytes_max (or
 * the ring is full), delete the oldest file, or, when recycling it is enough
 * to fit, set *recycle so that it becomes the new segment. Never touches the
 * newest entry (the segment just left), so a single oversized file from an
 * earlier configuration can overshoot the budget until it is the oldest.
 */
static int segment_make_room(struct sl_log *log, bool *recycle)
{
    *recycle = false;
    uint64_t seg_bytes = log->config.segment_bytes;
    /* Bounded: each round removes one entry or returns. */
    while (log->segments_count > 1) {
        if (log->disk_bytes + seg_bytes <= log->config.bytes_max &&
            log->segments_count < log->segments_cap) {
            return 0;
        }
        const struct sl_log_segment *old = segment_at(log, 0);
        if (log->config.wait_for_checkpoint && old->records > 0 &&
            old->last_lsn >= log->checkpoint_lsn) {
            return -EAGAIN; /* full of records no checkpoint holds: wait for one */
        }
        int rc = holds_release(log, old);
        if (rc != 0) {
            return rc; /* an uplink with --uplink-when-full block still needs it */
        }
        if (old->bytes == seg_bytes && log->disk_bytes <= log->config.bytes_max) {
            *recycle = true; /* same size: renaming it in place keeps the total where it is */
            return 0;
        }
        segment_path(log, log->path, old->name_seq);
        rc = log->io->unlink(log->io, log->path);
        if (rc != 0 && rc != -ENOENT) {
            return rc;
        }
        segment_pop(log);
    }
    return 0;
}

/*
 * The disk had no room for a new file (rc): while the oldest file holds no
 * record that a checkpoint does not (segment_uncovered), make the next
 * segment out of it instead: recycle it when it has the configured size
 * (counted in recycled_on_enospc), or delete it (another size, from an
 * earlier configuration) and try a new file again. Never the newest entry,
 * the segment just left (or retired), and never a file whose records a
 * checkpoint does not hold: nothing needed for recovery is reused. Returns
 * rc when nothing can be recycled.
 */
static int segment_when_full(struct sl_log *log, uint64_t seq, uint64_t first_lsn, int *fd, int rc)
{
    /* Bounded: each round removes the oldest entry or returns. */
    while (disk_full(rc) && log->segments_count > 1 &&
           segment_uncovered(log, segment_at(log, 0)) == 0) {
        const struct sl_log_segment *old = segment_at(log, 0);
        if (holds_release(log, old) != 0) {
            return rc;
        }
        if (old->bytes == log->config.segment_bytes) {
            rc = segment_recycle(log, seq, first_lsn, fd);
            if (rc == 0) {
                counter_add(&log->counters.recycled_on_enospc, 1);
            }
            return rc;
        }
        segment_path(log, log->path, old->name_seq);
        int unlink_rc = log->io->unlink(log->io, log->path);
        if (unlink_rc != 0 && unlink_rc != -ENOENT) {
            return rc;
        }
        segment_pop(log);
        rc = segment_create(log, seq, first_lsn, fd);
    }
    return rc;
}

/* Make the next segment (new or recycled) current. 0 or -errno (the log is left without one). */
static int segment_new(struct sl_log *log, uint64_t first_lsn)
{
    SL_ASSERT(log->fd < 0);
    uint64_t seq = log->next_seq++; /* used up even on failure: a retry never collides */
    bool recycle = false;
    int fd = -1;
    int rc = segment_make_room(log, &recycle);
    if (rc == 0 && recycle) {
        rc = segment_recycle(log, seq, first_lsn, &fd);
    } else if (rc == 0) {
        rc = segment_create(log, seq, first_lsn, &fd);
        rc = segment_when_full(log, seq, first_lsn, &fd, rc);
    }
    if (rc != 0) {
        return rc;
    }
    struct sl_log_segment seg = {.name_seq = seq, .seq = seq, .bytes = log->config.segment_bytes};
    segment_push(log, &seg);
    counter_add(&log->counters.segments_created, 1);
    log->fd = fd;
    log->buffer_offset = SL_LOG_SEGMENT_HEADER_BYTES;
    log->writeback_offset = SL_LOG_SEGMENT_HEADER_BYTES;
    log->unsynced_records = 0;
    log->last_sync_ns = log->now_ns;
    return 0;
}

/* ---- writing, syncing, failing ---- */

/* Pwrite buffer[from, used) and the end marker at the matching segment offset. */
static int write_range(struct sl_log *log, uint64_t from)
{
    uint64_t end = log->buffer_offset + log->used_bytes;
    SL_ASSERT(end <= log->config.segment_bytes);
    uint64_t room = log->config.segment_bytes - end;
    uint64_t marker = room < SL_LOG_MARKER_BYTES ? room : SL_LOG_MARKER_BYTES;
    SL_ASSERT(log->used_bytes + marker <= log->buffer_cap);
    memset(log->buffer + log->used_bytes, 0, marker);
    int rc = sl_io_pwrite_all(log->io, log->fd, log->buffer + from, log->used_bytes - from + marker,
                              log->buffer_offset + from);
    if (rc != 0) {
        counter_add(&log->counters.write_errors, 1);
        return rc;
    }
    counter_add(&log->counters.bytes_written, log->used_bytes - from);
    return 0;
}

/* Everything written to the current segment is synced (or left to the OS): start over after it. */
static void buffer_advance(struct sl_log *log)
{
    SL_ASSERT(log->pending_count == 0);
    SL_ASSERT(log->written_bytes == log->used_bytes);
    log->buffer_offset += log->used_bytes;
    log->written_bytes = 0;
    log->used_bytes = 0;
    log->kept_records = 0;
    log->kept_readings = 0;
}

static void note_durable(struct sl_log *log)
{
    log->last_sync_ns = log->now_ns;
    log->unsynced_records = 0;
    if (log->written_last_lsn >
        atomic_load_explicit(&log->counters.durable_lsn, memory_order_relaxed)) {
        counter_set(&log->counters.durable_lsn, log->written_last_lsn);
    }
}

/* fdatasync the current segment. On success, durable up to what was written. */
static int sync_current(struct sl_log *log)
{
    SL_ASSERT(log->fd >= 0);
    int rc = sync_fd(log, log->fd);
    if (rc != 0) {
        return rc;
    }
    note_durable(log);
    buffer_advance(log);
    return 0;
}

/* Give the kept records (buffer[0, written)) the segment_seq of the current segment. */
static void buffer_reseat(struct sl_log *log, uint64_t seq)
{
    uint64_t off = 0;
    /* Bounded: every record is at least 80 bytes long. */
    while (off < log->written_bytes) {
        uint8_t *p = log->buffer + off;
        SL_ASSERT(memcmp(p, record_magic, sizeof record_magic) == 0);
        sl_store_u64(p + REC_SEQ, seq);
        sl_store_u32(p + REC_HEADER_CRC, sl_crc32c(p, REC_HEADER_CRC));
        off += sl_align_up(sl_load_u32(p + REC_LENGTH), SL_LOG_ALIGN);
    }
    SL_ASSERT(off == log->written_bytes);
}

/* Close the current segment's fd for good, after an error: it is never written or synced again. */
static void segment_retire(struct sl_log *log)
{
    SL_ASSERT(log->fd >= 0);
    log->io->close(log->io, log->fd);
    log->fd = -1;
    counter_add(&log->counters.segments_retired, 1);
    if (log->config.sync == SL_SYNC_NEVER) {
        /* Acked after the write and never synced: the failing file may not hold them. */
        counter_add(&log->counters.acked_at_risk, log->unsynced_records);
    }
    log->unsynced_records = 0;
}

/* Write the kept records into the fresh current segment and sync them there. */
static int rescue_write(struct sl_log *log)
{
    SL_ASSERT(log->pending_count == 0 && log->used_bytes == log->written_bytes);
    SL_ASSERT(SL_LOG_SEGMENT_HEADER_BYTES + log->written_bytes <= log->config.segment_bytes);
    buffer_reseat(log, segment_newest(log)->seq);
    int rc = write_range(log, 0);
    if (rc == 0) {
        rc = sync_fd(log, log->fd);
    }
    if (rc != 0) {
        segment_retire(log);
        return rc;
    }
    segment_note(log, log->kept_first_lsn, log->written_last_lsn, log->kept_records,
                 log->kept_readings, log->written_bytes);
    note_durable(log);
    buffer_advance(log);
    return 0;
}

static void enter_failed(struct sl_log *log, int create_rc)
{
    if (!log->failed) {
        log->failed = true;
        counter_add(&log->counters.acked_at_risk, log->kept_records);
        atomic_store_explicit(&log->counters.failed, 1, memory_order_relaxed);
    }
    log->retry_ns = log->now_ns + SL_LOG_RETRY_NS;
    log->ask_checkpoint = disk_full(create_rc) && log->config.wait_for_checkpoint;
    log->blocked = create_rc == -EBUSY;
    uint64_t seq = log->blocked ? log->blocked_by : log->cause_seq; /* the hold's index */
    atomic_store_explicit(&log->health,
                          health_pack(log->cause, -log->cause_rc, seq, -create_rc),
                          memory_order_release);
}

static void leave_failed(struct sl_log *log)
{
    log->failed = false;
    log->blocked = false;
    log->cause = CAUSE_NONE;
    atomic_store_explicit(&log->counters.failed, 0, memory_order_relaxed);
    atomic_store_explicit(&log->health, 0, memory_order_release);
}

/*
 * Make a fresh current segment and move the kept records into it. When
 * writing them there fails too, one more fresh segment is tried; when no
 * segment can be made at all, the log is failed. 0 or -errno.
 */
static int rescue(struct sl_log *log)
{
    SL_ASSERT(log->fd < 0 && log->pending_count == 0);
    int rc = 0;
    for (uint32_t attempt = 0; attempt < SL_LOG_RESCUE_ATTEMPTS; attempt++) {
        rc = segment_new(log, log->kept_records > 0 ? log->kept_first_lsn : log->next_lsn);
        if (rc != 0) {
            break;
        }
        if (log->kept_records == 0) {
            log->written_bytes = log->used_bytes = 0;
            return 0;
        }
        rc = rescue_write(log);
        if (rc == 0) {
            return 0;
        }
    }
    enter_failed(log, rc);
    return rc;
}

/* The current segment's write or sync failed with err: retire it and move on. */
static int segment_failed(struct sl_log *log, enum health_cause cause, int err)
{
    struct sl_log_segment *seg = segment_newest(log);
    log->cause = cause;
    log->cause_rc = err;
    log->cause_seq = seg->name_seq;
    if (log->kept_records > 0) {
        /* The kept records are the newest this file was credited with; the rescue credits them
         * anew. */
        SL_ASSERT(seg->records >= log->kept_records);
        seg->records -= log->kept_records;
        seg->readings -= seg->readings >= log->kept_readings ? log->kept_readings : seg->readings;
        seg->data_bytes -= seg->data_bytes >= log->written_bytes ? log->written_bytes : seg->data_bytes;
        seg->last_lsn = seg->records > 0 ? log->kept_first_lsn - 1 : 0;
        seg->first_lsn = seg->records > 0 ? seg->first_lsn : 0;
    }
    retired_publish(log, seg->seq, seg->last_lsn);
    segment_retire(log);
    return rescue(log);
}

/* ---- the log ---- */

void sl_log_plan(const struct sl_log_config *config, struct sl_plan *plan)
{
    uint64_t segments = config->bytes_max / config->segment_bytes + 2;
    sl_plan_add(plan, "log_state",
                sl_align_up(sizeof(struct sl_log), SL_PLAN_ALIGN) +
                    segments * sizeof(struct sl_log_segment),
                "the log's state and its table of segment files");
    sl_plan_add(plan, "log_buffer", config->buffer_bytes, "the log's append buffer");
}

static bool buffer_fits(const struct sl_log *log, uint64_t record_bytes)
{
    uint64_t structs = (uint64_t)(log->pending_count + 1) * sizeof(struct sl_log_record);
    return log->used_bytes + record_bytes + SL_LOG_MARKER_BYTES + structs <= log->buffer_cap;
}

static bool segment_fits(const struct sl_log *log, uint64_t record_bytes)
{
    return log->buffer_offset + log->used_bytes + record_bytes <= log->config.segment_bytes;
}

/* Leave a full segment (nothing pending): sync it per the mode, then make the next one. */
static int rotate(struct sl_log *log)
{
    SL_ASSERT(log->pending_count == 0 && log->fd >= 0);
    if (log->config.sync != SL_SYNC_NEVER && log->used_bytes > 0) {
        int rc = sync_current(log);
        if (rc != 0) {
            return segment_failed(log, CAUSE_SYNC, rc);
        }
    }
    SL_ASSERT(log->config.sync == SL_SYNC_NEVER || log->used_bytes == 0);
    log->io->close(log->io, log->fd);
    log->fd = -1;
    log->written_bytes = log->used_bytes = 0;
    log->kept_records = 0;
    int rc = segment_new(log, log->next_lsn);
    if (rc != 0) {
        log->cause = CAUSE_NONE;
        enter_failed(log, rc);
    }
    return rc;
}

/* The struct handed out for pending record `index` (at the buffer's far end). */
static struct sl_log_record *pending_struct(struct sl_log *log, uint32_t index)
{
    struct sl_log_record *end = (struct sl_log_record *)(void *)(log->buffer + log->buffer_cap);
    return end - 1 - index;
}

int sl_log_room(const struct sl_log *log, uint32_t count)
{
    if (log->failed) {
        return -EIO;
    }
    return sl_log_room_bytes(log, sl_log_record_bytes(count));
}

int sl_log_room_bytes(const struct sl_log *log, uint64_t bytes)
{
    if (log->failed) {
        return -EIO;
    }
    if (buffer_fits(log, bytes) && segment_fits(log, bytes)) {
        return 0;
    }
    return log->pending_count > 0 ? -ENOBUFS : 0;
}

int sl_log_append(struct sl_log *log, const struct sl_batch *batch, uint8_t transport,
                  int64_t now_us, uint64_t *lsn_out, const struct sl_log_record **record_out)
{
    SL_ASSERT(!log->closed);
    uint32_t count = batch->header.count;
    SL_ASSERT(count >= 1 && count <= SL_BATCH_COUNT_MAX && transport < SL_LOG_TRANSPORT_COUNT);
    uint64_t bytes = record_bytes_of(transport, count);
    /* At most two rotations: one that rescues kept records, one that then finds room. */
    for (uint32_t round = 0; round < 3; round++) {
        if (log->failed) {
            return -EIO;
        }
        if (buffer_fits(log, bytes) && segment_fits(log, bytes)) {
            break;
        }
        if (log->pending_count > 0) {
            return -ENOBUFS;
        }
        SL_ASSERT(buffer_fits(log, bytes)); /* commits keep room for the largest record */
        if (rotate(log) != 0) {
            return -EIO;
        }
    }
    SL_ASSERT(buffer_fits(log, bytes) && segment_fits(log, bytes));
    uint64_t lsn = log->next_lsn++;
    uint8_t *p = log->buffer + log->used_bytes;
    sl_log_record_encode(p, batch, transport, now_us, lsn, segment_newest(log)->seq);
    struct sl_log_record *record = pending_struct(log, log->pending_count);
    *record = (struct sl_log_record){
        .lsn = lsn,
        .segment_seq = segment_newest(log)->seq,
        .now_us = now_us,
        .transport = transport,
        .batch = {.header = batch->header, .readings = p + SL_LOG_RECORD_HEADER_BYTES},
        .record_bytes = (uint32_t)bytes,
    };
    record->batch.header.version = SL_PROTOCOL_VERSION;
    record->batch.header.key_id = 0;
    SL_DEBUG_ASSERT(
        sl_log_record_decode(p, bytes, record->segment_seq, &(struct sl_log_record){0}) == 0);
    if (log->pending_count == 0) {
        log->pending_first_lsn = lsn;
    }
    log->pending_count++;
    log->pending_readings += transport == SL_LOG_SERIES ? 0 : count;
    log->used_bytes += bytes;
    log->bytes_since += bytes;
    *lsn_out = lsn;
    *record_out = record;
    return 0;
}

/* The sync a successful write needs in this mode. 0, or -errno of a failed fdatasync. */
static int commit_sync(struct sl_log *log, int64_t now_ns)
{
    if (log->config.sync == SL_SYNC_NEVER) {
        buffer_advance(log);
        return 0;
    }
    int64_t interval_ns = (int64_t)log->config.sync_interval_ms * 1000000;
    uint64_t room = log->buffer_cap - log->used_bytes - SL_LOG_MARKER_BYTES;
    bool due = log->config.sync == SL_SYNC_ALWAYS || now_ns - log->last_sync_ns >= interval_ns ||
               room < SL_LOG_RECORD_BYTES_MAX + sizeof(struct sl_log_record);
    return due ? sync_current(log) : 0;
}

/* What a commit may have to roll back. */
struct buffer_mark {
    uint64_t written_bytes;
    uint64_t kept_records;
    uint64_t kept_readings;
    uint64_t kept_first_lsn;
    uint64_t unsynced_records;
    uint64_t written_last_lsn;
};

/*
 * Drop the failed commit's records (never applied: the caller answers
 * OVERLOADED), then move to a fresh segment with the kept ones. `before` is
 * the state the commit started from.
 */
static void commit_failed(struct sl_log *log, const struct buffer_mark *before, uint32_t count,
                          enum health_cause cause, int err)
{
    counter_add(&log->counters.records_failed, count);
    log->used_bytes = log->written_bytes = before->written_bytes;
    log->kept_records = before->kept_records;
    log->kept_readings = before->kept_readings;
    log->kept_first_lsn = before->kept_first_lsn;
    log->unsynced_records = before->unsynced_records;
    log->written_last_lsn = before->written_last_lsn;
    segment_failed(log, cause, err);
}

/*
 * Batch and never modes: start writing back what the commits wrote, a
 * SL_LOG_WRITEBACK_BYTES at a time (sync_file_range, a hint that makes
 * nothing durable), so batch's periodic fdatasync finds little left to
 * write, instead of stalling the ingest thread for everything of the last
 * interval, and the page cache never holds much dirty log for the kernel to
 * throttle the writer on.
 */
static void start_writeback(struct sl_log *log)
{
    if (log->config.sync == SL_SYNC_ALWAYS || log->io->writeback == NULL) {
        return;
    }
    uint64_t end = log->buffer_offset + log->used_bytes;
    if (end >= log->writeback_offset + SL_LOG_WRITEBACK_BYTES) {
        log->io->writeback(log->io, log->fd, log->writeback_offset, end - log->writeback_offset);
        log->writeback_offset = end;
    }
}

/* Write [written, used); account it as written (kept until synced). */
static int commit_write(struct sl_log *log, uint32_t count, uint64_t readings)
{
    int rc = write_range(log, log->written_bytes);
    if (rc != 0) {
        return rc;
    }
    if (log->kept_records == 0) {
        log->kept_first_lsn = log->pending_first_lsn;
    }
    log->kept_records += count;
    log->kept_readings += readings;
    log->unsynced_records += count;
    log->written_bytes = log->used_bytes;
    log->written_last_lsn = log->next_lsn - 1;
    counter_add(&log->counters.records_written, count);
    start_writeback(log);
    return 0;
}

int sl_log_commit(struct sl_log *log, int64_t now_ns, uint64_t *applicable_lsn)
{
    SL_ASSERT(!log->closed);
    log->now_ns = now_ns;
    *applicable_lsn = log->next_lsn - 1;
    uint32_t count = log->pending_count;
    if (count == 0) {
        return 0;
    }
    SL_ASSERT(!log->failed && log->fd >= 0);
    uint64_t first_lsn = log->pending_first_lsn;
    struct buffer_mark before = {
        .written_bytes = log->written_bytes,
        .kept_records = log->kept_records,
        .kept_readings = log->kept_readings,
        .kept_first_lsn = log->kept_first_lsn,
        .unsynced_records = log->unsynced_records,
        .written_last_lsn = log->written_last_lsn,
    };
    uint64_t readings = log->pending_readings;
    uint64_t bytes = log->used_bytes - log->written_bytes;
    log->pending_count = 0; /* the handed-out structs stay readable until the next append */
    log->pending_readings = 0;
    counter_add(&log->counters.commits, 1);
    int rc = commit_write(log, count, readings);
    enum health_cause cause = CAUSE_WRITE;
    if (rc == 0) {
        cause = CAUSE_SYNC;
        rc = commit_sync(log, now_ns);
    }
    if (rc != 0) {
        commit_failed(log, &before, count, cause, rc);
        *applicable_lsn = first_lsn - 1;
        return rc;
    }
    segment_note(log, first_lsn, log->next_lsn - 1, count, readings, bytes);
    counter_add(&log->counters.appended_bytes, bytes);
    return 0;
}

void sl_log_tick(struct sl_log *log, int64_t now_ns)
{
    SL_ASSERT(!log->closed);
    log->now_ns = now_ns;
    if (log->failed) {
        if (log->blocked && log->segments_count > 0 &&
            !hold_blocks(log, segment_at(log, 0))) {
            log->retry_ns = 0; /* the uplink drained past the oldest segment: try now */
        }
        if (now_ns < log->retry_ns) {
            return;
        }
        if (rescue(log) == 0) {
            leave_failed(log);
        }
        return;
    }
    int64_t interval_ns = (int64_t)log->config.sync_interval_ms * 1000000;
    if (log->config.sync == SL_SYNC_BATCH && log->pending_count == 0 && log->written_bytes > 0 &&
        now_ns - log->last_sync_ns >= interval_ns) {
        int rc = sync_current(log);
        if (rc != 0) {
            segment_failed(log, CAUSE_SYNC, rc);
        }
    }
}

void sl_log_set_checkpoint_lsn(struct sl_log *log, uint64_t lsn)
{
    log->checkpoint_lsn = lsn;
    if (log->failed) {
        log->retry_ns = 0; /* waiting for this, perhaps: try a segment at the next tick */
    }
}

bool sl_log_waiting_for_checkpoint(struct sl_log *log)
{
    if (!log->failed) {
        return false;
    }
    uint64_t h = atomic_load_explicit(&log->health, memory_order_acquire);
    int create_errno = (int)(h & HEALTH_ERRNO_MASK);
    if (create_errno == EAGAIN) {
        return true;
    }
    /*
     * A full disk: a checkpoint would let the oldest segment (not the newest) be recycled. Asked
     * once per failed attempt at a segment (once a second, or after each checkpoint), so that a
     * checkpoint failing on the same full disk is not begun again every tick.
     */
    if (!log->ask_checkpoint || log->segments_count < 2 ||
        segment_uncovered(log, segment_at(log, 0)) == 0) {
        return false;
    }
    log->ask_checkpoint = false;
    return true;
}

void sl_log_set_applied(struct sl_log *log, uint64_t lsn)
{
    atomic_store_explicit(&log->counters.applied_lsn, lsn, memory_order_release);
}

uint64_t sl_log_next_lsn(const struct sl_log *log)
{
    return log->next_lsn;
}

uint64_t sl_log_bytes_since(struct sl_log *log, bool reset)
{
    uint64_t bytes = log->bytes_since;
    if (reset) {
        log->bytes_since = 0;
    }
    return bytes;
}

const struct sl_log_counters *sl_log_counters(const struct sl_log *log)
{
    return &log->counters;
}

int sl_log_health(const struct sl_log *log, char *buf, uint32_t buf_bytes)
{
    uint64_t h = atomic_load_explicit(&log->health, memory_order_acquire);
    if (h == 0) {
        return 0;
    }
    int create_errno = (int)(h & HEALTH_ERRNO_MASK);
    int cause_errno = (int)((h >> HEALTH_ERRNO_BITS) & HEALTH_ERRNO_MASK);
    enum health_cause cause = (enum health_cause)((h >> 24) & 3);
    unsigned long long seq = (unsigned long long)(h >> HEALTH_SEQ_SHIFT);
    if (buf_bytes == 0) {
        return -EIO;
    }
    /* A full disk was met by recycling what a checkpoint holds: there was none to recycle. */
    const char *full = create_errno == ENOSPC || create_errno == EDQUOT
                           ? " (and no older segment wholly held by a checkpoint to recycle)"
                           : "";
    if (create_errno == EBUSY) {
        uint64_t i = h >> HEALTH_SEQ_SHIFT;
        snprintf(buf, buf_bytes, "uplink backlog full: %s",
                 i < log->holds_count ? log->holds[i]->name : "?");
    } else if (create_errno == EAGAIN) {
        snprintf(buf, buf_bytes,
                 "log: full (--log-bytes-max) of records no checkpoint holds yet; refusing "
                 "writes until the checkpoint in progress completes");
    } else if (cause == CAUSE_NONE) {
        snprintf(buf, buf_bytes, "log: cannot create a segment: %s%s; retrying every second",
                 error_text(create_errno), full);
    } else {
        snprintf(buf, buf_bytes,
                 "log: %s failed on log-%016llx.seg (%s), then cannot create a segment: %s%s; "
                 "retrying every second",
                 cause == CAUSE_WRITE ? "write" : "fdatasync", seq, error_text(cause_errno),
                 error_text(create_errno), full);
    }
    return -EIO;
}

void sl_log_close(struct sl_log *log)
{
    if (log->closed) {
        return;
    }
    if (!log->failed && log->pending_count > 0) {
        uint64_t applicable = 0;
        sl_log_commit(log, sl_clock_monotonic_ns(), &applicable);
    }
    if (!log->failed && log->fd >= 0) {
        int rc = sync_current(log);
        if (rc != 0) {
            segment_failed(log, CAUSE_SYNC, rc); /* rescues kept records when it can */
        }
    }
    if (log->fd >= 0) {
        log->io->close(log->io, log->fd);
        log->fd = -1;
    }
    log->closed = true;
}

/* ---- start-up: finding, replaying and resuming ---- */

/* A segment file found at start-up. */
struct found {
    uint64_t name_seq;
    uint64_t seq; /* from its header */
    uint64_t file_bytes;
    uint64_t header_bytes; /* segment_bytes in its header */
    bool bad;              /* unreadable header: left alone, not tracked */
};

/* Where appending may resume: the last good segment, if it can take more. */
struct resume {
    bool possible;
    uint64_t name_seq;
    uint64_t end_offset;
};

/* Visits during replay: the caller's visitor, and the first lsn of the segment. */
struct replay {
    sl_log_visit_fn visit;
    void *ctx;
    uint64_t first_lsn;
    uint64_t readings; /* in the segment's records */
    bool stopped;
};

static int replay_visit(void *ctx, const struct sl_log_record *record)
{
    struct replay *r = ctx;
    if (r->first_lsn == 0) {
        r->first_lsn = record->lsn;
    }
    r->readings += record->transport == SL_LOG_SERIES ? 0 : record->batch.header.count;
    int rc = r->visit != NULL ? r->visit(r->ctx, record) : 0;
    if (rc != 0) {
        r->stopped = true;
    }
    return rc;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

/* "log-<16 lower-case hex digits>.seg" */
static bool parse_name(const char *name, uint64_t *seq)
{
    if (strlen(name) != SL_LOG_NAME_BYTES || memcmp(name, "log-", 4) != 0 ||
        memcmp(name + 20, ".seg", 4) != 0) {
        return false;
    }
    uint64_t v = 0;
    for (int i = 4; i < 20; i++) {
        int d = hex_digit(name[i]);
        if (d < 0) {
            return false;
        }
        v = v << 4 | (uint64_t)d;
    }
    *seq = v;
    return true;
}

/* Create the directory when missing (and sync its parent so the entry lasts). */
static int ensure_dir(struct sl_log *log)
{
    const char *dir = log->config.dir;
    if (mkdir(dir, 0755) != 0) {
        return errno == EEXIST ? 0 : -errno;
    }
    char *parent = log->path; /* scratch */
    snprintf(parent, SL_LOG_PATH_BYTES, "%s", dir);
    size_t n = strlen(parent);
    while (n > 1 && parent[n - 1] == '/') {
        parent[--n] = '\0';
    }
    char *slash = strrchr(parent, '/');
    if (slash == NULL) {
        snprintf(parent, SL_LOG_PATH_BYTES, ".");
    } else {
        slash[slash == parent ? 1 : 0] = '\0';
    }
    return sl_io_fsync_dir(log->io, parent);
}

/* The segment files in the directory (malloc'd; start-up only). */
static int list_segments(const char *dir, struct found **out, uint32_t *count)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return -errno;
    }
    struct found *list = NULL;
    uint32_t n = 0, cap = 0;
    int rc = 0;
    /* Bounded: at most SL_LOG_OPEN_FILES_MAX segment files, and 16 times that many entries. */
    for (uint64_t entries = 0; entries < 16ull * SL_LOG_OPEN_FILES_MAX; entries++) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (e == NULL) {
            rc = -errno;
            break;
        }
        uint64_t seq = 0;
        if (!parse_name(e->d_name, &seq)) {
            continue;
        }
        if (n == SL_LOG_OPEN_FILES_MAX) {
            rc = -EMFILE;
            break;
        }
        if (n == cap) {
            cap = cap == 0 ? 64 : cap * 2;
            struct found *grown = realloc(list, cap * sizeof *list);
            if (grown == NULL) {
                rc = -ENOMEM;
                break;
            }
            list = grown;
        }
        list[n++] = (struct found){.name_seq = seq};
    }
    closedir(d);
    if (rc != 0) {
        free(list);
        return rc;
    }
    *out = list;
    *count = n;
    return 0;
}

/* Read a file's size and header. A short file or a bad header marks it bad; I/O errors fail. */
static int read_header(struct sl_log *log, struct found *f)
{
    segment_path(log, log->path, f->name_seq);
    int fd = log->io->open(log->io, log->path, O_RDONLY, 0);
    if (fd < 0) {
        return fd;
    }
    struct stat st;
    int rc = fstat(fd, &st) == 0 ? 0 : -errno;
    uint8_t bytes[SL_LOG_SEGMENT_HEADER_BYTES];
    struct sl_log_segment_header h;
    if (rc == 0) {
        f->file_bytes = (uint64_t)st.st_size;
        f->bad = f->file_bytes < sizeof bytes || f->file_bytes > SL_LOG_SEGMENT_BYTES_MAX;
    }
    if (rc == 0 && !f->bad) {
        rc = sl_io_pread_all(log->io, fd, bytes, sizeof bytes, 0);
        f->bad = rc == 0 && sl_log_segment_header_decode(bytes, sizeof bytes, &h) != 0;
    }
    if (rc == 0 && !f->bad) {
        f->seq = h.segment_seq;
        f->header_bytes = h.segment_bytes;
        f->bad = f->seq > SL_LOG_SEQ_MAX || f->name_seq > SL_LOG_SEQ_MAX;
    }
    log->io->close(log->io, fd);
    return rc;
}

static int compare_found(const void *a, const void *b)
{
    const struct found *x = a, *y = b;
    if (x->bad != y->bad) {
        return x->bad ? 1 : -1; /* bad ones last: they are not replayed */
    }
    if (x->seq != y->seq) {
        return x->seq < y->seq ? -1 : 1;
    }
    return x->name_seq < y->name_seq ? -1 : x->name_seq > y->name_seq;
}

/* Read every header, count the bad ones, sort the good ones first in segment order. */
static int sort_segments(struct sl_log *log, struct found *files, uint32_t n, uint32_t *good,
                         struct sl_log_recovery *recovery)
{
    *good = 0;
    for (uint32_t i = 0; i < n; i++) {
        int rc = read_header(log, &files[i]);
        if (rc != 0) {
            return rc;
        }
        recovery->segments++;
        recovery->segments_bad += files[i].bad;
        *good += !files[i].bad;
        uint64_t top =
            files[i].bad || files[i].seq < files[i].name_seq ? files[i].name_seq : files[i].seq;
        if (top >= log->next_seq && top <= SL_LOG_SEQ_MAX) {
            log->next_seq = top + 1;
        }
    }
    if (n > 1) {
        qsort(files, n, sizeof *files, compare_found);
    }
    return 0;
}

/* Read a whole file into *data (grown as needed; start-up only). */
static int read_file(struct sl_log *log, const struct found *f, uint8_t **data, uint64_t *cap)
{
    if (f->file_bytes > *cap) {
        uint8_t *grown = realloc(*data, f->file_bytes);
        if (grown == NULL) {
            return -ENOMEM;
        }
        *data = grown;
        *cap = f->file_bytes;
    }
    segment_path(log, log->path, f->name_seq);
    int fd = log->io->open(log->io, log->path, O_RDONLY, 0);
    if (fd < 0) {
        return fd;
    }
    int rc = sl_io_pread_all(log->io, fd, *data, f->file_bytes, 0);
    log->io->close(log->io, fd);
    return rc;
}

/* Scan one segment, visiting its records, and account it. *records gets its record count. */
static int replay_segment(struct sl_log *log, const struct found *f, const uint8_t *data,
                          struct replay *rp, struct sl_log_recovery *recovery, bool last,
                          struct resume *resume, struct sl_log_segment *seg)
{
    struct scanner s = {.buf = data, .len = f->file_bytes, .last_lsn = recovery->last_lsn};
    struct sl_log_scan scan;
    rp->first_lsn = 0;
    rp->readings = 0;
    int rc = scan_run(&s, replay_visit, rp, &scan);
    SL_ASSERT(rc == 0); /* the header was read and checked already */
    recovery->records += scan.records;
    recovery->readings += scan.readings;
    recovery->corrupt_regions += scan.corrupt_regions;
    recovery->corrupt_records += scan.corrupt_records;
    recovery->corrupt_bytes += scan.corrupt_bytes;
    recovery->bytes += f->file_bytes;
    if (scan.tail_bytes > 0) {
        if (last) {
            recovery->torn_tail_bytes += scan.tail_bytes;
        } else {
            /* A closed segment's damaged end is damage, not a tear: at least one record lost. */
            recovery->corrupt_regions++;
            recovery->corrupt_records++;
            recovery->corrupt_bytes += scan.tail_bytes;
        }
    }
    if (scan.records > 0) {
        recovery->last_lsn = scan.last_lsn;
    }
    resume->possible = last && !s.out_of_budget && !s.stopped &&
                       f->file_bytes == log->config.segment_bytes &&
                       f->header_bytes == log->config.segment_bytes &&
                       scan.end_offset + sl_log_record_bytes(1) <= log->config.segment_bytes;
    resume->name_seq = f->name_seq;
    resume->end_offset = scan.end_offset;
    *seg = (struct sl_log_segment){.name_seq = f->name_seq,
                                   .seq = f->seq,
                                   .bytes = f->file_bytes,
                                   .first_lsn = rp->first_lsn,
                                   .last_lsn = scan.last_lsn,
                                   .records = scan.records,
                                   .readings = rp->readings,
                                   .data_bytes = scan.end_offset > SL_LOG_SEGMENT_HEADER_BYTES
                                                     ? scan.end_offset - SL_LOG_SEGMENT_HEADER_BYTES
                                                     : 0};
    return rp->stopped ? -ECANCELED : 0;
}

/*
 * The ring keeps one entry free for the next segment. When more files are
 * found than that (bytes_max was lowered a lot), the oldest are replayed but
 * not tracked, and deleted once everything was replayed: counted as recycled.
 */
static int drop_excess(struct sl_log *log, const struct found *files, uint32_t drop,
                       uint64_t dropped_records, const char **what)
{
    for (uint32_t i = 0; i < drop; i++) {
        segment_path(log, log->path, files[i].name_seq);
        int rc = log->io->unlink(log->io, log->path);
        if (rc != 0) {
            *what = "cannot remove the excess segment";
            return rc;
        }
    }
    counter_add(&log->counters.segments_recycled, drop);
    counter_add(&log->counters.recycled_records, dropped_records);
    return drop > 0 ? sl_io_fsync_dir(log->io, log->config.dir) : 0;
}

/* Replay the good segments in order; track the newest ones in the ring. */
static int replay_all(struct sl_log *log, struct found *files, uint32_t good, sl_log_visit_fn visit,
                      void *ctx, struct sl_log_recovery *recovery, struct resume *resume,
                      const char **what)
{
    struct replay rp = {.visit = visit, .ctx = ctx};
    uint32_t drop = good > log->segments_cap - 1 ? good - (log->segments_cap - 1) : 0;
    uint64_t dropped_records = 0;
    uint8_t *data = NULL;
    uint64_t data_cap = 0;
    int rc = 0;
    for (uint32_t i = 0; i < good && rc == 0; i++) {
        *what = "cannot read";
        rc = read_file(log, &files[i], &data, &data_cap);
        struct sl_log_segment seg;
        if (rc == 0) {
            *what = "replay stopped by the visitor in";
            rc = replay_segment(log, &files[i], data, &rp, recovery, i + 1 == good, resume, &seg);
        }
        if (rc != 0) {
            segment_path(log, log->path, files[i].name_seq);
        } else if (i < drop) {
            dropped_records += segment_uncovered(log, &seg);
        } else {
            segment_push(log, &seg);
            counter_add(&log->counters.appended_bytes, seg.data_bytes);
        }
    }
    free(data);
    if (rc == 0) {
        rc = drop_excess(log, files, drop, dropped_records, what);
    }
    return rc;
}

static struct sl_log *log_take(const struct sl_log_config *config, struct sl_arena *arena)
{
    uint64_t segments = config->bytes_max / config->segment_bytes + 2;
    uint64_t state = sl_align_up(sizeof(struct sl_log), SL_PLAN_ALIGN);
    uint8_t *p = sl_arena_take(arena, state + segments * sizeof(struct sl_log_segment));
    struct sl_log *log = (struct sl_log *)(void *)p;
    memset(log, 0, sizeof *log);
    log->config = *config;
    log->io = config->io != NULL ? config->io : &sl_io_posix;
    log->config.io = log->io;
    log->segments = (struct sl_log_segment *)(void *)(p + state);
    log->segments_cap = (uint32_t)segments;
    log->buffer = sl_arena_take(arena, config->buffer_bytes);
    log->buffer_cap = config->buffer_bytes / SL_LOG_ALIGN * SL_LOG_ALIGN;
    log->fd = -1;
    log->next_seq = 1;
    log->next_lsn = 1;
    log->checkpoint_lsn = config->checkpoint_lsn;
    log->now_ns = sl_clock_monotonic_ns();
    log->last_sync_ns = log->now_ns;
    return log;
}

/* Append after the last good segment's last record, or in a fresh segment. */
static void log_resume(struct sl_log *log, const struct resume *resume)
{
    if (resume->possible) {
        segment_path(log, log->path, resume->name_seq);
        int fd = log->io->open(log->io, log->path, O_RDWR, 0);
        if (fd >= 0) {
            SL_ASSERT(segment_newest(log)->name_seq == resume->name_seq);
            log->fd = fd;
            log->buffer_offset = resume->end_offset;
            log->writeback_offset = resume->end_offset;
            return;
        }
    }
    int rc = segment_new(log, log->next_lsn);
    if (rc != 0) {
        log->cause = CAUSE_NONE;
        enter_failed(log, rc); /* appends are refused; sl_log_tick keeps trying */
    }
}

struct sl_log *sl_log_open(const struct sl_log_config *config, struct sl_arena *arena,
                           sl_log_visit_fn visit, void *ctx, struct sl_log_recovery *recovery,
                           char *err, uint32_t err_bytes)
{
    memset(recovery, 0, sizeof *recovery);
    const char *why = NULL;
    if (sl_log_config_check(config, &why) != 0) {
        snprintf(err, err_bytes, "%s", why);
        return NULL;
    }
    int64_t start_ns = sl_clock_monotonic_ns();
    struct sl_log *log = log_take(config, arena);
    int rc = ensure_dir(log);
    if (rc != 0) {
        snprintf(err, err_bytes, "log: cannot create %s: %s", config->dir, error_text(-rc));
        return NULL;
    }
    struct found *files = NULL;
    uint32_t n = 0, good = 0;
    rc = list_segments(config->dir, &files, &n);
    if (rc != 0) {
        snprintf(err, err_bytes, "log: cannot list %s: %s", config->dir, error_text(-rc));
        return NULL;
    }
    const char *what = "cannot read";
    struct resume resume = {0};
    rc = sort_segments(log, files, n, &good, recovery);
    if (rc == 0) {
        rc = replay_all(log, files, good, visit, ctx, recovery, &resume, &what);
    }
    free(files);
    if (rc != 0) {
        snprintf(err, err_bytes, "log: %s %s: %s", what, log->path, error_text(-rc));
        return NULL;
    }
    if (recovery->last_lsn > SL_LOG_LSN_MAX) {
        snprintf(err, err_bytes, "log: lsn %llu is beyond the lsn space",
                 (unsigned long long)recovery->last_lsn);
        return NULL;
    }
    log->next_lsn = recovery->last_lsn + 1;
    log->written_last_lsn = recovery->last_lsn;
    counter_set(&log->counters.durable_lsn, recovery->last_lsn);
    sl_log_set_applied(log, recovery->last_lsn);
    counter_set(&log->counters.corrupt_records, recovery->corrupt_records);
    counter_set(&log->counters.corrupt_bytes, recovery->corrupt_bytes);
    counter_set(&log->counters.torn_tail_bytes, recovery->torn_tail_bytes);
    log_resume(log, &resume);
    recovery->seconds = (double)(sl_clock_monotonic_ns() - start_ns) / 1e9;
    return log;
}
