/*
 * Proves that the codec implements docs/spec/PROTOCOL.md byte for byte:
 * - every spec vector decodes to exactly the values of the spec's table, and
 *   re-encodes to the identical bytes (batches and acks);
 * - the acks the spec describes encode to ack_ok.bin and ack_nan.bin;
 * - batch_badcrc.bin is refused as BAD_CRC, and every malformed class is
 *   told apart (magic, version, flags, key_id, count 0, length short or long
 *   by one, truncated at every length 0..35), in the spec's order when
 *   several fields are bad at once, and for every single-bit flip;
 * - the header decoder fills stream_id and batch_seq even for a bad frame;
 * - the count boundaries (1, the UDP maximum 5455, 65535) encode and decode,
 *   and encode refuses count 0 and a buffer one byte short;
 * - acks decode, and corrupted or truncated acks are refused;
 * - names of statuses, decode errors and reject reasons are the spec's.
 */
#include "sluice/protocol.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "core/crc32c.h"
#include "testlib.h"

#define CHECK_STR(a, b) CHECK(strcmp((a), (b)) == 0)

#define VECTOR_CAP 256
#define BASE_OK_US 1700000000000000ll
#define BASE_NAN_US 1700000000003000ll

struct vector {
    uint8_t bytes[VECTOR_CAP];
    size_t len;
};

static struct vector batch_ok, batch_nan, batch_badcrc, ack_ok, ack_nan;

/* Large frames live in static storage: no allocation, and no large stack frames. */
static uint8_t big_frame[SL_BATCH_BYTES_MAX + 1];
static uint8_t big_frame_2[SL_BATCH_BYTES_MAX];
static struct sl_reading big_readings[SL_BATCH_COUNT_MAX];

static void load_vector(const char *name, struct vector *v)
{
    char path[512];
    snprintf(path, sizeof path, "%s/vectors/%s", SL_SPEC_DIR, name);
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (f == NULL) {
        fprintf(stderr, "cannot open %s\n", path);
        v->len = 0;
        return;
    }
    v->len = fread(v->bytes, 1, sizeof v->bytes, f);
    CHECK(ferror(f) == 0);
    CHECK(v->len < sizeof v->bytes);
    fclose(f);
}

static uint32_t f32_bits(float value)
{
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    return bits;
}

/* Recompute the CRC of a frame of len bytes after a test changed a field. */
static void fix_crc(uint8_t *frame, size_t len)
{
    sl_store_u32(frame + len - SL_CRC_BYTES, sl_crc32c(frame, len - SL_CRC_BYTES));
}

static void check_reading(const struct sl_batch *batch, uint32_t index, uint32_t sensor_id,
                          uint32_t offset_us, float value)
{
    struct sl_reading r;
    sl_batch_reading(batch, index, &r);
    CHECK_EQ(r.sensor_id, sensor_id);
    CHECK_EQ(r.offset_us, offset_us);
    CHECK_EQ(f32_bits(r.value), f32_bits(value));
}

/* Encode the decoded batch again and compare with the original bytes. */
static void check_reencode(const struct sl_batch *batch, const struct vector *v)
{
    struct sl_reading readings[8];
    CHECK(batch->header.count <= 8);
    if (batch->header.count > 8) {
        return;
    }
    for (uint32_t i = 0; i < batch->header.count; i++) {
        sl_batch_reading(batch, i, &readings[i]);
    }
    uint8_t out[VECTOR_CAP];
    memset(out, 0xAA, sizeof out);
    CHECK_EQ(sl_batch_encode(out, sizeof out, &batch->header, readings), v->len);
    CHECK(memcmp(out, v->bytes, v->len) == 0);
    CHECK_EQ(out[v->len], 0xAA); /* nothing written past the frame */
    /* Exactly enough room works; one byte less writes nothing and returns 0. */
    CHECK_EQ(sl_batch_encode(out, v->len, &batch->header, readings), v->len);
    memset(out, 0xAA, sizeof out);
    CHECK_EQ(sl_batch_encode(out, v->len - 1, &batch->header, readings), 0);
    CHECK_EQ(out[0], 0xAA);
}

