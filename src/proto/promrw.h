/*
 * Prometheus remote write 1.0 messages, encoded by hand (issue 13's
 * `promrw://` output; docs/spec/UPLINK.md): the three messages a write
 * needs, in protobuf wire format, from prometheus/prompb/types.proto and
 * remote.proto:
 *
 *   WriteRequest { repeated TimeSeries timeseries = 1; }
 *   TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; }
 *   Label        { string name = 1; string value = 2; }
 *   Sample       { double value = 1; int64 timestamp = 2; }   (ms)
 *
 * A WriteRequest is its TimeSeries back to back, each as field 1
 * (length-delimited), so a request is built by appending series to a
 * buffer; sizes are computed first, so nothing is written twice and
 * nothing is allocated. Pure: no I/O, no global state. Labels must be
 * sorted by name with `__name__` first, as receivers expect (the caller's
 * job). Snappy compression of the request is the output's (libsnappy).
 */
#ifndef SL_PROTO_PROMRW_H
#define SL_PROTO_PROMRW_H

#include <stddef.h>
#include <stdint.h>

struct sl_promrw_label {
    const char *name;
    uint32_t name_len;
    const char *value;
    uint32_t value_len;
};

/* Bytes the TimeSeries takes in a WriteRequest, its field tag and length included. */
size_t sl_promrw_series_bytes(const struct sl_promrw_label *labels, uint32_t label_count,
                              const double *values, const int64_t *times_ms, uint32_t samples);

/*
 * Append one TimeSeries (field 1 of WriteRequest) to out[0, cap): the bytes
 * written (sl_promrw_series_bytes), or 0 when they do not fit (nothing
 * written).
 */
size_t sl_promrw_put_series(uint8_t *out, size_t cap, const struct sl_promrw_label *labels,
                            uint32_t label_count, const double *values, const int64_t *times_ms,
                            uint32_t samples);

#endif
