/*
 * Checkpoints: the incremental fuzzy writer and the loader (see
 * checkpoint.h for the contract and docs/STORAGE.md for the bytes).
 *
 * Writer. sl_checkpoint_begin creates ckpt-<seq>.ckpt.tmp and writes the
 * 128-byte header. Each sl_checkpoint_step then writes one chunk: as many
 * whole sensors as fit in step_bytes (at least one), from next_sensor up to
 * the store's current sensor count, so sensors created while a checkpoint
 * is under way are taken by a later chunk. A chunk's payload is three
 * pwrites straight from the store's arrays (records, ring slots with their
 * padding, coarse buckets: each range is contiguous), with its CRC-32C
 * computed over the same memory in the same tick; nothing changes that
 * memory in between, because the caller is the store's only writer. The
 * chunk's header (lsn = the last record applied) goes in front of its
 * payload once the CRC is known. When a step finds next_sensor at the
 * current count, it writes the stream tables (staged through a 16 KiB
 * buffer), the trailer with the CRC of everything before it, fdatasyncs
 * (each chunk's writeback was started as it was written, so little is left),
 * renames to .ckpt, fsyncs the directory and removes complete checkpoints
 * older than the newest SL_CHECKPOINTS_KEPT. The running CRC over the file
 * is kept without a second pass over the payload: the payload's CRC is
 * folded in with the standard GF(2) CRC combination (zlib's
 * crc32_combine, over the Castagnoli polynomial).
 *
 * Any failure (including a failed fdatasync, which is never retried on that
 * descriptor: after a failed sync the page cache may have dropped the dirty
 * pages) closes and removes the .tmp file; the caller begins again later,
 * and the failed checkpoint's seq is reused.
 *
 * Loader. Complete files newest first; each is checked field by field
 * before anything it says is used: header CRC and geometry (the running
 * store's, else skipped with the reason), chunks contiguous from sensor 0,
 * both CRCs of every chunk, lsns never decreasing, every sensor record's
 * ring walked to prove the invariants the store relies on (so a file with
 * valid CRCs but hostile contents cannot break an assertion later), stream
 * entries well formed, the trailer's counts, running CRC and size. Payloads
 * are pread straight into the store's arrays; a version 1 file's separate
 * value and delta arrays pass through a 64 KiB buffer in the loader and are
 * interleaved into the slots. A file found invalid part way
 * leaves the store as it found it: the touched ranges and the whole index
 * are zeroed again (the store was fresh), and the next older file is tried.
 * A sensor chunk is read as its sections (records, slots or version 1's
 * values and deltas, coarse), each section's CRC extended as it is read and
 * the sections' CRCs combined into the chunk's.
 *
 * Verify mode (sl_checkpoint_verify, for sluice-log): the same loader with
 * no store. It checks the header's geometry is one a store can have, builds
 * a scratch store of it whose arrays hold a window of sensors (16 MiB, one
 * sensor at least), reads each chunk through it a window at a time (the
 * same CRCs, the same sensor checks) and checks ids distinct by sorting
 * them, since no index holds them.
 *
 * Memory: the writer uses only the store and the buffer inside struct
 * sl_checkpointer (no heap: it runs on the ingest thread). The loader
 * mallocs the list of files, its state (with the 64 KiB version 1 buffer)
 * and the stream chunk (start-up only).
 * Threads: begin/step on the ingest thread, or (with an apply thread)
 * begin and finish on the ingest thread and the sensor steps on the apply
 * thread, handed over under its lock; load and next_seq at start-up.
 * Limits: a chunk is at most max(step_bytes, one sensor); every loop is
 * bounded by the sensor count, the table sizes or a constant.
 */
#include "store/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/assert.h"
#include "core/clock.h"
#include "core/crc32c.h"
#include "sluice/protocol.h"

#define CK_VERSION 3u        /* written; 2 (no series chunk) and 1 (split rings) are still read */
#define CK_VERSION_NO_SERIES 2u /* version 2: the trailer follows the stream chunk */
#define CK_VERSION_SPLIT 1u  /* version 1: ring values, then ring deltas, unpadded */
#define CK_V1_BUFFER_BYTES (64u * 1024u) /* loader: version 1 rings pass through this */
#define CK_V1_WORDS (CK_V1_BUFFER_BYTES / 4u)
#define CK_HEADER_BYTES SL_CHECKPOINT_HEADER_BYTES
#define CK_CHUNK_HEADER_BYTES 64u
#define CK_TRAILER_BYTES 64u
#define CK_STREAM_ENTRY_BYTES 16u
#define CK_SERIES_ENTRY_HEADER_BYTES 8u /* u32 id, u32 name length, then the name */
#define CK_SERIES_WINDOW_BYTES (64u * 1024u) /* loader: series entries pass through this */
#define CK_NAME_PREFIX "ckpt-"
#define CK_NAME_DIGITS 16u
#define CK_DIR_CALLS_MAX (1u << 20) /* getdents64 calls per listing: a sanity bound */
#define CK_FILES_MAX (1u << 16)     /* checkpoint files the loader considers */
#define CRC32C_POLY 0x82F63B78u     /* reflected Castagnoli polynomial */

/* The payload is the store's memory as it is: little-endian, no padding. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "checkpoints are little-endian");
_Static_assert(offsetof(struct sl_sensor, readings_total) == 8, "sensor record layout");
_Static_assert(offsetof(struct sl_sensor, head) == 32, "sensor record layout");
_Static_assert(offsetof(struct sl_sensor, ewma) == 48, "sensor record layout");
_Static_assert(offsetof(struct sl_coarse_bucket, sum) == 16, "coarse bucket layout");
_Static_assert(sizeof(struct sl_stream_slot) == 24, "stream slot: entries are written field by field");
_Static_assert(SL_CHECKPOINT_BUFFER_BYTES % CK_STREAM_ENTRY_BYTES == 0, "whole entries");
_Static_assert(SL_CHECKPOINT_BUFFER_BYTES >= 4096, "room for directory entries");
_Static_assert(SL_CHECKPOINT_BUFFER_BYTES >= CK_SERIES_ENTRY_HEADER_BYTES + SL_SERIES_NAME_MAX,
               "a series entry fits the staging buffer");
_Static_assert(CK_SERIES_WINDOW_BYTES >= 2 * (CK_SERIES_ENTRY_HEADER_BYTES + SL_SERIES_NAME_MAX),
               "the loader's window holds a whole entry after any carry");

/* ---- CRC combination: crc(A || B) from crc(A), crc(B) and |B| ---- */

/* a x b modulo the polynomial, in the reflected bit order (x^0 is the top bit). */
static uint32_t gf2_multiply(uint32_t a, uint32_t b)
{
    uint32_t product = 0;
    for (uint32_t bit = 0; bit < 32; bit++) {
        if (a & (0x80000000u >> bit)) {
            product ^= b;
        }
        b = (b & 1) ? (b >> 1) ^ CRC32C_POLY : b >> 1;
    }
    return product;
}

static uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t bytes_b)
{
    uint32_t shift = 0x80000000u;  /* x^0 */
    uint32_t square = 0x00800000u; /* x^8: one byte */
    for (uint32_t bit = 0; bit < 64 && (bytes_b >> bit) != 0; bit++) {
        if ((bytes_b >> bit) & 1) {
            shift = gf2_multiply(square, shift);
        }
        square = gf2_multiply(square, square);
    }
    return gf2_multiply(shift, crc_a) ^ crc_b;
}

/* ---- shared helpers ---- */

/* Bytes one sensor takes in a chunk payload of this format version. */
static uint64_t sensor_bytes(const struct sl_store *store, uint32_t version)
{
    uint64_t ring_slots =
        version == CK_VERSION_SPLIT ? store->config.ring_readings : store->ring_stride;
    return sizeof(struct sl_sensor) + ring_slots * sizeof(struct sl_slot) +
           (uint64_t)store->coarse_buckets_total * sizeof(struct sl_coarse_bucket);
}

/* The three contiguous ranges of sensors [first, first + count), in payload order. */
struct span {
    uint8_t *p;
    uint64_t bytes;
};

enum { SPAN_RECORDS, SPAN_SLOTS, SPAN_COARSE, SPANS };

