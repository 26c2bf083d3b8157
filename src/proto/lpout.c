/*
 * The uplink's text encoders (see lpout.h).
 *
 * Floats: Ryu (Ulf Adams, "Ryu: fast float-to-string conversion", PLDI
 * 2018), the f32 variant, written here from the paper. A float is
 * m2 * 2^e2; the decimals that read back as it are those strictly inside
 * (or, for an even m2, on the edge of) the interval between the midpoints
 * to its neighbours, u = 4*m2 - 1 - (lower gap halved at a power of two)
 * and w = 4*m2 + 2 (in units of 2^(e2-2)). Ryu computes u, v = 4*m2 and w
 * times 10^-q, for the largest q that keeps all three integers exact up to
 * their truncation, with one 32x64-bit multiplication each by a 64-bit
 * approximation of 5^-q * 2^k (or 5^i * 2^-k), proved in the paper
 * sufficient for every f32 (the table entries are below, with the formula
 * that makes them; test_lpout checks the formula and the whole output
 * exhaustively with -DLPOUT_EXHAUSTIVE, see there). It then drops decimal
 * digits while u and w still differ above the digit (a shorter decimal is
 * inside the interval), tracking whether the dropped digits of v and u were
 * all zero (exactness at the edges, and the round-half-even tie), and
 * rounds v's last kept digit by the last dropped one. The result is the
 * shortest, and of the shortest the nearest to the float.
 *
 * Lines: a canonical name's series part ends at its first unescaped space:
 * memchr for a space, then an odd run of backslashes before it means
 * escaped (a backslash always takes the byte after it, so a run of them
 * pairs up from its first). The rest is copies and integer printing.
 *
 * Split and labels: one forward pass, unescaping into the caller's scratch
 * (never longer than the name); labels are sorted by a stable insertion sort
 * bounded by SL_LPOUT_LABELS_MAX.
 *
 * Memory: the two Ryu tables (640 bytes) and the digit-pair table (200),
 * constant. No allocation, no global state, no I/O.
 */
#include "proto/lpout.h"

#include <errno.h>
#include <string.h>

#include "core/assert.h"

_Static_assert(SL_LPOUT_TAGS_MAX == SL_LINE_TAGS_MAX, "a split name holds every tag of a line");
_Static_assert(SL_LPOUT_LABELS_MAX <= 65536u, "labels are counted in an int");

/* ---------------------------------------------------------------- Ryu for f32 */

#define F32_MANTISSA_BITS 23
#define F32_BIAS 127
#define POW5_INV_BITCOUNT 59 /* bits of the 5^-q multipliers below 2^(floor(log2 5^q)) */
#define POW5_BITCOUNT 61     /* bits of the 5^i multipliers */

/* POW5_INV[q] = floor(2^(floor(log2 5^q) + 59) / 5^q) + 1, q = 0..30 (e2 <= 104: q <= 31 - 1). */
static const uint64_t POW5_INV[31] = {
    0x0800000000000001ull, 0x0666666666666667ull, 0x051eb851eb851eb9ull, 0x04189374bc6a7efaull,
    0x068db8bac710cb2aull, 0x053e2d6238da3c22ull, 0x0431bde82d7b634eull, 0x06b5fca6af2bd216ull,
    0x055e63b88c230e78ull, 0x044b82fa09b5a52dull, 0x06df37f675ef6eaeull, 0x057f5ff85e592558ull,
    0x0465e6604b7a8447ull, 0x0709709a125da071ull, 0x05a126e1a84ae6c1ull, 0x0480ebe7b9d58567ull,
    0x0734aca5f6226f0bull, 0x05c3bd5191b525a3ull, 0x049c97747490eae9ull, 0x0760f253edb4ab0eull,
    0x05e72843249088d8ull, 0x04b8ed0283a6d3e0ull, 0x078e480405d7b966ull, 0x060b6cd004ac9452ull,
    0x04d5f0a66a23a9dbull, 0x07bcb43d769f762bull, 0x063090312bb2c4efull, 0x04f3a68dbc8f03f3ull,
    0x07ec3daf94180651ull, 0x065697bfa9acd1daull, 0x051212ffbaf0a7e2ull,
};

