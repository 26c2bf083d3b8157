/*
 * Event lines (see say.h). One stack buffer a line, one write(2) a line,
 * formatted by sl_say_format (pure, so a fuzzer drives it). The message is
 * escaped so that an event stays one line whatever a peer put in it
 * (control bytes, C1 included, and bytes that are not UTF-8; in JSON also
 * quotes and backslashes); subsystems are our own words and need none.
 */
#include "core/say.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/assert.h"
#include "core/clock.h"

static _Atomic int say_level = SL_SAY_INFO;
static _Atomic bool say_json = false;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void sl_say_configure(enum sl_say_level level, bool json)
{
    atomic_store_explicit(&say_level, (int)level, memory_order_relaxed);
    atomic_store_explicit(&say_json, json, memory_order_relaxed);
}

int sl_say_level_parse(const char *name, enum sl_say_level *out)
{
    for (int i = 0; i <= SL_SAY_DEBUG; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (enum sl_say_level)i;
            return 0;
        }
    }
    return -1;
}

const char *sl_say_level_name(enum sl_say_level level)
{
    return (unsigned)level <= SL_SAY_DEBUG ? level_names[level] : "?";
}

void sl_say_time(char out[32], int64_t us)
{
    us = us < 0 ? 0 : us;
    time_t s = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%06uZ", (unsigned)(us % 1000000));
}

/* The length of the valid UTF-8 sequence at s (1 to 4), or 0 when s does not start one. */
static size_t utf8_length(const unsigned char *s)
{
    size_t n = s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 ? 2 : 0;
    if (s[0] > 0xf4) {
        return 0;
    }
    /* No overlong forms, no surrogates, nothing past U+10FFFF (RFC 3629's table). */
    if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] >= 0xa0) ||
        (s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] >= 0x90)) {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) { /* also stops at the terminating NUL */
            return 0;
        }
    }
    return n;
}

/* \xNN (text) or \u00NN (JSON) for the byte or code point `code` (below 0x100) at out. */
static size_t escape_code(char *out, unsigned code, bool json)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = json ? 4 : 2;
    memcpy(out, json ? "\\u00" : "\\x", n);
    out[n++] = hex[(code >> 4) & 15];
    out[n++] = hex[code & 15];
    return n;
}

/*
 * The escaped form of the character at s into esc[16]: its length, and in
 * *used how many bytes of s it stands for. Control characters are C0, DEL
 * and C1 (U+0080..U+009F, which terminals also obey: U+009B is CSI, U+0085
 * a line break).
 */
static size_t escape_one(char esc[16], const unsigned char *s, size_t *used, bool json)
{
    unsigned char ch = s[0];
    size_t len = ch < 0x80 ? 1 : utf8_length(s);
    bool c1 = len == 2 && ch == 0xc2 && s[1] < 0xa0;
    *used = len == 0 ? 1 : len;
    if (json && (ch == '"' || ch == '\\')) {
        esc[0] = '\\';
        esc[1] = (char)ch;
        return 2;
    }
    if (ch < 0x20 || ch == 0x7f) {
        return escape_code(esc, ch, json);
    }
    if (c1) {
        if (json) {
            return escape_code(esc, s[1], true); /* C2 xx is U+00xx */
        }
        size_t n = escape_code(esc, ch, false);
        return n + escape_code(esc + n, s[1], false);
    }
    if (len == 0) { /* not UTF-8 */
        if (json) {
            memcpy(esc, "\\ufffd", 6);
            return 6;
        }
        return escape_code(esc, ch, false);
    }
    memcpy(esc, s, len);
    return len;
}

/*
 * Append the message to out[*len, end) so that it stays one line (see
 * sl_say_format). Nothing is split when the line is full: the message is
 * cut before the escape or character that does not fit.
 */
static void append_message(char *out, size_t *len, size_t end, const char *msg, bool json)
{
    const unsigned char *s = (const unsigned char *)msg;
    while (*s != '\0') { /* bounded: every byte taken writes at least one, up to end */
        char esc[16];
        size_t used;
        size_t n = escape_one(esc, s, &used, json);
        if (*len + n > end) {
            return;
        }
        memcpy(out + *len, esc, n);
        *len += n;
        s += used;
    }
}

