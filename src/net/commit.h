/*
 * The commit pipeline: the one path every input takes to the store
 * (PROTOCOL.md's promise: log, then apply, then ack).
 *
 * A producer (the UDP socket, each TCP connection table, and every input
 * to come: HTTP writes, line protocol, MQTT) hands it decoded, validated
 * batches, one at a time, in the order they arrived. Each becomes a record
 * in the write-ahead log and an *intent* (apply this record, then answer
 * it); an answer that needs no log (DUPLICATE, OVERLOADED, a bad frame's
 * error) is an intent too, so every producer's answers leave in arrival
 * order whatever mix a group holds. The intents of one loop tick form a
 * commit group: one write and (with --sync always) one fdatasync for all
 * of them. The group is then applied to the store (on the apply worker,
 * beside the next groups, or at once with apply_thread off) and delivered:
 * each intent goes back to its producer through the producer's deliver
 * callback, with the status and the record's accepted/rejected counts; the
 * producer's flush callback runs after each delivery pass. A record the
 * commit could not make durable is never applied and is delivered
 * OVERLOADED, and its stream's dedup state is rolled back, so the resend
 * is accepted.
 *
 * Producers tag their intents (tag, tag_gen: a TCP connection and its
 * generation, say); the pipeline never looks at the tags, so a producer
 * whose peer left simply drops the answers it gets for it.
 *
 * Memory: the intents of the group gathering and of the groups in flight,
 * the apply jobs, and with a worker the apply areas (a log buffer each),
 * all from the arena (sl_commit_plan). Thread: the owner's (the ingest
 * thread) for every call; the worker only inside this module.
 */
#ifndef SL_NET_COMMIT_H
#define SL_NET_COMMIT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/plan.h"
#include "net/counters.h"
#include "store/checkpoint.h"
#include "store/log.h"
#include "store/store.h"
#include "store/streams.h"

/* Intents per commit group: more forces an early commit. 64 B each. */
#define SL_INTENTS_MAX 16384u
/* Groups the apply side holds: one being applied while the next waits, so the owner rarely does. */
#define SL_APPLY_GROUPS_IN_FLIGHT 2u
/* Producers one pipeline serves. */
#define SL_COMMIT_PRODUCERS_MAX 8u


/*
 * What to do with one batch once its commit group is written: apply a
 * logged record and answer it, send a status that needs no log
 * (DUPLICATE, OVERLOADED), or answer a bad frame (REJECT: the producer
 * closes after it).
 */
enum sl_intent_kind { SL_INTENT_RECORD = 0, SL_INTENT_STATUS = 1, SL_INTENT_REJECT = 2 };

struct sl_intent {
    uint64_t lsn;                       /* RECORD */
    const struct sl_log_record *record; /* RECORD: the logged batch, valid until the group is posted */
    struct sl_stream_slot *slot;        /* RECORD with dedup: the stream, rolled back if the commit fails */
    uint64_t prev_seq;                  /* RECORD with dedup: the slot's state before this batch */
    uint64_t batch_seq;
    uint32_t stream_id;
    uint32_t tag;     /* the producer's: which of its peers (a TCP connection index) */
    uint32_t tag_gen; /* the producer's: that peer's generation when the batch arrived */
    uint8_t producer; /* sl_commit_add_producer's id */
    uint8_t kind;     /* enum sl_intent_kind */
    uint8_t status;   /* STATUS, REJECT: the answer */
    uint8_t ack;      /* the batch asked for an answer (REJECT: always answered) */
    uint8_t prev_has_seq;
};

/* A producer: how its intents come back. Both callbacks run on the owner's thread. */
struct sl_commit_producer {
    /* An intent's outcome: OK with the apply result, or its STATUS/REJECT status, or OVERLOADED. */
    void (*deliver)(void *ctx, const struct sl_intent *in, enum sl_status status,
                    const struct sl_apply_result *result);
    /* After a pass of deliveries: write out what was queued. May be NULL. */
    void (*flush)(void *ctx);
    /*
     * After each commit, before its group is applied: records at or below
     * durable_lsn are durable per the sync mode, those above failed. For a
     * producer that appends records of its own beside its intents (series
     * names). May be NULL.
     */
    void (*committed)(void *ctx, uint64_t durable_lsn);
    void *ctx;
};

struct sl_commit_config {
    bool apply_thread;               /* apply on a worker thread, overlapping the next group */
    uint64_t apply_area_bytes;       /* the log buffer's size: one group's readings fit */
    uint64_t checkpoint_every_bytes; /* begin a checkpoint after this much log; 0 = never */
};

/*
 * One durable record as the apply side sees it: the batch (its readings
 * copied to the group's area when a worker applies it, so the log may reuse
 * its buffer meanwhile), the clock it was accepted at, and the outcome.
 */
struct sl_apply_job {
    struct sl_batch batch;
    uint64_t lsn;
    int64_t now_us;
    struct sl_apply_result result;
};

/* A committed group on the apply side: its intents (arrival order), the last lsn durable enough, its jobs. */
struct sl_apply_group {
    struct sl_intent *intents; /* SL_INTENTS_MAX */
    uint32_t intents_count;
    uint64_t applicable;
    struct sl_apply_job *jobs; /* SL_INTENTS_MAX */
    uint32_t jobs_count;
    uint8_t *area; /* apply_area_bytes (worker only) */
};