/* POW5[i] = floor(5^i / 2^(ceil(log2 5^i) - 61)) (a left shift while that is negative), i = 0..47. */
static const uint64_t POW5[48] = {
    0x1000000000000000ull, 0x1400000000000000ull, 0x1900000000000000ull, 0x1f40000000000000ull,
    0x1388000000000000ull, 0x186a000000000000ull, 0x1e84800000000000ull, 0x1312d00000000000ull,
    0x17d7840000000000ull, 0x1dcd650000000000ull, 0x12a05f2000000000ull, 0x174876e800000000ull,
    0x1d1a94a200000000ull, 0x12309ce540000000ull, 0x16bcc41e90000000ull, 0x1c6bf52634000000ull,
    0x11c37937e0800000ull, 0x16345785d8a00000ull, 0x1bc16d674ec80000ull, 0x1158e460913d0000ull,
    0x15af1d78b58c4000ull, 0x1b1ae4d6e2ef5000ull, 0x10f0cf064dd59200ull, 0x152d02c7e14af680ull,
    0x1a784379d99db420ull, 0x108b2a2c28029094ull, 0x14adf4b7320334b9ull, 0x19d971e4fe8401e7ull,
    0x1027e72f1f128130ull, 0x1431e0fae6d7217cull, 0x193e5939a08ce9dbull, 0x1f8def8808b02452ull,
    0x13b8b5b5056e16b3ull, 0x18a6e32246c99c60ull, 0x1ed09bead87c0378ull, 0x13426172c74d822bull,
    0x1812f9cf7920e2b6ull, 0x1e17b84357691b64ull, 0x12ced32a16a1b11eull, 0x178287f49c4a1d66ull,
    0x1d6329f1c35ca4bfull, 0x125dfa371a19e6f7ull, 0x16f578c4e0a060b5ull, 0x1cb2d6f618c878e3ull,
    0x11efc659cf7d4b8dull, 0x166bb7f0435c9e71ull, 0x1c06a5ec5433c60dull, 0x118427b3b4a05bc8ull,
};

/* ceil(log2(5^e)) for e >= 1 (1 for e = 0); exact for 0 <= e <= 3528. */
static inline int32_t pow5bits(int32_t e)
{
    return (int32_t)(((uint32_t)e * 1217359u) >> 19) + 1;
}

/* floor(log10(2^e)), 0 <= e <= 1650. */
static inline uint32_t log10_pow2(int32_t e)
{
    return ((uint32_t)e * 78913u) >> 18;
}

/* floor(log10(5^e)), 0 <= e <= 2620. */
static inline uint32_t log10_pow5(int32_t e)
{
    return ((uint32_t)e * 732923u) >> 20;
}

static inline bool multiple_of_pow5(uint32_t v, uint32_t p)
{
    uint32_t count = 0;
    for (; count < p && v % 5 == 0; count++) { /* at most 13 rounds: v < 2^27 */
        v /= 5;
    }
    return count >= p;
}

static inline bool multiple_of_pow2(uint32_t v, uint32_t p)
{
    return (v & ((1u << p) - 1)) == 0;
}

/* (m * factor) >> shift, for shift >= 32, the result below 2^32 (the paper's bounds). */
static inline uint32_t mul_shift(uint32_t m, uint64_t factor, int32_t shift)
{
    SL_DEBUG_ASSERT(shift > 32);
    uint64_t low = (uint64_t)m * (uint32_t)factor;
    uint64_t high = (uint64_t)m * (factor >> 32);
    uint64_t sum = (low >> 32) + high;
    return (uint32_t)(sum >> (shift - 32));
}

