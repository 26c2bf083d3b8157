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
 * Raw ring. Per sensor, `ring_readings` slots in two parallel arrays: f32
 * values and u32 deltas (microseconds since the sensor's previous reading).
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
 * Per-reading cost on the writer: a hash probe, a record update, two ring
 * stores, a coarse-bucket update and an EWMA step with a cached decay: O(1)
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
    uint64_t slots = (uint64_t)sensors * config->ring_readings;
    sl_plan_add(plan, "sensor_index", (uint64_t)index_slots(config->sensors_max) * 8,
                "sensor id -> record, 8 B a slot, >= 2 slots a sensor");
    sl_plan_add(plan, "sensor_records", sensors * sizeof(struct sl_sensor),
                "one 64 B record a sensor");
    sl_plan_add(plan, "ring_values", slots * sizeof(float), "raw ring values, f32, 4 B a reading");
    sl_plan_add(plan, "ring_deltas", slots * sizeof(uint32_t),
                "raw ring time deltas, u32 us, 4 B a reading");
    sl_plan_add(plan, "coarse_tier", sensors * coarse_total(config) * sizeof(struct sl_coarse_bucket),
                "coarse window buckets, 32 B each");
}

double sl_store_bytes_per_reading(const struct sl_store_config *config)
{
    double sensors = config->sensors_max;
    double bytes = (double)index_slots(config->sensors_max) * 8 +
                   sensors * sizeof(struct sl_sensor) +
                   sensors * config->ring_readings * (sizeof(float) + sizeof(uint32_t));
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
    uint64_t ring_slots = (uint64_t)config->sensors_max * config->ring_readings;
    store->index_mask = slots - 1;
    store->index_shift = 64 - (uint32_t)__builtin_ctz(slots);
    store->index = sl_arena_take(arena, (uint64_t)slots * 8);
    store->sensors = sl_arena_take(arena, (uint64_t)config->sensors_max * sizeof(struct sl_sensor));
    store->values = sl_arena_take(arena, ring_slots * sizeof(float));
    store->deltas = sl_arena_take(arena, ring_slots * sizeof(uint32_t));
    store->coarse_buckets_total = coarse_total(config);
    store->coarse_resolution_us = coarse_resolution(config);
    store->coarse = sl_arena_take(arena, (uint64_t)config->sensors_max *
                                             store->coarse_buckets_total *
                                             sizeof(struct sl_coarse_bucket));
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

int sl_store_find(const struct sl_store *store, uint32_t sensor_id, uint32_t *index_out)
{
    uint32_t slot = index_home(store, sensor_id);
    for (uint32_t probes = 0; probes <= store->index_mask; probes++) {
        uint64_t entry = index_load(store, slot);
        if (entry == 0) {
            return -ENOENT;
        }
        if ((uint32_t)entry == sensor_id) {
            *index_out = (uint32_t)(entry >> 32) - 1;
            return 0;
        }
        slot = (slot + 1) & store->index_mask;
    }
    return -ENOENT;
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
    uint32_t tail = ring_next(store, ring_tail(store, s));
    s->used_slots--;
    s->count--;
    uint64_t gap = store->deltas[base + tail];
    if (isnan(store->values[base + tail])) {
        tail = ring_next(store, tail);
        s->used_slots--;
        gap = (gap << 32) | store->deltas[base + tail];
    }
    s->oldest_t_us = (int64_t)((uint64_t)s->oldest_t_us + gap);
    SL_ASSERT(!isnan(store->values[base + tail]));
}


static void coarse_add(struct sl_store *store, struct sl_sensor *s, uint32_t index, int64_t t_us,
                       float value, bool first)
{
    uint32_t total = store->coarse_buckets_total;
    if (total == 0) {
        return;
    }
    struct sl_coarse_bucket *ring = &store->coarse[(uint64_t)index * total];
    int64_t bucket = floor_div(t_us, store->coarse_resolution_us);
    if (!first) {
        int64_t last = floor_div(s->last_t_us, store->coarse_resolution_us);
        SL_ASSERT(bucket >= last);
        int64_t clear = bucket - last < (int64_t)total ? bucket - last : (int64_t)total;
        for (int64_t b = bucket - clear + 1; b <= bucket; b++) {
            ring[floor_mod(b, total)].count = 0;
        }
    }
    struct sl_coarse_bucket *c = &ring[floor_mod(bucket, total)];
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

static inline void ewma_step(const struct sl_store *store, struct sl_sensor *s, uint64_t dt_us,
                             float value)
{
    if (dt_us != s->ewma_dt_us || s->ewma_keep == 0) {
        double keep = exp2(-(double)dt_us / (double)store->config.ewma_half_life_us);
        if (dt_us <= UINT32_MAX) {
            s->ewma_dt_us = (uint32_t)dt_us;
            s->ewma_keep = keep;
        }
        s->ewma = value + keep * (s->ewma - value);
        return;
    }
    s->ewma = value + s->ewma_keep * (s->ewma - value);
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

static void ring_append(struct sl_store *store, struct sl_sensor *s, uint32_t index, int64_t t_us,
                        float value)
{
    uint32_t ring = store->config.ring_readings;
    uint64_t base = (uint64_t)index * ring;
    bool first = s->readings_total == 0;
    uint64_t gap = first ? 0 : (uint64_t)t_us - (uint64_t)s->last_t_us;
    uint32_t need = gap > UINT32_MAX ? 2 : 1;
    seq_begin(s);
    while (ring - s->used_slots < need) {
        ring_evict_oldest(store, s, base);
    }
    if (need == 2) {
        store->values[base + s->head] = NAN;
        store->deltas[base + s->head] = (uint32_t)(gap >> 32);
        s->head = ring_next(store, s->head);
        s->used_slots++;
    }
    store->values[base + s->head] = value;
    store->deltas[base + s->head] = (uint32_t)gap;
    s->head = ring_next(store, s->head);
    s->used_slots++;
    s->count++;
    coarse_add(store, s, index, t_us, value, first);
    if (first) {
        s->oldest_t_us = t_us;
        s->ewma = value;
    } else {
        ewma_step(store, s, gap, value);
    }
    s->last_t_us = t_us;
    s->readings_total++;
    seq_end(s);
}

int sl_store_apply_reading(struct sl_store *store, uint32_t sensor_id, int64_t t_us, float value,
                           int64_t now_us)
{
    if (!isfinite(value)) {
        return -1 - SL_REJECT_NONFINITE;
    }
    if (t_us > now_us + store->config.future_skew_us) {
        return -1 - SL_REJECT_FUTURE;
    }
    int64_t index = find_or_insert(store, sensor_id);
    if (index < 0) {
        return -1 - SL_REJECT_SENSOR_LIMIT;
    }
    struct sl_sensor *s = &store->sensors[index];
    if (s->readings_total > 0 && t_us < s->last_t_us) {
        return -1 - SL_REJECT_OUT_OF_ORDER;
    }
    ring_append(store, s, (uint32_t)index, t_us, value);
    return 0;
}

static inline void counter_add(_Atomic uint64_t *counter, uint64_t n)
{
    /* Single writer: a load and a store, no locked read-modify-write. */
    uint64_t v = atomic_load_explicit(counter, memory_order_relaxed);
    atomic_store_explicit(counter, v + n, memory_order_relaxed);
}

void sl_store_apply(struct sl_store *store, const struct sl_batch *batch, int64_t now_us,
                    struct sl_apply_result *result)
{
    memset(result, 0, sizeof *result);
    int64_t base = batch->header.base_time_us;
    for (uint32_t i = 0; i < batch->header.count; i++) {
        struct sl_reading r;
        sl_batch_reading(batch, i, &r);
        int rc;
        if (base > INT64_MAX - (int64_t)r.offset_us) {
            rc = -1 - SL_REJECT_FUTURE; /* beyond any clock */
        } else {
            rc = sl_store_apply_reading(store, r.sensor_id, base + r.offset_us, r.value, now_us);
        }
        if (rc == 0) {
            result->accepted++;
        } else {
            result->rejected++;
            result->rejected_by_reason[-1 - rc]++;
        }
    }
    counter_add(&store->counters.readings_accepted, result->accepted);
    for (uint32_t r = 0; r < SL_REJECT_COUNT; r++) {
        if (result->rejected_by_reason[r] != 0) {
            counter_add(&store->counters.readings_rejected[r], result->rejected_by_reason[r]);
        }
    }
}
