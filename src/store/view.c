/*
 * The store's reader side: consistent snapshots of one sensor, and the
 * window statistics computed from them.
 *
 * A reader never blocks the writer. It reads the sensor's sequence number,
 * copies the record, the used ring slots and the coarse buckets into its own
 * arrays, and reads the sequence number again; when the writer touched the
 * sensor in between (or was in the middle of it) the copy is thrown away and
 * taken again, at most SL_SNAPSHOT_RETRIES_MAX times. The copy loop bounds
 * every index by the ring size, so a torn record cannot make it read out of
 * bounds; nothing copied is trusted before the second sequence check.
 *
 * Once validated, the raw deltas are decoded into absolute times, oldest
 * first. Statistics are then a pure function of the view: two passes (mean,
 * then the sum of squared deviations) in double precision over the window's
 * readings, the most accurate way to compute a sample variance.
 *
 * Memory: the caller's view arrays, sl_store_view_bytes() long. Any thread
 * but the writer's.
 */
#include <errno.h>
#include <stdbool.h>
#include <math.h>
#include <string.h>

#include "core/assert.h"
#include "store/store.h"
#include "store/store_internal.h"

uint64_t sl_store_view_bytes(const struct sl_store_config *config)
{
    uint64_t ring = config->ring_readings;
    uint64_t coarse = config->coarse_buckets == 0 ? 0 : config->coarse_buckets + 1;
    return ring * sizeof(int64_t) + sl_align_up(ring * sizeof(float), 8) +
           coarse * sizeof(struct sl_coarse_bucket) + sl_align_up(ring * sizeof(uint32_t), 8);
}

void sl_store_view_init(struct sl_sensor_view *view, const struct sl_store_config *config,
                        void *memory)
{
    uint64_t ring = config->ring_readings;
    uint8_t *p = memory;
    memset(view, 0, sizeof *view);
    view->t_us = (int64_t *)p;
    p += ring * sizeof(int64_t);
    view->value = (float *)p;
    p += sl_align_up(ring * sizeof(float), 8);
    view->coarse = (struct sl_coarse_bucket *)p;
    p += (config->coarse_buckets == 0 ? 0 : config->coarse_buckets + 1) *
         sizeof(struct sl_coarse_bucket);
    view->scratch_deltas = (uint32_t *)p;
}

/*
 * Split `n` slots into the view's values and scratch deltas. Clang
 * vectorizes this loop at -O2; GCC 12 leaves it scalar there (its "very
 * cheap" cost model), which costs a full 4,096-reading snapshot about 1.8 us
 * more than the two memcpys of the old two-array ring (BENCHMARKS.md).
 */
static void split_slots(const struct sl_slot *slots, uint32_t n, float *value, uint32_t *delta)
{
    for (uint32_t i = 0; i < n; i++) {
        value[i] = slots[i].value;
        delta[i] = slots[i].delta;
    }
}

/* Copy `n` slots from ring slot `from` on, wrapping, into the view's values and scratch deltas. */
static void copy_slots(const struct sl_store *store, uint64_t base, uint32_t from, uint32_t n,
                       struct sl_sensor_view *view)
{
    uint32_t ring = store->config.ring_readings;
    const struct sl_slot *slots = &store->slots[base];
    uint32_t first = n < ring - from ? n : ring - from;
    split_slots(slots + from, first, view->value, view->scratch_deltas);
    split_slots(slots, n - first, view->value + first, view->scratch_deltas + first);
}

static void copy_coarse(const struct sl_store *store, uint32_t index, int64_t last_t_us,
                        struct sl_sensor_view *view)
{
    uint32_t total = store->coarse_buckets_total;
    view->coarse_count = total;
    view->coarse_resolution_us = store->coarse_resolution_us;
    if (total == 0) {
        return;
    }
    const struct sl_coarse_bucket *ring = &store->coarse[(uint64_t)index * total];
    int64_t newest = floor_div(last_t_us, store->coarse_resolution_us);
    view->coarse_first_bucket = newest - (total - 1);
    for (uint32_t k = 0; k < total; k++) {
        view->coarse[k] = ring[floor_mod(view->coarse_first_bucket + k, total)];
    }
}

/*
 * Decode the copied slots (oldest first, `used` of them) into times and
 * compact the values over the escapes. Returns the readings decoded.
 */
static uint32_t decode_slots(struct sl_sensor_view *view, uint32_t used, int64_t oldest_t_us)
{
    uint32_t out = 0;
    int64_t t = oldest_t_us;
    for (uint32_t i = 0; i < used; i++) {
        uint64_t gap = view->scratch_deltas[i];
        if (isnan(view->value[i]) && i + 1 < used) {
            gap = (gap << 32) | view->scratch_deltas[i + 1];
            i++;
        }
        if (out > 0) {
            t = (int64_t)((uint64_t)t + gap);
        }
        view->t_us[out] = t;
        view->value[out] = view->value[i];
        out++;
    }
    return out;
}

/* Reader side of the sequence lock: begin (false while the writer is mid-change)... */
static inline bool seq_read_begin(const struct sl_sensor *live, uint32_t *seq)
{
    *seq = atomic_load_explicit((_Atomic uint32_t *)&live->seq, memory_order_acquire);
    return (*seq & 1) == 0;
}

/* ...and validate: true when nothing changed while the reader copied. */
static inline bool seq_read_valid(const struct sl_sensor *live, uint32_t seq)
{
    atomic_thread_fence(memory_order_acquire);
    return atomic_load_explicit((_Atomic uint32_t *)&live->seq, memory_order_relaxed) == seq;
}

