/*
 * sluice-log: inspect a data directory without starting the gateway.
 *
 *   sluice-log DIR              one line per segment and per checkpoint, and totals
 *   sluice-log --records DIR    also one line per record
 *   sluice-log --json DIR       the same as one JSON object (segments, damage, totals)
 *
 * It reads the files read-only (mmap) with the same scanner recovery uses
 * (sl_log_scan_segment), so what it reports as damage is exactly what a
 * restart would skip or cut: the records lost in each damaged region (the
 * lsn gap across it) and its bytes. It never writes.
 *
 * A checkpoint's line gives its header (docs/STORAGE.md): format version,
 * seq, start lsn, store geometry, creation time, once its magic and header
 * CRC check out; then whether it is usable, checked by the loader's own
 * code (sl_checkpoint_verify: every chunk, CRC, sensor record and the
 * trailer, against the geometry its header gives), or why not.
 *
 * Exit 0 when every segment scanned cleanly and every checkpoint is
 * usable; 1 when it found damage (records lost, a torn tail, an unreadable
 * segment header) or an unusable checkpoint (which a restart skips); 2 on
 * bad usage or an unreadable directory.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store/checkpoint.h"
#include "store/log.h"
#include "tools/tool.h"

#define SEGMENTS_MAX 65536u

struct options {
    bool records;
    bool json;
    const char *dir;
};

struct totals {
    uint64_t segments, bad_headers, records, readings, corrupt_regions, corrupt_records,
        corrupt_bytes;
    uint64_t tail_bytes, checkpoints_unusable;
    uint64_t first_lsn, last_lsn;
    bool first_segment;
};

struct record_printer {
    const struct options *opt;
    uint64_t base; /* address of the mapping, to print offsets */
};

static int print_record(void *ctx, const struct sl_log_record *r)
{
    static const char *const transports[SL_LOG_TRANSPORT_COUNT] = {"udp", "tcp", "line", "series"};
    const struct record_printer *p = ctx;
    if (p->opt->records && !p->opt->json) {
        uint64_t offset = (uint64_t)(uintptr_t)r->batch.readings - SL_LOG_RECORD_HEADER_BYTES - p->base;
        if (r->transport == SL_LOG_SERIES) {
            printf("  record lsn %" PRIu64 " at %" PRIu64 ": series %" PRIu32 " named '%.*s'\n",
                   r->lsn, offset, r->batch.header.stream_id, (int)r->batch.header.count,
                   (const char *)r->batch.readings);
            return 0;
        }
        printf("  record lsn %" PRIu64 " at %" PRIu64 ": %s stream %" PRIu32 " seq %" PRIu64
               ", %u readings from %" PRId64 " us, accepted at %" PRId64 " us\n",
               r->lsn, offset, transports[r->transport], r->batch.header.stream_id,
               r->batch.header.batch_seq, r->batch.header.count, r->batch.header.base_time_us,
               r->now_us);
    }
    return 0;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Scan one segment file; add to the totals; print its line. */
static void scan_file(const struct options *opt, const char *name, struct totals *t, bool last)
{
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", opt->dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_size == 0) {
        printf("%s: cannot read: %s\n", name, fd < 0 ? strerror(errno) : "empty file");
        t->bad_headers++;
        if (fd >= 0) {
            close(fd);
        }
        return;
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        printf("%s: cannot map: %s\n", name, strerror(errno));
        t->bad_headers++;
        return;
    }
    struct sl_log_segment_header h;
    struct sl_log_scan scan;
    struct record_printer printer = {.opt = opt, .base = (uint64_t)(uintptr_t)map};
    if (sl_log_segment_header_decode(map, (size_t)st.st_size, &h) != 0) {
        printf("%s: bad segment header (skipped by recovery)\n", name);
        t->bad_headers++;
    } else {
        sl_log_scan_segment(map, (size_t)st.st_size, 0, print_record, &printer, &scan);
        t->segments++;
        t->records += scan.records;
        t->readings += scan.readings;
        t->corrupt_regions += scan.corrupt_regions;
        t->corrupt_records += scan.corrupt_records;
        t->corrupt_bytes += scan.corrupt_bytes;
        t->tail_bytes += scan.tail_bytes;
        if (scan.tail_bytes > 0 && !last) { /* as recovery counts it: one record lost at least */
            t->corrupt_regions++;
            t->corrupt_records++;
            t->corrupt_bytes += scan.tail_bytes;
        }
        if (scan.records > 0 && !t->first_segment) {
            t->first_segment = true;
            t->first_lsn = h.first_lsn;
        }
        t->last_lsn = scan.last_lsn > t->last_lsn ? scan.last_lsn : t->last_lsn;
        if (!opt->json) {
            printf("%s: segment %" PRIu64 ", %" PRIu64 " bytes, %" PRIu64 " records (%" PRIu64
                   " readings), lsn up to %" PRIu64 ", data ends at %" PRIu64,
                   name, h.segment_seq, (uint64_t)st.st_size, scan.records, scan.readings,
                   scan.last_lsn, scan.end_offset);
            if (scan.corrupt_regions > 0) {
                printf(", damage: %" PRIu64 " records lost (%" PRIu64 " bytes) in %" PRIu64
                       " damaged regions, skipped",
                       scan.corrupt_records, scan.corrupt_bytes, scan.corrupt_regions);
            }
            if (scan.tail_bytes > 0) {
                printf(", %" PRIu64 " damaged bytes after the last record (%s)", scan.tail_bytes,
                       last ? "a torn tail: cut at restart" : "damage: at least 1 record lost");
            }
            printf("\n");
        }
    }
    munmap(map, (size_t)st.st_size);
}