/* The shortest digits of a positive finite float: returns them, the power of ten in *exp10. */
static uint32_t f32_digits(uint32_t ieee_mantissa, uint32_t ieee_exponent, int32_t *exp10)
{
    int32_t e2;
    uint32_t m2;
    if (ieee_exponent == 0) {
        e2 = 1 - F32_BIAS - F32_MANTISSA_BITS - 2;
        m2 = ieee_mantissa;
    } else {
        e2 = (int32_t)ieee_exponent - F32_BIAS - F32_MANTISSA_BITS - 2;
        m2 = (1u << F32_MANTISSA_BITS) | ieee_mantissa;
    }
    bool accept_bounds = (m2 & 1) == 0; /* round-half-even reading: an even float owns its edges */
    uint32_t mv = 4 * m2;
    uint32_t mm_shift = ieee_mantissa != 0 || ieee_exponent <= 1; /* the gap below is whole */
    uint32_t mp = 4 * m2 + 2, mm = 4 * m2 - 1 - mm_shift;

    uint32_t vr, vp, vm;
    int32_t e10;
    bool vm_zeros = false, vr_zeros = false; /* all digits dropped from vm (vr) so far were 0 */
    uint32_t last_digit = 0;
    if (e2 >= 0) {
        uint32_t q = log10_pow2(e2);
        e10 = (int32_t)q;
        int32_t k = POW5_INV_BITCOUNT + pow5bits((int32_t)q) - 1;
        int32_t i = -e2 + (int32_t)q + k;
        vr = mul_shift(mv, POW5_INV[q], i);
        vp = mul_shift(mp, POW5_INV[q], i);
        vm = mul_shift(mm, POW5_INV[q], i);
        if (q != 0 && (vp - 1) / 10 <= vm / 10) {
            /* No digit will be dropped below: the digit just below q decides the rounding. */
            int32_t l = POW5_INV_BITCOUNT + pow5bits((int32_t)q - 1) - 1;
            last_digit = mul_shift(mv, POW5_INV[q - 1], -e2 + (int32_t)q - 1 + l) % 10;
        }
        if (q <= 9) {
            /* Only then can one of them be a multiple of 10^q (mp, mv, mm < 2^27 < 5^12 * 2^q). */
            if (mv % 5 == 0) {
                vr_zeros = multiple_of_pow5(mv, q);
            } else if (accept_bounds) {
                vm_zeros = multiple_of_pow5(mm, q);
            } else {
                vp -= multiple_of_pow5(mp, q);
            }
        }
    } else {
        uint32_t q = log10_pow5(-e2);
        e10 = (int32_t)q + e2;
        int32_t i = -e2 - (int32_t)q;
        int32_t k = pow5bits(i) - POW5_BITCOUNT;
        int32_t j = (int32_t)q - k;
        vr = mul_shift(mv, POW5[i], j);
        vp = mul_shift(mp, POW5[i], j);
        vm = mul_shift(mm, POW5[i], j);
        if (q != 0 && (vp - 1) / 10 <= vm / 10) {
            j = (int32_t)q - 1 - (pow5bits(i + 1) - POW5_BITCOUNT);
            last_digit = mul_shift(mv, POW5[i + 1], j) % 10;
        }
        if (q <= 1) {
            /* mv, mm, mp are multiples of 2^q: the divisions by 10^q with 5^q folded in are exact. */
            vr_zeros = true;
            if (accept_bounds) {
                vm_zeros = mm_shift == 1;
            } else {
                --vp;
            }
        } else if (q < 31) {
            vr_zeros = multiple_of_pow2(mv, q - 1);
        }
    }

    int32_t removed = 0;
    uint32_t output;
    if (vm_zeros || vr_zeros) {
        /* The rare exact cases: track the zeros for the edges and the tie. At most 10 rounds each. */
        while (vp / 10 > vm / 10) {
            vm_zeros &= vm % 10 == 0;
            vr_zeros &= last_digit == 0;
            last_digit = vr % 10;
            vr /= 10;
            vp /= 10;
            vm /= 10;
            removed++;
        }
        if (vm_zeros) {
            while (vm % 10 == 0 && vm != 0) {
                vr_zeros &= last_digit == 0;
                last_digit = vr % 10;
                vr /= 10;
                vp /= 10;
                vm /= 10;
                removed++;
            }
        }
        if (vr_zeros && last_digit == 5 && vr % 2 == 0) {
            last_digit = 4; /* exactly half way: round to even */
        }
        output = vr + ((vr == vm && (!accept_bounds || !vm_zeros)) || last_digit >= 5);
    } else {
        while (vp / 10 > vm / 10) {
            last_digit = vr % 10;
            vr /= 10;
            vp /= 10;
            vm /= 10;
            removed++;
        }
        output = vr + (vr == vm || last_digit >= 5);
    }
    *exp10 = e10 + removed;
    return output;
}

