/*
 * The forwarders (uplink.h). One thread an output runs this loop:
 *
 *   1. read the next applied record from the log's files (reader_next);
 *   2. keep the readings the store accepted (accept: the store's rules,
 *      with a shadow of each sensor's last time), and either encode each
 *      into the request (raw) or fold it into its sensor's bucket
 *      (aggregate: a closed bucket is encoded);
 *   3. when the request is full, or nothing more is there and its oldest
 *      reading is --uplink-flush-interval old, compress and send it, retry
 *      what may succeed later, dead-letter what never will;
 *   4. after a 2xx, make the cursor durable and move the hold.
 *
 * Pipelined (raw line protocol outputs): a request's first attempt goes on
 * the wire through a curl multi handle and the loop builds and compresses
 * the next one while the upstream answers, then waits for the answer
 * before the next is sent: one request in flight, in log order, the
 * cursor moved only by answers. Remote write (its dead letters are
 * rendered from the shadow) and aggregate outputs (the hold follows the
 * open buckets) wait for each answer before building the next.
 *
 * At start the loop first reads the log from its oldest record up to the
 * cursor without sending (a dry run), so the shadow and the open buckets
 * are what they were when the cursor was written.
 *
 * Positions: the cursor is an lsn, every record at or below it delivered
 * (or dropped, or dead-lettered), and `next`, the readings of the record
 * after it already delivered (a record larger than what is left of a
 * request is split; a restart of a raw output steps over that head of it
 * in its dry run, so nothing delivered is sent again).
 *
 * mqtt:// (mqtt_out.h): one message a request, never pipelined, the
 * cursor moved by the PUBACK. format=native requests are one batch frame
 * each, cut at 65,535 readings and at a reading outside the frame's 2^32 us
 * window as well as at --uplink-batch-bytes; their batch_seq is the cursor
 * file's epoch (wall-clock us when the file was made) plus the messages
 * delivered so far, a count kept with the cursor, so a resend after a
 * crash has the seq it had, and (with the mark) the same readings.
 */
#include "uplink/uplink.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <snappy-c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "core/assert.h"
#include "core/clock.h"
#include "core/crc32c.h"
#include "core/say.h"
#include "proto/lpout.h"
#include "proto/promrw.h"
#include "sluice/protocol.h"
#include "uplink/mqtt_out.h"
#include "store/log.h"
#include "store/series.h"
#include "store/store.h"

/* The read buffer holds the largest record twice over: a refill always makes progress. */
#define READ_BYTES (2ull << 20)
_Static_assert(READ_BYTES >= 2 * SL_LOG_RECORD_BYTES_MAX, "the read buffer holds a whole record");
/* One line of line protocol at most: a 1,024-byte name, the tags, a value and a time. */
#define LINE_BYTES_MAX (SL_SERIES_NAME_MAX + SL_UPLINK_TAGS_MAX * 2 * SL_UPLINK_TAG_BYTES + 256u)
#define ZLIB_BYTES (640ull << 10) /* deflate's state, window, hash and pending buffer (level 1) */
#define POINT_BYTES_MIN 24u       /* a remote write sample, its share of a series at least */
#define IDLE_WAIT_MS 20
#define AGG_SCAN_US 100000 /* closing idle buckets: at most this often (of the forwarder's clock) */
#define RESPONSE_BYTES 512u
#define RETRY_AFTER_MAX_MS 3600000
#define WARN_EVERY_NS (60ll * 1000000000)
#define LABELS_MAX SL_LPOUT_LABELS_MAX
#define SPLIT_BYTES (2u * SL_SERIES_NAME_MAX)

/* A sensor as the forwarder knows it (the shadow of the store's rules, and its bucket). */
struct shadow {
    uint32_t id;
    uint32_t seen; /* a reading was accepted: last_t_us is set */
    int64_t last_t_us;
    /* remote write: this request's samples of the sensor, a list through point.next */
    uint32_t req_gen, head, tail, samples;
    /* aggregate: the bucket being filled (or the last one closed, kept for a late reading) */
    int64_t bucket_us;
    int64_t last_now_us; /* acceptance time of its last reading */
    uint64_t first_lsn;  /* of its first reading while open */
    double sum;
    float min, max;
    uint32_t count, emitted; /* readings in it; of those, sent in an earlier close */
    uint32_t open;
};

struct point {
    uint32_t entry; /* shadow index */
    uint32_t next;  /* the next point of the same sensor + 1 (0: end) */
    int64_t t_us;
    double value;
    uint32_t stat; /* 0 the reading; 1 count, 2 mean, 3 min, 4 max */
    uint32_t unused;
};

/* Reading the log's files. */
struct reader {
    int fd;
    uint64_t name_seq; /* the open file's name; 0 before the first */
    uint64_t seq;      /* its header's */
    uint64_t offset;   /* of the next record */
    uint8_t *buf;
    uint64_t buf_off, buf_len; /* buf holds the file's bytes [buf_off, buf_off + buf_len) */
    uint64_t last_lsn; /* of the last record handed out */
    uint64_t damaged_seq; /* the file a damaged record was last said of */
};

struct request {
    uint64_t readings;        /* readings it carries (aggregate: those its buckets cover) */
    uint64_t points;          /* lines or samples */
    uint64_t est_bytes;       /* remote write: its size before compression, estimated */
    int64_t first_accept_us;  /* of its oldest reading; 0: empty */
    uint64_t end_lsn;         /* the last record it holds readings of */
    bool end_done;            /* ... all of them */
    uint32_t end_next;        /* ... else the index of the first reading it does not hold */
    uint64_t end_position;    /* the log position after its last whole record; 0: none */
    uint32_t gen;             /* remote write: shadow.req_gen of this request */
};

struct sl_uplink {
    struct sl_uplinks *all;
    const struct sl_uplink_output_config *cfg;
    const struct sl_uplinks_config *common;
    uint32_t index;
    struct sl_uplink_stats stats;
    struct sl_log_hold hold;
    const struct sl_log_counters *logc;
    const struct sl_log *log;
    const struct sl_store *store;
    const struct sl_series *series;
    pthread_t thread;
    bool started;

    /* What the log's dropping callback and the reader share (the ingest thread takes it too). */
    pthread_mutex_t mu;
    uint64_t pos_lsn;          /* the last record read */
    uint64_t pos_name_seq;     /* its file */
    uint64_t pos_seg_readings; /* readings read from that file */
    uint64_t pos_seg_bytes;    /* record bytes read from that file */
    uint64_t floor_lsn;        /* records at or below were recycled before being read: dropped */
    uint64_t skipped_bytes;    /* their bytes, for the position */

    /* Durable state. */
    char dir[4200];
    char cursor_path[4300], dead_path[4300], dead_old_path[4300];
    int cursor_fd;
    uint64_t cursor_write_seq;
    uint64_t cursor_lsn;
    uint32_t cursor_next; /* readings of record cursor_lsn + 1 delivered (durable with it) */
    uint64_t cursor_msgs; /* mqtt:// messages delivered, durable with the cursor */
    uint64_t msgs;        /* ... so far (the next native message's seq is epoch_us + msgs) */
    uint64_t epoch_us;    /* the cursor file's epoch: wall-clock us when it was made */
    uint64_t skip_lsn;    /* at start: the dry run steps over the first skip_next readings of */
    uint32_t skip_next;   /* ... this record (delivered before the restart); 0: none */
    uint64_t cap_lsn;  /* from the mark at start: the first request ends here (0: no cap) */
    uint32_t cap_next; /* ... before this reading of it */
    int dead_fd;
    uint64_t dead_size, dead_old_size;

    struct reader rd;
    struct sl_log_record rec; /* the record being taken apart */
    bool have_rec;
    uint32_t rec_next; /* its next reading */
    uint64_t position; /* log bytes read (appended_bytes coordinate) */

    /* The shadow: open addressing over slots (entry index + 1). */
    struct shadow *entries;
    uint32_t entries_cap, entries_used;
    uint32_t *slots;
    uint32_t slot_mask;
    int64_t clock_us;    /* aggregate: the time buckets close by */
    int64_t last_scan_us;
    uint32_t scan_at;    /* where a scan that filled the request resumes */

    /* The request. */
    struct request req;
    char *text; /* line protocol (influx; remote write's dead letters) */
    uint64_t text_cap, text_len;
    struct point *points;
    uint32_t points_cap;
    uint32_t *touched;
    uint32_t touched_count;
    double *values;
    int64_t *times_ms;
    uint8_t *pb;
    uint64_t pb_cap, pb_len;
    uint8_t *out;
    uint64_t out_cap, out_len;
    /* The request in flight: its bookkeeping and its buffers (swapped with text and out). */
    struct request fl;
    bool fl_active;  /* handed to the upstream, not yet delivered or dead */
    bool fl_started; /* an attempt of it is on the wire */
    bool fl_added;   /* ... in the multi handle */
    bool fl_done;    /* ... and answered (or failed): fl_rc */
    CURLcode fl_rc;
    bool pipelined;
    char *fl_text;
    uint64_t fl_text_len;
    uint8_t *fl_out;
    uint64_t fl_out_len;
    uint8_t *zmem;
    uint64_t zmem_used;
    z_stream z;
    bool z_ready;
    char extra[SL_UPLINK_TAGS_MAX * 2 * SL_UPLINK_TAG_BYTES + 64];
    uint32_t extra_len;
    char split[SPLIT_BYTES];
    struct sl_lpout_parts parts;
    struct sl_promrw_label labels[LABELS_MAX];
    char label_scratch[SPLIT_BYTES];
    char metric[3 * SL_SERIES_NAME_MAX];

    /* mqtt:// */
    struct sl_mqtt_out mq;
    int64_t nat_base_us; /* native: the frame's base_time_us (set by its first reading) */

    /* HTTP */
    CURL *curl;
    CURLM *multi;
    struct curl_slist *headers;
    char response[RESPONSE_BYTES];
    uint32_t response_len;
    int64_t retry_after_ms; /* from the last answer; -1: none */
    _Atomic int64_t stop_deadline_ns; /* set by sl_uplinks_stop (main thread) */
    char curl_error[CURL_ERROR_SIZE];

    int64_t pace_ns; /* --uplink-max-rate: the next request may leave then */
    uint64_t rng;
    int64_t last_warn_ns;
    uint64_t failures; /* in a row */
};

/* ---- libcurl's memory, counted ---- */

static _Atomic uint64_t curl_bytes; /* live */
static uint64_t curl_budget = SL_UPLINK_CURL_BYTES;

struct alloc_head {
    uint64_t size;
    uint64_t pad;
};

static void *counted_malloc(size_t n)
{
    if (atomic_load_explicit(&curl_bytes, memory_order_relaxed) + n > curl_budget) {
        return NULL; /* over the plan: the request fails and is retried */
    }
    struct alloc_head *h = malloc(sizeof *h + n);
    if (h == NULL) {
        return NULL;
    }
    h->size = n;
    atomic_fetch_add_explicit(&curl_bytes, n, memory_order_relaxed);
    return h + 1;
}

static void counted_free(void *p)
{
    if (p == NULL) {
        return;
    }
    struct alloc_head *h = (struct alloc_head *)p - 1;
    atomic_fetch_sub_explicit(&curl_bytes, h->size, memory_order_relaxed);
    free(h);
}

static void *counted_realloc(void *p, size_t n)
{
    if (p == NULL) {
        return counted_malloc(n);
    }
    struct alloc_head *h = (struct alloc_head *)p - 1;
    uint64_t old = h->size;
    if (n > old && atomic_load_explicit(&curl_bytes, memory_order_relaxed) + (n - old) > curl_budget) {
        return NULL;
    }
    struct alloc_head *g = realloc(h, sizeof *g + n);
    if (g == NULL) {
        return NULL;
    }
    g->size = n;
    if (n >= old) {
        atomic_fetch_add_explicit(&curl_bytes, n - old, memory_order_relaxed);
    } else {
        atomic_fetch_sub_explicit(&curl_bytes, old - n, memory_order_relaxed);
    }
    return g + 1;
}

static char *counted_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = counted_malloc(n);
    if (d != NULL) {
        memcpy(d, s, n);
    }
    return d;
}

static void *counted_calloc(size_t count, size_t size)
{
    if (size != 0 && count > SIZE_MAX / size) {
        return NULL;
    }
    void *p = counted_malloc(count * size);
    if (p != NULL) {
        memset(p, 0, count * size);
    }
    return p;
}

int sl_uplinks_global_init(void)
{
    if (curl_global_init_mem(CURL_GLOBAL_DEFAULT, counted_malloc, counted_free, counted_realloc,
                             counted_strdup, counted_calloc) != CURLE_OK) {
        return -1;
    }
    return sl_mqtt_out_global_init();
}

uint64_t sl_uplinks_library_bytes(void)
{
    return atomic_load_explicit(&curl_bytes, memory_order_relaxed);
}

