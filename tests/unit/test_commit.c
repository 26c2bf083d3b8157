/*
 * test_commit: the commit pipeline (net/commit.c) without a socket.
 *
 * A real store and a real write-ahead log in a temporary directory, behind
 * the fault injector, and fake producers that record every answer. Each
 * case runs with the apply worker and without it:
 * - ack order: one group mixing records, DUPLICATE/OVERLOADED statuses and
 *   a bad frame's REJECT, from two producers, comes back in arrival order,
 *   each with its status and the record's accepted/rejected counts; a group
 *   forced out early by a full intent table keeps the order too;
 * - rollback on a failed write: the group's records are answered
 *   OVERLOADED, never applied, and their streams' dedup state is restored
 *   with the hole at the lowest failed seq (so the resend is accepted and
 *   later seqs wait for it);
 * - delivery to a closed producer: a peer that left after its batch was
 *   logged still has its batch applied (it is durable); the answer reaches
 *   the producer with the old generation, which drops it, and never a new
 *   peer in the same slot.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/io.h"
#include "core/plan.h"
#include "net/commit.h"
#include "store/log.h"
#include "store/store.h"
#include "store/streams.h"
#include "testlib.h"

#define NOW_US 1800000000000000LL
#define ANSWERS_MAX (SL_INTENTS_MAX + 64)

struct answer {
    uint8_t producer;
    uint32_t tag, tag_gen;
    uint32_t stream_id;
    uint64_t seq;
    uint8_t status;
    uint32_t accepted, rejected;
};

/* A fake producer: peers are tags with a generation; answers for an old generation are dropped. */
struct fake {
    uint8_t id;
    uint32_t generation[16];
    struct answer answers[ANSWERS_MAX];
    uint32_t answers_count;
    uint32_t dropped;
    uint32_t flushes;
};

static void fake_deliver(void *ctx, const struct sl_intent *in, enum sl_status status,
                         const struct sl_apply_result *result)
{
    struct fake *f = ctx;
    if (in->tag_gen != f->generation[in->tag]) {
        f->dropped++;
        return;
    }
    CHECK(f->answers_count < ANSWERS_MAX);
    f->answers[f->answers_count++] = (struct answer){
        .producer = in->producer, .tag = in->tag, .tag_gen = in->tag_gen, .stream_id = in->stream_id,
        .seq = in->batch_seq, .status = (uint8_t)status, .accepted = result->accepted,
        .rejected = result->rejected};
}

static void fake_flush(void *ctx)
{
    ((struct fake *)ctx)->flushes++;
}

struct rig {
    struct sl_arena arena;
    struct sl_store store;
    struct sl_streams streams;
    struct sl_io_faults faults;
    struct sl_log *log;
    struct sl_net_counters counters;
    struct sl_commit commit;
    struct fake a, b;
    int wake_fd;
    char dir[64];
};

static struct rig rig;

