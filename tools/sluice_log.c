/*
 * sluice-log: inspect a data directory without starting the gateway.
 *
 *   sluice-log DIR              one line per segment and per checkpoint, and totals
 *   sluice-log --records DIR    also one line per record
 *   sluice-log --json DIR       the same as one JSON object (segments, damage, totals)
 *
 * It reads the files read-only (mmap) with the same scanner recovery uses
 * (sl_log_scan_segment), so what it reports as damage is exactly what a
 * restart would skip or cut. It never writes. Exit 0 when every segment
 * scanned cleanly, 1 when it found damage (corrupt records, a torn tail,
 * an unreadable header), 2 on bad usage or an unreadable directory.
 *
 * A checkpoint's line gives its header (docs/STORAGE.md): format version,
 * seq, start lsn, store geometry, creation time, once its magic and header
 * CRC check out; otherwise what is wrong with it. Only the header is read:
 * whether the rest of the file would load is the loader's to say, at start.
 * Checkpoints do not change the exit status.
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
    uint64_t segments, bad_headers, records, readings, corrupt_records, corrupt_bytes, tail_bytes;
    uint64_t first_lsn, last_lsn;
    bool first_segment;
};

struct record_printer {
    const struct options *opt;
    uint64_t base; /* address of the mapping, to print offsets */
};

static int print_record(void *ctx, const struct sl_log_record *r)
{
    const struct record_printer *p = ctx;
    if (p->opt->records && !p->opt->json) {
        uint64_t offset = (uint64_t)(uintptr_t)r->batch.readings - SL_LOG_RECORD_HEADER_BYTES - p->base;
        printf("  record lsn %" PRIu64 " at %" PRIu64 ": %s stream %" PRIu32 " seq %" PRIu64
               ", %u readings from %" PRId64 " us, accepted at %" PRId64 " us\n",
               r->lsn, offset, r->transport == SL_LOG_TCP ? "tcp" : "udp", r->batch.header.stream_id,
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
        t->corrupt_records += scan.corrupt_records;
        t->corrupt_bytes += scan.corrupt_bytes;
        t->tail_bytes += scan.tail_bytes;
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
            if (scan.corrupt_records > 0) {
                printf(", %" PRIu64 " corrupt regions (%" PRIu64 " bytes) skipped", scan.corrupt_records,
                       scan.corrupt_bytes);
            }
            if (scan.tail_bytes > 0) {
                printf(", %" PRIu64 " damaged bytes after the last record (%s)", scan.tail_bytes,
                       last ? "a torn tail: cut at restart" : "corrupt");
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

/* What a checkpoint's 128-byte header says, or what is wrong with it, into out. */
static void describe_checkpoint(const char *path, char *out, size_t out_bytes)
{
    uint8_t h[SL_CHECKPOINT_HEADER_BYTES];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t got = fd < 0 ? -1 : pread(fd, h, sizeof h, 0);
    int err = errno;
    if (fd >= 0) {
        close(fd);
    }
    if (got < 0) {
        snprintf(out, out_bytes, "unreadable: %s", strerror(err));
    } else if ((size_t)got < sizeof h) {
        snprintf(out, out_bytes, "truncated header (%zd of 128 bytes)", got);
    } else {
        struct sl_checkpoint_header hd;
        const char *why = NULL;
        if (sl_checkpoint_header_decode(h, &hd, &why) != 0) {
            snprintf(out, out_bytes, "%s", why);
            return;
        }
        time_t created_s = (time_t)(hd.created_us / 1000000);
        struct tm tm;
        char created[64] = "?";
        if (gmtime_r(&created_s, &tm) != NULL) {
            strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tm);
        }
        snprintf(out, out_bytes,
                 "version %" PRIu32 ", seq %" PRIu64 ", start lsn %" PRIu64 ", %" PRIu32
                 " sensors x %" PRIu32 " readings, %" PRIu32 " coarse buckets, created %s",
                 hd.version, hd.seq, hd.start_lsn, hd.sensors_max, hd.ring_readings,
                 hd.coarse_buckets_total, created);
    }
}

static void print_checkpoints(const struct options *opt, char **names, uint32_t n)
{
    for (uint32_t i = 0; i < n && !opt->json; i++) {
        char path[8192];
        char what[256];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", opt->dir, names[i]);
        describe_checkpoint(path, what, sizeof what);
        printf("%s: checkpoint, %lld bytes, %s\n", names[i],
               stat(path, &st) == 0 ? (long long)st.st_size : -1LL, what);
    }
}

static void print_json(const struct totals *t, uint32_t checkpoints)
{
    printf("{\"segments\":%" PRIu64 ",\"bad_segment_headers\":%" PRIu64 ",\"records\":%" PRIu64
           ",\"readings\":%" PRIu64 ",\"first_lsn\":%" PRIu64 ",\"last_lsn\":%" PRIu64
           ",\"corrupt_records\":%" PRIu64 ",\"corrupt_bytes\":%" PRIu64 ",\"tail_bytes\":%" PRIu64
           ",\"checkpoints\":%u}\n",
           t->segments, t->bad_headers, t->records, t->readings, t->first_lsn, t->last_lsn,
           t->corrupt_records, t->corrupt_bytes, t->tail_bytes, checkpoints);
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
                   "Exit 0 clean, 1 damage found, 2 bad usage.\n");
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
    print_checkpoints(&opt, ckpts, nc);
    if (opt.json) {
        print_json(&t, nc);
    } else {
        printf("total: %" PRIu64 " segments, %" PRIu64 " records, %" PRIu64 " readings, lsn %" PRIu64
               "..%" PRIu64 ", %u checkpoints; damage: %" PRIu64 " corrupt regions, %" PRIu64
               " tail bytes, %" PRIu64 " bad headers\n",
               t.segments, t.records, t.readings, t.first_lsn, t.last_lsn, nc, t.corrupt_records,
               t.tail_bytes, t.bad_headers);
    }
    for (uint32_t i = 0; i < nc; i++) {
        free(ckpts[i]);
    }
    return (t.corrupt_records || t.tail_bytes || t.bad_headers) ? 1 : 0;
}
