/*
 * libFuzzer target for the event-line formatter (src/core/say.c,
 * sl_say_format: what sl_say writes to fd 2).
 *
 * Input: byte 0 chooses the format (bit 0: JSON), the level (bits 1..3,
 * modulo 5: the four levels and one out of range), whether the limiter's
 * suffix follows (bit 4) and the subsystem (bits 5..7); bytes 1..8 are the
 * time in microseconds (little-endian, any int64); the rest is the message
 * (up to its first NUL, as a C string reaches the formatter).
 *
 * Proves, for arbitrary message bytes and times: the line never overruns
 * its buffer (ASan; the message sits in a heap block of its exact length);
 * it is exactly one line ending in '\n', NUL-terminated, with no other
 * control byte (C0, DEL) and no C1 control character, and it is valid
 * UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing past
 * U+10FFFF); the prefix is the time, level and subsystem; the message part
 * is, escape by escape, what an independent encoder written here from the
 * contract in say.h gives (a different decoder: by code point), cut only
 * where the next escape would not fit, never inside one; the suffix comes
 * whole; the JSON form parses as one JSON object of exactly the members
 * time, level, subsystem, msg, all strings (a small validator below); the
 * time has the RFC 3339 shape with the right microseconds for every year
 * up to 9999, and is the epoch before it. Any violation is
 * __builtin_trap(). Also sl_say_level_parse on the message: a word it
 * accepts is one sl_say_level_name gives back.
 *
 * Memory: one heap copy of the message per run (freed); the rest static.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/say.h"

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const subsystems[] = {"tcp",   "udp",    "http", "log",
                                         "store", "config", "main", "checkpoint"};
static const char *const level_words[] = {"error", "warn", "info", "debug", "?"};

/*
 * The code point of the UTF-8 sequence at s[0, n): its length (1..4) and
 * *cp, or 0 when s does not start a valid sequence (RFC 3629). Written by
 * code point, unlike say.c's table of lead and trail bytes.
 */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    if (n == 0) {
        return 0;
    }
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    size_t len = (s[0] & 0xe0) == 0xc0   ? 2
                 : (s[0] & 0xf0) == 0xe0 ? 3
                 : (s[0] & 0xf8) == 0xf0 ? 4
                                         : 0;
    if (len == 0 || len > n) {
        return 0;
    }
    uint32_t v = s[0] & (0x7f >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
        v = v << 6 | (s[i] & 0x3f);
    }
    static const uint32_t least[] = {0, 0, 0x80, 0x800, 0x10000};
    if (v < least[len] || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) {
        return 0;
    }
    *cp = v;
    return len;
}

/* What the contract in say.h says the character at s becomes; its length, *used bytes of s. */
static size_t reference_escape(char out[16], const unsigned char *s, size_t n, bool json,
                               size_t *used)
{
    uint32_t cp;
    size_t len = utf8_decode(s, n, &cp);
    *used = len == 0 ? 1 : len;
    if (len == 0) {
        return (size_t)(json ? snprintf(out, 16, "\\ufffd") : snprintf(out, 16, "\\x%02x", s[0]));
    }
    if (json && (cp == '"' || cp == '\\')) {
        return (size_t)snprintf(out, 16, "\\%c", (char)cp);
    }
    if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f)) {
        if (json) {
            return (size_t)snprintf(out, 16, "\\u%04x", (unsigned)cp);
        }
        return (size_t)(cp < 0x80 ? snprintf(out, 16, "\\x%02x", (unsigned)cp)
                                  : snprintf(out, 16, "\\x%02x\\x%02x", s[0], s[1]));
    }
    memcpy(out, s, len);
    return len;
}

/* The whole line is valid UTF-8 with no control character but its final newline. */
static void check_bytes(const char *line, size_t len)
{
    const unsigned char *s = (const unsigned char *)line;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t n = utf8_decode(s + i, len - i, &cp);
        FUZZ_CHECK(n != 0);
        FUZZ_CHECK(cp >= 0x20 || (cp == '\n' && i == len - 1));
        FUZZ_CHECK(cp != 0x7f && !(cp >= 0x80 && cp <= 0x9f));
        i += n;
    }
}

/* ---- a JSON validator for one object of string members ---- */

struct json_cursor {
    const char *s;
    size_t len, at;
};

static bool json_string(struct json_cursor *c, char *copy, size_t copy_bytes)
{
    size_t kept = 0;
    if (c->at >= c->len || c->s[c->at] != '"') {
        return false;
    }
    c->at++;
    while (c->at < c->len) { /* bounded: at grows every turn */
        unsigned char ch = (unsigned char)c->s[c->at++];
        if (ch == '"') {
            if (copy != NULL) {
                copy[kept] = '\0';
            }
            return true;
        }
        if (ch < 0x20) {
            return false; /* a raw control character is not JSON */
        }
        if (ch == '\\') {
            if (c->at >= c->len) {
                return false;
            }
            char e = c->s[c->at++];
            if (e == 'u') {
                for (int i = 0; i < 4; i++) {
                    if (c->at >= c->len || strchr("0123456789abcdefABCDEF", c->s[c->at]) == NULL ||
                        c->s[c->at] == '\0') {
                        return false;
                    }
                    c->at++;
                }
            } else if (strchr("\"\\/bfnrt", e) == NULL || e == '\0') {
                return false;
            }
        }
        if (copy != NULL && kept + 1 < copy_bytes) {
            copy[kept++] = (char)ch;
        }
    }
    return false;
}