static void sensor_spans(const struct sl_store *store, uint32_t first, uint32_t count,
                         struct span spans[SPANS])
{
    uint64_t stride = store->ring_stride;
    uint64_t coarse = store->coarse_buckets_total;
    /* The writer never writes through these; the loader (with a mutable store) does. */
    spans[SPAN_RECORDS] =
        (struct span){(uint8_t *)&store->sensors[first], count * sizeof(struct sl_sensor)};
    spans[SPAN_SLOTS] = (struct span){(uint8_t *)&store->slots[first * stride],
                                      count * stride * sizeof(struct sl_slot)};
    spans[SPAN_COARSE] = (struct span){(uint8_t *)&store->coarse[first * coarse],
                                       count * coarse * sizeof(struct sl_coarse_bucket)};
}

/* The common 64-byte chunk header (sensor chunks "SLCK", the stream chunk "SLST"). */
static void chunk_header_encode(uint8_t out[CK_CHUNK_HEADER_BYTES], const char *magic, uint32_t a,
                                uint32_t b, uint64_t lsn, uint64_t payload_bytes,
                                uint32_t payload_crc)
{
    memset(out, 0, CK_CHUNK_HEADER_BYTES);
    memcpy(out, magic, 4);
    sl_store_u32(out + 4, a);
    sl_store_u32(out + 8, b);
    sl_store_u64(out + 16, lsn);
    sl_store_u64(out + 24, payload_bytes);
    sl_store_u32(out + 56, payload_crc);
    sl_store_u32(out + 60, sl_crc32c(out, 60));
}

/* 1 for "ckpt-<16 hex>.ckpt", 2 for "ckpt-<16 hex>.ckpt.tmp", else 0; the seq in *seq. */
static int parse_name(const char *name, uint64_t *seq)
{
    size_t prefix = sizeof CK_NAME_PREFIX - 1;
    if (strncmp(name, CK_NAME_PREFIX, prefix) != 0) {
        return 0;
    }
    uint64_t value = 0;
    for (uint32_t i = 0; i < CK_NAME_DIGITS; i++) {
        char c = name[prefix + i];
        uint32_t digit = c >= '0' && c <= '9'   ? (uint32_t)(c - '0')
                         : c >= 'a' && c <= 'f' ? (uint32_t)(c - 'a' + 10)
                                                : 16;
        if (digit == 16) {
            return 0;
        }
        value = value << 4 | digit;
    }
    const char *rest = name + prefix + CK_NAME_DIGITS;
    *seq = value;
    return strcmp(rest, ".ckpt") == 0 ? 1 : strcmp(rest, ".ckpt.tmp") == 0 ? 2 : 0;
}

typedef void (*dir_visit_fn)(void *ctx, const char *name);

/*
 * Call visit for every entry of dir, listing it with getdents64 into the
 * caller's buffer (no heap, unlike opendir). 0 or -errno.
 */
static int dir_each(const struct sl_io *io, const char *dir, uint8_t *buf, uint32_t buf_bytes,
                    dir_visit_fn visit, void *ctx)
{
    int fd = io->open(io, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0) {
        return fd;
    }
    int rc = 0;
    for (uint32_t calls = 0; calls < CK_DIR_CALLS_MAX; calls++) {
        ssize_t got = getdents64(fd, buf, buf_bytes);
        if (got < 0) {
            rc = -errno;
            break;
        }
        if (got == 0) {
            break;
        }
        for (ssize_t pos = 0; pos < got;) {
            const struct dirent64 *entry = (const struct dirent64 *)(buf + pos);
            SL_ASSERT(entry->d_reclen > 0);
            visit(ctx, entry->d_name);
            pos += entry->d_reclen;
        }
    }
    (void)io->close(io, fd);
    return rc;
}

static void checkpoint_path(char *out, size_t out_bytes, const char *dir, uint64_t seq, bool tmp)
{
    int n = snprintf(out, out_bytes, "%s/" CK_NAME_PREFIX "%016" PRIx64 ".ckpt%s", dir, seq,
                     tmp ? ".tmp" : "");
    SL_ASSERT(n > 0 && (size_t)n < out_bytes);
}

static inline void counter_add(_Atomic uint64_t *counter, uint64_t n)
{
    uint64_t v = atomic_load_explicit(counter, memory_order_relaxed);
    atomic_store_explicit(counter, v + n, memory_order_relaxed);
}

/* ---- the writer ---- */

void sl_checkpoint_init(struct sl_checkpointer *ck, const struct sl_checkpoint_config *config,
                        const struct sl_store *store, const struct sl_streams *tcp_streams,
                        const struct sl_streams *udp_streams, uint64_t next_seq)
{
    SL_ASSERT(config->io != NULL);
    SL_ASSERT(next_seq >= 1);
    memset(ck, 0, sizeof *ck);
    ck->config = *config;
    if (ck->config.step_bytes == 0) {
        ck->config.step_bytes = SL_CHECKPOINT_STEP_BYTES_DEFAULT;
    }
    ck->store = store;
    ck->tcp_streams = tcp_streams;
    ck->udp_streams = udp_streams;
    ck->fd = -1;
    ck->seq = next_seq;
}

void sl_checkpoint_set_series(struct sl_checkpointer *ck, const struct sl_series *series)
{
    ck->series = series;
}

/* Give up the checkpoint in progress: close and remove the .tmp file. */
static void abandon(struct sl_checkpointer *ck)
{
    const struct sl_io *io = ck->config.io;
    if (ck->fd >= 0) {
        (void)io->close(io, ck->fd);
        ck->fd = -1;
    }
    (void)io->unlink(io, ck->tmp_path);
    ck->active = false;
    counter_add(&ck->counters.failed, 1);
}

static int write_at(struct sl_checkpointer *ck, const void *buf, uint64_t bytes, uint64_t offset)
{
    int rc = sl_io_pwrite_all(ck->config.io, ck->fd, buf, bytes, offset);
    if (rc == 0) {
        counter_add(&ck->counters.bytes_written, bytes);
    }
    return rc;
}

static void file_header_encode(const struct sl_checkpointer *ck, uint8_t out[CK_HEADER_BYTES])
{
    const struct sl_store *store = ck->store;
    memset(out, 0, CK_HEADER_BYTES);
    memcpy(out, "SLUICECK", 8);
    sl_store_u32(out + 8, CK_VERSION);
    sl_store_u64(out + 16, ck->seq);
    sl_store_u64(out + 24, ck->start_lsn);
    sl_store_u32(out + 32, store->config.sensors_max);
    sl_store_u32(out + 36, store->config.ring_readings);
    sl_store_u32(out + 40, store->coarse_buckets_total);
    sl_store_u64(out + 48, (uint64_t)store->coarse_resolution_us);
    sl_store_u64(out + 56, (uint64_t)store->config.ewma_half_life_us);
    sl_store_u64(out + 64, (uint64_t)sl_clock_realtime_us());
    sl_store_u32(out + 124, sl_crc32c(out, 124));
}

int sl_checkpoint_header_decode(const uint8_t h[SL_CHECKPOINT_HEADER_BYTES],
                                struct sl_checkpoint_header *out, const char **why)
{
    if (memcmp(h, "SLUICECK", 8) != 0) {
        *why = "bad magic";
        return -EINVAL;
    }
    if (sl_load_u32(h + 124) != sl_crc32c(h, 124)) {
        *why = "bad header CRC";
        return -EINVAL;
    }
    *out = (struct sl_checkpoint_header){
        .version = sl_load_u32(h + 8),
        .seq = sl_load_u64(h + 16),
        .start_lsn = sl_load_u64(h + 24),
        .sensors_max = sl_load_u32(h + 32),
        .ring_readings = sl_load_u32(h + 36),
        .coarse_buckets_total = sl_load_u32(h + 40),
        .coarse_resolution_us = (int64_t)sl_load_u64(h + 48),
        .ewma_half_life_us = (int64_t)sl_load_u64(h + 56),
        .created_us = (int64_t)sl_load_u64(h + 64),
    };
    return 0;
}

int sl_checkpoint_begin(struct sl_checkpointer *ck, uint64_t start_lsn)
{
    const struct sl_io *io = ck->config.io;
    if (ck->active) {
        return -EBUSY;
    }
    counter_add(&ck->counters.started, 1);
    checkpoint_path(ck->tmp_path, sizeof ck->tmp_path, ck->config.dir, ck->seq, true);
    checkpoint_path(ck->path, sizeof ck->path, ck->config.dir, ck->seq, false);
    int fd = io->open(io, ck->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        counter_add(&ck->counters.failed, 1);
        return fd;
    }
    ck->fd = fd;
    ck->active = true;
    ck->start_lsn = start_lsn;
    ck->chunk_lsn = start_lsn;
    ck->next_sensor = 0;
    ck->chunks = 0;
    uint8_t header[CK_HEADER_BYTES];
    file_header_encode(ck, header);
    int rc = write_at(ck, header, sizeof header, 0);
    if (rc != 0) {
        abandon(ck);
        return rc;
    }
    ck->crc_running = sl_crc32c(header, sizeof header);
    ck->offset = sizeof header;
    return 0;
}