/* ---- the plan ---- */

static uint32_t slots_for(uint32_t entries)
{
    uint32_t n = 2;
    while (n < 2u * entries) {
        n <<= 1;
    }
    return n;
}

static uint32_t points_for(const struct sl_uplinks_config *c)
{
    uint64_t n = c->batch_bytes / POINT_BYTES_MIN;
    return (uint32_t)(n < 256 ? 256 : n);
}

struct sizes {
    uint64_t state, text, points, touched, values, times, pb, out, fl_text, fl_out, zmem, shadow,
        slots;
};

static void sizes_of(const struct sl_uplinks_config *c, const struct sl_uplink_output_config *o,
                     struct sizes *s)
{
    memset(s, 0, sizeof *s);
    uint64_t a = SL_PLAN_ALIGN;
    s->state = sl_align_up(sizeof(struct sl_uplink), a) + READ_BYTES;
    s->text = sl_align_up(c->batch_bytes + LINE_BYTES_MAX, a);
    uint64_t body = c->batch_bytes + LINE_BYTES_MAX;
    if (o->kind == SL_UPLINK_PROMRW) {
        uint64_t p = points_for(c);
        s->points = sl_align_up(p * sizeof(struct point), a);
        s->touched = sl_align_up(p * sizeof(uint32_t), a);
        s->values = sl_align_up(p * sizeof(double), a);
        s->times = sl_align_up(p * sizeof(int64_t), a);
        s->pb = sl_align_up(c->batch_bytes + 64 * 1024, a);
        body = c->batch_bytes + 64 * 1024;
    } else if (o->kind != SL_UPLINK_MQTT) {
        s->zmem = ZLIB_BYTES; /* mqtt:// sends line protocol as it is */
    }
    s->out = sl_align_up(body + body / 6 + 1024, a); /* gzip's and snappy's worst cases */
    s->fl_text = s->text; /* the request in flight's own, while the next is built */
    s->fl_out = s->out;
    if (o->kind == SL_UPLINK_MQTT) {
        /* Never pipelined: the request in flight is the one built (launch swaps a buffer with
         * itself). line goes from the text as it is; native needs room for one frame. */
        s->out = o->format == SL_UPLINK_FORMAT_NATIVE ? sl_align_up(c->batch_bytes + 64, a) : 0;
        s->fl_text = s->fl_out = 0;
    }
    s->shadow = sl_align_up((uint64_t)c->sensors_max * sizeof(struct shadow), a);
    s->slots = sl_align_up((uint64_t)slots_for(c->sensors_max) * sizeof(uint32_t), a);
}

/*
 * What libmosquitto may hold for one output (it has no allocator hook): the
 * message in flight twice (mosquitto_publish's copy, and its PUBLISH packet
 * until written), its topic twice, the handle and small packets.
 */
static uint64_t mosquitto_bytes(const struct sl_uplinks_config *c)
{
    return 2 * (c->batch_bytes + SL_UPLINK_TOPIC_MAX) + SL_UPLINK_MOSQUITTO_SLACK_BYTES;
}

void sl_uplinks_plan(const struct sl_uplinks_config *c, struct sl_plan *plan)
{
    if (c->count == 0) {
        return;
    }
    uint64_t buffers = 0, sensors = 0, libraries = 0;
    for (uint32_t i = 0; i < c->count; i++) {
        struct sizes s;
        sizes_of(c, &c->outputs[i], &s);
        buffers += s.state + s.text + s.points + s.touched + s.values + s.times + s.pb + s.out +
                   s.fl_text + s.fl_out + s.zmem;
        sensors += s.shadow + s.slots;
        libraries += c->outputs[i].kind == SL_UPLINK_MQTT
                         ? mosquitto_bytes(c)
                         : SL_UPLINK_CURL_BYTES + SL_UPLINK_SNAPPY_BYTES;
    }
    sl_plan_add(plan, "uplink_buffers", buffers,
                "uplinks: each output's log reader (2 MiB), two requests (the one in flight, the "
                "next), compression and zlib state");
    sl_plan_add(plan, "uplink_sensors", sensors,
                "uplinks: each output's shadow of every sensor (88 B + 8-16 B of index a sensor)");
    sl_plan_add(plan, SL_UPLINK_PLAN_LIBRARY_PART, libraries,
                "uplinks: libcurl (counted, capped) and libsnappy's working memory a call; for "
                "mqtt://, libmosquitto's copies of the one message in flight (2 x batch bytes) "
                "and its handle; malloc'd by them, stated not mapped");
}

/* ---- files ---- */

static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

/*
 * The cursor file: two 64-byte slots written in turn, each "SLUC", format
 * version 1, the write sequence, the lsn, the readings of the next record
 * already delivered (u32 at 24), the mqtt:// messages delivered (u64 at 32),
 * the file's epoch (u64 at 40: wall-clock us when it was made), zeros, and
 * a CRC-32C of bytes 0..59 at 60. The valid slot with the larger sequence
 * wins, so a torn write leaves the previous cursor (never one past what was
 * delivered). A file from before these fields reads them as 0 (its epoch is
 * chosen and written at start).
 */
#define CURSOR_SLOT_BYTES 64u
enum {
    CUR_MAGIC = 0,
    CUR_VERSION = 4,
    CUR_SEQ = 8,
    CUR_LSN = 16,
    CUR_NEXT = 24,
    CUR_MSGS = 32,
    CUR_EPOCH = 40,
    CUR_CRC = 60
};

struct cursor_slot {
    uint64_t write_seq, lsn, msgs, epoch_us;
    uint32_t next;
};

static void cursor_encode(uint8_t out[CURSOR_SLOT_BYTES], const struct cursor_slot *c)
{
    memset(out, 0, CURSOR_SLOT_BYTES);
    memcpy(out + CUR_MAGIC, "SLUC", 4);
    sl_store_u32(out + CUR_VERSION, 1);
    sl_store_u64(out + CUR_SEQ, c->write_seq);
    sl_store_u64(out + CUR_LSN, c->lsn);
    sl_store_u32(out + CUR_NEXT, c->next);
    sl_store_u64(out + CUR_MSGS, c->msgs);
    sl_store_u64(out + CUR_EPOCH, c->epoch_us);
    sl_store_u32(out + CUR_CRC, sl_crc32c(out, CUR_CRC));
}

static bool cursor_decode(const uint8_t *p, struct cursor_slot *c)
{
    if (memcmp(p, "SLUC", 4) != 0 || sl_load_u32(p + CUR_VERSION) != 1 ||
        sl_load_u32(p + CUR_CRC) != sl_crc32c(p, CUR_CRC)) {
        return false;
    }
    c->write_seq = sl_load_u64(p + CUR_SEQ);
    c->lsn = sl_load_u64(p + CUR_LSN);
    c->next = sl_load_u32(p + CUR_NEXT);
    c->msgs = sl_load_u64(p + CUR_MSGS);
    c->epoch_us = sl_load_u64(p + CUR_EPOCH);
    return true;
}

/* A new epoch: now in wall-clock us (above every seq of an earlier file: PROTOCOL.md). */
static uint64_t epoch_now(void)
{
    int64_t now = sl_clock_realtime_us();
    return now > 0 ? (uint64_t)now : 1;
}

/*
 * The mark: a third slot after the two, written (not synced; synced for a
 * native mqtt:// output, whose downstream dedups by seq) when a remote
 * write or mqtt:// request goes on the wire: "after cursor BASE (and
 * BASE_NEXT readings of the record after it), a request up to record LSN
 * (before its reading NEXT; all of it when NEXT is ~0) was sent".
 * A restart at that cursor makes its first request end there, so that it
 * holds the same samples, no newer ones: Prometheus refuses (and rolls
 * back) a whole request that holds a sample it has, and the forwarder takes
 * that 400 as delivered; a downstream Sluice answers DUPLICATE to a resent
 * seq, whatever it holds. A mark for another cursor, or torn, is ignored.
 */
#define MARK_OFFSET (2 * CURSOR_SLOT_BYTES)
enum { MARK_BASE = 8, MARK_LSN = 16, MARK_NEXT = 24, MARK_BASE_NEXT = 28 };

static void mark_store(struct sl_uplink *u, const struct request *r)
{
    uint8_t slot[CURSOR_SLOT_BYTES] = {0};
    memcpy(slot + CUR_MAGIC, "SLUM", 4);
    sl_store_u32(slot + CUR_VERSION, 1);
    sl_store_u64(slot + MARK_BASE, u->cursor_lsn);
    sl_store_u64(slot + MARK_LSN, r->end_lsn);
    sl_store_u32(slot + MARK_NEXT, r->end_done ? UINT32_MAX : r->end_next);
    sl_store_u32(slot + MARK_BASE_NEXT, u->cursor_next);
    sl_store_u32(slot + CUR_CRC, sl_crc32c(slot, CUR_CRC));
    /* A failure only costs the cap: a restart's first request as before. */
    ssize_t w = pwrite(u->cursor_fd, slot, sizeof slot, MARK_OFFSET);
    if (w == (ssize_t)sizeof slot && u->cfg->kind == SL_UPLINK_MQTT &&
        u->cfg->format == SL_UPLINK_FORMAT_NATIVE && fdatasync(u->cursor_fd) != 0) {
        sl_say(SL_SAY_WARN, "uplink", "%s: cannot sync the mark in %s: %s", u->cfg->name,
               u->cursor_path, strerror(errno));
    }
}

static void mark_load(struct sl_uplink *u, const uint8_t *p)
{
    if (memcmp(p + CUR_MAGIC, "SLUM", 4) != 0 || sl_load_u32(p + CUR_VERSION) != 1 ||
        sl_load_u32(p + CUR_CRC) != sl_crc32c(p, CUR_CRC) ||
        sl_load_u64(p + MARK_BASE) != u->cursor_lsn ||
        sl_load_u32(p + MARK_BASE_NEXT) != u->cursor_next ||
        sl_load_u64(p + MARK_LSN) <= u->cursor_lsn) {
        return;
    }
    u->cap_lsn = sl_load_u64(p + MARK_LSN);
    u->cap_next = sl_load_u32(p + MARK_NEXT);
}

/* Open (or create) the cursor file and read the cursor. 0 or -errno; *torn when no slot was valid. */
static int cursor_open(struct sl_uplink *u, bool *torn)
{
    *torn = false;
    int fd = open(u->cursor_path, O_RDWR | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        fd = open(u->cursor_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0) {
            return -errno;
        }
        uint8_t both[2 * CURSOR_SLOT_BYTES];
        uint64_t epoch = epoch_now();
        cursor_encode(both, &(struct cursor_slot){.write_seq = 1, .epoch_us = epoch});
        cursor_encode(both + CURSOR_SLOT_BYTES, &(struct cursor_slot){.epoch_us = epoch});
        if (pwrite(fd, both, sizeof both, 0) != (ssize_t)sizeof both || fdatasync(fd) != 0) {
            int rc = -errno;
            close(fd);
            return rc != 0 ? rc : -EIO;
        }
        sync_dir(u->dir);
        u->cursor_fd = fd;
        u->cursor_write_seq = 1;
        u->cursor_lsn = 0;
        u->epoch_us = epoch;
        return 0;
    }
    if (fd < 0) {
        return -errno;
    }
    uint8_t both[3 * CURSOR_SLOT_BYTES] = {0}; /* the two slots and the mark */
    ssize_t n = pread(fd, both, sizeof both, 0);
    struct cursor_slot best = {0};
    bool any = false;
    for (uint32_t i = 0; i < 2; i++) {
        struct cursor_slot c;
        if (n >= (ssize_t)((i + 1) * CURSOR_SLOT_BYTES) &&
            cursor_decode(both + i * CURSOR_SLOT_BYTES, &c) &&
            (!any || c.write_seq > best.write_seq)) {
            best = c;
            any = true;
        }
    }
    *torn = !any;
    u->cursor_fd = fd;
    u->cursor_write_seq = best.write_seq;
    u->cursor_lsn = best.lsn;
    u->cursor_next = best.next;
    u->cursor_msgs = u->msgs = best.msgs;
    u->epoch_us = best.epoch_us; /* 0: a file from before the epoch, or torn: sl_uplinks_open */
    if (any && n == (ssize_t)sizeof both) {
        mark_load(u, both + MARK_OFFSET);
    }
    return 0;
}

