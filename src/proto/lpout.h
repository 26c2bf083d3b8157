/*
 * The uplink's text encoders (issue 13; docs/spec/UPLINK.md, "Names
 * upstream"): a stored reading (sensor id, time in microseconds, f32 value)
 * as one line of InfluxDB line protocol, and a series' canonical name
 * (LINE_PROTOCOL.md) taken apart again for Prometheus remote write, where a
 * series is a metric name and labels.
 *
 * Why here: the uplink formats about 2 M readings a second on one core, so
 * the float is printed by a shortest round-trip algorithm (Ryu, for f32)
 * instead of a loop of snprintf and strtof, and a named reading costs two
 * copies of its name's halves and no parsing beyond finding the space that
 * ends the series part.
 *
 * A canonical name is `measurement[,key=value...] field`: tags sorted by
 * key, ONE space, the field key, each part minimally escaped as line.c
 * writes it (measurement: `\,` `\ `; keys, values, field: `\,` `\=` `\ `;
 * any other backslash pair kept as both bytes). A numbered sensor (no name)
 * goes as measurement `sluice`, tag `sensor=<id>`, field `value`.
 *
 * Pure: no I/O, no allocation, no global state; every function may be
 * called from any thread. Outputs go to buffers the caller gives; nothing is
 * written past a given capacity.
 */
#ifndef SL_PROTO_LPOUT_H
#define SL_PROTO_LPOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/line.h"
#include "proto/promrw.h"

#define SL_LPOUT_F32_MAX 32u               /* bytes sl_lpout_f32 may write (it writes at most 15) */
#define SL_LPOUT_TAGS_MAX SL_LINE_TAGS_MAX /* tags of a split name (a line has no more) */
#define SL_LPOUT_EXTRA_MAX 64u /* extra labels sl_lpout_labels takes (--uplink-tag); 16 B each */
#define SL_LPOUT_LABELS_MAX (1u + SL_LPOUT_TAGS_MAX + SL_LPOUT_EXTRA_MAX) /* __name__, tags, extra */

/*
 * The shortest decimal that reads back (strtof, or strtod then a cast to
 * float) as exactly v; of several that short, the nearest to v (ties: even
 * digit). Laid out as printf's "%.<n>g" lays out n digits: `21.5`, `1`,
 * `-0`, `0.001`, `1e+20`, `1.5e-07`, all valid line protocol floats. NaN and
 * infinities (the store rejects them, so they never come) are written `0`.
 * Returns the bytes written (1 to 15); no NUL is added.
 */
size_t sl_lpout_f32(char out[SL_LPOUT_F32_MAX], float v);

/*
 * One reading as a line of line protocol, '\n' included, into out[0, cap):
 *   named (name != NULL):  <series part><extra> <field>=<v> <t_us>\n
 *   numbered (name NULL):  sluice,sensor=<sensor_id><extra> value=<v> <t_us>\n
 * where the series part is the canonical name up to its first unescaped
 * space and <field> the rest. `extra_tags` (extra_len bytes, may be 0) is
 * `,key=value...` as sl_lpout_tags renders it. Times are microseconds (the
 * request says precision=u); negative ones are written as they are.
 * Returns the bytes written, or 0 when they do not fit cap or the name has
 * no unescaped space (it is not a canonical name); then out is unspecified.
 */
size_t sl_lpout_line(char *out, size_t cap, const char *name, uint32_t name_len, uint32_t sensor_id,
                     const char *extra_tags, uint32_t extra_len, int64_t t_us, float v);

/*
 * The same line with the time in nanoseconds (t_us x 1000, written as the
 * microseconds' digits and "000"): the mqtt:// output's `line` format, which
 * MQTT.md's subscriber reads at nanosecond precision. A time beyond
 * +-9,223,372,036,854,775 us (before 1677 or after 2262) does not fit an
 * int64 of nanoseconds; it is written all the same (a reader refuses it).
 */
size_t sl_lpout_line_ns(char *out, size_t cap, const char *name, uint32_t name_len,
                        uint32_t sensor_id, const char *extra_tags, uint32_t extra_len,
                        int64_t t_us, float v);

/*
 * Extra tags (`--uplink-tag KEY=VALUE`, in the order given) rendered once
 * for sl_lpout_line: `,key=value` for each, with `,` `=` and space
 * backslash-escaped. Returns the length, or -1 when it does not fit cap or a
 * key or value cannot be written so that line protocol reads it back: empty,
 * holding a newline, or a backslash that is last or before `,` `=` or space
 * (the reader would take the pair as an escape). keys[i] and values[i] are
 * NUL-terminated.
 */
