/*
 * The ingest thread (see ingest.h): socket set-up, the epoll loop, UDP.
 * TCP connections are in tcp.c.
 *
 * The loop is the one infinite loop in the daemon. Each tick waits up to
 * SL_TICK_MS, serves the ready sockets with capped work each, and once a
 * second sweeps the connection table for idle connections. Stopping:
 * sl_ingest_stop writes the eventfd; the loop then stops accepting, drains
 * what the UDP socket already holds, serves what each TCP connection
 * already sent, flushes the acks (bounded by SL_DRAIN_NS) and closes.
 *
 * Memory: udp_batch x (64 KiB buffer + headers), the connection table and
 * the two stream tables, all from the arena. Thread: the ingest thread, the
 * store's only writer; sl_ingest_open and sl_ingest_close run on main.
 */
#include "net/ingest.h"

#include <errno.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/alloc_count.h"
#include "core/assert.h"
#include "core/clock.h"
#include "core/say.h"
#include "store/log.h"
#include "net/sock.h"
#include "net/tcp.h"

#define SL_TICK_MS 100
#define SL_STALL_NS 250000000LL /* a tick's work longer than this is a stall (counted, excused) */
#define SL_UDP_BUFFER_BYTES 65536u
#define SL_UDP_CALLS_PER_TICK 16u
#define SL_EVENTS_PER_TICK 256
#define SL_TAG_WAKE 0u
#define SL_TAG_UDP 1u
#define SL_TAG_LISTEN 2u
#define SL_UDP_CONTROL_BYTES 64u

_Static_assert(SL_UDP_BUFFER_BYTES > SL_UDP_PAYLOAD_MAX, "a datagram never truncates");

void sl_ingest_plan(const struct sl_ingest_config *config, struct sl_plan *plan)
{
    uint64_t b = config->udp_batch;
    sl_plan_add(plan, "udp_buffers", b * SL_UDP_BUFFER_BYTES, "recvmmsg buffers, 64 KiB a datagram");
    sl_plan_add(plan, "udp_headers",
                b * (sizeof(struct mmsghdr) + sizeof(struct iovec) + SL_UDP_CONTROL_BYTES),
                "recvmmsg headers and control space");
    sl_tcp_plan(config, plan);
    sl_streams_plan(config->streams_max, plan, "streams_tcp");
    sl_streams_plan(config->streams_max, plan, "streams_udp");
    uint64_t groups = SL_APPLY_GROUPS_IN_FLIGHT;
    sl_plan_add(plan, "commit_intents", (groups + 1) * SL_INTENTS_MAX * sizeof(struct sl_intent),
                "commit groups' frames in arrival order: the one gathering, those in flight");
    sl_plan_add(plan, "apply_jobs", groups * SL_INTENTS_MAX * sizeof(struct sl_apply_job),
                "the records of the groups in flight and their outcomes");
    if (config->apply_thread) {
        sl_plan_add(plan, "apply_area", groups * config->apply_area_bytes,
                    "the readings of the groups in flight, for the apply thread (a log buffer each)");
    }
}

void sl_ingest_take_streams(struct sl_ingest *ing, const struct sl_ingest_config *config,
                            struct sl_arena *arena)
{
    sl_streams_init(&ing->tcp_streams, config->streams_max, arena);
    sl_streams_init(&ing->udp_streams, config->streams_max, arena);
}

static int epoll_add(int epoll_fd, int fd, uint32_t events, uint64_t tag)
{
    struct epoll_event ev = {.events = events, .data.u64 = tag};
    return epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev);
}

static void udp_take(struct sl_ingest *ing, struct sl_arena *arena)
{
    uint32_t b = ing->config.udp_batch;
    ing->udp_buffers = sl_arena_take(arena, (uint64_t)b * SL_UDP_BUFFER_BYTES);
    uint8_t *headers = sl_arena_take(
        arena, (uint64_t)b * (sizeof(struct mmsghdr) + sizeof(struct iovec) + SL_UDP_CONTROL_BYTES));
    ing->udp_msgs = (struct mmsghdr *)headers;
    ing->udp_iovs = (struct iovec *)(headers + (uint64_t)b * sizeof(struct mmsghdr));
    ing->udp_controls = headers + (uint64_t)b * (sizeof(struct mmsghdr) + sizeof(struct iovec));
}

