/*
 * test_log: the durable log keeps every acknowledged record, and says
 * exactly what it lost when the disk misbehaves.
 *
 * - The format: records and segment headers encode and decode at the byte
 *   offsets docs/STORAGE.md gives; every decode error is distinguished.
 * - The scanner, on hand-built segments: a clean end (zeros, a short zero
 *   remainder, a segment filled to the last byte), torn tails (a cut at every
 *   length, garbage, a half-written record), a bit flip in a middle record
 *   (header and payload: skipped, counted, later records kept), a zeroed
 *   512-byte sector, the stale records of a recycled file, lsns going
 *   backwards, a visitor that stops, and a hostile file whose CRC work must
 *   stay bounded.
 * - The writer: append, commit, close and reopen in each sync mode, with
 *   resuming in the last segment (also after a torn tail); rotation; the
 *   buffer's -ENOBUFS contract; recycling at bytes_max with the dropped
 *   records counted against the checkpoint lsn; a lowered bytes_max at
 *   start-up; no heap allocation on the append/commit/tick path.
 * - Faults through sl_io_faults, under a spy table that records every
 *   descriptor whose write or sync failed and flags any later write or sync
 *   on it before it is closed (fsyncgate): failed pwrite, short pwrite,
 *   failed fdatasync in each mode, no space for a fresh segment (fallocate
 *   and open), the failed state and leaving it. After each, the directory is
 *   reopened and exactly the acked records must be there; records of a
 *   failed commit are asserted absent only where the injected fault makes
 *   it certain (nothing written), and present where the fault left the
 *   bytes intact on disk (an injected fdatasync error does not lose data).
 * - sl_io_faults_init's spec parsing, and the seam's helpers.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
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
#include "store/log.h"
#include "testlib.h"

#define SEG_BYTES (2ull << 20) /* the smallest segment: rotation is cheap to reach */
#define IDS_MAX 40000u
#define NOW_US 1800000000000000LL

static char root[64];

/* ---- batches: content derived from an id, so a visitor can check every byte ---- */

static uint8_t reading_bytes[SL_READING_BYTES * SL_BATCH_COUNT_MAX];

static uint32_t mix32(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (uint32_t)x;
}

static void fill_readings(uint8_t *out, uint64_t id, uint32_t count)
{
    for (uint32_t i = 0; i < count; i++) {
        uint8_t *p = out + (size_t)i * SL_READING_BYTES;
        sl_store_u32(p, (uint32_t)(id * 31 + i));
        sl_store_u32(p + 4, i);
        sl_store_u32(p + 8, mix32(id * 65536 + i));
    }
}

static void make_batch(struct sl_batch *b, uint64_t id, uint32_t count)
{
    fill_readings(reading_bytes, id, count);
    b->header = (struct sl_batch_header){.version = 1,
                                         .flags = (uint8_t)(id & 1),
                                         .count = (uint16_t)count,
                                         .stream_id = (uint32_t)(id % 7),
                                         .batch_seq = id,
                                         .base_time_us = NOW_US + (int64_t)id};
    b->readings = reading_bytes;
}

/* The record count of id's batch: a spread of sizes, so record ends land everywhere. */
static uint32_t count_of(uint64_t id)
{
    return 1 + (uint32_t)(mix32(id) % 150);
}

/* ---- the visitor: what a reopen finds ---- */

struct seen {
    uint64_t ids[IDS_MAX];
    uint64_t lsns[IDS_MAX];
    uint32_t count;
    uint32_t bad; /* records whose content does not match their id */
    uint8_t check[SL_READING_BYTES * SL_BATCH_COUNT_MAX];
};

static int collect(void *ctx, const struct sl_log_record *r)
{
    struct seen *s = ctx;
    uint64_t id = r->batch.header.batch_seq;
    uint32_t count = r->batch.header.count;
    fill_readings(s->check, id, count);
    if (memcmp(s->check, r->batch.readings, (size_t)count * SL_READING_BYTES) != 0 ||
        r->batch.header.stream_id != id % 7 || r->batch.header.flags != (id & 1) ||
        r->batch.header.base_time_us != NOW_US + (int64_t)id || r->now_us != NOW_US - 1 ||
        r->transport != (id % 2 ? SL_LOG_TCP : SL_LOG_UDP)) {
        s->bad++;
    }
    if (s->count < IDS_MAX) {
        s->ids[s->count] = id;
        s->lsns[s->count] = r->lsn;
        s->count++;
    }
    return 0;
}

static bool seen_has(const struct seen *s, uint64_t id)
{
    for (uint32_t i = 0; i < s->count; i++) {
        if (s->ids[i] == id) {
            return true;
        }
    }
    return false;
}

/* ---- temporary directories ---- */

/* Remove the files in dir, then dir. */
static void remove_flat(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return;
    }
    char path[512];
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            snprintf(path, sizeof path, "%.200s/%.200s", dir, e->d_name);
            unlink(path);
        }
    }
    closedir(d);
    rmdir(dir);
}

/* The root: its case directories (each flat), then itself. */
static void remove_root(void)
{
    DIR *d = opendir(root);
    char path[512];
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            snprintf(path, sizeof path, "%.60s/%.200s", root, e->d_name);
            remove_flat(path);
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    rmdir(root);
}

static uint32_t count_files(const char *dir)
{
    DIR *d = opendir(dir);
    uint32_t n = 0;
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        n += strncmp(e->d_name, "log-", 4) == 0;
    }
    if (d != NULL) {
        closedir(d);
    }
    return n;
}

/* ---- a spy over the seam: no write or sync may touch a descriptor after it failed ---- */

#define SPY_FDS 4096

struct spy {
    struct sl_io io;
    const struct sl_io *inner;
    bool poisoned[SPY_FDS];
    uint32_t violations;
    uint32_t syncs_after_failure;
    /* Writeback hints: each must start where the last one on that file ended, within what was written. */
    uint64_t written_end[SPY_FDS];
    uint64_t writeback_end[SPY_FDS];
    uint64_t writeback_bytes;
    uint32_t writebacks;
    uint32_t writeback_errors;
};

static struct spy *spy_of(const struct sl_io *io)
{
    return io->state;
}

static int spy_open(const struct sl_io *io, const char *path, int flags, int mode)
{
    struct spy *s = spy_of(io);
    int fd = s->inner->open(s->inner, path, flags, mode);
    if (fd >= 0 && fd < SPY_FDS) {
        s->poisoned[fd] = false;
        s->written_end[fd] = 0;
        s->writeback_end[fd] = SL_LOG_SEGMENT_HEADER_BYTES;
    }
    return fd;
}

static int spy_close(const struct sl_io *io, int fd)
{
    struct spy *s = spy_of(io);
    if (fd >= 0 && fd < SPY_FDS) {
        s->poisoned[fd] = false;
    }
    return s->inner->close(s->inner, fd);
}

static int64_t spy_pwrite(const struct sl_io *io, int fd, const void *buf, uint64_t bytes,
                          uint64_t offset)
{
    struct spy *s = spy_of(io);
    s->violations += s->poisoned[fd];
    int64_t n = s->inner->pwrite(s->inner, fd, buf, bytes, offset);
    if (n < 0) {
        s->poisoned[fd] = true;
    } else if (offset + (uint64_t)n > s->written_end[fd]) {
        s->written_end[fd] = offset + (uint64_t)n;
    }
    return n;
}

static int64_t spy_pread(const struct sl_io *io, int fd, void *buf, uint64_t bytes, uint64_t offset)
{
    struct spy *s = spy_of(io);
    return s->inner->pread(s->inner, fd, buf, bytes, offset);
}

static int spy_fdatasync(const struct sl_io *io, int fd)
{
    struct spy *s = spy_of(io);
    s->violations += s->poisoned[fd];
    s->syncs_after_failure += s->poisoned[fd];
    int rc = s->inner->fdatasync(s->inner, fd);
    if (rc != 0) {
        s->poisoned[fd] = true;
    }
    return rc;
}

static int spy_fsync(const struct sl_io *io, int fd)
{
    struct spy *s = spy_of(io);
    return s->inner->fsync(s->inner, fd);
}

static int spy_fallocate(const struct sl_io *io, int fd, uint64_t offset, uint64_t bytes)
{
    struct spy *s = spy_of(io);
    return s->inner->fallocate(s->inner, fd, offset, bytes);
}

static int spy_ftruncate(const struct sl_io *io, int fd, uint64_t bytes)
{
    struct spy *s = spy_of(io);
    return s->inner->ftruncate(s->inner, fd, bytes);
}

static int spy_rename(const struct sl_io *io, const char *from, const char *to)
{
    struct spy *s = spy_of(io);
    return s->inner->rename(s->inner, from, to);
}

static int spy_unlink(const struct sl_io *io, const char *path)
{
    struct spy *s = spy_of(io);
    return s->inner->unlink(s->inner, path);
}

static void spy_writeback(const struct sl_io *io, int fd, uint64_t offset, uint64_t bytes)
{
    struct spy *s = spy_of(io);
    s->violations += s->poisoned[fd];
    bool ok = bytes > 0 && offset == s->writeback_end[fd] && offset + bytes <= s->written_end[fd];
    s->writeback_errors += ok ? 0 : 1;
    s->writeback_end[fd] = offset + bytes;
    s->writeback_bytes += bytes;
    s->writebacks++;
    if (s->inner->writeback != NULL) {
        s->inner->writeback(s->inner, fd, offset, bytes);
    }
}

static void spy_init(struct spy *s, const struct sl_io *inner)
{
    memset(s, 0, sizeof *s);
    s->inner = inner;
    s->io = (struct sl_io){.open = spy_open,
                           .close = spy_close,
                           .pwrite = spy_pwrite,
                           .pread = spy_pread,
                           .fdatasync = spy_fdatasync,
                           .fsync = spy_fsync,
                           .fallocate = spy_fallocate,
                           .ftruncate = spy_ftruncate,
                           .rename = spy_rename,
                           .unlink = spy_unlink,
                           .writeback = spy_writeback,
                           .state = s};
}

/* ---- a log under test and a model of what was acked ---- */

enum { ST_NONE = 0, ST_ACKED = 1, ST_FAILED = 2 };

struct harness {
    char dir[128];
    struct sl_log_config config;
    struct sl_arena arena;
    struct sl_log *log;
    struct sl_log_recovery recovery;
    struct seen seen;
    struct sl_io_faults faults;
    struct spy spy;
    uint64_t next_id; /* ids start at 1 */
    uint8_t state[IDS_MAX];
    uint64_t lsn_of[IDS_MAX];
    int64_t now_ns;
};

static struct harness H;

static void h_config(struct harness *h, const char *name, enum sl_sync_mode mode)
{
    memset(h, 0, sizeof *h);
    snprintf(h->dir, sizeof h->dir, "%s/%s", root, name);
    sl_log_config_default(&h->config);
    snprintf(h->config.dir, sizeof h->config.dir, "%s", h->dir);
    h->config.segment_bytes = SEG_BYTES;
    h->config.bytes_max = 64 * SEG_BYTES;
    h->config.buffer_bytes = SL_LOG_BUFFER_BYTES_MIN;
    h->config.sync = mode;
    h->config.sync_interval_ms = 100;
    CHECK(sl_io_faults_init(&h->faults, &sl_io_posix, "", &(const char *){NULL}) == 0);
    spy_init(&h->spy, &h->faults.io);
    h->config.io = &h->spy.io;
    h->next_id = 1;
    h->now_ns = sl_clock_monotonic_ns();
}

/* Open (or reopen) the log; what it replays lands in h->seen. */
static bool h_open(struct harness *h)
{
    struct sl_plan plan;
    sl_plan_init(&plan);
    sl_log_plan(&h->config, &plan);
    CHECK(sl_arena_map(&h->arena, plan.total_bytes) == 0);
    memset(&h->seen, 0, offsetof(struct seen, check));
    char err[256] = "";
    h->log = sl_log_open(&h->config, &h->arena, collect, &h->seen, &h->recovery, err, sizeof err);
    if (h->log == NULL) {
        fprintf(stderr, "sl_log_open: %s\n", err);
    }
    CHECK(h->log != NULL);
    CHECK(h->arena.used_bytes == plan.total_bytes);
    CHECK(h->seen.bad == 0);
    return h->log != NULL;
}

static void h_close(struct harness *h)
{
    if (h->log != NULL) {
        sl_log_close(h->log);
        h->log = NULL;
    }
    sl_arena_unmap(&h->arena);
}

