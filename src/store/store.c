/*
 * The sensor store (see store.h for the contract and docs/DESIGN.md for the
 * byte-level layout).
 *
 * Sensor table. An open-addressing index of 64-bit slots (id in the low
 * half, dense sensor index + 1 in the high half, 0 = empty), sized to the
 * next power of two >= 2 x sensors_max so the load factor stays <= 0.5, with
 * linear probing from a 64-bit mixing hash keyed by a random per-process
 * seed (so a sender cannot aim ids at one cluster). Sensors are never
 * removed, so the table is never rehashed; readers probe it lock-free
 * because a slot is published with one release store after its record is
 * ready.
 *
 * Raw ring. Per sensor, `ring_readings` 8-byte slots, each an f32 value and
 * a u32 delta (microseconds since the sensor's previous reading), the rings
 * `ring_stride` slots apart (store.h says why some are padded).
 * The oldest retained reading's absolute time is kept in the record
 * (oldest_t_us) and the newest's (last_t_us), so times decode forward from
 * the oldest or backward from the newest. A delta that does not fit 32 bits
 * (a gap of more than 71.6 minutes) takes two slots: an escape slot whose
 * value is NaN (stored values are always finite, so NaN is free to mean
 * "escape") holding the high 32 bits, then the reading with the low 32 bits.
 * That keeps every slot at exactly 8 bytes with no per-page bases, and
 * retention exact: the ring always holds the newest readings that fit.
 *
 * Coarse tier. Per sensor, coarse_buckets + 1 buckets of
 * ceil(longest window / coarse_buckets) microseconds, in a ring keyed by the
 * absolute bucket number of the reading's time. Windows the raw ring no
 * longer covers are answered from it, flagged inexact.
 *
 * Per-reading cost on the writer: a hash probe, a record update, one ring
 * store, a coarse-bucket update and an EWMA step with a cached decay: O(1)
 * whatever the window lengths. Window statistics are computed by readers
 * from a snapshot, exactly, in two passes; the writer keeps no running sums
 * that could drift over a decade.
 */
#include "store/store.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/random.h>

#include "core/assert.h"
#include "store/store_internal.h"

void sl_store_config_default(struct sl_store_config *config)
{
    memset(config, 0, sizeof *config);
    config->sensors_max = SL_SENSORS_DEFAULT;
    config->ring_readings = SL_RING_READINGS_DEFAULT;
    config->windows_count = 3;
    config->windows_us[0] = 10LL * 1000000;
    config->windows_us[1] = 60LL * 1000000;
    config->windows_us[2] = 3600LL * 1000000;
    config->ewma_half_life_us = SL_EWMA_HALF_LIFE_US_DEFAULT;
    config->future_skew_us = SL_FUTURE_SKEW_US_DEFAULT;
    config->coarse_buckets = SL_COARSE_BUCKETS_DEFAULT;
}

int sl_store_config_check(const struct sl_store_config *config, const char **why)
{
    if (config->sensors_max < 1 || config->sensors_max > SL_SENSORS_MAX) {
        *why = "max sensors must be 1 .. 16777216";
        return -EINVAL;
    }
    if (config->ring_readings < SL_RING_READINGS_MIN ||
        config->ring_readings > SL_RING_READINGS_MAX) {
        *why = "ring readings must be 4 .. 16777216";
        return -EINVAL;
    }
    if (config->windows_count < 1 || config->windows_count > SL_WINDOWS_MAX) {
        *why = "between 1 and 8 windows";
        return -EINVAL;
    }
    for (uint32_t i = 0; i < config->windows_count; i++) {
        int64_t w = config->windows_us[i];
        if (w < 1000000 || w > SL_WINDOW_US_MAX || w % 1000000 != 0) {
            *why = "a window must be a whole number of seconds from 1s to 366d";
            return -EINVAL;
        }
        if (i > 0 && w <= config->windows_us[i - 1]) {
            *why = "windows must be ascending and distinct";
            return -EINVAL;
        }
    }
    if (config->ewma_half_life_us < 1000 || config->ewma_half_life_us > SL_WINDOW_US_MAX) {
        *why = "EWMA half-life must be 1ms .. 366d";
        return -EINVAL;
    }
    if (config->future_skew_us < 0 || config->future_skew_us > SL_WINDOW_US_MAX) {
        *why = "future skew must be 0 .. 366d";
        return -EINVAL;
    }
    if (config->coarse_buckets > SL_COARSE_BUCKETS_MAX) {
        *why = "coarse buckets must be 0 .. 3600";
        return -EINVAL;
    }
    return 0;
}

