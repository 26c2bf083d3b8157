/*
 * Heap allocation counting, to prove that the ingest path never allocates.
 *
 * alloc_count.c interposes malloc, calloc, realloc, free, posix_memalign,
 * aligned_alloc, memalign, valloc, pvalloc and reallocarray, forwarding to
 * glibc's __libc_* entry points. Under AddressSanitizer (which owns malloc)
 * it installs ASan's malloc/free hooks instead. Every call made by a thread
 * that is tracking bumps that thread's class counter.
 *
 * A thread opts in with sl_alloc_track(class): the ingest thread tracks as
 * SL_ALLOC_INGEST, the HTTP thread as SL_ALLOC_HTTP. Counters are process-wide
 * relaxed atomics; reading them is safe from any thread.
 *
 * Linked only into binaries that want it (sluiced, the zero-allocation test):
 * the library itself never depends on it, so tools keep the plain allocator.
 */
#ifndef SL_CORE_ALLOC_COUNT_H
#define SL_CORE_ALLOC_COUNT_H

#include <stdbool.h>
#include <stdint.h>

enum sl_alloc_class {
    SL_ALLOC_UNTRACKED = 0,
    SL_ALLOC_INGEST = 1,
    SL_ALLOC_HTTP = 2,
};
#define SL_ALLOC_CLASS_COUNT 3

/* Count this thread's allocations (malloc, calloc, realloc, ...) under `cls`. */
void sl_alloc_track(enum sl_alloc_class cls);

/* Allocations counted for a class since the process started. */
uint64_t sl_alloc_count(enum sl_alloc_class cls);

/* Frees counted for a class since the process started. */
uint64_t sl_alloc_free_count(enum sl_alloc_class cls);

/* True when the interposer (or the ASan hook) is live in this binary. */
bool sl_alloc_counting_active(void);

#endif
