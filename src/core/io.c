/*
 * The syscall seam for file I/O (see io.h for the contract).
 *
 * What: sl_io_posix, a table of thin wrappers over the POSIX calls that
 * return -errno instead of -1 (open always adds O_CLOEXEC; fallocate has
 * posix_fallocate's semantics, which returns the error number instead of
 * setting errno); the helpers that every user of the seam needs
 * (sl_io_fsync_dir, sl_io_pwrite_all, sl_io_pread_all); and the fault
 * injector, sl_io_faults, driven by a spec string.
 *
 * How the injector works: sl_io_faults_init parses the spec into a fixed
 * array of rules and fills faults->io with wrappers whose `state` points back
 * at the struct sl_io_faults. Each wrapper of a faultable operation bumps
 * calls[op] (an atomic fetch-add, so the call number is exact even if two
 * threads share the table) and fails the call when a rule for that op covers
 * the call number; otherwise it forwards to the inner table. A pwrite call is
 * numbered once and the number is shared by the `pwrite` and `pwrite_short`
 * rules (calls[SL_IO_OP_PWRITE_SHORT] mirrors calls[SL_IO_OP_PWRITE]); when
 * both match, the error wins. A `pwrite_short` rule writes the first half of
 * the bytes through the inner table and returns that count: the ERRNO of a
 * pwrite_short rule is parsed but not used (a caller that retries the rest
 * makes another call, which a `pwrite` rule can then fail, the way a disk that
 * fills up mid-write behaves). close, pread, ftruncate and unlink are
 * forwarded untouched.
 *
 * Memory: none; the injector lives in the caller's struct. Limits:
 * SL_IO_FAULT_RULES_MAX rules; call numbers up to 19 decimal digits.
 * Threads: the posix table and the helpers are safe from any thread; the
 * injector's rules are read-only after init, its counters are atomics.
 */
#include "core/io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "core/assert.h"

/* ---- the POSIX table ---- */

static int posix_open(const struct sl_io *io, const char *path, int flags, int mode)
{
    (void)io;
    int fd = open(path, flags | O_CLOEXEC, (mode_t)mode);
    if (fd < 0) {
        return -errno;
    }
    return fd;
}

static int posix_close(const struct sl_io *io, int fd)
{
    (void)io;
    /* Never retried: on Linux the descriptor is gone even when close reports EINTR. */
    if (close(fd) != 0) {
        return -errno;
    }
    return 0;
}

static int64_t posix_pwrite(const struct sl_io *io, int fd, const void *buf, uint64_t bytes,
                            uint64_t offset)
{
    (void)io;
    ssize_t n = pwrite(fd, buf, (size_t)bytes, (off_t)offset);
    if (n < 0) {
        return -errno;
    }
    return (int64_t)n;
}

static int64_t posix_pread(const struct sl_io *io, int fd, void *buf, uint64_t bytes,
                           uint64_t offset)
{
    (void)io;
    ssize_t n = pread(fd, buf, (size_t)bytes, (off_t)offset);
    if (n < 0) {
        return -errno;
    }
    return (int64_t)n;
}

static int posix_fdatasync(const struct sl_io *io, int fd)
{
    (void)io;
    if (fdatasync(fd) != 0) {
        return -errno;
    }
    return 0;
}

static int posix_fsync(const struct sl_io *io, int fd)
{
    (void)io;
    if (fsync(fd) != 0) {
        return -errno;
    }
    return 0;
}

static int posix_fallocate_(const struct sl_io *io, int fd, uint64_t offset, uint64_t bytes)
{
    (void)io;
    return -posix_fallocate(fd, (off_t)offset, (off_t)bytes); /* returns the error, not -1 */
}

static int posix_ftruncate(const struct sl_io *io, int fd, uint64_t bytes)
{
    (void)io;
    if (ftruncate(fd, (off_t)bytes) != 0) {
        return -errno;
    }
    return 0;
}

static int posix_rename(const struct sl_io *io, const char *from, const char *to)
{
    (void)io;
    if (rename(from, to) != 0) {
        return -errno;
    }
    return 0;
}

static int posix_unlink(const struct sl_io *io, const char *path)
{
    (void)io;
    if (unlink(path) != 0) {
        return -errno;
    }
    return 0;
}