int sl_store_snapshot(const struct sl_store *store, uint32_t sensor_id, struct sl_sensor_view *view)
{
    uint32_t index;
    if (sl_store_find(store, sensor_id, &index) != 0) {
        return -ENOENT;
    }
    const struct sl_sensor *live = &store->sensors[index];
    uint32_t ring = store->config.ring_readings;
    for (uint32_t attempt = 0; attempt < SL_SNAPSHOT_RETRIES_MAX; attempt++) {
        uint32_t seq;
        if (!seq_read_begin(live, &seq)) {
            continue;
        }
        struct sl_sensor s;
        memcpy(&s, live, sizeof s);
        /* Bound everything by the ring before trusting it. */
        uint32_t used = s.used_slots <= ring ? s.used_slots : ring;
        uint32_t head = s.head < ring ? s.head : 0;
        uint32_t tail = head >= used ? head - used : head + ring - used;
        copy_slots(store, (uint64_t)index * store->ring_stride, tail, used, view);
        copy_coarse(store, index, s.last_t_us, view);
        if (!seq_read_valid(live, seq)) {
            continue;
        }
        view->id = s.id;
        view->readings_total = s.readings_total;
        view->ewma = s.ewma;
        view->count = decode_slots(view, used, s.oldest_t_us);
        SL_ASSERT(view->count == s.count);
        SL_ASSERT(view->count == 0 || view->t_us[view->count - 1] == s.last_t_us);
        return 0;
    }
    return -EBUSY;
}

int sl_store_summary(const struct sl_store *store, uint32_t sensor_id,
                     struct sl_sensor_summary *out)
{
    uint32_t index;
    if (sl_store_find(store, sensor_id, &index) != 0) {
        return -ENOENT;
    }
    const struct sl_sensor *live = &store->sensors[index];
    uint32_t ring = store->config.ring_readings;
    for (uint32_t attempt = 0; attempt < SL_SNAPSHOT_RETRIES_MAX; attempt++) {
        uint32_t seq;
        if (!seq_read_begin(live, &seq)) {
            continue;
        }
        struct sl_sensor s;
        memcpy(&s, live, sizeof s);
        uint32_t newest = (s.head < ring ? s.head : 0);
        newest = newest == 0 ? ring - 1 : newest - 1;
        float last_value = store->slots[(uint64_t)index * store->ring_stride + newest].value;
        if (!seq_read_valid(live, seq)) {
            continue;
        }
        out->id = s.id;
        out->readings_total = s.readings_total;
        out->count = s.count;
        out->last_t_us = s.last_t_us;
        out->last_value = s.count > 0 ? last_value : 0.0f;
        return 0;
    }
    return -EBUSY;
}

uint32_t sl_view_lower_bound(const struct sl_sensor_view *view, int64_t t_us)
{
    uint32_t lo = 0, hi = view->count;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (view->t_us[mid] < t_us) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

static void window_exact(const struct sl_sensor_view *view, uint32_t from,
                         struct sl_window_stats *out)
{
    uint32_t n = view->count - from;
    double sum = 0;
    float min = view->value[from], max = view->value[from];
    for (uint32_t i = from; i < view->count; i++) {
        float v = view->value[i];
        sum += v;
        min = v < min ? v : min;
        max = v > max ? v : max;
    }
    double mean = sum / n;
    double m2 = 0;
    for (uint32_t i = from; i < view->count; i++) {
        double d = (double)view->value[i] - mean;
        m2 += d * d;
    }
    out->count = n;
    out->mean = mean;
    out->min = min;
    out->max = max;
    out->stddev = n > 1 ? sqrt(m2 / (n - 1)) : 0;
    out->exact = true;
}

/* Combine coarse buckets [from, count) with Chan's parallel variance formula. */
static void window_coarse(const struct sl_sensor_view *view, uint32_t from,
                          struct sl_window_stats *out)
{
    double n = 0, mean = 0, m2 = 0;
    float min = INFINITY, max = -INFINITY;
    for (uint32_t k = from; k < view->coarse_count; k++) {
        const struct sl_coarse_bucket *c = &view->coarse[k];
        if (c->count == 0) {
            continue;
        }
        double nb = c->count;
        double mean_b = c->shift + c->sum / nb;
        double m2_b = c->sum_sq - c->sum * c->sum / nb;
        m2_b = m2_b > 0 ? m2_b : 0;
        double delta = mean_b - mean;
        double total = n + nb;
        mean += delta * nb / total;
        m2 += m2_b + delta * delta * n * nb / total;
        n = total;
        min = c->min < min ? c->min : min;
        max = c->max > max ? c->max : max;
    }
    out->count = (uint64_t)n;
    out->mean = mean;
    out->min = min;
    out->max = max;
    out->stddev = n > 1 ? sqrt(m2 / (n - 1)) : 0;
    out->exact = false;
    out->resolution_us = view->coarse_resolution_us;
}

void sl_view_window(const struct sl_sensor_view *view, int64_t window_us,
                    struct sl_window_stats *out)
{
    memset(out, 0, sizeof *out);
    out->exact = true;
    if (view->count == 0) {
        return;
    }
    int64_t newest = view->t_us[view->count - 1];
    int64_t cutoff = newest < INT64_MIN + window_us ? INT64_MIN : newest - window_us;
    /* First reading with t > cutoff. */
    uint32_t from = cutoff == INT64_MAX ? view->count : sl_view_lower_bound(view, cutoff + 1);
    bool complete = view->readings_total == view->count || view->t_us[0] <= cutoff;
    if (complete || view->coarse_count == 0) {
        if (from < view->count) {
            window_exact(view, from, out);
        }
        out->exact = complete;
        return;
    }
    int64_t first = floor_div(cutoff, view->coarse_resolution_us);
    int64_t k = first - view->coarse_first_bucket;
    window_coarse(view, k < 0 ? 0 : (uint32_t)k, out);
}