static void test_batch_ok(void)
{
    struct sl_batch batch;
    CHECK_EQ(sl_batch_decode(batch_ok.bytes, batch_ok.len, &batch), 0);
    CHECK_EQ(batch_ok.len, 72);
    CHECK_EQ(batch_ok.len, SL_BATCH_BYTES(3));
    CHECK_EQ(batch.header.version, 1);
    CHECK_EQ(batch.header.flags, SL_FLAG_ACK_REQUESTED);
    CHECK_EQ(batch.header.count, 3);
    CHECK_EQ(batch.header.stream_id, 7);
    CHECK_EQ(batch.header.key_id, 0);
    CHECK_EQ(batch.header.batch_seq, 1);
    CHECK_EQ(batch.header.base_time_us, BASE_OK_US);
    CHECK(batch.readings == batch_ok.bytes + SL_BATCH_HEADER_BYTES);
    check_reading(&batch, 0, 1, 0, 21.5f);
    check_reading(&batch, 1, 2, 1000, -3.25f);
    check_reading(&batch, 2, 1, 2000, 22.0f);
    check_reencode(&batch, &batch_ok);

    struct sl_batch_header header;
    CHECK_EQ(sl_batch_header_decode(batch_ok.bytes, batch_ok.len, &header), 0);
    /* Field by field: the struct has padding, so memcmp would compare garbage. */
    CHECK(header.version == batch.header.version && header.flags == batch.header.flags &&
          header.count == batch.header.count && header.stream_id == batch.header.stream_id &&
          header.key_id == batch.header.key_id && header.batch_seq == batch.header.batch_seq &&
          header.base_time_us == batch.header.base_time_us);
    /* TCP learns the frame length from the header alone. */
    CHECK_EQ(sl_batch_header_decode(batch_ok.bytes, SL_BATCH_HEADER_BYTES, &header), 0);
    CHECK_EQ(SL_BATCH_BYTES(header.count), batch_ok.len);
}

static void test_batch_nan(void)
{
    struct sl_batch batch;
    CHECK_EQ(sl_batch_decode(batch_nan.bytes, batch_nan.len, &batch), 0);
    CHECK_EQ(batch_nan.len, 60);
    CHECK_EQ(batch.header.version, 1);
    CHECK_EQ(batch.header.flags, SL_FLAG_ACK_REQUESTED);
    CHECK_EQ(batch.header.count, 2);
    CHECK_EQ(batch.header.stream_id, 7);
    CHECK_EQ(batch.header.key_id, 0);
    CHECK_EQ(batch.header.batch_seq, 2);
    CHECK_EQ(batch.header.base_time_us, BASE_NAN_US);
    struct sl_reading r;
    sl_batch_reading(&batch, 0, &r);
    CHECK_EQ(r.sensor_id, 1);
    CHECK_EQ(r.offset_us, 0);
    CHECK(isnan(r.value));
    CHECK_EQ(f32_bits(r.value), 0x7FC00000u); /* the quiet NaN as the file holds it */
    check_reading(&batch, 1, 2, 0, 1.0f);
    check_reencode(&batch, &batch_nan);
}

static void check_ack_vector(const struct vector *v, const struct sl_ack *expect)
{
    uint8_t out[SL_ACK_BYTES];
    sl_ack_encode(out, expect);
    CHECK_EQ(v->len, SL_ACK_BYTES);
    CHECK(memcmp(out, v->bytes, SL_ACK_BYTES) == 0);

    struct sl_ack ack;
    memset(&ack, 0xEE, sizeof ack);
    CHECK_EQ(sl_ack_decode(v->bytes, v->len, &ack), 0);
    CHECK_EQ(ack.status, expect->status);
    CHECK_EQ(ack.stream_id, expect->stream_id);
    CHECK_EQ(ack.accepted, expect->accepted);
    CHECK_EQ(ack.batch_seq, expect->batch_seq);
    CHECK_EQ(ack.rejected, expect->rejected);
}

