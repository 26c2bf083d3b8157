/*
 * The sensor store: a fixed-capacity sensor table, one raw ring per sensor
 * (structure of arrays, 8 bytes per reading), a coarse aggregate tier for
 * windows longer than the ring, and an EWMA. All memory comes from the
 * arena at start-up; nothing grows afterwards.
 *
 * Threads: exactly one writer thread calls sl_store_apply (the commit
 * pipeline's apply worker, or the ingest thread with --apply-thread off;
 * recovery on main before either starts). Any number of reader threads call sl_store_snapshot and the
 * sl_store_*_count accessors; they never block the writer: each sensor has
 * a sequence lock and a reader retries (bounded) when the writer touched
 * that sensor during its copy. See docs/DESIGN.md for the layout and the
 * byte counts, and for how the store splits into shards.
 */
#ifndef SL_STORE_STORE_H
#define SL_STORE_STORE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/plan.h"
#include "sluice/protocol.h"

/* Limits: default, hard maximum, and cost. */
#define SL_SENSORS_DEFAULT 65536u
#define SL_SENSORS_MAX (1u << 24) /* 16,777,216: 64 B record + 16 B index each */
#define SL_RING_READINGS_DEFAULT 4096u
#define SL_RING_READINGS_MIN 4u
#define SL_RING_READINGS_MAX (1u << 24) /* 8 B a reading: 128 MiB a sensor at most */
#define SL_WINDOWS_MAX 8u
#define SL_WINDOW_US_MAX (366LL * 24 * 3600 * 1000000) /* a year */
#define SL_EWMA_HALF_LIFE_US_DEFAULT (60LL * 1000000)
#define SL_FUTURE_SKEW_US_DEFAULT (300LL * 1000000)
/* The coarse tier spans the longest window in this many buckets (+1 partial). */
#define SL_COARSE_BUCKETS_DEFAULT 60u
#define SL_COARSE_BUCKETS_MAX 3600u /* 32 B each */
/* Bounded retries of a reader against a writer that keeps touching one sensor. */
#define SL_SNAPSHOT_RETRIES_MAX 64u

struct sl_store_config {
    uint32_t sensors_max;
    uint32_t ring_readings; /* slots per sensor: readings retained at full resolution */
    uint32_t windows_count;
    int64_t windows_us[SL_WINDOWS_MAX]; /* ascending, distinct, 1 s .. SL_WINDOW_US_MAX */
    int64_t ewma_half_life_us;
    int64_t future_skew_us;
    uint32_t coarse_buckets; /* 0 disables the coarse tier */
};

/* Fill a config with the defaults: 65,536 sensors, 4,096 readings, 10s/1m/1h. */
void sl_store_config_default(struct sl_store_config *config);

/* 0, or -EINVAL with a reason in *why when a field is out of its range. */
int sl_store_config_check(const struct sl_store_config *config, const char **why);

/*
 * A sensor record: one cache line, owned by the writer. Readers copy it
 * under the sequence lock. Field order is chosen so the hot fields of
 * sl_store_apply share the line.
 */
struct sl_sensor {
    uint32_t id;
    _Atomic uint32_t seq;  /* odd while the writer is changing this sensor */
    uint64_t readings_total; /* accepted since first seen */
    int64_t last_t_us;     /* newest reading's time */
    int64_t oldest_t_us;   /* oldest retained reading's time */
    uint32_t head;         /* next slot to write, 0 .. ring_readings - 1 */
    uint32_t used_slots;   /* slots holding readings or gap escapes */
    uint32_t count;        /* readings retained (used_slots minus escapes) */
    uint32_t coarse_slot;  /* writer's cache: coarse ring slot of last_t_us's bucket */
    double ewma;
    /*
     * Writer's cache: where last_t_us's coarse bucket ends (exclusive), so a
     * reading before it lands in the same bucket without a division.
     * INT64_MIN means unknown (a record loaded from a checkpoint).
     */
    int64_t coarse_end_us;
};
_Static_assert(sizeof(struct sl_sensor) == 64, "a sensor record is one cache line");

/*
 * A coarse bucket: the readings of one time slice of `coarse_resolution_us`.
 * Sums are shifted by the bucket's first value so the variance does not
 * cancel catastrophically (the "shifted data" algorithm).
 */