static void rig_open(bool apply_thread)
{
    memset(&rig, 0, sizeof rig);
    struct sl_store_config sc;
    sl_store_config_default(&sc);
    sc.sensors_max = 1024;
    sc.ring_readings = 64;
    struct sl_log_config lc;
    sl_log_config_default(&lc);
    snprintf(rig.dir, sizeof rig.dir, "/tmp/sluice-commit-XXXXXX");
    CHECK(mkdtemp(rig.dir) != NULL);
    snprintf(lc.dir, sizeof lc.dir, "%s", rig.dir);
    lc.segment_bytes = 4u << 20;
    lc.bytes_max = 16u << 20;
    lc.buffer_bytes = 4u << 20;
    lc.sync = SL_SYNC_ALWAYS;
    const char *why = NULL;
    /* A rule that never fires yet; a case moves it onto the next pwrite. */
    CHECK(sl_io_faults_init(&rig.faults, &sl_io_posix, "pwrite:EIO:1000000000", &why) == 0);
    lc.io = &rig.faults.io;
    struct sl_commit_config cc = {.apply_thread = apply_thread, .apply_area_bytes = lc.buffer_bytes};
    struct sl_plan plan;
    sl_plan_init(&plan);
    sl_store_plan(&sc, &plan);
    sl_streams_plan(64, &plan, "streams");
    sl_log_plan(&lc, &plan);
    sl_commit_plan(&cc, &plan);
    CHECK(sl_arena_map(&rig.arena, plan.total_bytes) == 0);
    sl_store_init(&rig.store, &sc, &rig.arena);
    sl_streams_init(&rig.streams, 64, &rig.arena);
    struct sl_log_recovery recovery;
    char err[256];
    rig.log = sl_log_open(&lc, &rig.arena, NULL, NULL, &recovery, err, sizeof err);
    CHECK(rig.log != NULL);
    rig.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    sl_commit_open(&rig.commit, &cc, &rig.store, rig.log, NULL, &rig.counters, rig.wake_fd, &rig.arena);
    struct sl_commit_producer pa = {.deliver = fake_deliver, .flush = fake_flush, .ctx = &rig.a};
    struct sl_commit_producer pb = {.deliver = fake_deliver, .flush = NULL, .ctx = &rig.b};
    rig.a.id = sl_commit_add_producer(&rig.commit, &pa);
    rig.b.id = sl_commit_add_producer(&rig.commit, &pb);
    CHECK(rig.a.id != rig.b.id);
    sl_arena_seal(&rig.arena);
    sl_commit_start(&rig.commit);
}

static void rig_close(void)
{
    sl_commit_settle(&rig.commit);
    sl_commit_stop(&rig.commit);
    sl_commit_close(&rig.commit);
    sl_log_close(rig.log);
    close(rig.wake_fd);
    sl_arena_unmap(&rig.arena);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", rig.dir);
    CHECK(system(cmd) == 0);
}

/* A batch of `n` readings of one sensor (the first `bad` of them NaN), decoded into *batch. */
static uint8_t frames[64][SL_BATCH_BYTES(8)];
static uint32_t frames_used;

static void make_batch(uint32_t stream, uint64_t seq, uint32_t sensor, uint32_t n, uint32_t bad,
                       struct sl_batch *batch)
{
    struct sl_reading r[8];
    CHECK(n <= 8);
    for (uint32_t i = 0; i < n; i++) {
        r[i] = (struct sl_reading){.sensor_id = sensor, .offset_us = i, .value = i < bad ? NAN : (float)i};
    }
    struct sl_batch_header h = {.flags = SL_FLAG_ACK_REQUESTED, .count = (uint16_t)n, .stream_id = stream,
                                .batch_seq = seq, .base_time_us = NOW_US - 1000000 + (int64_t)seq * 100};
    uint8_t *frame = frames[frames_used++ % 64];
    CHECK(sl_batch_encode(frame, SL_BATCH_BYTES(8), &h, r) == SL_BATCH_BYTES(n));
    CHECK(sl_batch_decode(frame, SL_BATCH_BYTES(n), batch) == 0);
}

/* Admit a batch on the stream table (as TCP does) and log it; the intent carries the rollback state. */
static int submit(struct fake *p, uint32_t tag, uint32_t stream, uint64_t seq, uint32_t sensor,
                  uint32_t n, uint32_t bad)
{
    struct sl_batch batch;
    make_batch(stream, seq, sensor, n, bad, &batch);
    sl_commit_make_room(&rig.commit, n);
    struct sl_stream_slot *slot = NULL;
    CHECK(sl_streams_admit(&rig.streams, stream, seq, &slot) == 0);
    struct sl_intent in = {.producer = p->id, .tag = tag, .tag_gen = p->generation[tag], .stream_id = stream,
                           .batch_seq = seq, .ack = 1, .slot = slot, .prev_seq = slot->last_seq,
                           .prev_has_seq = (uint8_t)slot->has_seq};
    sl_streams_applied(slot, seq);
    return sl_commit_log_batch(&rig.commit, &batch, SL_LOG_TCP, NOW_US, &in);
}