static int udp_open(struct sl_ingest *ing, char *err, uint32_t err_bytes)
{
    const struct sl_ingest_config *c = &ing->config;
    ing->udp_fd = sl_sock_listen("udp", c->udp_host, c->udp_port, SOCK_DGRAM, err, err_bytes);
    if (ing->udp_fd < 0) {
        return -1;
    }
    int bytes = (int)c->udp_rcvbuf_bytes, one = 1;
    if (setsockopt(ing->udp_fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) != 0) {
        setsockopt(ing->udp_fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes); /* capped by rmem_max */
    }
    setsockopt(ing->udp_fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof one);
    ing->udp_port_bound = sl_sock_port(ing->udp_fd);
    return epoll_add(ing->epoll_fd, ing->udp_fd, EPOLLIN, SL_TAG_UDP);
}

int sl_ingest_open(struct sl_ingest *ing, const struct sl_ingest_config *config,
                   struct sl_store *store, struct sl_log *log, struct sl_checkpointer *checkpointer,
                   struct sl_arena *arena, char *err, uint32_t err_bytes)
{
    /* The stream tables were taken and filled by recovery: keep them. */
    ing->config = *config;
    ing->store = store;
    ing->log = log;
    ing->checkpointer = checkpointer;
    ing->applied_lsn = sl_log_next_lsn(log) - 1;
    ing->udp_fd = ing->tcp_fd = ing->wake_fd = -1;
    udp_take(ing, arena);
    sl_tcp_take(ing, arena);
    ing->intents = sl_arena_take(arena, (uint64_t)SL_INTENTS_MAX * sizeof(struct sl_intent));
    for (uint32_t g = 0; g < SL_APPLY_GROUPS_IN_FLIGHT; g++) {
        struct sl_apply_group *group = &ing->groups[g];
        group->intents = sl_arena_take(arena, (uint64_t)SL_INTENTS_MAX * sizeof(struct sl_intent));
        group->jobs = sl_arena_take(arena, (uint64_t)SL_INTENTS_MAX * sizeof(struct sl_apply_job));
        group->area = config->apply_thread ? sl_arena_take(arena, config->apply_area_bytes) : NULL;
    }
    pthread_mutex_init(&ing->worker_mu, NULL);
    pthread_cond_init(&ing->worker_cv, NULL);
    ing->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    ing->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ing->epoll_fd < 0 || ing->wake_fd < 0 ||
        epoll_add(ing->epoll_fd, ing->wake_fd, EPOLLIN, SL_TAG_WAKE) != 0) {
        snprintf(err, err_bytes, "epoll: %s", strerror(errno));
        return -1;
    }
    if (config->udp_host[0] != '\0' && udp_open(ing, err, err_bytes) != 0) {
        return -1;
    }
    if (config->tcp_host[0] != '\0') {
        ing->tcp_fd = sl_sock_listen("tcp", config->tcp_host, config->tcp_port, SOCK_STREAM, err, err_bytes);
        if (ing->tcp_fd < 0) {
            return -1;
        }
        ing->tcp_port_bound = sl_sock_port(ing->tcp_fd);
        if (epoll_add(ing->epoll_fd, ing->tcp_fd, EPOLLIN, SL_TAG_LISTEN) != 0) {
            snprintf(err, err_bytes, "epoll: %s", strerror(errno));
            return -1;
        }
    }
    return 0;
}

static void udp_frame(struct sl_ingest *ing, const uint8_t *buf, uint32_t len, int64_t now_us)
{
    struct sl_batch batch;
    int rc = sl_batch_decode(buf, len, &batch);
    if (rc < 0) {
        sl_counter_add(&ing->counters.decode_errors[SL_TRANSPORT_UDP][-rc], 1);
        sl_counter_add(&ing->counters.batches[SL_TRANSPORT_UDP][sl_decode_status(rc)], 1);
        return;
    }
    sl_ingest_make_room(ing, batch.header.count);
    int out_of_sequence = 0;
    uint64_t lost = sl_streams_observe(&ing->udp_streams, batch.header.stream_id,
                                       batch.header.batch_seq, &out_of_sequence);
    if (lost != 0) {
        sl_counter_add(&ing->counters.udp_lost_batches, lost);
    }
    if (out_of_sequence) {
        sl_counter_add(&ing->counters.udp_out_of_sequence_batches, 1);
    }
    struct sl_intent intent = {.conn = SL_INTENT_UDP, .stream_id = batch.header.stream_id,
                               .batch_seq = batch.header.batch_seq};
    if (sl_ingest_log_batch(ing, &batch, SL_LOG_UDP, now_us, &intent) != 0) {
        /* The log refuses appends: the datagram is shed, visibly. */
        sl_counter_add(&ing->counters.batches[SL_TRANSPORT_UDP][SL_STATUS_OVERLOADED], 1);
    }
}

