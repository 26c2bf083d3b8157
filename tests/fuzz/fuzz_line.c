/*
 * libFuzzer target for the line protocol parser (src/proto/line.c).
 *
 * Each input is split into lines as the listeners will split it, and every
 * line is parsed. Proves, on arbitrary bytes: no read outside the input
 * (each input sits in a heap block of exactly its length), no UBSan report,
 * every span inside its line, unescaped lengths never above the raw ones,
 * canonical names built within their buffer or refused (-1) when over 1,024
 * bytes; a trailing '\r' changes nothing; every float field equals strtof of
 * its own text bit for bit (the fast path is exact); every int and uint field
 * reads back as its text; and each precision converts the timestamp exactly
 * (nanoseconds: the floor) or refuses it when microseconds would overflow.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "proto/line.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define TEXT_CHECKED_MAX 4096u /* values up to this long are checked against strtof of the whole text */

static struct sl_line line, again;
static char scratch[1 << 16];
static char name[SL_LINE_NAME_MAX];
static uint16_t order[SL_LINE_TAGS_MAX];
static char copy[1 << 16];

static void check_span(struct sl_line_span s, const char *p, size_t n)
{
    FUZZ_CHECK(s.n == 0 || (s.p >= p && s.p + s.n <= p + n));
}

static void check_field(const struct sl_line_field *f)
{
    char text[TEXT_CHECKED_MAX + 2];
    if (f->type == SL_LINE_FLOAT && f->text.n <= TEXT_CHECKED_MAX) {
        memcpy(text, f->text.p, f->text.n);
        text[f->text.n] = '\0';
        float ref = strtof(text, NULL);
        FUZZ_CHECK(memcmp(&ref, &f->value, sizeof ref) == 0);
    }
    if (f->type == SL_LINE_INT && f->text.n <= TEXT_CHECKED_MAX) { /* leading zeros allowed */
        FUZZ_CHECK(f->text.n >= 2);
        memcpy(text, f->text.p, f->text.n - 1);
        text[f->text.n - 1] = '\0';
        FUZZ_CHECK(strtoll(text, NULL, 10) == f->integer);
        FUZZ_CHECK(f->value == (float)f->integer);
    }
    if (f->type == SL_LINE_UINT && f->text.n <= TEXT_CHECKED_MAX) {
        FUZZ_CHECK(f->text.n >= 2);
        memcpy(text, f->text.p, f->text.n - 1);
        text[f->text.n - 1] = '\0';
        FUZZ_CHECK(strtoull(text, NULL, 10) == f->uinteger);
    }
}

static void check_line(const char *p, size_t n)
{
    int rc = sl_line_parse(p, n, &line);
    FUZZ_CHECK(rc == SL_LINE_OK || rc == SL_LINE_SKIP || (rc < 0 && rc > -SL_LINE_ERROR_COUNT));
    FUZZ_CHECK(line.tag_count <= SL_LINE_TAGS_MAX && line.field_count <= SL_LINE_FIELDS_MAX);
    if (rc != SL_LINE_OK) {
        FUZZ_CHECK(sl_line_error_name(rc) != NULL);
    } else {
        FUZZ_CHECK(line.measurement.n > 0 && line.field_count > 0);
        check_span(line.measurement, p, n);
        FUZZ_CHECK(sl_line_unescape_measurement(line.measurement, scratch) <= line.measurement.n);
        for (uint32_t k = 0; k < line.tag_count; k++) {
            check_span(line.tags[k].key, p, n);
            check_span(line.tags[k].value, p, n);
            FUZZ_CHECK(line.tags[k].key.n > 0 && line.tags[k].value.n > 0);
            FUZZ_CHECK(sl_line_unescape_key(line.tags[k].key, scratch) <= line.tags[k].key.n);
            FUZZ_CHECK(sl_line_unescape_key(line.tags[k].value, scratch) <= line.tags[k].value.n);
        }
        for (uint32_t k = 0; k < line.field_count; k++) {
            const struct sl_line_field *f = &line.fields[k];
            check_span(f->key, p, n);
            check_span(f->text, p, n);
            FUZZ_CHECK(sl_line_unescape_key(f->key, scratch) <= f->key.n);
            if (f->type == SL_LINE_STRING) {
                FUZZ_CHECK(sl_line_unescape_string(f->text, scratch) <= f->text.n);
            }
            check_field(f);
        }
        int prefix = sl_line_series_prefix(&line, order, name, sizeof name);
        FUZZ_CHECK(prefix >= -1 && prefix <= (int)SL_LINE_NAME_MAX);
        for (uint32_t k = 0; prefix >= 0 && k < line.field_count; k++) {
            int len = sl_line_series_name(&line, k, name, (size_t)prefix, sizeof name);
            FUZZ_CHECK(len == -1 || (len > prefix && len <= (int)SL_LINE_NAME_MAX));
        }
        /* Each precision converts exactly (ns: the floor), or refuses when it would overflow. */
        static const __int128 us_per[] = {0, 1, 1000, 1000000, 60000000, 3600000000ll};
        for (int prec = SL_LINE_NS; line.has_time && prec <= SL_LINE_H; prec++) {
            int64_t us;
            int rc_time = sl_line_time_us(line.time, (enum sl_line_precision)prec, &us);
            __int128 t = line.time;
            if (prec == SL_LINE_NS) {
                FUZZ_CHECK(rc_time == 0 && (__int128)us * 1000 <= t && t < (__int128)us * 1000 + 1000);
            } else {
                __int128 want = t * us_per[prec];
                bool fits = want >= INT64_MIN && want <= INT64_MAX;
                FUZZ_CHECK(fits ? rc_time == 0 && us == want : rc_time == -1);
            }
        }
    }
    /* The same line with a '\r' added parses the same way. */
    if (n + 1 <= sizeof copy && (n == 0 || p[n - 1] != '\r')) {
        memcpy(copy, p, n);
        copy[n] = '\r';
        int rc2 = sl_line_parse(copy, n + 1, &again);
        FUZZ_CHECK(rc2 == rc);
        FUZZ_CHECK(rc2 != SL_LINE_OK || (again.field_count == line.field_count &&
                                         again.tag_count == line.tag_count &&
                                         again.has_time == line.has_time && again.time == line.time));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *input = malloc(size > 0 ? size : 1);
    if (input == NULL) {
        return 0;
    }
    memcpy(input, data, size);
    for (size_t at = 0; at <= size;) {
        size_t end = sl_line_end(input, size, at);
        check_line(input + at, end - at);
        at = end + 1;
    }
    free(input);
    return 0;
}