static void test_ack_vectors(void)
{
    struct sl_ack ok = {
        .status = SL_STATUS_OK, .stream_id = 7, .accepted = 3, .batch_seq = 1, .rejected = 0};
    struct sl_ack nan = {
        .status = SL_STATUS_OK, .stream_id = 7, .accepted = 1, .batch_seq = 2, .rejected = 1};
    check_ack_vector(&ack_ok, &ok);
    check_ack_vector(&ack_nan, &nan);
}

static void test_ack_corrupt(void)
{
    struct sl_ack ack;
    uint8_t buf[SL_ACK_BYTES + 1];
    for (size_t len = 0; len < SL_ACK_BYTES; len++) {
        CHECK_EQ(sl_ack_decode(ack_ok.bytes, len, &ack), -SL_DECODE_TRUNCATED);
    }
    CHECK_EQ(sl_ack_decode(NULL, 0, &ack), -SL_DECODE_TRUNCATED);

    /* Bytes after the first 32 are not part of the ack (a receive buffer may hold more). */
    memcpy(buf, ack_ok.bytes, SL_ACK_BYTES);
    buf[SL_ACK_BYTES] = 0x55;
    CHECK_EQ(sl_ack_decode(buf, sizeof buf, &ack), 0);
    CHECK_EQ(ack.accepted, 3);

    memcpy(buf, ack_ok.bytes, SL_ACK_BYTES);
    buf[2] = SL_BATCH_MAGIC_2; /* a batch's magic is not an ack's */
    fix_crc(buf, SL_ACK_BYTES);
    CHECK_EQ(sl_ack_decode(buf, SL_ACK_BYTES, &ack), -SL_DECODE_BAD_MAGIC);

    memcpy(buf, ack_ok.bytes, SL_ACK_BYTES);
    buf[4] = 2;
    fix_crc(buf, SL_ACK_BYTES);
    CHECK_EQ(sl_ack_decode(buf, SL_ACK_BYTES, &ack), -SL_DECODE_BAD_VERSION);
    CHECK_EQ(ack.stream_id, 7); /* fields are filled even when refused */

    memcpy(buf, ack_ok.bytes, SL_ACK_BYTES);
    buf[28] ^= 0x01;
    CHECK_EQ(sl_ack_decode(buf, SL_ACK_BYTES, &ack), -SL_DECODE_BAD_CRC);

    /* Every single-bit flip is refused, for the reason of the field it hits. */
    for (size_t bit = 0; bit < SL_ACK_BYTES * 8; bit++) {
        memcpy(buf, ack_nan.bytes, SL_ACK_BYTES);
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        int expect = bit / 8 < 4    ? -SL_DECODE_BAD_MAGIC
                     : bit / 8 == 4 ? -SL_DECODE_BAD_VERSION
                                    : -SL_DECODE_BAD_CRC;
        CHECK_EQ(sl_ack_decode(buf, SL_ACK_BYTES, &ack), expect);
    }

    /* Every status round-trips, and the reserved field is written as 0. */
    for (int status = 0; status < SL_STATUS_COUNT; status++) {
        struct sl_ack in = {.status = (uint8_t)status,
                            .stream_id = 0xFFFFFFFFu,
                            .accepted = 0x01020304u,
                            .batch_seq = UINT64_MAX,
                            .rejected = 0xA0B0C0D0u};
        sl_ack_encode(buf, &in);
        CHECK_EQ(buf[6], 0);
        CHECK_EQ(buf[7], 0);
        CHECK_EQ(sl_ack_decode(buf, SL_ACK_BYTES, &ack), 0);
        CHECK(ack.status == in.status && ack.stream_id == in.stream_id &&
              ack.accepted == in.accepted && ack.batch_seq == in.batch_seq &&
              ack.rejected == in.rejected);
    }
}

/* batch_ok with one header byte replaced and the CRC fixed, so only that field is wrong. */
static int decode_patched(size_t offset, uint8_t value, struct sl_batch_header *header)
{
    uint8_t frame[VECTOR_CAP];
    memcpy(frame, batch_ok.bytes, batch_ok.len);
    frame[offset] = value;
    fix_crc(frame, batch_ok.len);
    struct sl_batch batch;
    int rc = sl_batch_decode(frame, batch_ok.len, &batch);
    memset(header, 0xEE, sizeof *header); /* so that a field left unfilled shows */
    int header_rc = sl_batch_header_decode(frame, batch_ok.len, header);
    /* The header decoder agrees on every header fault. */
    CHECK(rc == header_rc || (header_rc == 0 && rc <= -SL_DECODE_BAD_LENGTH));
    return rc;
}

