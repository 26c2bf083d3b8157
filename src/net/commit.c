/*
 * The commit pipeline (see commit.h): intents, commit groups, the apply
 * worker, and the checkpoint handshake between the owner and the worker.
 *
 * The apply side. A committed group is posted whole (group_post), applied
 * whole, in lsn order, and delivered whole (group_collect): every intent
 * answered in arrival order. With a worker thread, the apply of one group
 * runs while the owner receives, validates, logs and commits the next ones;
 * up to SL_APPLY_GROUPS_IN_FLIGHT groups are posted and not yet delivered,
 * and the owner waits only when all of them are taken. The worker is the
 * store's only writer while it runs; it applies a copy of the readings (the
 * group's area) because the log reuses its buffer for later groups. With
 * apply_thread off, a group is applied as it is posted, on the owner's
 * thread, which is then the store's only writer.
 *
 * Memory: from the arena at open (sl_commit_plan); nothing allocates after.
 */
#include "net/commit.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc_count.h"
#include "core/assert.h"
#include "core/clock.h"
#include "core/say.h"

_Static_assert(sizeof(struct sl_intent) == 64, "an intent is one cache line (commit.h, DESIGN.md's plan)");

void sl_commit_plan(const struct sl_commit_config *config, struct sl_plan *plan)
{
    uint64_t groups = SL_APPLY_GROUPS_IN_FLIGHT;
    sl_plan_add(plan, "commit_intents", (groups + 1) * SL_INTENTS_MAX * sizeof(struct sl_intent),
                "commit groups' batches in arrival order: the one gathering, those in flight");
    sl_plan_add(plan, "apply_jobs", groups * SL_INTENTS_MAX * sizeof(struct sl_apply_job),
                "the records of the groups in flight and their outcomes");
    if (config->apply_thread) {
        sl_plan_add(plan, "apply_area", groups * config->apply_area_bytes,
                    "the readings of the groups in flight, for the apply thread (a log buffer each)");
    }
}

void sl_commit_open(struct sl_commit *c, const struct sl_commit_config *config, struct sl_store *store,
                    struct sl_log *log, struct sl_checkpointer *checkpointer,
                    struct sl_net_counters *counters, int wake_fd, struct sl_arena *arena)
{
    memset(c, 0, sizeof *c);
    c->config = *config;
    c->store = store;
    c->log = log;
    c->checkpointer = checkpointer;
    c->counters = counters;
    c->wake_fd = wake_fd;
    c->applied_lsn = sl_log_next_lsn(log) - 1;
    c->intents = sl_arena_take(arena, (uint64_t)SL_INTENTS_MAX * sizeof(struct sl_intent));
    for (uint32_t g = 0; g < SL_APPLY_GROUPS_IN_FLIGHT; g++) {
        struct sl_apply_group *group = &c->groups[g];
        group->intents = sl_arena_take(arena, (uint64_t)SL_INTENTS_MAX * sizeof(struct sl_intent));
        group->jobs = sl_arena_take(arena, (uint64_t)SL_INTENTS_MAX * sizeof(struct sl_apply_job));
        group->area = config->apply_thread ? sl_arena_take(arena, config->apply_area_bytes) : NULL;
    }
    pthread_mutex_init(&c->worker_mu, NULL);
    pthread_cond_init(&c->worker_cv, NULL);
}

uint8_t sl_commit_add_producer(struct sl_commit *c, const struct sl_commit_producer *producer)
{
    SL_ASSERT(c->producers_count < SL_COMMIT_PRODUCERS_MAX);
    SL_ASSERT(producer->deliver != NULL);
    c->producers[c->producers_count] = *producer;
    return (uint8_t)c->producers_count++;
}

static struct sl_intent *intent_next(struct sl_commit *c)
{
    if (c->intents_count == SL_INTENTS_MAX) {
        sl_commit_flush(c);
    }
    SL_ASSERT(c->intents_count < SL_INTENTS_MAX);
    return &c->intents[c->intents_count++];
}