static void status_intent(struct fake *p, uint32_t tag, enum sl_intent_kind kind, enum sl_status status,
                          uint32_t stream, uint64_t seq)
{
    struct sl_intent in = {.producer = p->id, .tag = tag, .tag_gen = p->generation[tag], .kind = (uint8_t)kind,
                           .status = (uint8_t)status, .stream_id = stream, .batch_seq = seq, .ack = 1};
    sl_commit_add_intent(&rig.commit, &in);
}

static uint32_t retained(uint32_t sensor)
{
    static uint8_t memory[1 << 16];
    struct sl_sensor_view view;
    CHECK(sl_store_view_bytes(&rig.store.config) <= sizeof memory);
    sl_store_view_init(&view, &rig.store.config, memory);
    return sl_store_snapshot(&rig.store, sensor, &view) == 0 ? view.count : 0;
}

static void check_answer(const struct answer *a, uint32_t tag, uint64_t seq, enum sl_status status,
                         uint32_t accepted, uint32_t rejected)
{
    CHECK_EQ(a->tag, tag);
    CHECK_EQ(a->seq, seq);
    CHECK_EQ(a->status, status);
    CHECK_EQ(a->accepted, accepted);
    CHECK_EQ(a->rejected, rejected);
}

static void case_order(bool apply_thread)
{
    rig_open(apply_thread);
    /* One group, arrival order: a1 b1 a-dup b-reject a2 a-overloaded b2. */
    CHECK(submit(&rig.a, 1, 10, 1, 100, 4, 1) == 0);
    CHECK(submit(&rig.b, 2, 20, 1, 200, 3, 0) == 0);
    status_intent(&rig.a, 1, SL_INTENT_STATUS, SL_STATUS_DUPLICATE, 10, 1);
    status_intent(&rig.b, 3, SL_INTENT_REJECT, SL_STATUS_MALFORMED, 21, 9);
    CHECK(submit(&rig.a, 1, 10, 2, 100, 2, 0) == 0);
    status_intent(&rig.a, 4, SL_INTENT_STATUS, SL_STATUS_OVERLOADED, 11, 5);
    CHECK(submit(&rig.b, 2, 20, 2, 200, 1, 1) == 0);
    CHECK_EQ(rig.a.answers_count + rig.b.answers_count, 0); /* nothing answered before the commit */
    sl_commit_settle(&rig.commit);
    CHECK_EQ(rig.a.answers_count, 4);
    CHECK_EQ(rig.b.answers_count, 3);
    check_answer(&rig.a.answers[0], 1, 1, SL_STATUS_OK, 3, 1);
    check_answer(&rig.a.answers[1], 1, 1, SL_STATUS_DUPLICATE, 0, 0);
    check_answer(&rig.a.answers[2], 1, 2, SL_STATUS_OK, 2, 0);
    check_answer(&rig.a.answers[3], 4, 5, SL_STATUS_OVERLOADED, 0, 0);
    check_answer(&rig.b.answers[0], 2, 1, SL_STATUS_OK, 3, 0);
    check_answer(&rig.b.answers[1], 3, 9, SL_STATUS_MALFORMED, 0, 0);
    check_answer(&rig.b.answers[2], 2, 2, SL_STATUS_OK, 0, 1);
    CHECK(rig.a.flushes >= 1); /* a producer's flush runs after its answers are delivered */
    CHECK_EQ(retained(100), 5);
    CHECK_EQ(retained(200), 3);
    /* A group larger than the intent table is cut into several; the order holds across them. */
    uint32_t before = rig.a.answers_count;
    for (uint32_t i = 0; i < SL_INTENTS_MAX + 10; i++) {
        status_intent(&rig.a, 5, SL_INTENT_STATUS, SL_STATUS_DUPLICATE, 12, i);
    }
    sl_commit_settle(&rig.commit);
    CHECK_EQ(rig.a.answers_count - before, SL_INTENTS_MAX + 10);
    uint32_t out_of_order = 0;
    for (uint32_t i = 0; i < SL_INTENTS_MAX + 10; i++) {
        out_of_order += rig.a.answers[before + i].seq != i;
    }
    CHECK_EQ(out_of_order, 0);
    rig_close();
}