/*
 * The floats whose shortest decimal does not survive a reading through
 * double: it lies within half a double ulp of the midpoint to a neighbour,
 * so strtod gives the midpoint itself and the cast to float rounds it to
 * the even neighbour. For these the nearest decimal one digit longer that
 * reads back both ways is written instead. The list is what the exhaustive
 * check (test_lpout --exhaustive) finds over every finite float; it fails
 * on any float missing here.
 */
static const struct {
    uint32_t bits; /* of the positive float */
    uint32_t digits;
    int32_t exp10;
} DOUBLE_ROUNDING[] = {
    {0x15ae43fdu, 70385307u, -33}, /* 7.038531e-26 reads as 7.0385313e-26 through double */
};

/* ---------------------------------------------------------------- printing */

static const char DIGIT_PAIRS[200] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                     "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                     "8081828384858687888990919293949596979899";

static inline uint32_t decimal_length(uint32_t v)
{
    uint32_t n = 1;
    for (uint32_t limit = 10; n < 10 && v >= limit; limit *= 10) {
        n++;
    }
    return n;
}

/* v's n decimal digits at p[0, n), most significant first. */
static inline void put_digits(char *p, uint32_t v, uint32_t n)
{
    char *end = p + n;
    while (v >= 100) {
        uint32_t r = v % 100;
        v /= 100;
        end -= 2;
        memcpy(end, DIGIT_PAIRS + 2 * r, 2);
    }
    if (v >= 10) {
        end -= 2;
        memcpy(end, DIGIT_PAIRS + 2 * v, 2);
    } else {
        *--end = (char)('0' + v);
    }
    SL_DEBUG_ASSERT(end == p);
}

