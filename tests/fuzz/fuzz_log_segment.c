/*
 * libFuzzer target for the log scanner (sl_log_scan_segment) and for
 * start-up recovery from an arbitrary segment file (sl_log_open).
 *
 * Proves, on arbitrary bytes: the scanner never reads outside the input
 * (ASan checks every access; each input sits in a heap block of exactly its
 * length), never trips UBSan, ends quickly whatever the input (its CRC work
 * is capped at 16 x len), and hands the visitor only records that hold up:
 * lsns strictly increasing above min_lsn, count >= 1, the readings inside
 * the buffer at an 8-byte-aligned record, the segment's own segment_seq,
 * and bytes that re-encode to exactly what is on disk (the pairing of
 * encoder and decoder). The scan's report is consistent (end_offset aligned
 * and inside the input, damage counted within the input).
 *
 * Random bytes almost never carry valid CRCs, so each input is also scanned
 * patched: the segment header made valid, and every 8-byte-aligned "SLR1"
 * record header given this segment's seq and correct CRCs (payload first,
 * then the header that covers it). That reaches the resync, lsn-order and
 * stale-record paths with records the fuzzer shaped.
 *
 * Every 64th patched input of at most 64 KiB is also written as a segment
 * file into a temporary directory and recovered with sl_log_open through
 * sl_io_posix: recovery must visit exactly what the scanner visits, and the
 * log must open (and create its next segment) and close cleanly.
 *
 * Memory: one heap copy of the input per run (freed); the occasional open
 * maps a 4 MiB arena and unmaps it.
 */
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/crc32c.h"
#include "core/plan.h"
#include "store/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define OPEN_EVERY 64u
#define OPEN_BYTES_MAX (64u << 10)
#define SEQ_MASK ((1ull << 38) - 1)

struct visit_ctx {
    const uint8_t *buf;
    size_t len;
    uint64_t segment_seq;
    uint64_t last_lsn;
    uint64_t visits;
};

static uint8_t encoded[SL_LOG_RECORD_BYTES_MAX];

static int check_record(void *ctx, const struct sl_log_record *r)
{
    struct visit_ctx *c = ctx;
    uint32_t count = r->batch.header.count;
    FUZZ_CHECK(r->lsn > c->last_lsn);
    c->last_lsn = r->lsn;
    FUZZ_CHECK(count >= 1);
    FUZZ_CHECK(r->segment_seq == c->segment_seq);
    FUZZ_CHECK(r->record_bytes == sl_log_record_bytes(count));
    const uint8_t *record = r->batch.readings - SL_LOG_RECORD_HEADER_BYTES;
    FUZZ_CHECK(record >= c->buf + SL_LOG_SEGMENT_HEADER_BYTES);
    FUZZ_CHECK((size_t)(record - c->buf) % SL_LOG_ALIGN == 0);
    FUZZ_CHECK((size_t)(record - c->buf) + r->record_bytes <= c->len);
    FUZZ_CHECK(r->batch.header.version == SL_PROTOCOL_VERSION && r->batch.header.key_id == 0);
    size_t bytes = SL_LOG_RECORD_HEADER_BYTES + (size_t)SL_READING_BYTES * count;
    sl_log_record_encode(encoded, &r->batch, r->transport, r->now_us, r->lsn, r->segment_seq);
    FUZZ_CHECK(memcmp(encoded, record, bytes) == 0);
    c->visits++;
    return 0;
}

/* Scan with every invariant checked; returns the records visited. */
static uint64_t scan_checked(const uint8_t *buf, size_t len, uint64_t min_lsn)
{
    struct sl_log_segment_header h;
    bool header_ok = sl_log_segment_header_decode(buf, len, &h) == 0;
    struct visit_ctx c = {
        .buf = buf, .len = len, .segment_seq = header_ok ? h.segment_seq : 0, .last_lsn = min_lsn};
    struct sl_log_scan s;
    int rc = sl_log_scan_segment(buf, len, min_lsn, check_record, &c, &s);
    FUZZ_CHECK(rc == (header_ok ? 0 : -EINVAL));
    FUZZ_CHECK(s.records == c.visits);
    if (rc != 0) {
        FUZZ_CHECK(s.records == 0);
        return 0;
    }
    FUZZ_CHECK(s.end_offset >= SL_LOG_SEGMENT_HEADER_BYTES && s.end_offset <= len);
    FUZZ_CHECK(s.end_offset % SL_LOG_ALIGN == 0);
    FUZZ_CHECK(s.corrupt_bytes + s.tail_bytes <= len);
    FUZZ_CHECK(s.tail_error >= SL_LOG_END && s.tail_error <= SL_LOG_BAD_PAYLOAD_CRC);
    FUZZ_CHECK(s.records == 0 ? s.last_lsn == 0 : s.last_lsn == c.last_lsn);
    FUZZ_CHECK((s.corrupt_records == 0) == (s.corrupt_bytes == 0));
    /* Each region loses 1 record at least, and no more than could start in its bytes. */
    FUZZ_CHECK((s.corrupt_regions == 0) == (s.corrupt_records == 0));
    FUZZ_CHECK(s.corrupt_records >= s.corrupt_regions);
    FUZZ_CHECK(s.corrupt_records <= s.corrupt_bytes / 80 + s.corrupt_regions);
    FUZZ_CHECK(s.readings >= s.records && s.readings <= s.records * SL_BATCH_COUNT_MAX);
    return s.records;
}

