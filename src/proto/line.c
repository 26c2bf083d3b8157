/*
 * InfluxDB line protocol parser (src/proto/line.h, docs/spec/LINE_PROTOCOL.md).
 *
 * One forward pass over the line: each section is scanned to its first
 * unescaped separator with a tight loop (a backslash skips the byte after
 * it), and every value is converted where it stands. A float whose decimal
 * mantissa is at most 2^24 and whose power of ten is within 10^-10..10^10
 * takes an exact fast path: one IEEE multiplication or division of two
 * exactly represented floats is the correctly rounded result (Clinger).
 * Any other literal is checked against the grammar and handed to strtof on a
 * bounded, NUL-terminated copy (correctly rounded in glibc; the process never
 * calls setlocale, so the C locale's '.' holds).
 *
 * Nothing is allocated; nothing outside [p, p + n) is read.
 */
#include "proto/line.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char *const error_names[SL_LINE_ERROR_COUNT] = {
    [0] = "ok",
    [SL_LINE_MISSING_MEASUREMENT] = "missing_measurement",
    [SL_LINE_BAD_TAG] = "bad_tag",
    [SL_LINE_MISSING_FIELDS] = "missing_fields",
    [SL_LINE_BAD_FIELD] = "bad_field",
    [SL_LINE_BAD_VALUE] = "bad_value",
    [SL_LINE_UNTERMINATED_STRING] = "unterminated_string",
    [SL_LINE_BAD_TIMESTAMP] = "bad_timestamp",
    [SL_LINE_TOO_MANY_TAGS] = "too_many_tags",
    [SL_LINE_TOO_MANY_FIELDS] = "too_many_fields",
    [SL_LINE_TRAILING_GARBAGE] = "trailing_garbage",
    [SL_LINE_BAD_ESCAPE] = "bad_escape",
};

const char *sl_line_error_name(int error)
{
    int e = error < 0 ? -error : error;
    return e > 0 && e < SL_LINE_ERROR_COUNT ? error_names[e] : "unknown";
}

size_t sl_line_end(const char *p, size_t n, size_t from)
{
    if (from >= n) {
        return n;
    }
    const char *nl = memchr(p + from, '\n', n - from);
    return nl == NULL ? n : (size_t)(nl - p);
}

/* ---------------------------------------------------------------- scanning */

/*
 * Scan from *i to the first unescaped byte that is a stop byte (stop1, stop2
 * or stop3) or to the end. Returns false on a backslash as the last byte.
 */
static inline bool scan(const char *p, size_t n, size_t *i, char stop1, char stop2, char stop3,
                        bool *escaped)
{
    size_t k = *i;
    while (k < n) {
        char c = p[k];
        if (c == '\\') {
            if (k + 1 >= n) {
                *i = k;
                return false;
            }
            *escaped = true;
            k += 2;
            continue;
        }
        if (c == stop1 || c == stop2 || c == stop3) {
            break;
        }
        k++;
    }
    *i = k;
    return true;
}

static inline size_t skip_spaces(const char *p, size_t n, size_t i)
{
    while (i < n && p[i] == ' ') {
        i++;
    }
    return i;
}

static struct sl_line_span span(const char *p, size_t from, size_t to, bool escaped)
{
    return (struct sl_line_span){.p = p + from, .n = (uint32_t)(to - from), .escaped = escaped};
}

/* ---------------------------------------------------------------- values */

static const float pow10f_exact[11] = {1e0f, 1e1f, 1e2f, 1e3f, 1e4f, 1e5f,
                                       1e6f, 1e7f, 1e8f, 1e9f, 1e10f};

static inline bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/*
 * A float literal: [-+]?(digits[.digits*]|.digits)([eE][-+]?digits)?
 * Returns false when the text is not one.
 */