struct sl_coarse_bucket {
    uint32_t count;
    float shift; /* first value of the bucket */
    float min;
    float max;
    double sum;    /* sum of (x - shift) */
    double sum_sq; /* sum of (x - shift)^2 */
};
_Static_assert(sizeof(struct sl_coarse_bucket) == 32, "two buckets a cache line");

/*
 * A raw ring slot: a reading's value and its time delta side by side, so a
 * reading is one 8-byte store into one cache line. An escape slot (value
 * NaN) holds the high 32 bits of a gap too wide for one delta.
 */
struct sl_slot {
    float value;    /* f32 reading; NaN marks an escape slot */
    uint32_t delta; /* microseconds since the previous reading (low 32 bits) */
};
_Static_assert(sizeof(struct sl_slot) == 8, "a ring slot is 8 bytes");

/*
 * Slots from one sensor's ring to the next: ring_readings, plus one cache
 * line (8 slots) of padding when the ring is an even number of lines long.
 * Sensors reporting at one rate advance their rings in lockstep, so the
 * slots the writer touches one after another sit one stride apart; with an
 * even stride in lines (a 1,024-slot ring is 8 KiB) they fall into a
 * fraction of the L1 and L2 cache sets and evict each other (measured: 7%
 * slower apply at 10,000 sensors, BENCHMARKS.md). An odd stride spreads
 * them over every set.
 * Costs 64 B a sensor when it pads. Also fixes the checkpoint layout.
 */
static inline uint32_t sl_ring_stride(uint32_t ring_readings)
{
    return ring_readings % 16u == 0 ? ring_readings + 8u : ring_readings;
}

/* Store-wide counters: written by the writer only, read by anyone. */
struct sl_store_counters {
    _Atomic uint64_t readings_accepted;
    _Atomic uint64_t readings_rejected[SL_REJECT_COUNT];
};

enum { SL_EWMA_DECAY_CACHE = 256 };

struct sl_store {
    struct sl_store_config config;
    uint32_t index_mask;        /* index slots - 1 (a power of two, >= 2 x sensors_max) */
    uint32_t index_shift;       /* 64 - log2(index slots): multiply-shift keeps the top bits */
    uint64_t *index;            /* slot: id | (sensor index + 1) << 32; 0 = empty */
    struct sl_sensor *sensors;  /* [sensors_max], dense in arrival order */
    struct sl_slot *slots;      /* [sensors_max x ring_stride]: each sensor's ring, then padding */
    uint32_t ring_stride;       /* slots from one sensor's ring to the next (sl_ring_stride) */
    struct sl_coarse_bucket *coarse; /* [sensors_max x coarse_buckets_total] */
    uint32_t coarse_buckets_total;   /* config.coarse_buckets + 1 (0 when disabled) */
    int64_t coarse_resolution_us;
    _Atomic uint32_t sensors_count; /* published with release after a record is ready */
    struct sl_store_counters counters;
    /*
     * The writer's EWMA decays, 2^(-dt / half_life), by step dt: direct
     * mapped on dt. Sensors reporting at a steady rate share a few steps, so
     * exp2 runs only when a step is new. 4 KiB; writer only.
     */
    struct {
        uint64_t dt_us;
        double keep;
    } ewma_decay[SL_EWMA_DECAY_CACHE];
};

/* Add the store's parts to the plan (index, records, ring slots, coarse). */
void sl_store_plan(const struct sl_store_config *config, struct sl_plan *plan);

/* Raw tier bytes per retained reading for this config: ring slots and padding, record, index. */
double sl_store_bytes_per_reading(const struct sl_store_config *config);

/* Take the planned parts from the arena, in sl_store_plan's order. Config must pass check. */
void sl_store_init(struct sl_store *store, const struct sl_store_config *config,
                   struct sl_arena *arena);

/* Per-batch outcome: accepted + rejected = batch count. */
struct sl_apply_result {
    uint32_t accepted;
    uint32_t rejected;
    uint32_t rejected_by_reason[SL_REJECT_COUNT];
};

/*
 * Apply every reading of a validated batch, in order, under the
 * per-reading rules of PROTOCOL.md; now_us is the gateway's clock for the
 * `future` rule. Never allocates. Writer thread only.
 */
void sl_store_apply(struct sl_store *store, const struct sl_batch *batch, int64_t now_us,
                    struct sl_apply_result *result);

