/*
 * The syscall seam for file I/O.
 *
 * Everything the durable log and the checkpoints do to files goes through a
 * `struct sl_io`, so tests can inject the failures disks really produce:
 * ENOSPC, EIO, short writes, a failing fsync. Production uses sl_io_posix,
 * a table of thin wrappers. Every function returns 0 (or a byte count) on
 * success and a negative errno on failure: never -1 with errno.
 *
 * sl_io_faulty wraps another table and fails chosen calls; it is driven by a
 * spec string so the daemon can be started with faults for integration
 * tests (--io-faults, a testing flag documented as such).
 */
#ifndef SL_CORE_IO_H
#define SL_CORE_IO_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

struct sl_io {
    int (*open)(const struct sl_io *io, const char *path, int flags, int mode); /* fd or -errno */
    int (*close)(const struct sl_io *io, int fd);
    /* Bytes written (maybe short) or -errno. */
    int64_t (*pwrite)(const struct sl_io *io, int fd, const void *buf, uint64_t bytes, uint64_t offset);
    /* Bytes read (0 at end of file) or -errno. */
    int64_t (*pread)(const struct sl_io *io, int fd, void *buf, uint64_t bytes, uint64_t offset);
    int (*fdatasync)(const struct sl_io *io, int fd);
    int (*fsync)(const struct sl_io *io, int fd);
    int (*fallocate)(const struct sl_io *io, int fd, uint64_t offset, uint64_t bytes);
    int (*ftruncate)(const struct sl_io *io, int fd, uint64_t bytes);
    int (*rename)(const struct sl_io *io, const char *from, const char *to);
    int (*unlink)(const struct sl_io *io, const char *path);
    /*
     * Start writing [offset, offset + bytes) back to the device without
     * waiting (sync_file_range SYNC_FILE_RANGE_WRITE). A hint: it makes
     * nothing durable (only fdatasync does), so its errors are ignored and a
     * table may leave it NULL.
     */
    void (*writeback)(const struct sl_io *io, int fd, uint64_t offset, uint64_t bytes);
    void *state; /* the fault injector's, or NULL */
};

extern const struct sl_io sl_io_posix;

/* Open a directory and fsync it (after creating, renaming or removing an entry in it). */
int sl_io_fsync_dir(const struct sl_io *io, const char *dir);

/* Write all of buf at offset, retrying short writes; 0 or -errno (-EIO for a zero-byte write). */
int sl_io_pwrite_all(const struct sl_io *io, int fd, const void *buf, uint64_t bytes, uint64_t offset);

/* Read exactly `bytes` at offset; 0, -ENODATA at a short file, or -errno. */
int sl_io_pread_all(const struct sl_io *io, int fd, void *buf, uint64_t bytes, uint64_t offset);

/*
 * Fault injection. A spec is a comma-separated list of rules
 * `OP:ERRNO:FIRST[-LAST]` where OP is one of pwrite, pwrite_short,
 * fdatasync, fsync, fallocate, open, rename, and the counts are the 1-based
 * numbers of that operation's calls that fail (LAST may be omitted for one
 * call, or `*` for every call from FIRST on). ERRNO is EIO, ENOSPC or EDQUOT.
 * pwrite_short writes half the bytes and reports that. Example:
 * "fdatasync:EIO:5-8,pwrite:ENOSPC:20".
 */
#define SL_IO_FAULT_RULES_MAX 16

enum sl_io_op {
    SL_IO_OP_PWRITE = 0,
    SL_IO_OP_PWRITE_SHORT,
    SL_IO_OP_FDATASYNC,
    SL_IO_OP_FSYNC,
    SL_IO_OP_FALLOCATE,
    SL_IO_OP_OPEN,
    SL_IO_OP_RENAME,
    SL_IO_OP_COUNT
};

struct sl_io_fault_rule {
    enum sl_io_op op;
    int error; /* positive errno */
    uint64_t first, last; /* call numbers, 1-based, inclusive; last = UINT64_MAX for '*' */
};

struct sl_io_faults {
    struct sl_io io;           /* the table to hand out: its calls consult the rules */
    const struct sl_io *inner; /* the real one */
    struct sl_io_fault_rule rules[SL_IO_FAULT_RULES_MAX];
    uint32_t rules_count;
    _Atomic uint64_t calls[SL_IO_OP_COUNT];    /* calls seen, per op */
    _Atomic uint64_t injected[SL_IO_OP_COUNT]; /* failures injected, per op */
};

/* Parse a spec into *faults wrapping `inner`. 0, or -EINVAL with a reason in *why. */
int sl_io_faults_init(struct sl_io_faults *faults, const struct sl_io *inner, const char *spec,
                      const char **why);

#endif