/* Reopen through the plain POSIX table. */
static bool h_reopen(struct harness *h)
{
    h_close(h);
    h->config.io = &sl_io_posix;
    return h_open(h);
}

/*
 * Append `n` batches and commit them as one group. Returns the commit's
 * status; the model marks each record acked or failed from *applicable.
 */
static int h_put(struct harness *h, uint32_t n)
{
    static uint8_t expect[SL_READING_BYTES * 150];
    const struct sl_log_record *records[512];
    uint64_t ids[512];
    uint32_t appended = 0;
    SL_ASSERT(n <= (uint32_t)SL_ARRAY_COUNT(ids));
    for (uint32_t i = 0; i < n; i++) {
        uint64_t id = h->next_id;
        struct sl_batch b;
        make_batch(&b, id, count_of(id));
        uint64_t lsn = 0;
        const struct sl_log_record *r = NULL;
        int rc = sl_log_append(h->log, &b, id % 2 ? SL_LOG_TCP : SL_LOG_UDP, NOW_US - 1, &lsn, &r);
        if (rc == -ENOBUFS) {
            break;
        }
        if (rc != 0) {
            CHECK_EQ(rc, -EIO);
            return rc;
        }
        CHECK(r->lsn == lsn && r->batch.header.batch_seq == id &&
              r->batch.header.count == count_of(id));
        h->lsn_of[id] = lsn;
        records[appended] = r;
        ids[appended++] = id;
        h->next_id++;
    }
    uint64_t applicable = 0;
    int rc = sl_log_commit(h->log, h->now_ns, &applicable);
    for (uint32_t i = 0; i < appended; i++) {
        h->state[ids[i]] = h->lsn_of[ids[i]] <= applicable ? ST_ACKED : ST_FAILED;
        /* What append handed out is intact after the commit: the caller applies from it. */
        if (h->state[ids[i]] != ST_ACKED) {
            continue;
        }
        const struct sl_log_record *r = records[i];
        fill_readings(expect, ids[i], count_of(ids[i]));
        CHECK(r->lsn == h->lsn_of[ids[i]] && r->batch.header.batch_seq == ids[i]);
        CHECK(memcmp(r->batch.readings, expect, (size_t)count_of(ids[i]) * SL_READING_BYTES) == 0);
    }
    CHECK((rc == 0) == (appended == 0 || applicable >= h->lsn_of[ids[appended - 1]]));
    return rc;
}

/* Commits until at least `records` more were acked. */
static void h_fill(struct harness *h, uint32_t records, uint32_t group)
{
    uint64_t target = h->next_id + records;
    for (uint32_t round = 0; round < 100000 && h->next_id < target; round++) {
        CHECK(h_put(h, group) == 0);
        h->now_ns += 1000000;
        sl_log_tick(h->log, h->now_ns);
    }
}

/* After a reopen: every acked record was visited once, in lsn order; failed ones per `failed_seen`.
 */
static void h_verify(struct harness *h, int failed_expect)
{
    uint32_t acked = 0, failed_seen = 0, failed_total = 0;
    for (uint64_t id = 1; id < h->next_id; id++) {
        bool present = seen_has(&h->seen, id);
        if (h->state[id] == ST_ACKED) {
            acked++;
            if (!present) {
                fprintf(stderr, "acked record %llu (lsn %llu) is missing\n", (unsigned long long)id,
                        (unsigned long long)h->lsn_of[id]);
            }
            CHECK(present);
        } else if (h->state[id] == ST_FAILED) {
            failed_total++;
            failed_seen += present;
        }
    }
    for (uint32_t i = 1; i < h->seen.count; i++) {
        CHECK(h->seen.lsns[i] > h->seen.lsns[i - 1]);
    }
    if (failed_expect == 0) {
        CHECK_EQ(failed_seen, 0); /* asserted only where the fault wrote nothing */
    } else if (failed_expect > 0) {
        CHECK_EQ(failed_seen, failed_total);
    }
    CHECK(h->seen.count >= acked);
}

/* Arm rule `index`: op fails with `error` on its next calls [from_now, from_now + n). */
static void h_arm(struct harness *h, uint32_t index, enum sl_io_op op, int error, uint64_t from_now,
                  uint64_t n)
{
    uint64_t calls = atomic_load(&h->faults.calls[op]);
    h->faults.rules[index] = (struct sl_io_fault_rule){
        .op = op, .error = error, .first = calls + from_now, .last = calls + from_now + n - 1};
    if (h->faults.rules_count <= index) {
        h->faults.rules_count = index + 1;
    }
}

static void h_disarm(struct harness *h)
{
    h->faults.rules_count = 0;
}

static uint64_t counter(const struct harness *h, const _Atomic uint64_t *c)
{
    (void)h;
    return atomic_load(c);
}

#define C(h, name) counter((h), &sl_log_counters((h)->log)->name)

/* ---- the format ---- */

static uint8_t rec[SL_LOG_RECORD_BYTES_MAX + 64];

static void encode_id(uint8_t *out, uint64_t id, uint32_t count, uint64_t lsn, uint64_t seq)
{
    struct sl_batch b;
    make_batch(&b, id, count);
    sl_log_record_encode(out, &b, id % 2 ? SL_LOG_TCP : SL_LOG_UDP, NOW_US - 1, lsn, seq);
}

static void refresh_header_crc(uint8_t *p)
{
    sl_store_u32(p + 60, sl_crc32c(p, 60));
}

static void test_record_layout(void)
{
    CHECK_EQ(sl_log_record_bytes(1), 80);
    CHECK_EQ(sl_log_record_bytes(2), 88);
    CHECK_EQ(sl_log_record_bytes(3), 104);
    CHECK_EQ(sl_log_record_bytes(SL_BATCH_COUNT_MAX), SL_LOG_RECORD_BYTES_MAX);
    memset(rec, 0xAA, sizeof rec);
    encode_id(rec, 77, 1, 0x0102030405060708ull, 0x1112131415161718ull);
    CHECK(memcmp(rec, "SLR1", 4) == 0);
    CHECK_EQ(sl_load_u32(rec + 4), 76); /* unpadded */
    CHECK_EQ_U64(sl_load_u64(rec + 8), 0x0102030405060708ull);
    CHECK_EQ_U64(sl_load_u64(rec + 16), 0x1112131415161718ull);
    CHECK_EQ((int64_t)sl_load_u64(rec + 24), NOW_US - 1);
    CHECK_EQ(sl_load_u64(rec + 32), 77);
    CHECK_EQ((int64_t)sl_load_u64(rec + 40), NOW_US + 77);
    CHECK_EQ(sl_load_u32(rec + 48), 77 % 7);
    CHECK_EQ(sl_load_u16(rec + 52), 1);
    CHECK_EQ(rec[54], SL_LOG_TCP);
    CHECK_EQ(rec[55], 1);
    CHECK_EQ(sl_load_u32(rec + 56), sl_crc32c(rec + 64, 12));
    CHECK_EQ(sl_load_u32(rec + 60), sl_crc32c(rec, 60));
    fill_readings(reading_bytes, 77, 1);
    CHECK(memcmp(rec + 64, reading_bytes, 12) == 0);
    CHECK(rec[76] == 0 && rec[77] == 0 && rec[78] == 0 && rec[79] == 0); /* padding zeroed */
    CHECK(rec[80] == 0xAA);                                              /* nothing beyond */

    struct sl_log_record r;
    CHECK_EQ(sl_log_record_decode(rec, 80, 0x1112131415161718ull, &r), 0);
    CHECK(r.lsn == 0x0102030405060708ull && r.segment_seq == 0x1112131415161718ull);
    CHECK(r.now_us == NOW_US - 1 && r.transport == SL_LOG_TCP && r.record_bytes == 80);
    CHECK(r.batch.header.version == 1 && r.batch.header.key_id == 0 && r.batch.header.flags == 1);
    CHECK(r.batch.header.count == 1 && r.batch.header.stream_id == 77 % 7);
    CHECK(r.batch.header.batch_seq == 77 && r.batch.header.base_time_us == NOW_US + 77);
    CHECK(r.batch.readings == rec + 64);

    /* The largest record round-trips too. */
    encode_id(rec, 78, SL_BATCH_COUNT_MAX, 5, 9);
    CHECK_EQ(sl_log_record_decode(rec, SL_LOG_RECORD_BYTES_MAX, 9, &r), 0);
    CHECK(r.batch.header.count == SL_BATCH_COUNT_MAX && r.record_bytes == SL_LOG_RECORD_BYTES_MAX);
    CHECK_EQ(sl_log_record_decode(rec, SL_LOG_RECORD_BYTES_MAX - 1, 9, &r), -SL_LOG_TRUNCATED);
}

static void test_record_errors(void)
{
    struct sl_log_record r;
    uint8_t zeros[64] = {0};
    CHECK_EQ(sl_log_record_decode(zeros, 64, 1, &r), -SL_LOG_END);
    CHECK_EQ(sl_log_record_decode(zeros, 10, 1, &r), -SL_LOG_END); /* a short zero remainder */
    CHECK_EQ(sl_log_record_decode(zeros, 0, 1, &r), -SL_LOG_END);
    encode_id(rec, 5, 3, 10, 2);
    CHECK_EQ(sl_log_record_decode(rec, 10, 2, &r), -SL_LOG_TRUNCATED);
    CHECK_EQ(sl_log_record_decode(rec, 63, 2, &r), -SL_LOG_TRUNCATED);
    CHECK_EQ(sl_log_record_decode(rec, 103, 2, &r), -SL_LOG_TRUNCATED);
    CHECK_EQ(sl_log_record_decode(rec, 104, 2, &r), 0);
    CHECK_EQ(sl_log_record_decode(rec, 104, 3, &r), -SL_LOG_STALE);
    rec[0] = 'X';
    CHECK_EQ(sl_log_record_decode(rec, 104, 2, &r), -SL_LOG_BAD_MAGIC);
    rec[0] = 'S';
    rec[9] ^= 0x04; /* the lsn: the header CRC catches it */
    CHECK_EQ(sl_log_record_decode(rec, 104, 2, &r), -SL_LOG_BAD_HEADER_CRC);
    rec[9] ^= 0x04;
    rec[64 + 13] ^= 0x80; /* a reading */
    CHECK_EQ(sl_log_record_decode(rec, 104, 2, &r), -SL_LOG_BAD_PAYLOAD_CRC);
    rec[64 + 13] ^= 0x80;
    sl_store_u32(rec + 4, 64 + 12 * 3 + 1); /* length disagrees with count */
    refresh_header_crc(rec);
    CHECK_EQ(sl_log_record_decode(rec, 104, 2, &r), -SL_LOG_BAD_LENGTH);
    sl_store_u32(rec + 4, 64);
    sl_store_u16(rec + 52, 0); /* count 0 */
    refresh_header_crc(rec);
    CHECK_EQ(sl_log_record_decode(rec, 104, 2, &r), -SL_LOG_BAD_LENGTH);
    /* A header CRC error wins over what it covers. */
    sl_store_u16(rec + 52, 3);
    CHECK_EQ(sl_log_record_decode(rec, 104, 2, &r), -SL_LOG_BAD_HEADER_CRC);
}

static void test_segment_header(void)
{
    uint8_t b[80];
    memset(b, 0xEE, sizeof b);
    struct sl_log_segment_header h = {.segment_seq = 0xA1A2A3A4A5A6A7A8ull,
                                      .first_lsn = 42,
                                      .segment_bytes = SEG_BYTES,
                                      .created_us = -5};
    sl_log_segment_header_encode(b, &h);
    CHECK(memcmp(b, "SLUICELG", 8) == 0);
    CHECK_EQ(sl_load_u32(b + 8), 1);
    CHECK_EQ(sl_load_u32(b + 12), 0);
    CHECK_EQ_U64(sl_load_u64(b + 16), 0xA1A2A3A4A5A6A7A8ull);
    CHECK_EQ(sl_load_u64(b + 24), 42);
    CHECK_EQ(sl_load_u64(b + 32), SEG_BYTES);
    CHECK_EQ((int64_t)sl_load_u64(b + 40), -5);
    uint8_t z[12] = {0};
    CHECK(memcmp(b + 48, z, 12) == 0);
    CHECK_EQ(sl_load_u32(b + 60), sl_crc32c(b, 60));
    CHECK(b[64] == 0xEE);
    struct sl_log_segment_header d;
    CHECK_EQ(sl_log_segment_header_decode(b, 64, &d), 0);
    CHECK(d.segment_seq == h.segment_seq && d.first_lsn == 42 && d.segment_bytes == SEG_BYTES &&
          d.created_us == -5);
    CHECK_EQ(sl_log_segment_header_decode(b, 63, &d), -EINVAL);
    b[20] ^= 1;
    CHECK_EQ(sl_log_segment_header_decode(b, 64, &d), -EINVAL); /* CRC */
    b[20] ^= 1;
    sl_store_u32(b + 8, 2);
    sl_store_u32(b + 60, sl_crc32c(b, 60));
    CHECK_EQ(sl_log_segment_header_decode(b, 64, &d), -EINVAL); /* version */
    sl_store_u32(b + 8, 1);
    b[0] = 's';
    sl_store_u32(b + 60, sl_crc32c(b, 60));
    CHECK_EQ(sl_log_segment_header_decode(b, 64, &d), -EINVAL); /* magic */
}