/* Make the segment header valid and give every aligned "SLR1" header correct CRCs. */
static void patch(uint8_t *buf, size_t len)
{
    if (len < SL_LOG_SEGMENT_HEADER_BYTES) {
        return;
    }
    memcpy(buf, "SLUICELG", 8);
    sl_store_u32(buf + 8, 1);
    uint64_t seq =
        sl_load_u64(buf + 16) & SEQ_MASK; /* larger numbers make sl_log_open skip the file */
    sl_store_u64(buf + 16, seq);
    sl_store_u32(buf + 60, sl_crc32c(buf, 60));
    for (size_t off = SL_LOG_SEGMENT_HEADER_BYTES; off + SL_LOG_RECORD_HEADER_BYTES <= len;
         off += 8) {
        uint8_t *p = buf + off;
        if (memcmp(p, "SLR1", 4) != 0) {
            continue;
        }
        sl_store_u64(p + 16, seq);
        uint32_t count = sl_load_u16(p + 52);
        size_t payload = (size_t)SL_READING_BYTES * count;
        if (count > 0 && off + SL_LOG_RECORD_HEADER_BYTES + payload <= len) {
            sl_store_u32(p + 4, (uint32_t)(SL_LOG_RECORD_HEADER_BYTES + payload));
            sl_store_u32(p + 56, sl_crc32c(p + SL_LOG_RECORD_HEADER_BYTES, payload));
        }
        sl_store_u32(p + 60, sl_crc32c(p, 60));
    }
}

static char dir[64];

static void remove_files(void)
{
    DIR *d = opendir(dir);
    char path[512];
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    }
    if (d != NULL) {
        closedir(d);
    }
}

static void remove_dir(void)
{
    remove_files();
    rmdir(dir);
}

struct open_ctx {
    uint64_t last_lsn;
    uint64_t visits;
};

static int check_open_record(void *ctx, const struct sl_log_record *r)
{
    struct open_ctx *c = ctx;
    FUZZ_CHECK(r->lsn > c->last_lsn && r->batch.header.count >= 1);
    c->last_lsn = r->lsn;
    c->visits++;
    return 0;
}

/* Recover a directory holding just this segment; it must agree with the scanner. */
static void open_as_file(const uint8_t *buf, size_t len, uint64_t scanned)
{
    if (dir[0] == '\0') {
        snprintf(dir, sizeof dir, "/tmp/fuzz-log-XXXXXX");
        FUZZ_CHECK(mkdtemp(dir) != NULL);
        atexit(remove_dir);
    }
    char path[128];
    snprintf(path, sizeof path, "%s/log-0000000000000001.seg", dir);
    FILE *f = fopen(path, "wb");
    FUZZ_CHECK(f != NULL && fwrite(buf, 1, len, f) == len && fclose(f) == 0);
    struct sl_log_config config;
    sl_log_config_default(&config);
    snprintf(config.dir, sizeof config.dir, "%s", dir);
    config.segment_bytes = SL_LOG_SEGMENT_BYTES_MIN;
    config.bytes_max = 2 * SL_LOG_SEGMENT_BYTES_MIN;
    config.buffer_bytes = SL_LOG_BUFFER_BYTES_MIN;
    config.sync = SL_SYNC_NEVER;
    struct sl_plan plan;
    sl_plan_init(&plan);
    sl_log_plan(&config, &plan);
    struct sl_arena arena;
    FUZZ_CHECK(sl_arena_map(&arena, plan.total_bytes) == 0);
    struct open_ctx c = {0};
    struct sl_log_recovery recovery;
    char err[256];
    struct sl_log *log =
        sl_log_open(&config, &arena, check_open_record, &c, &recovery, err, sizeof err);
    FUZZ_CHECK(c.visits == recovery.records);
    FUZZ_CHECK(recovery.segments == 1);
    if (log != NULL) {
        FUZZ_CHECK(recovery.records == scanned);
        FUZZ_CHECK(sl_log_next_lsn(log) == recovery.last_lsn + 1);
        sl_log_close(log);
    }
    sl_arena_unmap(&arena);
    remove_files();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint64_t runs;
    uint8_t *copy = malloc(size > 0 ? size : 1);
    FUZZ_CHECK(copy != NULL);
    memcpy(copy, data, size);
    scan_checked(copy, size, 0);
    if (size >= 16) {
        scan_checked(copy, size, sl_load_u64(data + size - 8) % 64); /* a min_lsn from the input */
    }
    patch(copy, size);
    uint64_t scanned = scan_checked(copy, size, 0);
    if (++runs % OPEN_EVERY == 0 && size <= OPEN_BYTES_MAX) {
        open_as_file(copy, size, scanned);
    }
    free(copy);
    return 0;
}