static bool parse_float(const char *t, size_t n, float *out)
{
    size_t i = 0;
    bool negative = false;
    if (i < n && (t[i] == '-' || t[i] == '+')) {
        negative = t[i] == '-';
        i++;
    }
    uint64_t mantissa = 0;
    uint32_t significant = 0; /* digits counted into the mantissa (after leading zeros) */
    int32_t scale = 0;        /* power of ten to apply */
    bool overflowed = false;  /* more digits than the fast path takes */
    size_t int_digits = 0, frac_digits = 0;
    while (i < n && is_digit(t[i])) {
        if (mantissa == 0 && t[i] == '0') {
            /* a leading zero adds nothing */
        } else if (significant < 19) {
            mantissa = mantissa * 10 + (uint64_t)(t[i] - '0');
            significant++;
        } else {
            overflowed = true;
            scale++;
        }
        i++;
        int_digits++;
    }
    if (i < n && t[i] == '.') {
        i++;
        while (i < n && is_digit(t[i])) {
            if (mantissa == 0 && t[i] == '0') {
                scale--;
            } else if (significant < 19) {
                mantissa = mantissa * 10 + (uint64_t)(t[i] - '0');
                significant++;
                scale--;
            } else {
                overflowed = true;
            }
            i++;
            frac_digits++;
        }
    }
    if (int_digits == 0 && frac_digits == 0) {
        return false;
    }
    int64_t exponent = 0;
    if (i < n && (t[i] == 'e' || t[i] == 'E')) {
        i++;
        bool exp_negative = false;
        if (i < n && (t[i] == '-' || t[i] == '+')) {
            exp_negative = t[i] == '-';
            i++;
        }
        size_t exp_digits = 0;
        while (i < n && is_digit(t[i])) {
            if (exponent < 100000) {
                exponent = exponent * 10 + (t[i] - '0');
            }
            i++;
            exp_digits++;
        }
        if (exp_digits == 0) {
            return false;
        }
        exponent = exp_negative ? -exponent : exponent;
    }
    if (i != n) {
        return false;
    }
    int64_t e10 = exponent + scale;
    if (mantissa == 0) {
        *out = negative ? -0.0f : 0.0f;
        return true;
    }
    if (!overflowed && mantissa <= (1u << 24) && e10 >= -10 && e10 <= 10) {
        float f = (float)mantissa; /* exact */
        f = e10 >= 0 ? f * pow10f_exact[e10] : f / pow10f_exact[-e10];
        *out = negative ? -f : f;
        return true;
    }
    char copy[SL_LINE_FLOAT_TEXT_MAX + 1];
    if (n > SL_LINE_FLOAT_TEXT_MAX) {
        return false;
    }
    memcpy(copy, t, n);
    copy[n] = '\0';
    *out = strtof(copy, NULL); /* the grammar is checked: strtof takes all of it */
    return true;
}