/* ---- the scanner, on hand-built segments ---- */

#define SEGBUF_BYTES (256u << 10)
static uint8_t segbuf[SEGBUF_BYTES];
static struct seen scan_seen;

struct builder {
    uint8_t *buf;
    size_t len;
    size_t off;
    uint64_t seq;
    size_t offs[1024]; /* where each record starts */
    uint64_t ids[1024];
    uint32_t count;
};

static void build_begin(struct builder *b, size_t len, uint64_t seq)
{
    memset(segbuf, 0, len);
    b->buf = segbuf;
    b->len = len;
    b->off = SL_LOG_SEGMENT_HEADER_BYTES;
    b->seq = seq;
    b->count = 0;
    struct sl_log_segment_header h = {.segment_seq = seq, .first_lsn = 1, .segment_bytes = len};
    sl_log_segment_header_encode(segbuf, &h);
}

/* Add the record of `id` with `lsn` (and a foreign segment_seq when rec_seq != 0). */
static size_t build_add(struct builder *b, uint64_t id, uint64_t lsn, uint64_t rec_seq)
{
    uint32_t count = count_of(id);
    SL_ASSERT(b->off + sl_log_record_bytes(count) <= b->len);
    encode_id(b->buf + b->off, id, count, lsn, rec_seq != 0 ? rec_seq : b->seq);
    size_t at = b->off;
    b->offs[b->count] = at;
    b->ids[b->count++] = id;
    b->off += sl_log_record_bytes(count);
    return at;
}

static void build_many(struct builder *b, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        build_add(b, 1000 + b->count, b->count + 1, 0);
    }
}

static int scan(const uint8_t *buf, size_t len, uint64_t min_lsn, struct sl_log_scan *sc)
{
    memset(&scan_seen, 0, offsetof(struct seen, check));
    int rc = sl_log_scan_segment(buf, len, min_lsn, collect, &scan_seen, sc);
    CHECK(scan_seen.bad == 0);
    CHECK_EQ(scan_seen.count, sc->records);
    return rc;
}

static void test_scan_clean(void)
{
    struct builder b;
    struct sl_log_scan sc;
    build_begin(&b, SEGBUF_BYTES, 7);
    CHECK_EQ(scan(b.buf, b.len, 0, &sc), 0); /* an empty segment */
    CHECK(sc.records == 0 && sc.end_offset == 64 && sc.tail_error == SL_LOG_END &&
          sc.tail_bytes == 0);
    build_many(&b, 40);
    CHECK_EQ(scan(b.buf, b.len, 0, &sc), 0);
    CHECK_EQ(sc.records, 40);
    CHECK_EQ(sc.last_lsn, 40);
    CHECK_EQ(sc.end_offset, b.off);
    CHECK(sc.tail_error == SL_LOG_END && sc.tail_bytes == 0 && sc.corrupt_records == 0);
    uint64_t readings = 0;
    for (uint32_t i = 0; i < 40; i++) {
        readings += count_of(b.ids[i]);
        CHECK(scan_seen.ids[i] == b.ids[i] && scan_seen.lsns[i] == i + 1);
    }
    CHECK_EQ(sc.readings, readings);
    /* The data ends exactly at the end of the buffer, or less than a header short of it. */
    CHECK_EQ(scan(b.buf, b.off, 0, &sc), 0);
    CHECK(sc.records == 40 && sc.tail_error == SL_LOG_END && sc.tail_bytes == 0);
    CHECK_EQ(scan(b.buf, b.off + 24, 0, &sc), 0);
    CHECK(sc.records == 40 && sc.tail_error == SL_LOG_END && sc.tail_bytes == 0);
    /* min_lsn: records at or below it are not visited, and not damage. */
    CHECK_EQ(scan(b.buf, b.len, 30, &sc), 0);
    CHECK(sc.records == 10 && scan_seen.lsns[0] == 31 && sc.corrupt_records == 0 &&
          sc.tail_bytes == 0);
    CHECK_EQ(sc.end_offset, b.off);
    /* A bad segment header: nothing visited. */
    b.buf[3] ^= 1;
    CHECK_EQ(scan(b.buf, b.len, 0, &sc), -EINVAL);
    CHECK_EQ(sc.records, 0);
    CHECK_EQ(scan(b.buf, 10, 0, &sc), -EINVAL);
}

static void test_scan_torn(void)
{
    struct builder b;
    struct sl_log_scan sc;
    build_begin(&b, SEGBUF_BYTES, 3);
    build_many(&b, 30);
    size_t last = b.offs[29];
    /* Cut at every length through the last record: the first 29 survive, the rest is a torn tail.
     */
    for (size_t cut = last + 1; cut < b.off; cut++) {
        CHECK_EQ(scan(b.buf, cut, 0, &sc), 0);
        CHECK_EQ(sc.records, 29);
        CHECK_EQ(sc.end_offset, last);
        /* Up to the first zero remainder: a cut header may end in zero bytes (a stream id 0). */
        CHECK(sc.tail_bytes + 8 > cut - last && sc.tail_bytes <= cut - last);
        CHECK_EQ(sc.tail_error, SL_LOG_TRUNCATED);
    }
    /* Truncation anywhere: exactly the records wholly before the cut, never a crash. */
    for (size_t cut = 0; cut <= b.off; cut += 7) {
        int rc = scan(b.buf, cut, 0, &sc);
        uint32_t whole = 0;
        while (whole < b.count &&
               b.offs[whole] + sl_log_record_bytes(count_of(b.ids[whole])) <= cut) {
            whole++;
        }
        CHECK_EQ(rc, cut < 64 ? -EINVAL : 0);
        CHECK_EQ(sc.records, cut < 64 ? 0 : whole);
    }
    /* A half-written last record followed by zeros: cut at the last whole record. */
    size_t zero_from = last + 64 + 6 * count_of(b.ids[29]);
    memset(b.buf + zero_from, 0, b.len - zero_from);
    CHECK_EQ(scan(b.buf, b.len, 0, &sc), 0);
    CHECK(sc.records == 29 && sc.end_offset == last && sc.tail_error == SL_LOG_BAD_PAYLOAD_CRC);
    CHECK_EQ(sc.tail_bytes, sl_align_up(zero_from, 8) - last); /* up to the first zero header */
    CHECK_EQ(sc.corrupt_records, 0);
    /* Garbage after the last record, then zeros. */
    build_begin(&b, SEGBUF_BYTES, 3);
    build_many(&b, 10);
    uint64_t seed = 99;
    for (size_t i = 0; i < 200; i++) {
        b.buf[b.off + i] = (uint8_t)(tl_rand(&seed) | 1);
    }
    CHECK_EQ(scan(b.buf, b.len, 0, &sc), 0);
    CHECK(sc.records == 10 && sc.end_offset == b.off && sc.tail_error == SL_LOG_BAD_MAGIC);
    CHECK_EQ(sc.tail_bytes, 200); /* up to the first zero header */
}

static void test_scan_middle_damage(void)
{
    struct builder b;
    struct sl_log_scan sc;
    /* A bit flip in a middle record's payload: skipped and counted; later records kept. */
    build_begin(&b, SEGBUF_BYTES, 4);
    build_many(&b, 50);
    size_t at = b.offs[20];
    uint32_t bytes20 = sl_log_record_bytes(count_of(b.ids[20]));
    b.buf[at + 64 + 5] ^= 0x10;
    CHECK_EQ(scan(b.buf, b.len, 0, &sc), 0);
    CHECK_EQ(sc.records, 49);
    CHECK(!seen_has(&scan_seen, b.ids[20]) && seen_has(&scan_seen, b.ids[21]) &&
          seen_has(&scan_seen, b.ids[49]));
    CHECK_EQ(sc.corrupt_records, 1);
    CHECK_EQ(sc.corrupt_bytes, bytes20);
    CHECK(sc.tail_error == SL_LOG_END && sc.tail_bytes == 0 && sc.end_offset == b.off);
    b.buf[at + 64 + 5] ^= 0x10;
    /* The same in the header (the lsn field). */
    b.buf[at + 8] ^= 0xFF;
    CHECK_EQ(scan(b.buf, b.len, 0, &sc), 0);
    CHECK(sc.records == 49 && sc.corrupt_records == 1 && sc.corrupt_bytes == bytes20);
    b.buf[at + 8] ^= 0xFF;
    /* Two damaged records apart: two regions. */
    b.buf[b.offs[10] + 70] ^= 1;
    b.buf[b.offs[30] + 70] ^= 1;
    CHECK_EQ(scan(b.buf, b.len, 0, &sc), 0);
    CHECK(sc.records == 48 && sc.corrupt_records == 2);
    b.buf[b.offs[10] + 70] ^= 1;
    b.buf[b.offs[30] + 70] ^= 1;
    /* A zeroed 512-byte sector in the middle: the records it touches go, the rest stay. */
    size_t sector = (b.offs[25] / 512 + 1) * 512;
    memset(b.buf + sector, 0, 512);
    CHECK_EQ(scan(b.buf, b.len, 0, &sc), 0);
    uint32_t touched = 0;
    for (uint32_t i = 0; i < b.count; i++) {
        size_t end = b.offs[i] + sl_log_record_bytes(count_of(b.ids[i]));
        bool hit = b.offs[i] < sector + 512 && end > sector;
        touched += hit;
        CHECK(seen_has(&scan_seen, b.ids[i]) == !hit);
    }
    CHECK(touched >= 1);
    CHECK_EQ(sc.records, 50 - touched);
    CHECK_EQ(sc.corrupt_records, 1);
    CHECK(sc.tail_error == SL_LOG_END && sc.tail_bytes == 0);
}

static void test_scan_stale_and_order(void)
{
    struct builder b;
    struct sl_log_scan sc;
    /* A recycled file: its old records (segment 5) after the new ones (segment 6). */
    build_begin(&b, SEGBUF_BYTES, 5);
    build_many(&b, 60);
    struct sl_log_segment_header h = {
        .segment_seq = 6, .first_lsn = 100, .segment_bytes = SEGBUF_BYTES};
    sl_log_segment_header_encode(b.buf, &h);
    CHECK_EQ(scan(b.buf, b.len, 0, &sc), 0); /* every old record is stale: none visited */
    CHECK(sc.records == 0 && sc.end_offset == 64 && sc.tail_error == SL_LOG_STALE &&
          sc.tail_bytes == 0);
    /* New records over the start, with the end marker the writer puts after every commit. */
    size_t off = 64;
    for (uint64_t lsn = 100; lsn < 105; lsn++) {
        encode_id(b.buf + off, 5000 + lsn, count_of(5000 + lsn), lsn, 6);
        off += sl_log_record_bytes(count_of(5000 + lsn));
    }
    memset(b.buf + off, 0, 64);
    CHECK_EQ(scan(b.buf, b.len, 0, &sc), 0);
    CHECK(sc.records == 5 && sc.last_lsn == 104 && sc.end_offset == off);
    CHECK(sc.tail_error == SL_LOG_END && sc.tail_bytes == 0 && sc.corrupt_records == 0);
    /* Without the marker the stale data right after is still no damage when a stale record starts
     * there. */
    build_begin(&b, SEGBUF_BYTES, 5);
    build_many(&b, 20);
    sl_log_segment_header_encode(b.buf, &h);
    encode_id(b.buf + 64, 1000, count_of(1000), 100, 6); /* same size as the old first record */
    CHECK_EQ(scan(b.buf, b.len, 0, &sc), 0);
    CHECK(sc.records == 1 && sc.tail_error == SL_LOG_STALE && sc.tail_bytes == 0);

    /* lsns going backwards: the intact copy is skipped whole, not counted as damage. */
    build_begin(&b, SEGBUF_BYTES, 8);
    build_add(&b, 1, 1, 0);
    build_add(&b, 2, 2, 0);
    build_add(&b, 3, 3, 0);
    build_add(&b, 4, 2, 0); /* backwards */
    build_add(&b, 5, 3, 0); /* equal to the last visited */
    build_add(&b, 6, 4, 0);
    CHECK_EQ(scan(b.buf, b.len, 0, &sc), 0);
    CHECK(sc.records == 4 && sc.corrupt_records == 0 && sc.tail_bytes == 0);
    CHECK(seen_has(&scan_seen, 6) && !seen_has(&scan_seen, 4) && !seen_has(&scan_seen, 5));
    CHECK_EQ(sc.end_offset, b.off);
    /* A copy at the very end moves end_offset past it: appending never overwrites an intact record.
     */
    build_begin(&b, SEGBUF_BYTES, 8);
    build_add(&b, 1, 1, 0);
    build_add(&b, 2, 1, 0);
    CHECK_EQ(scan(b.buf, b.len, 0, &sc), 0);
    CHECK(sc.records == 1 && sc.end_offset == b.off && sc.last_lsn == 1);
}