static void test_malformed_classes(void)
{
    struct sl_batch_header h;
    struct sl_batch batch;

    CHECK_EQ(sl_batch_decode(batch_badcrc.bytes, batch_badcrc.len, &batch), -SL_DECODE_BAD_CRC);
    CHECK(batch.readings == NULL);
    CHECK_EQ(sl_batch_header_decode(batch_badcrc.bytes, batch_badcrc.len, &h), 0);

    for (size_t i = 0; i < 4; i++) {
        CHECK_EQ(decode_patched(i, 0x00, &h), -SL_DECODE_BAD_MAGIC);
        CHECK_EQ(h.stream_id, 7);
        CHECK_EQ(h.batch_seq, 1);
    }
    CHECK_EQ(decode_patched(2, SL_ACK_MAGIC_2, &h), -SL_DECODE_BAD_MAGIC); /* an ack is no batch */
    CHECK_EQ(decode_patched(4, 0, &h), -SL_DECODE_BAD_VERSION);
    CHECK_EQ(decode_patched(4, 2, &h), -SL_DECODE_BAD_VERSION);
    CHECK_EQ(decode_patched(4, 0xFF, &h), -SL_DECODE_BAD_VERSION);
    CHECK_EQ(h.stream_id, 7);
    CHECK_EQ(decode_patched(5, 0x00, &h), 0); /* ACK_REQUESTED is optional */
    for (int bit = 1; bit < 8; bit++) {
        CHECK_EQ(decode_patched(5, (uint8_t)(1u << bit), &h), -SL_DECODE_BAD_FLAGS);
        CHECK_EQ(decode_patched(5, (uint8_t)((1u << bit) | 1u), &h), -SL_DECODE_BAD_FLAGS);
    }
    CHECK_EQ(decode_patched(12, 1, &h), -SL_DECODE_BAD_KEY_ID);
    CHECK_EQ(decode_patched(15, 0x80, &h), -SL_DECODE_BAD_KEY_ID);
    /* The header decoder fills stream_id and batch_seq for a MALFORMED ack's echo. */
    CHECK_EQ(h.key_id, 0x80000000u);
    CHECK_EQ(h.stream_id, 7);
    CHECK_EQ(h.batch_seq, 1);
    CHECK_EQ(h.base_time_us, BASE_OK_US);
    CHECK_EQ(decode_patched(6, 0, &h), -SL_DECODE_BAD_COUNT);
    CHECK_EQ(h.stream_id, 7);
    CHECK_EQ(h.batch_seq, 1);

    /* A count that disagrees with the length (either way), and a length off by one. */
    CHECK_EQ(decode_patched(6, 2, &h), -SL_DECODE_BAD_LENGTH);
    CHECK_EQ(decode_patched(6, 4, &h), -SL_DECODE_BAD_LENGTH);
    uint8_t frame[VECTOR_CAP];
    memcpy(frame, batch_ok.bytes, batch_ok.len);
    frame[batch_ok.len] = 0;
    CHECK_EQ(sl_batch_decode(frame, batch_ok.len + 1, &batch), -SL_DECODE_BAD_LENGTH);
    CHECK_EQ(sl_batch_decode(frame, batch_ok.len - 1, &batch), -SL_DECODE_BAD_LENGTH);
    CHECK_EQ(sl_batch_header_decode(frame, batch_ok.len - 1, &h), 0);

    /* Every length below a whole frame: TRUNCATED below the header, BAD_LENGTH after it. */
    for (size_t len = 0; len < batch_ok.len; len++) {
        int expect = len < SL_BATCH_HEADER_BYTES ? -SL_DECODE_TRUNCATED : -SL_DECODE_BAD_LENGTH;
        CHECK_EQ(sl_batch_decode(batch_ok.bytes, len, &batch), expect);
        CHECK_EQ(sl_batch_header_decode(batch_ok.bytes, len, &h),
                 len < SL_BATCH_HEADER_BYTES ? -SL_DECODE_TRUNCATED : 0);
    }
    CHECK_EQ(sl_batch_decode(NULL, 0, &batch), -SL_DECODE_TRUNCATED);
    CHECK_EQ(sl_batch_header_decode(NULL, 0, &h), -SL_DECODE_TRUNCATED);
}

