/*
 * core/say: the event-line formats and the limiter.
 *
 * Proves: times are RFC 3339 UTC with microseconds (the epoch, a leap day,
 * the last microsecond of a year); a text line is "TIME LEVEL SUBSYSTEM:
 * MSG\n" and stays one line whatever the message holds (control bytes
 * and invalid UTF-8 escaped); a JSON line is one object with time, level, subsystem and msg,
 * with quotes, backslashes, control bytes and invalid UTF-8 escaped and
 * valid UTF-8 kept; a message longer than a line is cut, still ends its
 * line (and its JSON object), never mid-escape or mid-character; lines
 * below the level are dropped; the limiter lets one line through, holds
 * the next back while its interval lasts and says how many it held when it
 * lets one through again, even when that message is cut (also when it is
 * cut because escaping made it longer than the line). sl_say_format, the
 * pure formatter sl_say uses: exact lines for a given time, a long message
 * fills the line to its last byte, a suffix is never cut. C1 control
 * characters (U+0080..U+009F: U+009B is a terminal's CSI, U+0085 a line
 * break) are escaped in both formats; a message longer than sl_say's
 * buffer is cut by the line at a character, never by vsnprintf in the
 * middle of one.
 *
 * Lines are captured by pointing fd 2 at a pipe.
 */
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "core/say.h"
#include "testlib.h"

static int saved_stderr = -1, pipe_fds[2] = {-1, -1};

static void capture_begin(void)
{
    CHECK(pipe(pipe_fds) == 0);
    fcntl(pipe_fds[0], F_SETFL, O_NONBLOCK);
    saved_stderr = dup(2);
    dup2(pipe_fds[1], 2);
}

/* What was written to fd 2 since capture_begin, NUL-terminated. */
static size_t capture_end(char *out, size_t out_bytes)
{
    dup2(saved_stderr, 2);
    close(saved_stderr);
    close(pipe_fds[1]);
    size_t len = 0;
    for (;;) {
        ssize_t n = read(pipe_fds[0], out + len, out_bytes - 1 - len);
        if (n <= 0) {
            break;
        }
        len += (size_t)n;
    }
    close(pipe_fds[0]);
    out[len] = '\0';
    return len;
}

static size_t count_char(const char *s, char c)
{
    size_t n = 0;
    for (; *s != '\0'; s++) {
        n += *s == c;
    }
    return n;
}

static void test_time(void)
{
    char t[32];
    sl_say_time(t, 0);
    CHECK(strcmp(t, "1970-01-01T00:00:00.000000Z") == 0);
    sl_say_time(t, 1709164800LL * 1000000 + 7); /* 2024-02-29, a leap day */
    CHECK(strcmp(t, "2024-02-29T00:00:00.000007Z") == 0);
    sl_say_time(t, 1798761600LL * 1000000 - 1); /* the last microsecond of 2026 */
    CHECK(strcmp(t, "2026-12-31T23:59:59.999999Z") == 0);
    sl_say_time(t, -5); /* before the epoch: the epoch, never garbage digits */
    CHECK(strcmp(t, "1970-01-01T00:00:00.000000Z") == 0);
}

/* "YYYY-MM-DDTHH:MM:SS.uuuuuuZ" at s. */
static bool is_rfc3339(const char *s)
{
    const char *shape = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    for (size_t i = 0; shape[i] != '\0'; i++) {
        if (shape[i] == 'd' ? !(s[i] >= '0' && s[i] <= '9') : s[i] != shape[i]) {
            return false;
        }
    }
    return true;
}

static void test_text(void)
{
    char out[8192];
    sl_say_configure(SL_SAY_INFO, false);
    capture_begin();
    sl_say(SL_SAY_WARN, "tcp", "evicted %s (idle %.1f s)", "10.0.0.7:51234", 12.0);
    sl_say(SL_SAY_INFO, "tcp", "two\nlines\x1b[31m \xff");
    sl_say(SL_SAY_DEBUG, "tcp", "below the level");
    capture_end(out, sizeof out);
    CHECK(is_rfc3339(out));
    const char *first = " warn tcp: evicted 10.0.0.7:51234 (idle 12.0 s)\n";
    CHECK(strncmp(out + 27, first, strlen(first)) == 0);
    const char *second = strchr(out, '\n') + 1;
    CHECK(is_rfc3339(second));
    CHECK(strcmp(second + 27, " info tcp: two\\x0alines\\x1b[31m \\xff\n") == 0);
    CHECK_EQ(count_char(out, '\n'), 2); /* the debug line was dropped, the newline escaped */
}