/* Make (lsn, next) and u->msgs the durable cursor. 0 or -errno (the old one stands). */
static int cursor_store(struct sl_uplink *u, uint64_t lsn, uint32_t next, bool force)
{
    if (!force && lsn == u->cursor_lsn && next == u->cursor_next && u->msgs == u->cursor_msgs) {
        return 0;
    }
    uint64_t seq = u->cursor_write_seq + 1;
    uint8_t slot[CURSOR_SLOT_BYTES];
    cursor_encode(
        slot,
        &(struct cursor_slot){
            .write_seq = seq, .lsn = lsn, .next = next, .msgs = u->msgs, .epoch_us = u->epoch_us});
    if (pwrite(u->cursor_fd, slot, sizeof slot, (off_t)(seq % 2) * CURSOR_SLOT_BYTES) !=
            (ssize_t)sizeof slot ||
        fdatasync(u->cursor_fd) != 0) {
        return errno != 0 ? -errno : -EIO;
    }
    u->cursor_write_seq = seq;
    u->cursor_lsn = lsn;
    u->cursor_next = next;
    u->cursor_msgs = u->msgs;
    atomic_store_explicit(&u->stats.cursor_lsn, lsn, memory_order_relaxed);
    return 0;
}

/* Append a request's line protocol to the dead-letter file; past half the budget it becomes .1. */
static void dead_write(struct sl_uplink *u, const char *text, uint64_t len)
{
    uint64_t half = u->common->dead_bytes / 2;
    if (len > half) {
        /* One request larger than half the budget: its head, cut at a line. */
        uint64_t cut = half;
        while (cut > 0 && text[cut - 1] != '\n') {
            cut--;
        }
        len = cut;
    }
    if (len == 0) {
        return;
    }
    if (u->dead_size + len > half) { /* the size from start-up counts too, before any open */
        if (u->dead_fd >= 0) {
            close(u->dead_fd);
            u->dead_fd = -1;
        }
        if (rename(u->dead_path, u->dead_old_path) == 0) {
            u->dead_old_size = u->dead_size;
        }
        u->dead_size = 0;
    }
    if (u->dead_fd < 0) {
        u->dead_fd = open(u->dead_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (u->dead_fd < 0) {
            sl_say(SL_SAY_ERROR, "uplink", "%s: cannot open %s: %s; the dead letters are lost",
                   u->cfg->name, u->dead_path, strerror(errno));
            return;
        }
        struct stat st;
        u->dead_size = fstat(u->dead_fd, &st) == 0 ? (uint64_t)st.st_size : 0;
    }
    uint64_t done = 0;
    while (done < len) {
        ssize_t n = write(u->dead_fd, text + done, len - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            sl_say(SL_SAY_ERROR, "uplink", "%s: cannot write %s: %s", u->cfg->name, u->dead_path,
                   strerror(errno));
            break;
        }
        done += (uint64_t)n;
    }
    if (done > 0 && fdatasync(u->dead_fd) != 0) {
        sl_say(SL_SAY_ERROR, "uplink", "%s: cannot sync %s: %s; its last lines may be lost",
               u->cfg->name, u->dead_path, strerror(errno));
    }
    u->dead_size += done;
    atomic_store_explicit(&u->stats.dead_bytes, u->dead_size + u->dead_old_size,
                          memory_order_relaxed);
}

static void set_error(struct sl_uplink *u, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_error(struct sl_uplink *u, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&u->stats.error_mu);
    vsnprintf(u->stats.last_error, sizeof u->stats.last_error, fmt, ap);
    pthread_mutex_unlock(&u->stats.error_mu);
    va_end(ap);
}

/* ---- the log's dropping callback (the ingest thread) ---- */

static void on_dropping(void *ctx, const struct sl_log_segment_info *seg)
{
    struct sl_uplink *u = ctx;
    pthread_mutex_lock(&u->mu);
    if (u->pos_lsn < seg->last_lsn && seg->last_lsn > u->floor_lsn) {
        uint64_t lost = 0, bytes = 0;
        if (u->pos_name_seq == seg->name_seq) {
            lost = seg->readings > u->pos_seg_readings ? seg->readings - u->pos_seg_readings : 0;
            bytes = seg->data_bytes > u->pos_seg_bytes ? seg->data_bytes - u->pos_seg_bytes : 0;
        } else if (u->pos_name_seq < seg->name_seq) {
            lost = seg->readings;
            bytes = seg->data_bytes;
        }
        atomic_store_explicit(&u->stats.dropped_log_full,
                              atomic_load_explicit(&u->stats.dropped_log_full,
                                                   memory_order_relaxed) +
                                  lost,
                              memory_order_relaxed);
        u->skipped_bytes += bytes;
        u->floor_lsn = seg->last_lsn;
        if (atomic_load_explicit(&u->hold.need_lsn, memory_order_relaxed) <= seg->last_lsn) {
            atomic_store_explicit(&u->hold.need_lsn, seg->last_lsn + 1, memory_order_release);
        }
    }
    pthread_mutex_unlock(&u->mu);
}

/* ---- reading the log ---- */

static void reader_close(struct reader *r)
{
    if (r->fd >= 0) {
        close(r->fd);
        r->fd = -1;
    }
    r->buf_len = 0;
}

/* Open the first file after the current one that exists and has a valid header. */
static bool reader_open_next(struct sl_uplink *u)
{
    struct reader *r = &u->rd;
    uint64_t oldest = atomic_load_explicit(&u->logc->oldest_seq, memory_order_acquire);
    uint64_t newest = atomic_load_explicit(&u->logc->newest_seq, memory_order_acquire);
    uint64_t from = r->name_seq + 1 > oldest ? r->name_seq + 1 : oldest;
    char path[4400];
    /* Bounded by the names the log used between them (failed creations leave gaps). */
    for (uint64_t s = from; s != 0 && s <= newest; s++) {
        snprintf(path, sizeof path, "%s/log-%016llx.seg", u->common->data_dir, (unsigned long long)s);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            continue;
        }
        uint8_t h[SL_LOG_SEGMENT_HEADER_BYTES];
        struct sl_log_segment_header header;
        if (pread(fd, h, sizeof h, 0) != (ssize_t)sizeof h ||
            sl_log_segment_header_decode(h, sizeof h, &header) != 0) {
            close(fd);
            continue;
        }
        reader_close(r);
        r->fd = fd;
        r->name_seq = s;
        r->seq = header.segment_seq;
        r->offset = SL_LOG_SEGMENT_HEADER_BYTES;
        pthread_mutex_lock(&u->mu);
        u->pos_name_seq = s;
        u->pos_seg_readings = 0;
        u->pos_seg_bytes = 0;
        pthread_mutex_unlock(&u->mu);
        return true;
    }
    return false;
}

/*
 * Bytes of the file at r->offset in buf: refilled when fewer than `need` are
 * there (then *fresh is set: read after the caller's loads of the log's
 * counters, so at least as new as they are).
 */
static uint64_t reader_have(struct reader *r, uint64_t need, bool *fresh)
{
    if (r->offset >= r->buf_off && r->offset + need <= r->buf_off + r->buf_len) {
        return r->buf_off + r->buf_len - r->offset;
    }
    *fresh = true;
    ssize_t n;
    do {
        n = pread(r->fd, r->buf, READ_BYTES, (off_t)r->offset);
    } while (n < 0 && errno == EINTR);
    r->buf_off = r->offset;
    r->buf_len = n > 0 ? (uint64_t)n : 0;
    return r->buf_len;
}

/*
 * The next record that is applied, or false when there is none yet. Skips
 * what a retired file holds past its valid end, rewritten duplicates, and
 * anything a drop put below the floor (counted by on_dropping).
 */
static bool reader_next(struct sl_uplink *u, struct sl_log_record *rec)
{
    struct reader *r = &u->rd;
    /* Bounded: each turn consumes a record, moves to a later file, steps 8 bytes through a
     * closed file's damage (to its end at most), or reads the file afresh (then the next turn
     * is fresh: a cached end is read again at most once). */
    for (;;) {
        uint64_t applied = atomic_load_explicit(&u->logc->applied_lsn, memory_order_acquire);
        uint64_t newest = atomic_load_explicit(&u->logc->newest_seq, memory_order_acquire);
        if (r->fd < 0 && !reader_open_next(u)) {
            return false;
        }
        bool fresh = false;
        uint64_t have = reader_have(r, SL_LOG_RECORD_HEADER_BYTES, &fresh);
        int rc = -SL_LOG_END;
        if (have >= SL_LOG_RECORD_HEADER_BYTES) {
            const uint8_t *p = r->buf + (r->offset - r->buf_off);
            rc = sl_log_record_decode(p, have, r->seq, rec);
            if (rc == -SL_LOG_TRUNCATED && have < READ_BYTES) {
                have = reader_have(r, sl_load_u32(p + 4) + SL_LOG_ALIGN, &fresh); /* the rest */
                p = r->buf + (r->offset - r->buf_off);
                rc = sl_log_record_decode(p, have, r->seq, rec);
            }
        }
        uint64_t retired_last = 0;
        bool retired = sl_log_retired_last(u->logc, r->seq, &retired_last) != 0;
        if (rc == 0 && retired && rec->lsn > retired_last) {
            rc = -SL_LOG_END; /* the rest of a retired file is rewritten elsewhere, or failed */
        }
        if (rc != 0 && !fresh) {
            /* The end in the buffer may be older than the file: the log may have written more
             * here, then moved on (newest), since it was read. Read it again before leaving. */
            r->buf_len = 0;
            continue;
        }
        bool damaged = rc != -SL_LOG_END && rc != -SL_LOG_STALE;
        if (rc != 0 && damaged && !retired && have >= SL_LOG_ALIGN &&
            (r->name_seq < newest || applied > r->last_lsn)) {
            /* Damage, not a write in progress: the file is closed, or a later record is applied
             * (written whole before it was applied, and read after that was known). Recovery
             * skips it the same way: look for the next record past it, an alignment step at a
             * time, rather than leave the file's rest (or wait at it for good). */
            if (r->damaged_seq != r->name_seq) {
                r->damaged_seq = r->name_seq;
                sl_say(SL_SAY_WARN, "uplink", "%s: a damaged record in log file %016llx at offset "
                       "%llu (decode error %d); looking for the next one past it", u->cfg->name,
                       (unsigned long long)r->name_seq, (unsigned long long)r->offset, -rc);
            }
            r->offset += SL_LOG_ALIGN;
            pthread_mutex_lock(&u->mu);
            u->skipped_bytes += SL_LOG_ALIGN; /* in the position with the next record */
            pthread_mutex_unlock(&u->mu);
            continue;
        }
        if (rc != 0) {
            if (r->name_seq < newest || retired) {
                reader_close(r); /* a closed file ends here: on to the next */
                if (!reader_open_next(u)) {
                    return false;
                }
                continue;
            }
            r->buf_len = 0; /* what was read past the end is stale: read it again next time */
            return false;   /* the end of what the current file holds so far */
        }
        if (rec->lsn > applied) {
            r->buf_len = 0;
            return false; /* written, not applied yet */
        }
        r->offset += rec->record_bytes;
        if (rec->lsn <= r->last_lsn) {
            continue; /* a rewritten copy of a record already read */
        }
        r->last_lsn = rec->lsn;
        uint32_t readings = rec->transport == SL_LOG_SERIES ? 0 : rec->batch.header.count;
        pthread_mutex_lock(&u->mu);
        bool dropped = rec->lsn <= u->floor_lsn;
        u->pos_lsn = rec->lsn;
        u->pos_seg_readings += readings;
        u->pos_seg_bytes += rec->record_bytes;
        u->position += (dropped ? 0 : rec->record_bytes) + u->skipped_bytes; /* dropped: in skipped */
        u->skipped_bytes = 0;
        pthread_mutex_unlock(&u->mu);
        if (dropped) {
            continue; /* counted when its file was recycled */
        }
        return true;
    }
}

/* ---- the shadow ---- */

static struct shadow *shadow_get(struct sl_uplink *u, uint32_t id)
{
    uint32_t i = (uint32_t)(((uint64_t)id * 0x9E3779B97F4A7C15ull) >> 32) & u->slot_mask;
    /* Bounded: the table is at most half full. */
    for (;;) {
        uint32_t s = u->slots[i];
        if (s == 0) {
            if (u->entries_used == u->entries_cap) {
                return NULL;
            }
            struct shadow *e = &u->entries[u->entries_used];
            memset(e, 0, sizeof *e);
            e->id = id;
            u->slots[i] = ++u->entries_used;
            return e;
        }
        if (u->entries[s - 1].id == id) {
            return &u->entries[s - 1];
        }
        i = (i + 1) & u->slot_mask;
    }
}

/* The store's rules (store.c apply_one, in its order): the shadow of its last time, or NULL. */
static struct shadow *accepted_by_store(struct sl_uplink *u, const struct sl_log_record *rec,
                             const struct sl_reading *rd, int64_t *t_us)
{
    if (!isfinite(rd->value)) {
        return NULL;
    }
    int64_t base = rec->batch.header.base_time_us;
    if (base > INT64_MAX - (int64_t)rd->offset_us) {
        return NULL;
    }
    *t_us = base + (int64_t)rd->offset_us;
    if (*t_us > rec->now_us + u->common->future_skew_us) {
        return NULL;
    }
    uint32_t index;
    if (sl_store_find(u->store, rd->sensor_id, &index) != 0) {
        return NULL; /* never accepted (a full table refuses for good) */
    }
    struct shadow *e = shadow_get(u, rd->sensor_id);
    if (e == NULL || (e->seen && *t_us < e->last_t_us)) {
        return NULL;
    }
    e->seen = 1;
    e->last_t_us = *t_us;
    return e;
}