static uint32_t index_slots(uint32_t sensors_max)
{
    uint32_t slots = 2;
    while (slots < 2 * (uint64_t)sensors_max) {
        slots *= 2;
    }
    return slots;
}

static uint32_t coarse_total(const struct sl_store_config *config)
{
    return config->coarse_buckets == 0 ? 0 : config->coarse_buckets + 1;
}

static int64_t coarse_resolution(const struct sl_store_config *config)
{
    if (config->coarse_buckets == 0) {
        return 0;
    }
    int64_t longest = config->windows_us[config->windows_count - 1];
    return (longest + config->coarse_buckets - 1) / config->coarse_buckets;
}

void sl_store_plan(const struct sl_store_config *config, struct sl_plan *plan)
{
    uint64_t sensors = config->sensors_max;
    uint64_t slots = (uint64_t)sensors * sl_ring_stride(config->ring_readings);
    sl_plan_add(plan, "sensor_index", (uint64_t)index_slots(config->sensors_max) * 8,
                "sensor id -> record, 8 B a slot, >= 2 slots a sensor");
    sl_plan_add(plan, "sensor_records", sensors * sizeof(struct sl_sensor),
                "one 64 B record a sensor");
    sl_plan_add(plan, "ring_slots", slots * sizeof(struct sl_slot),
                "raw ring: f32 value + u32 time delta, 8 B a reading (+64 B a sensor when padded)");
    sl_plan_add(plan, "coarse_tier", sensors * coarse_total(config) * sizeof(struct sl_coarse_bucket),
                "coarse window buckets, 32 B each");
}

double sl_store_bytes_per_reading(const struct sl_store_config *config)
{
    double sensors = config->sensors_max;
    double bytes = (double)index_slots(config->sensors_max) * 8 +
                   sensors * sizeof(struct sl_sensor) +
                   sensors * sl_ring_stride(config->ring_readings) * sizeof(struct sl_slot);
    return bytes / (sensors * config->ring_readings);
}

/* Keys the sensor hash per process, so a sender cannot aim ids at one probe chain. */
static uint64_t hash_seed;

void sl_store_init(struct sl_store *store, const struct sl_store_config *config,
                   struct sl_arena *arena)
{
    const char *why = NULL;
    SL_ASSERT(sl_store_config_check(config, &why) == 0);
    memset(store, 0, sizeof *store);
    store->config = *config;
    uint32_t slots = index_slots(config->sensors_max);
    store->ring_stride = sl_ring_stride(config->ring_readings);
    uint64_t ring_slots = (uint64_t)config->sensors_max * store->ring_stride;
    store->index_mask = slots - 1;
    store->index_shift = 64 - (uint32_t)__builtin_ctz(slots);
    store->index = sl_arena_take(arena, (uint64_t)slots * 8);
    store->sensors = sl_arena_take(arena, (uint64_t)config->sensors_max * sizeof(struct sl_sensor));
    store->slots = sl_arena_take(arena, ring_slots * sizeof(struct sl_slot));
    store->coarse_buckets_total = coarse_total(config);
    store->coarse_resolution_us = coarse_resolution(config);
    store->coarse = sl_arena_take(arena, (uint64_t)config->sensors_max *
                                             store->coarse_buckets_total *
                                             sizeof(struct sl_coarse_bucket));
    for (uint32_t i = 0; i < SL_EWMA_DECAY_CACHE; i++) {
        /* An empty entry is a valid one: the step that decays everything. */
        store->ewma_decay[i].dt_us = UINT64_MAX;
        store->ewma_decay[i].keep = 0.0;
    }
    if (hash_seed == 0 && getrandom(&hash_seed, sizeof hash_seed, 0) != (ssize_t)sizeof hash_seed) {
        hash_seed = 0x9E3779B97F4A7C15ull; /* no entropy yet: still well mixed, just predictable */
    }
}