static void test_json(void)
{
    char out[8192];
    sl_say_configure(SL_SAY_DEBUG, true);
    capture_begin();
    sl_say(SL_SAY_DEBUG, "http", "a \"quote\", a \\ and a\ttab; caf\xc3\xa9; bad \xff\xc3 end");
    capture_end(out, sizeof out);
    const char *want_tail =
        "\",\"level\":\"debug\",\"subsystem\":\"http\",\"msg\":\"a \\\"quote\\\", a \\\\ "
        "and a\\u0009tab; caf\xc3\xa9; bad \\ufffd\\ufffd end\"}\n";
    CHECK(strncmp(out, "{\"time\":\"", 9) == 0);
    CHECK(is_rfc3339(out + 9));
    CHECK(strcmp(out + 9 + 27, want_tail) == 0);
    sl_say_configure(SL_SAY_INFO, false);
}

/* A message longer than a line: cut, one line, never mid-escape or mid-character. */
static void test_cut(void)
{
    char msg[3 * SL_SAY_LINE_BYTES], out[4 * SL_SAY_LINE_BYTES];
    for (size_t i = 0; i + 1 < sizeof msg; i += 2) {
        memcpy(msg + i, i % 6 == 0 ? "\"x" : "\xc3\xa9", 2);
    }
    msg[sizeof msg - 1] = '\0';
    for (int json = 0; json <= 1; json++) {
        sl_say_configure(SL_SAY_INFO, json == 1);
        capture_begin();
        sl_say(SL_SAY_INFO, "log", "%s", msg);
        size_t len = capture_end(out, sizeof out);
        CHECK(len <= SL_SAY_LINE_BYTES + 128);
        CHECK(len > SL_SAY_LINE_BYTES / 2);
        CHECK_EQ(count_char(out, '\n'), 1);
        CHECK(out[len - 1] == '\n');
        if (json) {
            CHECK(len >= 3 && strcmp(out + len - 3, "\"}\n") == 0);
            /* Before the closing quote: a whole escape or character, never half of one. */
            CHECK(out[len - 4] != '\\');
            CHECK(out[len - 4] == 'x' || out[len - 4] == '"' ||
                  (unsigned char)out[len - 4] == 0xa9);
        } else {
            CHECK((unsigned char)out[len - 2] != 0xc3);
        }
    }
    sl_say_configure(SL_SAY_INFO, false);
}

static void test_limiter(void)
{
    static struct sl_say_limit limit; /* zero: ready */
    char out[8192];
    sl_say_configure(SL_SAY_INFO, false);
    capture_begin();
    sl_say_limited(&limit, SL_SAY_WARN, "tcp", "bad frame from %d", 1);
    atomic_store(&limit.next_ns, INT64_MAX); /* the interval lasts: the next two are held back */
    sl_say_limited(&limit, SL_SAY_WARN, "tcp", "bad frame from %d", 2);
    sl_say_limited(&limit, SL_SAY_WARN, "tcp", "bad frame from %d", 3);
    atomic_store(&limit.next_ns, 0); /* the interval is over */
    sl_say_limited(&limit, SL_SAY_WARN, "tcp", "bad frame from %d", 4);
    capture_end(out, sizeof out);
    CHECK_EQ(count_char(out, '\n'), 2);
    CHECK(strstr(out, "bad frame from 1\n") != NULL);
    CHECK(strstr(out, "from 2") == NULL && strstr(out, "from 3") == NULL);
    CHECK(strstr(out, "bad frame from 4 (2 more like this since the last)\n") != NULL);

    /* A held-back count survives a message too long for the line. */
    char big[2 * SL_SAY_LINE_BYTES];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    capture_begin();
    atomic_store(&limit.next_ns, INT64_MAX);
    sl_say_limited(&limit, SL_SAY_WARN, "tcp", "%s", big);
    atomic_store(&limit.next_ns, 0);
    sl_say_limited(&limit, SL_SAY_WARN, "tcp", "%s", big);
    capture_end(out, sizeof out);
    CHECK_EQ(count_char(out, '\n'), 1);
    CHECK(strstr(out, "z (1 more like this since the last)\n") != NULL);
}