/* digits (at least one) whose value is at most limit. */
static bool parse_digits(const char *t, size_t n, uint64_t limit, uint64_t *out)
{
    if (n == 0) {
        return false;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(t[i])) {
            return false;
        }
        uint64_t d = (uint64_t)(t[i] - '0');
        if (v > (limit - d) / 10) {
            return false;
        }
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* [-+]?digits that fit int64 (the text before the 'i'). */
static bool parse_int(const char *t, size_t n, int64_t *out)
{
    bool negative = n > 0 && t[0] == '-';
    size_t sign = n > 0 && (t[0] == '-' || t[0] == '+');
    uint64_t v;
    if (!parse_digits(t + sign, n - sign, negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, &v)) {
        return false;
    }
    *out = negative ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

/* digits that fit uint64 (the text before the 'u'). */
static bool parse_uint(const char *t, size_t n, uint64_t *out)
{
    return parse_digits(t, n, UINT64_MAX, out);
}

static int parse_bool(const char *t, size_t n)
{
    static const char *const yes[] = {"t", "T", "true", "True", "TRUE"};
    static const char *const no[] = {"f", "F", "false", "False", "FALSE"};
    for (size_t k = 0; k < 5; k++) {
        if (strlen(yes[k]) == n && memcmp(yes[k], t, n) == 0) {
            return 1;
        }
        if (strlen(no[k]) == n && memcmp(no[k], t, n) == 0) {
            return 0;
        }
    }
    return -1;
}

/* Classify and convert an unquoted field value. */
static bool parse_value(const char *t, size_t n, struct sl_line_field *f)
{
    if (n == 0) {
        return false;
    }
    char last = t[n - 1];
    if (last == 'i' && n > 1 && (is_digit(t[n - 2]))) {
        f->type = SL_LINE_INT;
        if (!parse_int(t, n - 1, &f->integer)) {
            return false;
        }
        f->value = (float)f->integer;
        return true;
    }
    if (last == 'u' && n > 1 && is_digit(t[n - 2])) {
        f->type = SL_LINE_UINT;
        if (!parse_uint(t, n - 1, &f->uinteger)) {
            return false;
        }
        f->value = (float)f->uinteger;
        return true;
    }
    if (is_digit(t[0]) || t[0] == '-' || t[0] == '+' || t[0] == '.') {
        f->type = SL_LINE_FLOAT;
        return parse_float(t, n, &f->value);
    }
    int b = parse_bool(t, n);
    if (b < 0) {
        return false;
    }
    f->type = SL_LINE_BOOL;
    f->value = b ? 1.0f : 0.0f;
    return true;
}

/* ---------------------------------------------------------------- the line */

static int parse_tags(const char *p, size_t n, size_t *at, struct sl_line *out)
{
    size_t i = *at;
    while (i < n && p[i] == ',') {
        i++;
        size_t key_start = i;
        bool key_escaped = false;
        if (!scan(p, n, &i, '=', ',', ' ', &key_escaped)) {
            return -SL_LINE_BAD_ESCAPE;
        }
        if (i >= n || p[i] != '=' || i == key_start) {
            return -SL_LINE_BAD_TAG;
        }
        size_t key_end = i++;
        size_t value_start = i;
        bool value_escaped = false;
        if (!scan(p, n, &i, ',', ' ', '=', &value_escaped)) {
            return -SL_LINE_BAD_ESCAPE;
        }
        if (i == value_start || (i < n && p[i] == '=')) {
            return -SL_LINE_BAD_TAG;
        }
        if (out->tag_count == SL_LINE_TAGS_MAX) {
            return -SL_LINE_TOO_MANY_TAGS;
        }
        struct sl_line_tag *tag = &out->tags[out->tag_count++];
        tag->key = span(p, key_start, key_end, key_escaped);
        tag->value = span(p, value_start, i, value_escaped);
    }
    *at = i;
    return 0;
}

/* A quoted string from p[*at] (the opening quote) to its closing quote. */
static int parse_string(const char *p, size_t n, size_t *at, struct sl_line_field *f)
{
    size_t i = *at + 1;
    size_t start = i;
    bool escaped = false;
    while (i < n && p[i] != '"') {
        if (p[i] == '\\' && i + 1 < n) {
            escaped = true;
            i += 2;
            continue;
        }
        i++;
    }
    if (i >= n) {
        return -SL_LINE_UNTERMINATED_STRING;
    }
    f->type = SL_LINE_STRING;
    f->text = span(p, start, i, escaped);
    f->value = 0.0f;
    *at = i + 1;
    return 0;
}

static int parse_fields(const char *p, size_t n, size_t *at, struct sl_line *out)
{
    size_t i = *at;
    for (;;) {
        size_t key_start = i;
        bool key_escaped = false;
        if (!scan(p, n, &i, '=', ',', ' ', &key_escaped)) {
            return -SL_LINE_BAD_ESCAPE;
        }
        if (i >= n || p[i] != '=' || i == key_start) {
            return -SL_LINE_BAD_FIELD;
        }
        if (out->field_count == SL_LINE_FIELDS_MAX) {
            return -SL_LINE_TOO_MANY_FIELDS;
        }
        struct sl_line_field *f = &out->fields[out->field_count];
        f->key = span(p, key_start, i, key_escaped);
        i++;
        if (i < n && p[i] == '"') {
            int rc = parse_string(p, n, &i, f);
            if (rc != 0) {
                return rc;
            }
        } else {
            size_t value_start = i;
            while (i < n && p[i] != ',' && p[i] != ' ') {
                i++;
            }
            f->text = span(p, value_start, i, false);
            if (!parse_value(p + value_start, i - value_start, f)) {
                return -SL_LINE_BAD_VALUE;
            }
        }
        out->field_count++;
        if (i < n && p[i] == ',') {
            i++;
            continue;
        }
        break;
    }
    *at = i;
    return 0;
}

static int parse_time(const char *p, size_t n, size_t *at, struct sl_line *out)
{
    size_t i = *at;
    size_t start = i;
    while (i < n && p[i] != ' ') {
        i++;
    }
    int64_t t;
    if (!parse_int(p + start, i - start, &t) || p[start] == '+') {
        return -SL_LINE_BAD_TIMESTAMP;
    }
    out->has_time = true;
    out->time = t;
    *at = i;
    return 0;
}

int sl_line_parse(const char *p, size_t n, struct sl_line *out)
{
    out->tag_count = 0;
    out->field_count = 0;
    out->has_time = false;
    out->time = 0;
    out->measurement = (struct sl_line_span){0};
    if (n > 0 && p[n - 1] == '\r') {
        n--;
    }
    size_t i = skip_spaces(p, n, 0);
    if (i == n || p[i] == '#') {
        return SL_LINE_SKIP;
    }
    size_t start = i;
    bool escaped = false;
    if (!scan(p, n, &i, ',', ' ', ',', &escaped)) {
        return -SL_LINE_BAD_ESCAPE;
    }
    if (i == start) {
        return -SL_LINE_MISSING_MEASUREMENT;
    }
    out->measurement = span(p, start, i, escaped);
    int rc = parse_tags(p, n, &i, out);
    if (rc != 0) {
        return rc;
    }
    if (i >= n || p[i] != ' ') {
        return -SL_LINE_MISSING_FIELDS;
    }
    i = skip_spaces(p, n, i);
    if (i >= n) {
        return -SL_LINE_MISSING_FIELDS;
    }
    rc = parse_fields(p, n, &i, out);
    if (rc != 0) {
        return rc;
    }
    if (i < n && p[i] != ' ') {
        return -SL_LINE_BAD_VALUE; /* e.g. a string followed by more bytes */
    }
    i = skip_spaces(p, n, i);
    if (i < n) {
        rc = parse_time(p, n, &i, out);
        if (rc != 0) {
            return rc;
        }
        i = skip_spaces(p, n, i);
        if (i < n) {
            return -SL_LINE_TRAILING_GARBAGE;
        }
    }
    return SL_LINE_OK;
}

/* ---------------------------------------------------------------- escapes and names */

/* Whether c is one of the bytes of set (never the NUL that ends it). */
static inline bool in_set(const char *set, char c)
{
    return c != '\0' && strchr(set, c) != NULL;
}

/* Unescape pairs: a backslash before one of `set` stands for that byte; other pairs stay whole. */
static size_t unescape(struct sl_line_span s, const char *set, char *out)
{
    if (!s.escaped) {
        memcpy(out, s.p, s.n);
        return s.n;
    }
    size_t o = 0;
    for (size_t i = 0; i < s.n; i++) {
        if (s.p[i] == '\\' && i + 1 < s.n) {
            if (in_set(set, s.p[i + 1])) {
                out[o++] = s.p[++i];
            } else {
                out[o++] = s.p[i];
                out[o++] = s.p[++i];
            }
            continue;
        }
        out[o++] = s.p[i];
    }
    return o;
}

size_t sl_line_unescape_measurement(struct sl_line_span s, char *out)
{
    return unescape(s, ", ", out);
}

size_t sl_line_unescape_key(struct sl_line_span s, char *out)
{
    return unescape(s, ",= ", out);
}

size_t sl_line_unescape_string(struct sl_line_span s, char *out)
{
    return unescape(s, "\"\\", out);
}

/* Unescaped byte k of a key span walked pairwise: next byte into *c; false at the end. */
struct key_reader {
    struct sl_line_span s;
    size_t i;
    char pending; /* the second byte of a kept pair */
    bool has_pending;
};

static bool key_next(struct key_reader *r, char *c)
{
    if (r->has_pending) {
        r->has_pending = false;
        *c = r->pending;
        return true;
    }
    if (r->i >= r->s.n) {
        return false;
    }
    char b = r->s.p[r->i++];
    if (b == '\\' && r->i < r->s.n) {
        char e = r->s.p[r->i++];
        if (e == ',' || e == '=' || e == ' ') {
            *c = e;
        } else {
            *c = b;
            r->pending = e;
            r->has_pending = true;
        }
        return true;
    }
    *c = b;
    return true;
}

/* Bytewise comparison of two keys' unescaped bytes. */
static int key_compare(struct sl_line_span a, struct sl_line_span b)
{
    if (!a.escaped && !b.escaped) {
        size_t n = a.n < b.n ? a.n : b.n;
        int c = memcmp(a.p, b.p, n);
        return c != 0 ? c : (a.n > b.n) - (a.n < b.n);
    }
    struct key_reader ra = {.s = a}, rb = {.s = b};
    for (;;) {
        char ca, cb;
        bool ha = key_next(&ra, &ca), hb = key_next(&rb, &cb);
        if (!ha || !hb) {
            return ha - hb;
        }
        if (ca != cb) {
            return (unsigned char)ca < (unsigned char)cb ? -1 : 1;
        }
    }
}

/* Append span s, unescaped by `set`, re-escaped minimally by `set`, at out[*o]; false when full. */
static bool put_escaped(struct sl_line_span s, const char *set, char *out, size_t *o, size_t cap)
{
    if (!s.escaped) {
        /* The common case. A span without a backslash holds no separator either (the scanner
         * stopped at the first unescaped one), so there is nothing to unescape or escape. */
        if (*o + s.n > cap) {
            return false;
        }
        memcpy(out + *o, s.p, s.n);
        *o += s.n;
        return true;
    }
    for (size_t i = 0; i < s.n; i++) {
        char c = s.p[i];
        char second = 0;
        bool pair = false;
        if (c == '\\' && i + 1 < s.n) {
            char e = s.p[i + 1];
            i++;
            if (in_set(set, e)) {
                c = e; /* an escaped separator: written escaped below */
            } else {
                second = e; /* a kept pair */
                pair = true;
            }
        }
        bool needs = in_set(set, c);
        size_t room = 1 + (needs ? 1 : 0) + (pair ? 1 : 0);
        if (*o + room > cap) {
            return false;
        }
        if (needs) {
            out[(*o)++] = '\\';
        }
        out[(*o)++] = c;
        if (pair) {
            out[(*o)++] = second;
        }
    }
    return true;
}

int sl_line_series_prefix(const struct sl_line *l, uint16_t *order, char *out, size_t cap)
{
    if (cap > SL_LINE_NAME_MAX) {
        cap = SL_LINE_NAME_MAX;
    }
    /* A stable insertion sort of the tag indexes by unescaped key: lines have few tags. */
    for (uint32_t k = 0; k < l->tag_count; k++) {
        uint32_t j = k;
        while (j > 0 && key_compare(l->tags[order[j - 1]].key, l->tags[k].key) > 0) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = (uint16_t)k;
    }
    size_t o = 0;
    if (!put_escaped(l->measurement, ", ", out, &o, cap)) {
        return -1;
    }
    for (uint32_t k = 0; k < l->tag_count; k++) {
        const struct sl_line_tag *t = &l->tags[order[k]];
        if (o + 1 > cap) {
            return -1;
        }
        out[o++] = ',';
        if (!put_escaped(t->key, ",= ", out, &o, cap) || o + 1 > cap) {
            return -1;
        }
        out[o++] = '=';
        if (!put_escaped(t->value, ",= ", out, &o, cap)) {
            return -1;
        }
    }
    return (int)o;
}

int sl_line_series_name(const struct sl_line *l, uint32_t field, char *out, size_t prefix_len,
                        size_t cap)
{
    if (cap > SL_LINE_NAME_MAX) {
        cap = SL_LINE_NAME_MAX;
    }
    size_t o = prefix_len;
    if (field >= l->field_count || o + 1 > cap) {
        return -1;
    }
    out[o++] = ' ';
    if (!put_escaped(l->fields[field].key, ",= ", out, &o, cap)) {
        return -1;
    }
    return (int)o;
}

/* ---------------------------------------------------------------- times */

int sl_line_precision_parse(const char *text, enum sl_line_precision *out)
{
    static const struct {
        const char *name;
        enum sl_line_precision p;
    } names[] = {{"", SL_LINE_NS}, {"n", SL_LINE_NS},  {"ns", SL_LINE_NS}, {"u", SL_LINE_US},
                 {"us", SL_LINE_US}, {"ms", SL_LINE_MS}, {"s", SL_LINE_S},   {"m", SL_LINE_M},
                 {"h", SL_LINE_H}};
    if (text == NULL) {
        *out = SL_LINE_NS;
        return 0;
    }
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        if (strcmp(text, names[k].name) == 0) {
            *out = names[k].p;
            return 0;
        }
    }
    return -1;
}

int sl_line_time_us(int64_t t, enum sl_line_precision p, int64_t *out)
{
    static const int64_t us_per[] = {0, 1, 1000, 1000000, 60000000, 3600000000ll};
    if (p == SL_LINE_NS) {
        /* floor division: -1 ns is -1 us, not 0 */
        int64_t q = t / 1000;
        if (t % 1000 < 0) {
            q--;
        }
        *out = q;
        return 0;
    }
    if (p > SL_LINE_H) {
        return -1;
    }
    int64_t m = us_per[p];
    if (t > INT64_MAX / m || t < INT64_MIN / m) {
        return -1;
    }
    *out = t * m;
    return 0;
}