void sl_commit_add_intent(struct sl_commit *c, const struct sl_intent *intent)
{
    SL_ASSERT(intent->kind != SL_INTENT_RECORD);
    SL_ASSERT(intent->producer < c->producers_count);
    *intent_next(c) = *intent;
}

void sl_commit_make_room(struct sl_commit *c, uint32_t count)
{
    if (c->intents_count == SL_INTENTS_MAX || sl_log_room(c->log, count) == -ENOBUFS) {
        sl_commit_flush(c); /* after a commit the record always fits */
    }
}

int sl_commit_log_batch(struct sl_commit *c, const struct sl_batch *batch, uint8_t transport,
                        int64_t now_us, struct sl_intent *intent)
{
    SL_ASSERT(c->intents_count < SL_INTENTS_MAX);
    SL_ASSERT(intent->producer < c->producers_count);
    uint64_t lsn = 0;
    const struct sl_log_record *record = NULL;
    int rc = sl_log_append(c->log, batch, transport, now_us, &lsn, &record);
    SL_ASSERT(rc != -ENOBUFS); /* sl_commit_make_room came first */
    if (rc != 0) {
        return rc;
    }
    intent->kind = SL_INTENT_RECORD;
    intent->lsn = lsn;
    intent->record = record;
    *intent_next(c) = *intent;
    return 0;
}

static struct sl_apply_group *group_at(struct sl_commit *c, uint64_t n)
{
    return &c->groups[n % SL_APPLY_GROUPS_IN_FLIGHT];
}

static void jobs_run(struct sl_commit *c, struct sl_apply_group *group)
{
    for (uint32_t j = 0; j < group->jobs_count; j++) {
        struct sl_apply_job *job = &group->jobs[j];
        sl_store_apply(c->store, &job->batch, job->now_us, &job->result);
    }
}

/*
 * Checkpoints with a worker. The owner begins one (file and header) and
 * hands the sensor chunks to the worker (CHECKPOINT_SENSORS), which writes
 * one chunk after each group it applies, or while idle, each copied at the
 * lsn it has applied, between groups: nothing else writes the store. When
 * every sensor is written it hands back (CHECKPOINT_FINISH) and the owner,
 * which owns the stream tables, finishes the file. Neither thread waits for
 * the other, so a checkpoint stalls neither the apply nor the receive.
 */
enum { CHECKPOINT_NONE = 0, CHECKPOINT_SENSORS = 1, CHECKPOINT_FINISH = 2, CHECKPOINT_FAILED = 3 };

/*
 * After a checkpoint fails (a full disk, an I/O error), the next begins no
 * sooner than this: a log that waits for a checkpoint asks every tick, and
 * a retry a tick would rewrite the file's start over and over on a disk
 * that cannot take it.
 */
#define SL_CHECKPOINT_RETRY_NS (1000LL * 1000000)

static void wake_owner(struct sl_commit *c)
{
    uint64_t one = 1;
    ssize_t r = write(c->wake_fd, &one, sizeof one);
    (void)r;
}

static void *worker_run(void *arg)
{
    struct sl_commit *c = arg;
    sl_alloc_track(SL_ALLOC_INGEST);
    pthread_mutex_lock(&c->worker_mu);
    for (;;) {
        while (c->groups_applied == c->groups_posted && !c->worker_stop &&
               c->checkpoint_phase != CHECKPOINT_SENSORS) {
            pthread_cond_wait(&c->worker_cv, &c->worker_mu);
        }
        bool group = c->groups_applied < c->groups_posted;
        bool chunk = c->checkpoint_phase == CHECKPOINT_SENSORS && !c->worker_stop;
        if (!group && !chunk) {
            break; /* stopping, with nothing left to apply (a checkpoint under way is left) */
        }
        if (group) {
            struct sl_apply_group *g = group_at(c, c->groups_applied);
            pthread_mutex_unlock(&c->worker_mu);
            jobs_run(c, g);
            if (g->jobs_count > 0) {
                c->worker_applied_lsn = g->jobs[g->jobs_count - 1].lsn;
            }
            pthread_mutex_lock(&c->worker_mu);
            c->groups_applied++;
            pthread_cond_broadcast(&c->worker_cv);
            wake_owner(c); /* the owner delivers the answers */
        }
        if (chunk) {
            pthread_mutex_unlock(&c->worker_mu);
            int rc = sl_checkpoint_step_sensors(c->checkpointer, c->worker_applied_lsn);
            pthread_mutex_lock(&c->worker_mu);
            if (rc != 0) {
                c->checkpoint_phase = rc == 1 ? CHECKPOINT_FINISH : CHECKPOINT_FAILED;
                wake_owner(c);
            }
        }
    }
    pthread_mutex_unlock(&c->worker_mu);
    return NULL;
}