static void test_format(void)
{
    char out[SL_SAY_FORMAT_BYTES];
    size_t len = sl_say_format(out, 0, SL_SAY_WARN, false, "tcp", "hi\x01", NULL);
    CHECK(strcmp(out, "1970-01-01T00:00:00.000000Z warn tcp: hi\\x01\n") == 0);
    CHECK_EQ(len, strlen(out));
    len = sl_say_format(out, 7, SL_SAY_ERROR, true, "log", "q\"", " (2 more)");
    CHECK(strcmp(out, "{\"time\":\"1970-01-01T00:00:00.000007Z\",\"level\":\"error\","
                      "\"subsystem\":\"log\",\"msg\":\"q\\\" (2 more)\"}\n") == 0);
    CHECK_EQ(len, strlen(out));
    sl_say_format(out, 0, (enum sl_say_level)9, false, "x", "", NULL);
    CHECK(strcmp(out, "1970-01-01T00:00:00.000000Z ? x: \n") == 0);

    /* A long message fills the line to its last byte; the suffix survives it. */
    char msg[2 * SL_SAY_FORMAT_BYTES];
    memset(msg, 'a', sizeof msg - 1);
    msg[sizeof msg - 1] = '\0';
    for (int json = 0; json <= 1; json++) {
        len = sl_say_format(out, 0, SL_SAY_INFO, json == 1, "tcp", msg, NULL);
        CHECK_EQ(len, SL_SAY_FORMAT_BYTES - 1);
        CHECK(out[len - 1] == '\n' && out[len] == '\0');
        len = sl_say_format(out, 0, SL_SAY_INFO, json == 1, "tcp", msg, " (7 more)");
        CHECK_EQ(len, SL_SAY_FORMAT_BYTES - 1);
        CHECK(strstr(out, json ? "a (7 more)\"}\n" : "a (7 more)\n") != NULL);
    }
}

/* C1 controls are escaped like C0 ones; the next code point (NBSP) is kept. */
static void test_c1(void)
{
    char out[SL_SAY_FORMAT_BYTES];
    const char *msg = "\xc2\x9b"
                      "31m \xc2\x85 \xc2\x80\xc2\x9f \xc2\xa0";
    sl_say_format(out, 0, SL_SAY_WARN, false, "tcp", msg, NULL);
    CHECK(strstr(out, "tcp: \\xc2\\x9b31m \\xc2\\x85 \\xc2\\x80\\xc2\\x9f \xc2\xa0\n") != NULL);
    sl_say_format(out, 0, SL_SAY_WARN, true, "tcp", msg, NULL);
    CHECK(strstr(out, "\"msg\":\"\\u009b31m \\u0085 \\u0080\\u009f \xc2\xa0\"}\n") != NULL);
}

/* A message just past sl_say's old 1,024-byte buffer: cut by nobody, its last character whole. */
static void test_cut_character(void)
{
    char msg[1100], out[4 * SL_SAY_LINE_BYTES];
    memset(msg, 'a', 1022);
    memcpy(msg + 1022,
           "\xc3\xa9"
           "bc",
           5);
    sl_say_configure(SL_SAY_INFO, false);
    capture_begin();
    sl_say(SL_SAY_INFO, "log", "%s", msg);
    capture_end(out, sizeof out);
    CHECK(strstr(out, "a\xc3\xa9"
                      "bc\n") != NULL);
    CHECK(strstr(out, "\\xc3") == NULL);
}

/* The held-back count survives a message that escaping makes longer than the line. */
static void test_limiter_escaped(void)
{
    static struct sl_say_limit limit;
    char msg[401], out[8192];
    memset(msg, 0x01, 400); /* 400 bytes, 1,600 escaped */
    msg[400] = '\0';
    for (int json = 0; json <= 1; json++) {
        sl_say_configure(SL_SAY_INFO, json == 1);
        capture_begin();
        atomic_store(&limit.next_ns, INT64_MAX);
        sl_say_limited(&limit, SL_SAY_WARN, "tcp", "%s", msg);
        atomic_store(&limit.next_ns, 0);
        sl_say_limited(&limit, SL_SAY_WARN, "tcp", "%s", msg);
        size_t len = capture_end(out, sizeof out);
        CHECK_EQ(count_char(out, '\n'), 1);
        CHECK(len <= SL_SAY_FORMAT_BYTES - 1);
        CHECK(strstr(out, json ? "1 (1 more like this since the last)\"}\n"
                               : "1 (1 more like this since the last)\n") != NULL);
    }
    sl_say_configure(SL_SAY_INFO, false);
}

int main(void)
{
    test_time();
    test_text();
    test_json();
    test_cut();
    test_limiter();
    test_format();
    test_c1();
    test_cut_character();
    test_limiter_escaped();
    TEST_END("test_say");
}