static void posix_writeback(const struct sl_io *io, int fd, uint64_t offset, uint64_t bytes)
{
    (void)io;
    (void)sync_file_range(fd, (off_t)offset, (off_t)bytes, SYNC_FILE_RANGE_WRITE);
}

const struct sl_io sl_io_posix = {
    .open = posix_open,
    .close = posix_close,
    .pwrite = posix_pwrite,
    .pread = posix_pread,
    .fdatasync = posix_fdatasync,
    .fsync = posix_fsync,
    .fallocate = posix_fallocate_,
    .ftruncate = posix_ftruncate,
    .rename = posix_rename,
    .unlink = posix_unlink,
    .writeback = posix_writeback,
    .state = NULL,
};

/* ---- helpers ---- */

int sl_io_fsync_dir(const struct sl_io *io, const char *dir)
{
    int fd = io->open(io, dir, O_RDONLY | O_DIRECTORY, 0);
    if (fd < 0) {
        return fd;
    }
    int rc = io->fsync(io, fd);
    int rc_close = io->close(io, fd);
    return rc != 0 ? rc : rc_close;
}

/*
 * Bounded: every round either writes at least one byte or returns; EINTR
 * retries are capped so a signal storm cannot spin forever.
 */
#define SL_IO_EINTR_RETRIES_MAX 1000u

int sl_io_pwrite_all(const struct sl_io *io, int fd, const void *buf, uint64_t bytes,
                     uint64_t offset)
{
    const uint8_t *p = buf;
    uint64_t done = 0;
    uint32_t interrupted = 0;
    while (done < bytes) {
        int64_t n = io->pwrite(io, fd, p + done, bytes - done, offset + done);
        if (n == -EINTR && interrupted < SL_IO_EINTR_RETRIES_MAX) {
            interrupted++;
            continue;
        }
        if (n < 0) {
            return (int)n;
        }
        if (n == 0) {
            return -EIO; /* no progress: a write that can never complete */
        }
        SL_ASSERT((uint64_t)n <= bytes - done);
        done += (uint64_t)n;
    }
    return 0;
}

int sl_io_pread_all(const struct sl_io *io, int fd, void *buf, uint64_t bytes, uint64_t offset)
{
    uint8_t *p = buf;
    uint64_t done = 0;
    uint32_t interrupted = 0;
    while (done < bytes) {
        int64_t n = io->pread(io, fd, p + done, bytes - done, offset + done);
        if (n == -EINTR && interrupted < SL_IO_EINTR_RETRIES_MAX) {
            interrupted++;
            continue;
        }
        if (n < 0) {
            return (int)n;
        }
        if (n == 0) {
            return -ENODATA; /* the file is shorter than asked */
        }
        SL_ASSERT((uint64_t)n <= bytes - done);
        done += (uint64_t)n;
    }
    return 0;
}

/* ---- the fault injector ---- */

static struct sl_io_faults *faults_of(const struct sl_io *io)
{
    SL_ASSERT(io->state != NULL);
    return io->state;
}

/* The error a rule for `op` injects into call number `call`, or 0. */
static int faults_match(struct sl_io_faults *f, enum sl_io_op op, uint64_t call)
{
    SL_ASSERT(f->rules_count <= SL_IO_FAULT_RULES_MAX);
    for (uint32_t i = 0; i < f->rules_count; i++) {
        const struct sl_io_fault_rule *r = &f->rules[i];
        if (r->op == op && call >= r->first && call <= r->last) {
            atomic_fetch_add_explicit(&f->injected[op], 1, memory_order_relaxed);
            return r->error;
        }
    }
    return 0;
}

/* Count a call of `op` and return the error to inject (positive), or 0. */
static int faults_call(struct sl_io_faults *f, enum sl_io_op op)
{
    uint64_t call = atomic_fetch_add_explicit(&f->calls[op], 1, memory_order_relaxed) + 1;
    return faults_match(f, op, call);
}

static int faulty_open(const struct sl_io *io, const char *path, int flags, int mode)
{
    struct sl_io_faults *f = faults_of(io);
    int error = faults_call(f, SL_IO_OP_OPEN);
    if (error != 0) {
        return -error;
    }
    return f->inner->open(f->inner, path, flags, mode);
}

static int faulty_close(const struct sl_io *io, int fd)
{
    struct sl_io_faults *f = faults_of(io);
    return f->inner->close(f->inner, fd);
}