/* Digits of v (a uint64) at p, returning their count. */
static size_t put_u64(char *p, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[sizeof tmp - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    memcpy(p, tmp + sizeof tmp - n, n);
    return n;
}

static size_t put_i64(char *p, int64_t v)
{
    if (v < 0) {
        p[0] = '-';
        return 1 + put_u64(p + 1, (uint64_t)0 - (uint64_t)v); /* INT64_MIN too */
    }
    return put_u64(p, (uint64_t)v);
}

/*
 * digits (n of them, no trailing zero) * 10^exp10 laid out as "%.<n>g": with
 * X the exponent of the first digit, scientific when X < -4 or X >= n.
 */
static size_t put_decimal(char *out, uint32_t digits, uint32_t n, int32_t exp10)
{
    char d[10];
    put_digits(d, digits, n);
    int32_t x = exp10 + (int32_t)n - 1;
    size_t o = 0;
    if (x < -4 || x >= (int32_t)n) {
        out[o++] = d[0];
        if (n > 1) {
            out[o++] = '.';
            memcpy(out + o, d + 1, n - 1);
            o += n - 1;
        }
        out[o++] = 'e';
        out[o++] = x < 0 ? '-' : '+';
        uint32_t ax = (uint32_t)(x < 0 ? -x : x); /* at most 45 */
        memcpy(out + o, DIGIT_PAIRS + 2 * ax, 2);
        return o + 2;
    }
    if (x >= 0) {
        uint32_t whole = (uint32_t)x + 1;
        memcpy(out, d, whole);
        o = whole;
        if (n > whole) {
            out[o++] = '.';
            memcpy(out + o, d + whole, n - whole);
            o += n - whole;
        }
        return o;
    }
    out[o++] = '0';
    out[o++] = '.';
    for (int32_t z = -1; z > x; z--) { /* -x - 1 zeros, at most 3 */
        out[o++] = '0';
    }
    memcpy(out + o, d, n);
    return o + n;
}

size_t sl_lpout_f32(char out[SL_LPOUT_F32_MAX], float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    uint32_t mantissa = bits & ((1u << F32_MANTISSA_BITS) - 1);
    uint32_t exponent = (bits >> F32_MANTISSA_BITS) & 0xffu;
    size_t o = 0;
    if (exponent == 0xffu) {
        out[0] = '0'; /* NaN or infinity: never stored; a harmless number rather than a bad line */
        return 1;
    }
    if (bits >> 31) {
        out[o++] = '-';
    }
    if (exponent == 0 && mantissa == 0) {
        out[o++] = '0';
        return o;
    }
    int32_t exp10;
    uint32_t digits = f32_digits(mantissa, exponent, &exp10);
    for (size_t k = 0; k < SL_ARRAY_COUNT(DOUBLE_ROUNDING); k++) { /* a handful of compares */
        if (DOUBLE_ROUNDING[k].bits == (bits & 0x7fffffffu)) {
            digits = DOUBLE_ROUNDING[k].digits;
            exp10 = DOUBLE_ROUNDING[k].exp10;
        }
    }
    SL_DEBUG_ASSERT(digits != 0);
    while (digits >= 10 && digits % 10 == 0) { /* a round-up to a power of ten: one round at most */
        digits /= 10;
        exp10++;
    }
    o += put_decimal(out + o, digits, decimal_length(digits), exp10);
    SL_DEBUG_ASSERT(o <= 15);
    return o;
}

/* ---------------------------------------------------------------- lines */

/* Index of the first unescaped space of name[0, n), or n. */
static uint32_t series_end(const char *name, uint32_t n)
{
    uint32_t from = 0;
    while (from < n) { /* each round moves past one space */
        const char *sp = memchr(name + from, ' ', n - from);
        if (sp == NULL) {
            return n;
        }
        uint32_t at = (uint32_t)(sp - name);
        uint32_t run = 0;
        while (run < at && name[at - 1 - run] == '\\') {
            run++;
        }
        if (run % 2 == 0) {
            return at;
        }
        from = at + 1;
    }
    return n;
}

/* The line; ns: the time in nanoseconds, the microseconds' digits and "000" (one digit loop). */
static size_t line_put(char *out, size_t cap, const char *name, uint32_t name_len,
                       uint32_t sensor_id, const char *extra_tags, uint32_t extra_len, int64_t t_us,
                       float v, bool ns)
{
    static const char NUMBERED_HEAD[] = "sluice,sensor=";
    static const char NUMBERED_FIELD[] = " value";
    char value[SL_LPOUT_F32_MAX];
    char head_id[10], time_text[24];
    size_t value_len = sl_lpout_f32(value, v);
    size_t time_len = put_i64(time_text, t_us);
    if (ns && t_us != 0) {
        memcpy(time_text + time_len, "000", 3); /* x 1000; 0 stays "0" */
        time_len += 3;
    }
    const char *series = name, *field = NULL;
    size_t series_len = name_len, field_len = 0, id_len = 0;
    if (name == NULL) {
        id_len = put_u64(head_id, sensor_id);
        series = NUMBERED_HEAD;
        series_len = sizeof NUMBERED_HEAD - 1;
        field = NUMBERED_FIELD;
        field_len = sizeof NUMBERED_FIELD - 1;
    } else {
        uint32_t sp = series_end(name, name_len);
        if (sp == name_len) {
            return 0;
        }
        series_len = sp;
        field = name + sp; /* " field" */
        field_len = name_len - sp;
    }
    size_t total = series_len + id_len + extra_len + field_len + 1 + value_len + 1 + time_len + 1;
    if (total > cap) {
        return 0;
    }
    char *p = out;
    memcpy(p, series, series_len);
    p += series_len;
    memcpy(p, head_id, id_len);
    p += id_len;
    if (extra_len > 0) {
        memcpy(p, extra_tags, extra_len);
        p += extra_len;
    }
    memcpy(p, field, field_len);
    p += field_len;
    *p++ = '=';
    memcpy(p, value, value_len);
    p += value_len;
    *p++ = ' ';
    memcpy(p, time_text, time_len);
    p += time_len;
    *p++ = '\n';
    SL_ASSERT((size_t)(p - out) == total);
    return total;
}

size_t sl_lpout_line(char *out, size_t cap, const char *name, uint32_t name_len, uint32_t sensor_id,
                     const char *extra_tags, uint32_t extra_len, int64_t t_us, float v)
{
    return line_put(out, cap, name, name_len, sensor_id, extra_tags, extra_len, t_us, v, false);
}

size_t sl_lpout_line_ns(char *out, size_t cap, const char *name, uint32_t name_len,
                        uint32_t sensor_id, const char *extra_tags, uint32_t extra_len,
                        int64_t t_us, float v)
{
    return line_put(out, cap, name, name_len, sensor_id, extra_tags, extra_len, t_us, v, true);
}

static inline bool tag_special(char c)
{
    return c == ',' || c == '=' || c == ' ';
}

/* Append ,key or =value escaped at out[*o]; false when it does not fit or cannot be read back. */
static bool put_tag_text(char lead, const char *s, char *out, size_t *o, size_t cap)
{
    if (s == NULL || s[0] == '\0' || *o >= cap) {
        return false;
    }
    out[(*o)++] = lead;
    for (size_t i = 0; s[i] != '\0'; i++) { /* NUL-terminated: bounded by the string */
        char c = s[i];
        if (c == '\n' || (c == '\\' && (s[i + 1] == '\0' || tag_special(s[i + 1])))) {
            return false;
        }
        bool esc = tag_special(c);
        if (*o + 1 + esc > cap) {
            return false;
        }
        if (esc) {
            out[(*o)++] = '\\';
        }
        out[(*o)++] = c;
    }
    return true;
}

int sl_lpout_tags(char *out, size_t cap, const char *const *keys, const char *const *values,
                  uint32_t n)
{
    if (cap > (size_t)INT32_MAX) {
        cap = INT32_MAX;
    }
    size_t o = 0;
    for (uint32_t k = 0; k < n; k++) {
        if (!put_tag_text(',', keys[k], out, &o, cap) || !put_tag_text('=', values[k], out, &o, cap)) {
            return -1;
        }
    }
    return (int)o;
}

/* ---------------------------------------------------------------- split */

struct splitter {
    const char *p;
    uint32_t n, i; /* input and position */
    char *out;
    size_t o, cap; /* scratch */
};

/* Whether c is one of the bytes of set (never the NUL that ends it). */
static inline bool in_set(const char *set, char c)
{
    return c != '\0' && strchr(set, c) != NULL;
}

/*
 * Unescape from s->i to the first unescaped stop byte (one of `stops`) or the
 * end, into scratch: a backslash before a byte of `set` stands for that
 * byte, any other pair stays whole (line.c's unescape). -EINVAL on an empty
 * part or a backslash as the name's last byte; -ENOSPC when scratch is full.
 */
static int take_part(struct splitter *s, const char *stops, const char *set, struct sl_lpout_str *part)
{
    size_t start = s->o;
    uint32_t from = s->i;
    while (s->i < s->n && !in_set(stops, s->p[s->i])) { /* each round takes one byte or pair */
        char c = s->p[s->i];
        char pair[2] = {c, 0};
        size_t bytes = 1;
        if (c == '\\') {
            if (s->i + 1 >= s->n) {
                return -EINVAL;
            }
            char e = s->p[s->i + 1];
            if (in_set(set, e)) {
                pair[0] = e;
            } else {
                pair[1] = e;
                bytes = 2;
            }
            s->i++;
        }
        s->i++;
        if (s->cap - s->o < bytes) {
            return -ENOSPC;
        }
        memcpy(s->out + s->o, pair, bytes);
        s->o += bytes;
    }
    if (s->i == from) {
        return -EINVAL;
    }
    part->p = s->out + start;
    part->n = (uint32_t)(s->o - start);
    return 0;
}

int sl_lpout_split(const char *name, uint32_t len, struct sl_lpout_parts *out, char *scratch,
                   size_t scratch_cap)
{
    struct splitter s = {.p = name, .n = len, .out = scratch, .cap = scratch_cap};
    out->tag_count = 0;
    int rc = take_part(&s, ", ", ", ", &out->measurement);
    while (rc == 0 && s.i < len && name[s.i] == ',') { /* each round takes one tag */
        if (out->tag_count >= SL_LPOUT_TAGS_MAX) {
            return -E2BIG;
        }
        struct sl_lpout_tag *t = &out->tags[out->tag_count];
        s.i++;
        rc = take_part(&s, ",= ", ",= ", &t->key);
        if (rc == 0 && (s.i >= len || name[s.i] != '=')) {
            return -EINVAL;
        }
        s.i++;
        if (rc == 0) {
            rc = take_part(&s, ",= ", ",= ", &t->value);
        }
        out->tag_count++;
    }
    if (rc != 0) {
        return rc;
    }
    if (s.i >= len || name[s.i] != ' ') {
        return -EINVAL;
    }
    s.i++;
    rc = take_part(&s, ",= ", ",= ", &out->field);
    if (rc == 0 && s.i != len) {
        return -EINVAL; /* an unescaped separator in the field key */
    }
    return rc;
}

int sl_lpout_numbered(uint32_t sensor_id, struct sl_lpout_parts *out, char *scratch,
                      size_t scratch_cap)
{
    char digits[10];
    size_t n = put_u64(digits, sensor_id);
    if (n > scratch_cap) {
        return -ENOSPC;
    }
    memcpy(scratch, digits, n);
    out->measurement = (struct sl_lpout_str){.p = "sluice", .n = 6};
    out->field = (struct sl_lpout_str){.p = "value", .n = 5};
    out->tag_count = 1;
    out->tags[0].key = (struct sl_lpout_str){.p = "sensor", .n = 6};
    out->tags[0].value = (struct sl_lpout_str){.p = scratch, .n = (uint32_t)n};
    return 0;
}

/* ---------------------------------------------------------------- Prometheus names */

/* Bytes of the UTF-8 sequence at p[0, n) (n >= 1), or 1 for a byte that starts none (Go's rule). */
static uint32_t utf8_len(const unsigned char *p, size_t n)
{
    unsigned char b = p[0];
    if (b < 0x80) {
        return 1;
    }
    uint32_t len = b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
    if (len == 0 || len > n) {
        return 1;
    }
    unsigned char lo = 0x80, hi = 0xbf; /* the second byte's range: no overlongs, surrogates, > U+10FFFF */
    if (b == 0xe0) {
        lo = 0xa0;
    } else if (b == 0xed) {
        hi = 0x9f;
    } else if (b == 0xf0) {
        lo = 0x90;
    } else if (b == 0xf4) {
        hi = 0x8f;
    }
    if (p[1] < lo || p[1] > hi) {
        return 1;
    }
    for (uint32_t k = 2; k < len; k++) {
        if (p[k] < 0x80 || p[k] > 0xbf) {
            return 1;
        }
    }
    return len;
}

static inline bool prom_name_byte(unsigned char c, bool colon_ok)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           (colon_ok && c == ':');
}