/* ---- encoding ---- */

static bool name_of(const struct sl_uplink *u, uint32_t id, const char **name, uint32_t *len)
{
    return u->series != NULL && sl_series_name(u->series, id, name, len) == 0;
}

static void request_note(struct sl_uplink *u, const struct sl_log_record *rec)
{
    if (u->req.first_accept_us == 0) {
        u->req.first_accept_us = rec->now_us > 0 ? rec->now_us : 1;
        atomic_store_explicit(&u->stats.oldest_unsent_us, u->req.first_accept_us,
                              memory_order_relaxed);
    }
}

/* After a crash, the first request ends where the one then on the wire ended (the mark). */
static bool at_cap(const struct sl_uplink *u, const struct sl_log_record *rec)
{
    return u->cap_lsn != 0 &&
           (rec->lsn > u->cap_lsn || (rec->lsn == u->cap_lsn && u->rec_next >= u->cap_next));
}

static bool native(const struct sl_uplink *u)
{
    return u->cfg->kind == SL_UPLINK_MQTT && u->cfg->format == SL_UPLINK_FORMAT_NATIVE;
}

_Static_assert(sizeof(struct sl_reading) == SL_READING_BYTES,
               "a native request holds wire-sized readings");

static bool request_full(const struct sl_uplink *u)
{
    if (native(u)) { /* one frame: 65,535 readings, and --uplink-batch-bytes */
        return u->req.points + 1 > SL_BATCH_COUNT_MAX ||
               SL_BATCH_BYTES(u->req.points + 1) > u->common->batch_bytes;
    }
    if (u->cfg->kind == SL_UPLINK_PROMRW) {
        return u->req.est_bytes + LINE_BYTES_MAX > u->common->batch_bytes ||
               u->req.points + 4 > u->points_cap;
    }
    /* Room for one more line of this output (the longest name, its tags); the first line of a
     * request always fits the text buffer (batch bytes + LINE_BYTES_MAX), whatever the batch. */
    uint64_t line_max = SL_SERIES_NAME_MAX + u->extra_len + 64u;
    return u->req.points > 0 && u->text_len + line_max > u->common->batch_bytes;
}

static void point_add(struct sl_uplink *u, struct shadow *e, uint32_t stat, int64_t t_us, double v)
{
    uint32_t n = (uint32_t)u->req.points++;
    SL_ASSERT(n < u->points_cap);
    uint32_t ei = (uint32_t)(e - u->entries);
    u->points[n] = (struct point){.entry = ei, .t_us = t_us, .value = v, .stat = stat};
    if (e->req_gen != u->req.gen) {
        e->req_gen = u->req.gen;
        e->head = e->tail = n + 1;
        e->samples = 0;
        u->touched[u->touched_count++] = ei;
        const char *name;
        uint32_t len;
        u->req.est_bytes += name_of(u, e->id, &name, &len) ? len + 64 : 48;
        u->req.est_bytes += u->extra_len + 8u * u->common->tags_count;
    } else {
        u->points[e->tail - 1].next = n + 1;
        e->tail = n + 1;
    }
    e->samples++;
    u->req.est_bytes += 22;
}

/*
 * A native frame's window: offset_us is a u32, so every reading lies in
 * [base, base + 2^32 - 1]. The base is its first reading's time less 2^31
 * us (saturated), so readings up to 35 minutes earlier or later than the
 * first (sensors of one record are not in time order) share the frame.
 */
#define NATIVE_HALF_WINDOW_US (INT64_C(1) << 31)

static int64_t native_base(int64_t t_us)
{
    int64_t base =
        t_us < INT64_MIN + NATIVE_HALF_WINDOW_US ? INT64_MIN : t_us - NATIVE_HALF_WINDOW_US;
    return base > INT64_MAX - (int64_t)UINT32_MAX ? INT64_MAX - (int64_t)UINT32_MAX : base;
}

/* Does the record's next reading fall outside the native frame being built? (it is cut there) */
static bool native_cut(const struct sl_uplink *u, const struct sl_log_record *rec)
{
    if (!native(u) || u->req.points == 0) {
        return false;
    }
    struct sl_reading rd;
    sl_batch_reading(&rec->batch, u->rec_next, &rd);
    int64_t base = rec->batch.header.base_time_us;
    if (base > INT64_MAX - (int64_t)rd.offset_us) {
        return false; /* the store rejects it */
    }
    int64_t t = base + (int64_t)rd.offset_us;
    return t < u->nat_base_us || (uint64_t)(t - u->nat_base_us) > UINT32_MAX;
}

/* A reading as it is stored (id, time, f32) into the native frame being built. */
static void native_reading(struct sl_uplink *u, const struct shadow *e, int64_t t_us, float v)
{
    if (u->req.points == 0) {
        u->nat_base_us = native_base(t_us);
    }
    SL_ASSERT(t_us >= u->nat_base_us && (uint64_t)(t_us - u->nat_base_us) <= UINT32_MAX);
    SL_ASSERT(u->text_len + sizeof(struct sl_reading) <= u->text_cap);
    struct sl_reading rd = {
        .sensor_id = e->id, .offset_us = (uint32_t)(t_us - u->nat_base_us), .value = v};
    memcpy(u->text + u->text_len, &rd, sizeof rd);
    u->text_len += sizeof rd;
}

/* Append a reading as line protocol to the text buffer (mqtt://: nanosecond times). */
static void text_reading(struct sl_uplink *u, const struct shadow *e, int64_t t_us, float v)
{
    const char *name = NULL;
    uint32_t len = 0;
    if (!name_of(u, e->id, &name, &len)) {
        name = NULL;
    }
    size_t n = u->cfg->kind == SL_UPLINK_MQTT
                   ? sl_lpout_line_ns(u->text + u->text_len, u->text_cap - u->text_len, name, len,
                                      e->id, u->extra, u->extra_len, t_us, v)
                   : sl_lpout_line(u->text + u->text_len, u->text_cap - u->text_len, name, len,
                                   e->id, u->extra, u->extra_len, t_us, v);
    SL_ASSERT(n > 0); /* request_full kept a line's room */
    u->text_len += n;
}

static size_t put_f64(char *out, double v)
{
    int n = snprintf(out, 40, "%.17g", v);
    /* The shortest of %.15g..%.17g that reads back the same. */
    for (int p = 15; p < 17; p++) {
        char t[40];
        int m = snprintf(t, sizeof t, "%.*g", p, v);
        if (strtod(t, NULL) == v) {
            memcpy(out, t, (size_t)m + 1);
            return (size_t)m;
        }
    }
    return (size_t)n;
}