static inline uint32_t index_home(const struct sl_store *store, uint32_t sensor_id)
{
    return (uint32_t)(sl_mix64(sensor_id ^ hash_seed) >> store->index_shift);
}

static inline uint64_t index_load(const struct sl_store *store, uint32_t slot)
{
    return atomic_load_explicit((_Atomic uint64_t *)&store->index[slot], memory_order_acquire);
}

/* Probe from `slot` (the id's home, or where a caller left off): the sensor's index, or -1. */
static inline int32_t index_probe(const struct sl_store *store, uint32_t slot, uint32_t sensor_id)
{
    for (uint32_t probes = 0; probes <= store->index_mask; probes++) {
        uint64_t entry = index_load(store, slot);
        if (entry == 0) {
            return -1;
        }
        if ((uint32_t)entry == sensor_id) {
            return (int32_t)(entry >> 32) - 1;
        }
        slot = (slot + 1) & store->index_mask;
    }
    return -1;
}

int sl_store_find(const struct sl_store *store, uint32_t sensor_id, uint32_t *index_out)
{
    int32_t index = index_probe(store, index_home(store, sensor_id), sensor_id);
    if (index < 0) {
        return -ENOENT;
    }
    *index_out = (uint32_t)index;
    return 0;
}

uint32_t sl_store_sensor_id(const struct sl_store *store, uint32_t index)
{
    SL_ASSERT(index < sl_store_sensors_count(store));
    return store->sensors[index].id;
}

int sl_store_restore_sensor(struct sl_store *store, uint32_t index, uint32_t sensor_id)
{
    uint32_t count = atomic_load_explicit(&store->sensors_count, memory_order_relaxed);
    uint32_t existing;
    if (index != count || index >= store->config.sensors_max ||
        sl_store_find(store, sensor_id, &existing) == 0) {
        return -EINVAL;
    }
    uint32_t slot = index_home(store, sensor_id);
    for (uint32_t probes = 0; probes <= store->index_mask; probes++) {
        if (store->index[slot] == 0) {
            store->sensors[index].id = sensor_id;
            store->sensors[index].coarse_end_us = INT64_MIN; /* a cache: not trusted from disk */
            atomic_store_explicit((_Atomic uint64_t *)&store->index[slot],
                                  sensor_id | ((uint64_t)(index + 1) << 32), memory_order_release);
            atomic_store_explicit(&store->sensors_count, count + 1, memory_order_release);
            return 0;
        }
        slot = (slot + 1) & store->index_mask;
    }
    SL_ASSERT(0 && "sensor index full: load factor is <= 0.5 by construction");
    return -EINVAL;
}

/* Writer: find a sensor, or create it; -1 when the table is full. */
static inline int64_t find_or_insert(struct sl_store *store, uint32_t sensor_id)
{
    uint32_t slot = index_home(store, sensor_id);
    for (uint32_t probes = 0; probes <= store->index_mask; probes++) {
        uint64_t entry = store->index[slot];
        if ((uint32_t)entry == sensor_id && entry != 0) {
            return (int64_t)(entry >> 32) - 1;
        }
        if (entry == 0) {
            uint32_t count = atomic_load_explicit(&store->sensors_count, memory_order_relaxed);
            if (count == store->config.sensors_max) {
                return -1;
            }
            struct sl_sensor *s = &store->sensors[count];
            memset(s, 0, sizeof *s);
            s->id = sensor_id;
            atomic_store_explicit((_Atomic uint64_t *)&store->index[slot],
                                  sensor_id | ((uint64_t)(count + 1) << 32), memory_order_release);
            atomic_store_explicit(&store->sensors_count, count + 1, memory_order_release);
            return count;
        }
        slot = (slot + 1) & store->index_mask;
    }
    SL_ASSERT(0 && "sensor index full: load factor is <= 0.5 by construction");
    return -1;
}