/* s sanitized into out (at most n bytes): each character outside the set becomes one '_'. */
static size_t sanitize(const char *s, size_t n, char *out, bool colon_ok)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        if (prom_name_byte(c, colon_ok)) {
            out[o++] = (char)c;
            i++;
        } else {
            out[o++] = '_';
            i += utf8_len((const unsigned char *)s + i, n - i);
        }
    }
    return o;
}

size_t sl_lpout_metric_name(char *out, size_t cap, const struct sl_lpout_parts *parts,
                            uint32_t flags)
{
    size_t total = (size_t)parts->measurement.n + 1 + parts->field.n;
    if (total > cap) {
        return 0;
    }
    memcpy(out, parts->measurement.p, parts->measurement.n);
    out[parts->measurement.n] = '_';
    memcpy(out + parts->measurement.n + 1, parts->field.p, parts->field.n);
    if (flags & SL_LPOUT_PROM_NAMES) {
        /* In place: sanitizing never lengthens, and reads run ahead of writes. */
        return sanitize(out, total, out, true);
    }
    return total;
}

static int label_compare(const struct sl_promrw_label *a, const struct sl_promrw_label *b)
{
    uint32_t n = a->name_len < b->name_len ? a->name_len : b->name_len;
    int c = n > 0 ? memcmp(a->name, b->name, n) : 0;
    return c != 0 ? c : (a->name_len > b->name_len) - (a->name_len < b->name_len);
}

