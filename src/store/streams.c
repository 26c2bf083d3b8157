/*
 * The per-stream table (see streams.h). A plain open-addressing hash keyed
 * by stream_id with a fixed mixing hash: stream ids come from
 * authenticated-by-CRC frames of a bounded set of senders, and the table is
 * at most half full, so probe sequences stay short; every probe loop is
 * still bounded by the table size.
 */
#include "store/streams.h"

#include <errno.h>
#include <string.h>

#include "core/assert.h"
#include "store/store_internal.h"

static uint32_t streams_slots(uint32_t capacity)
{
    uint32_t slots = 2;
    while (slots < 2 * (uint64_t)capacity) {
        slots *= 2;
    }
    return slots;
}

void sl_streams_plan(uint32_t capacity, struct sl_plan *plan, const char *name)
{
    sl_plan_add(plan, name, (uint64_t)streams_slots(capacity) * sizeof(struct sl_stream_slot),
                "per-stream last batch_seq and hole, 24 B a slot, >= 2 slots a stream");
}

void sl_streams_init(struct sl_streams *streams, uint32_t capacity, struct sl_arena *arena)
{
    SL_ASSERT(capacity >= 1 && capacity <= SL_STREAMS_MAX);
    memset(streams, 0, sizeof *streams);
    uint32_t slots = streams_slots(capacity);
    streams->capacity = capacity;
    streams->mask = slots - 1;
    streams->shift = 64 - (uint32_t)__builtin_ctz(slots);
    streams->slots = sl_arena_take(arena, (uint64_t)slots * sizeof(struct sl_stream_slot));
}

struct sl_stream_slot *sl_streams_get(struct sl_streams *streams, uint32_t stream_id, int create)
{
    uint32_t slot = (uint32_t)(sl_mix64(stream_id) >> streams->shift);
    for (uint32_t probes = 0; probes <= streams->mask; probes++) {
        struct sl_stream_slot *s = &streams->slots[slot];
        if (s->used && s->stream_id == stream_id) {
            return s;
        }
        if (!s->used) {
            if (!create) {
                return NULL;
            }
            uint32_t count = atomic_load_explicit(&streams->count, memory_order_relaxed);
            if (count == streams->capacity) {
                uint64_t full = atomic_load_explicit(&streams->full_total, memory_order_relaxed);
                atomic_store_explicit(&streams->full_total, full + 1, memory_order_relaxed);
                return NULL;
            }
            s->used = 1;
            s->has_seq = 0;
            s->stream_id = stream_id;
            s->last_seq = 0;
            s->hole_seq = 0;
            atomic_store_explicit(&streams->count, count + 1, memory_order_relaxed);
            return s;
        }
        slot = (slot + 1) & streams->mask;
    }
    SL_ASSERT(0 && "stream table has a free slot by construction");
    return NULL;
}

int sl_streams_admit(struct sl_streams *streams, uint32_t stream_id, uint64_t seq,
                     struct sl_stream_slot **slot_out)
{
    struct sl_stream_slot *s = sl_streams_get(streams, stream_id, 1);
    if (s == NULL) {
        return -ENOSPC;
    }
    if (s->has_seq && seq <= s->last_seq) {
        return 1;
    }
    *slot_out = s;
    return 0;
}

void sl_streams_applied(struct sl_stream_slot *slot, uint64_t seq)
{
    SL_ASSERT(slot->used);
    SL_ASSERT(!slot->has_seq || seq > slot->last_seq);
    slot->last_seq = seq;
    slot->has_seq = 1;
}

uint64_t sl_streams_observe(struct sl_streams *streams, uint32_t stream_id, uint64_t seq, int *seen)
{
    *seen = SL_STREAMS_IN_SEQUENCE;
    struct sl_stream_slot *s = sl_streams_get(streams, stream_id, 1);
    if (s == NULL) {
        return 0;
    }
    uint64_t lost = 0;
    if (s->has_seq) {
        if (seq <= s->last_seq) {
            *seen = SL_STREAMS_OUT_OF_SEQUENCE;
        } else if (seq - s->last_seq - 1 > SL_STREAMS_GAP_MAX) {
            *seen = SL_STREAMS_RESYNC;
        } else {
            lost = seq - s->last_seq - 1;
        }
    }
    s->last_seq = seq;
    s->has_seq = 1;
    return lost;
}