static void udp_note_drops(struct sl_ingest *ing, struct msghdr *msg)
{
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(msg); cm != NULL; cm = CMSG_NXTHDR(msg, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SO_RXQ_OVFL) {
            uint32_t drops;
            memcpy(&drops, CMSG_DATA(cm), sizeof drops);
            /* The kernel reports the socket's running total. */
            atomic_store_explicit(&ing->counters.udp_kernel_drops, drops, memory_order_relaxed);
        }
    }
}

/* Receive and apply up to SL_UDP_CALLS_PER_TICK x udp_batch datagrams. */
static void udp_serve(struct sl_ingest *ing)
{
    uint32_t b = ing->config.udp_batch;
    for (uint32_t call = 0; call < SL_UDP_CALLS_PER_TICK; call++) {
        for (uint32_t i = 0; i < b; i++) {
            ing->udp_iovs[i].iov_base = ing->udp_buffers + (uint64_t)i * SL_UDP_BUFFER_BYTES;
            ing->udp_iovs[i].iov_len = SL_UDP_BUFFER_BYTES;
            struct msghdr *m = &ing->udp_msgs[i].msg_hdr;
            memset(m, 0, sizeof *m);
            m->msg_iov = &ing->udp_iovs[i];
            m->msg_iovlen = 1;
            m->msg_control = ing->udp_controls + (uint64_t)i * SL_UDP_CONTROL_BYTES;
            m->msg_controllen = SL_UDP_CONTROL_BYTES;
        }
        int n = recvmmsg(ing->udp_fd, ing->udp_msgs, b, MSG_DONTWAIT, NULL);
        if (n <= 0) {
            return; /* EAGAIN: drained; other errors (ECONNREFUSED, ...) are transient on UDP */
        }
        int64_t now_us = sl_clock_realtime_us();
        uint64_t bytes = 0;
        for (int i = 0; i < n; i++) {
            uint32_t len = ing->udp_msgs[i].msg_len;
            bytes += len;
            udp_frame(ing, ing->udp_buffers + (uint64_t)i * SL_UDP_BUFFER_BYTES, len, now_us);
        }
        udp_note_drops(ing, &ing->udp_msgs[n - 1].msg_hdr);
        sl_counter_add(&ing->counters.udp_datagrams, (uint64_t)n);
        sl_counter_add(&ing->counters.udp_bytes, bytes);
        if ((uint32_t)n < b) {
            return;
        }
    }
}

static struct sl_intent *intent_next(struct sl_ingest *ing)
{
    if (ing->intents_count == SL_INTENTS_MAX) {
        sl_ingest_commit(ing);
    }
    SL_ASSERT(ing->intents_count < SL_INTENTS_MAX);
    return &ing->intents[ing->intents_count++];
}

void sl_ingest_add_intent(struct sl_ingest *ing, const struct sl_intent *intent)
{
    SL_ASSERT(intent->kind != SL_INTENT_RECORD);
    *intent_next(ing) = *intent;
}

void sl_ingest_make_room(struct sl_ingest *ing, uint32_t count)
{
    if (ing->intents_count == SL_INTENTS_MAX || sl_log_room(ing->log, count) == -ENOBUFS) {
        sl_ingest_commit(ing); /* after a commit the record always fits */
    }
}

int sl_ingest_log_batch(struct sl_ingest *ing, const struct sl_batch *batch, uint8_t transport,
                        int64_t now_us, struct sl_intent *intent)
{
    SL_ASSERT(ing->intents_count < SL_INTENTS_MAX);
    uint64_t lsn = 0;
    const struct sl_log_record *record = NULL;
    int rc = sl_log_append(ing->log, batch, transport, now_us, &lsn, &record);
    SL_ASSERT(rc != -ENOBUFS); /* sl_ingest_make_room came first */
    if (rc != 0) {
        return rc;
    }
    intent->kind = SL_INTENT_RECORD;
    intent->lsn = lsn;
    intent->record = record;
    *intent_next(ing) = *intent;
    return 0;
}