static int stop_at_two(void *ctx, const struct sl_log_record *r)
{
    (void)r;
    return ++*(int *)ctx == 2;
}

static void test_scan_stop_and_hostile(void)
{
    struct builder b;
    struct sl_log_scan sc;
    build_begin(&b, SEGBUF_BYTES, 2);
    build_many(&b, 10);
    int visits = 0;
    CHECK_EQ(sl_log_scan_segment(b.buf, b.len, 0, stop_at_two, &visits, &sc), 0);
    CHECK(visits == 2 && sc.records == 2 && sc.last_lsn == 2);
    /*
     * Hostile: a valid header every 64 bytes, each claiming 65,535 readings
     * whose CRC never matches. Unbounded, that is 786 KB of CRC per 64 bytes
     * (50 GB here); the cap of 16 x len keeps it to 64 MB.
     */
    size_t len = 4u << 20;
    uint8_t *buf = calloc(1, len);
    struct sl_log_segment_header h = {.segment_seq = 9, .segment_bytes = len};
    sl_log_segment_header_encode(buf, &h);
    for (size_t off = 64, lsn = 1; off + 64 <= len; off += 64, lsn++) {
        uint8_t *p = buf + off;
        memcpy(p, "SLR1", 4);
        sl_store_u32(p + 4, 64 + 12 * 65535);
        sl_store_u64(p + 8, lsn);
        sl_store_u64(p + 16, 9);
        sl_store_u16(p + 52, 65535);
        refresh_header_crc(p);
    }
    int64_t t0 = sl_clock_monotonic_ns();
    CHECK_EQ(sl_log_scan_segment(buf, len, 0, NULL, NULL, &sc), 0);
    double seconds = (double)(sl_clock_monotonic_ns() - t0) / 1e9;
    CHECK(sc.records == 0 && sc.tail_bytes > 0 && sc.end_offset == 64);
    printf("test_log: hostile 4 MiB segment scanned in %.3f s (CRC work capped)\n", seconds);
    free(buf);
}

/* ---- the writer ---- */

static bool contains(const char *haystack, const char *needle)
{
    return strstr(haystack, needle) != NULL;
}

static void test_config(void)
{
    struct sl_log_config c;
    const char *why = NULL;
    sl_log_config_default(&c);
    CHECK(c.sync == SL_SYNC_ALWAYS && c.segment_bytes == SL_LOG_SEGMENT_BYTES_DEFAULT &&
          c.io == &sl_io_posix);
    CHECK(sl_log_config_check(&c, &why) == -EINVAL && why != NULL); /* no directory */
    snprintf(c.dir, sizeof c.dir, "/tmp/x");
    CHECK_EQ(sl_log_config_check(&c, &why), 0);
    c.segment_bytes = SL_LOG_SEGMENT_BYTES_MIN - 4096;
    CHECK_EQ(sl_log_config_check(&c, &why), -EINVAL);
    c.segment_bytes = SL_LOG_SEGMENT_BYTES_MIN;
    CHECK_EQ(sl_log_config_check(&c, &why), 0);
    c.segment_bytes = SL_LOG_SEGMENT_BYTES_MIN + 8;
    CHECK_EQ(sl_log_config_check(&c, &why), -EINVAL);
    c.segment_bytes = SL_LOG_SEGMENT_BYTES_MAX;
    CHECK_EQ(sl_log_config_check(&c, &why), -EINVAL); /* bytes_max holds only one */
    c.bytes_max = 2 * SL_LOG_SEGMENT_BYTES_MAX;
    CHECK_EQ(sl_log_config_check(&c, &why), 0);
    c.bytes_max = 2 * c.segment_bytes - 1;
    CHECK_EQ(sl_log_config_check(&c, &why), -EINVAL);
    c.bytes_max = 2 * c.segment_bytes;
    CHECK_EQ(sl_log_config_check(&c, &why), 0);
    c.bytes_max = SL_LOG_BYTES_MAX_MAX + 1;
    CHECK_EQ(sl_log_config_check(&c, &why), -EINVAL);
    c.bytes_max = SL_LOG_BYTES_MAX_DEFAULT;
    c.buffer_bytes = SL_LOG_BUFFER_BYTES_MIN - 1;
    CHECK_EQ(sl_log_config_check(&c, &why), -EINVAL);
    c.buffer_bytes = SL_LOG_BUFFER_BYTES_MAX + 1;
    CHECK_EQ(sl_log_config_check(&c, &why), -EINVAL);
    c.buffer_bytes = SL_LOG_BUFFER_BYTES_DEFAULT;
    c.sync = (enum sl_sync_mode)3;
    CHECK_EQ(sl_log_config_check(&c, &why), -EINVAL);
    c.sync = SL_SYNC_NEVER;
    c.sync_interval_ms = SL_LOG_SYNC_INTERVAL_MS_MAX + 1;
    CHECK_EQ(sl_log_config_check(&c, &why), -EINVAL);
    CHECK(strcmp(sl_sync_mode_name(SL_SYNC_ALWAYS), "always") == 0 &&
          strcmp(sl_sync_mode_name(SL_SYNC_BATCH), "batch") == 0 &&
          strcmp(sl_sync_mode_name(SL_SYNC_NEVER), "never") == 0);
}

static void test_roundtrip(enum sl_sync_mode mode, const char *name)
{
    struct harness *h = &H;
    h_config(h, name, mode);
    if (!h_open(h)) {
        return;
    }
    char reason[256];
    CHECK(h->recovery.segments == 0 && h->recovery.records == 0);
    CHECK(C(h, segments_created) == 1 && sl_log_next_lsn(h->log) == 1);
    CHECK_EQ(sl_log_health(h->log, reason, sizeof reason), 0);
    uint64_t bytes = 0;
    for (uint32_t g = 1; g <= 40; g++) {
        for (uint64_t id = h->next_id; id < h->next_id + g; id++) {
            bytes += sl_log_record_bytes(count_of(id));
        }
        CHECK_EQ(h_put(h, g), 0);
        h->now_ns += 30000000; /* 30 ms: batch mode syncs every fourth commit or so */
        sl_log_tick(h->log, h->now_ns);
    }
    uint64_t n = h->next_id - 1;
    CHECK_EQ(n, 820);
    CHECK_EQ(sl_log_next_lsn(h->log), n + 1);
    CHECK_EQ(C(h, records_written), n);
    CHECK_EQ(C(h, commits), 40);
    CHECK_EQ(C(h, bytes_written), bytes);
    CHECK_EQ(sl_log_bytes_since(h->log, true), bytes);
    CHECK_EQ(sl_log_bytes_since(h->log, false), 0);
    if (mode == SL_SYNC_ALWAYS) {
        CHECK_EQ(C(h, durable_lsn), n);
        CHECK_EQ(C(h, syncs), 41); /* the header, then one a commit */
    } else if (mode == SL_SYNC_NEVER) {
        CHECK_EQ(C(h, durable_lsn), 0);
        CHECK_EQ(C(h, syncs), 1);
    } else {
        CHECK(C(h, syncs) > 5 && C(h, syncs) < 40);
    }
    CHECK(C(h, write_errors) == 0 && C(h, sync_errors) == 0 && C(h, records_failed) == 0);
    if (!h_reopen(h)) {
        return;
    }
    CHECK_EQ(h->seen.count, n);
    CHECK(h->recovery.records == n && h->recovery.segments == 1 && h->recovery.segments_bad == 0);
    CHECK(h->recovery.corrupt_records == 0 && h->recovery.torn_tail_bytes == 0);
    CHECK(h->recovery.last_lsn == n && sl_log_next_lsn(h->log) == n + 1);
    CHECK(h->recovery.bytes == SEG_BYTES && h->recovery.seconds >= 0);
    h_verify(h, -1);
    /* It resumed in the same segment: no new file; more records land after the old ones. */
    CHECK_EQ(C(h, segments_created), 0);
    CHECK_EQ(C(h, durable_lsn), n);
    CHECK_EQ(h_put(h, 25), 0);
    if (h_reopen(h)) {
        CHECK(h->seen.count == n + 25 && h->recovery.segments == 1 &&
              h->recovery.torn_tail_bytes == 0);
        h_verify(h, -1);
    }
    CHECK_EQ(count_files(h->dir), 1);
    h_close(h);
}

static void test_rotation(void)
{
    struct harness *h = &H;
    h_config(h, "rotation", SL_SYNC_BATCH);
    if (!h_open(h)) {
        return;
    }
    h_fill(h, 5500, 100);
    CHECK(C(h, segments_created) >= 3);
    uint64_t segments = C(h, segments_created);
    CHECK_EQ(C(h, bytes_on_disk), segments * SEG_BYTES);
    CHECK_EQ(count_files(h->dir), segments);
    if (h_reopen(h)) {
        CHECK_EQ(h->recovery.segments, segments);
        CHECK_EQ(h->seen.count, h->next_id - 1);
        CHECK(h->recovery.corrupt_records == 0 && h->recovery.torn_tail_bytes == 0);
        h_verify(h, -1);
    }
    h_close(h);
}

/*
 * Batch and never modes start the writeback of what they wrote, a MiB at a
 * time, contiguously from each segment's header, never past what was
 * written; always mode (which syncs every commit) never does.
 */
static void test_writeback(enum sl_sync_mode mode, const char *name)
{
    struct harness *h = &H;
    h_config(h, name, mode);
    h->config.segment_bytes = 3 * SEG_BYTES; /* several writebacks a segment */
    if (!h_open(h)) {
        return;
    }
    h_fill(h, 25000, 100);
    uint64_t written = C(h, bytes_written);
    CHECK(C(h, segments_created) >= 3);
    CHECK_EQ(h->spy.writeback_errors, 0);
    CHECK_EQ(h->spy.violations, 0);
    if (mode == SL_SYNC_ALWAYS) {
        CHECK_EQ(h->spy.writebacks, 0);
    } else {
        /* Everything but at most a MiB a segment (each segment's unflushed tail) was handed over. */
        CHECK(h->spy.writebacks >= 3);
        CHECK(h->spy.writeback_bytes <= written);
        CHECK(h->spy.writeback_bytes + C(h, segments_created) * SL_LOG_WRITEBACK_BYTES >= written);
    }
    h_close(h);
}

static int append_id(struct harness *h, uint64_t id, uint32_t count)
{
    struct sl_batch b;
    make_batch(&b, id, count);
    uint64_t lsn;
    const struct sl_log_record *r;
    int rc = sl_log_append(h->log, &b, id % 2 ? SL_LOG_TCP : SL_LOG_UDP, NOW_US - 1, &lsn, &r);
    if (rc == 0) {
        h->lsn_of[id] = lsn;
        h->state[id] = ST_ACKED; /* committed below without error */
        if (id >= h->next_id) {
            h->next_id = id + 1;
        }
    }
    return rc;
}