void sl_commit_start(struct sl_commit *c)
{
    if (!c->config.apply_thread) {
        return;
    }
    c->worker_applied_lsn = c->applied_lsn;
    int rc = pthread_create(&c->worker, NULL, worker_run, c);
    if (rc != 0) {
        sl_say(SL_SAY_WARN, "ingest", "apply thread: %s; applying on the ingest thread", strerror(rc));
        return;
    }
    pthread_setname_np(c->worker, "sluice-apply");
    c->worker_started = true;
}

void sl_commit_stop(struct sl_commit *c)
{
    if (!c->worker_started) {
        return;
    }
    pthread_mutex_lock(&c->worker_mu);
    c->worker_stop = true;
    pthread_cond_broadcast(&c->worker_cv);
    pthread_mutex_unlock(&c->worker_mu);
    pthread_join(c->worker, NULL);
    c->worker_started = false;
}

/* Groups applied so far (the worker's count; every posted one without a worker). */
static uint64_t groups_applied(struct sl_commit *c, bool wait_for_all, bool wait_for_one)
{
    if (!c->worker_started) {
        return c->groups_posted;
    }
    pthread_mutex_lock(&c->worker_mu);
    uint64_t want = wait_for_all   ? c->groups_posted
                    : wait_for_one ? c->groups_delivered + 1
                                   : 0;
    if (c->groups_applied < want) {
        int64_t t0 = sl_clock_monotonic_ns();
        while (c->groups_applied < want) {
            pthread_cond_wait(&c->worker_cv, &c->worker_mu);
        }
        sl_counter_add(&c->counters->apply_wait_ns, (uint64_t)(sl_clock_monotonic_ns() - t0));
    }
    uint64_t applied = c->groups_applied;
    pthread_mutex_unlock(&c->worker_mu);
    return applied;
}

static void deliver(struct sl_commit *c, const struct sl_intent *in, enum sl_status status,
                    const struct sl_apply_result *result)
{
    const struct sl_commit_producer *p = &c->producers[in->producer];
    p->deliver(p->ctx, in, status, result);
}

/* Every intent of an applied group to its producer, in order. */
static void group_deliver(struct sl_commit *c, const struct sl_apply_group *group)
{
    static const struct sl_apply_result none;
    uint32_t j = 0;
    for (uint32_t i = 0; i < group->intents_count; i++) {
        const struct sl_intent *in = &group->intents[i];
        if (in->kind != SL_INTENT_RECORD) {
            deliver(c, in, (enum sl_status)in->status, &none);
        } else if (in->lsn > group->applicable) {
            deliver(c, in, SL_STATUS_OVERLOADED, &none); /* never applied: not durable */
        } else {
            SL_ASSERT(j < group->jobs_count && in->lsn > c->applied_lsn);
            c->applied_lsn = in->lsn;
            deliver(c, in, SL_STATUS_OK, &group->jobs[j++].result);
        }
    }
    SL_ASSERT(j == group->jobs_count);
    sl_log_set_applied(c->log, c->applied_lsn); /* uplinks read the log up to here */
}

/*
 * Deliver the groups the apply side has finished, oldest first, then let
 * each producer write out. wait_for_all: first wait until every posted
 * group is applied; wait_for_one: until at least the oldest is.
 */
