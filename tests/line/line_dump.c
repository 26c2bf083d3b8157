/*
 * line_dump: the line protocol parser (src/proto/line.c) from the command
 * line, for tests/integration/test_line_parse.py, which compares it with an
 * independent reference (tests/integration/lineref.py).
 *
 * Reads all of stdin, splits it on '\n', and prints one JSON object per line:
 *   {"skip": true}                       a blank or comment line
 *   {"error": "<name>"}                  a line that does not parse
 *   {"measurement": M, "tags": [[k, v], ...], "fields": [[key, type, value], ...],
 *    "time": T or null, "names": [canonical name of each field]}
 * Strings are the unescaped bytes, every byte >= 0x80 or < 0x20 written as
 * \u00XX; a float's value is its f32 bit pattern, an int's or uint's the
 * exact integer, a bool's true/false, a string's the unescaped text. A name
 * over SL_LINE_NAME_MAX bytes is null.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/line.h"

#define INPUT_MAX (64u << 20)

static struct sl_line line;
static char scratch[1 << 17];
static char name[SL_LINE_NAME_MAX];
static uint16_t order[SL_LINE_TAGS_MAX];

static void put_json(const char *p, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '"' || c == '\\') {
            printf("\\%c", c);
        } else if (c < 0x20 || c >= 0x80) {
            printf("\\u%04x", c);
        } else {
            putchar(c);
        }
    }
    putchar('"');
}

static void put_span(struct sl_line_span s, size_t (*unescape)(struct sl_line_span, char *))
{
    size_t n = unescape(s, scratch);
    put_json(scratch, n);
}

static const char *type_name(enum sl_line_type t)
{
    static const char *const names[] = {"float", "int", "uint", "bool", "string"};
    return names[t];
}

static void dump(const char *p, size_t n)
{
    int rc = sl_line_parse(p, n, &line);
    if (rc == SL_LINE_SKIP) {
        puts("{\"skip\": true}");
        return;
    }
    if (rc < 0) {
        printf("{\"error\": \"%s\"}\n", sl_line_error_name(rc));
        return;
    }
    fputs("{\"measurement\": ", stdout);
    put_span(line.measurement, sl_line_unescape_measurement);
    fputs(", \"tags\": [", stdout);
    for (uint32_t k = 0; k < line.tag_count; k++) {
        fputs(k ? ", [" : "[", stdout);
        put_span(line.tags[k].key, sl_line_unescape_key);
        fputs(", ", stdout);
        put_span(line.tags[k].value, sl_line_unescape_key);
        putchar(']');
    }
    fputs("], \"fields\": [", stdout);
    for (uint32_t k = 0; k < line.field_count; k++) {
        const struct sl_line_field *f = &line.fields[k];
        fputs(k ? ", [" : "[", stdout);
        put_span(f->key, sl_line_unescape_key);
        printf(", \"%s\", ", type_name(f->type));
        uint32_t bits;
        switch (f->type) {
        case SL_LINE_FLOAT:
            memcpy(&bits, &f->value, sizeof bits);
            printf("%" PRIu32, bits);
            break;
        case SL_LINE_INT:
            printf("%" PRId64, f->integer);
            break;
        case SL_LINE_UINT:
            printf("%" PRIu64, f->uinteger);
            break;
        case SL_LINE_BOOL:
            fputs(f->value != 0.0f ? "true" : "false", stdout);
            break;
        case SL_LINE_STRING:
            put_span(f->text, sl_line_unescape_string);
            break;
        }
        putchar(']');
    }
    fputs("], \"time\": ", stdout);
    if (line.has_time) {
        printf("%" PRId64, line.time);
    } else {
        fputs("null", stdout);
    }
    fputs(", \"names\": [", stdout);
    int prefix = sl_line_series_prefix(&line, order, name, sizeof name);
    for (uint32_t k = 0; k < line.field_count; k++) {
        int len = prefix < 0 ? -1 : sl_line_series_name(&line, k, name, (size_t)prefix, sizeof name);
        fputs(k ? ", " : "", stdout);
        if (len < 0) {
            fputs("null", stdout);
        } else {
            put_json(name, (size_t)len);
        }
    }
    puts("]}");
}

int main(void)
{
    char *input = malloc(INPUT_MAX);
    if (input == NULL) {
        return 1;
    }
    size_t n = fread(input, 1, INPUT_MAX, stdin);
    for (size_t at = 0; at < n;) {
        size_t end = sl_line_end(input, n, at);
        dump(input + at, end - at);
        at = end + 1;
    }
    free(input);
    return 0;
}