static inline uint32_t ring_next(const struct sl_store *store, uint32_t slot)
{
    return slot + 1 == store->config.ring_readings ? 0 : slot + 1;
}

static inline uint32_t ring_tail(const struct sl_store *store, const struct sl_sensor *s)
{
    uint32_t ring = store->config.ring_readings;
    return s->head >= s->used_slots ? s->head - s->used_slots : s->head + ring - s->used_slots;
}

/* Drop the oldest retained reading (and the escape in front of the next one). */
static void ring_evict_oldest(struct sl_store *store, struct sl_sensor *s, uint64_t base)
{
    SL_ASSERT(s->count >= 2);
    const struct sl_slot *ring = &store->slots[base];
    uint32_t tail = ring_next(store, ring_tail(store, s));
    s->used_slots--;
    s->count--;
    uint64_t gap = ring[tail].delta;
    if (isnan(ring[tail].value)) {
        tail = ring_next(store, tail);
        s->used_slots--;
        gap = (gap << 32) | ring[tail].delta;
    }
    s->oldest_t_us = (int64_t)((uint64_t)s->oldest_t_us + gap);
    SL_ASSERT(!isnan(ring[tail].value));
}


/*
 * Add a reading at t_us to its coarse bucket. A reading before the end of the
 * bucket of the sensor's last reading (cached in the record) lands in that
 * same bucket: no division. Otherwise the bucket is computed, the buckets the
 * sensor skipped since its last reading are cleared, and the cache is set.
 */
static inline __attribute__((always_inline)) void
coarse_add(struct sl_store *store, struct sl_sensor *s, uint32_t index, int64_t t_us, float value,
           bool first)
{
    uint32_t total = store->coarse_buckets_total;
    if (total == 0) {
        return;
    }
    struct sl_coarse_bucket *ring = &store->coarse[(uint64_t)index * total];
    if (__builtin_expect(first || t_us >= s->coarse_end_us, 0)) {
        int64_t res = store->coarse_resolution_us;
        int64_t bucket = floor_div(t_us, res);
        if (!first) {
            int64_t last = floor_div(s->last_t_us, res);
            SL_ASSERT(bucket >= last);
            int64_t clear = bucket - last < (int64_t)total ? bucket - last : (int64_t)total;
            for (int64_t b = bucket - clear + 1; b <= bucket; b++) {
                ring[floor_mod(b, total)].count = 0;
            }
        }
        s->coarse_slot = floor_mod(bucket, total);
        int64_t end;
        if (__builtin_mul_overflow(bucket + 1, res, &end)) {
            end = INT64_MAX; /* the last bucket: recomputed each time, still right */
        }
        s->coarse_end_us = end;
    }
    struct sl_coarse_bucket *c = &ring[s->coarse_slot];
    if (c->count == 0) {
        c->shift = value;
        c->min = value;
        c->max = value;
        c->sum = 0;
        c->sum_sq = 0;
    }
    double d = (double)value - (double)c->shift;
    c->count++;
    c->sum += d;
    c->sum_sq += d * d;
    c->min = value < c->min ? value : c->min;
    c->max = value > c->max ? value : c->max;
}

/* 2^(-dt / half_life), from the decay cache (exp2 only for a step not seen lately). */
static inline double ewma_keep(struct sl_store *store, uint64_t dt_us)
{
    uint32_t i = (uint32_t)((dt_us * 0x9E3779B97F4A7C15ull) >> 56) % SL_EWMA_DECAY_CACHE;
    if (store->ewma_decay[i].dt_us != dt_us) {
        store->ewma_decay[i].dt_us = dt_us;
        store->ewma_decay[i].keep = exp2(-(double)dt_us / (double)store->config.ewma_half_life_us);
    }
    return store->ewma_decay[i].keep;
}