/*
 * The apply side. A committed group is posted whole (group_post), applied
 * whole, in lsn order, and delivered whole (group_collect): every intent
 * answered in arrival order. With a worker thread, the apply of one group
 * runs while the ingest thread receives, validates, logs and commits the
 * next ones; up to SL_APPLY_GROUPS_IN_FLIGHT groups are posted and not yet
 * delivered, and the ingest thread waits only when all of them are taken.
 * The worker is the store's only writer; it applies a copy of the readings
 * (the group's area) because the log reuses its buffer for later groups.
 * With apply_thread off, a group is applied as it is posted, here.
 */
static struct sl_apply_group *group_at(struct sl_ingest *ing, uint64_t n)
{
    return &ing->groups[n % SL_APPLY_GROUPS_IN_FLIGHT];
}

static void jobs_run(struct sl_ingest *ing, struct sl_apply_group *group)
{
    for (uint32_t j = 0; j < group->jobs_count; j++) {
        struct sl_apply_job *job = &group->jobs[j];
        sl_store_apply(ing->store, &job->batch, job->now_us, &job->result);
    }
}

/*
 * Checkpoints with a worker. The ingest thread begins one (file and header)
 * and hands the sensor chunks to the worker (CHECKPOINT_SENSORS), which
 * writes one chunk after each group it applies, or while idle, each copied
 * at the lsn it has applied, between groups: nothing else writes the store.
 * When every sensor is written it hands back (CHECKPOINT_FINISH) and the
 * ingest thread, which owns the stream tables, finishes the file. Neither
 * thread waits for the other, so a checkpoint no longer stalls the apply
 * or the receive.
 */
enum { CHECKPOINT_NONE = 0, CHECKPOINT_SENSORS = 1, CHECKPOINT_FINISH = 2 };

static void worker_wake_loop(struct sl_ingest *ing)
{
    uint64_t one = 1;
    ssize_t r = write(ing->wake_fd, &one, sizeof one);
    (void)r;
}

static void *worker_run(void *arg)
{
    struct sl_ingest *ing = arg;
    sl_alloc_track(SL_ALLOC_INGEST);
    pthread_mutex_lock(&ing->worker_mu);
    for (;;) {
        while (ing->groups_applied == ing->groups_posted && !ing->worker_stop &&
               ing->checkpoint_phase != CHECKPOINT_SENSORS) {
            pthread_cond_wait(&ing->worker_cv, &ing->worker_mu);
        }
        bool group = ing->groups_applied < ing->groups_posted;
        bool chunk = ing->checkpoint_phase == CHECKPOINT_SENSORS && !ing->worker_stop;
        if (!group && !chunk) {
            break; /* stopping, with nothing left to apply (a checkpoint under way is left) */
        }
        if (group) {
            struct sl_apply_group *g = group_at(ing, ing->groups_applied);
            pthread_mutex_unlock(&ing->worker_mu);
            jobs_run(ing, g);
            if (g->jobs_count > 0) {
                ing->worker_applied_lsn = g->jobs[g->jobs_count - 1].lsn;
            }
            pthread_mutex_lock(&ing->worker_mu);
            ing->groups_applied++;
            pthread_cond_broadcast(&ing->worker_cv);
            worker_wake_loop(ing); /* the loop delivers the acks */
        }
        if (chunk) {
            pthread_mutex_unlock(&ing->worker_mu);
            int rc = sl_checkpoint_step_sensors(ing->checkpointer, ing->worker_applied_lsn);
            pthread_mutex_lock(&ing->worker_mu);
            if (rc != 0) {
                ing->checkpoint_phase = rc == 1 ? CHECKPOINT_FINISH : CHECKPOINT_NONE;
                worker_wake_loop(ing);
            }
        }
    }
    pthread_mutex_unlock(&ing->worker_mu);
    return NULL;
}

static void worker_start(struct sl_ingest *ing)
{
    if (!ing->config.apply_thread) {
        return;
    }
    ing->worker_applied_lsn = ing->applied_lsn;
    int rc = pthread_create(&ing->worker, NULL, worker_run, ing);
    if (rc != 0) {
        sl_say(SL_SAY_WARN, "ingest", "apply thread: %s; applying on the ingest thread", strerror(rc));
        return;
    }
    pthread_setname_np(ing->worker, "sluice-apply");
    ing->worker_started = true;
}

