/*
 * The memory plan and the arena.
 *
 * At start-up each module states, from the configuration, every byte it will
 * ever use (sl_plan_add), the daemon maps the total in one go
 * (sl_arena_map: one anonymous mapping, transparent huge pages requested,
 * pre-faulted with MADV_POPULATE_WRITE or by touching every page, mlock'ed
 * when the limit allows), then each module takes its part in the same order
 * (sl_arena_take). After start-up the arena is sealed: a take after the seal
 * is a bug and asserts. RSS therefore equals the plan from the first second
 * and cannot creep.
 *
 * Single-threaded: used only during start-up, by the main thread.
 */
#ifndef SL_CORE_PLAN_H
#define SL_CORE_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SL_PLAN_PARTS_MAX 32
#define SL_PLAN_ALIGN 64 /* every part starts on a cache line */

struct sl_plan_part {
    const char *name; /* stable identifier, e.g. "ring_values" (metric label) */
    const char *what; /* one line for --print-memory-plan */
    uint64_t bytes;   /* rounded up to SL_PLAN_ALIGN */
};

struct sl_plan {
    struct sl_plan_part parts[SL_PLAN_PARTS_MAX];
    uint32_t count;
    uint64_t total_bytes;
};

void sl_plan_init(struct sl_plan *plan);

/* Add a part (bytes rounded up to SL_PLAN_ALIGN). Asserts on overflow of the part table. */
void sl_plan_add(struct sl_plan *plan, const char *name, uint64_t bytes, const char *what);

/* Bytes of the part called `name`, 0 when absent. */
uint64_t sl_plan_part_bytes(const struct sl_plan *plan, const char *name);

struct sl_arena {
    uint8_t *base;
    uint64_t bytes;      /* mapped */
    uint64_t used_bytes; /* handed out so far */
    bool sealed;
    bool locked; /* mlock succeeded */
    bool huge;   /* MADV_HUGEPAGE accepted */
};

/*
 * Map and pre-fault `bytes` (rounded up to the page size). Returns 0, or
 * -errno when the mapping fails (the caller reports it and exits).
 */
int sl_arena_map(struct sl_arena *arena, uint64_t bytes);

/* Hand out the next `bytes` (rounded to SL_PLAN_ALIGN), zeroed. Asserts it fits and is not sealed. */
void *sl_arena_take(struct sl_arena *arena, uint64_t bytes);

/* No more takes from now on. */
void sl_arena_seal(struct sl_arena *arena);

void sl_arena_unmap(struct sl_arena *arena);

static inline uint64_t sl_align_up(uint64_t x, uint64_t a)
{
    return (x + a - 1) / a * a;
}

#endif