static inline void seq_begin(struct sl_sensor *s)
{
    uint32_t seq = atomic_load_explicit(&s->seq, memory_order_relaxed);
    atomic_store_explicit(&s->seq, seq + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
}

static inline void seq_end(struct sl_sensor *s)
{
    uint32_t seq = atomic_load_explicit(&s->seq, memory_order_relaxed);
    atomic_store_explicit(&s->seq, seq + 1, memory_order_release);
}

/*
 * Append a reading to a sensor's ring, any case: the sensor's first reading,
 * a gap that needs an escape slot, evictions of escapes. Cold: see
 * ring_append for the common case.
 */
static __attribute__((noinline)) void ring_append_general(struct sl_store *store,
                                                          struct sl_sensor *s, uint32_t index,
                                                          int64_t t_us, float value)
{
    uint32_t ring = store->config.ring_readings;
    uint64_t base = (uint64_t)index * store->ring_stride;
    struct sl_slot *slots = &store->slots[base];
    bool first = s->readings_total == 0;
    uint64_t gap = first ? 0 : (uint64_t)t_us - (uint64_t)s->last_t_us;
    uint32_t need = gap > UINT32_MAX ? 2 : 1;
    seq_begin(s);
    while (ring - s->used_slots < need) {
        ring_evict_oldest(store, s, base);
    }
    if (need == 2) {
        slots[s->head] = (struct sl_slot){NAN, (uint32_t)(gap >> 32)};
        s->head = ring_next(store, s->head);
        s->used_slots++;
    }
    slots[s->head] = (struct sl_slot){value, (uint32_t)gap};
    s->head = ring_next(store, s->head);
    s->used_slots++;
    s->count++;
    coarse_add(store, s, index, t_us, value, first);
    if (first) {
        s->oldest_t_us = t_us;
        s->ewma = value;
    } else {
        s->ewma = value + ewma_keep(store, gap) * (s->ewma - value);
    }
    s->last_t_us = t_us;
    s->readings_total++;
    seq_end(s);
}

/*
 * Append a reading (in order, already checked) to a sensor's ring. The hot
 * path takes the common case: a sensor seen before, a gap under 71.6
 * minutes, and when the ring is full an oldest reading with no escape behind
 * it. Everything else goes to ring_append_general. Both keep the same
 * layout and state; test_store checks them against a model.
 */
static inline __attribute__((always_inline)) void ring_append(struct sl_store *store,
                                                              struct sl_sensor *s, uint32_t index,
                                                              int64_t t_us, float value)
{
    uint32_t ring = store->config.ring_readings;
    struct sl_slot *slots = &store->slots[(uint64_t)index * store->ring_stride];
    uint64_t gap = (uint64_t)t_us - (uint64_t)s->last_t_us;
    uint32_t head = s->head;
    uint32_t next = head + 1 == ring ? 0 : head + 1;
    bool full = s->used_slots == ring;
    if (__builtin_expect(s->readings_total == 0 || gap > UINT32_MAX ||
                             (full && isnan(slots[next].value)),
                         0)) {
        ring_append_general(store, s, index, t_us, value);
        return;
    }
    seq_begin(s);
    if (full) {
        /* Drop the oldest (at head); the next slot's delta is from it. */
        s->oldest_t_us = (int64_t)((uint64_t)s->oldest_t_us + slots[next].delta);
    } else {
        s->used_slots++;
        s->count++;
    }
    slots[head] = (struct sl_slot){value, (uint32_t)gap};
    s->head = next;
    coarse_add(store, s, index, t_us, value, false);
    s->ewma = value + ewma_keep(store, gap) * (s->ewma - value);
    s->last_t_us = t_us;
    s->readings_total++;
    seq_end(s);
}

static inline void counter_add(_Atomic uint64_t *counter, uint64_t n)
{
    /* Single writer: a load and a store, no locked read-modify-write. */
    uint64_t v = atomic_load_explicit(counter, memory_order_relaxed);
    atomic_store_explicit(counter, v + n, memory_order_relaxed);
}

/*
 * The batch apply pipeline. Readings of a batch mostly belong to different
 * sensors (a stream reports each of its sensors in turn), so each reading
 * touches cache lines nobody touched since that sensor's previous reading:
 * an index slot, the sensor record, the ring slot's line and the coarse
 * bucket. Taken one reading at a time, index -> record -> ring is a chain
 * of dependent misses the writer waits on. The pipeline takes the batch
 * APPLY_CHUNK readings at a time: chunk c is hashed (its index slots
 * prefetched), chunk c - 1 probed (its records prefetched), chunk c - 2's
 * ring lines prefetched from its records, and chunk c - 3 applied, in
 * order, under the per-reading rules. Only the last pass changes anything,
 * so the result is exactly that of a reading-at-a-time loop (a sensor the
 * probe did not find, because it is new or an earlier reading of the batch
 * creates it, is looked up again then; a ring prefetch from a record an
 * earlier reading of the batch then changes is only a wasted hint).
 *
 * Measured (bench_ingest, 10,000 sensors, BENCHMARKS.md): the ring
 * prefetch gains a few percent once rings are padded to an odd stride of
 * lines (sl_ring_stride) and was 5-15% slower before, when the prefetched
 * lines evicted each other; prefetching the coarse buckets too, or deeper
 * pipelines, were slower.
 */
#define APPLY_CHUNK 8
enum { APPLY_DEPTH = 4, APPLY_RING = 2, APPLY_AT = 3 };

/*
 * One reading, under the per-reading rules in their order (nonfinite,
 * future, sensor_limit, out_of_order). `index` is the probe's answer, or -1
 * to look the sensor up (and create it) here. Returns -1 - reason, or 0.
 */
static inline __attribute__((always_inline)) int
apply_one(struct sl_store *store, int32_t index, uint32_t sensor_id, int64_t base,
          uint32_t offset_us, float value, int64_t future_limit)
{
    if (!isfinite(value)) {
        return -1 - SL_REJECT_NONFINITE;
    }
    if (base > INT64_MAX - (int64_t)offset_us) {
        return -1 - SL_REJECT_FUTURE; /* beyond any clock */
    }
    int64_t t_us = base + (int64_t)offset_us;
    if (t_us > future_limit) {
        return -1 - SL_REJECT_FUTURE;
    }
    int64_t i = index >= 0 ? index : find_or_insert(store, sensor_id);
    if (i < 0) {
        return -1 - SL_REJECT_SENSOR_LIMIT;
    }
    struct sl_sensor *s = &store->sensors[i];
    if (s->readings_total > 0 && t_us < s->last_t_us) {
        return -1 - SL_REJECT_OUT_OF_ORDER;
    }
    ring_append(store, s, (uint32_t)i, t_us, value);
    return 0;
}

int sl_store_apply_reading(struct sl_store *store, uint32_t sensor_id, int64_t t_us, float value,
                           int64_t now_us)
{
    /* t_us as base + 0: the same checks, in the same order, as a batch's reading. */
    return apply_one(store, -1, sensor_id, t_us, 0, value, now_us + store->config.future_skew_us);
}

/* Pass 1 for chunk c: hash each reading's sensor id, prefetch its index slot. */
static inline void apply_pass_hash(const struct sl_store *store, const uint8_t *p, uint32_t n,
                                   uint32_t *slot)
{
    for (uint32_t j = 0; j < n; j++) {
        slot[j] = index_home(store, sl_load_u32(p + j * SL_READING_BYTES));
        sl_prefetch(&store->index[slot[j]]);
    }
}

/* Pass 2: probe the (prefetched) index, prefetch the sensor records. */
static inline void apply_pass_probe(const struct sl_store *store, const uint8_t *p, uint32_t n,
                                    const uint32_t *slot, int32_t *index)
{
    for (uint32_t j = 0; j < n; j++) {
        index[j] = index_probe(store, slot[j], sl_load_u32(p + j * SL_READING_BYTES));
        if (index[j] >= 0) {
            sl_prefetch(&store->sensors[index[j]]);
        }
    }
}

/* Pass 3: prefetch the ring line each (prefetched) record will write next. */
static inline void apply_pass_ring(const struct sl_store *store, uint32_t n, const int32_t *index)
{
    for (uint32_t j = 0; j < n; j++) {
        if (index[j] >= 0) {
            const struct sl_sensor *s = &store->sensors[index[j]];
            sl_prefetch(&store->slots[(uint64_t)index[j] * store->ring_stride + s->head]);
        }
    }
}

void sl_store_apply(struct sl_store *store, const struct sl_batch *batch, int64_t now_us,
                    struct sl_apply_result *result)
{
    memset(result, 0, sizeof *result);
    const int64_t base = batch->header.base_time_us;
    const int64_t future_limit = now_us + store->config.future_skew_us;
    const uint32_t count = batch->header.count;
    const uint32_t chunks = (count + APPLY_CHUNK - 1) / APPLY_CHUNK;
    uint32_t accepted = 0;
    /* Chunk c's state lives in row c % APPLY_DEPTH while it moves through the passes. */
    uint32_t slot[APPLY_DEPTH][APPLY_CHUNK];
    int32_t index[APPLY_DEPTH][APPLY_CHUNK];
#define CHUNK_N(c) (count - (c) * APPLY_CHUNK < APPLY_CHUNK ? count - (c) * APPLY_CHUNK : APPLY_CHUNK)
#define CHUNK_P(c) (batch->readings + (size_t)(c) * APPLY_CHUNK * SL_READING_BYTES)
    for (uint32_t c = 0; c < chunks + APPLY_AT; c++) {
        /* Chunk c is hashed, c - 1 probed, c - 2's rings prefetched, c - 3 applied. */
        if (c < chunks) {
            apply_pass_hash(store, CHUNK_P(c), CHUNK_N(c), slot[c % APPLY_DEPTH]);
        }
        if (c >= 1 && c - 1 < chunks) {
            apply_pass_probe(store, CHUNK_P(c - 1), CHUNK_N(c - 1), slot[(c - 1) % APPLY_DEPTH],
                             index[(c - 1) % APPLY_DEPTH]);
        }
        if (c >= APPLY_RING && c - APPLY_RING < chunks) {
            apply_pass_ring(store, CHUNK_N(c - APPLY_RING), index[(c - APPLY_RING) % APPLY_DEPTH]);
        }
        if (c < APPLY_AT) {
            continue;
        }
        const uint32_t a = c - APPLY_AT, n = CHUNK_N(a);
        const int32_t *ix = index[a % APPLY_DEPTH];
        const uint8_t *p = CHUNK_P(a);
        for (uint32_t j = 0; j < n; j++, p += SL_READING_BYTES) {
            int rc = apply_one(store, ix[j], sl_load_u32(p), base, sl_load_u32(p + 4),
                               sl_load_f32(p + 8), future_limit);
            if (__builtin_expect(rc == 0, 1)) {
                accepted++;
            } else {
                result->rejected++;
                result->rejected_by_reason[-1 - rc]++;
            }
        }
    }
#undef CHUNK_N
#undef CHUNK_P
    result->accepted = accepted;
    counter_add(&store->counters.readings_accepted, result->accepted);
    for (uint32_t r = 0; r < SL_REJECT_COUNT; r++) {
        if (result->rejected_by_reason[r] != 0) {
            counter_add(&store->counters.readings_rejected[r], result->rejected_by_reason[r]);
        }
    }
}