/* Apply one reading (the same rules); returns -1 - reason when rejected, else 0. */
int sl_store_apply_reading(struct sl_store *store, uint32_t sensor_id, int64_t t_us, float value,
                           int64_t now_us);

/*
 * Recovery only (start-up, before any reader): make sensor `index` (its
 * record already copied into store->sensors[index]) findable by id, and
 * count it. Sensors must be restored in dense order 0, 1, 2, ... Returns 0,
 * or -EINVAL when index is out of order or the id is already present.
 */
int sl_store_restore_sensor(struct sl_store *store, uint32_t index, uint32_t sensor_id);

/* Sensors known (any thread). */
static inline uint32_t sl_store_sensors_count(const struct sl_store *store)
{
    return atomic_load_explicit(&((struct sl_store *)store)->sensors_count, memory_order_acquire);
}

/*
 * Look up a sensor's dense index by id (any thread; lock-free against the
 * writer's inserts). Returns 0 and sets *index_out, or -ENOENT.
 */
int sl_store_find(const struct sl_store *store, uint32_t sensor_id, uint32_t *index_out);

/* The id of the sensor at a dense index < sl_store_sensors_count (any thread). */
uint32_t sl_store_sensor_id(const struct sl_store *store, uint32_t index);

/*
 * A consistent copy of one sensor, taken by a reader. The caller provides
 * the arrays (see sl_store_view_bytes) and keeps them; the view points into
 * them.
 */
struct sl_sensor_view {
    uint32_t id;
    uint64_t readings_total;
    double ewma;
    uint32_t count;          /* retained readings in t_us/value, oldest first */
    int64_t *t_us;           /* [ring_readings] */
    float *value;            /* [ring_readings] */
    uint32_t coarse_count;   /* buckets in coarse, oldest first; the last holds the newest reading */
    struct sl_coarse_bucket *coarse; /* [coarse_buckets_total] */
    int64_t coarse_first_bucket;     /* absolute bucket number of coarse[0] */
    int64_t coarse_resolution_us;
    uint32_t *scratch_deltas; /* [ring_readings], raw copy space */
};

/* Bytes a reader must provide for one view: t_us, value, coarse and scratch arrays. */
uint64_t sl_store_view_bytes(const struct sl_store_config *config);

/* Point a view's arrays into `memory` (sl_store_view_bytes long, 8-byte aligned). */
void sl_store_view_init(struct sl_sensor_view *view, const struct sl_store_config *config,
                        void *memory);

/*
 * Copy sensor `sensor_id` into the view. Returns 0, -ENOENT for an unknown
 * sensor, or -EBUSY when the writer changed it on every one of
 * SL_SNAPSHOT_RETRIES_MAX attempts (the caller answers 503; it never waits).
 */
int sl_store_snapshot(const struct sl_store *store, uint32_t sensor_id,
                      struct sl_sensor_view *view);

/* A sensor's record-level facts: what a listing needs, without copying the ring. */
struct sl_sensor_summary {
    uint32_t id;
    uint64_t readings_total;
    uint32_t count; /* retained */
    int64_t last_t_us;
    float last_value;
};

/*
 * Copy sensor `sensor_id`'s summary (O(1), any thread). 0, -ENOENT, or
 * -EBUSY after SL_SNAPSHOT_RETRIES_MAX attempts against the writer.
 */
int sl_store_summary(const struct sl_store *store, uint32_t sensor_id,
                     struct sl_sensor_summary *out);

/* Statistics of one window (HTTP_API.md). */
struct sl_window_stats {
    uint64_t count;
    double mean, min, max, stddev; /* meaningful when count > 0; stddev when count > 1 */
    bool exact;
    int64_t resolution_us; /* when !exact: the coarse tier's bucket width */
};

/*
 * Statistics of the readings with t > newest - window_us. Exact (two-pass,
 * double precision over the retained readings) when no reading of the
 * window has been dropped from the ring; otherwise from the coarse tier,
 * with exact = false. An empty view gives count 0.
 */
void sl_view_window(const struct sl_sensor_view *view, int64_t window_us,
                    struct sl_window_stats *out);

/* Index of the first retained reading with t >= t_us (count when none). */
uint32_t sl_view_lower_bound(const struct sl_sensor_view *view, int64_t t_us);

#endif