/* One chunk of whole sensors from next_sensor, at most step_bytes (at least one sensor). */
static int write_sensor_chunk(struct sl_checkpointer *ck, uint32_t sensors_count, uint64_t lsn)
{
    uint64_t per_sensor = sensor_bytes(ck->store, CK_VERSION);
    uint64_t step = ck->config.step_bytes;
    uint64_t fit =
        step > CK_CHUNK_HEADER_BYTES + per_sensor ? (step - CK_CHUNK_HEADER_BYTES) / per_sensor : 1;
    uint32_t left = sensors_count - ck->next_sensor;
    uint32_t count = fit < left ? (uint32_t)fit : left;
    SL_ASSERT(count >= 1);
    struct span spans[SPANS];
    sensor_spans(ck->store, ck->next_sensor, count, spans);
    uint32_t crc = 0;
    uint64_t offset = ck->offset + CK_CHUNK_HEADER_BYTES;
    for (uint32_t i = 0; i < SPANS; i++) {
        if (spans[i].bytes == 0) {
            continue;
        }
        crc = sl_crc32c_extend(crc, spans[i].p, spans[i].bytes);
        int rc = write_at(ck, spans[i].p, spans[i].bytes, offset);
        if (rc != 0) {
            return rc;
        }
        offset += spans[i].bytes;
    }
    uint64_t payload_bytes = offset - ck->offset - CK_CHUNK_HEADER_BYTES;
    SL_ASSERT(payload_bytes == count * per_sensor);
    uint8_t header[CK_CHUNK_HEADER_BYTES];
    chunk_header_encode(header, "SLCK", ck->next_sensor, count, lsn, payload_bytes, crc);
    int rc = write_at(ck, header, sizeof header, ck->offset);
    if (rc != 0) {
        return rc;
    }
    ck->crc_running = sl_crc32c_extend(ck->crc_running, header, sizeof header);
    ck->crc_running = crc32c_combine(ck->crc_running, crc, payload_bytes);
    /*
     * Start the chunk on its way to the device now, so the final fdatasync
     * finds little left to write: without this it wrote the whole file at
     * once and stalled the thread that finishes the checkpoint (the ingest
     * thread) for tens of milliseconds (docs/STORAGE.md has the figures).
     */
    const struct sl_io *io = ck->config.io;
    if (io->writeback != NULL) {
        io->writeback(io, ck->fd, ck->offset, offset - ck->offset);
    }
    ck->offset = offset;
    ck->next_sensor += count;
    ck->chunks++;
    return 0;
}

/* Staged stream entries: the buffer fills, then goes out in one pwrite. */
struct stage {
    uint32_t fill;
    uint64_t offset;
    uint32_t crc;
};

static int stage_flush(struct sl_checkpointer *ck, struct stage *st)
{
    if (st->fill == 0) {
        return 0;
    }
    st->crc = sl_crc32c_extend(st->crc, ck->buffer, st->fill);
    int rc = write_at(ck, ck->buffer, st->fill, st->offset);
    st->offset += st->fill;
    st->fill = 0;
    return rc;
}

/* Stage every used slot of one table; *used_out counts them. */
static int stage_table(struct sl_checkpointer *ck, const struct sl_streams *table, struct stage *st,
                       uint32_t *used_out)
{
    uint32_t used = 0;
    for (uint64_t i = 0; i <= table->mask; i++) {
        const struct sl_stream_slot *slot = &table->slots[i];
        if (!slot->used) {
            continue;
        }
        if (st->fill + CK_STREAM_ENTRY_BYTES > SL_CHECKPOINT_BUFFER_BYTES) {
            int rc = stage_flush(ck, st);
            if (rc != 0) {
                return rc;
            }
        }
        uint8_t *e = ck->buffer + st->fill;
        sl_store_u32(e, slot->stream_id);
        sl_store_u16(e + 4, slot->has_seq ? 1 : 0);
        sl_store_u16(e + 6, 0);
        sl_store_u64(e + 8, slot->last_seq);
        st->fill += CK_STREAM_ENTRY_BYTES;
        used++;
    }
    SL_ASSERT(used <= table->capacity);
    *used_out = used;
    return 0;
}

/* A staged chunk's payload is written: its header goes before it, both into the running CRC. */
static int chunk_close(struct sl_checkpointer *ck, const struct stage *st, const char *magic,
                       uint32_t a, uint32_t b, uint64_t lsn, uint64_t payload_bytes)
{
    uint8_t header[CK_CHUNK_HEADER_BYTES];
    chunk_header_encode(header, magic, a, b, lsn, payload_bytes, st->crc);
    int rc = write_at(ck, header, sizeof header, ck->offset);
    if (rc != 0) {
        return rc;
    }
    ck->crc_running = sl_crc32c_extend(ck->crc_running, header, sizeof header);
    ck->crc_running = crc32c_combine(ck->crc_running, st->crc, payload_bytes);
    ck->offset = st->offset;
    return 0;
}

static int write_streams_chunk(struct sl_checkpointer *ck, uint64_t lsn)
{
    struct stage st = {.fill = 0, .offset = ck->offset + CK_CHUNK_HEADER_BYTES, .crc = 0};
    uint32_t tcp_used = 0, udp_used = 0;
    int rc = stage_table(ck, ck->tcp_streams, &st, &tcp_used);
    if (rc == 0) {
        rc = stage_table(ck, ck->udp_streams, &st, &udp_used);
    }
    if (rc == 0) {
        rc = stage_flush(ck, &st);
    }
    if (rc != 0) {
        return rc;
    }
    uint64_t payload_bytes = ((uint64_t)tcp_used + udp_used) * CK_STREAM_ENTRY_BYTES;
    SL_ASSERT(st.offset == ck->offset + CK_CHUNK_HEADER_BYTES + payload_bytes);
    return chunk_close(ck, &st, "SLST", tcp_used, udp_used, lsn, payload_bytes);
}

/*
 * The series registry (version 3): every series in id order, as u32 id, u32
 * name length and the name. Holes (ids whose names were lost) are left out:
 * the loader re-creates them from the gaps, and a hole is always followed
 * by a named series, so the next free id comes out the same.
 */
static int write_series_chunk(struct sl_checkpointer *ck, uint64_t lsn)
{
    struct stage st = {.fill = 0, .offset = ck->offset + CK_CHUNK_HEADER_BYTES, .crc = 0};
    uint32_t count = ck->series != NULL ? sl_series_count(ck->series) : 0;
    uint32_t written = 0;
    for (uint32_t i = 0; i < count; i++) {
        const char *name;
        uint32_t len;
        uint32_t id = ck->series->id_base + i;
        if (sl_series_name(ck->series, id, &name, &len) != 0) {
            continue; /* a hole */
        }
        if (st.fill + CK_SERIES_ENTRY_HEADER_BYTES + len > SL_CHECKPOINT_BUFFER_BYTES) {
            int rc = stage_flush(ck, &st);
            if (rc != 0) {
                return rc;
            }
        }
        uint8_t *e = ck->buffer + st.fill;
        sl_store_u32(e, id);
        sl_store_u32(e + 4, len);
        memcpy(e + CK_SERIES_ENTRY_HEADER_BYTES, name, len);
        st.fill += CK_SERIES_ENTRY_HEADER_BYTES + len;
        written++;
    }
    int rc = stage_flush(ck, &st);
    if (rc != 0) {
        return rc;
    }
    uint64_t payload_bytes = st.offset - ck->offset - CK_CHUNK_HEADER_BYTES;
    return chunk_close(ck, &st, "SLSR", written, 0, lsn, payload_bytes);
}

static int write_trailer(struct sl_checkpointer *ck, uint64_t end_lsn)
{
    uint8_t t[CK_TRAILER_BYTES];
    memset(t, 0, sizeof t);
    memcpy(t, "SLEN", 4);
    sl_store_u32(t + 4, ck->chunks);
    sl_store_u32(t + 8, ck->next_sensor);
    sl_store_u64(t + 16, end_lsn);
    sl_store_u64(t + 24, ck->offset + CK_TRAILER_BYTES);
    sl_store_u32(t + 56, ck->crc_running);
    sl_store_u32(t + 60, sl_crc32c(t, 60));
    int rc = write_at(ck, t, sizeof t, ck->offset);
    if (rc == 0) {
        ck->offset += CK_TRAILER_BYTES;
    }
    return rc;
}