size_t sl_say_format(char out[SL_SAY_FORMAT_BYTES], int64_t t_us, enum sl_say_level level,
                     bool json, const char *subsystem, const char *msg, const char *suffix)
{
    char when[32];
    sl_say_time(when, t_us);
    size_t suffix_bytes = suffix != NULL ? strlen(suffix) : 0;
    SL_ASSERT(suffix_bytes <= SL_SAY_SUFFIX_BYTES_MAX);
    for (size_t i = 0; i < suffix_bytes; i++) {
        SL_ASSERT(suffix[i] >= 0x20 && suffix[i] < 0x7f && suffix[i] != '"' && suffix[i] != '\\');
    }
    int n = json ? snprintf(out, SL_SAY_FORMAT_BYTES,
                            "{\"time\":\"%s\",\"level\":\"%s\",\"subsystem\":\"%s\",\"msg\":\"",
                            when, sl_say_level_name(level), subsystem)
                 : snprintf(out, SL_SAY_FORMAT_BYTES, "%s %s %s: ", when, sl_say_level_name(level),
                            subsystem);
    if (n <= 0 || (size_t)n >= SL_SAY_FORMAT_BYTES / 2) {
        out[0] = '\0'; /* the prefix is our own short words: cannot happen */
        return 0;
    }
    size_t len = (size_t)n;
    /* Room kept for what follows the message: the suffix, "} in JSON, the newline and the NUL. */
    size_t tail = suffix_bytes + (json ? 2 : 0) + 2;
    append_message(out, &len, SL_SAY_FORMAT_BYTES - tail, msg, json);
    if (suffix_bytes > 0) { /* memcpy from NULL is undefined even for 0 bytes */
        memcpy(out + len, suffix, suffix_bytes);
        len += suffix_bytes;
    }
    if (json) {
        memcpy(out + len, "\"}", 2);
        len += 2;
    }
    out[len++] = '\n';
    out[len] = '\0';
    SL_ASSERT(len < SL_SAY_FORMAT_BYTES);
    return len;
}

static void say_line(enum sl_say_level level, const char *subsystem, const char *msg,
                     const char *suffix)
{
    char line[SL_SAY_FORMAT_BYTES];
    bool json = atomic_load_explicit(&say_json, memory_order_relaxed);
    size_t len = sl_say_format(line, sl_clock_realtime_us(), level, json, subsystem, msg, suffix);
    if (len > 0) {
        ssize_t w = write(2, line, len);
        (void)w;
    }
}

static bool level_on(enum sl_say_level level)
{
    return (int)level <= atomic_load_explicit(&say_level, memory_order_relaxed);
}

/*
 * The formatted message, before escaping. As long as the whole line, so
 * that a long message is always cut by sl_say_format (every byte of it
 * takes at least one byte of the line), at a character, never here by
 * vsnprintf in the middle of one.
 */
#define SAY_MSG_BYTES SL_SAY_FORMAT_BYTES

void sl_say(enum sl_say_level level, const char *subsystem, const char *fmt, ...)
{
    if (!level_on(level)) {
        return;
    }
    char msg[SAY_MSG_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    say_line(level, subsystem, msg, NULL);
}

void sl_say_limited(struct sl_say_limit *limit, enum sl_say_level level, const char *subsystem,
                    const char *fmt, ...)
{
    if (!level_on(level)) {
        return;
    }
    int64_t now = sl_clock_monotonic_ns();
    int64_t next = atomic_load_explicit(&limit->next_ns, memory_order_relaxed);
    if (now < next ||
        !atomic_compare_exchange_strong(&limit->next_ns, &next, now + SL_SAY_LIMIT_NS)) {
        atomic_fetch_add_explicit(&limit->suppressed, 1, memory_order_relaxed);
        return;
    }
    uint64_t held = atomic_exchange_explicit(&limit->suppressed, 0, memory_order_relaxed);
    char msg[SAY_MSG_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* The count is the point of the limiter: a suffix, so a cut message loses its tail only. */
    char more[SL_SAY_SUFFIX_BYTES_MAX + 1];
    snprintf(more, sizeof more, " (%llu more like this since the last)", (unsigned long long)held);
    say_line(level, subsystem, msg, held > 0 ? more : NULL);
}