/* line[0, len) is {"time":S,"level":S,"subsystem":S,"msg":S} and nothing after it. */
static bool json_object(const char *line, size_t len)
{
    static const char *const keys[] = {"time", "level", "subsystem", "msg"};
    struct json_cursor c = {line, len, 0};
    if (len == 0 || line[c.at++] != '{') {
        return false;
    }
    for (size_t i = 0; i < 4; i++) {
        char key[16];
        if (!json_string(&c, key, sizeof key) || strcmp(key, keys[i]) != 0) {
            return false;
        }
        if (c.at >= len || line[c.at++] != ':' || !json_string(&c, NULL, 0)) {
            return false;
        }
        if (c.at >= len || line[c.at++] != (i == 3 ? '}' : ',')) {
            return false;
        }
    }
    return c.at == len;
}

/* ---- the target ---- */

static void check_time(const char *when, int64_t t_us)
{
    if (t_us < 0) {
        FUZZ_CHECK(strcmp(when, "1970-01-01T00:00:00.000000Z") == 0);
        return;
    }
    if (t_us / 1000000 >= 253402300800LL) {
        return; /* past 9999-12-31: longer years; only bounds and shape of the rest apply */
    }
    const char *shape = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    for (size_t i = 0; shape[i] != '\0'; i++) {
        FUZZ_CHECK(shape[i] == 'd' ? when[i] >= '0' && when[i] <= '9' : when[i] == shape[i]);
    }
    char micro[8];
    snprintf(micro, sizeof micro, "%06u", (unsigned)(t_us % 1000000));
    FUZZ_CHECK(memcmp(when + 20, micro, 6) == 0 && when[27] == '\0');
}

static void check_line(const char *line, size_t len, int64_t t_us, const char *level, bool json,
                       const char *subsystem, const char *msg, const char *suffix)
{
    FUZZ_CHECK(len >= 1 && len <= SL_SAY_FORMAT_BYTES - 1);
    FUZZ_CHECK(strlen(line) == len && line[len - 1] == '\n');
    FUZZ_CHECK(memchr(line, '\n', len - 1) == NULL);
    check_bytes(line, len);
    if (json) {
        FUZZ_CHECK(json_object(line, len - 1));
    }

    char when[32], prefix[128];
    sl_say_time(when, t_us);
    check_time(when, t_us);
    int n = json ? snprintf(prefix, sizeof prefix,
                            "{\"time\":\"%s\",\"level\":\"%s\",\"subsystem\":\"%s\",\"msg\":\"",
                            when, level, subsystem)
                 : snprintf(prefix, sizeof prefix, "%s %s %s: ", when, level, subsystem);
    FUZZ_CHECK(n > 0 && (size_t)n < sizeof prefix && strncmp(line, prefix, (size_t)n) == 0);

    /* The message, escape by escape, then the suffix, the JSON close and the newline. */
    size_t at = (size_t)n, suffix_bytes = suffix != NULL ? strlen(suffix) : 0;
    size_t tail = suffix_bytes + (json ? 2 : 0) + 1;
    const unsigned char *s = (const unsigned char *)msg;
    size_t msg_len = strlen(msg), i = 0;
    while (i < msg_len) {
        char esc[16];
        size_t used, e = reference_escape(esc, s + i, msg_len - i, json, &used);
        if (at + e + tail > len) {
            /* Cut here: the rest of the line is the tail, and this escape would not have fit. */
            FUZZ_CHECK(at + tail == len);
            FUZZ_CHECK(at + e + tail > SL_SAY_FORMAT_BYTES - 1);
            break;
        }
        FUZZ_CHECK(memcmp(line + at, esc, e) == 0);
        at += e;
        i += used;
    }
    FUZZ_CHECK(at + tail == len);
    FUZZ_CHECK(suffix_bytes == 0 || memcmp(line + at, suffix, suffix_bytes) == 0);
    FUZZ_CHECK(!json || memcmp(line + at + suffix_bytes, "\"}", 2) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char line[SL_SAY_FORMAT_BYTES];
    if (size < 9) {
        return 0;
    }
    bool json = (data[0] & 1) != 0;
    unsigned level = ((data[0] >> 1) & 7) % 5;
    bool with_suffix = (data[0] & 0x10) != 0;
    const char *subsystem = subsystems[data[0] >> 5];
    uint64_t t = 0;
    for (int i = 7; i >= 0; i--) {
        t = t << 8 | data[1 + i];
    }
    int64_t t_us = (int64_t)t;

    size_t msg_bytes = size - 9;
    char *msg = malloc(msg_bytes + 1);
    FUZZ_CHECK(msg != NULL);
    memcpy(msg, data + 9, msg_bytes);
    msg[msg_bytes] = '\0';

    char suffix[SL_SAY_SUFFIX_BYTES_MAX + 1];
    snprintf(suffix, sizeof suffix, " (%llu more like this since the last)",
             (unsigned long long)(t % 100000));
    const char *sfx = with_suffix ? suffix : NULL;
    size_t len = sl_say_format(line, t_us, (enum sl_say_level)level, json, subsystem, msg, sfx);
    check_line(line, len, t_us, level_words[level], json, subsystem, msg, sfx);

    enum sl_say_level parsed;
    if (sl_say_level_parse(msg, &parsed) == 0) {
        FUZZ_CHECK(strcmp(sl_say_level_name(parsed), msg) == 0);
    }
    free(msg);
    return 0;
}