/* Removal of superseded checkpoints: the newest SL_CHECKPOINTS_KEPT complete ones stay. */
struct prune {
    const char *dir;
    const struct sl_io *io;
    uint64_t current;                     /* the checkpoint just completed */
    uint64_t newest[SL_CHECKPOINTS_KEPT]; /* descending; 0 = none */
    char path[4160];
};

static void prune_note(void *ctx, const char *name)
{
    struct prune *pr = ctx;
    uint64_t seq;
    if (parse_name(name, &seq) != 1) {
        return;
    }
    for (uint32_t i = 0; i < SL_CHECKPOINTS_KEPT; i++) {
        if (seq > pr->newest[i]) {
            memmove(&pr->newest[i + 1], &pr->newest[i],
                    (SL_CHECKPOINTS_KEPT - 1 - i) * sizeof pr->newest[0]);
            pr->newest[i] = seq;
            return;
        }
    }
}

static void prune_remove(void *ctx, const char *name)
{
    struct prune *pr = ctx;
    uint64_t seq;
    int kind = parse_name(name, &seq);
    uint64_t oldest_kept = pr->newest[SL_CHECKPOINTS_KEPT - 1];
    bool stale = (kind == 1 && seq < oldest_kept) || (kind == 2 && seq < pr->current);
    if (!stale) {
        return;
    }
    int n = snprintf(pr->path, sizeof pr->path, "%s/%s", pr->dir, name);
    if (n > 0 && (size_t)n < sizeof pr->path) {
        (void)pr->io->unlink(pr->io, pr->path); /* best effort: retried after the next one */
    }
}

static void prune_old(struct sl_checkpointer *ck)
{
    struct prune pr;
    memset(&pr, 0, sizeof pr);
    pr.dir = ck->config.dir;
    pr.io = ck->config.io;
    pr.current = ck->seq;
    if (dir_each(pr.io, pr.dir, ck->buffer, sizeof ck->buffer, prune_note, &pr) != 0) {
        return;
    }
    if (pr.newest[SL_CHECKPOINTS_KEPT - 1] == 0) {
        return; /* fewer than SL_CHECKPOINTS_KEPT complete: keep them all */
    }
    (void)dir_each(pr.io, pr.dir, ck->buffer, sizeof ck->buffer, prune_remove, &pr);
}

/* Streams, trailer, sync, rename, directory sync. 0 or -errno (the caller abandons). */
static int finish(struct sl_checkpointer *ck, uint64_t lsn)
{
    const struct sl_io *io = ck->config.io;
    int rc = write_streams_chunk(ck, lsn);
    if (rc == 0) {
        rc = write_series_chunk(ck, lsn);
    }
    if (rc == 0) {
        rc = write_trailer(ck, lsn);
    }
    if (rc == 0) {
        rc = io->fdatasync(io, ck->fd); /* once: a failed sync is never retried on this fd */
    }
    if (rc != 0) {
        return rc;
    }
    rc = io->close(io, ck->fd);
    ck->fd = -1;
    if (rc != 0) {
        return rc;
    }
    rc = io->rename(io, ck->tmp_path, ck->path);
    if (rc != 0) {
        return rc;
    }
    rc = sl_io_fsync_dir(io, ck->config.dir);
    if (rc != 0) {
        /* Not known durable: do not leave it to be trusted; the next one replaces it. */
        (void)io->unlink(io, ck->path);
        return rc;
    }
    return 0;
}

int sl_checkpoint_step_sensors(struct sl_checkpointer *ck, uint64_t applied_lsn)
{
    SL_ASSERT(ck->active);
    SL_ASSERT(applied_lsn >= ck->chunk_lsn); /* records are applied in lsn order */
    ck->chunk_lsn = applied_lsn;
    uint32_t count = sl_store_sensors_count(ck->store);
    SL_ASSERT(ck->next_sensor <= count); /* sensors are never removed */
    if (ck->next_sensor == count) {
        return 1;
    }
    int rc = write_sensor_chunk(ck, count, applied_lsn);
    if (rc != 0) {
        abandon(ck);
    }
    return rc;
}

int sl_checkpoint_finish(struct sl_checkpointer *ck, uint64_t lsn)
{
    SL_ASSERT(ck->active);
    SL_ASSERT(lsn >= ck->chunk_lsn);
    ck->chunk_lsn = lsn;
    int rc = finish(ck, lsn);
    if (rc != 0) {
        abandon(ck);
        return rc;
    }
    ck->active = false;
    counter_add(&ck->counters.completed, 1);
    atomic_store_explicit(&ck->counters.last_start_lsn, ck->start_lsn, memory_order_relaxed);
    atomic_store_explicit(&ck->counters.last_bytes, ck->offset, memory_order_relaxed);
    prune_old(ck);
    ck->seq++;
    return 1;
}

int sl_checkpoint_step(struct sl_checkpointer *ck, uint64_t applied_lsn)
{
    int rc = sl_checkpoint_step_sensors(ck, applied_lsn);
    return rc == 1 ? sl_checkpoint_finish(ck, applied_lsn) : rc;
}

/* ---- listing (start-up) ---- */

struct seq_list {
    uint64_t *seqs;
    uint32_t count;
    uint32_t capacity;
    uint64_t highest; /* of any checkpoint file, complete or not */
    bool any;
    bool out_of_memory;
};

static void list_note(void *ctx, const char *name)
{
    struct seq_list *list = ctx;
    uint64_t seq;
    int kind = parse_name(name, &seq);
    if (kind == 0) {
        return;
    }
    if (!list->any || seq > list->highest) {
        list->highest = seq;
    }
    list->any = true;
    if (kind != 1 || list->seqs == NULL || list->count == list->capacity) {
        return; /* beyond CK_FILES_MAX the oldest-listed are not considered */
    }
    list->seqs[list->count++] = seq;
}