/* With several bad fields, the first in the spec's order is the one reported. */
static void test_validation_order(void)
{
    uint8_t frame[VECTOR_CAP];
    struct sl_batch batch;
    struct {
        uint8_t magic0, version, flags, key0, count0;
        size_t len;
        int expect;
    } cases[] = {
        {0x00, 2, 0x02, 1, 0, 71, -SL_DECODE_BAD_MAGIC},
        {'S', 2, 0x02, 1, 0, 71, -SL_DECODE_BAD_VERSION},
        {'S', 1, 0x02, 1, 0, 71, -SL_DECODE_BAD_FLAGS},
        {'S', 1, 0x01, 1, 0, 71, -SL_DECODE_BAD_KEY_ID},
        {'S', 1, 0x01, 0, 0, 71, -SL_DECODE_BAD_COUNT},
        {'S', 1, 0x01, 0, 3, 71, -SL_DECODE_BAD_LENGTH},
        {'S', 1, 0x01, 0, 3, 72, -SL_DECODE_BAD_CRC}, /* CRC left stale below */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(frame, batch_ok.bytes, batch_ok.len);
        frame[0] = cases[i].magic0;
        frame[4] = cases[i].version;
        frame[5] = cases[i].flags;
        frame[12] = cases[i].key0;
        frame[6] = cases[i].count0;
        frame[0x20] ^= 0x01; /* a reading changed: the stored CRC is now wrong */
        CHECK_EQ(sl_batch_decode(frame, cases[i].len, &batch), cases[i].expect);
    }
    /* Length is judged before the CRC even when only a trailing byte is missing. */
    CHECK_EQ(sl_batch_decode(batch_badcrc.bytes, batch_badcrc.len - 1, &batch),
             -SL_DECODE_BAD_LENGTH);
}

/* Every single-bit error in batch_ok is refused, with the class of the field it lands in. */
static void test_bit_flips(void)
{
    uint8_t frame[VECTOR_CAP];
    struct sl_batch batch;
    for (size_t bit = 0; bit < batch_ok.len * 8; bit++) {
        size_t byte = bit / 8;
        memcpy(frame, batch_ok.bytes, batch_ok.len);
        frame[byte] ^= (uint8_t)(1u << (bit % 8));
        int expect = -SL_DECODE_BAD_CRC;
        if (byte < 4) {
            expect = -SL_DECODE_BAD_MAGIC;
        } else if (byte == 4) {
            expect = -SL_DECODE_BAD_VERSION;
        } else if (byte == 5 && bit % 8 != 0) {
            expect = -SL_DECODE_BAD_FLAGS;
        } else if (byte == 6 || byte == 7) {
            expect = -SL_DECODE_BAD_LENGTH; /* count 3 never flips to 0 */
        } else if (byte >= 12 && byte < 16) {
            expect = -SL_DECODE_BAD_KEY_ID;
        }
        CHECK_EQ(sl_batch_decode(frame, batch_ok.len, &batch), expect);
    }
}

static void fill_readings(struct sl_reading *readings, uint32_t count, uint32_t salt)
{
    for (uint32_t i = 0; i < count; i++) {
        readings[i].sensor_id = i * 2654435761u + salt;
        readings[i].offset_us = i * 1000u;
        readings[i].value = (float)i * 0.5f - 100.0f;
    }
}

