/*
 * InfluxDB line protocol, one line at a time (docs/spec/LINE_PROTOCOL.md).
 *
 * Pure: no I/O, no allocation, no global state; the input is hostile and
 * is never read outside [p, p + n). A parsed line points into the caller's
 * buffer (spans of raw, still escaped bytes); numbers are converted while
 * parsing. The series name of a field, its canonical form (measurement,
 * tags sorted by unescaped key, field key, each minimally escaped), is
 * written by sl_line_series_prefix and sl_line_series_name into a buffer
 * the caller gives.
 *
 * Escapes, as the InfluxDB 1.x scanner reads them: a backslash and the byte
 * after it are taken as a pair. In a measurement the pairs `\,` and `\ `
 * stand for `,` and ` `; in tag keys, tag values and field keys `\,`, `\=`
 * and `\ `; in a string field value `\"` and `\\`. Any other pair is kept as
 * it is (both bytes). A backslash as the last byte of a measurement, key or
 * tag value is an error (bad_escape).
 */
#ifndef SL_PROTO_LINE_H
#define SL_PROTO_LINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SL_LINE_TAGS_MAX 256u   /* tags a line (over: too_many_tags) */
#define SL_LINE_FIELDS_MAX 256u /* fields a line (over: too_many_fields) */
#define SL_LINE_NAME_MAX 1024u  /* bytes of a canonical series name (LINE_PROTOCOL.md) */
#define SL_LINE_FLOAT_TEXT_MAX 320u /* a float literal longer than this is a bad value */

enum sl_line_type {
    SL_LINE_FLOAT = 0,
    SL_LINE_INT = 1,
    SL_LINE_UINT = 2,
    SL_LINE_BOOL = 3,
    SL_LINE_STRING = 4,
};

/* What sl_line_parse returns: 0 parsed, 1 nothing to parse, or a negated error. */
#define SL_LINE_OK 0
#define SL_LINE_SKIP 1 /* a blank or comment line */
enum sl_line_error {
    SL_LINE_MISSING_MEASUREMENT = 1,
    SL_LINE_BAD_TAG = 2,
    SL_LINE_MISSING_FIELDS = 3,
    SL_LINE_BAD_FIELD = 4,
    SL_LINE_BAD_VALUE = 5,
    SL_LINE_UNTERMINATED_STRING = 6,
    SL_LINE_BAD_TIMESTAMP = 7,
    SL_LINE_TOO_MANY_TAGS = 8,
    SL_LINE_TOO_MANY_FIELDS = 9,
    SL_LINE_TRAILING_GARBAGE = 10,
    SL_LINE_BAD_ESCAPE = 11,
};
#define SL_LINE_ERROR_COUNT 12 /* 1..11 used */

/* Raw bytes of the input; `escaped` when they hold a backslash (so need unescaping). */
struct sl_line_span {
    const char *p;
    uint32_t n;
    bool escaped;
};

struct sl_line_tag {
    struct sl_line_span key;
    struct sl_line_span value;
};

struct sl_line_field {
    struct sl_line_span key;
    struct sl_line_span text; /* the value as written (a string: between the quotes) */
    enum sl_line_type type;
    float value;     /* float, int, uint, bool: the nearest f32 (bool: 1 or 0) */
    int64_t integer; /* SL_LINE_INT: exact */
    uint64_t uinteger; /* SL_LINE_UINT: exact */
};

/* One parsed line: about 22 KiB, so keep one per thread, not one per line. */
struct sl_line {
    struct sl_line_span measurement;
    uint32_t tag_count;
    uint32_t field_count;
    bool has_time;
    int64_t time; /* as written, in the request's precision */
    struct sl_line_tag tags[SL_LINE_TAGS_MAX];
    struct sl_line_field fields[SL_LINE_FIELDS_MAX];
};

/*
 * Parse one line, without its '\n' (a trailing '\r' is dropped). Returns
 * SL_LINE_OK, SL_LINE_SKIP or a negated enum sl_line_error; on an error *out
 * holds what was parsed up to it.
 */
int sl_line_parse(const char *p, size_t n, struct sl_line *out);

/* "missing_measurement", "bad_tag", ... for a negated or positive error code. */
const char *sl_line_error_name(int error);

/* Where one line ends: the index of the next '\n' at or after `from`, or n. */
size_t sl_line_end(const char *p, size_t n, size_t from);

/* Unescaped bytes of a span into out (at least span.n bytes); returns the length. */
size_t sl_line_unescape_measurement(struct sl_line_span s, char *out);
size_t sl_line_unescape_key(struct sl_line_span s, char *out); /* tag keys, tag values, field keys */
size_t sl_line_unescape_string(struct sl_line_span s, char *out);

/*
 * The canonical name's prefix, shared by every field of the line: the
 * measurement and the tags sorted by unescaped key (stable), minimally
 * escaped. Returns its length, or -1 when it does not fit cap (or
 * SL_LINE_NAME_MAX). `order` is scratch of SL_LINE_TAGS_MAX entries.
 */
int sl_line_series_prefix(const struct sl_line *l, uint16_t *order, char *out, size_t cap);

/* Append " field_key" to a prefix of length prefix_len in out: the whole name's length, or -1. */
int sl_line_series_name(const struct sl_line *l, uint32_t field, char *out, size_t prefix_len,
                        size_t cap);

/* Timestamp precision of a request. */
enum sl_line_precision {
    SL_LINE_NS = 0,
    SL_LINE_US = 1,
    SL_LINE_MS = 2,
    SL_LINE_S = 3,
    SL_LINE_M = 4,
    SL_LINE_H = 5,
};

/* "n", "ns", "u", "us", "ms", "s", "m", "h" (NULL or "": ns). 0, or -1 for anything else. */
int sl_line_precision_parse(const char *text, enum sl_line_precision *out);

/* A timestamp in precision p to microseconds, rounding toward minus infinity. 0, or -1 on overflow. */
int sl_line_time_us(int64_t t, enum sl_line_precision p, int64_t *out);

#endif