static void group_collect(struct sl_commit *c, bool wait_for_all, bool wait_for_one)
{
    if (c->groups_delivered == c->groups_posted) {
        return;
    }
    uint64_t applied = groups_applied(c, wait_for_all, wait_for_one);
    if (applied == c->groups_delivered) {
        return;
    }
    while (c->groups_delivered < applied) {
        group_deliver(c, group_at(c, c->groups_delivered));
        c->groups_delivered++;
    }
    for (uint32_t p = 0; p < c->producers_count; p++) {
        if (c->producers[p].flush != NULL) {
            c->producers[p].flush(c->producers[p].ctx);
        }
    }
}

/* Hand the just-committed group to the apply side; records above `applicable` are not applied. */
static void group_post(struct sl_commit *c, uint64_t applicable)
{
    if (c->groups_posted - c->groups_delivered == SL_APPLY_GROUPS_IN_FLIGHT) {
        group_collect(c, false, true); /* every slot taken: wait for the oldest */
    }
    struct sl_apply_group *group = group_at(c, c->groups_posted);
    struct sl_intent *gathered = c->intents;
    c->intents = group->intents;
    group->intents = gathered;
    group->intents_count = c->intents_count;
    c->intents_count = 0;
    group->applicable = applicable;
    uint32_t jobs = 0;
    uint64_t area = 0;
    for (uint32_t i = 0; i < group->intents_count; i++) {
        const struct sl_intent *in = &group->intents[i];
        if (in->kind != SL_INTENT_RECORD || in->lsn > applicable) {
            continue;
        }
        /* The record is readable until the log's next append: take what the apply needs. */
        struct sl_apply_job *job = &group->jobs[jobs++];
        job->batch = in->record->batch;
        job->lsn = in->lsn;
        job->now_us = in->record->now_us;
        if (c->worker_started) {
            uint64_t bytes = (uint64_t)job->batch.header.count * SL_READING_BYTES;
            SL_ASSERT(area + bytes <= c->config.apply_area_bytes); /* the group fit the log buffer */
            memcpy(group->area + area, job->batch.readings, bytes);
            job->batch.readings = group->area + area;
            area += bytes;
        }
    }
    group->jobs_count = jobs;
    sl_counter_add(&c->counters->apply_groups, 1);
    if (c->worker_started) {
        pthread_mutex_lock(&c->worker_mu);
        c->groups_posted++;
        pthread_cond_broadcast(&c->worker_cv);
        pthread_mutex_unlock(&c->worker_mu);
    } else {
        jobs_run(c, group);
        c->groups_posted++;
    }
}

void sl_commit_stream_failed(struct sl_stream_slot *slot, uint64_t prev_seq, uint8_t prev_has_seq,
                             uint64_t batch_seq)
{
    slot->last_seq = prev_seq;
    slot->has_seq = prev_has_seq;
    if (slot->hole_seq == 0 || batch_seq < slot->hole_seq) {
        slot->hole_seq = batch_seq;
    }
}

void sl_commit_flush(struct sl_commit *c)
{
    if (c->intents_count == 0) {
        return;
    }
    uint64_t applicable = 0;
    sl_log_commit(c->log, sl_clock_monotonic_ns(), &applicable);
    /* Roll back, newest first, the streams whose batches failed, so a resend is not DUPLICATE. */
    for (uint32_t i = c->intents_count; i-- > 0;) {
        const struct sl_intent *in = &c->intents[i];
        if (in->kind == SL_INTENT_RECORD && in->lsn > applicable && in->slot != NULL) {
            sl_commit_stream_failed(in->slot, in->prev_seq, in->prev_has_seq, in->batch_seq);
        }
    }
    for (uint32_t p = 0; p < c->producers_count; p++) {
        if (c->producers[p].committed != NULL) {
            c->producers[p].committed(c->producers[p].ctx, applicable);
        }
    }
    group_post(c, applicable);
    group_collect(c, false, false); /* without a worker: delivered at once */
}

void sl_commit_collect(struct sl_commit *c)
{
    group_collect(c, false, false);
}