/* A bucket as one line: the series (and field=KEY for a named one), count, mean, min, max. */
static size_t agg_line(struct sl_uplink *u, char *out, size_t cap, const struct shadow *e,
                       int64_t t_us, const double stats[4])
{
    const char *name = NULL;
    uint32_t len = 0;
    char head[SL_SERIES_NAME_MAX + 64];
    int hn;
    if (name_of(u, e->id, &name, &len)) {
        uint32_t sp = 0;
        while (sp < len && name[sp] != ' ') {
            sp += name[sp] == '\\' ? 2 : 1;
        }
        if (sp > len) {
            sp = len;
        }
        hn = snprintf(head, sizeof head, "%.*s%.*s,field=%.*s", (int)sp, name, (int)u->extra_len,
                      u->extra, sp < len ? (int)(len - sp - 1) : 0, sp < len ? name + sp + 1 : "");
    } else {
        hn = snprintf(head, sizeof head, "sluice,sensor=%u%.*s", e->id, (int)u->extra_len, u->extra);
    }
    char m[40], lo[SL_LPOUT_F32_MAX], hi[SL_LPOUT_F32_MAX];
    put_f64(m, stats[1]);
    size_t lo_n = sl_lpout_f32(lo, (float)stats[2]); /* not NUL-terminated */
    size_t hi_n = sl_lpout_f32(hi, (float)stats[3]);
    int n = snprintf(out, cap, "%.*s count=%.0f,mean=%s,min=%.*s,max=%.*s %" PRId64 "\n", hn, head,
                     stats[0], m, (int)lo_n, lo, (int)hi_n, hi, t_us);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* Close a bucket: encode it (emit) and mark it closed, its stats kept for a late reading. */
static void agg_close(struct sl_uplink *u, struct shadow *e, bool emit)
{
    e->open = 0;
    if (!emit || e->count == e->emitted) {
        e->emitted = e->count;
        return;
    }
    double stats[4] = {(double)e->count, e->sum / e->count, e->min, e->max};
    if (u->cfg->kind == SL_UPLINK_PROMRW) {
        for (uint32_t s = 0; s < 4; s++) {
            point_add(u, e, s + 1, e->bucket_us, stats[s]);
        }
    } else {
        size_t n = agg_line(u, u->text + u->text_len, u->text_cap - u->text_len, e, e->bucket_us,
                            stats);
        SL_ASSERT(n > 0);
        u->text_len += n;
        u->req.points++;
    }
    u->req.readings += e->count - e->emitted;
    e->emitted = e->count;
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static void agg_add(struct sl_uplink *u, struct shadow *e, const struct sl_log_record *rec,
                    int64_t t_us, float v, bool emit)
{
    int64_t b = floor_div(t_us, u->cfg->bucket_us) * u->cfg->bucket_us;
    if (e->count > 0 && b != e->bucket_us) {
        if (e->open) {
            agg_close(u, e, emit);
        }
        e->count = e->emitted = 0;
    }
    if (e->count == 0) {
        e->bucket_us = b;
        e->sum = 0;
        e->min = INFINITY;
        e->max = -INFINITY;
    }
    if (!e->open) {
        e->open = 1; /* new, or a closed bucket a late reading reopens (sent again, whole) */
        e->first_lsn = rec->lsn;
    }
    e->count++;
    e->sum += v;
    e->min = v < e->min ? v : e->min;
    e->max = v > e->max ? v : e->max;
    e->last_now_us = rec->now_us;
}

/* Close buckets idle for D by the forwarder's clock; stops early when the request fills. */
static void agg_scan(struct sl_uplink *u, bool emit)
{
    if (u->clock_us - u->last_scan_us < AGG_SCAN_US && u->scan_at == 0) {
        return;
    }
    u->last_scan_us = u->clock_us;
    for (uint32_t i = u->scan_at; i < u->entries_used; i++) {
        struct shadow *e = &u->entries[i];
        if (e->open && u->clock_us - e->last_now_us >= u->cfg->bucket_us) {
            if (emit && request_full(u)) {
                u->scan_at = i;
                return;
            }
            if (emit && e->count > e->emitted) {
                request_note(u, &(struct sl_log_record){.now_us = e->last_now_us});
            }
            agg_close(u, e, emit);
        }
    }
    u->scan_at = 0;
}

/* The lsn the hold must keep: after the cursor, and every open bucket's readings (aggregate). */
static uint64_t need_of(const struct sl_uplink *u, uint64_t cursor)
{
    uint64_t need = cursor + 1;
    if (u->cfg->mode == SL_UPLINK_AGGREGATE) {
        for (uint32_t i = 0; i < u->entries_used; i++) {
            if (u->entries[i].open && u->entries[i].first_lsn < need) {
                need = u->entries[i].first_lsn;
            }
        }
    }
    return need;
}

/*
 * The record just read is the one the cursor's `next` points into (a
 * restart of a raw output): run its delivered head through the shadow,
 * nothing encoded, so the first request starts where the last delivered
 * one ended.
 */
static void skip_head(struct sl_uplink *u)
{
    if (u->skip_next == 0 || u->rec.lsn != u->skip_lsn || u->rec.transport == SL_LOG_SERIES) {
        return;
    }
    uint32_t count = u->rec.batch.header.count;
    uint32_t end = u->skip_next < count ? u->skip_next : count;
    u->skip_next = 0;
    while (u->rec_next < end) {
        struct sl_reading rd;
        sl_batch_reading(&u->rec.batch, u->rec_next++, &rd);
        int64_t t_us;
        (void)accepted_by_store(u, &u->rec, &rd, &t_us);
    }
}

/*
 * Take readings from the current record (and the next ones) into the
 * request, until it is full or no applied record is left. emit false: the
 * dry run up to the cursor (nothing encoded). Returns true when it stopped
 * because nothing more is there.
 */
static bool fill(struct sl_uplink *u, bool emit, uint64_t until_lsn)
{
    /* Bounded by the records applied so far and the request's room. */
    for (;;) {
        if (!u->have_rec) {
            if (!emit && u->rd.last_lsn >= until_lsn) {
                return true;
            }
            if (!reader_next(u, &u->rec)) {
                return true;
            }
            if (!emit && u->rec.lsn > until_lsn) {
                /* The dry run read one record too far: keep it for the real run. */
                u->have_rec = true;
                u->rec_next = 0;
                skip_head(u);
                return true;
            }
            u->have_rec = true;
            u->rec_next = 0;
            skip_head(u);
            if (u->rec.now_us > u->clock_us) {
                u->clock_us = u->rec.now_us;
            }
        }
        if (emit && !u->have_rec) {
            return true;
        }
        const struct sl_log_record *rec = &u->rec;
        bool readings = rec->transport != SL_LOG_SERIES;
        bool agg = u->cfg->mode == SL_UPLINK_AGGREGATE;
        if (agg && emit) {
            agg_scan(u, true);
        } else if (agg) {
            agg_scan(u, false);
        }
        uint32_t count = readings ? rec->batch.header.count : 0;
        while (u->rec_next < count) {
            if (emit && (request_full(u) || at_cap(u, rec) || native_cut(u, rec))) {
                u->req.end_lsn = rec->lsn;
                u->req.end_done = false;
                u->req.end_next = u->rec_next;
                u->req.end_position = u->position - rec->record_bytes; /* before this record */
                return false;
            }
            struct sl_reading rd;
            sl_batch_reading(&rec->batch, u->rec_next++, &rd);
            int64_t t_us;
            struct shadow *e = accepted_by_store(u, rec, &rd, &t_us);
            if (e == NULL) {
                continue;
            }
            if (agg) {
                agg_add(u, e, rec, t_us, rd.value, emit);
                if (emit) {
                    request_note(u, rec);
                }
                continue;
            }
            if (!emit) {
                continue;
            }
            request_note(u, rec);
            if (u->cfg->kind == SL_UPLINK_PROMRW) {
                point_add(u, e, 0, t_us, rd.value);
            } else if (native(u)) {
                native_reading(u, e, t_us, rd.value);
                u->req.points++;
            } else {
                text_reading(u, e, t_us, rd.value);
                u->req.points++;
            }
            u->req.readings++;
        }
        u->have_rec = false;
        if (emit) {
            u->req.end_lsn = rec->lsn;
            u->req.end_done = true;
            u->req.end_position = u->position;
        }
    }
}

/* ---- remote write: the request as protobuf ---- */

static const char *const stat_suffix[] = {"", "_count", "_mean", "_min", "_max"};

/*
 * Labels of a sensor's series for one stat, sorted (sl_lpout_labels): the
 * reading as `<measurement>_<field>`; a bucket's stat as
 * `<measurement>_<stat>` with its field as label `field` (named series).
 * Returns the count (0: the name does not fit, nothing sent for it).
 */
static uint32_t labels_of(struct sl_uplink *u, const struct shadow *e, uint32_t stat,
                          char *idbuf, size_t idbuf_bytes)
{
    struct sl_promrw_label extra[SL_UPLINK_TAGS_MAX + 1];
    uint32_t nx = 0;
    const char *name;
    uint32_t len;
    bool named = name_of(u, e->id, &name, &len) &&
                 sl_lpout_split(name, len, &u->parts, u->split, sizeof u->split) == 0;
    if (!named && sl_lpout_numbered(e->id, &u->parts, idbuf, idbuf_bytes) != 0) {
        return 0;
    }
    size_t mlen;
    if (stat == 0) {
        mlen = sl_lpout_metric_name(u->metric, sizeof u->metric, &u->parts, 0);
    } else {
        int m = snprintf(u->metric, sizeof u->metric, "%.*s%s", (int)u->parts.measurement.n,
                         u->parts.measurement.p, stat_suffix[stat]);
        mlen = m > 0 && (size_t)m < sizeof u->metric ? (size_t)m : 0;
        if (named) {
            extra[nx++] = (struct sl_promrw_label){"field", 5, u->parts.field.p, u->parts.field.n};
        }
    }
    if (mlen == 0) {
        return 0;
    }
    for (uint32_t i = 0; i < u->common->tags_count; i++) {
        extra[nx++] = (struct sl_promrw_label){u->common->tag_keys[i],
                                               (uint32_t)strlen(u->common->tag_keys[i]),
                                               u->common->tag_values[i],
                                               (uint32_t)strlen(u->common->tag_values[i])};
    }
    int n = sl_lpout_labels(u->labels, LABELS_MAX, u->metric, (uint32_t)mlen, &u->parts, extra, nx,
                            0, u->label_scratch, sizeof u->label_scratch);
    return n > 0 ? (uint32_t)n : 0;
}

static int64_t ms_of(int64_t t_us)
{
    return floor_div(t_us, 1000);
}

/* Encode the request's samples, one TimeSeries per sensor and stat. 0, or -1 when it overflows. */
static int promrw_encode(struct sl_uplink *u)
{
    u->pb_len = 0;
    for (uint32_t t = 0; t < u->touched_count; t++) {
        const struct shadow *e = &u->entries[u->touched[t]];
        for (uint32_t stat = 0; stat < 5; stat++) {
            uint32_t k = 0;
            for (uint32_t p = e->head; p != 0; p = u->points[p - 1].next) {
                const struct point *pt = &u->points[p - 1];
                if (pt->stat == stat) {
                    u->values[k] = pt->value;
                    u->times_ms[k] = ms_of(pt->t_us);
                    k++;
                }
            }
            if (k == 0) {
                continue;
            }
            char idbuf[16];
            uint32_t n = labels_of(u, e, stat, idbuf, sizeof idbuf);
            size_t w = sl_promrw_put_series(u->pb + u->pb_len, u->pb_cap - u->pb_len, u->labels, n,
                                            u->values, u->times_ms, k);
            if (w == 0) {
                return -1;
            }
            u->pb_len += w;
        }
    }
    return 0;
}

/* The request's readings as line protocol in the text buffer (remote write's dead letters). */
static void promrw_as_text(struct sl_uplink *u)
{
    u->text_len = 0;
    for (uint32_t t = 0; t < u->touched_count; t++) {
        const struct shadow *e = &u->entries[u->touched[t]];
        double stats[4] = {0};
        int have = 0;
        for (uint32_t p = e->head; p != 0; p = u->points[p - 1].next) {
            const struct point *pt = &u->points[p - 1];
            size_t n = 0;
            if (pt->stat == 0) {
                const char *name = NULL;
                uint32_t len = 0;
                if (!name_of(u, e->id, &name, &len)) {
                    name = NULL;
                }
                n = sl_lpout_line(u->text + u->text_len, u->text_cap - u->text_len, name, len,
                                  e->id, u->extra, u->extra_len, pt->t_us, (float)pt->value);
            } else {
                stats[pt->stat - 1] = pt->value;
                if (++have == 4) {
                    have = 0;
                    n = agg_line(u, u->text + u->text_len, u->text_cap - u->text_len, e, pt->t_us,
                                 stats);
                }
            }
            if (u->text_len + n + LINE_BYTES_MAX > u->text_cap) {
                return; /* the head of it */
            }
            u->text_len += n;
        }
    }
}

/* ---- compression ---- */

static voidpf zalloc_planned(voidpf opaque, uInt items, uInt size)
{
    struct sl_uplink *u = opaque;
    uint64_t n = sl_align_up((uint64_t)items * size, 16);
    if (u->zmem_used + n > ZLIB_BYTES) {
        return Z_NULL;
    }
    void *p = u->zmem + u->zmem_used;
    u->zmem_used += n;
    return p;
}

static void zfree_planned(voidpf opaque, voidpf address)
{
    (void)opaque;
    (void)address; /* the arena is the output's for good */
}

static int gzip_body(struct sl_uplink *u)
{
    if (!u->z_ready) {
        u->z.zalloc = zalloc_planned;
        u->z.zfree = zfree_planned;
        u->z.opaque = u;
        if (deflateInit2(&u->z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
            return -1;
        }
        u->z_ready = true;
    } else if (deflateReset(&u->z) != Z_OK) {
        return -1;
    }
    u->z.next_in = (Bytef *)u->text;
    u->z.avail_in = (uInt)u->text_len;
    u->z.next_out = u->out;
    u->z.avail_out = (uInt)u->out_cap;
    int rc = deflate(&u->z, Z_FINISH);
    if (rc != Z_STREAM_END) {
        return -1;
    }
    u->out_len = u->out_cap - u->z.avail_out;
    return 0;
}

/* The native request as one batch frame in out: seq epoch + messages delivered, no ACK_REQUESTED.
 */
static int native_encode(struct sl_uplink *u)
{
    struct sl_batch_header h = {.version = SL_PROTOCOL_VERSION,
                                .flags = 0,
                                .count = (uint16_t)u->req.points,
                                .stream_id = u->cfg->stream_id,
                                .key_id = 0,
                                .batch_seq = u->epoch_us + u->msgs,
                                .base_time_us = u->nat_base_us};
    SL_ASSERT(u->req.points >= 1 && u->req.points <= SL_BATCH_COUNT_MAX);
    SL_ASSERT(u->text_len == u->req.points * SL_READING_BYTES);
    struct sl_reading *rs = (struct sl_reading *)(void *)u->text; /* the arena's, aligned */
    size_t n = sl_batch_encode(u->out, u->out_cap, &h, rs);
    if (n == 0) {
        return -1;
    }
    struct sl_batch back; /* paired with the downstream's decode */
    SL_ASSERT(sl_batch_decode(u->out, n, &back) == 0);
    SL_ASSERT(back.header.count == u->req.points && back.header.batch_seq == h.batch_seq);
    u->out_len = n;
    atomic_fetch_add_explicit(&u->stats.bytes_raw, n, memory_order_relaxed);
    return 0;
}

static int compress_request(struct sl_uplink *u)
{
    if (u->cfg->kind == SL_UPLINK_MQTT) {
        if (native(u)) {
            return native_encode(u);
        }
        atomic_fetch_add_explicit(&u->stats.bytes_raw, u->text_len, memory_order_relaxed);
        u->out_len = 0; /* line protocol goes as it is */
        return 0;
    }
    if (u->cfg->kind != SL_UPLINK_PROMRW) {
        atomic_fetch_add_explicit(&u->stats.bytes_raw, u->text_len, memory_order_relaxed);
        return gzip_body(u);
    }
    if (promrw_encode(u) != 0) {
        return -1;
    }
    atomic_fetch_add_explicit(&u->stats.bytes_raw, u->pb_len, memory_order_relaxed);
    size_t n = u->out_cap;
    if (snappy_compress((const char *)u->pb, u->pb_len, (char *)u->out, &n) != SNAPPY_OK) {
        return -1;
    }
    u->out_len = n;
    return 0;
}

/* ---- HTTP ---- */

static size_t on_body(char *data, size_t size, size_t n, void *ctx)
{
    struct sl_uplink *u = ctx;
    size_t bytes = size * n;
    size_t room = sizeof u->response - 1 - u->response_len;
    size_t take = bytes < room ? bytes : room;
    memcpy(u->response + u->response_len, data, take);
    u->response_len += (uint32_t)take;
    u->response[u->response_len] = '\0';
    return bytes; /* the rest is read and dropped: bounded by the timeout */
}

static size_t on_header(char *data, size_t size, size_t n, void *ctx)
{
    struct sl_uplink *u = ctx;
    size_t bytes = size * n;
    static const char name[] = "retry-after:";
    if (bytes > sizeof name && strncasecmp(data, name, sizeof name - 1) == 0) {
        char v[128];
        size_t vn = bytes - (sizeof name - 1);
        vn = vn < sizeof v - 1 ? vn : sizeof v - 1;
        memcpy(v, data + sizeof name - 1, vn);
        v[vn] = '\0';
        char *s = v;
        while (*s == ' ' || *s == '\t') {
            s++;
        }
        s[strcspn(s, "\r\n")] = '\0';
        char *end = NULL;
        long long secs = strtoll(s, &end, 10);
        if (end != s && *end == '\0' && secs >= 0) {
            u->retry_after_ms = secs > RETRY_AFTER_MAX_MS / 1000 ? RETRY_AFTER_MAX_MS : secs * 1000;
        } else {
            time_t when = curl_getdate(s, NULL);
            if (when > 0) {
                int64_t ms = ((int64_t)when * 1000000 - sl_clock_realtime_us()) / 1000;
                u->retry_after_ms = ms < 0 ? 0 : ms > RETRY_AFTER_MAX_MS ? RETRY_AFTER_MAX_MS : ms;
            }
        }
    }
    return bytes;
}

/* Abort a transfer that runs past the shutdown deadline. */
static int on_progress(void *ctx, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    (void)a;
    (void)b;
    (void)c;
    (void)d;
    struct sl_uplink *u = ctx;
    return atomic_load_explicit(&u->all->stopping, memory_order_relaxed) &&
           sl_clock_monotonic_ns() > atomic_load(&u->stop_deadline_ns);
}

static int http_open(struct sl_uplink *u, char *err, uint32_t err_bytes)
{
    u->curl = curl_easy_init();
    if (u->curl == NULL) {
        snprintf(err, err_bytes, "uplink %s: cannot start libcurl", u->cfg->name);
        return -1;
    }
    const char *ct = u->cfg->kind == SL_UPLINK_PROMRW ? "Content-Type: application/x-protobuf"
                                                       : "Content-Type: text/plain; charset=utf-8";
    const char *ce = u->cfg->kind == SL_UPLINK_PROMRW ? "Content-Encoding: snappy"
                                                       : "Content-Encoding: gzip";
    struct curl_slist *h = NULL;
    const char *lines[] = {ct, ce, "Expect:", "User-Agent: sluice/" SL_VERSION,
                           u->cfg->kind == SL_UPLINK_PROMRW ? "X-Prometheus-Remote-Write-Version: 0.1.0"
                                                            : NULL};
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        if (lines[i] != NULL) {
            struct curl_slist *next = curl_slist_append(h, lines[i]);
            if (next == NULL) {
                curl_slist_free_all(h);
                snprintf(err, err_bytes, "uplink %s: out of memory", u->cfg->name);
                return -1;
            }
            h = next;
        }
    }
    if (u->cfg->token[0] != '\0') {
        char auth[SL_UPLINK_TOKEN_BYTES + 32];
        snprintf(auth, sizeof auth, "Authorization: Token %s", u->cfg->token);
        struct curl_slist *next = curl_slist_append(h, auth);
        memset(auth, 0, sizeof auth);
        if (next == NULL) {
            curl_slist_free_all(h);
            snprintf(err, err_bytes, "uplink %s: out of memory", u->cfg->name);
            return -1;
        }
        h = next;
    }
    u->headers = h;
    CURL *c = u->curl;
    curl_easy_setopt(c, CURLOPT_URL, u->cfg->http_url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)u->common->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)u->common->timeout_ms);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, u);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, u);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, u);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, u->curl_error);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http");
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_MAXCONNECTS, 1L);
    u->multi = curl_multi_init();
    if (u->multi == NULL) {
        snprintf(err, err_bytes, "uplink %s: cannot start libcurl's multi handle", u->cfg->name);
        return -1;
    }
    curl_multi_setopt(u->multi, CURLMOPT_MAXCONNECTS, 1L);
    return 0;
}

