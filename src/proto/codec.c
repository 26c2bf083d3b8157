/*
 * The native protocol codec: batch and ack frames to and from bytes.
 *
 * What: decoding and validation of batch frames (the ingest path's first step
 * for every datagram and every TCP frame), encoding of batch frames (the load
 * generator, client libraries, tests) and of ack frames (the gateway), and the
 * stable names used by metrics and logs. The contract is
 * docs/spec/PROTOCOL.md and include/sluice/protocol.h.
 *
 * How: every field is read with the explicit little-endian loads of
 * protocol.h; packet bytes are never cast to structs. Length is checked
 * before any byte is read, and a batch is validated in a fixed order so that
 * each refused frame has exactly one, predictable reason: length >= 32
 * (TRUNCATED), magic, version, flags (a bit other than ACK_REQUESTED), key_id
 * (must be 0), count (must be >= 1), then, for a whole frame, the exact length
 * 36 + 12 x count (BAD_LENGTH, whether short or long), then the CRC. The CRC
 * comes last because it is the only check that costs O(len).
 *
 * Memory: none. No allocation, no global state; a decoded batch points into
 * the caller's buffer, which must outlive it.
 *
 * Threads: any; every function is pure.
 *
 * Invariants: never reads outside buf[0, len); a successful decode means the
 * frame is exactly SL_BATCH_BYTES(count) bytes with a matching CRC, so
 * sl_batch_reading() may read every index < count; encoding a decoded frame
 * reproduces its bytes exactly.
 */
#include "sluice/protocol.h"

#include <stdbool.h>

#include "core/assert.h"
#include "core/crc32c.h"

_Static_assert(SL_BATCH_OFF_BASE_TIME + 8 == SL_BATCH_HEADER_BYTES, "batch header layout");
_Static_assert(SL_ACK_OFF_CRC + SL_CRC_BYTES == SL_ACK_BYTES, "ack layout");
_Static_assert(SL_READING_BYTES == 4 + 4 + 4, "reading layout: sensor_id, offset_us, value");
_Static_assert(sizeof(float) == 4, "readings carry IEEE-754 binary32");
_Static_assert(SL_BATCH_COUNT_MAX == UINT16_MAX, "count is a u16 on the wire");

static bool magic_ok(const uint8_t *p, uint8_t third)
{
    return p[0] == SL_BATCH_MAGIC_0 && p[1] == SL_BATCH_MAGIC_1 && p[2] == third &&
           p[3] == SL_BATCH_MAGIC_3;
}

static void store_magic(uint8_t *p, uint8_t third)
{
    p[0] = SL_BATCH_MAGIC_0;
    p[1] = SL_BATCH_MAGIC_1;
    p[2] = third;
    p[3] = SL_BATCH_MAGIC_3;
}

/* A u64 wire value as the i64 it encodes (two's complement), without implementation-defined casts.
 */