/* -ENOBUFS when the buffer or the segment is full with records pending; after a commit it fits. */
static void test_enobufs(void)
{
    struct harness *h = &H;
    h_config(h, "enobufs", SL_SYNC_ALWAYS);
    if (!h_open(h)) {
        return;
    }
    uint64_t applicable;
    CHECK_EQ(append_id(h, 1, SL_BATCH_COUNT_MAX), 0);
    CHECK_EQ(append_id(h, 2, SL_BATCH_COUNT_MAX), 0);
    CHECK_EQ(append_id(h, 3, SL_BATCH_COUNT_MAX), -ENOBUFS); /* the 2 MiB buffer */
    CHECK_EQ(sl_log_commit(h->log, h->now_ns, &applicable), 0);
    CHECK_EQ(applicable, 2);
    CHECK_EQ(append_id(h, 3, 1), 0);
    CHECK_EQ(append_id(h, 4, SL_BATCH_COUNT_MAX),
             -ENOBUFS); /* the segment, with a record pending */
    CHECK_EQ(sl_log_commit(h->log, h->now_ns, &applicable), 0);
    CHECK_EQ(applicable, 3);
    CHECK_EQ(append_id(h, 4, SL_BATCH_COUNT_MAX), 0); /* nothing pending: a new segment */
    CHECK_EQ(C(h, segments_created), 2);
    CHECK_EQ(sl_log_commit(h->log, h->now_ns, &applicable), 0);
    CHECK_EQ(applicable, 4);
    CHECK_EQ(sl_log_commit(h->log, h->now_ns, &applicable), 0); /* nothing to commit */
    CHECK_EQ(applicable, 4);
    if (h_reopen(h)) {
        CHECK(h->seen.count == 4 && h->recovery.segments == 2);
        h_verify(h, -1);
    }
    h_close(h);
}

/* Recycling at bytes_max: the oldest file becomes the newest; dropped records are counted. */
static void test_recycling(void)
{
    struct harness *h = &H;
    h_config(h, "recycling", SL_SYNC_BATCH);
    h->config.bytes_max = 3 * SEG_BYTES;
    if (!h_open(h)) {
        return;
    }
    const uint64_t checkpoint = 2000;
    sl_log_set_checkpoint_lsn(h->log, checkpoint);
    h_fill(h, 9500, 50);
    uint64_t recycled = C(h, segments_recycled), recycled_records = C(h, recycled_records);
    CHECK(recycled >= 2);
    CHECK_EQ(count_files(h->dir), 3);
    CHECK_EQ(C(h, bytes_on_disk), 3 * SEG_BYTES);
    if (!h_reopen(h)) {
        return;
    }
    CHECK(h->recovery.segments == 3 && h->seen.count > 0);
    CHECK(h->recovery.corrupt_records == 0 && h->recovery.torn_tail_bytes == 0);
    /* Exactly the newest records survive, contiguous up to the last one. */
    uint64_t first = h->seen.ids[0];
    CHECK_EQ(h->seen.count, h->next_id - first);
    for (uint32_t i = 0; i < h->seen.count; i++) {
        CHECK_EQ(h->seen.ids[i], first + i);
        CHECK_EQ(h->seen.lsns[i], first + i); /* no failed commits: lsn == id */
    }
    CHECK(first > checkpoint);
    CHECK_EQ(recycled_records, first - checkpoint); /* dropped lsns >= the checkpoint lsn */
    h_close(h);
}

/* bytes_max lowered below what is on disk: all replayed, the oldest beyond the table deleted. */
static void test_shrink(void)
{
    struct harness *h = &H;
    h_config(h, "shrink", SL_SYNC_NEVER);
    if (!h_open(h)) {
        return;
    }
    h_fill(h, 9000, 100);
    uint64_t files = count_files(h->dir);
    CHECK(files >= 4);
    h_close(h);
    h->config.bytes_max = 2 * SEG_BYTES; /* a table of 4 entries: 3 kept at start-up */
    if (h_reopen(h)) {
        CHECK_EQ(h->recovery.segments, files);
        CHECK_EQ(h->seen.count, h->next_id - 1);
        h_verify(h, -1);
        CHECK_EQ(C(h, segments_recycled), files - 3);
        CHECK_EQ(count_files(h->dir), 3);
        h_fill(h, 3000, 100); /* rotating now brings the disk back under bytes_max */
        CHECK_EQ(count_files(h->dir), 2);
        CHECK_EQ(C(h, bytes_on_disk), 2 * SEG_BYTES);
    }
    h_close(h);
}

/* A torn tail is cut; appending resumes over it and the next start finds a clean end. */
static void test_torn_resume(void)
{
    struct harness *h = &H;
    h_config(h, "torn", SL_SYNC_ALWAYS);
    if (!h_open(h)) {
        return;
    }
    CHECK_EQ(h_put(h, 50), 0);
    h_close(h);
    char path[256];
    snprintf(path, sizeof path, "%.200s/log-0000000000000001.seg", h->dir);
    int fd = open(path, O_RDWR);
    static uint8_t file[SEG_BYTES];
    CHECK(fd >= 0 && pread(fd, file, sizeof file, 0) == (ssize_t)sizeof file);
    struct sl_log_scan sc;
    CHECK_EQ(sl_log_scan_segment(file, sizeof file, 0, NULL, NULL, &sc), 0);
    uint8_t garbage[300];
    uint64_t seed = 5;
    for (size_t i = 0; i < sizeof garbage; i++) {
        garbage[i] = (uint8_t)(tl_rand(&seed) | 0x80);
    }
    CHECK(pwrite(fd, garbage, sizeof garbage, (off_t)sc.end_offset) == (ssize_t)sizeof garbage);
    close(fd);
    if (h_reopen(h)) {
        CHECK_EQ(h->recovery.torn_tail_bytes, 304);
        CHECK_EQ(C(h, torn_tail_bytes), 304);
        CHECK_EQ(h->recovery.corrupt_records, 0);
        CHECK_EQ(h->seen.count, 50);
        CHECK_EQ(h_put(h, 3), 0);
    }
    if (h_reopen(h)) {
        CHECK(h->seen.count == 53 && h->recovery.torn_tail_bytes == 0 && h->recovery.segments == 1);
        h_verify(h, -1);
    }
    h_close(h);
}

/* A file with a bad header is counted, skipped and left alone. */
static void test_bad_header_file(void)
{
    struct harness *h = &H;
    h_config(h, "badheader", SL_SYNC_ALWAYS);
    if (!h_open(h)) {
        return;
    }
    CHECK_EQ(h_put(h, 10), 0);
    h_close(h);
    char path[256];
    snprintf(path, sizeof path, "%.200s/log-00000000000000ff.seg", h->dir);
    int fd = open(path, O_CREAT | O_WRONLY, 0644);
    CHECK(fd >= 0 &&
          write(fd, "not a segment header, not at all ......................... x", 60) == 60);
    close(fd);
    if (h_reopen(h)) {
        CHECK(h->recovery.segments == 2 && h->recovery.segments_bad == 1 && h->seen.count == 10);
        CHECK(access(path, F_OK) == 0);
        CHECK_EQ(h_put(h, 1), 0);
    }
    h_close(h);
}

/* A crash between a recycle's rename and its header rewrite: the file is still the old segment. */
static void test_crash_mid_recycle(void)
{
    struct harness *h = &H;
    h_config(h, "midrecycle", SL_SYNC_NEVER);
    h->config.bytes_max = 3 * SEG_BYTES;
    if (!h_open(h)) {
        return;
    }
    for (uint32_t round = 0; round < 1000 && C(h, segments_created) < 3; round++) {
        CHECK_EQ(h_put(h, 50), 0);
    }
    CHECK_EQ(C(h, segments_recycled), 0);
    h_close(h);
    char from[256], to[256];
    snprintf(from, sizeof from, "%.200s/log-0000000000000001.seg", h->dir);
    snprintf(to, sizeof to, "%.200s/log-0000000000000004.seg", h->dir);
    CHECK_EQ(rename(from, to), 0);
    if (!h_reopen(h)) {
        return;
    }
    CHECK(h->recovery.segments == 3 && h->recovery.corrupt_records == 0);
    CHECK_EQ(h->seen.count, h->next_id - 1); /* in order: the renamed file sorts by its header */
    h_verify(h, -1);
    h_fill(h, 4000, 50); /* recycling takes the renamed file first, under a fresh number */
    CHECK(C(h, segments_recycled) >= 1);
    CHECK_EQ(count_files(h->dir), 3);
    snprintf(to, sizeof to, "%.200s/log-0000000000000005.seg", h->dir);
    CHECK_EQ(access(to, F_OK), 0);
    if (h_reopen(h)) {
        CHECK_EQ(h->seen.ids[h->seen.count - 1], h->next_id - 1);
        CHECK_EQ(h->seen.count, h->next_id - h->seen.ids[0]);
    }
    h_close(h);
}

static int stop_visit(void *ctx, const struct sl_log_record *r)
{
    (void)ctx;
    return r->lsn == 3;
}

/* Start-up errors: an uncreatable directory, an unreadable segment, a visitor that stops. */
static void test_open_errors(void)
{
    struct harness *h = &H;
    h_config(h, "openerr", SL_SYNC_ALWAYS);
    if (!h_open(h)) {
        return;
    }
    CHECK_EQ(h_put(h, 5), 0);
    h_close(h);
    char err[256] = "";
    struct sl_plan plan;
    sl_plan_init(&plan);
    sl_log_plan(&h->config, &plan);
    struct sl_log_config c = h->config;
    snprintf(c.dir, sizeof c.dir, "%s/no/such/parent", root);
    CHECK(sl_arena_map(&h->arena, plan.total_bytes) == 0);
    CHECK(sl_log_open(&c, &h->arena, NULL, NULL, &h->recovery, err, sizeof err) == NULL);
    CHECK(contains(err, "cannot create") && contains(err, "No such file or directory"));
    sl_arena_unmap(&h->arena);
    c.segment_bytes = 1;
    CHECK(sl_arena_map(&h->arena, plan.total_bytes) == 0);
    CHECK(sl_log_open(&c, &h->arena, NULL, NULL, &h->recovery, err, sizeof err) == NULL);
    CHECK(contains(err, "segment bytes"));
    sl_arena_unmap(&h->arena);
    h_arm(h, 0, SL_IO_OP_OPEN, EIO, 1, 1);
    h->config.io = &h->spy.io;
    CHECK(sl_arena_map(&h->arena, plan.total_bytes) == 0);
    CHECK(sl_log_open(&h->config, &h->arena, NULL, NULL, &h->recovery, err, sizeof err) == NULL);
    CHECK(contains(err, "cannot read") && contains(err, "log-0000000000000001.seg"));
    sl_arena_unmap(&h->arena);
    h_disarm(h);
    CHECK(sl_arena_map(&h->arena, plan.total_bytes) == 0);
    CHECK(sl_log_open(&h->config, &h->arena, stop_visit, NULL, &h->recovery, err, sizeof err) ==
          NULL);
    CHECK(contains(err, "stopped by the visitor") && h->recovery.records == 3);
    sl_arena_unmap(&h->arena);
    if (h_reopen(h)) {
        CHECK_EQ(h->seen.count, 5);
    }
    h_close(h);
}

/* The append/commit/tick path allocates nothing, across rotation and recycling. */
static void test_no_alloc(void)
{
    struct harness *h = &H;
    h_config(h, "noalloc", SL_SYNC_BATCH);
    h->config.bytes_max = 2 * SEG_BYTES;
    if (!h_open(h)) {
        return;
    }
    CHECK(sl_alloc_counting_active());
    sl_alloc_track(SL_ALLOC_INGEST);
    uint64_t before = sl_alloc_count(SL_ALLOC_INGEST);
    h_fill(h, 8000, 64);
    uint64_t after = sl_alloc_count(SL_ALLOC_INGEST);
    sl_alloc_track(SL_ALLOC_UNTRACKED);
    CHECK_EQ(after - before, 0);
    CHECK(C(h, segments_recycled) >= 2);
    h_close(h);
}

/* ---- faults ---- */

static void remove_segment(const struct harness *h, uint64_t seq)
{
    char path[256];
    snprintf(path, sizeof path, "%.200s/log-%016llx.seg", h->dir, (unsigned long long)seq);
    CHECK_EQ(unlink(path), 0);
}

/* The spy can catch what it is there to catch. */
static void test_spy(void)
{
    struct spy *s = &H.spy;
    spy_init(s, &sl_io_posix);
    int fd = s->io.open(&s->io, root, O_RDONLY | O_DIRECTORY, 0);
    CHECK(fd >= 0);
    s->poisoned[fd] = true;
    CHECK_EQ(s->io.fdatasync(&s->io, fd), 0);
    CHECK_EQ(s->violations, 1);
    s->io.close(&s->io, fd);
}