struct sl_commit {
    struct sl_commit_config config;
    struct sl_store *store;
    struct sl_log *log;
    struct sl_checkpointer *checkpointer; /* NULL: no checkpoints */
    struct sl_net_counters *counters;     /* apply_groups, apply_wait_ns */
    int wake_fd;                          /* the owner's eventfd: the worker writes it after a group */
    struct sl_commit_producer producers[SL_COMMIT_PRODUCERS_MAX];
    uint32_t producers_count;
    struct sl_intent *intents; /* SL_INTENTS_MAX, the group gathering */
    uint32_t intents_count;
    uint64_t applied_lsn; /* the last record applied to the store (delivered groups) */
    /*
     * Committed groups: posted in order, applied in order (by the worker, or
     * at once without one), delivered in order. At most
     * SL_APPLY_GROUPS_IN_FLIGHT; group n lives in groups[n % that].
     */
    struct sl_apply_group groups[SL_APPLY_GROUPS_IN_FLIGHT];
    uint64_t groups_posted;    /* owner */
    uint64_t groups_delivered; /* owner */
    uint64_t groups_applied;   /* under worker_mu */
    /* The apply worker (apply_thread): the store's only writer while it runs. */
    pthread_t worker;
    bool worker_started;
    bool worker_stop;            /* under worker_mu */
    int checkpoint_phase;        /* CHECKPOINT_* in commit.c, under worker_mu */
    int64_t checkpoint_retry_ns; /* owner: no checkpoint begins before this (one failed) */
    uint64_t worker_applied_lsn; /* worker: the last record it applied */
    pthread_mutex_t worker_mu;
    pthread_cond_t worker_cv;
};

void sl_commit_plan(const struct sl_commit_config *config, struct sl_plan *plan);

/*
 * Take the planned parts. `log` is the recovered log (its next lsn says
 * what is applied), `checkpointer` may be NULL, `wake_fd` is an eventfd
 * the owner polls (the worker writes it when a group is applied). Main
 * thread, at start-up.
 */
void sl_commit_open(struct sl_commit *commit, const struct sl_commit_config *config,
                    struct sl_store *store, struct sl_log *log, struct sl_checkpointer *checkpointer,
                    struct sl_net_counters *counters, int wake_fd, struct sl_arena *arena);

/* Register a producer; its id goes in each of its intents' `producer`. */
uint8_t sl_commit_add_producer(struct sl_commit *commit, const struct sl_commit_producer *producer);

/* Start the worker (apply_thread), on the owner's thread before its loop; stop it after. */
void sl_commit_start(struct sl_commit *commit);
void sl_commit_stop(struct sl_commit *commit);

/*
 * Make room for one more batch of `count` readings in the gathering group:
 * commit the group first when the log buffer, the segment or the intents
 * are full. Call it before changing any state for the batch (dedup),
 * because a commit that fails rolls state back, and a commit delivers,
 * which may close the producer's peer.
 */
void sl_commit_make_room(struct sl_commit *commit, uint32_t count);

/*
 * Log a validated batch and add its RECORD intent (the producer fills
 * producer, tag, tag_gen, stream_id, batch_seq, ack, and the dedup slot
 * fields when it has them). sl_commit_make_room came first: this never
 * commits. 0, or -EIO when the log refuses appends: the producer answers
 * OVERLOADED itself (or adds a STATUS intent).
 */
int sl_commit_log_batch(struct sl_commit *commit, const struct sl_batch *batch, uint8_t transport,
                        int64_t now_us, struct sl_intent *intent);

/* Add a STATUS or REJECT intent (committing first when the group is full). */
void sl_commit_add_intent(struct sl_commit *commit, const struct sl_intent *intent);

/*
 * A batch admitted on a dedup slot was not applied (its commit failed, or
 * the log refused it): restore the stream's last seq and mark the hole, so
 * that its resend is accepted and later seqs wait for it (PROTOCOL.md).
 */
void sl_commit_stream_failed(struct sl_stream_slot *slot, uint64_t prev_seq, uint8_t prev_has_seq,
                             uint64_t batch_seq);

/*
 * Commit the gathering group: write and sync the log per its mode, roll
 * back the dedup state of records that failed, hand the group to the apply
 * side (waiting for the oldest group in flight only when every slot is
 * taken), and deliver what is applied. Owner's thread.
 */
void sl_commit_flush(struct sl_commit *commit);

/* Deliver the groups the apply side has finished, oldest first (each producer's flush after). */
void sl_commit_collect(struct sl_commit *commit);

/* Commit, then wait until every committed group is applied and delivered: nothing in flight after. */
void sl_commit_settle(struct sl_commit *commit);

/* Between ticks: the log's periodic work (batch-mode syncs, leaving the failed state) and checkpoints. */
void sl_commit_tick(struct sl_commit *commit, int64_t now_ns);

/* Does the pipeline want the owner's loop to come back soon (a checkpoint under way on the owner)? */
bool sl_commit_busy(const struct sl_commit *commit);

/* Destroy the worker's mutex and condition variable (after sl_commit_stop). */
void sl_commit_close(struct sl_commit *commit);

#endif