/* Encode `count` readings, decode them back and compare everything; returns the frame length. */
static size_t roundtrip_count(uint32_t count, int64_t base_time_us)
{
    struct sl_batch_header header = {.version = 0, /* ignored by encode */
                                     .flags = 0,
                                     .count = (uint16_t)count,
                                     .stream_id = 0xFFFFFFFFu,
                                     .key_id = 0,
                                     .batch_seq = UINT64_MAX - count,
                                     .base_time_us = base_time_us};
    fill_readings(big_readings, count, count);
    size_t bytes = sl_batch_encode(big_frame, sizeof big_frame, &header, big_readings);
    CHECK_EQ(bytes, SL_BATCH_BYTES(count));
    CHECK_EQ(big_frame[4], SL_PROTOCOL_VERSION);

    struct sl_batch batch;
    CHECK_EQ(sl_batch_decode(big_frame, bytes, &batch), 0);
    CHECK_EQ(batch.header.version, SL_PROTOCOL_VERSION);
    CHECK_EQ(batch.header.count, count);
    CHECK_EQ(batch.header.stream_id, header.stream_id);
    CHECK_EQ(batch.header.batch_seq == header.batch_seq, 1);
    CHECK_EQ(batch.header.base_time_us, base_time_us);
    bool same = true;
    for (uint32_t i = 0; i < count; i++) {
        struct sl_reading r;
        sl_batch_reading(&batch, i, &r);
        same = same && r.sensor_id == big_readings[i].sensor_id &&
               r.offset_us == big_readings[i].offset_us &&
               f32_bits(r.value) == f32_bits(big_readings[i].value);
    }
    CHECK(same);
    CHECK_EQ(sl_batch_decode(big_frame, bytes - 1, &batch), -SL_DECODE_BAD_LENGTH);
    big_frame[bytes] = 0;
    CHECK_EQ(sl_batch_decode(big_frame, bytes + 1, &batch), -SL_DECODE_BAD_LENGTH);

    /* Re-encoding the decoded readings reproduces the frame. */
    if (same) {
        CHECK_EQ(sl_batch_encode(big_frame_2, sizeof big_frame_2, &batch.header, big_readings),
                 bytes);
        CHECK(memcmp(big_frame, big_frame_2, bytes) == 0);
    }
    return bytes;
}

static void test_boundaries(void)
{
    CHECK_EQ(roundtrip_count(1, 0), 48);
    CHECK_EQ(roundtrip_count(2, -1), 60); /* before the epoch: base_time_us is signed */
    CHECK_EQ(roundtrip_count(SL_UDP_COUNT_MAX, INT64_MIN), 65496);
    CHECK(SL_BATCH_BYTES(SL_UDP_COUNT_MAX) <= SL_UDP_PAYLOAD_MAX);
    CHECK_EQ(roundtrip_count(SL_UDP_COUNT_MAX + 1, INT64_MAX), 65508);
    CHECK_EQ(roundtrip_count(SL_BATCH_COUNT_MAX, BASE_OK_US), 786456);

    /* The largest frame: the header decoder accepts count 65535 and names the length. */
    struct sl_batch_header h;
    CHECK_EQ(sl_batch_header_decode(big_frame, SL_BATCH_HEADER_BYTES, &h), 0);
    CHECK_EQ(h.count, SL_BATCH_COUNT_MAX);
    CHECK_EQ(SL_BATCH_BYTES(h.count), SL_BATCH_BYTES_MAX);

    /* Encode refuses count 0 and a buffer one byte short, writing nothing. */
    struct sl_batch_header zero = {.count = 0};
    struct sl_reading one = {.sensor_id = 1, .offset_us = 0, .value = 1.0f};
    uint8_t small[64];
    memset(small, 0xAA, sizeof small);
    CHECK_EQ(sl_batch_encode(small, sizeof small, &zero, &one), 0);
    CHECK_EQ(small[0], 0xAA);
    struct sl_batch_header max = {.count = SL_BATCH_COUNT_MAX};
    CHECK_EQ(sl_batch_encode(big_frame, SL_BATCH_BYTES_MAX - 1, &max, big_readings), 0);
    struct sl_batch_header single = {.count = 1, .flags = SL_FLAG_ACK_REQUESTED};
    CHECK_EQ(sl_batch_encode(small, 47, &single, &one), 0);
    CHECK_EQ(small[0], 0xAA);
    CHECK_EQ(sl_batch_encode(small, 48, &single, &one), 48);

    /* Encode writes flags and key_id as given; the decoder then refuses them. */
    struct sl_batch batch;
    struct sl_batch_header bad = {.count = 1, .flags = 0x80};
    CHECK_EQ(sl_batch_encode(small, sizeof small, &bad, &one), 48);
    CHECK_EQ(sl_batch_decode(small, 48, &batch), -SL_DECODE_BAD_FLAGS);
    bad.flags = 0;
    bad.key_id = 9;
    CHECK_EQ(sl_batch_encode(small, sizeof small, &bad, &one), 48);
    CHECK_EQ(sl_batch_decode(small, 48, &batch), -SL_DECODE_BAD_KEY_ID);
}

