/*
 * The per-stream table: for each stream_id, the last batch_seq applied.
 *
 * TCP uses it for exactly-once delivery (a batch whose seq is <= the last
 * applied one is a DUPLICATE); UDP uses a second instance to count gaps in
 * batch_seq as lost datagrams. Fixed capacity, open addressing with linear
 * probing over 2 x capacity slots (rounded up to a power of two), never
 * grown; a new stream while the table is full is refused (-ENOSPC) and
 * counted, and the caller answers OVERLOADED (TCP) or stops tracking (UDP).
 *
 * Memory: 24 B a slot, >= 48 B a stream. Writer thread only; `count` and
 * `full_total` may be read by any thread (relaxed atomics).
 */
#ifndef SL_STORE_STREAMS_H
#define SL_STORE_STREAMS_H

#include <stdatomic.h>
#include <stdint.h>

#include "core/plan.h"

#define SL_STREAMS_DEFAULT 4096u
#define SL_STREAMS_MAX (1u << 20)

struct sl_stream_slot {
    uint32_t stream_id;
    uint16_t used;    /* 1 when the slot holds a stream */
    uint16_t has_seq; /* 1 once a batch_seq was applied (or seen, on UDP) */
    uint64_t last_seq;
    /*
     * TCP: the lowest batch_seq answered OVERLOADED and not applied since
     * (0: none). Later seqs of the stream are refused OVERLOADED until it is
     * resent, so that a pipelined batch behind it cannot make its resend a
     * DUPLICATE (which would lose it). Kept in memory only.
     */
    uint64_t hole_seq;
};

struct sl_streams {
    uint32_t capacity; /* streams */
    uint32_t mask;     /* slots - 1 */
    uint32_t shift;    /* 64 - log2(slots): the hash keeps the product's top bits */
    struct sl_stream_slot *slots;
    _Atomic uint32_t count;
    _Atomic uint64_t full_total; /* new streams refused because the table was full */
};

/* Add the table's part to the plan under `name`. */
void sl_streams_plan(uint32_t capacity, struct sl_plan *plan, const char *name);

/* Take the planned part from the arena. 1 <= capacity <= SL_STREAMS_MAX. */
void sl_streams_init(struct sl_streams *streams, uint32_t capacity, struct sl_arena *arena);

/*
 * Find a stream's slot, creating it when `create` and the table has room.
 * Returns the slot, or NULL when absent (create == 0) or the table is full
 * (create != 0; full_total is then incremented).
 */
struct sl_stream_slot *sl_streams_get(struct sl_streams *streams, uint32_t stream_id, int create);

/*
 * TCP, before applying a batch: 0 when it is new (*slot_out is its stream's
 * slot, to pass to sl_streams_applied once it is applied), 1 when seq <= the
 * last applied seq of the stream (a DUPLICATE), -ENOSPC when the stream is
 * new and the table is full (the caller answers OVERLOADED).
 */
int sl_streams_admit(struct sl_streams *streams, uint32_t stream_id, uint64_t seq,
                     struct sl_stream_slot **slot_out);

/* TCP: record `seq` as the stream's last applied batch. */
void sl_streams_applied(struct sl_stream_slot *slot, uint64_t seq);

/*
 * UDP: note `seq` arriving on a stream; returns the datagrams lost before it
 * (seq - last - 1 when it jumps ahead by at most SL_STREAMS_GAP_MAX, else
 * 0) and sets *seen: SL_STREAMS_IN_SEQUENCE; SL_STREAMS_OUT_OF_SEQUENCE
 * for a seq at or below the last one (a reordered datagram or a restarted
 * sender); SL_STREAMS_RESYNC for a jump further ahead than any honest loss
 * (a sender restarted at a new seq, or a forged datagram), which is not
 * counted as loss. Either way the stream resynchronises to `seq`. A stream
 * that does not fit is not tracked.
 */
#define SL_STREAMS_GAP_MAX 65536u
enum { SL_STREAMS_IN_SEQUENCE = 0, SL_STREAMS_OUT_OF_SEQUENCE = 1, SL_STREAMS_RESYNC = 2 };
uint64_t sl_streams_observe(struct sl_streams *streams, uint32_t stream_id, uint64_t seq, int *seen);

#endif
