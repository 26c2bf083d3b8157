/*
 * The named-series registry (docs/spec/LINE_PROTOCOL.md, "Series, names and
 * ids"): canonical name <-> sensor id, ids from id_base up in creation
 * order, never reused.
 *
 * Layout, all taken from the arena at start and never grown:
 *   entries   one 24-byte record a series, in id order: the name's hash, its
 *             offset in the name arena, its length;
 *   slots     open addressing over >= 2 slots a series (a power of two), each
 *             a u32: 0 empty, else the entry's index + 1; linear probing;
 *   names     the name bytes, back to back (--series-name-bytes).
 * Memory: 32 to 40 B a series (a 24 B entry, 2 to 4 slots of 4 B: twice the
 * capacity rounded up to a power of two) plus its name's bytes.
 *
 * Concurrency: one writer at a time (the caller serializes sl_series_intern
 * and sl_series_restore); readers on any thread at any time, without locks.
 * An entry and its name are written before the slot that points at it is
 * stored with release order, and `count` is raised (release) after the slot:
 * a reader that loads a slot or the count with acquire order sees the whole
 * entry. Published entries never change.
 *
 * The hash is keyed by a seed the caller draws at start (getrandom), so that
 * names chosen to collide cannot be prepared in advance.
 */
#ifndef SL_STORE_SERIES_H
#define SL_STORE_SERIES_H

#include <stdatomic.h>
#include <stdint.h>

#include "core/plan.h"

#define SL_SERIES_DEFAULT 65536u
#define SL_SERIES_MAX (1u << 24)                 /* 16,777,216 */
#define SL_SERIES_NAME_BYTES_DEFAULT (8ull << 20) /* 8 MiB */
#define SL_SERIES_NAME_BYTES_PER_SERIES 128u       /* the default arena: 8 MiB at 65,536 series */
#define SL_SERIES_NAME_BYTES_MAX (1ull << 30)     /* 1 GiB */
#define SL_SERIES_NAME_MAX 1024u                  /* bytes of one name */
#define SL_SERIES_ID_BASE_DEFAULT 2147483648u     /* 2^31 */

/* What intern and restore refuse with (negated). */
#define SL_SERIES_FULL 1      /* --max-series reached */
#define SL_SERIES_NAMES_FULL 2 /* --series-name-bytes used up */
#define SL_SERIES_TOO_LONG 3  /* a name over SL_SERIES_NAME_MAX bytes (or empty) */
#define SL_SERIES_BAD_ID 4    /* restore: the id is out of range or another name's */

struct sl_series_entry {
    uint64_t hash;
    uint64_t name_at; /* offset in names */
    uint32_t name_len;
    uint32_t unused;
};

struct sl_series {
    uint32_t capacity; /* series */
    uint32_t mask;     /* slots - 1 */
    uint32_t id_base;
    uint64_t seed;
    uint64_t name_capacity;
    uint64_t name_used; /* writer only */
    _Atomic uint32_t *slots;
    struct sl_series_entry *entries;
    char *names;
    _Atomic uint32_t count;
    _Atomic uint64_t name_bytes_published; /* name_used as readers may see it (metrics) */
};

/* Add the registry's parts to the plan. */
void sl_series_plan(uint32_t capacity, uint64_t name_bytes, struct sl_plan *plan);

/* Take the planned parts from the arena. 1 <= capacity <= SL_SERIES_MAX; id_base + capacity <= 2^32. */
void sl_series_init(struct sl_series *s, uint32_t capacity, uint64_t name_bytes, uint32_t id_base,
                    uint64_t seed, struct sl_arena *arena);

/*
 * The id of a name, creating it when new. *created tells which. 0, or
 * -SL_SERIES_FULL / -SL_SERIES_NAMES_FULL / -SL_SERIES_TOO_LONG (nothing is
 * created). Writer only.
 */
int sl_series_intern(struct sl_series *s, const char *name, uint32_t len, uint32_t *id, int *created);

/*
 * Recovery and checkpoint load: re-create a series with the id it had. A
 * name already there under the same id is fine (0: a checkpoint and the log
 * both hold it); under another id, or an id already another name's, is
 * -SL_SERIES_BAD_ID. An id above the next one leaves the ids between as
 * holes (taken, without a name: their names were in a recycled log
 * segment), so no id is ever given twice; a name the arena cannot hold
 * leaves its id a hole too (-SL_SERIES_NAMES_FULL). Writer only.
 */
int sl_series_restore(struct sl_series *s, uint32_t id, const char *name, uint32_t len);

/* Forget every series (a checkpoint that failed to load half-way). Start-up only, no readers. */
void sl_series_reset(struct sl_series *s);

/* A name's id: 0, or -1 when unknown. Any thread. */
int sl_series_lookup(const struct sl_series *s, const char *name, uint32_t len, uint32_t *id);

/* An id's name (pointing into the registry, never changing): 0, or -1 when the id is not a series. Any thread. */
int sl_series_name(const struct sl_series *s, uint32_t id, const char **name, uint32_t *len);

/* Series created so far, and their name bytes. Any thread. */
uint32_t sl_series_count(const struct sl_series *s);
uint64_t sl_series_name_bytes(const struct sl_series *s);

#endif