static void test_names(void)
{
    CHECK_STR(sl_status_name(SL_STATUS_OK), "OK");
    CHECK_STR(sl_status_name(SL_STATUS_DUPLICATE), "DUPLICATE");
    CHECK_STR(sl_status_name(SL_STATUS_BAD_CRC), "BAD_CRC");
    CHECK_STR(sl_status_name(SL_STATUS_MALFORMED), "MALFORMED");
    CHECK_STR(sl_status_name(SL_STATUS_OVERLOADED), "OVERLOADED");
    CHECK_STR(sl_status_name(SL_STATUS_UNAUTHORIZED), "UNAUTHORIZED");
    CHECK_STR(sl_status_name((enum sl_status)6), "unknown");
    CHECK_STR(sl_status_name((enum sl_status)255), "unknown");
    CHECK_STR(sl_status_name((enum sl_status) - 1), "unknown");

    static const char *const errors[] = {"truncated",  "bad_magic", "bad_version", "bad_flags",
                                         "bad_key_id", "bad_count", "bad_length",  "bad_crc"};
    for (int e = 1; e < SL_DECODE_ERROR_COUNT; e++) {
        /* The codec returns errors negated; either sign names the same class. */
        CHECK_STR(sl_decode_error_name(-e), errors[e - 1]);
        CHECK_STR(sl_decode_error_name(e), errors[e - 1]);
        CHECK_EQ(sl_decode_status(-e),
                 e == SL_DECODE_BAD_CRC ? SL_STATUS_BAD_CRC : SL_STATUS_MALFORMED);
        CHECK_EQ(sl_decode_status(e),
                 e == SL_DECODE_BAD_CRC ? SL_STATUS_BAD_CRC : SL_STATUS_MALFORMED);
    }
    CHECK_STR(sl_decode_error_name(0), "unknown");
    CHECK_STR(sl_decode_error_name(9), "unknown");
    CHECK_STR(sl_decode_error_name(-9), "unknown");
    CHECK_STR(sl_decode_error_name(-2147483647 - 1), "unknown");
    CHECK_EQ(sl_decode_status(0), SL_STATUS_OK);
    CHECK_EQ(sl_decode_status(-9), SL_STATUS_MALFORMED);

    CHECK_STR(sl_reject_reason_name(SL_REJECT_NONFINITE), "nonfinite");
    CHECK_STR(sl_reject_reason_name(SL_REJECT_OUT_OF_ORDER), "out_of_order");
    CHECK_STR(sl_reject_reason_name(SL_REJECT_FUTURE), "future");
    CHECK_STR(sl_reject_reason_name(SL_REJECT_SENSOR_LIMIT), "sensor_limit");
    CHECK_STR(sl_reject_reason_name((enum sl_reject_reason)4), "unknown");
    CHECK_STR(sl_reject_reason_name((enum sl_reject_reason) - 1), "unknown");
}

int main(void)
{
    load_vector("batch_ok.bin", &batch_ok);
    load_vector("batch_nan.bin", &batch_nan);
    load_vector("batch_badcrc.bin", &batch_badcrc);
    load_vector("ack_ok.bin", &ack_ok);
    load_vector("ack_nan.bin", &ack_nan);
    if (tl_failures != 0) {
        fprintf(stderr, "test_codec: cannot read the spec vectors in %s\n", SL_SPEC_DIR);
        return 1;
    }

    test_batch_ok();
    test_batch_nan();
    test_ack_vectors();
    test_ack_corrupt();
    test_malformed_classes();
    test_validation_order();
    test_bit_flips();
    test_boundaries();
    test_names();

    TEST_END("test_codec");
}