void sl_commit_settle(struct sl_commit *c)
{
    sl_commit_flush(c);
    group_collect(c, true, false);
}

static int checkpoint_phase(struct sl_commit *c)
{
    pthread_mutex_lock(&c->worker_mu);
    int phase = c->checkpoint_phase;
    pthread_mutex_unlock(&c->worker_mu);
    return phase;
}

static void checkpoint_phase_set(struct sl_commit *c, int phase)
{
    pthread_mutex_lock(&c->worker_mu);
    c->checkpoint_phase = phase;
    pthread_cond_broadcast(&c->worker_cv);
    pthread_mutex_unlock(&c->worker_mu);
}

/* Is a checkpoint due: enough log since the last, or the log is waiting for one? */
static bool checkpoint_due(struct sl_commit *c)
{
    return sl_log_bytes_since(c->log, false) >= c->config.checkpoint_every_bytes ||
           sl_log_waiting_for_checkpoint(c->log);
}

/* A checkpoint failed (counted by the checkpointer): the next waits SL_CHECKPOINT_RETRY_NS. */
static void checkpoint_failed(struct sl_commit *c, int64_t now_ns)
{
    c->checkpoint_retry_ns = now_ns + SL_CHECKPOINT_RETRY_NS;
}

/* Begin one when due and not backing off: 0 when it began. */
static int checkpoint_start(struct sl_commit *c, int64_t now_ns)
{
    if (now_ns < c->checkpoint_retry_ns || !checkpoint_due(c)) {
        return -1;
    }
    sl_log_bytes_since(c->log, true);
    /* Records at or below the last delivered group are in the store, and stay. */
    if (sl_checkpoint_begin(c->checkpointer, c->applied_lsn) != 0) {
        checkpoint_failed(c, now_ns);
        return -1;
    }
    return 0;
}

/*
 * Progress a checkpoint, or start one when enough log has accumulated.
 * Without a worker, a chunk a tick here; with one, see CHECKPOINT_SENSORS.
 */
static void checkpoint_tick(struct sl_commit *c, int64_t now_ns)
{
    struct sl_checkpointer *ck = c->checkpointer;
    if (ck == NULL || c->config.checkpoint_every_bytes == 0) {
        return;
    }
    if (c->worker_started) {
        int phase = checkpoint_phase(c);
        if (phase == CHECKPOINT_FINISH) {
            /* After this tick's commit: every committed record's stream effect is in the tables. */
            uint64_t start = ck->start_lsn;
            if (sl_checkpoint_finish(ck, sl_log_next_lsn(c->log) - 1) == 1) {
                sl_log_set_checkpoint_lsn(c->log, start + 1);
            } else {
                checkpoint_failed(c, now_ns);
            }
            checkpoint_phase_set(c, CHECKPOINT_NONE);
        } else if (phase == CHECKPOINT_FAILED) {
            checkpoint_failed(c, now_ns);
            checkpoint_phase_set(c, CHECKPOINT_NONE);
        } else if (phase == CHECKPOINT_NONE && checkpoint_start(c, now_ns) == 0) {
            checkpoint_phase_set(c, CHECKPOINT_SENSORS);
        }
        return;
    }
    if (!ck->active && checkpoint_start(c, now_ns) != 0) {
        return;
    }
    uint64_t start = ck->start_lsn;
    int rc = sl_checkpoint_step(ck, c->applied_lsn);
    if (rc == 1) {
        sl_log_set_checkpoint_lsn(c->log, start + 1);
    } else if (rc < 0) {
        checkpoint_failed(c, now_ns);
    }
}

void sl_commit_tick(struct sl_commit *c, int64_t now_ns)
{
    sl_log_tick(c->log, now_ns);
    checkpoint_tick(c, now_ns);
}

bool sl_commit_busy(const struct sl_commit *c)
{
    return !c->worker_started && c->checkpointer != NULL && c->checkpointer->active;
}

void sl_commit_close(struct sl_commit *c)
{
    pthread_cond_destroy(&c->worker_cv);
    pthread_mutex_destroy(&c->worker_mu);
}