int sl_lpout_tags(char *out, size_t cap, const char *const *keys, const char *const *values,
                  uint32_t n);

/* Bytes of a name's part, unescaped: not NUL-terminated. */
struct sl_lpout_str {
    const char *p;
    uint32_t n;
};

struct sl_lpout_tag {
    struct sl_lpout_str key;
    struct sl_lpout_str value;
};

/* A canonical name taken apart: about 8 KiB, keep one per thread. Points into the caller's scratch. */
struct sl_lpout_parts {
    struct sl_lpout_str measurement;
    struct sl_lpout_str field;
    uint32_t tag_count;
    struct sl_lpout_tag tags[SL_LPOUT_TAGS_MAX];
};

/*
 * Split a canonical name into its measurement, tags (in the name's order)
 * and field, each unescaped as sl_line_unescape_measurement and
 * sl_line_unescape_key unescape the raw spans of a line (so `\\` stays two
 * bytes, as in InfluxDB). The unescaped bytes go to scratch; scratch_cap >=
 * len always suffices. Returns 0, -EINVAL when the name is not canonical
 * (an empty part, a tag without `=`, no space, a backslash as the last byte
 * of a part, an unescaped separator in the field), -E2BIG over
 * SL_LPOUT_TAGS_MAX tags, -ENOSPC when scratch is too small.
 */
int sl_lpout_split(const char *name, uint32_t len, struct sl_lpout_parts *out, char *scratch,
                   size_t scratch_cap);

/*
 * The parts of a numbered sensor: measurement `sluice`, tag `sensor=<id>`,
 * field `value`; the id's digits go to scratch (10 bytes suffice). 0, or
 * -ENOSPC.
 */
int sl_lpout_numbered(uint32_t sensor_id, struct sl_lpout_parts *out, char *scratch,
                      size_t scratch_cap);

/*
 * Where Prometheus names are concerned, VictoriaMetrics' mapping of line
 * protocol (app/vminsert/influx, lib/promrelabel): the metric is
 * `<measurement>_<field>` and the tags are labels, kept byte for byte
 * (`cpu.load_user{host.name="a"}` is a valid VictoriaMetrics series). With
 * SL_LPOUT_PROM_NAMES, as VictoriaMetrics' -usePromCompatibleNaming, every
 * character (UTF-8 sequence, or byte that is not one) of the metric name
 * outside [a-zA-Z0-9_:], and of a label name outside [a-zA-Z0-9_], becomes
 * one `_`; a leading digit stays (VictoriaMetrics does not fix it either).
 */
#define SL_LPOUT_PROM_NAMES 1u

/* `<measurement>_<field>` into out[0, cap): the bytes written, or 0 when they do not fit. */
size_t sl_lpout_metric_name(char *out, size_t cap, const struct sl_lpout_parts *parts,
                            uint32_t flags);

/*
 * The labels of one series for sl_promrw_put_series, into out[0, cap):
 * `__name__` = metric first, then the parts' tags and the extra labels
 * (`--uplink-tag`, unescaped), sorted by name (bytewise). When two have the
 * same name the series' own tag wins over an extra one, the first of the
 * series' own wins over a later one, and none may replace `__name__`
 * (Prometheus rejects duplicate names; external labels never override
 * a series' own). Labels with an empty value are left out (Prometheus reads
 * an empty label as no label). With SL_LPOUT_PROM_NAMES label names are
 * sanitized into scratch (scratch_cap >= the names' total bytes suffices).
 * The labels point into parts, extra, metric and scratch. Returns the count
 * of labels, -E2BIG over SL_LPOUT_EXTRA_MAX extra labels, -ENOSPC when
 * cap or scratch is too small (cap >= 1 + tag_count + extra_count, at most
 * SL_LPOUT_LABELS_MAX, always suffices). The sort is an insertion sort:
 * series have a few tags, and the worst case is bounded by the maximum.
 */
int sl_lpout_labels(struct sl_promrw_label *out, uint32_t cap, const char *metric,
                    uint32_t metric_len, const struct sl_lpout_parts *parts,
                    const struct sl_promrw_label *extra, uint32_t extra_count, uint32_t flags,
                    char *scratch, size_t scratch_cap);

#endif