/* sync=always, fdatasync fails: the commit's records are not applicable; a fresh segment follows.
 */
static void test_always_sync_fails(void)
{
    struct harness *h = &H;
    h_config(h, "always_sync", SL_SYNC_ALWAYS);
    if (!h_open(h)) {
        return;
    }
    CHECK_EQ(h_put(h, 5), 0);
    uint64_t last_ok = h->next_id - 1;
    h_arm(h, 0, SL_IO_OP_FDATASYNC, EIO, 1, 1);
    CHECK_EQ(h_put(h, 4), -EIO);
    for (uint64_t id = last_ok + 1; id < h->next_id; id++) {
        CHECK_EQ(h->state[id], ST_FAILED);
    }
    uint64_t failed_last_lsn = h->lsn_of[h->next_id - 1];
    CHECK(C(h, sync_errors) == 1 && C(h, segments_retired) == 1 && C(h, records_failed) == 4);
    CHECK(C(h, segments_created) == 2 && C(h, durable_lsn) == last_ok);
    CHECK_EQ(atomic_load(&sl_log_counters(h->log)->failed), 0);
    char reason[256];
    CHECK_EQ(sl_log_health(h->log, reason, sizeof reason), 0); /* it moved on: accepting writes */
    uint64_t next = h->next_id;
    CHECK_EQ(h_put(h, 6), 0);
    CHECK_EQ(h->lsn_of[next], failed_last_lsn + 1); /* lsns go on after the gap */
    CHECK_EQ(h_put(h, 6), 0);
    CHECK_EQ(h->spy.violations, 0);
    CHECK_EQ(h->spy.syncs_after_failure, 0);
    if (h_reopen(h)) {
        /* The injected error lost nothing: the failed commit's bytes are intact in the old file. */
        h_verify(h, 1);
        CHECK(h->recovery.segments == 2 && h->recovery.corrupt_records == 0);
    }
    h_close(h);
}

/* sync=always, pwrite fails outright: nothing of the commit reaches the file. */
static void test_always_write_fails(void)
{
    struct harness *h = &H;
    h_config(h, "always_write", SL_SYNC_ALWAYS);
    if (!h_open(h)) {
        return;
    }
    CHECK_EQ(h_put(h, 5), 0);
    h_arm(h, 0, SL_IO_OP_PWRITE, ENOSPC, 1, 1);
    CHECK_EQ(h_put(h, 4), -ENOSPC);
    CHECK(C(h, write_errors) == 1 && C(h, segments_retired) == 1 && C(h, records_failed) == 4);
    CHECK_EQ(h_put(h, 7), 0);
    CHECK_EQ(h->spy.violations, 0);
    if (h_reopen(h)) {
        h_verify(h, 0);
        CHECK_EQ(h->recovery.corrupt_records, 0);
    }
    h_close(h);
}

/*
 * sync=always, a short write then an error: the first half of the commit's
 * bytes are in the old file. Records wholly inside it are read back (never
 * acked: allowed), the one cut in two is damage in a closed segment.
 */
static void test_always_short_write(void)
{
    struct harness *h = &H;
    h_config(h, "always_short", SL_SYNC_ALWAYS);
    if (!h_open(h)) {
        return;
    }
    CHECK_EQ(h_put(h, 5), 0);
    /* A short write alone is retried to completion. */
    h_arm(h, 0, SL_IO_OP_PWRITE_SHORT, EIO, 1, 1);
    CHECK_EQ(h_put(h, 3), 0);
    CHECK_EQ(C(h, write_errors), 0);
    uint64_t first = h->next_id;
    uint64_t region = 64; /* the end marker */
    for (uint64_t id = first; id < first + 4; id++) {
        region += sl_log_record_bytes(count_of(id));
    }
    uint64_t half = region / 2, end = 0, whole = 0;
    bool cut_inside = false;
    for (uint64_t id = first; id < first + 4; id++) {
        uint64_t next_end = end + sl_log_record_bytes(count_of(id));
        whole += next_end <= half;
        cut_inside |= end < half && half < next_end;
        end = next_end;
    }
    h_arm(h, 0, SL_IO_OP_PWRITE_SHORT, EIO, 1, 1);
    h_arm(h, 1, SL_IO_OP_PWRITE, EIO, 2, 1);
    CHECK_EQ(h_put(h, 4), -EIO);
    CHECK(C(h, write_errors) == 1 && C(h, records_failed) == 4 && C(h, segments_retired) == 1);
    h_disarm(h);
    CHECK_EQ(h_put(h, 5), 0);
    CHECK_EQ(h->spy.violations, 0);
    if (h_reopen(h)) {
        h_verify(h, -1);
        for (uint64_t id = first; id < first + 4; id++) {
            CHECK_EQ(seen_has(&h->seen, id), id < first + whole);
        }
        CHECK_EQ(h->recovery.corrupt_records, cut_inside ? 1 : 0);
        CHECK_EQ(h->recovery.torn_tail_bytes, 0);
    }
    h_close(h);
}

/*
 * sync=batch, the periodic sync fails: the acked, unsynced records are
 * rewritten into a fresh segment and synced there, so nothing acked is at
 * risk, even with the old file gone. A second round fails the rescue's own
 * write too: the next fresh segment takes them.
 */
static void test_batch_sync_fails(void)
{
    struct harness *h = &H;
    h_config(h, "batch_sync", SL_SYNC_BATCH);
    if (!h_open(h)) {
        return;
    }
    CHECK_EQ(h_put(h, 10), 0);
    CHECK_EQ(h_put(h, 10), 0); /* no time passed: nothing synced since the header */
    CHECK_EQ(C(h, durable_lsn), 0);
    h_arm(h, 0, SL_IO_OP_FDATASYNC, EIO, 1, 1);
    h->now_ns += 200000000;
    sl_log_tick(h->log, h->now_ns);
    CHECK(C(h, sync_errors) == 1 && C(h, segments_retired) == 1 && C(h, segments_created) == 2);
    CHECK(C(h, records_failed) == 0 && C(h, acked_at_risk) == 0);
    CHECK_EQ(C(h, durable_lsn), 20);
    CHECK_EQ(atomic_load(&sl_log_counters(h->log)->failed), 0);
    CHECK_EQ(h_put(h, 10), 0);
    /* Round two: the periodic sync fails, then the rescue's write into the first fresh segment. */
    h_arm(h, 0, SL_IO_OP_FDATASYNC, EIO, 1, 1);
    h_arm(h, 1, SL_IO_OP_PWRITE, EIO, 2, 1); /* the fresh segment's header is pwrite +1 */
    h->now_ns += 200000000;
    sl_log_tick(h->log, h->now_ns);
    CHECK(C(h, sync_errors) == 2 && C(h, write_errors) == 1 && C(h, segments_retired) == 3);
    CHECK(C(h, segments_created) == 4 && C(h, acked_at_risk) == 0 && C(h, durable_lsn) == 30);
    h_disarm(h);
    CHECK_EQ(h_put(h, 10), 0);
    CHECK_EQ(h->spy.violations, 0);
    if (h_reopen(h)) {
        h_verify(h, -1);
        CHECK(h->seen.count == 40 && h->recovery.corrupt_records == 0 &&
              h->recovery.torn_tail_bytes == 0);
    }
    h_close(h);
    /*
     * What the failed syncs may have lost: all of segment 1 (never synced),
     * segment 2 beyond records 1..20 (synced there by the first rescue), all
     * of segment 3 (its write failed). The rescued copies must make up for it.
     */
    remove_segment(h, 1);
    remove_segment(h, 3);
    uint64_t synced_end = 64;
    for (uint64_t id = 1; id <= 20; id++) {
        synced_end += sl_log_record_bytes(count_of(id));
    }
    char path[256];
    snprintf(path, sizeof path, "%.200s/log-0000000000000002.seg", h->dir);
    CHECK_EQ(truncate(path, (off_t)synced_end), 0);
    if (h_reopen(h)) {
        h_verify(h, -1);
        CHECK_EQ(h->seen.count, 40);
    }
    h_close(h);
}

/* sync=batch, the sync a commit does fails: that commit's records are not applicable. */
static void test_batch_commit_sync_fails(void)
{
    struct harness *h = &H;
    h_config(h, "batch_commit", SL_SYNC_BATCH);
    if (!h_open(h)) {
        return;
    }
    CHECK_EQ(h_put(h, 10), 0);
    CHECK_EQ(h_put(h, 10), 0);
    h->now_ns += 200000000; /* the next commit syncs */
    h_arm(h, 0, SL_IO_OP_FDATASYNC, EIO, 1, 1);
    CHECK_EQ(h_put(h, 7), -EIO);
    CHECK(C(h, records_failed) == 7 && C(h, acked_at_risk) == 0 && C(h, durable_lsn) == 20);
    CHECK_EQ(h_put(h, 3), 0);
    CHECK_EQ(h->spy.violations, 0);
    h_close(h);
    remove_segment(h, 1);
    if (h_reopen(h)) {
        h_verify(h, 0); /* the failed commit was only in the removed file */
        CHECK_EQ(h->seen.count, 23);
    }
    h_close(h);
}

/*
 * sync=batch, the sync fails and no fresh segment can be had: the log is
 * failed (appends refused, health says why, the acked records at risk are
 * counted), retries once a second, and leaves the failed state by itself
 * when space returns, writing the kept records after all.
 */
static void test_failed_state(void)
{
    struct harness *h = &H;
    h_config(h, "failed", SL_SYNC_BATCH);
    if (!h_open(h)) {
        return;
    }
    CHECK_EQ(h_put(h, 8), 0);
    CHECK_EQ(h_put(h, 8), 0);
    h_arm(h, 0, SL_IO_OP_FDATASYNC, EIO, 1, 1);
    h_arm(h, 1, SL_IO_OP_FALLOCATE, ENOSPC, 1, 2);
    h->now_ns += 200000000;
    sl_log_tick(h->log, h->now_ns);
    char reason[256] = "";
    CHECK(sl_log_health(h->log, reason, sizeof reason) != 0);
    CHECK(contains(reason, "log: fdatasync failed on log-0000000000000001.seg"));
    CHECK(contains(reason, "Input/output error") && contains(reason, "No space left on device"));
    CHECK(contains(reason, "retrying every second"));
    CHECK_EQ(atomic_load(&sl_log_counters(h->log)->failed), 1);
    CHECK_EQ(C(h, acked_at_risk), 16);
    CHECK_EQ(count_files(h->dir), 1); /* the half-made file was removed */
    CHECK_EQ(h_put(h, 1), -EIO);
    uint64_t fallocates = atomic_load(&h->faults.calls[SL_IO_OP_FALLOCATE]);
    h->now_ns += SL_LOG_RETRY_NS / 2;
    sl_log_tick(h->log, h->now_ns);
    CHECK_EQ(atomic_load(&h->faults.calls[SL_IO_OP_FALLOCATE]), fallocates); /* not yet */
    h->now_ns += SL_LOG_RETRY_NS / 2;
    sl_log_tick(h->log, h->now_ns);
    CHECK_EQ(atomic_load(&h->faults.calls[SL_IO_OP_FALLOCATE]), fallocates + 1); /* failed again */
    CHECK_EQ(atomic_load(&sl_log_counters(h->log)->failed), 1);
    sl_log_tick(h->log, h->now_ns + 1);
    CHECK_EQ(atomic_load(&h->faults.calls[SL_IO_OP_FALLOCATE]), fallocates + 1);
    h->now_ns += SL_LOG_RETRY_NS;
    sl_log_tick(h->log, h->now_ns); /* the fault's range is over */
    CHECK_EQ(atomic_load(&sl_log_counters(h->log)->failed), 0);
    CHECK_EQ(sl_log_health(h->log, reason, sizeof reason), 0);
    CHECK_EQ(C(h, durable_lsn), 16);
    CHECK_EQ(C(h, acked_at_risk), 16); /* a counter: what was at risk stays counted */
    CHECK_EQ(h_put(h, 5), 0);
    CHECK_EQ(h->spy.violations, 0);
    h_close(h);
    remove_segment(h, 1);
    if (h_reopen(h)) {
        h_verify(h, -1);
        CHECK_EQ(h->seen.count, 21);
    }
    h_close(h);
}

