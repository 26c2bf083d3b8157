/*
 * The named-series registry (src/store/series.h): a fixed hash index over
 * an id-ordered entry array and an append-only name arena, one writer and
 * lock-free readers.
 */
#include "store/series.h"

#include <string.h>

#include "core/assert.h"
#include "core/hash.h"

static uint32_t series_slots(uint32_t capacity)
{
    uint32_t slots = 2;
    while (slots < 2 * (uint64_t)capacity) {
        slots *= 2;
    }
    return slots;
}

void sl_series_plan(uint32_t capacity, uint64_t name_bytes, struct sl_plan *plan)
{
    sl_plan_add(plan, "series_entries", (uint64_t)capacity * sizeof(struct sl_series_entry),
                "named series: hash, name offset and length, 24 B a series");
    sl_plan_add(plan, "series_index", (uint64_t)series_slots(capacity) * sizeof(uint32_t),
                "named series: hash index, >= 2 x 4 B slots a series");
    sl_plan_add(plan, "series_names", name_bytes, "named series: the names' bytes (--series-name-bytes)");
}

void sl_series_init(struct sl_series *s, uint32_t capacity, uint64_t name_bytes, uint32_t id_base,
                    uint64_t seed, struct sl_arena *arena)
{
    SL_ASSERT(capacity >= 1 && capacity <= SL_SERIES_MAX);
    SL_ASSERT(name_bytes <= SL_SERIES_NAME_BYTES_MAX);
    SL_ASSERT((uint64_t)id_base + capacity <= (1ull << 32));
    memset(s, 0, sizeof *s);
    uint32_t slots = series_slots(capacity);
    s->capacity = capacity;
    s->mask = slots - 1;
    s->id_base = id_base;
    s->seed = seed;
    s->name_capacity = name_bytes;
    s->entries = sl_arena_take(arena, (uint64_t)capacity * sizeof(struct sl_series_entry));
    s->slots = sl_arena_take(arena, (uint64_t)slots * sizeof(uint32_t));
    s->names = name_bytes > 0 ? sl_arena_take(arena, name_bytes) : NULL;
}

/*
 * A keyed 64-bit hash of the name: 16 bytes a round in two independent
 * multiply-xorshift lanes (so the rounds overlap in the pipeline), the
 * length and the tail folded in, then the full finaliser. Names arrive at
 * millions a second from the line protocol: this is on its hot path.
 */
static uint64_t name_hash(uint64_t seed, const char *p, uint32_t n)
{
    const uint64_t k1 = 0x9E3779B97F4A7C15ull, k2 = 0xC2B2AE3D27D4EB4Full;
    uint64_t a = seed ^ ((uint64_t)n * k1), b = sl_mix64(seed + n);
    uint32_t i = 0;
    for (; i + 16 <= n; i += 16) {
        uint64_t w, v;
        memcpy(&w, p + i, sizeof w);
        memcpy(&v, p + i + 8, sizeof v);
        a = (a ^ w) * k1;
        a ^= a >> 29;
        b = (b ^ v) * k2;
        b ^= b >> 31;
    }
    uint64_t t0 = 0, t1 = 0;
    uint32_t rest = n - i;
    memcpy(&t0, p + i, rest < 8 ? rest : 8);
    if (rest > 8) {
        memcpy(&t1, p + i + 8, rest - 8);
    }
    a = (a ^ t0) * k1;
    b = (b ^ t1 ^ ((uint64_t)rest << 56)) * k2;
    return sl_mix64(a ^ (b >> 7) ^ (b << 57));
}

/* The slot holding `name`, or the empty slot where it would go; *index is its entry (UINT32_MAX: none). */
static uint32_t probe(const struct sl_series *s, uint64_t hash, const char *name, uint32_t len,
                      uint32_t *index)
{
    uint32_t slot = (uint32_t)hash & s->mask;
    for (uint32_t probes = 0; probes <= s->mask; probes++) {
        uint32_t v = atomic_load_explicit(&s->slots[slot], memory_order_acquire);
        if (v == 0) {
            *index = UINT32_MAX;
            return slot;
        }
        const struct sl_series_entry *e = &s->entries[v - 1];
        if (e->hash == hash && e->name_len == len && memcmp(s->names + e->name_at, name, len) == 0) {
            *index = v - 1;
            return slot;
        }
        slot = (slot + 1) & s->mask;
    }
    SL_ASSERT(0 && "the index is never full: it has twice the slots of the table");
    return 0;
}

