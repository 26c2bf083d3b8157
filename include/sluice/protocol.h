/*
 * Sluice native ingestion protocol, version 1: the public wire contract.
 *
 * This header is the C shape of docs/spec/PROTOCOL.md (a copy of the shared
 * spec, checked equal by a test). It holds the constants, the status codes, the decoded
 * views of a batch frame and an ack frame, and the codec entry points. The
 * codec (src/proto/codec.c) is pure: no I/O, no allocation, no global state,
 * so it is safe from any thread and can be fuzzed alone.
 *
 * Every integer on the wire is little-endian and is decoded with explicit
 * byte loads; packet bytes are never cast to structs.
 */
#ifndef SLUICE_PROTOCOL_H
#define SLUICE_PROTOCOL_H

#include <endian.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define SL_BATCH_MAGIC_0 0x53 /* 'S' */
#define SL_BATCH_MAGIC_1 0x4C /* 'L' */
#define SL_BATCH_MAGIC_2 0x42 /* 'B' */
#define SL_BATCH_MAGIC_3 0x31 /* '1' */
#define SL_ACK_MAGIC_2 0x41   /* 'A': "SLA1" */
#define SL_PROTOCOL_VERSION 1

#define SL_BATCH_HEADER_BYTES 32u
#define SL_READING_BYTES 12u
#define SL_CRC_BYTES 4u
#define SL_BATCH_COUNT_MAX 65535u
/* Bytes of a whole frame holding `count` readings. */
#define SL_BATCH_BYTES(count) (SL_BATCH_HEADER_BYTES + SL_READING_BYTES * (uint32_t)(count) + SL_CRC_BYTES)
#define SL_BATCH_BYTES_MAX SL_BATCH_BYTES(SL_BATCH_COUNT_MAX) /* 786,456 */
/* The largest UDP payload is 65,507 bytes, so a datagram holds at most 5,455 readings. */
#define SL_UDP_PAYLOAD_MAX 65507u
#define SL_UDP_COUNT_MAX 5455u
#define SL_ACK_BYTES 32u

/* Wire offsets of the batch header (PROTOCOL.md, "Batch frame"). */
#define SL_BATCH_OFF_MAGIC 0
#define SL_BATCH_OFF_VERSION 4
#define SL_BATCH_OFF_FLAGS 5
#define SL_BATCH_OFF_COUNT 6
#define SL_BATCH_OFF_STREAM_ID 8
#define SL_BATCH_OFF_KEY_ID 12
#define SL_BATCH_OFF_BATCH_SEQ 16
#define SL_BATCH_OFF_BASE_TIME 24

/* Wire offsets of the ack frame (PROTOCOL.md, "Ack frame"). */
#define SL_ACK_OFF_MAGIC 0
#define SL_ACK_OFF_VERSION 4
#define SL_ACK_OFF_STATUS 5
#define SL_ACK_OFF_RESERVED 6
#define SL_ACK_OFF_STREAM_ID 8
#define SL_ACK_OFF_ACCEPTED 12
#define SL_ACK_OFF_BATCH_SEQ 16
#define SL_ACK_OFF_REJECTED 24
#define SL_ACK_OFF_CRC 28

/* Wire offsets inside one reading. */
#define SL_READING_OFF_SENSOR_ID 0
#define SL_READING_OFF_OFFSET_US 4
#define SL_READING_OFF_VALUE 8

#define SL_FLAG_ACK_REQUESTED 0x01u
#define SL_FLAGS_KNOWN SL_FLAG_ACK_REQUESTED

_Static_assert(SL_BATCH_BYTES(SL_UDP_COUNT_MAX) <= SL_UDP_PAYLOAD_MAX, "UDP count max fits a datagram");
_Static_assert(SL_BATCH_BYTES(SL_UDP_COUNT_MAX + 1) > SL_UDP_PAYLOAD_MAX, "UDP count max is the largest");
_Static_assert(SL_BATCH_BYTES_MAX == 786456u, "frame size of 65535 readings");

/* Ack status codes, as on the wire. */
enum sl_status {
    SL_STATUS_OK = 0,
    SL_STATUS_DUPLICATE = 1,
    SL_STATUS_BAD_CRC = 2,
    SL_STATUS_MALFORMED = 3,
    SL_STATUS_OVERLOADED = 4,
    SL_STATUS_UNAUTHORIZED = 5,
};
#define SL_STATUS_COUNT 6

/*
 * Why a frame was refused. The codec returns these negated. Each class is
 * distinguished so that metrics and logs can say exactly what was wrong;
 * sl_decode_status() maps a class to the ack status the spec requires.
 */
enum sl_decode_error {
    SL_DECODE_TRUNCATED = 1, /* fewer than the 32 header bytes */
    SL_DECODE_BAD_MAGIC = 2,
    SL_DECODE_BAD_VERSION = 3,
    SL_DECODE_BAD_FLAGS = 4,   /* a reserved flag bit is set */
    SL_DECODE_BAD_KEY_ID = 5,  /* key_id != 0 in version 1 */
    SL_DECODE_BAD_COUNT = 6,   /* count == 0 (a UDP count over 5,455 fails as BAD_LENGTH) */
    SL_DECODE_BAD_LENGTH = 7,  /* frame length != 36 + 12 x count */
    SL_DECODE_BAD_CRC = 8,
};
#define SL_DECODE_ERROR_COUNT 9 /* 1..8 used; index 0 unused */