static int64_t faulty_pwrite(const struct sl_io *io, int fd, const void *buf, uint64_t bytes,
                             uint64_t offset)
{
    struct sl_io_faults *f = faults_of(io);
    uint64_t call =
        atomic_fetch_add_explicit(&f->calls[SL_IO_OP_PWRITE], 1, memory_order_relaxed) + 1;
    atomic_fetch_add_explicit(&f->calls[SL_IO_OP_PWRITE_SHORT], 1, memory_order_relaxed);
    int error = faults_match(f, SL_IO_OP_PWRITE, call);
    if (error != 0) {
        return -error;
    }
    if (faults_match(f, SL_IO_OP_PWRITE_SHORT, call) != 0) {
        return f->inner->pwrite(f->inner, fd, buf, bytes / 2, offset);
    }
    return f->inner->pwrite(f->inner, fd, buf, bytes, offset);
}

static int64_t faulty_pread(const struct sl_io *io, int fd, void *buf, uint64_t bytes,
                            uint64_t offset)
{
    struct sl_io_faults *f = faults_of(io);
    return f->inner->pread(f->inner, fd, buf, bytes, offset);
}

static int faulty_fdatasync(const struct sl_io *io, int fd)
{
    struct sl_io_faults *f = faults_of(io);
    int error = faults_call(f, SL_IO_OP_FDATASYNC);
    if (error != 0) {
        return -error;
    }
    return f->inner->fdatasync(f->inner, fd);
}

static int faulty_fsync(const struct sl_io *io, int fd)
{
    struct sl_io_faults *f = faults_of(io);
    int error = faults_call(f, SL_IO_OP_FSYNC);
    if (error != 0) {
        return -error;
    }
    return f->inner->fsync(f->inner, fd);
}

static int faulty_fallocate(const struct sl_io *io, int fd, uint64_t offset, uint64_t bytes)
{
    struct sl_io_faults *f = faults_of(io);
    int error = faults_call(f, SL_IO_OP_FALLOCATE);
    if (error != 0) {
        return -error;
    }
    return f->inner->fallocate(f->inner, fd, offset, bytes);
}

static int faulty_ftruncate(const struct sl_io *io, int fd, uint64_t bytes)
{
    struct sl_io_faults *f = faults_of(io);
    return f->inner->ftruncate(f->inner, fd, bytes);
}

static void faulty_writeback(const struct sl_io *io, int fd, uint64_t offset, uint64_t bytes)
{
    struct sl_io_faults *f = faults_of(io);
    if (f->inner->writeback != NULL) {
        f->inner->writeback(f->inner, fd, offset, bytes);
    }
}

static int faulty_rename(const struct sl_io *io, const char *from, const char *to)
{
    struct sl_io_faults *f = faults_of(io);
    int error = faults_call(f, SL_IO_OP_RENAME);
    if (error != 0) {
        return -error;
    }
    return f->inner->rename(f->inner, from, to);
}

static int faulty_unlink(const struct sl_io *io, const char *path)
{
    struct sl_io_faults *f = faults_of(io);
    return f->inner->unlink(f->inner, path);
}

/* ---- spec parsing ---- */

static const char *const op_names[SL_IO_OP_COUNT] = {
    [SL_IO_OP_PWRITE] = "pwrite",       [SL_IO_OP_PWRITE_SHORT] = "pwrite_short",
    [SL_IO_OP_FDATASYNC] = "fdatasync", [SL_IO_OP_FSYNC] = "fsync",
    [SL_IO_OP_FALLOCATE] = "fallocate", [SL_IO_OP_OPEN] = "open",
    [SL_IO_OP_RENAME] = "rename",
};

static const struct {
    const char *name;
    int error;
} error_names[] = {{"EIO", EIO}, {"ENOSPC", ENOSPC}, {"EDQUOT", EDQUOT}};

#define SL_IO_SPEC_DIGITS_MAX 19u /* fits a uint64_t without overflow */

/* The field of `s` up to `stop` (or the end): its length. */
static size_t field_len(const char *s, char stop)
{
    size_t n = strcspn(s, ",");
    const char *p = memchr(s, stop, n);
    return p != NULL ? (size_t)(p - s) : n;
}

static bool field_is(const char *s, size_t len, const char *word)
{
    return strlen(word) == len && memcmp(s, word, len) == 0;
}