/* No space to open the next segment at rotation (sync=always): failed, then back. */
static void test_rotation_open_fails(void)
{
    struct harness *h = &H;
    h_config(h, "rotation_open", SL_SYNC_ALWAYS);
    if (!h_open(h)) {
        return;
    }
    int rc = 0;
    /* Only a rotation opens files during appends and commits: the first one fails. */
    for (uint32_t round = 0; round < 1000 && rc == 0; round++) {
        h_arm(h, 0, SL_IO_OP_OPEN, ENOSPC, 1, 1);
        rc = h_put(h, 20);
    }
    CHECK_EQ(rc, -EIO);
    char reason[256] = "";
    CHECK(sl_log_health(h->log, reason, sizeof reason) != 0);
    CHECK(contains(reason,
                   "log: cannot create a segment: No space left on device (and no older "
                   "segment wholly held by a checkpoint to recycle); retrying every second"));
    CHECK_EQ(h_put(h, 1), -EIO);
    h_arm(h, 0, SL_IO_OP_OPEN, ENOSPC, 1, 1);
    h->now_ns += SL_LOG_RETRY_NS;
    sl_log_tick(h->log, h->now_ns); /* the retry fails too */
    CHECK_EQ(atomic_load(&sl_log_counters(h->log)->failed), 1);
    h_disarm(h);
    h->now_ns += SL_LOG_RETRY_NS;
    sl_log_tick(h->log, h->now_ns);
    CHECK_EQ(atomic_load(&sl_log_counters(h->log)->failed), 0);
    CHECK_EQ(h_put(h, 20), 0);
    CHECK(C(h, records_failed) == 0 && C(h, acked_at_risk) == 0);
    CHECK_EQ(h->spy.violations, 0);
    if (h_reopen(h)) {
        h_verify(h, -1);
        CHECK(h->recovery.segments == 2 && h->recovery.corrupt_records == 0);
    }
    h_close(h);
}

/* The last valid lsn in a segment file on disk (0: none or unreadable). */
static uint64_t file_last_lsn(const struct harness *h, uint64_t seq)
{
    char path[256];
    snprintf(path, sizeof path, "%.200s/log-%016llx.seg", h->dir, (unsigned long long)seq);
    FILE *f = fopen(path, "rb");
    static uint8_t data[SEG_BYTES];
    size_t got = f != NULL ? fread(data, 1, sizeof data, f) : 0;
    if (f != NULL) {
        fclose(f);
    }
    struct sl_log_scan sc;
    return sl_log_scan_segment(data, got, 0, NULL, NULL, &sc) == 0 ? sc.last_lsn : 0;
}

/* Append groups until the log has made `segments` segments in all (or an append fails). */
static int h_fill_segments(struct harness *h, uint64_t segments)
{
    int rc = 0;
    for (uint32_t round = 0; round < 100000 && rc == 0 && C(h, segments_created) < segments;
         round++) {
        rc = h_put(h, 20);
    }
    return rc;
}

/*
 * A disk with room for two segments under a much larger bytes_max: when no
 * new file can be had (fallocate ENOSPC), the oldest segment is recycled
 * once a checkpoint holds all of its records, and only then; the newest is
 * never taken; a checkpoint (or space) makes the log resume by itself.
 */
static void test_enospc_recycles(void)
{
    struct harness *h = &H;
    h_config(h, "enospc_recycle", SL_SYNC_ALWAYS);
    h->config.wait_for_checkpoint = true;
    if (!h_open(h)) {
        return;
    }
    CHECK_EQ(h_fill_segments(h, 2), 0);
    h_arm(h, 0, SL_IO_OP_FALLOCATE, ENOSPC, 1, 1000000); /* the disk is full from here */
    int rc = h_fill_segments(h, 3);
    CHECK_EQ(rc, -EIO);
    CHECK_EQ(count_files(h->dir), 2);
    CHECK_EQ(C(h, recycled_on_enospc), 0); /* nothing a checkpoint holds: nothing recycled */
    char reason[256] = "";
    CHECK(sl_log_health(h->log, reason, sizeof reason) != 0);
    CHECK(contains(reason, "No space left on device (and no older segment wholly held by a "
                           "checkpoint to recycle)"));
    CHECK(sl_log_waiting_for_checkpoint(h->log));  /* a checkpoint would help: ask for one */
    CHECK(!sl_log_waiting_for_checkpoint(h->log)); /* once: not again every tick */
    h->now_ns += SL_LOG_RETRY_NS;
    sl_log_tick(h->log, h->now_ns); /* the retry fails: ask again */
    CHECK(sl_log_waiting_for_checkpoint(h->log));
    uint64_t last1 = file_last_lsn(h, 1);
    CHECK(last1 > 0);
    /* A checkpoint holding all but the last record of segment 1: it is still needed. */
    sl_log_set_checkpoint_lsn(h->log, last1);
    uint64_t fallocates = atomic_load(&h->faults.calls[SL_IO_OP_FALLOCATE]);
    h->now_ns += 1;
    sl_log_tick(h->log, h->now_ns);
    CHECK_EQ(atomic_load(&h->faults.calls[SL_IO_OP_FALLOCATE]), fallocates + 1); /* tried at once */
    CHECK_EQ(atomic_load(&sl_log_counters(h->log)->failed), 1);
    CHECK(C(h, recycled_on_enospc) == 0 && C(h, segments_recycled) == 0);
    CHECK_EQ(file_last_lsn(h, 1), last1); /* untouched */
    /* Now one that holds all of it: recycled, and the log goes on by itself. */
    sl_log_set_checkpoint_lsn(h->log, last1 + 1);
    sl_log_tick(h->log, h->now_ns);
    CHECK_EQ(atomic_load(&sl_log_counters(h->log)->failed), 0);
    CHECK_EQ(sl_log_health(h->log, reason, sizeof reason), 0);
    CHECK(C(h, recycled_on_enospc) == 1 && C(h, segments_recycled) == 1);
    CHECK_EQ(C(h, recycled_records), 0);
    CHECK_EQ(count_files(h->dir), 2);
    CHECK(!sl_log_waiting_for_checkpoint(h->log));
    CHECK_EQ(h_put(h, 20), 0);
    /* The next rotation finds segment 2 (now the oldest) not held by any checkpoint: it waits. */
    rc = h_fill_segments(h, 4);
    CHECK_EQ(rc, -EIO);
    CHECK(C(h, recycled_on_enospc) == 1 && count_files(h->dir) == 2);
    /* Space appears: a new file, nothing recycled. */
    h_disarm(h);
    h->now_ns += SL_LOG_RETRY_NS;
    sl_log_tick(h->log, h->now_ns);
    CHECK_EQ(atomic_load(&sl_log_counters(h->log)->failed), 0);
    CHECK(C(h, recycled_on_enospc) == 1 && count_files(h->dir) == 3);
    CHECK_EQ(h_put(h, 20), 0);
    CHECK_EQ(h->spy.violations, 0);
    if (h_reopen(h)) {
        /* Everything from segment 2 on is there, contiguous: what was recycled was held. */
        CHECK(h->seen.count > 0 && h->seen.lsns[0] == last1 + 1);
        CHECK_EQ(h->seen.lsns[h->seen.count - 1], h->next_id - 1);
        CHECK_EQ(h->seen.count, h->next_id - 1 - last1);
        CHECK_EQ(h->recovery.corrupt_records, 0);
    }
    h_close(h);
}

/* Without checkpoints nothing is held: a full disk never recycles, it waits for space. */
static void test_enospc_without_checkpoints(void)
{
    struct harness *h = &H;
    h_config(h, "enospc_plain", SL_SYNC_BATCH);
    if (!h_open(h)) {
        return;
    }
    CHECK_EQ(h_fill_segments(h, 2), 0);
    h_arm(h, 0, SL_IO_OP_FALLOCATE, ENOSPC, 1, 1000000);
    CHECK_EQ(h_fill_segments(h, 3), -EIO);
    CHECK(!sl_log_waiting_for_checkpoint(h->log));
    h->now_ns += SL_LOG_RETRY_NS;
    sl_log_tick(h->log, h->now_ns);
    CHECK(C(h, recycled_on_enospc) == 0 && C(h, segments_recycled) == 0 &&
          count_files(h->dir) == 2);
    CHECK_EQ(atomic_load(&sl_log_counters(h->log)->failed), 1);
    h_close(h);
}

/*
 * The checkpoint lsn given at open (what recovery loaded): a log full of
 * segments, reopened, recycles the one the checkpoint holds at its first
 * rotation instead of waiting for a new checkpoint.
 */
static void test_open_knows_checkpoint(void)
{
    struct harness *h = &H;
    for (int knows = 0; knows < 2; knows++) {
        h_config(h, knows ? "open_checkpoint" : "open_no_checkpoint", SL_SYNC_BATCH);
        h->config.bytes_max = 2 * SEG_BYTES;
        h->config.wait_for_checkpoint = true;
        if (!h_open(h)) {
            return;
        }
        CHECK_EQ(h_fill_segments(h, 2), 0);
        uint64_t last1 = file_last_lsn(h, 1);
        h_close(h);
        h->config.checkpoint_lsn = knows ? last1 + 1 : 0;
        if (!h_open(h)) {
            return;
        }
        int rc = h_fill_segments(h, 1);
        CHECK_EQ(rc, knows ? 0 : -EIO);
        CHECK_EQ(C(h, segments_recycled), knows ? 1u : 0u);
        CHECK_EQ(C(h, recycled_records), 0);
        CHECK_EQ(sl_log_waiting_for_checkpoint(h->log), !knows);
        h_close(h);
    }
}

/* Four consecutive records destroyed in the middle of a segment: 4 lost, their bytes counted. */
static void test_scan_counts_lost(void)
{
    struct builder b;
    struct sl_log_scan sc;
    build_begin(&b, SEGBUF_BYTES, 4);
    build_many(&b, 50);
    for (uint32_t start = 0; start <= 20; start += 20) { /* at the segment's start, in the middle */
        uint64_t from = b.offs[start], to = b.offs[start + 4];
        memcpy(rec, b.buf + from, to - from);
        memset(b.buf + from, 0xA5, to - from);
        CHECK_EQ(scan(b.buf, b.len, 0, &sc), 0);
        CHECK_EQ(sc.records, 46);
        CHECK_EQ(sc.corrupt_regions, 1);
        CHECK_EQ(sc.corrupt_records, 4);
        CHECK_EQ(sc.corrupt_bytes, to - from);
        /* Zeros instead (a zeroed range), and the headers alone: the same count. */
        memset(b.buf + from, 0, to - from);
        CHECK_EQ(scan(b.buf, b.len, 0, &sc), 0);
        CHECK(sc.records == 46 && sc.corrupt_records == 4 && sc.corrupt_bytes == to - from);
        memcpy(b.buf + from, rec, to - from);
        for (uint32_t i = start; i < start + 4; i++) {
            b.buf[b.offs[i] + 8] ^= 0xFF;
        }
        CHECK_EQ(scan(b.buf, b.len, 0, &sc), 0);
        CHECK(sc.records == 46 && sc.corrupt_regions == 1 && sc.corrupt_records == 4);
        for (uint32_t i = start; i < start + 4; i++) {
            b.buf[b.offs[i] + 8] ^= 0xFF;
        }
    }
    /* An lsn gap wider than the bytes could hold (not one of this writer's): capped by them. */
    build_begin(&b, SEGBUF_BYTES, 4);
    build_add(&b, 1, 1, 0);
    build_add(&b, 2, 2, 0);
    build_add(&b, 3, 1000, 0);
    b.buf[b.offs[1] + 70] ^= 1;
    CHECK_EQ(scan(b.buf, b.len, 0, &sc), 0);
    uint32_t bytes2 = sl_log_record_bytes(count_of(2));
    CHECK_EQ(sc.corrupt_records, (bytes2 - 1) / 80 + 1);
}