static void case_rollback(bool apply_thread)
{
    rig_open(apply_thread);
    CHECK(submit(&rig.a, 1, 10, 4, 100, 2, 0) == 0);
    sl_commit_settle(&rig.commit);
    CHECK_EQ(rig.a.answers_count, 1);
    CHECK_EQ(rig.a.answers[0].status, SL_STATUS_OK);
    /* The next group's write fails: seqs 5 and 6 of stream 10, and seq 1 of stream 11. */
    uint64_t next = atomic_load(&rig.faults.calls[SL_IO_OP_PWRITE]) + 1;
    rig.faults.rules[0].first = next;
    rig.faults.rules[0].last = next;
    CHECK(submit(&rig.a, 1, 10, 5, 101, 2, 0) == 0);
    CHECK(submit(&rig.a, 1, 10, 6, 101, 2, 0) == 0);
    CHECK(submit(&rig.b, 2, 11, 1, 102, 2, 0) == 0);
    sl_commit_settle(&rig.commit);
    CHECK_EQ(atomic_load(&rig.faults.injected[SL_IO_OP_PWRITE]), 1);
    CHECK_EQ(rig.a.answers_count, 3);
    CHECK_EQ(rig.a.answers[1].status, SL_STATUS_OVERLOADED);
    CHECK_EQ(rig.a.answers[2].status, SL_STATUS_OVERLOADED);
    CHECK_EQ(rig.b.answers_count, 1);
    CHECK_EQ(rig.b.answers[0].status, SL_STATUS_OVERLOADED);
    CHECK_EQ(retained(101), 0); /* never applied */
    CHECK_EQ(retained(102), 0);
    struct sl_stream_slot *s10 = sl_streams_get(&rig.streams, 10, 0);
    struct sl_stream_slot *s11 = sl_streams_get(&rig.streams, 11, 0);
    CHECK(s10 != NULL && s11 != NULL);
    CHECK_EQ(s10->last_seq, 4); /* restored: the resend of 5 is accepted, not DUPLICATE */
    CHECK_EQ(s10->has_seq, 1);
    CHECK_EQ(s10->hole_seq, 5); /* the lowest failed seq: later ones wait for it */
    CHECK_EQ(s11->has_seq, 0);  /* a stream's first batch failed: as if never seen */
    CHECK_EQ(s11->hole_seq, 1);
    CHECK_EQ(retained(100), 2); /* what was applied before stays */
    rig_close();
}

static void case_closed_producer(bool apply_thread)
{
    rig_open(apply_thread);
    rig.a.generation[7] = 1;
    CHECK(submit(&rig.a, 7, 30, 1, 300, 3, 0) == 0);
    rig.a.generation[7] = 2; /* logged, not yet committed: the peer left, a new one took its slot */
    CHECK(submit(&rig.a, 7, 31, 1, 301, 1, 0) == 0);
    sl_commit_settle(&rig.commit);
    CHECK_EQ(rig.a.dropped, 1);        /* the old peer's answer: dropped by its producer */
    CHECK_EQ(rig.a.answers_count, 1);  /* the new peer gets only its own */
    check_answer(&rig.a.answers[0], 7, 1, SL_STATUS_OK, 1, 0);
    CHECK_EQ(rig.a.answers[0].stream_id, 31);
    CHECK_EQ(retained(300), 3); /* durable, so applied though no one hears the ack */
    rig_close();
}

int main(void)
{
    for (int threaded = 0; threaded <= 1; threaded++) {
        case_order(threaded);
        case_rollback(threaded);
        case_closed_producer(threaded);
    }
    TEST_END("test_commit");
}
