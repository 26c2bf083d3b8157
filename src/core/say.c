/*
 * Event lines (see say.h). One stack buffer a line, one write(2) a line.
 * The JSON form escapes the message (quotes, backslashes, control bytes);
 * subsystems are our own words and need none.
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
    time_t s = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%06uZ", (unsigned)(us % 1000000) % 1000000u);
}

/* Append `s` to out[*len, cap) as the inside of a JSON string; cut (never overrun) when full. */
static void json_escape(char *out, size_t *len, size_t cap, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        char esc[7];
        size_t n = 0;
        if (ch == '"' || ch == '\\') {
            esc[n++] = '\\';
            esc[n++] = (char)ch;
        } else if (ch < 0x20 || ch == 0x7f) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[ch >> 4];
            esc[5] = hex[ch & 15];
            n = 6;
        } else {
            esc[n++] = (char)ch;
        }
        if (*len + n >= cap) {
            return;
        }
        memcpy(out + *len, esc, n);
        *len += n;
    }
}

static void say_line(enum sl_say_level level, const char *subsystem, const char *msg)
{
    char when[32], line[SL_SAY_LINE_BYTES + 128];
    sl_say_time(when, sl_clock_realtime_us());
    size_t len;
    if (atomic_load_explicit(&say_json, memory_order_relaxed)) {
        int n = snprintf(line, sizeof line, "{\"time\":\"%s\",\"level\":\"%s\",\"subsystem\":\"%s\",\"msg\":\"",
                         when, sl_say_level_name(level), subsystem);
        len = n > 0 && (size_t)n < sizeof line ? (size_t)n : 0;
        json_escape(line, &len, sizeof line - 3, msg);
        memcpy(line + len, "\"}\n", 3);
        len += 3;
    } else {
        int n = snprintf(line, sizeof line, "%s %s %s: %s\n", when, sl_say_level_name(level), subsystem, msg);
        if (n <= 0) {
            return;
        }
        len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
        line[len - 1] = '\n'; /* a cut line still ends its line */
    }
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
    if (now < next || !atomic_compare_exchange_strong(&limit->next_ns, &next, now + SL_SAY_LIMIT_NS)) {
        atomic_fetch_add_explicit(&limit->suppressed, 1, memory_order_relaxed);
        return;
    }
    uint64_t held = atomic_exchange_explicit(&limit->suppressed, 0, memory_order_relaxed);
    char msg[SL_SAY_LINE_BYTES];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (held > 0 && n >= 0 && (size_t)n < sizeof msg) {
        snprintf(msg + n, sizeof msg - (size_t)n, " (%llu more like this since the last)",
                 (unsigned long long)held);
    }
    say_line(level, subsystem, msg);
}
