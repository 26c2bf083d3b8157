/*
 * Event lines: what the daemon tells its operator, one line an event on
 * stderr, each with an RFC 3339 UTC time (microseconds), a level and the
 * subsystem, as text or as one JSON object a line (--log-format json, for
 * journald and log shippers):
 *
 *   2026-12-03T07:41:02.123456Z warn tcp: connection table full: evicted 10.0.0.7:51234 (idle 12.0 s)
 *   {"time":"2026-12-03T07:41:02.123456Z","level":"warn","subsystem":"tcp","msg":"connection ..."}
 *
 * Each line is formatted into a stack buffer (SL_SAY_FORMAT_BYTES, longer
 * messages are cut) and written with one write(2), so lines from different
 * threads never interleave, and nothing allocates: safe on the ingest path.
 * Events a peer can cause (a bad frame, an eviction) go through a limiter,
 * so a flood of them costs a line a second and a count, never the disk.
 *
 * The level and format are process-wide settings, written at start-up and
 * on SIGHUP (relaxed atomics), read by every thread.
 */
#ifndef SL_CORE_SAY_H
#define SL_CORE_SAY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum sl_say_level { SL_SAY_ERROR = 0, SL_SAY_WARN = 1, SL_SAY_INFO = 2, SL_SAY_DEBUG = 3 };
#define SL_SAY_LINE_BYTES 1024u
/* One formatted line, its NUL included: the message and the time, level and subsystem. */
#define SL_SAY_FORMAT_BYTES (SL_SAY_LINE_BYTES + 128u)
/* A suffix sl_say_format never cuts (the limiter's count): at most this many bytes. */
#define SL_SAY_SUFFIX_BYTES_MAX 64u

/* Lines below `level` are dropped; json: one JSON object a line. */
void sl_say_configure(enum sl_say_level level, bool json);

/* "error", "warn", "info", "debug" to a level: 0, or -1 for another word. */
int sl_say_level_parse(const char *name, enum sl_say_level *out);
const char *sl_say_level_name(enum sl_say_level level);

/* Write one event line (fd 2). `subsystem` is a short word: "tcp", "http", "log", ... */
void sl_say(enum sl_say_level level, const char *subsystem, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * A limiter for events a peer can cause: at most one line per interval;
 * the lines it held back are counted and the next line it lets through
 * says how many ("... (37 more like this since the last)"). Zero-initialised
 * static storage is a ready limiter. Any thread.
 */
struct sl_say_limit {
    _Atomic int64_t next_ns;
    _Atomic uint64_t suppressed;
};
#define SL_SAY_LIMIT_NS 1000000000LL /* one line a second a limiter */

void sl_say_limited(struct sl_say_limit *limit, enum sl_say_level level, const char *subsystem,
                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/*
 * Format one event line into out, NUL-terminated, exactly as sl_say writes
 * it: the time t_us (microseconds since the epoch), the level, the
 * subsystem (a short word of ours, not escaped), the message escaped for
 * the format (json, or text), then `suffix` (NULL for none; printable
 * ASCII other than '"' and '\\', at most SL_SAY_SUFFIX_BYTES_MAX bytes,
 * never cut), then '\n'. The line is one line whatever msg holds: text
 * writes control bytes (C0, DEL and C1) and bytes that are not UTF-8 as
 * \xNN; JSON escapes quotes, backslashes and control characters and writes
 * \ufffd for bytes that are not UTF-8, so the line is a JSON object. A
 * message too long for the line is cut before the first character or
 * escape that does not fit. Returns the line's length without the NUL (at
 * most SL_SAY_FORMAT_BYTES - 1), or 0 (out is "") for a subsystem too long
 * to leave room. Pure: no I/O, no allocation; any thread.
 */
size_t sl_say_format(char out[SL_SAY_FORMAT_BYTES], int64_t t_us, enum sl_say_level level,
                     bool json, const char *subsystem, const char *msg, const char *suffix);

/* Format `us` (microseconds since the epoch) as RFC 3339 UTC with microseconds into out[32]. */
void sl_say_time(char out[32], int64_t us);

#endif