/* Write a new entry at index `count` and publish it. Preconditions checked by the callers. */
static void publish(struct sl_series *s, uint32_t slot, uint64_t hash, const char *name, uint32_t len)
{
    uint32_t index = atomic_load_explicit(&s->count, memory_order_relaxed);
    memcpy(s->names + s->name_used, name, len);
    s->entries[index] = (struct sl_series_entry){.hash = hash, .name_at = s->name_used, .name_len = len};
    s->name_used += len;
    atomic_store_explicit(&s->slots[slot], index + 1, memory_order_release);
    atomic_store_explicit(&s->count, index + 1, memory_order_release);
    atomic_store_explicit(&s->name_bytes_published, s->name_used, memory_order_relaxed);
}

static int check_room(const struct sl_series *s, uint32_t len)
{
    if (len == 0 || len > SL_SERIES_NAME_MAX) {
        return -SL_SERIES_TOO_LONG;
    }
    if (atomic_load_explicit(&s->count, memory_order_relaxed) == s->capacity) {
        return -SL_SERIES_FULL;
    }
    if (s->name_used + len > s->name_capacity) {
        return -SL_SERIES_NAMES_FULL;
    }
    return 0;
}

int sl_series_intern(struct sl_series *s, const char *name, uint32_t len, uint32_t *id, int *created)
{
    *created = 0;
    if (len == 0 || len > SL_SERIES_NAME_MAX) {
        return -SL_SERIES_TOO_LONG;
    }
    uint64_t hash = name_hash(s->seed, name, len);
    uint32_t index;
    uint32_t slot = probe(s, hash, name, len, &index);
    if (index != UINT32_MAX) {
        *id = s->id_base + index;
        return 0;
    }
    int rc = check_room(s, len);
    if (rc != 0) {
        return rc;
    }
    *id = s->id_base + atomic_load_explicit(&s->count, memory_order_relaxed);
    publish(s, slot, hash, name, len);
    *created = 1;
    return 0;
}

int sl_series_restore(struct sl_series *s, uint32_t id, const char *name, uint32_t len)
{
    if (len == 0 || len > SL_SERIES_NAME_MAX) {
        return -SL_SERIES_TOO_LONG;
    }
    uint32_t count = atomic_load_explicit(&s->count, memory_order_relaxed);
    if (id < s->id_base || id - s->id_base >= s->capacity) {
        return -SL_SERIES_BAD_ID;
    }
    uint64_t hash = name_hash(s->seed, name, len);
    uint32_t index;
    uint32_t slot = probe(s, hash, name, len, &index);
    if (index != UINT32_MAX) {
        /* Known already (a checkpoint, then the log): fine under its own id, damage otherwise. */
        return index == id - s->id_base ? 0 : -SL_SERIES_BAD_ID;
    }
    if (id - s->id_base < count) {
        return -SL_SERIES_BAD_ID; /* the id is another name's */
    }
    /* Ids whose names were lost (a recycled log segment) stay taken, as holes without a name. */
    bool fits = s->name_used + len <= s->name_capacity;
    uint32_t holes_to = id - s->id_base + (fits ? 0 : 1); /* a name that does not fit: a hole too */
    while (count < holes_to) {
        s->entries[count] = (struct sl_series_entry){.name_at = s->name_used};
        count++;
        atomic_store_explicit(&s->count, count, memory_order_release);
    }
    if (!fits) {
        return -SL_SERIES_NAMES_FULL; /* its id stays taken: never given to another name */
    }
    publish(s, slot, hash, name, len);
    return 0;
}

void sl_series_reset(struct sl_series *s)
{
    memset((void *)s->slots, 0, ((uint64_t)s->mask + 1) * sizeof s->slots[0]);
    s->name_used = 0;
    atomic_store_explicit(&s->count, 0, memory_order_release);
    atomic_store_explicit(&s->name_bytes_published, 0, memory_order_relaxed);
}

int sl_series_lookup(const struct sl_series *s, const char *name, uint32_t len, uint32_t *id)
{
    if (len == 0 || len > SL_SERIES_NAME_MAX) {
        return -1;
    }
    uint32_t index;
    (void)probe(s, name_hash(s->seed, name, len), name, len, &index);
    if (index == UINT32_MAX) {
        return -1;
    }
    *id = s->id_base + index;
    return 0;
}

int sl_series_name(const struct sl_series *s, uint32_t id, const char **name, uint32_t *len)
{
    uint32_t count = atomic_load_explicit(&s->count, memory_order_acquire);
    if (id < s->id_base || id - s->id_base >= count) {
        return -1;
    }
    const struct sl_series_entry *e = &s->entries[id - s->id_base];
    if (e->name_len == 0) {
        return -1; /* a hole: an id whose name was lost */
    }
    *name = s->names + e->name_at;
    *len = e->name_len;
    return 0;
}

uint32_t sl_series_count(const struct sl_series *s)
{
    return atomic_load_explicit(&s->count, memory_order_acquire);
}

uint64_t sl_series_name_bytes(const struct sl_series *s)
{
    return atomic_load_explicit(&s->name_bytes_published, memory_order_relaxed);
}