/* Collect the names in dir that start with prefix and end with suffix, sorted. */
static uint32_t list_names(const char *dir, const char *prefix, const char *suffix, char **names,
                           uint32_t max)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return 0;
    }
    uint32_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < max) {
        size_t len = strlen(e->d_name), sl = strlen(suffix);
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0 && len > sl &&
            strcmp(e->d_name + len - sl, suffix) == 0) {
            names[n++] = strdup(e->d_name);
        }
    }
    closedir(d);
    qsort(names, n, sizeof names[0], compare_names);
    return n;
}

/* A checkpoint's line: what its header says, and whether it is usable or why not. */
static bool describe_checkpoint(const struct options *opt, const char *name, char *out,
                                size_t out_bytes)
{
    struct sl_checkpoint_verdict v;
    int rc = sl_checkpoint_verify(opt->dir, name, &sl_io_posix, &v);
    size_t n = 0;
    if (v.header_valid) {
        const struct sl_checkpoint_header *hd = &v.header;
        time_t created_s = (time_t)(hd->created_us / 1000000);
        struct tm tm;
        char created[64] = "?";
        if (gmtime_r(&created_s, &tm) != NULL) {
            strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tm);
        }
        int w =
            snprintf(out, out_bytes,
                     "version %" PRIu32 ", seq %" PRIu64 ", start lsn %" PRIu64 ", %" PRIu32
                     " sensors x %" PRIu32 " readings, %" PRIu32 " coarse buckets, created %s, ",
                     hd->version, hd->seq, hd->start_lsn, hd->sensors_max, hd->ring_readings,
                     hd->coarse_buckets_total, created);
        n = w > 0 && (size_t)w < out_bytes ? (size_t)w : 0;
    }
    if (rc == 0) {
        snprintf(out + n, out_bytes - n,
                 "usable: %" PRIu32 " sensors in %" PRIu32 " chunks, chunk lsns up to %" PRIu64,
                 v.loaded.sensors, v.chunks, v.loaded.end_lsn);
    } else if (rc > 0) {
        snprintf(out + n, out_bytes - n, "UNUSABLE (a restart skips it): %s", v.why);
    } else {
        snprintf(out + n, out_bytes - n, "UNUSABLE: cannot read: %s", strerror(-rc));
    }
    return rc == 0;
}