int sl_lpout_labels(struct sl_promrw_label *out, uint32_t cap, const char *metric,
                    uint32_t metric_len, const struct sl_lpout_parts *parts,
                    const struct sl_promrw_label *extra, uint32_t extra_count, uint32_t flags,
                    char *scratch, size_t scratch_cap)
{
    if (extra_count > SL_LPOUT_EXTRA_MAX) {
        return -E2BIG;
    }
    SL_ASSERT(parts->tag_count <= SL_LPOUT_TAGS_MAX);
    if (cap < 1) {
        return -ENOSPC;
    }
    out[0] = (struct sl_promrw_label){.name = "__name__", .name_len = 8, .value = metric,
                                      .value_len = metric_len};
    uint32_t count = 1;
    size_t used = 0;
    uint32_t total = parts->tag_count + extra_count;
    for (uint32_t k = 0; k < total; k++) { /* series' tags first: the stable sort keeps them ahead */
        struct sl_promrw_label l;
        if (k < parts->tag_count) {
            const struct sl_lpout_tag *t = &parts->tags[k];
            l = (struct sl_promrw_label){t->key.p, t->key.n, t->value.p, t->value.n};
        } else {
            l = extra[k - parts->tag_count];
        }
        if (l.value_len == 0 || l.name_len == 0) {
            continue;
        }
        if (flags & SL_LPOUT_PROM_NAMES) {
            if (scratch_cap - used < l.name_len) {
                return -ENOSPC;
            }
            l.name_len = (uint32_t)sanitize(l.name, l.name_len, scratch + used, false);
            l.name = scratch + used;
            used += l.name_len;
        }
        if (label_compare(&l, &out[0]) == 0) {
            continue; /* a tag called __name__ does not replace the metric */
        }
        if (count >= cap) {
            return -ENOSPC;
        }
        uint32_t j = count++;
        while (j > 1 && label_compare(&out[j - 1], &l) > 0) { /* insertion: stable, bounded by count */
            out[j] = out[j - 1];
            j--;
        }
        if (j > 1 && label_compare(&out[j - 1], &l) == 0) {
            /* The name is there already, from an earlier (winning) label: undo the shift. */
            for (uint32_t m = j; m + 1 < count; m++) {
                out[m] = out[m + 1];
            }
            count--;
            continue;
        }
        out[j] = l;
    }
    return (int)count;
}