static int64_t load_i64(const uint8_t *p)
{
    uint64_t bits = sl_load_u64(p);
    int64_t value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

static void store_i64(uint8_t *p, int64_t value)
{
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    sl_store_u64(p, bits);
}

int sl_batch_header_decode(const uint8_t *buf, size_t len, struct sl_batch_header *out)
{
    SL_ASSERT(out != NULL);
    if (len < SL_BATCH_HEADER_BYTES) {
        memset(out, 0, sizeof *out);
        return -SL_DECODE_TRUNCATED;
    }
    SL_ASSERT(buf != NULL);
    /* Fill every field first, so that a MALFORMED ack can echo stream_id and batch_seq. */
    out->version = buf[SL_BATCH_OFF_VERSION];
    out->flags = buf[SL_BATCH_OFF_FLAGS];
    out->count = sl_load_u16(buf + SL_BATCH_OFF_COUNT);
    out->stream_id = sl_load_u32(buf + SL_BATCH_OFF_STREAM_ID);
    out->key_id = sl_load_u32(buf + SL_BATCH_OFF_KEY_ID);
    out->batch_seq = sl_load_u64(buf + SL_BATCH_OFF_BATCH_SEQ);
    out->base_time_us = load_i64(buf + SL_BATCH_OFF_BASE_TIME);

    if (!magic_ok(buf + SL_BATCH_OFF_MAGIC, SL_BATCH_MAGIC_2)) {
        return -SL_DECODE_BAD_MAGIC;
    }
    if (out->version != SL_PROTOCOL_VERSION) {
        return -SL_DECODE_BAD_VERSION;
    }
    if ((out->flags & ~SL_FLAGS_KNOWN) != 0) {
        return -SL_DECODE_BAD_FLAGS;
    }
    if (out->key_id != 0) {
        return -SL_DECODE_BAD_KEY_ID;
    }
    if (out->count == 0) {
        return -SL_DECODE_BAD_COUNT;
    }
    return 0;
}

int sl_batch_decode(const uint8_t *buf, size_t len, struct sl_batch *out)
{
    SL_ASSERT(out != NULL);
    out->readings = NULL;
    int rc = sl_batch_header_decode(buf, len, &out->header);
    if (rc != 0) {
        return rc;
    }
    size_t frame_bytes = SL_BATCH_BYTES(out->header.count);
    if (len != frame_bytes) {
        return -SL_DECODE_BAD_LENGTH;
    }
    size_t crc_at = frame_bytes - SL_CRC_BYTES;
    if (sl_crc32c(buf, crc_at) != sl_load_u32(buf + crc_at)) {
        return -SL_DECODE_BAD_CRC;
    }
    out->readings = buf + SL_BATCH_HEADER_BYTES;
    return 0;
}

size_t sl_batch_encode(uint8_t *buf, size_t cap, const struct sl_batch_header *header,
                       const struct sl_reading *readings)
{
    SL_ASSERT(header != NULL);
    uint32_t count = header->count;
    size_t frame_bytes = SL_BATCH_BYTES(count);
    if (count == 0 || cap < frame_bytes) {
        return 0;
    }
    SL_ASSERT(buf != NULL);
    SL_ASSERT(readings != NULL);

    /* Flags and key_id are written as given, so tests can build frames the decoder refuses. */
    store_magic(buf + SL_BATCH_OFF_MAGIC, SL_BATCH_MAGIC_2);
    buf[SL_BATCH_OFF_VERSION] = SL_PROTOCOL_VERSION;
    buf[SL_BATCH_OFF_FLAGS] = header->flags;
    sl_store_u16(buf + SL_BATCH_OFF_COUNT, header->count);
    sl_store_u32(buf + SL_BATCH_OFF_STREAM_ID, header->stream_id);
    sl_store_u32(buf + SL_BATCH_OFF_KEY_ID, header->key_id);
    sl_store_u64(buf + SL_BATCH_OFF_BATCH_SEQ, header->batch_seq);
    store_i64(buf + SL_BATCH_OFF_BASE_TIME, header->base_time_us);

    uint8_t *p = buf + SL_BATCH_HEADER_BYTES;
    for (uint32_t i = 0; i < count; i++) {
        sl_store_u32(p, readings[i].sensor_id);
        sl_store_u32(p + 4, readings[i].offset_us);
        sl_store_f32(p + 8, readings[i].value);
        p += SL_READING_BYTES;
    }
    size_t crc_at = frame_bytes - SL_CRC_BYTES;
    SL_ASSERT((size_t)(p - buf) == crc_at);
    sl_store_u32(buf + crc_at, sl_crc32c(buf, crc_at));
    return frame_bytes;
}

void sl_ack_encode(uint8_t out[SL_ACK_BYTES], const struct sl_ack *ack)
{
    SL_ASSERT(out != NULL);
    SL_ASSERT(ack != NULL);
    store_magic(out + SL_ACK_OFF_MAGIC, SL_ACK_MAGIC_2);
    out[SL_ACK_OFF_VERSION] = SL_PROTOCOL_VERSION;
    out[SL_ACK_OFF_STATUS] = ack->status;
    sl_store_u16(out + SL_ACK_OFF_RESERVED, 0);
    sl_store_u32(out + SL_ACK_OFF_STREAM_ID, ack->stream_id);
    sl_store_u32(out + SL_ACK_OFF_ACCEPTED, ack->accepted);
    sl_store_u64(out + SL_ACK_OFF_BATCH_SEQ, ack->batch_seq);
    sl_store_u32(out + SL_ACK_OFF_REJECTED, ack->rejected);
    sl_store_u32(out + SL_ACK_OFF_CRC, sl_crc32c(out, SL_ACK_OFF_CRC));
}

/*
 * Decodes the first SL_ACK_BYTES of buf; bytes beyond them are not looked at,
 * so a sender may pass its whole receive buffer. The status byte and the
 * reserved field are not judged here (the CRC covers them): an unknown status
 * is the caller's to handle.
 */
int sl_ack_decode(const uint8_t *buf, size_t len, struct sl_ack *out)
{
    SL_ASSERT(out != NULL);
    if (len < SL_ACK_BYTES) {
        memset(out, 0, sizeof *out);
        return -SL_DECODE_TRUNCATED;
    }
    SL_ASSERT(buf != NULL);
    out->status = buf[SL_ACK_OFF_STATUS];
    out->stream_id = sl_load_u32(buf + SL_ACK_OFF_STREAM_ID);
    out->accepted = sl_load_u32(buf + SL_ACK_OFF_ACCEPTED);
    out->batch_seq = sl_load_u64(buf + SL_ACK_OFF_BATCH_SEQ);
    out->rejected = sl_load_u32(buf + SL_ACK_OFF_REJECTED);

    if (!magic_ok(buf + SL_ACK_OFF_MAGIC, SL_ACK_MAGIC_2)) {
        return -SL_DECODE_BAD_MAGIC;
    }
    if (buf[SL_ACK_OFF_VERSION] != SL_PROTOCOL_VERSION) {
        return -SL_DECODE_BAD_VERSION;
    }
    if (sl_crc32c(buf, SL_ACK_OFF_CRC) != sl_load_u32(buf + SL_ACK_OFF_CRC)) {
        return -SL_DECODE_BAD_CRC;
    }
    return 0;
}

/*
 * The codec returns errors negated; callers may pass the return code as is
 * or its magnitude. Anything outside 1..8 becomes 0 (unknown).
 */
static int decode_error_index(int decode_error)
{
    if (decode_error < 0) {
        if (decode_error < -(SL_DECODE_ERROR_COUNT - 1)) {
            return 0;
        }
        decode_error = -decode_error;
    }
    if (decode_error >= SL_DECODE_ERROR_COUNT) {
        return 0;
    }
    return decode_error;
}

enum sl_status sl_decode_status(int decode_error)
{
    if (decode_error == 0) {
        return SL_STATUS_OK; /* not an error: the frame decoded */
    }
    /* Anything that is not a checksum failure, known or not, is refused as MALFORMED. */
    if (decode_error_index(decode_error) == SL_DECODE_BAD_CRC) {
        return SL_STATUS_BAD_CRC;
    }
    return SL_STATUS_MALFORMED;
}

static const char *const status_names[SL_STATUS_COUNT] = {
    [SL_STATUS_OK] = "OK",
    [SL_STATUS_DUPLICATE] = "DUPLICATE",
    [SL_STATUS_BAD_CRC] = "BAD_CRC",
    [SL_STATUS_MALFORMED] = "MALFORMED",
    [SL_STATUS_OVERLOADED] = "OVERLOADED",
    [SL_STATUS_UNAUTHORIZED] = "UNAUTHORIZED",
};

static const char *const decode_error_names[SL_DECODE_ERROR_COUNT] = {
    [0] = "unknown",
    [SL_DECODE_TRUNCATED] = "truncated",
    [SL_DECODE_BAD_MAGIC] = "bad_magic",
    [SL_DECODE_BAD_VERSION] = "bad_version",
    [SL_DECODE_BAD_FLAGS] = "bad_flags",
    [SL_DECODE_BAD_KEY_ID] = "bad_key_id",
    [SL_DECODE_BAD_COUNT] = "bad_count",
    [SL_DECODE_BAD_LENGTH] = "bad_length",
    [SL_DECODE_BAD_CRC] = "bad_crc",
};

static const char *const reject_reason_names[SL_REJECT_COUNT] = {
    [SL_REJECT_NONFINITE] = "nonfinite",
    [SL_REJECT_OUT_OF_ORDER] = "out_of_order",
    [SL_REJECT_FUTURE] = "future",
    [SL_REJECT_SENSOR_LIMIT] = "sensor_limit",
};

const char *sl_status_name(enum sl_status status)
{
    /* The enum may hold any int the caller cast into it (e.g. a status byte off the wire). */
    unsigned index = (unsigned)status;
    if (index >= SL_STATUS_COUNT) {
        return "unknown";
    }
    return status_names[index];
}

const char *sl_decode_error_name(int decode_error)
{
    return decode_error_names[decode_error_index(decode_error)];
}

const char *sl_reject_reason_name(enum sl_reject_reason reason)
{
    unsigned index = (unsigned)reason;
    if (index >= SL_REJECT_COUNT) {
        return "unknown";
    }
    return reject_reason_names[index];
}
