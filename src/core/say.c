/*
 * Event lines (see say.h). One stack buffer a line, one write(2) a line.
 * The message is escaped so that an event stays one line whatever a peer
 * put in it (control bytes; in JSON also quotes, backslashes and invalid
 * UTF-8); subsystems are our own words and need none.
 */
#include "core/say.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

/*
 * Append the message to out[*len, cap) so that it stays one line: text
 * writes control bytes as \xNN; JSON escapes quotes, backslashes and
 * control bytes, keeps valid UTF-8 and writes any other byte as \ufffd, so
 * the line is always valid JSON. Nothing is split when the line is full:
 * the message is cut before the escape or character that does not fit.
 */
static void append_message(char *out, size_t *len, size_t cap, const char *msg, bool json)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)msg;
    while (*s != '\0') { /* bounded: msg is at most SL_SAY_LINE_BYTES */
        unsigned char ch = *s;
        char esc[8];
        size_t n = 0, used = 1;
        if (json && (ch == '"' || ch == '\\')) {
            esc[n++] = '\\';
            esc[n++] = (char)ch;
        } else if (ch < 0x20 || ch == 0x7f || (ch >= 0x80 && !json && utf8_length(s) == 0)) {
            memcpy(esc, json ? "\\u00" : "\\x", json ? 4 : 2);
            n = json ? 4 : 2;
            esc[n++] = hex[ch >> 4];
            esc[n++] = hex[ch & 15];
        } else if (ch < 0x80) {
            esc[n++] = (char)ch;
        } else if ((used = utf8_length(s)) != 0) {
            memcpy(esc, s, used);
            n = used;
        } else {
            memcpy(esc, "\\ufffd", 6);
            n = 6;
            used = 1;
        }
        if (*len + n >= cap) {
            return;
        }
        memcpy(out + *len, esc, n);
        *len += n;
        s += used;
    }
}

static void say_line(enum sl_say_level level, const char *subsystem, const char *msg)
{
    char when[32], line[SL_SAY_LINE_BYTES + 128];
    sl_say_time(when, sl_clock_realtime_us());
    bool json = atomic_load_explicit(&say_json, memory_order_relaxed);
    int n =
        json ? snprintf(line, sizeof line,
                        "{\"time\":\"%s\",\"level\":\"%s\",\"subsystem\":\"%s\",\"msg\":\"", when,
                        sl_say_level_name(level), subsystem)
             : snprintf(line, sizeof line, "%s %s %s: ", when, sl_say_level_name(level), subsystem);
    if (n <= 0 || (size_t)n >= sizeof line / 2) {
        return; /* the prefix is our own short words: cannot happen */
    }
    size_t len = (size_t)n;
    append_message(line, &len, sizeof line - 3, msg, json);
    if (json) {
        memcpy(line + len, "\"}", 2);
        len += 2;
    }
    line[len++] = '\n';
    ssize_t w = write(2, line, len);
    (void)w;
}

static bool level_on(enum sl_say_level level)
{
    return (int)level <= atomic_load_explicit(&say_level, memory_order_relaxed);
}

void sl_say(enum sl_say_level level, const char *subsystem, const char *fmt, ...)
{
    if (!level_on(level)) {
        return;
    }
    char msg[SL_SAY_LINE_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    say_line(level, subsystem, msg);
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
    char msg[SL_SAY_LINE_BYTES];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (held > 0 && n >= 0) {
        /* The count is the point of the limiter: a cut message loses its tail, never the count. */
        char more[64];
        int m = snprintf(more, sizeof more, " (%llu more like this since the last)",
                         (unsigned long long)held);
        size_t at = (size_t)n < sizeof msg - (size_t)m ? (size_t)n : sizeof msg - 1 - (size_t)m;
        memcpy(msg + at, more, (size_t)m + 1);
    }
    say_line(level, subsystem, msg);
}