static void count_code(struct sl_uplink *u, long code)
{
    if (code <= 0) {
        atomic_fetch_add_explicit(&u->stats.requests_error, 1, memory_order_relaxed);
        return;
    }
    for (uint32_t i = 0; i < SL_UPLINK_CODES_MAX; i++) {
        uint32_t have = atomic_load_explicit(&u->stats.codes[i], memory_order_relaxed);
        if (have == 0) {
            atomic_store_explicit(&u->stats.codes[i], (uint32_t)code, memory_order_release);
            have = (uint32_t)code;
        }
        if (have == (uint32_t)code) {
            atomic_fetch_add_explicit(&u->stats.code_counts[i], 1, memory_order_relaxed);
            return;
        }
    }
    atomic_fetch_add_explicit(&u->stats.requests_error, 1, memory_order_relaxed); /* table full */
}

/*
 * Drive the attempt in the multi handle: until it is answered, or (sent)
 * until its whole body is on the socket. Bounded by CURLOPT_TIMEOUT_MS and
 * the shutdown deadline (on_progress), which end the transfer.
 */
static void pump(struct sl_uplink *u, bool sent)
{
    while (!u->fl_done) {
        int running = 0;
        CURLMcode mc = curl_multi_perform(u->multi, &running);
        int left = 0;
        CURLMsg *m;
        while ((m = curl_multi_info_read(u->multi, &left)) != NULL) {
            if (m->msg == CURLMSG_DONE && m->easy_handle == u->curl) {
                u->fl_rc = m->data.result;
                u->fl_done = true;
            }
        }
        if (mc != CURLM_OK) {
            snprintf(u->curl_error, sizeof u->curl_error, "%s", curl_multi_strerror(mc));
            u->fl_rc = CURLE_FAILED_INIT;
            u->fl_done = true;
        }
        if (u->fl_done) {
            return;
        }
        curl_off_t up = 0;
        if (sent && curl_easy_getinfo(u->curl, CURLINFO_SIZE_UPLOAD_T, &up) == CURLE_OK &&
            (uint64_t)up >= u->fl_out_len) {
            return; /* the upstream has it all: the next request is built while it answers */
        }
        curl_multi_poll(u->multi, NULL, 0, 100, NULL);
    }
}

/* Put an attempt of the request in flight on the wire, its body sent; http_end waits for the answer. */
static void http_begin(struct sl_uplink *u)
{
    SL_ASSERT(!u->fl_started);
    u->response_len = 0;
    u->response[0] = '\0';
    u->retry_after_ms = -1;
    u->curl_error[0] = '\0';
    curl_easy_setopt(u->curl, CURLOPT_POSTFIELDS, (const char *)u->fl_out);
    curl_easy_setopt(u->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)u->fl_out_len);
    u->fl_started = true;
    u->fl_done = false;
    CURLMcode mc = curl_multi_add_handle(u->multi, u->curl);
    u->fl_added = mc == CURLM_OK;
    if (!u->fl_added) {
        snprintf(u->curl_error, sizeof u->curl_error, "%s", curl_multi_strerror(mc));
        u->fl_rc = CURLE_FAILED_INIT;
        u->fl_done = true;
        return;
    }
    pump(u, true);
}

/* The answer to the attempt http_begin started: the HTTP status, or 0 with curl_error set. */
static long http_end(struct sl_uplink *u)
{
    SL_ASSERT(u->fl_started);
    pump(u, false);
    bool added = u->fl_added;
    if (added) {
        curl_multi_remove_handle(u->multi, u->curl);
    }
    u->fl_started = u->fl_added = false;
    curl_off_t up = 0; /* the body bytes that left, counted as sent: none if it never connected */
    if (added && curl_easy_getinfo(u->curl, CURLINFO_SIZE_UPLOAD_T, &up) == CURLE_OK && up > 0) {
        atomic_fetch_add_explicit(&u->stats.bytes_sent, (uint64_t)up, memory_order_relaxed);
    }
    long code = 0;
    if (u->fl_rc == CURLE_OK) {
        curl_easy_getinfo(u->curl, CURLINFO_RESPONSE_CODE, &code);
    } else if (u->curl_error[0] == '\0') {
        snprintf(u->curl_error, sizeof u->curl_error, "%s", curl_easy_strerror(u->fl_rc));
    }
    count_code(u, code);
    return code;
}

static uint64_t rng_next(struct sl_uplink *u)
{
    u->rng ^= u->rng << 13;
    u->rng ^= u->rng >> 7;
    u->rng ^= u->rng << 17;
    return u->rng;
}