static void check_checkpoints(const struct options *opt, char **names, uint32_t n, struct totals *t)
{
    for (uint32_t i = 0; i < n; i++) {
        char path[8192];
        char what[768];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", opt->dir, names[i]);
        bool usable = describe_checkpoint(opt, names[i], what, sizeof what);
        t->checkpoints_unusable += !usable;
        if (!opt->json) {
            printf("%s: checkpoint, %lld bytes, %s\n", names[i],
                   stat(path, &st) == 0 ? (long long)st.st_size : -1LL, what);
        }
    }
}

static void print_json(const struct totals *t, uint32_t checkpoints)
{
    printf("{\"segments\":%" PRIu64 ",\"bad_segment_headers\":%" PRIu64 ",\"records\":%" PRIu64
           ",\"readings\":%" PRIu64 ",\"first_lsn\":%" PRIu64 ",\"last_lsn\":%" PRIu64
           ",\"corrupt_regions\":%" PRIu64 ",\"corrupt_records\":%" PRIu64
           ",\"corrupt_bytes\":%" PRIu64 ",\"tail_bytes\":%" PRIu64
           ",\"checkpoints\":%u,\"checkpoints_unusable\":%" PRIu64 "}\n",
           t->segments, t->bad_headers, t->records, t->readings, t->first_lsn, t->last_lsn,
           t->corrupt_regions, t->corrupt_records, t->corrupt_bytes, t->tail_bytes, checkpoints,
           t->checkpoints_unusable);
}

static int parse(int argc, char **argv, struct options *opt)
{
    memset(opt, 0, sizeof *opt);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--records") == 0) {
            opt->records = true;
        } else if (strcmp(argv[i], "--json") == 0) {
            opt->json = true;
        } else if (strcmp(argv[i], "--help") == 0) {
            printf("usage: sluice-log [--records] [--json] DATA_DIR\n"
                   "Lists a data directory's log segments and checkpoints, and any damage.\n"
                   "Exit 0 clean, 1 damage or an unusable checkpoint found, 2 bad usage.\n");
            return 1;
        } else if (argv[i][0] == '-' || opt->dir != NULL) {
            return usage_error("unexpected argument '%s'", argv[i]);
        } else {
            opt->dir = argv[i];
        }
    }
    return opt->dir == NULL ? usage_error("a data directory is required") : 0;
}

int main(int argc, char **argv)
{
    tool_name = "sluice-log";
    struct options opt;
    int rc = parse(argc, argv, &opt);
    if (rc != 0) {
        return rc > 0 ? 0 : 2;
    }
    struct stat st;
    if (stat(opt.dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        log_error("%s: not a directory", opt.dir);
        return 2;
    }
    static char *segs[SEGMENTS_MAX], *ckpts[1024];
    uint32_t n = list_names(opt.dir, "log-", ".seg", segs, SEGMENTS_MAX);
    uint32_t nc = list_names(opt.dir, "ckpt-", ".ckpt", ckpts, 1024);
    struct totals t = {0};
    for (uint32_t i = 0; i < n; i++) {
        scan_file(&opt, segs[i], &t, i + 1 == n);
        free(segs[i]);
    }
    check_checkpoints(&opt, ckpts, nc, &t);
    if (opt.json) {
        print_json(&t, nc);
    } else {
        printf("total: %" PRIu64 " segments, %" PRIu64 " records, %" PRIu64
               " readings, lsn %" PRIu64 "..%" PRIu64 ", %u checkpoints; damage: %" PRIu64
               " records lost (%" PRIu64 " bytes) in %" PRIu64 " damaged regions, %" PRIu64
               " tail bytes, %" PRIu64 " bad headers, %" PRIu64 " unusable checkpoints\n",
               t.segments, t.records, t.readings, t.first_lsn, t.last_lsn, nc, t.corrupt_records,
               t.corrupt_bytes, t.corrupt_regions, t.tail_bytes, t.bad_headers,
               t.checkpoints_unusable);
    }
    for (uint32_t i = 0; i < nc; i++) {
        free(ckpts[i]);
    }
    return (t.corrupt_regions || t.tail_bytes || t.bad_headers || t.checkpoints_unusable) ? 1 : 0;
}