static void worker_stop(struct sl_ingest *ing)
{
    if (!ing->worker_started) {
        return;
    }
    pthread_mutex_lock(&ing->worker_mu);
    ing->worker_stop = true;
    pthread_cond_broadcast(&ing->worker_cv);
    pthread_mutex_unlock(&ing->worker_mu);
    pthread_join(ing->worker, NULL);
    ing->worker_started = false;
}

/* Groups applied so far (the worker's count; every posted one without a worker). */
static uint64_t groups_applied(struct sl_ingest *ing, bool wait_for_all, bool wait_for_one)
{
    if (!ing->worker_started) {
        return ing->groups_posted;
    }
    pthread_mutex_lock(&ing->worker_mu);
    uint64_t want = wait_for_all   ? ing->groups_posted
                    : wait_for_one ? ing->groups_delivered + 1
                                   : 0;
    if (ing->groups_applied < want) {
        int64_t t0 = sl_clock_monotonic_ns();
        while (ing->groups_applied < want) {
            pthread_cond_wait(&ing->worker_cv, &ing->worker_mu);
        }
        sl_counter_add(&ing->counters.apply_wait_ns, (uint64_t)(sl_clock_monotonic_ns() - t0));
    }
    uint64_t applied = ing->groups_applied;
    pthread_mutex_unlock(&ing->worker_mu);
    return applied;
}

/* A record the log could not make durable: never applied, answered OVERLOADED. */
static void deliver_failed(struct sl_ingest *ing, const struct sl_intent *in)
{
    static const struct sl_apply_result none;
    if (in->conn == SL_INTENT_UDP) {
        sl_counter_add(&ing->counters.batches[SL_TRANSPORT_UDP][SL_STATUS_OVERLOADED], 1);
    } else {
        sl_tcp_deliver(ing, in, SL_STATUS_OVERLOADED, &none);
    }
}

/* Count UDP, queue TCP acks: every intent of an applied group, in order. */
static void group_deliver(struct sl_ingest *ing, const struct sl_apply_group *group)
{
    static const struct sl_apply_result none;
    uint32_t j = 0;
    for (uint32_t i = 0; i < group->intents_count; i++) {
        const struct sl_intent *in = &group->intents[i];
        if (in->kind != SL_INTENT_RECORD) {
            sl_tcp_deliver(ing, in, (enum sl_status)in->status, &none);
        } else if (in->lsn > group->applicable) {
            deliver_failed(ing, in);
        } else {
            SL_ASSERT(j < group->jobs_count && in->lsn > ing->applied_lsn);
            ing->applied_lsn = in->lsn;
            const struct sl_apply_result *result = &group->jobs[j++].result;
            if (in->conn == SL_INTENT_UDP) {
                sl_counter_add(&ing->counters.batches[SL_TRANSPORT_UDP][SL_STATUS_OK], 1);
            } else {
                sl_tcp_deliver(ing, in, SL_STATUS_OK, result);
            }
        }
    }
    SL_ASSERT(j == group->jobs_count);
}

/*
 * Deliver the groups the apply side has finished, oldest first, then flush
 * the acks. wait_for_all: first wait until every posted group is applied;
 * wait_for_one: until at least the oldest is (so one slot is free).
 */
static void group_collect(struct sl_ingest *ing, bool wait_for_all, bool wait_for_one)
{
    if (ing->groups_delivered == ing->groups_posted) {
        return;
    }
    uint64_t applied = groups_applied(ing, wait_for_all, wait_for_one);
    if (applied == ing->groups_delivered) {
        return;
    }
    while (ing->groups_delivered < applied) {
        group_deliver(ing, group_at(ing, ing->groups_delivered));
        ing->groups_delivered++;
    }
    sl_tcp_flush_touched(ing);
}