/* Recovery counts the same through sl_log_open: records and bytes lost, in the counters too. */
static void test_recovery_counts_lost(void)
{
    struct harness *h = &H;
    h_config(h, "lost", SL_SYNC_ALWAYS);
    if (!h_open(h)) {
        return;
    }
    h_fill(h, 60, 5);
    h_close(h);
    char path[256];
    snprintf(path, sizeof path, "%.200s/log-%016llx.seg", h->dir, 1ull);
    static uint8_t data[SEG_BYTES];
    FILE *f = fopen(path, "r+b");
    CHECK(f != NULL);
    if (f == NULL) {
        return;
    }
    size_t got = fread(data, 1, sizeof data, f);
    uint64_t from = SL_LOG_SEGMENT_HEADER_BYTES, to = from;
    for (uint64_t id = 1; id <= 26; id++) { /* one group per record: ids are lsns, in order */
        uint64_t bytes = sl_log_record_bytes(count_of(id));
        from += id < 23 ? bytes : 0;
        to += bytes;
    }
    /* Records 23 to 26 destroyed. */
    memset(data + from, 0x5A, to - from);
    CHECK(fseek(f, 0, SEEK_SET) == 0 && fwrite(data, 1, got, f) == got);
    fclose(f);
    if (h_reopen(h)) {
        CHECK_EQ(h->seen.count, 56);
        CHECK(!seen_has(&h->seen, 23) && !seen_has(&h->seen, 26) && seen_has(&h->seen, 27));
        CHECK_EQ(h->recovery.corrupt_records, 4);
        CHECK_EQ(h->recovery.corrupt_regions, 1);
        CHECK_EQ(h->recovery.corrupt_bytes, to - from);
        CHECK_EQ(C(h, corrupt_records), 4);
        CHECK_EQ(C(h, corrupt_bytes), to - from);
    }
    h_close(h);
}

/* No space for the first segment at start-up: the log opens failed and recovers by itself. */
static void test_open_fallocate_fails(void)
{
    struct harness *h = &H;
    h_config(h, "open_enospc", SL_SYNC_ALWAYS);
    h_arm(h, 0, SL_IO_OP_FALLOCATE, ENOSPC, 1, 1);
    if (!h_open(h)) {
        return;
    }
    char reason[256] = "";
    CHECK(sl_log_health(h->log, reason, sizeof reason) != 0);
    CHECK(contains(reason, "cannot create a segment: No space left on device"));
    CHECK_EQ(count_files(h->dir), 0);
    CHECK_EQ(h_put(h, 1), -EIO);
    h->now_ns = sl_clock_monotonic_ns() + SL_LOG_RETRY_NS; /* the open failed on the real clock */
    sl_log_tick(h->log, h->now_ns);
    CHECK_EQ(sl_log_health(h->log, reason, sizeof reason), 0);
    CHECK_EQ(h_put(h, 4), 0);
    if (h_reopen(h)) {
        CHECK_EQ(h->seen.count, 4);
        h_verify(h, -1);
    }
    h_close(h);
}

/* sync=never, pwrite fails: that commit is dropped; what was acked on the failed file is at risk.
 */
static void test_never_write_fails(void)
{
    struct harness *h = &H;
    h_config(h, "never_write", SL_SYNC_NEVER);
    if (!h_open(h)) {
        return;
    }
    CHECK_EQ(h_put(h, 6), 0);
    CHECK_EQ(h_put(h, 6), 0);
    h_arm(h, 0, SL_IO_OP_PWRITE, EIO, 1, 1);
    CHECK_EQ(h_put(h, 5), -EIO);
    CHECK(C(h, records_failed) == 5 && C(h, acked_at_risk) == 12 && C(h, segments_retired) == 1);
    CHECK_EQ(h_put(h, 6), 0);
    CHECK_EQ(h->spy.violations, 0);
    if (h_reopen(h)) {
        h_verify(h, 0);
        CHECK_EQ(h->seen.count, 18);
    }
    h_close(h);
}

/* ---- the seam ---- */

static void test_fault_specs(void)
{
    struct sl_io_faults f;
    const char *why = NULL;
    CHECK_EQ(sl_io_faults_init(&f, &sl_io_posix, "", &why), 0);
    CHECK_EQ(f.rules_count, 0);
    CHECK_EQ(sl_io_faults_init(&f, &sl_io_posix, "fdatasync:EIO:5-8,pwrite:ENOSPC:20", &why), 0);
    CHECK_EQ(f.rules_count, 2);
    CHECK(f.rules[0].op == SL_IO_OP_FDATASYNC && f.rules[0].error == EIO && f.rules[0].first == 5 &&
          f.rules[0].last == 8);
    CHECK(f.rules[1].op == SL_IO_OP_PWRITE && f.rules[1].error == ENOSPC &&
          f.rules[1].first == 20 && f.rules[1].last == 20);
    CHECK_EQ(sl_io_faults_init(&f, &sl_io_posix,
                               "open:EDQUOT:3-*,pwrite_short:EIO:1,fsync:EIO:2,"
                               "fallocate:ENOSPC:1-1,rename:EIO:9999999999999999999",
                               &why),
             0);
    CHECK(f.rules_count == 5 && f.rules[0].op == SL_IO_OP_OPEN && f.rules[0].error == EDQUOT &&
          f.rules[0].last == UINT64_MAX && f.rules[1].op == SL_IO_OP_PWRITE_SHORT &&
          f.rules[3].op == SL_IO_OP_FALLOCATE && f.rules[4].op == SL_IO_OP_RENAME &&
          f.rules[4].first == 9999999999999999999ull);
    char spec[512] = "";
    for (int i = 0; i < 16; i++) {
        strcat(spec, i ? ",fsync:EIO:1" : "fsync:EIO:1");
    }
    CHECK_EQ(sl_io_faults_init(&f, &sl_io_posix, spec, &why), 0);
    CHECK_EQ(f.rules_count, 16);
    strcat(spec, ",fsync:EIO:1");
    why = NULL;
    CHECK(sl_io_faults_init(&f, &sl_io_posix, spec, &why) == -EINVAL && why != NULL &&
          f.rules_count == 0);
    static const char *const bad[] = {
        "bogus:EIO:1",
        "pwrite:EFOO:1",
        "pwrite:EIO:0",
        "pwrite:EIO:5-3",
        "pwrite:EIO:",
        "pwrite:EIO",
        "pwrite",
        "pwrite:EIO:1,",
        ",",
        "pwrite:EIO:1-2-3",
        "pwrite:EIO:x",
        ":EIO:1",
        "PWRITE:EIO:1",
        "pwrite:eio:1",
        "pwrite:EIO:-1",
        "pwrite:EIO:1-",
        "pwrite:EIO:99999999999999999999",
        "pwrite:EIO:1:2",
        " pwrite:EIO:1",
        "close:EIO:1",
    };
    for (uint32_t i = 0; i < (uint32_t)SL_ARRAY_COUNT(bad); i++) {
        why = NULL;
        int rc = sl_io_faults_init(&f, &sl_io_posix, bad[i], &why);
        if (rc != -EINVAL || why == NULL) {
            fprintf(stderr, "spec accepted: \"%s\"\n", bad[i]);
        }
        CHECK(rc == -EINVAL && why != NULL);
    }
}

static int64_t zero_pwrite(const struct sl_io *io, int fd, const void *buf, uint64_t bytes,
                           uint64_t offset)
{
    (void)io, (void)fd, (void)buf, (void)bytes, (void)offset;
    return 0;
}

static void test_io_helpers(void)
{
    struct sl_io_faults f;
    const char *why = NULL;
    CHECK_EQ(sl_io_faults_init(&f, &sl_io_posix, "pwrite_short:EIO:1,fsync:EIO:2-*,rename:ENOSPC:1",
                               &why),
             0);
    char path[256], path2[256];
    snprintf(path, sizeof path, "%s/io-file", root);
    snprintf(path2, sizeof path2, "%s/io-file2", root);
    int fd = f.io.open(&f.io, path, O_CREAT | O_RDWR | O_TRUNC, 0644);
    CHECK(fd >= 0);
    CHECK((fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0); /* O_CLOEXEC added */
    uint8_t data[1000], back[1000];
    for (int i = 0; i < 1000; i++) {
        data[i] = (uint8_t)i;
    }
    CHECK_EQ(sl_io_pwrite_all(&f.io, fd, data, sizeof data, 10), 0); /* short, then the rest */
    CHECK_EQ(atomic_load(&f.calls[SL_IO_OP_PWRITE]), 2);
    CHECK_EQ(atomic_load(&f.calls[SL_IO_OP_PWRITE_SHORT]), 2);
    CHECK_EQ(atomic_load(&f.injected[SL_IO_OP_PWRITE_SHORT]), 1);
    CHECK_EQ(sl_io_pread_all(&f.io, fd, back, sizeof back, 10), 0);
    CHECK(memcmp(data, back, sizeof data) == 0);
    CHECK_EQ(sl_io_pread_all(&f.io, fd, back, sizeof back, 20), -ENODATA);
    CHECK_EQ(f.io.fallocate(&f.io, fd, 0, 8192), 0);
    CHECK_EQ(f.io.ftruncate(&f.io, fd, 100), 0);
    CHECK_EQ(sl_io_pread_all(&f.io, fd, back, 100, 0), 0);
    CHECK_EQ(sl_io_pread_all(&f.io, fd, back, 101, 0), -ENODATA);
    CHECK_EQ(f.io.fdatasync(&f.io, fd), 0);
    CHECK_EQ(f.io.fsync(&f.io, fd), 0);
    CHECK_EQ(f.io.fsync(&f.io, fd), -EIO); /* 2-*: every fsync from the second on */
    CHECK_EQ(sl_io_fsync_dir(&f.io, root), -EIO);
    CHECK_EQ(atomic_load(&f.injected[SL_IO_OP_FSYNC]), 2);
    CHECK_EQ(f.io.close(&f.io, fd), 0);
    CHECK_EQ(f.io.rename(&f.io, path, path2), -ENOSPC);
    CHECK_EQ(f.io.rename(&f.io, path, path2), 0);
    CHECK_EQ(f.io.unlink(&f.io, path2), 0);
    CHECK_EQ(f.io.unlink(&f.io, path2), -ENOENT);
    CHECK_EQ(sl_io_posix.open(&sl_io_posix, path, O_RDONLY, 0), -ENOENT);
    CHECK_EQ(sl_io_fsync_dir(&sl_io_posix, root), 0);
    CHECK_EQ(sl_io_fsync_dir(&sl_io_posix, path), -ENOENT);
    struct sl_io zero = sl_io_posix;
    zero.pwrite = zero_pwrite;
    CHECK_EQ(sl_io_pwrite_all(&zero, 0, data, 1, 0), -EIO); /* no progress */
    CHECK_EQ(sl_io_pwrite_all(&zero, 0, data, 0, 0), 0);    /* nothing to write */
    CHECK_EQ(sl_io_posix.close(&sl_io_posix, -1), -EBADF);
    CHECK_EQ(sl_io_posix.fdatasync(&sl_io_posix, -1), -EBADF);
    CHECK_EQ(sl_io_posix.pwrite(&sl_io_posix, -1, data, 1, 0), -EBADF);
    CHECK_EQ(sl_io_posix.pread(&sl_io_posix, -1, data, 1, 0), -EBADF);
    CHECK_EQ(sl_io_posix.fallocate(&sl_io_posix, -1, 0, 1), -EBADF);
}

int main(void)
{
    snprintf(root, sizeof root, "/tmp/sl-test-log-XXXXXX");
    if (mkdtemp(root) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_record_layout();
    test_record_errors();
    test_segment_header();
    test_scan_clean();
    test_scan_torn();
    test_scan_middle_damage();
    test_scan_stale_and_order();
    test_scan_stop_and_hostile();
    test_config();
    test_roundtrip(SL_SYNC_ALWAYS, "always");
    test_roundtrip(SL_SYNC_BATCH, "batch");
    test_roundtrip(SL_SYNC_NEVER, "never");
    test_rotation();
    test_writeback(SL_SYNC_BATCH, "writeback_batch");
    test_writeback(SL_SYNC_NEVER, "writeback_never");
    test_writeback(SL_SYNC_ALWAYS, "writeback_always");
    test_enobufs();
    test_recycling();
    test_shrink();
    test_torn_resume();
    test_bad_header_file();
    test_no_alloc();
    test_crash_mid_recycle();
    test_open_errors();
    test_spy();
    test_always_sync_fails();
    test_always_write_fails();
    test_always_short_write();
    test_batch_sync_fails();
    test_batch_commit_sync_fails();
    test_failed_state();
    test_rotation_open_fails();
    test_open_fallocate_fails();
    test_enospc_recycles();
    test_enospc_without_checkpoints();
    test_open_knows_checkpoint();
    test_scan_counts_lost();
    test_recovery_counts_lost();
    test_never_write_fails();
    test_fault_specs();
    test_io_helpers();
    remove_root();
    TEST_END("test_log");
}
