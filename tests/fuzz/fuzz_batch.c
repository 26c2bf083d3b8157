/*
 * libFuzzer target for the batch and ack decoders (src/proto/codec.c).
 *
 * Proves, on arbitrary bytes: the decoders never read outside the input (ASan
 * checks every access; each input sits in a heap block of exactly its
 * length), never trip UBSan, and agree with each other (header faults are
 * reported alike by the header and whole-frame decoders); and that decode and
 * encode are inverse: every accepted batch, read reading by reading and
 * encoded again, gives back the input byte for byte, and so does every
 * accepted ack whose reserved field is 0 (encode always writes 0 there).
 *
 * A random mutation almost never carries a valid CRC, so each input is also
 * tried twice more with the CRC patched in: once where a batch frame of that
 * length keeps it (the last 4 bytes) and once where an ack keeps it (bytes
 * 28..31). That lets the fuzzer reach everything behind the CRC check.
 *
 * Memory: a static buffer for the largest frame, and one heap copy of the
 * input per run (freed), so that ASan still sees the input's exact end.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/crc32c.h"
#include "sluice/protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static struct sl_reading readings[SL_BATCH_COUNT_MAX];
static uint8_t frame[SL_BATCH_BYTES_MAX];

static void fuzz_batch(const uint8_t *data, size_t size)
{
    struct sl_batch_header header;
    int header_rc = sl_batch_header_decode(data, size, &header);
    FUZZ_CHECK(header_rc <= 0 && header_rc >= -SL_DECODE_BAD_COUNT);

    struct sl_batch batch;
    int rc = sl_batch_decode(data, size, &batch);
    FUZZ_CHECK(rc <= 0 && rc >= -SL_DECODE_BAD_CRC);
    FUZZ_CHECK(sl_decode_error_name(rc) != NULL);
    FUZZ_CHECK(sl_decode_status(rc) == (rc == 0                    ? SL_STATUS_OK
                                        : rc == -SL_DECODE_BAD_CRC ? SL_STATUS_BAD_CRC
                                                                   : SL_STATUS_MALFORMED));
    if (header_rc != 0) {
        FUZZ_CHECK(rc == header_rc); /* header faults are reported the same way by both */
        return;
    }
    if (rc != 0) {
        FUZZ_CHECK(rc == -SL_DECODE_BAD_LENGTH || rc == -SL_DECODE_BAD_CRC);
        return;
    }
    FUZZ_CHECK(size == SL_BATCH_BYTES(batch.header.count));
    FUZZ_CHECK(batch.readings == data + SL_BATCH_HEADER_BYTES);
    FUZZ_CHECK(batch.header.batch_seq == header.batch_seq);
    FUZZ_CHECK(batch.header.stream_id == header.stream_id && batch.header.count == header.count);

    for (uint32_t i = 0; i < batch.header.count; i++) {
        sl_batch_reading(&batch, i, &readings[i]);
    }
    size_t bytes = sl_batch_encode(frame, sizeof frame, &batch.header, readings);
    FUZZ_CHECK(bytes == size);
    FUZZ_CHECK(memcmp(frame, data, size) == 0);
}

static void fuzz_ack(const uint8_t *data, size_t size)
{
    struct sl_ack ack;
    int rc = sl_ack_decode(data, size, &ack);
    FUZZ_CHECK(rc == 0 || rc == -SL_DECODE_TRUNCATED || rc == -SL_DECODE_BAD_MAGIC ||
               rc == -SL_DECODE_BAD_VERSION || rc == -SL_DECODE_BAD_CRC);
    FUZZ_CHECK(sl_status_name((enum sl_status)ack.status) != NULL);
    if (rc != 0) {
        return;
    }
    FUZZ_CHECK(size >= SL_ACK_BYTES);
    if (data[6] == 0 && data[7] == 0) {
        uint8_t out[SL_ACK_BYTES];
        sl_ack_encode(out, &ack);
        FUZZ_CHECK(memcmp(out, data, SL_ACK_BYTES) == 0);
    }
}

static void fuzz_one(const uint8_t *data, size_t size)
{
    fuzz_batch(data, size);
    fuzz_ack(data, size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_one(data, size);
    if (size < SL_ACK_BYTES) {
        return 0;
    }
    uint8_t *copy = malloc(size);
    FUZZ_CHECK(copy != NULL);
    if (size >= SL_BATCH_HEADER_BYTES + SL_CRC_BYTES) {
        memcpy(copy, data, size);
        sl_store_u32(copy + size - SL_CRC_BYTES, sl_crc32c(copy, size - SL_CRC_BYTES));
        fuzz_one(copy, size);
    }
    memcpy(copy, data, size);
    sl_store_u32(copy + SL_ACK_BYTES - SL_CRC_BYTES, sl_crc32c(copy, SL_ACK_BYTES - SL_CRC_BYTES));
    fuzz_one(copy, size);
    free(copy);
    return 0;
}
