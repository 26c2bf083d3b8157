/*
 * The memory plan and the arena (see plan.h for the contract).
 *
 * One anonymous private mapping holds every byte the daemon's ingest path
 * and query path will use. It is requested with transparent huge pages
 * (fewer TLB misses on the random access of a multi-gigabyte sensor store)
 * and pre-faulted at once, because first-touch paging runs at well under
 * 1 GB/s on small VMs and must not happen under load. mlock is attempted so
 * the plan can never be swapped out; it fails quietly under a small
 * RLIMIT_MEMLOCK and the arena records whether it held.
 *
 * Start-up only, main thread. Memory: exactly the plan, rounded up to 2 MiB.
 */
#include "core/plan.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/assert.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define SL_ARENA_ROUND_BYTES (2u << 20) /* a huge page */

void sl_plan_init(struct sl_plan *plan)
{
    memset(plan, 0, sizeof *plan);
}

void sl_plan_add(struct sl_plan *plan, const char *name, uint64_t bytes, const char *what)
{
    SL_ASSERT(plan->count < SL_PLAN_PARTS_MAX);
    SL_ASSERT(name != NULL);
    struct sl_plan_part *part = &plan->parts[plan->count++];
    part->name = name;
    part->what = what;
    part->bytes = sl_align_up(bytes, SL_PLAN_ALIGN);
    plan->total_bytes += part->bytes;
}

uint64_t sl_plan_part_bytes(const struct sl_plan *plan, const char *name)
{
    for (uint32_t i = 0; i < plan->count; i++) {
        if (strcmp(plan->parts[i].name, name) == 0) {
            return plan->parts[i].bytes;
        }
    }
    return 0;
}

static void arena_prefault(uint8_t *base, uint64_t bytes)
{
    if (madvise(base, bytes, MADV_POPULATE_WRITE) == 0) {
        return;
    }
    /* Kernels before 5.14: touch one byte a page. */
    long page = sysconf(_SC_PAGESIZE);
    uint64_t step = page > 0 ? (uint64_t)page : 4096;
    for (uint64_t off = 0; off < bytes; off += step) {
        ((volatile uint8_t *)base)[off] = 0;
    }
}

int sl_arena_map(struct sl_arena *arena, uint64_t bytes)
{
    memset(arena, 0, sizeof *arena);
    uint64_t mapped = sl_align_up(bytes > 0 ? bytes : 1, SL_ARENA_ROUND_BYTES);
    void *base = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
        return -errno;
    }
    arena->base = base;
    arena->bytes = mapped;
    arena->huge = madvise(base, mapped, MADV_HUGEPAGE) == 0;
    arena_prefault(arena->base, mapped);
    arena->locked = mlock(base, mapped) == 0;
    return 0;
}

void *sl_arena_take(struct sl_arena *arena, uint64_t bytes)
{
    SL_ASSERT(!arena->sealed);
    SL_ASSERT(arena->base != NULL);
    uint64_t rounded = sl_align_up(bytes, SL_PLAN_ALIGN);
    SL_ASSERT(rounded <= arena->bytes - arena->used_bytes);
    void *p = arena->base + arena->used_bytes;
    arena->used_bytes += rounded;
    return p; /* fresh anonymous memory is zero */
}

void sl_arena_seal(struct sl_arena *arena)
{
    arena->sealed = true;
}

void sl_arena_unmap(struct sl_arena *arena)
{
    if (arena->base != NULL) {
        munmap(arena->base, arena->bytes);
    }
    memset(arena, 0, sizeof *arena);
}