/* Hand the just-committed group to the apply side; records above `applicable` are not applied. */
static void group_post(struct sl_ingest *ing, uint64_t applicable)
{
    if (ing->groups_posted - ing->groups_delivered == SL_APPLY_GROUPS_IN_FLIGHT) {
        group_collect(ing, false, true); /* every slot taken: wait for the oldest */
    }
    struct sl_apply_group *group = group_at(ing, ing->groups_posted);
    struct sl_intent *gathered = ing->intents;
    ing->intents = group->intents;
    group->intents = gathered;
    group->intents_count = ing->intents_count;
    ing->intents_count = 0;
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
        if (ing->worker_started) {
            uint64_t bytes = (uint64_t)job->batch.header.count * SL_READING_BYTES;
            SL_ASSERT(area + bytes <= ing->config.apply_area_bytes); /* the group fit the log buffer */
            memcpy(group->area + area, job->batch.readings, bytes);
            job->batch.readings = group->area + area;
            area += bytes;
        }
    }
    group->jobs_count = jobs;
    sl_counter_add(&ing->counters.apply_groups, 1);
    if (ing->worker_started) {
        pthread_mutex_lock(&ing->worker_mu);
        ing->groups_posted++;
        pthread_cond_broadcast(&ing->worker_cv);
        pthread_mutex_unlock(&ing->worker_mu);
    } else {
        jobs_run(ing, group);
        ing->groups_posted++;
    }
}

void sl_ingest_stream_failed(struct sl_stream_slot *slot, uint64_t prev_seq, uint8_t prev_has_seq,
                             uint64_t batch_seq)
{
    slot->last_seq = prev_seq;
    slot->has_seq = prev_has_seq;
    if (slot->hole_seq == 0 || batch_seq < slot->hole_seq) {
        slot->hole_seq = batch_seq;
    }
}

void sl_ingest_commit(struct sl_ingest *ing)
{
    if (ing->intents_count == 0) {
        return;
    }
    uint64_t applicable = 0;
    sl_log_commit(ing->log, sl_clock_monotonic_ns(), &applicable);
    /* Roll back, newest first, the streams whose batches failed, so a resend is not DUPLICATE. */
    for (uint32_t i = ing->intents_count; i-- > 0;) {
        const struct sl_intent *in = &ing->intents[i];
        if (in->kind == SL_INTENT_RECORD && in->lsn > applicable && in->slot != NULL) {
            sl_ingest_stream_failed(in->slot, in->prev_seq, in->prev_has_seq, in->batch_seq);
        }
    }
    group_post(ing, applicable);
    group_collect(ing, false, false); /* without a worker: delivered at once */
}

void sl_ingest_settle(struct sl_ingest *ing)
{
    sl_ingest_commit(ing);
    group_collect(ing, true, false);
}

static int checkpoint_phase(struct sl_ingest *ing)
{
    pthread_mutex_lock(&ing->worker_mu);
    int phase = ing->checkpoint_phase;
    pthread_mutex_unlock(&ing->worker_mu);
    return phase;
}

static void checkpoint_phase_set(struct sl_ingest *ing, int phase)
{
    pthread_mutex_lock(&ing->worker_mu);
    ing->checkpoint_phase = phase;
    pthread_cond_broadcast(&ing->worker_cv);
    pthread_mutex_unlock(&ing->worker_mu);
}

/* Is a checkpoint due: enough log since the last, or the log is waiting for one? */
static bool checkpoint_due(struct sl_ingest *ing)
{
    return sl_log_bytes_since(ing->log, false) >= ing->config.checkpoint_every_bytes ||
           sl_log_waiting_for_checkpoint(ing->log);
}

/*
 * Between ticks: progress a checkpoint, or start one when enough log has
 * accumulated. Without a worker, a chunk a tick here; with one, see
 * CHECKPOINT_SENSORS above.
 */
static void checkpoint_tick(struct sl_ingest *ing)
{
    struct sl_checkpointer *ck = ing->checkpointer;
    if (ck == NULL || ing->config.checkpoint_every_bytes == 0) {
        return;
    }
    if (ing->worker_started) {
        int phase = checkpoint_phase(ing);
        if (phase == CHECKPOINT_FINISH) {
            /* After this tick's commit: every committed record's stream effect is in the tables. */
            uint64_t start = ck->start_lsn;
            if (sl_checkpoint_finish(ck, sl_log_next_lsn(ing->log) - 1) == 1) {
                sl_log_set_checkpoint_lsn(ing->log, start + 1);
            }
            checkpoint_phase_set(ing, CHECKPOINT_NONE);
        } else if (phase == CHECKPOINT_NONE && checkpoint_due(ing)) {
            sl_log_bytes_since(ing->log, true);
            /* Records at or below the last delivered group are in the store, and stay. */
            if (sl_checkpoint_begin(ck, ing->applied_lsn) == 0) {
                checkpoint_phase_set(ing, CHECKPOINT_SENSORS);
            }
        }
        return;
    }
    if (!ck->active) {
        if (!checkpoint_due(ing)) {
            return;
        }
        sl_log_bytes_since(ing->log, true);
        if (sl_checkpoint_begin(ck, ing->applied_lsn) != 0) {
            return; /* counted by the checkpointer; retried after as much log again */
        }
    }
    uint64_t start = ck->start_lsn;
    if (sl_checkpoint_step(ck, ing->applied_lsn) == 1) {
        sl_log_set_checkpoint_lsn(ing->log, start + 1);
    }
}