/* Reasons a single reading is rejected inside an OK batch (PROTOCOL.md). */
enum sl_reject_reason {
    SL_REJECT_NONFINITE = 0,
    SL_REJECT_OUT_OF_ORDER = 1,
    SL_REJECT_FUTURE = 2,
    SL_REJECT_SENSOR_LIMIT = 3,
};
#define SL_REJECT_COUNT 4

struct sl_batch_header {
    uint8_t version;
    uint8_t flags;
    uint16_t count;
    uint32_t stream_id;
    uint32_t key_id;
    uint64_t batch_seq;
    int64_t base_time_us;
};

/* A decoded, validated frame. `readings` points into the caller's buffer. */
struct sl_batch {
    struct sl_batch_header header;
    const uint8_t *readings; /* header.count x SL_READING_BYTES bytes, wire layout */
};

struct sl_reading {
    uint32_t sensor_id;
    uint32_t offset_us;
    float value;
};

struct sl_ack {
    uint8_t status; /* enum sl_status */
    uint32_t stream_id;
    uint32_t accepted;
    uint64_t batch_seq;
    uint32_t rejected;
};

static inline uint16_t sl_load_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t sl_load_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline uint64_t sl_load_u64(const uint8_t *p)
{
    return (uint64_t)sl_load_u32(p) | ((uint64_t)sl_load_u32(p + 4) << 32);
}

static inline float sl_load_f32(const uint8_t *p)
{
    uint32_t bits = sl_load_u32(p);
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

/*
 * Stores go through htole + memcpy: one mov on a little-endian host (GCC 12
 * does not merge the byte-by-byte form into one store), and still correct on
 * a big-endian one.
 */
static inline void sl_store_u16(uint8_t *p, uint16_t v)
{
    uint16_t le = htole16(v);
    memcpy(p, &le, sizeof le);
}

static inline void sl_store_u32(uint8_t *p, uint32_t v)
{
    uint32_t le = htole32(v);
    memcpy(p, &le, sizeof le);
}

static inline void sl_store_u64(uint8_t *p, uint64_t v)
{
    uint64_t le = htole64(v);
    memcpy(p, &le, sizeof le);
}

static inline void sl_store_f32(uint8_t *p, float value)
{
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    sl_store_u32(p, bits);
}

/* Reading `index` of a decoded batch. Precondition: index < header.count. */
static inline void sl_batch_reading(const struct sl_batch *batch, uint32_t index,
                                    struct sl_reading *out)
{
    const uint8_t *p = batch->readings + (size_t)index * SL_READING_BYTES;
    out->sensor_id = sl_load_u32(p);
    out->offset_us = sl_load_u32(p + 4);
    out->value = sl_load_f32(p + 8);
}

/*
 * Validate the 32-byte header at `buf` (len >= SL_BATCH_HEADER_BYTES, else
 * -SL_DECODE_TRUNCATED): magic, version, flags, key_id and count != 0. Fills
 * *out even when a later field is bad, so a MALFORMED ack can echo the
 * stream_id and batch_seq. Returns 0 or a negated enum sl_decode_error.
 * TCP uses this to learn the frame length before the whole frame arrived.
 */
int sl_batch_header_decode(const uint8_t *buf, size_t len, struct sl_batch_header *out);

/*
 * Decode and validate one whole frame occupying exactly buf[0, len): the
 * header checks above, len == SL_BATCH_BYTES(count) (-SL_DECODE_BAD_LENGTH
 * when it differs, -SL_DECODE_TRUNCATED when len < 32), then the CRC.
 * On success out->readings points into buf. Returns 0 or a negated
 * enum sl_decode_error. Never reads outside buf[0, len).
 */
int sl_batch_decode(const uint8_t *buf, size_t len, struct sl_batch *out);

/*
 * Encode a frame into buf (capacity cap bytes) from a header and
 * header->count readings; the magic, version and CRC are filled in (the
 * header's version field is ignored). Returns the frame length, or 0 when
 * cap is too small or count is 0.
 */
size_t sl_batch_encode(uint8_t *buf, size_t cap, const struct sl_batch_header *header,
                       const struct sl_reading *readings);

/* Write the 32-byte ack frame for *ack into out, CRC included. */
void sl_ack_encode(uint8_t out[SL_ACK_BYTES], const struct sl_ack *ack);

/* Decode an ack: 0, or -SL_DECODE_TRUNCATED / -BAD_MAGIC / -BAD_VERSION / -BAD_CRC. */
int sl_ack_decode(const uint8_t *buf, size_t len, struct sl_ack *out);

/* The ack status a decode error must produce: BAD_CRC for a checksum, MALFORMED otherwise. */
enum sl_status sl_decode_status(int decode_error);

/*
 * Stable names for metrics and logs. Status names are the spec's ("OK",
 * "BAD_CRC", ...); decode errors are lower-case ("bad_magic", ...); reject
 * reasons are the spec's ("nonfinite", "out_of_order", "future", "sensor_limit").
 */
const char *sl_status_name(enum sl_status status);
const char *sl_decode_error_name(int decode_error);
const char *sl_reject_reason_name(enum sl_reject_reason reason);

#endif
