/* Prometheus remote write 1.0 messages (see promrw.h). */
#include "proto/promrw.h"

#include <string.h>

#include "core/assert.h"

enum { WIRE_VARINT = 0, WIRE_FIXED64 = 1, WIRE_BYTES = 2 };

static size_t varint_bytes(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

static uint8_t *put_tag(uint8_t *p, uint32_t field, uint32_t wire)
{
    return put_varint(p, (uint64_t)field << 3 | wire);
}

/* A length-delimited field's bytes: its one-byte tag (fields 1 and 2), the length, the payload. */
static size_t bytes_field(size_t payload)
{
    return 1 + varint_bytes(payload) + payload;
}

static size_t label_bytes(const struct sl_promrw_label *l)
{
    return bytes_field(l->name_len) + bytes_field(l->value_len);
}

/* Sample: value (fixed64, field 1) and timestamp (varint of the two's complement, field 2). */
static size_t sample_bytes(int64_t t_ms)
{
    return 1 + 8 + 1 + varint_bytes((uint64_t)t_ms);
}

/* TimeSeries' own payload (without its field 1 tag and length). */
static size_t series_payload(const struct sl_promrw_label *labels, uint32_t label_count,
                             const int64_t *times_ms, uint32_t samples)
{
    size_t n = 0;
    for (uint32_t i = 0; i < label_count; i++) {
        n += bytes_field(label_bytes(&labels[i]));
    }
    for (uint32_t i = 0; i < samples; i++) {
        n += bytes_field(sample_bytes(times_ms[i]));
    }
    return n;
}

size_t sl_promrw_series_bytes(const struct sl_promrw_label *labels, uint32_t label_count,
                              const double *values, const int64_t *times_ms, uint32_t samples)
{
    (void)values;
    return bytes_field(series_payload(labels, label_count, times_ms, samples));
}

static uint8_t *put_bytes(uint8_t *p, uint32_t field, const char *data, size_t len)
{
    p = put_tag(p, field, WIRE_BYTES);
    p = put_varint(p, len);
    if (len > 0) {
        memcpy(p, data, len);
    }
    return p + len;
}

size_t sl_promrw_put_series(uint8_t *out, size_t cap, const struct sl_promrw_label *labels,
                            uint32_t label_count, const double *values, const int64_t *times_ms,
                            uint32_t samples)
{
    size_t payload = series_payload(labels, label_count, times_ms, samples);
    size_t total = bytes_field(payload);
    if (total > cap) {
        return 0;
    }
    uint8_t *p = put_tag(out, 1, WIRE_BYTES);
    p = put_varint(p, payload);
    for (uint32_t i = 0; i < label_count; i++) {
        const struct sl_promrw_label *l = &labels[i];
        p = put_tag(p, 1, WIRE_BYTES);
        p = put_varint(p, label_bytes(l));
        p = put_bytes(p, 1, l->name, l->name_len);
        p = put_bytes(p, 2, l->value, l->value_len);
    }
    for (uint32_t i = 0; i < samples; i++) {
        p = put_tag(p, 2, WIRE_BYTES);
        p = put_varint(p, sample_bytes(times_ms[i]));
        p = put_tag(p, 1, WIRE_FIXED64);
        uint64_t bits;
        memcpy(&bits, &values[i], sizeof bits);
        for (uint32_t b = 0; b < 8; b++) {
            *p++ = (uint8_t)(bits >> (8 * b)); /* little-endian, as protobuf's fixed64 */
        }
        p = put_tag(p, 2, WIRE_VARINT);
        p = put_varint(p, (uint64_t)times_ms[i]);
    }
    SL_ASSERT((size_t)(p - out) == total);
    return total;
}