static void dispatch(struct sl_ingest *ing, const struct epoll_event *ev)
{
    uint64_t tag = ev->data.u64;
    if (tag == SL_TAG_WAKE) {
        uint64_t v;
        ssize_t r = read(ing->wake_fd, &v, sizeof v);
        (void)r;
    } else if (tag == SL_TAG_UDP) {
        udp_serve(ing);
    } else if (tag == SL_TAG_LISTEN) {
        sl_tcp_accept(ing);
    } else {
        sl_tcp_event(ing, (uint32_t)(tag - SL_TAG_CONN), ev->events);
    }
}

void *sl_ingest_run(void *arg)
{
    struct sl_ingest *ing = arg;
    struct epoll_event events[SL_EVENTS_PER_TICK];
    pthread_setname_np(pthread_self(), "sluice-ingest");
    worker_start(ing); /* before tracking: starting a thread may allocate */
    sl_alloc_track(SL_ALLOC_INGEST);
    atomic_store(&ing->counters.started_at_us, sl_clock_realtime_us());
    while (!atomic_load_explicit(&ing->stop, memory_order_acquire)) {
        bool busy = !ing->worker_started && ing->checkpointer != NULL && ing->checkpointer->active;
        int n = epoll_wait(ing->epoll_fd, events, SL_EVENTS_PER_TICK, busy ? 1 : SL_TICK_MS);
        int64_t tick_ns = sl_clock_monotonic_ns();
        for (int i = 0; i < n; i++) {
            dispatch(ing, &events[i]);
        }
        group_collect(ing, false, false); /* groups the worker finished: their acks go out */
        sl_ingest_commit(ing);            /* group commit: one write (and sync) a tick */
        sl_log_tick(ing->log, sl_clock_monotonic_ns());
        checkpoint_tick(ing);
        int64_t now_ns = sl_clock_monotonic_ns();
        if (now_ns - tick_ns > SL_STALL_NS) {
            /*
             * The loop itself stalled (a slow fdatasync on a busy disk, say):
             * peers waited on us, so that time does not count towards their
             * idle timeout.
             */
            sl_counter_add(&ing->counters.ingest_stalls, 1);
            sl_tcp_excuse(ing, now_ns - tick_ns, now_ns);
        }
        if (now_ns >= ing->next_sweep_ns) {
            sl_tcp_sweep(ing, now_ns);
            ing->next_sweep_ns = now_ns + 1000000000LL;
        }
    }
    /* Stop accepting; finish what is in flight. */
    if (ing->tcp_fd >= 0) {
        epoll_ctl(ing->epoll_fd, EPOLL_CTL_DEL, ing->tcp_fd, NULL);
        close(ing->tcp_fd);
        ing->tcp_fd = -1;
    }
    if (ing->udp_fd >= 0) {
        udp_serve(ing);
    }
    sl_tcp_drain_all(ing); /* settles what it reads (and UDP's), flushes acks, closes */
    sl_ingest_settle(ing);
    worker_stop(ing);
    return NULL;
}

void sl_ingest_stop(struct sl_ingest *ing)
{
    atomic_store_explicit(&ing->stop, 1, memory_order_release);
    uint64_t one = 1;
    ssize_t r = write(ing->wake_fd, &one, sizeof one);
    (void)r;
}

void sl_ingest_close(struct sl_ingest *ing)
{
    if (ing->udp_fd >= 0) {
        close(ing->udp_fd);
    }
    if (ing->tcp_fd >= 0) {
        close(ing->tcp_fd);
    }
    if (ing->wake_fd >= 0) {
        close(ing->wake_fd);
    }
    if (ing->epoll_fd >= 0) {
        close(ing->epoll_fd);
    }
    ing->udp_fd = ing->tcp_fd = ing->wake_fd = ing->epoll_fd = -1;
    pthread_cond_destroy(&ing->worker_cv);
    pthread_mutex_destroy(&ing->worker_mu);
}