/* Wait ms, or less when stopping. */
static void nap(struct sl_uplink *u, int64_t ms)
{
    struct sl_uplinks *all = u->all;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t ns = (int64_t)ts.tv_nsec + (ms % 1000) * 1000000;
    ts.tv_sec += (time_t)(ms / 1000 + ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
    pthread_mutex_lock(&all->stop_mu);
    if (!atomic_load_explicit(&all->stopping, memory_order_relaxed)) {
        pthread_cond_timedwait(&all->stop_cv, &all->stop_mu, &ts);
    }
    pthread_mutex_unlock(&all->stop_mu);
}

static bool stopping(const struct sl_uplink *u)
{
    return atomic_load_explicit(&u->all->stopping, memory_order_relaxed);
}

/* Does Prometheus say the samples are already there? (taken as delivered: UPLINK.md) */
static bool already_there(const struct sl_uplink *u, long code)
{
    return u->cfg->kind == SL_UPLINK_PROMRW && code == 400 &&
           (strstr(u->response, "duplicate sample") != NULL ||
            strstr(u->response, "out of order sample") != NULL);
}

static void clean_response(struct sl_uplink *u)
{
    for (uint32_t i = 0; i < u->response_len; i++) {
        unsigned char ch = (unsigned char)u->response[i];
        if (ch < 0x20 || ch == 0x7f || ch == '"' || ch == '\\') {
            u->response[i] = ' ';
        }
    }
    while (u->response_len > 0 && u->response[u->response_len - 1] == ' ') {
        u->response[--u->response_len] = '\0';
    }
}

enum outcome { DELIVERED, DEAD, GAVE_UP };

/* The request that cannot be sent, as line protocol, into the dead letters. */
static void dead_letter(struct sl_uplink *u, const char *text, uint64_t len)
{
    if (u->cfg->kind == SL_UPLINK_PROMRW) {
        promrw_as_text(u); /* from the shadow: remote write is never pipelined */
        text = u->text;
        len = u->text_len;
    }
    dead_write(u, text, len);
}

/* --uplink-max-rate: wait until the request in flight may leave; false when stopping. */
static bool pace(struct sl_uplink *u)
{
    if (u->common->max_rate <= 0) {
        return true;
    }
    int64_t now = sl_clock_monotonic_ns();
    if (u->pace_ns > now) {
        nap(u, (u->pace_ns - now) / 1000000 + 1);
        if (stopping(u)) {
            return false;
        }
    }
    int64_t base = u->pace_ns > now ? u->pace_ns : now;
    u->pace_ns = base + (int64_t)((double)u->fl.readings * 1e9 / u->common->max_rate);
    return true;
}

/*
 * One mqtt:// attempt of the request in flight: its message published and
 * its PUBACK waited for. 200 when acknowledged, else 0 with the reason in
 * curl_error (retried: a broker answers nothing that means "never").
 */
static long mqtt_attempt(struct sl_uplink *u)
{
    const void *payload = native(u) ? (const void *)u->fl_out : (const void *)u->fl_text;
    uint64_t bytes = native(u) ? u->fl_out_len : u->fl_text_len;
    SL_ASSERT(bytes <= u->common->batch_bytes + LINE_BYTES_MAX);
    int rc =
        sl_mqtt_out_publish(&u->mq, payload, (uint32_t)bytes, u->curl_error, sizeof u->curl_error);
    if (rc != 0) {
        count_code(u, 0);
        return 0;
    }
    return 200;
}

/* Past the shutdown deadline: a publish waiting for its PUBACK gives up (mqtt_out.h). */
static bool mqtt_abort(void *ctx)
{
    struct sl_uplink *u = ctx;
    return stopping(u) && sl_clock_monotonic_ns() > atomic_load(&u->stop_deadline_ns);
}

/*
 * Send the request in flight until it is delivered, dead-lettered, or the
 * gateway stops; its first attempt may be on the wire already.
 */
static enum outcome deliver(struct sl_uplink *u)
{
    int64_t attempt_max_ms = SL_UPLINK_BACKOFF_MIN_MS;
    /* Bounded by stopping: every failed attempt waits, and a stop ends the loop. */
    for (uint64_t attempt = 0;; attempt++) {
        long code;
        if (u->cfg->kind == SL_UPLINK_MQTT) {
            if ((stopping(u) && attempt > 0) || !pace(u)) {
                return GAVE_UP;
            }
            code = mqtt_attempt(u);
        } else {
            if (!u->fl_started) {
                if ((stopping(u) && attempt > 0) || !pace(u)) {
                    return GAVE_UP;
                }
                http_begin(u);
            }
            code = http_end(u);
        }
        if ((code >= 200 && code < 300) || already_there(u, code)) {
            if (u->failures > 0) {
                sl_say(SL_SAY_INFO, "uplink",
                       "%s: delivering again (%s %ld) after %" PRIu64 " failed attempts",
                       u->cfg->name, u->cfg->kind == SL_UPLINK_MQTT ? "PUBACK, as" : "HTTP", code,
                       u->failures);
            }
            u->failures = 0;
            atomic_store_explicit(&u->stats.up, 1, memory_order_relaxed);
            atomic_store_explicit(&u->stats.state, SL_UPLINK_OK, memory_order_relaxed);
            return DELIVERED;
        }
        clean_response(u);
        bool retry = code == 0 || code == 408 || code == 429 || code >= 500;
        atomic_store_explicit(&u->stats.up, 0, memory_order_relaxed);
        if (!retry) {
            set_error(u, "HTTP %ld: %s", code, u->response);
            sl_say(SL_SAY_ERROR, "uplink",
                   "%s: HTTP %ld from %s: %s; %" PRIu64 " readings go to %s, forwarding goes on",
                   u->cfg->name, code, u->cfg->shown_url, u->response, u->fl.readings,
                   u->dead_path);
            dead_letter(u, u->fl_text, u->fl_text_len);
            u->failures = 0;
            atomic_store_explicit(&u->stats.state, SL_UPLINK_OK, memory_order_relaxed);
            return DEAD;
        }
        if (code == 0) {
            set_error(u, "%s", u->curl_error);
        } else {
            set_error(u, "HTTP %ld: %s", code, u->response);
        }
        atomic_store_explicit(&u->stats.state, SL_UPLINK_RETRYING, memory_order_relaxed);
        atomic_fetch_add_explicit(&u->stats.retries, 1, memory_order_relaxed);
        u->failures++;
        /* Full jitter: uniform in [100 ms, min(max, 100 ms x 2^attempt)], at least Retry-After. */
        int64_t cap = attempt_max_ms;
        int64_t wait = SL_UPLINK_BACKOFF_MIN_MS +
                       (int64_t)(rng_next(u) % (uint64_t)(cap - SL_UPLINK_BACKOFF_MIN_MS + 1));
        if (u->retry_after_ms > wait) {
            wait = u->retry_after_ms;
        }
        attempt_max_ms = attempt_max_ms * 2 > (int64_t)u->common->backoff_max_ms
                             ? (int64_t)u->common->backoff_max_ms
                             : attempt_max_ms * 2;
        int64_t now = sl_clock_monotonic_ns();
        if (u->failures == 1 || now - u->last_warn_ns >= WARN_EVERY_NS) {
            u->last_warn_ns = now;
            char status[32];
            snprintf(status, sizeof status, "HTTP %ld", code); /* mqtt:// has code 0 */
            sl_say(SL_SAY_WARN, "uplink", "%s: %s from %s; retrying in %" PRId64 " ms (%" PRIu64
                   " failed attempts so far; the backlog stays in the log)",
                   u->cfg->name, code == 0 ? u->curl_error : status, u->cfg->shown_url,
                   wait, u->failures);
        }
        if (stopping(u)) {
            return GAVE_UP;
        }
        nap(u, wait);
    }
}

static void request_reset(struct sl_uplink *u)
{
    uint32_t gen = u->req.gen + 1;
    if (gen == 0) {
        gen = 1;
        for (uint32_t i = 0; i < u->entries_used; i++) {
            u->entries[i].req_gen = 0;
        }
    }
    memset(&u->req, 0, sizeof u->req);
    u->req.gen = gen;
    u->text_len = 0;
    u->touched_count = 0;
    atomic_store_explicit(&u->stats.oldest_unsent_us, 0, memory_order_relaxed);
}

/* After a request is delivered or dead: the cursor, the hold, the counters. */
static void request_done(struct sl_uplink *u, const struct request *r, enum outcome how)
{
    uint64_t cursor = r->end_done ? r->end_lsn : r->end_lsn - 1;
    uint32_t next = r->end_done ? 0 : r->end_next;
    pthread_mutex_lock(&u->mu);
    if (u->floor_lsn > cursor) {
        cursor = u->floor_lsn;
        next = 0;
    }
    pthread_mutex_unlock(&u->mu);
    if (u->cfg->mode == SL_UPLINK_AGGREGATE) {
        next = 0; /* an aggregate restart folds the whole record again (its buckets) */
    }
    if (u->cfg->kind == SL_UPLINK_MQTT && how == DELIVERED && r->points > 0) {
        u->msgs++; /* the next message's seq; durable with this cursor */
    }
    if (cursor > u->cursor_lsn || (cursor == u->cursor_lsn && next > u->cursor_next) ||
        u->msgs != u->cursor_msgs) {
        if (cursor < u->cursor_lsn || (cursor == u->cursor_lsn && next < u->cursor_next)) {
            cursor = u->cursor_lsn; /* only msgs moved */
            next = u->cursor_next;
        }
        int rc = cursor_store(u, cursor, next, false);
        if (rc != 0) {
            sl_say(SL_SAY_ERROR, "uplink", "%s: cannot write %s: %s; a restart resends from lsn %"
                   PRIu64, u->cfg->name, u->cursor_path, strerror(-rc), u->cursor_lsn);
        }
    }
    if (r->end_position != 0) { /* 0: a request of closed buckets only, no record read */
        atomic_store_explicit(&u->stats.position_bytes, r->end_position, memory_order_relaxed);
    }
    /* Counted once the cursor is durable: a reader that sees them sees the cursor past them. */
    if (how == DELIVERED) {
        atomic_fetch_add_explicit(&u->stats.sent_readings, r->readings, memory_order_release);
    } else {
        atomic_fetch_add_explicit(&u->stats.dead_readings, r->readings, memory_order_release);
    }
    uint64_t need = need_of(u, u->cursor_lsn);
    pthread_mutex_lock(&u->mu);
    if (need <= u->floor_lsn) {
        need = u->floor_lsn + 1;
    }
    atomic_store_explicit(&u->hold.need_lsn, need, memory_order_release);
    pthread_mutex_unlock(&u->mu);
}

/* The request in flight is answered: no longer in flight (its bookkeeping kept in *r). */
static void flight_over(struct sl_uplink *u, struct request *r)
{
    *r = u->fl;
    u->fl_active = false;
    atomic_store_explicit(&u->stats.flight_first_us, 0, memory_order_relaxed);
}

/* The request built becomes the one in flight: its bookkeeping and its buffers. */
static void launch(struct sl_uplink *u)
{
    SL_ASSERT(!u->fl_active);
    u->fl = u->req;
    char *t = u->fl_text;
    u->fl_text = u->text;
    u->text = t;
    u->fl_text_len = u->text_len;
    uint8_t *o = u->fl_out;
    u->fl_out = u->out;
    u->out = o;
    u->fl_out_len = u->out_len;
    u->fl_active = true;
    u->cap_lsn = 0; /* the first request after a restart, capped by the mark, is this one or gone */
    atomic_store_explicit(&u->stats.flight_first_us, u->fl.first_accept_us, memory_order_relaxed);
}

/* Wait for the request in flight to be answered (and retried): false when the gateway stops. */
static bool land(struct sl_uplink *u)
{
    if (!u->fl_active) {
        return true;
    }
    enum outcome how = deliver(u);
    if (how == GAVE_UP) {
        return false;
    }
    struct request r;
    flight_over(u, &r);
    request_done(u, &r, how);
    return true;
}

/* Move the cursor past what was read with nothing to send (rejected readings, names, drops). */
static void skip_ahead(struct sl_uplink *u)
{
    uint64_t cursor = u->have_rec ? u->rec.lsn - 1 : u->rd.last_lsn;
    if (cursor > u->cursor_lsn) {
        struct request r = {.end_lsn = cursor,
                            .end_done = true,
                            .end_position = u->have_rec ? u->position - u->rec.record_bytes
                                                        : u->position};
        request_done(u, &r, DELIVERED);
        request_reset(u);
    }
}

static void *forward(void *arg)
{
    struct sl_uplink *u = arg;
    char name[16];
    snprintf(name, sizeof name, "sluice-up-%.5s", u->cfg->name); /* 15 bytes at most */
    pthread_setname_np(pthread_self(), name);
    /* The dry run: up to the cursor, nothing sent. */
    fill(u, false, u->cursor_lsn);
    atomic_store_explicit(&u->stats.position_bytes, u->position, memory_order_relaxed);
    request_reset(u);
    sl_say(SL_SAY_INFO, "uplink", "%s: forwarding to %s from lsn %" PRIu64 " (%s)", u->cfg->name,
           u->cfg->shown_url, u->cursor_lsn + 1,
           u->cfg->kind == SL_UPLINK_PROMRW ? "remote write"
           : u->cfg->kind != SL_UPLINK_MQTT ? "line protocol, gzip"
           : native(u)                      ? "MQTT, native batch frames"
                                            : "MQTT, line protocol");
    bool agg = u->cfg->mode == SL_UPLINK_AGGREGATE;
    /* Bounded by stopping; each turn reads, sends, waits for an answer or naps. */
    while (!stopping(u)) {
        bool drained = fill(u, true, UINT64_MAX);
        int64_t now_us = sl_clock_realtime_us();
        if (agg && drained) {
            if (now_us > u->clock_us) {
                u->clock_us = now_us; /* caught up: buckets close by the wall clock */
            }
            agg_scan(u, true);
        }
        bool have = u->req.points > 0;
        bool due = have && (!drained || request_full(u) ||
                            now_us - u->req.first_accept_us >=
                                (int64_t)u->common->flush_interval_ms * 1000);
        if (due) {
            if (!u->req.end_done && u->req.end_lsn == 0) {
                u->req.end_lsn = u->rd.last_lsn;
            }
            /* Compressed while the one before is still answered (pipelined outputs). */
            int crc = compress_request(u);
            if (crc != 0) {
                if (!land(u)) {
                    break;
                }
                sl_say(SL_SAY_ERROR, "uplink", "%s: cannot encode a request of %" PRIu64
                       " readings; it goes to the dead letters", u->cfg->name, u->req.readings);
                dead_letter(u, u->text, u->text_len);
                u->cap_lsn = 0;
                request_done(u, &u->req, DEAD);
                request_reset(u);
                continue;
            }
            if (!u->pipelined) {
                launch(u);
                if ((u->cfg->kind == SL_UPLINK_PROMRW || u->cfg->kind == SL_UPLINK_MQTT) &&
                    u->cfg->mode == SL_UPLINK_RAW) {
                    mark_store(u, &u->fl);
                }
                bool more = land(u); /* before the shadow moves on: remote write, aggregate */
                request_reset(u);
                if (!more) {
                    break;
                }
                continue;
            }
            /* The one before answered, this one goes on the wire, then the cursor of the one
             * before is made durable while the upstream takes this one. */
            struct request before;
            enum outcome how = DELIVERED;
            bool answered = u->fl_active;
            if (answered) {
                how = deliver(u);
                if (how == GAVE_UP) {
                    break;
                }
                flight_over(u, &before);
            }
            launch(u);
            request_reset(u);
            bool go = pace(u);
            if (go) {
                http_begin(u);
            }
            if (answered) {
                request_done(u, &before, how);
            }
            if (!go) {
                break;
            }
            continue;
        }
        if (u->fl_active) {
            if (!land(u)) {
                break;
            }
            continue;
        }
        if (!have && drained) {
            skip_ahead(u);
            atomic_store_explicit(&u->stats.oldest_unsent_us, 0, memory_order_relaxed);
        }
        /* Idle: look again in 20 ms, or sooner when requests must leave sooner than that. */
        uint32_t flush_ms = u->common->flush_interval_ms;
        int idle_ms = flush_ms >= IDLE_WAIT_MS ? IDLE_WAIT_MS : flush_ms > 0 ? (int)flush_ms : 1;
        if (drained && u->cfg->kind == SL_UPLINK_MQTT && u->mq.connected) {
            sl_mqtt_out_idle(&u->mq, idle_ms); /* keepalive, and a broker that goes away */
        } else if (drained) {
            nap(u, idle_ms);
        }
    }
    if (u->fl_started) {
        /* Stopping: the attempt on the wire is answered or times out (the stop's deadline). */
        long code = http_end(u);
        if ((code >= 200 && code < 300) || already_there(u, code)) {
            struct request r;
            flight_over(u, &r);
            request_done(u, &r, DELIVERED);
        }
    }
    return NULL;
}

/* ---- start-up and shutdown ---- */

static int make_dir(const char *dir)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        return -errno;
    }
    return 0;
}

static int read_token(struct sl_uplink_output_config *o, char *err, uint32_t err_bytes)
{
    if (o->token_file[0] == '\0') {
        return 0;
    }
    int fd = open(o->token_file, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, err_bytes, "--uplink-token %s=%s: %s", o->name, o->token_file,
                 fd < 0 ? strerror(errno) : "not a regular file");
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    ssize_t n = read(fd, o->token, sizeof o->token - 1);
    close(fd);
    if (n < 0 || (size_t)n >= sizeof o->token - 1) {
        snprintf(err, err_bytes, "--uplink-token %s=%s: %s", o->name, o->token_file,
                 n < 0 ? strerror(errno) : "longer than 1 KiB");
        return -1;
    }
    o->token[n] = '\0';
    o->token[strcspn(o->token, "\r\n")] = '\0';
    if (o->token[0] == '\0' || strpbrk(o->token, " \t") != NULL) {
        snprintf(err, err_bytes, "--uplink-token %s=%s: not one token on the first line", o->name,
                 o->token_file);
        return -1;
    }
    return 0;
}