static int seq_descending(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Complete checkpoints in dir, newest first (list->seqs malloc'd: the caller frees). */
static int list_checkpoints(const struct sl_io *io, const char *dir, struct seq_list *list,
                            bool want_seqs)
{
    memset(list, 0, sizeof *list);
    if (want_seqs) {
        list->capacity = CK_FILES_MAX;
        list->seqs = malloc((size_t)list->capacity * sizeof list->seqs[0]);
        if (list->seqs == NULL) {
            return -ENOMEM;
        }
    }
    _Alignas(8) uint8_t buf[8192];
    int rc = dir_each(io, dir, buf, sizeof buf, list_note, list);
    if (rc == 0 && list->count > 1) {
        qsort(list->seqs, list->count, sizeof list->seqs[0], seq_descending);
    }
    return rc;
}

uint64_t sl_checkpoint_next_seq(const char *dir)
{
    struct seq_list list;
    int rc = list_checkpoints(&sl_io_posix, dir, &list, false);
    if (rc != 0 || !list.any) {
        return 1;
    }
    return list.highest == UINT64_MAX ? UINT64_MAX : list.highest + 1;
}

/* ---- the loader ---- */

struct loader {
    const struct sl_io *io;
    int fd;
    char path[4160];
    struct sl_store *store;
    struct sl_streams *tcp;
    struct sl_streams *udp;
    uint64_t *sensor_lsn;
    uint64_t seq;
    uint32_t version; /* of the file being read */
    uint64_t start_lsn;
    uint64_t offset;  /* of the next thing to read */
    uint32_t crc;     /* running CRC of everything read so far */
    uint32_t touched; /* sensors [0, touched) may hold loaded bytes */
    uint32_t chunks;
    uint64_t last_lsn; /* of the latest chunk */
    uint64_t streams_lsn;
    uint64_t streams_dropped; /* entries that did not fit the running tables */
    struct sl_series *series; /* NULL: series entries are checked, not kept */
    uint32_t series_loaded;
    uint64_t series_dropped;  /* entries that did not fit the running registry */
    char why[256];            /* why the file was skipped */
    struct sl_checkpoint_header header; /* of the file being read, once header_valid */
    bool header_valid;
    /*
     * Verify mode (sl_checkpoint_verify): no store. `store` points at
     * `scratch`, a store of the header's geometry whose arrays hold only
     * `window` sensors: each chunk is read through it a window at a time,
     * and the ids seen are kept to check that they are distinct.
     */
    bool verify;
    struct sl_store scratch;
    uint32_t window;
    uint32_t *ids;
    uint32_t ids_count;
    uint32_t ids_cap;
    uint8_t v1_buffer[CK_V1_BUFFER_BYTES]; /* a version 1 file's rings, a piece at a time */
};

/* Result of one step of the loader: 0 fine, LOAD_INVALID (reason in ld->why), or -errno. */
#define LOAD_INVALID 1

static int invalid(struct loader *ld, const char *why)
{
    snprintf(ld->why, sizeof ld->why, "%s", why);
    return LOAD_INVALID;
}

/* Read exactly `bytes` at offset; a short file is invalid, other errors are I/O errors. */
static int read_at(struct loader *ld, void *buf, uint64_t bytes, uint64_t offset)
{
    int rc = sl_io_pread_all(ld->io, ld->fd, buf, bytes, offset);
    if (rc == -ENODATA) {
        return invalid(ld, "truncated");
    }
    return rc;
}

/* Put the fresh store back: records, rings, coarse of [0, touched), the whole index, streams. */
static void loader_reset(struct loader *ld)
{
    struct sl_store *store = ld->store;
    uint64_t n = ld->touched;
    memset(store->sensors, 0, n * sizeof(struct sl_sensor));
    memset(store->slots, 0, n * store->ring_stride * sizeof(struct sl_slot));
    memset(store->coarse, 0, n * store->coarse_buckets_total * sizeof(struct sl_coarse_bucket));
    memset(store->index, 0, ((uint64_t)store->index_mask + 1) * sizeof store->index[0]);
    atomic_store_explicit(&store->sensors_count, 0, memory_order_release);
    memset(ld->sensor_lsn, 0, n * sizeof ld->sensor_lsn[0]);
    struct sl_streams *tables[2] = {ld->tcp, ld->udp};
    for (uint32_t t = 0; t < 2; t++) {
        memset(tables[t]->slots, 0,
               ((uint64_t)tables[t]->mask + 1) * sizeof(struct sl_stream_slot));
        atomic_store_explicit(&tables[t]->count, 0, memory_order_relaxed);
        atomic_store_explicit(&tables[t]->full_total, 0, memory_order_relaxed);
    }
    if (ld->series != NULL) {
        sl_series_reset(ld->series);
    }
    ld->touched = 0;
}

static int geometry_field(struct loader *ld, const char *name, int64_t file, int64_t running)
{
    if (file == running) {
        return 0;
    }
    snprintf(ld->why, sizeof ld->why,
             "geometry mismatch: %s is %" PRId64 " in the file, %" PRId64
             " in the running configuration",
             name, file, running);
    return LOAD_INVALID;
}

/* Verify mode: bytes of store arrays the scratch store holds at most (one sensor at least). */
#define CK_VERIFY_SCRATCH_BYTES (16u << 20)

/*
 * Verify mode: a store of the header's geometry, once the geometry is one a
 * store can have, with arrays for as many sensors as fit the scratch bytes.
 */
static int scratch_setup(struct loader *ld, const struct sl_checkpoint_header *hd)
{
    if (hd->sensors_max < 1 || hd->sensors_max > SL_SENSORS_MAX) {
        return invalid(ld, "unreadable geometry: sensors_max");
    }
    if (hd->ring_readings < SL_RING_READINGS_MIN || hd->ring_readings > SL_RING_READINGS_MAX) {
        return invalid(ld, "unreadable geometry: ring_readings");
    }
    if (hd->coarse_buckets_total == 1 || hd->coarse_buckets_total > SL_COARSE_BUCKETS_MAX + 1 ||
        (hd->coarse_buckets_total > 0) != (hd->coarse_resolution_us > 0) ||
        hd->coarse_resolution_us < 0) {
        return invalid(ld, "unreadable geometry: coarse tier");
    }
    if (hd->ewma_half_life_us < 1000 || hd->ewma_half_life_us > SL_WINDOW_US_MAX) {
        return invalid(ld, "unreadable geometry: ewma_half_life_us");
    }
    struct sl_store *s = &ld->scratch;
    memset(s, 0, sizeof *s);
    s->config.sensors_max = hd->sensors_max;
    s->config.ring_readings = hd->ring_readings;
    s->config.ewma_half_life_us = hd->ewma_half_life_us;
    s->ring_stride = sl_ring_stride(hd->ring_readings);
    s->coarse_buckets_total = hd->coarse_buckets_total;
    s->coarse_resolution_us = hd->coarse_resolution_us;
    uint64_t per_sensor = sensor_bytes(s, CK_VERSION); /* >= a version 1 sensor's */
    uint64_t window = CK_VERIFY_SCRATCH_BYTES / per_sensor;
    ld->window = (uint32_t)(window < 1 ? 1 : window > hd->sensors_max ? hd->sensors_max : window);
    s->sensors = calloc(ld->window, sizeof(struct sl_sensor));
    s->slots = calloc((uint64_t)ld->window * s->ring_stride, sizeof(struct sl_slot));
    s->coarse =
        calloc((uint64_t)ld->window * s->coarse_buckets_total + 1, sizeof(struct sl_coarse_bucket));
    if (s->sensors == NULL || s->slots == NULL || s->coarse == NULL) {
        return -ENOMEM;
    }
    return 0;
}

static void scratch_free(struct loader *ld)
{
    free(ld->scratch.sensors);
    free(ld->scratch.slots);
    free(ld->scratch.coarse);
    free(ld->ids);
    ld->scratch.sensors = NULL;
    ld->scratch.slots = NULL;
    ld->scratch.coarse = NULL;
    ld->ids = NULL;
}

static int load_header(struct loader *ld)
{
    uint8_t h[CK_HEADER_BYTES];
    int rc = read_at(ld, h, sizeof h, 0);
    if (rc == LOAD_INVALID) {
        int64_t got = ld->io->pread(ld->io, ld->fd, h, sizeof h, 0);
        snprintf(ld->why, sizeof ld->why, "truncated header (%lld of %u bytes)",
                 (long long)(got > 0 ? got : 0), CK_HEADER_BYTES);
    }
    if (rc != 0) {
        return rc;
    }
    struct sl_checkpoint_header hd;
    const char *why = NULL;
    if (sl_checkpoint_header_decode(h, &hd, &why) != 0) {
        return invalid(ld, why);
    }
    ld->header = hd;
    ld->header_valid = true;
    ld->version = hd.version;
    if (ld->version != CK_VERSION && ld->version != CK_VERSION_NO_SERIES &&
        ld->version != CK_VERSION_SPLIT) {
        return invalid(ld, "unknown version");
    }
    if (hd.seq != ld->seq) {
        return invalid(ld, "seq differs from the file name");
    }
    rc = ld->verify ? scratch_setup(ld, &hd) : 0;
    if (rc != 0) {
        return rc;
    }
    const struct sl_store *s = ld->store;
    rc = geometry_field(ld, "sensors_max", hd.sensors_max, s->config.sensors_max);
    rc = rc ? rc : geometry_field(ld, "ring_readings", hd.ring_readings, s->config.ring_readings);
    rc = rc ? rc
            : geometry_field(ld, "coarse_buckets_total", hd.coarse_buckets_total,
                             s->coarse_buckets_total);
    rc = rc ? rc
            : geometry_field(ld, "coarse_resolution_us", hd.coarse_resolution_us,
                             s->coarse_resolution_us);
    rc = rc ? rc
            : geometry_field(ld, "ewma_half_life_us", hd.ewma_half_life_us,
                             s->config.ewma_half_life_us);
    if (rc != 0) {
        return rc;
    }
    ld->start_lsn = hd.start_lsn;
    ld->last_lsn = ld->start_lsn;
    ld->crc = sl_crc32c(h, sizeof h);
    ld->offset = sizeof h;
    return 0;
}

/*
 * The invariants the store's writer and readers rely on, for a record read
 * from disk: an even sequence, head and slot counts inside the ring, the
 * oldest used slot a reading, every escape (NaN) followed by a reading,
 * finite values, `count` readings, times that decode from oldest_t_us
 * forward, never going back, to exactly last_t_us, and zero padding.
 */
static bool sensor_valid(const struct sl_store *store, uint32_t index)
{
    const struct sl_sensor *s = &store->sensors[index];
    uint32_t ring = store->config.ring_readings;
    uint32_t seq = atomic_load_explicit(&((struct sl_sensor *)s)->seq, memory_order_relaxed);
    if ((seq & 1) != 0 || s->head >= ring || s->used_slots > ring || s->count > s->used_slots ||
        s->count == 0 || s->readings_total < s->count || !isfinite(s->ewma)) {
        return false;
    }
    const struct sl_slot *slots = &store->slots[(uint64_t)index * store->ring_stride];
    for (uint32_t i = ring; i < store->ring_stride; i++) {
        if (slots[i].delta != 0 || slots[i].value != 0.0f || signbit(slots[i].value)) {
            return false; /* padding is never written: anything there is not ours */
        }
    }
    uint32_t slot =
        s->head >= s->used_slots ? s->head - s->used_slots : s->head + ring - s->used_slots;
    uint32_t readings = 0;
    int64_t t = s->oldest_t_us;
    for (uint32_t i = 0; i < s->used_slots; i++, slot = slot + 1 == ring ? 0 : slot + 1) {
        uint64_t gap = slots[slot].delta;
        if (isnan(slots[slot].value)) {
            if (i == 0 || i + 1 == s->used_slots) {
                return false; /* the oldest slot is a reading; an escape precedes one */
            }
            i++;
            slot = slot + 1 == ring ? 0 : slot + 1;
            gap = gap << 32 | slots[slot].delta;
        }
        if (!isfinite(slots[slot].value)) {
            return false;
        }
        if (readings > 0) {
            int64_t next = (int64_t)((uint64_t)t + gap);
            if (next < t) {
                return false; /* wrapped past INT64_MAX */
            }
            t = next;
        }
        readings++;
    }
    return readings == s->count && t == s->last_t_us;
}

static int chunk_header_check(struct loader *ld, const uint8_t h[CK_CHUNK_HEADER_BYTES])
{
    if (sl_load_u32(h + 60) != sl_crc32c(h, 60)) {
        return invalid(ld, "bad chunk header CRC");
    }
    uint64_t lsn = sl_load_u64(h + 16);
    if (lsn < ld->last_lsn) {
        return invalid(ld, "chunk lsn goes back");
    }
    return 0;
}

/* One part of a sensor chunk's payload: an array over the chunk's sensors, in file order. */
enum section_kind { SEC_RECORDS, SEC_SLOTS, SEC_VALUES, SEC_DELTAS, SEC_COARSE };
#define CK_SECTIONS_MAX 4u

struct section {
    enum section_kind kind;
    uint64_t per_sensor; /* bytes a sensor takes in it */
    uint32_t crc;        /* CRC-32C of what was read of it so far */
};

/*
 * The payload's parts: records, ring slots (version 1: values, then deltas),
 * coarse buckets. Returns their number.
 */
static uint32_t chunk_sections(const struct loader *ld, struct section sec[CK_SECTIONS_MAX])
{
    const struct sl_store *store = ld->store;
    uint32_t n = 0;
    sec[n++] = (struct section){SEC_RECORDS, sizeof(struct sl_sensor), 0};
    if (ld->version == CK_VERSION_SPLIT) {
        sec[n++] = (struct section){SEC_VALUES, (uint64_t)store->config.ring_readings * 4, 0};
        sec[n++] = (struct section){SEC_DELTAS, (uint64_t)store->config.ring_readings * 4, 0};
    } else {
        sec[n++] =
            (struct section){SEC_SLOTS, (uint64_t)store->ring_stride * sizeof(struct sl_slot), 0};
    }
    sec[n++] = (struct section){
        SEC_COARSE, (uint64_t)store->coarse_buckets_total * sizeof(struct sl_coarse_bucket), 0};
    return n;
}

/*
 * A version 1 chunk's ring values (SEC_VALUES, f32) or deltas (SEC_DELTAS,
 * u32) of n sensors at file offset `offset`, read a buffer at a time
 * (extending the section's CRC in file order) and put into the slots of
 * the store's sensors [at, at + n).
 */
static int load_split_rings(struct loader *ld, struct section *sec, uint32_t at, uint32_t n,
                            uint64_t offset)
{
    struct sl_store *store = ld->store;
    uint64_t ring = store->config.ring_readings;
    uint64_t words = (uint64_t)n * ring;
    for (uint64_t done = 0; done < words;) {
        uint64_t m = words - done < CK_V1_WORDS ? words - done : CK_V1_WORDS;
        int rc = read_at(ld, ld->v1_buffer, m * 4, offset);
        if (rc != 0) {
            return rc;
        }
        sec->crc = sl_crc32c_extend(sec->crc, ld->v1_buffer, m * 4);
        for (uint64_t k = 0; k < m; k++) {
            uint64_t w = done + k;
            uint64_t sensor = at + w / ring;
            struct sl_slot *slot = &store->slots[sensor * store->ring_stride + w % ring];
            if (sec->kind == SEC_VALUES) {
                slot->value = sl_load_f32(ld->v1_buffer + k * 4);
            } else {
                slot->delta = sl_load_u32(ld->v1_buffer + k * 4);
            }
        }
        done += m;
        offset += m * 4;
    }
    return 0;
}

/*
 * Read sensors [done, done + n) of a chunk of `count` sensors whose payload
 * starts at file offset `base`, each section straight into the store's
 * arrays at sensor index `at`, extending each section's CRC.
 */
static int load_window(struct loader *ld, uint64_t base, uint32_t count, uint32_t done, uint32_t n,
                       uint32_t at, struct section *sec, uint32_t sections)
{
    struct sl_store *store = ld->store;
    uint64_t section_offset = base;
    for (uint32_t i = 0; i < sections; i++) {
        uint64_t offset = section_offset + done * sec[i].per_sensor;
        uint64_t bytes = n * sec[i].per_sensor;
        section_offset += count * sec[i].per_sensor;
        if (bytes == 0) {
            continue;
        }
        if (sec[i].kind == SEC_VALUES || sec[i].kind == SEC_DELTAS) {
            int rc = load_split_rings(ld, &sec[i], at, n, offset);
            if (rc != 0) {
                return rc;
            }
            continue;
        }
        uint8_t *p = sec[i].kind == SEC_RECORDS ? (uint8_t *)&store->sensors[at]
                     : sec[i].kind == SEC_SLOTS
                         ? (uint8_t *)&store->slots[(uint64_t)at * store->ring_stride]
                         : (uint8_t *)&store->coarse[(uint64_t)at * store->coarse_buckets_total];
        int rc = read_at(ld, p, bytes, offset);
        if (rc != 0) {
            return rc;
        }
        sec[i].crc = sl_crc32c_extend(sec[i].crc, p, bytes);
    }
    return 0;
}

/* Verify mode: note an id, to check at the end that the file's ids are distinct. */
static int note_id(struct loader *ld, uint32_t id)
{
    if (ld->ids_count == ld->ids_cap) {
        uint32_t cap = ld->ids_cap == 0 ? 4096 : ld->ids_cap * 2;
        uint32_t *grown = realloc(ld->ids, (size_t)cap * sizeof *grown);
        if (grown == NULL) {
            return -ENOMEM;
        }
        ld->ids = grown;
        ld->ids_cap = cap;
    }
    ld->ids[ld->ids_count++] = id;
    return 0;
}

static int u32_ascending(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Verify mode: are ids[0, n) distinct? (sorts them) */
static bool ids_distinct(uint32_t *ids, uint32_t n)
{
    if (n > 1) {
        qsort(ids, n, sizeof ids[0], u32_ascending);
    }
    for (uint32_t i = 1; i < n; i++) {
        if (ids[i] == ids[i - 1]) {
            return false;
        }
    }
    return true;
}

/*
 * Loading: the sensors [at, at + n) just read are trusted only if each is
 * consistent and its id new (sl_store_restore_sensor); verify mode: the
 * same consistency check, the ids noted. NULL, or what is wrong.
 */
static const char *sensors_check(struct loader *ld, uint32_t at, uint32_t n, uint64_t lsn, int *rc)
{
    for (uint32_t i = at; i < at + n; i++) {
        if (!sensor_valid(ld->store, i)) {
            return "inconsistent sensor record";
        }
        uint32_t id = ld->store->sensors[i].id;
        if (ld->verify) {
            *rc = note_id(ld, id);
            if (*rc != 0) {
                return "out of memory";
            }
        } else if (sl_store_restore_sensor(ld->store, i, id) != 0) {
            return "duplicate sensor id";
        } else {
            ld->sensor_lsn[i] = lsn;
        }
    }
    return NULL;
}

static int load_sensor_chunk(struct loader *ld, const uint8_t h[CK_CHUNK_HEADER_BYTES])
{
    struct sl_store *store = ld->store;
    uint32_t first = sl_load_u32(h + 4), count = sl_load_u32(h + 8);
    uint64_t lsn = sl_load_u64(h + 16), payload_bytes = sl_load_u64(h + 24);
    if (first != ld->touched || count == 0 || count > store->config.sensors_max - first) {
        return invalid(ld, "chunks not contiguous from sensor 0");
    }
    if (payload_bytes != count * sensor_bytes(store, ld->version)) {
        return invalid(ld, "chunk payload length");
    }
    struct section sec[CK_SECTIONS_MAX];
    uint32_t sections = chunk_sections(ld, sec);
    ld->touched = first + count; /* from here the range may hold file bytes */
    uint64_t base = ld->offset + CK_CHUNK_HEADER_BYTES;
    /* Loading reads the chunk whole into place; verify mode a window at a time, the sensors
     * checked as they go by (what is wrong is told once the CRC is known to be good). */
    uint32_t window = ld->verify ? ld->window : count;
    const char *wrong = NULL;
    int rc = 0;
    for (uint32_t done = 0, n = 0; done < count; done += n) {
        n = count - done < window ? count - done : window;
        uint32_t at = ld->verify ? 0 : first + done;
        rc = load_window(ld, base, count, done, n, at, sec, sections);
        if (rc != 0) {
            return rc;
        }
        if (ld->verify && wrong == NULL) {
            wrong = sensors_check(ld, at, n, lsn, &rc);
        }
    }
    uint32_t crc = sec[0].crc;
    for (uint32_t i = 1; i < sections; i++) {
        crc = crc32c_combine(crc, sec[i].crc, count * sec[i].per_sensor);
    }
    if (crc != sl_load_u32(h + 56)) {
        return invalid(ld, "bad chunk payload CRC");
    }
    if (!ld->verify) {
        wrong = sensors_check(ld, first, count, lsn, &rc);
    }
    if (rc != 0) {
        return rc;
    }
    if (wrong != NULL) {
        return invalid(ld, wrong);
    }
    ld->crc = sl_crc32c_extend(ld->crc, h, CK_CHUNK_HEADER_BYTES);
    ld->crc = crc32c_combine(ld->crc, crc, payload_bytes);
    ld->offset = base + payload_bytes;
    ld->last_lsn = lsn;
    ld->chunks++;
    return 0;
}

/* Restore one table's entries from e[0, count x 16). */
static int restore_table(struct loader *ld, struct sl_streams *table, const uint8_t *e,
                         uint32_t count)
{
    for (uint32_t i = 0; i < count; i++, e += CK_STREAM_ENTRY_BYTES) {
        uint32_t id = sl_load_u32(e);
        uint16_t has_seq = sl_load_u16(e + 4);
        if (has_seq > 1 || sl_load_u16(e + 6) != 0) {
            return invalid(ld, "bad stream entry");
        }
        if (table == NULL) { /* verify mode */
            int rc = note_id(ld, id);
            if (rc != 0) {
                return rc;
            }
            continue;
        }
        if (sl_streams_get(table, id, 0) != NULL) {
            return invalid(ld, "duplicate stream id");
        }
        struct sl_stream_slot *slot = sl_streams_get(table, id, 1);
        if (slot == NULL) {
            ld->streams_dropped++; /* the running table is smaller: dedup of this stream restarts */
            continue;
        }
        slot->has_seq = has_seq;
        slot->last_seq = sl_load_u64(e + 8);
    }
    return 0;
}

static int load_streams_chunk(struct loader *ld, const uint8_t h[CK_CHUNK_HEADER_BYTES])
{
    uint32_t tcp_count = sl_load_u32(h + 4), udp_count = sl_load_u32(h + 8);
    uint64_t payload_bytes = sl_load_u64(h + 24);
    if (tcp_count > SL_STREAMS_MAX || udp_count > SL_STREAMS_MAX ||
        payload_bytes != ((uint64_t)tcp_count + udp_count) * CK_STREAM_ENTRY_BYTES) {
        return invalid(ld, "stream chunk counts");
    }
    uint8_t *payload = malloc(payload_bytes > 0 ? payload_bytes : 1);
    if (payload == NULL) {
        return -ENOMEM;
    }
    int rc = read_at(ld, payload, payload_bytes, ld->offset + CK_CHUNK_HEADER_BYTES);
    uint32_t crc = rc == 0 ? sl_crc32c(payload, payload_bytes) : 0;
    if (rc == 0 && crc != sl_load_u32(h + 56)) {
        rc = invalid(ld, "bad stream chunk CRC");
    }
    if (rc == 0 && ld->verify && !ids_distinct(ld->ids, ld->ids_count)) {
        rc = invalid(ld, "duplicate sensor id");
    }
    for (uint32_t t = 0; t < 2 && rc == 0; t++) {
        const uint8_t *e = payload + (t == 0 ? 0 : (uint64_t)tcp_count * CK_STREAM_ENTRY_BYTES);
        uint32_t n = t == 0 ? tcp_count : udp_count;
        ld->ids_count = 0;
        rc = restore_table(ld, t == 0 ? ld->tcp : ld->udp, e, n);
        if (rc == 0 && ld->verify && !ids_distinct(ld->ids, ld->ids_count)) {
            rc = invalid(ld, "duplicate stream id");
        }
    }
    free(payload);
    if (rc != 0) {
        return rc;
    }
    ld->crc = sl_crc32c_extend(ld->crc, h, CK_CHUNK_HEADER_BYTES);
    ld->crc = crc32c_combine(ld->crc, crc, payload_bytes);
    ld->offset += CK_CHUNK_HEADER_BYTES + payload_bytes;
    ld->streams_lsn = sl_load_u64(h + 16);
    ld->last_lsn = ld->streams_lsn;
    return 0;
}

/* Restore (or, verifying, check) the entries whole in w[0, n); the bytes used in *used. */
static int series_entries(struct loader *ld, const uint8_t *w, uint64_t n, uint64_t *used,
                          uint32_t *left, uint64_t *next_id)
{
    uint64_t at = 0;
    while (*left > 0 && n - at >= CK_SERIES_ENTRY_HEADER_BYTES) {
        uint32_t id = sl_load_u32(w + at), len = sl_load_u32(w + at + 4);
        if (len == 0 || len > SL_SERIES_NAME_MAX || id < *next_id) {
            return invalid(ld, "bad series entry");
        }
        if (n - at < CK_SERIES_ENTRY_HEADER_BYTES + len) {
            break; /* the rest comes with the next read */
        }
        const char *name = (const char *)w + at + CK_SERIES_ENTRY_HEADER_BYTES;
        if (ld->series != NULL) {
            int rc = sl_series_restore(ld->series, id, name, len);
            if (rc == -SL_SERIES_BAD_ID && id - ld->series->id_base < ld->series->capacity &&
                id >= ld->series->id_base) {
                return invalid(ld, "bad series entry");
            }
            if (rc != 0) {
                ld->series_dropped++; /* the running registry is smaller, or based elsewhere */
            } else {
                ld->series_loaded++;
            }
        }
        *next_id = (uint64_t)id + 1;
        at += CK_SERIES_ENTRY_HEADER_BYTES + len;
        (*left)--;
    }
    *used = at;
    return 0;
}

static int load_series_chunk(struct loader *ld, const uint8_t h[CK_CHUNK_HEADER_BYTES])
{
    uint32_t count = sl_load_u32(h + 4);
    uint64_t payload_bytes = sl_load_u64(h + 24);
    if (memcmp(h, "SLSR", 4) != 0) {
        return invalid(ld, "no series chunk");
    }
    if (count > SL_SERIES_MAX || sl_load_u32(h + 8) != 0 ||
        payload_bytes < (uint64_t)count * (CK_SERIES_ENTRY_HEADER_BYTES + 1) ||
        payload_bytes > (uint64_t)count * (CK_SERIES_ENTRY_HEADER_BYTES + SL_SERIES_NAME_MAX)) {
        return invalid(ld, "series chunk counts");
    }
    uint8_t *w = malloc(CK_SERIES_WINDOW_BYTES);
    if (w == NULL) {
        return -ENOMEM;
    }
    uint64_t base = ld->offset + CK_CHUNK_HEADER_BYTES, done = 0, next_id = 0;
    uint32_t crc = 0, left = count;
    uint64_t fill = 0;
    int rc = 0;
    while (rc == 0 && done < payload_bytes) {
        uint64_t want = CK_SERIES_WINDOW_BYTES - fill;
        if (want > payload_bytes - done) {
            want = payload_bytes - done;
        }
        rc = read_at(ld, w + fill, want, base + done);
        if (rc != 0) {
            break;
        }
        crc = sl_crc32c_extend(crc, w + fill, want);
        done += want;
        fill += want;
        uint64_t used = 0;
        rc = series_entries(ld, w, fill, &used, &left, &next_id);
        memmove(w, w + used, fill - used);
        fill -= used;
        if (rc == 0 && (fill == CK_SERIES_WINDOW_BYTES || (left == 0 && fill > 0))) {
            /* Bytes the count does not account for (or an entry the window cannot hold). */
            rc = invalid(ld, "series chunk counts");
        }
    }
    free(w);
    if (rc == 0 && (left != 0 || fill != 0)) {
        rc = invalid(ld, "series chunk counts");
    }
    if (rc == 0 && crc != sl_load_u32(h + 56)) {
        rc = invalid(ld, "bad series chunk CRC");
    }
    if (rc != 0) {
        return rc;
    }
    ld->crc = sl_crc32c_extend(ld->crc, h, CK_CHUNK_HEADER_BYTES);
    ld->crc = crc32c_combine(ld->crc, crc, payload_bytes);
    ld->offset = base + payload_bytes;
    ld->last_lsn = sl_load_u64(h + 16);
    return 0;
}

static int load_trailer(struct loader *ld, struct sl_checkpoint_loaded *out)
{
    uint8_t t[CK_TRAILER_BYTES];
    int rc = read_at(ld, t, sizeof t, ld->offset);
    if (rc != 0) {
        return rc;
    }
    if (memcmp(t, "SLEN", 4) != 0 || sl_load_u32(t + 60) != sl_crc32c(t, 60)) {
        return invalid(ld, "bad trailer");
    }
    if (sl_load_u32(t + 56) != ld->crc) {
        return invalid(ld, "bad running CRC");
    }
    uint64_t end_lsn = sl_load_u64(t + 16), total = sl_load_u64(t + 24);
    if (sl_load_u32(t + 4) != ld->chunks || sl_load_u32(t + 8) != ld->touched ||
        end_lsn < ld->last_lsn || total != ld->offset + CK_TRAILER_BYTES) {
        return invalid(ld, "trailer counts");
    }
    uint8_t extra;
    int64_t got = ld->io->pread(ld->io, ld->fd, &extra, 1, total);
    if (got < 0) {
        return (int)got;
    }
    if (got != 0) {
        return invalid(ld, "bytes after the trailer");
    }
    out->seq = ld->seq;
    out->start_lsn = ld->start_lsn;
    out->end_lsn = end_lsn;
    out->sensors = ld->touched;
    out->streams_lsn = ld->streams_lsn;
    out->series = ld->series_loaded;
    out->series_dropped = ld->series_dropped;
    out->bytes = total;
    return 0;
}

/* Chunks until the stream chunk, then the trailer. */
static int load_body(struct loader *ld, struct sl_checkpoint_loaded *out)
{
    uint32_t chunks_max = ld->store->config.sensors_max + 1; /* each holds >= 1 sensor */
    for (uint32_t i = 0; i <= chunks_max; i++) {
        uint8_t h[CK_CHUNK_HEADER_BYTES];
        int rc = read_at(ld, h, sizeof h, ld->offset);
        if (rc == 0) {
            rc = chunk_header_check(ld, h);
        }
        if (rc != 0) {
            return rc;
        }
        if (memcmp(h, "SLCK", 4) == 0) {
            rc = load_sensor_chunk(ld, h);
        } else if (memcmp(h, "SLST", 4) == 0) {
            rc = load_streams_chunk(ld, h);
            if (rc == 0 && ld->version >= CK_VERSION) {
                rc = read_at(ld, h, sizeof h, ld->offset);
                rc = rc ? rc : chunk_header_check(ld, h);
                rc = rc ? rc : load_series_chunk(ld, h);
            }
            return rc != 0 ? rc : load_trailer(ld, out);
        } else {
            rc = invalid(ld, "bad chunk magic");
        }
        if (rc != 0) {
            return rc;
        }
    }
    return invalid(ld, "too many chunks");
}

/* One file: 0 loaded, LOAD_INVALID (store reset, reason printed), or -errno (store reset). */
static int load_file(struct loader *ld, const char *dir, struct sl_checkpoint_loaded *out)
{
    checkpoint_path(ld->path, sizeof ld->path, dir, ld->seq, false);
    ld->offset = 0;
    ld->chunks = 0;
    ld->touched = 0;
    ld->streams_lsn = 0;
    ld->streams_dropped = 0;
    ld->series_loaded = 0;
    ld->series_dropped = 0;
    ld->header_valid = false;
    ld->fd = ld->io->open(ld->io, ld->path, O_RDONLY | O_CLOEXEC, 0);
    if (ld->fd == -ENOENT) {
        snprintf(ld->why, sizeof ld->why, "vanished");
        if (!ld->verify) {
            fprintf(stderr, "sluice: checkpoint %s: skipped: %s\n", ld->path, ld->why);
        }
        return LOAD_INVALID;
    }
    if (ld->fd < 0) {
        return ld->fd;
    }
    int rc = load_header(ld);
    if (rc == 0) {
        rc = load_body(ld, out);
    }
    (void)ld->io->close(ld->io, ld->fd);
    ld->fd = -1;
    if (ld->verify) {
        return rc;
    }
    if (rc != 0) {
        loader_reset(ld);
    }
    if (rc == LOAD_INVALID) {
        fprintf(stderr, "sluice: checkpoint %s: skipped: %s\n", ld->path, ld->why);
    } else if (rc == 0 && ld->streams_dropped > 0) {
        fprintf(stderr,
                "sluice: checkpoint %s: %" PRIu64 " streams did not fit the stream tables\n",
                ld->path, ld->streams_dropped);
    }
    if (rc == 0 && ld->series_dropped > 0) {
        fprintf(stderr,
                "sluice: checkpoint %s: %" PRIu64
                " named series did not fit the registry (--max-series, --series-name-bytes, "
                "--series-id-base): their names are forgotten\n",
                ld->path, ld->series_dropped);
    }
    return rc;
}

int sl_checkpoint_load(const char *dir, const struct sl_io *io, struct sl_store *store,
                       struct sl_streams *tcp_streams, struct sl_streams *udp_streams,
                       struct sl_series *series, uint64_t *sensor_lsn,
                       struct sl_checkpoint_loaded *out)
{
    SL_ASSERT(sl_store_sensors_count(store) == 0);    /* a freshly initialised store... */
    SL_ASSERT(atomic_load(&tcp_streams->count) == 0); /* ...and stream tables */
    SL_ASSERT(atomic_load(&udp_streams->count) == 0);
    memset(out, 0, sizeof *out);
    struct seq_list list;
    int rc = list_checkpoints(io, dir, &list, true);
    if (rc != 0) {
        free(list.seqs);
        return rc;
    }
    struct loader *ld = calloc(1, sizeof *ld);
    if (ld == NULL) {
        free(list.seqs);
        return -ENOMEM;
    }
    ld->io = io;
    ld->fd = -1;
    ld->store = store;
    ld->tcp = tcp_streams;
    ld->udp = udp_streams;
    ld->series = series;
    ld->sensor_lsn = sensor_lsn;
    rc = -ENOENT;
    for (uint32_t i = 0; i < list.count; i++) {
        ld->seq = list.seqs[i];
        int file_rc = load_file(ld, dir, out);
        if (file_rc == LOAD_INVALID) {
            continue;
        }
        rc = file_rc; /* loaded, or an I/O error that stops the search */
        break;
    }
    free(ld);
    free(list.seqs);
    if (rc != 0) {
        memset(out, 0, sizeof *out);
    }
    return rc;
}

int sl_checkpoint_verify(const char *dir, const char *name, const struct sl_io *io,
                         struct sl_checkpoint_verdict *out)
{
    memset(out, 0, sizeof *out);
    uint64_t seq = 0;
    if (parse_name(name, &seq) != 1) {
        snprintf(out->why, sizeof out->why, "not the name of a complete checkpoint");
        return 1;
    }
    struct loader *ld = calloc(1, sizeof *ld);
    if (ld == NULL) {
        return -ENOMEM;
    }
    ld->io = io;
    ld->fd = -1;
    ld->verify = true;
    ld->store = &ld->scratch;
    ld->seq = seq;
    int rc = load_file(ld, dir, &out->loaded);
    out->header_valid = ld->header_valid;
    out->header = ld->header;
    out->chunks = ld->chunks;
    if (rc == LOAD_INVALID) {
        snprintf(out->why, sizeof out->why, "%s", ld->why);
        memset(&out->loaded, 0, sizeof out->loaded);
    }
    scratch_free(ld);
    free(ld);
    return rc;
}