/* A decimal call number >= 1 of exactly `len` characters. */
static bool parse_count(const char *s, size_t len, uint64_t *out)
{
    if (len == 0 || len > SL_IO_SPEC_DIGITS_MAX) {
        return false;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return v >= 1;
}

/* Parse the range "FIRST[-LAST]" of `len` characters. */
static int parse_range(const char *s, size_t len, struct sl_io_fault_rule *rule, const char **why)
{
    const char *dash = memchr(s, '-', len);
    size_t first_len = dash != NULL ? (size_t)(dash - s) : len;
    if (!parse_count(s, first_len, &rule->first)) {
        *why = "bad call number (a decimal count from 1)";
        return -EINVAL;
    }
    if (dash == NULL) {
        rule->last = rule->first;
        return 0;
    }
    const char *last = dash + 1;
    size_t last_len = len - first_len - 1;
    if (field_is(last, last_len, "*")) {
        rule->last = UINT64_MAX;
        return 0;
    }
    if (!parse_count(last, last_len, &rule->last)) {
        *why = "bad last call number (a decimal count from 1, or *)";
        return -EINVAL;
    }
    if (rule->last < rule->first) {
        *why = "the last call number is below the first";
        return -EINVAL;
    }
    return 0;
}

/* Parse one rule "OP:ERRNO:RANGE" at s; *used gets its length. */
static int parse_rule(const char *s, struct sl_io_fault_rule *rule, size_t *used, const char **why)
{
    size_t rule_len = strcspn(s, ",");
    *used = rule_len;
    size_t op_len = field_len(s, ':');
    if (op_len == rule_len) {
        *why = "a rule is OP:ERRNO:FIRST[-LAST]";
        return -EINVAL;
    }
    uint32_t op = 0;
    while (op < SL_IO_OP_COUNT && !field_is(s, op_len, op_names[op])) {
        op++;
    }
    if (op == SL_IO_OP_COUNT) {
        *why =
            "unknown operation (pwrite, pwrite_short, fdatasync, fsync, fallocate, open, rename)";
        return -EINVAL;
    }
    rule->op = (enum sl_io_op)op;
    const char *e = s + op_len + 1;
    size_t e_len = field_len(e, ':');
    if (op_len + 1 + e_len == rule_len) {
        *why = "a rule is OP:ERRNO:FIRST[-LAST]";
        return -EINVAL;
    }
    rule->error = 0;
    for (uint32_t i = 0; i < SL_ARRAY_COUNT(error_names); i++) {
        if (field_is(e, e_len, error_names[i].name)) {
            rule->error = error_names[i].error;
        }
    }
    if (rule->error == 0) {
        *why = "unknown error (EIO, ENOSPC or EDQUOT)";
        return -EINVAL;
    }
    const char *range = e + e_len + 1;
    return parse_range(range, rule_len - op_len - e_len - 2, rule, why);
}

static void faults_table(struct sl_io_faults *faults)
{
    faults->io = (struct sl_io){
        .open = faulty_open,
        .close = faulty_close,
        .pwrite = faulty_pwrite,
        .pread = faulty_pread,
        .fdatasync = faulty_fdatasync,
        .fsync = faulty_fsync,
        .fallocate = faulty_fallocate,
        .ftruncate = faulty_ftruncate,
        .rename = faulty_rename,
        .unlink = faulty_unlink,
        .writeback = faulty_writeback,
        .state = faults,
    };
}

int sl_io_faults_init(struct sl_io_faults *faults, const struct sl_io *inner, const char *spec,
                      const char **why)
{
    SL_ASSERT(inner != NULL);
    memset(faults, 0, sizeof *faults);
    faults->inner = inner;
    faults_table(faults);
    const char *s = spec != NULL ? spec : "";
    if (*s == '\0') {
        return 0; /* no rules: every call passes through, counted */
    }
    /* Each round consumes one rule and its comma; at most SL_IO_FAULT_RULES_MAX rounds. */
    for (;;) {
        if (faults->rules_count == SL_IO_FAULT_RULES_MAX) {
            faults->rules_count = 0;
            *why = "too many rules (16 at most)";
            return -EINVAL;
        }
        size_t used = 0;
        int rc = parse_rule(s, &faults->rules[faults->rules_count], &used, why);
        if (rc != 0) {
            faults->rules_count = 0;
            return rc;
        }
        faults->rules_count++;
        if (s[used] == '\0') {
            return 0;
        }
        s += used + 1; /* past the comma */
    }
}