int sl_uplinks_open(struct sl_uplinks *ups, const struct sl_uplinks_config *config,
                    struct sl_arena *arena, struct sl_log *log, const struct sl_store *store,
                    const struct sl_series *series, char *err, uint32_t err_bytes)
{
    memset(ups, 0, sizeof *ups);
    ups->config = *config;
    ups->log = log;
    pthread_mutex_init(&ups->stop_mu, NULL);
    pthread_cond_init(&ups->stop_cv, NULL);
    if (config->count == 0) {
        return 0;
    }
    curl_budget = (uint64_t)config->count * SL_UPLINK_CURL_BYTES;
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/uplink", config->data_dir);
    int rc = make_dir(dir);
    if (rc != 0) {
        snprintf(err, err_bytes, "uplink: cannot create %s: %s", dir, strerror(-rc));
        return -1;
    }
    sync_dir(config->data_dir);
    const struct sl_log_counters *logc = sl_log_counters(log);
    uint64_t last_lsn = sl_log_next_lsn(log) - 1;
    /* The parts come in the plan's order: every output's buffers, then every output's shadow. */
    struct sizes sz[SL_UPLINKS_MAX];
    uint8_t *buffers[SL_UPLINKS_MAX];
    for (uint32_t i = 0; i < config->count; i++) {
        sizes_of(config, &config->outputs[i], &sz[i]);
        buffers[i] = sl_arena_take(arena, sz[i].state + sz[i].text + sz[i].points + sz[i].touched +
                                              sz[i].values + sz[i].times + sz[i].pb + sz[i].out +
                                              sz[i].fl_text + sz[i].fl_out + sz[i].zmem);
    }
    for (uint32_t i = 0; i < config->count; i++) {
        struct sl_uplink_output_config *oc = &ups->config.outputs[i];
        if (read_token(oc, err, err_bytes) != 0) {
            return -1;
        }
        uint8_t *p = buffers[i];
        struct sl_uplink *u = (struct sl_uplink *)(void *)p;
        memset(u, 0, sizeof *u);
        p += sl_align_up(sizeof *u, SL_PLAN_ALIGN);
        u->rd.buf = p;
        p += READ_BYTES;
        u->text = (char *)p;
        u->text_cap = sz[i].text;
        p += sz[i].text;
        u->points = (struct point *)(void *)p;
        u->points_cap = (uint32_t)(sz[i].points / sizeof(struct point));
        p += sz[i].points;
        u->touched = (uint32_t *)(void *)p;
        p += sz[i].touched;
        u->values = (double *)(void *)p;
        p += sz[i].values;
        u->times_ms = (int64_t *)(void *)p;
        p += sz[i].times;
        u->pb = p;
        u->pb_cap = sz[i].pb;
        p += sz[i].pb;
        u->out = p;
        u->out_cap = sz[i].out;
        p += sz[i].out;
        u->fl_text = (char *)p;
        p += sz[i].fl_text;
        u->fl_out = p;
        p += sz[i].fl_out;
        u->zmem = p;
        if (oc->kind == SL_UPLINK_MQTT) {
            u->fl_text = u->text; /* one buffer each: sizes_of */
            u->fl_out = u->out;
        }
        u->entries = sl_arena_take(arena, sz[i].shadow);
        u->entries_cap = config->sensors_max;
        u->slots = sl_arena_take(arena, sz[i].slots);
        u->slot_mask = (uint32_t)(sz[i].slots / sizeof(uint32_t)) - 1;
        memset(u->slots, 0, sz[i].slots);

        u->all = ups;
        u->cfg = oc;
        u->common = &ups->config;
        u->index = i;
        u->logc = logc;
        u->log = log;
        u->store = store;
        u->series = series;
        u->pipelined =
            oc->kind != SL_UPLINK_PROMRW && oc->kind != SL_UPLINK_MQTT && oc->mode == SL_UPLINK_RAW;
        u->rd.fd = -1;
        u->dead_fd = -1;
        u->cursor_fd = -1;
        pthread_mutex_init(&u->mu, NULL);
        pthread_mutex_init(&u->stats.error_mu, NULL);
        snprintf(u->dir, sizeof u->dir, "%s", dir);
        snprintf(u->cursor_path, sizeof u->cursor_path, "%s/%s.cursor", dir, oc->name);
        snprintf(u->dead_path, sizeof u->dead_path, "%s/%s.dead", dir, oc->name);
        snprintf(u->dead_old_path, sizeof u->dead_old_path, "%s/%s.dead.1", dir, oc->name);
        struct stat st;
        u->dead_size = stat(u->dead_path, &st) == 0 ? (uint64_t)st.st_size : 0;
        u->dead_old_size = stat(u->dead_old_path, &st) == 0 ? (uint64_t)st.st_size : 0;
        atomic_store(&u->stats.dead_bytes, u->dead_size + u->dead_old_size);
        bool torn = false;
        rc = cursor_open(u, &torn);
        if (rc != 0) {
            snprintf(err, err_bytes, "uplink %s: cannot open %s: %s", oc->name, u->cursor_path,
                     strerror(-rc));
            return -1;
        }
        if (torn) {
            sl_say(SL_SAY_WARN, "uplink",
                   "%s: %s is damaged in both copies; forwarding starts again from the oldest "
                   "record in the log (upstreams keep one sample a series and time)",
                   oc->name, u->cursor_path);
        }
        if (u->cursor_lsn > last_lsn) {
            sl_say(SL_SAY_WARN, "uplink",
                   "%s: the cursor (lsn %" PRIu64 ") is past the log's last record (%" PRIu64
                   "): the log was replaced; forwarding starts from its oldest record",
                   oc->name, u->cursor_lsn, last_lsn);
            u->cursor_lsn = 0;
            u->cursor_next = 0;
            u->cap_lsn = 0;
            u->cursor_write_seq++;
        }
        if (u->epoch_us == 0) {
            /* A cursor file from before the epoch, or damaged in both copies: a new epoch, made
             * durable before any message carries a seq derived from it. */
            u->epoch_us = epoch_now();
            u->msgs = 0;
            rc = cursor_store(u, u->cursor_lsn, u->cursor_next, true);
            if (rc != 0) {
                snprintf(err, err_bytes, "uplink %s: cannot write %s: %s", oc->name, u->cursor_path,
                         strerror(-rc));
                return -1;
            }
        }
        if (oc->mode == SL_UPLINK_RAW && u->cursor_next > 0) {
            u->skip_lsn = u->cursor_lsn + 1;
            u->skip_next = u->cursor_next;
        }
        atomic_store(&u->stats.cursor_lsn, u->cursor_lsn);
        atomic_store(&u->stats.up, 1);
        u->hold.name = oc->name;
        u->hold.block = config->block;
        u->hold.dropping = on_dropping;
        u->hold.ctx = u;
        atomic_store(&u->hold.need_lsn, u->cursor_lsn + 1);
        if (getrandom(&u->rng, sizeof u->rng, 0) != (ssize_t)sizeof u->rng || u->rng == 0) {
            u->rng = 0x9E3779B97F4A7C15ull ^ (uint64_t)sl_clock_monotonic_ns();
        }
        /* The extra tags, rendered once. */
        const char *keys[SL_UPLINK_TAGS_MAX], *values[SL_UPLINK_TAGS_MAX];
        for (uint32_t t = 0; t < config->tags_count; t++) {
            keys[t] = ups->config.tag_keys[t];
            values[t] = ups->config.tag_values[t];
        }
        int n = sl_lpout_tags(u->extra, sizeof u->extra, keys, values, config->tags_count);
        if (n < 0 || (n == 0 && config->tags_count > 0)) {
            /* Cannot happen within the limits (escaped, 16 tags take at most 8 KiB): never
             * forward without the tags asked for. */
            snprintf(err, err_bytes, "uplink %s: the --uplink-tag list does not fit %zu bytes",
                     oc->name, sizeof u->extra);
            return -1;
        }
        u->extra_len = (uint32_t)n;
        if (oc->kind == SL_UPLINK_MQTT) {
            if (!oc->stream_id_set) {
                /* Derived from the name, so the same output keeps its stream across restarts. */
                oc->stream_id = sl_crc32c(oc->name, strlen(oc->name));
                oc->stream_id = oc->stream_id != 0 ? oc->stream_id : 1;
            }
            if (sl_mqtt_out_open(&u->mq, oc, config->timeout_ms, err, err_bytes) != 0) {
                return -1;
            }
            u->mq.abort_now = mqtt_abort;
            u->mq.abort_ctx = u;
            u->mq.bytes_sent = &u->stats.bytes_sent;
        } else if (http_open(u, err, err_bytes) != 0) {
            return -1;
        }
        if (sl_log_add_hold(log, &u->hold) != 0) {
            snprintf(err, err_bytes, "uplink %s: too many holds on the log", oc->name);
            return -1;
        }
        request_reset(u);
        ups->outputs[i] = u;
        ups->count++;
    }
    return 0;
}

int sl_uplinks_start(struct sl_uplinks *ups, char *err, uint32_t err_bytes)
{
    for (uint32_t i = 0; i < ups->count; i++) {
        struct sl_uplink *u = ups->outputs[i];
        if (pthread_create(&u->thread, NULL, forward, u) != 0) {
            snprintf(err, err_bytes, "uplink %s: cannot start its thread", u->cfg->name);
            return -1;
        }
        u->started = true;
    }
    return 0;
}

void sl_uplinks_stop(struct sl_uplinks *ups, int64_t deadline_ns)
{
    for (uint32_t i = 0; i < ups->count; i++) {
        atomic_store(&ups->outputs[i]->stop_deadline_ns, deadline_ns);
    }
    pthread_mutex_lock(&ups->stop_mu);
    atomic_store(&ups->stopping, true);
    pthread_cond_broadcast(&ups->stop_cv);
    pthread_mutex_unlock(&ups->stop_mu);
}

void sl_uplinks_join(struct sl_uplinks *ups)
{
    for (uint32_t i = 0; i < ups->count; i++) {
        struct sl_uplink *u = ups->outputs[i];
        if (u->started) {
            pthread_join(u->thread, NULL);
            u->started = false;
        }
        if (u->multi != NULL) {
            if (u->fl_added) {
                curl_multi_remove_handle(u->multi, u->curl);
                u->fl_added = u->fl_started = false;
            }
            curl_multi_cleanup(u->multi);
            u->multi = NULL;
        }
        if (u->curl != NULL) {
            curl_easy_cleanup(u->curl);
            u->curl = NULL;
        }
        curl_slist_free_all(u->headers);
        u->headers = NULL;
        sl_mqtt_out_close(&u->mq);
        reader_close(&u->rd);
        if (u->cursor_fd >= 0) {
            close(u->cursor_fd);
            u->cursor_fd = -1;
        }
        if (u->dead_fd >= 0) {
            close(u->dead_fd);
            u->dead_fd = -1;
        }
    }
}

/* ---- readers ---- */

const struct sl_uplink_stats *sl_uplink_stats(const struct sl_uplinks *ups, uint32_t i)
{
    return &ups->outputs[i]->stats;
}

const struct sl_uplink_output_config *sl_uplink_config(const struct sl_uplinks *ups, uint32_t i)
{
    return ups->outputs[i]->cfg;
}

uint64_t sl_uplink_backlog_bytes(const struct sl_uplinks *ups, uint32_t i)
{
    const struct sl_uplink *u = ups->outputs[i];
    uint64_t end = atomic_load_explicit(&u->logc->appended_bytes, memory_order_relaxed);
    uint64_t at = atomic_load_explicit(&u->stats.position_bytes, memory_order_relaxed);
    return end > at ? end - at : 0;
}

double sl_uplink_lag_seconds(const struct sl_uplinks *ups, uint32_t i)
{
    const struct sl_uplink *u = ups->outputs[i];
    int64_t oldest = atomic_load_explicit(&u->stats.oldest_unsent_us, memory_order_relaxed);
    int64_t flying = atomic_load_explicit(&u->stats.flight_first_us, memory_order_relaxed);
    if (flying != 0 && (oldest == 0 || flying < oldest)) {
        oldest = flying; /* the request in flight holds older readings than the one built */
    }
    if (oldest == 0) {
        return 0;
    }
    int64_t now = sl_clock_realtime_us();
    return now > oldest ? (double)(now - oldest) / 1e6 : 0;
}

void sl_uplink_last_error(const struct sl_uplinks *ups, uint32_t i, char *out, uint32_t out_bytes)
{
    struct sl_uplink *u = ups->outputs[i];
    pthread_mutex_lock(&u->stats.error_mu);
    snprintf(out, out_bytes, "%s", u->stats.last_error);
    pthread_mutex_unlock(&u->stats.error_mu);
}

int sl_uplink_state(const struct sl_uplinks *ups, uint32_t i)
{
    char reason[256];
    if (sl_log_health(ups->log, reason, sizeof reason) != 0) {
        char want[64];
        snprintf(want, sizeof want, "uplink backlog full: %s", ups->outputs[i]->cfg->name);
        if (strcmp(reason, want) == 0) {
            return SL_UPLINK_BLOCKED;
        }
    }
    return atomic_load_explicit(&ups->outputs[i]->stats.state, memory_order_relaxed);
}

const char *sl_uplink_state_name(int state)
{
    return state == SL_UPLINK_BLOCKED ? "blocked" : state == SL_UPLINK_RETRYING ? "retrying" : "ok";
}
