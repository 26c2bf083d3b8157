/*
 * The line protocol parser's own units (src/proto/line.c): precisions and
 * their conversion to microseconds (floor toward minus infinity, overflow
 * refused), canonical names (tag order, escapes, the 1,024-byte limit), the
 * limits on tags and fields, and each error class. The broad agreement with
 * an independent parser is test_line_parse.py's.
 */
#include <string.h>

#include "proto/line.h"
#include "testlib.h"

static struct sl_line line;
static char name[SL_LINE_NAME_MAX];
static uint16_t order[SL_LINE_TAGS_MAX];
static char big[1 << 16];

static int parse(const char *text)
{
    return sl_line_parse(text, strlen(text), &line);
}

/* The canonical name of field k of `text`, or "" when it does not parse or fit. */
static const char *name_of(const char *text, uint32_t k)
{
    static char out[SL_LINE_NAME_MAX + 1];
    out[0] = '\0';
    if (parse(text) != SL_LINE_OK) {
        return out;
    }
    int prefix = sl_line_series_prefix(&line, order, name, sizeof name);
    int len = prefix < 0 ? -1 : sl_line_series_name(&line, k, name, (size_t)prefix, sizeof name);
    if (len >= 0) {
        memcpy(out, name, (size_t)len);
        out[len] = '\0';
    }
    return out;
}

static void test_times(void)
{
    enum sl_line_precision p;
    const char *ok[] = {NULL, "", "n", "ns", "u", "us", "ms", "s", "m", "h"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        CHECK(sl_line_precision_parse(ok[i], &p) == 0);
    }
    CHECK(sl_line_precision_parse("x", &p) == -1);
    CHECK(sl_line_precision_parse("nss", &p) == -1);
    int64_t us;
    CHECK(sl_line_time_us(1999, SL_LINE_NS, &us) == 0 && us == 1);
    CHECK(sl_line_time_us(-1, SL_LINE_NS, &us) == 0 && us == -1);
    CHECK(sl_line_time_us(-1000, SL_LINE_NS, &us) == 0 && us == -1);
    CHECK(sl_line_time_us(-1001, SL_LINE_NS, &us) == 0 && us == -2);
    CHECK(sl_line_time_us(INT64_MIN, SL_LINE_NS, &us) == 0 && us == INT64_MIN / 1000 - 1);
    CHECK(sl_line_time_us(7, SL_LINE_US, &us) == 0 && us == 7);
    CHECK(sl_line_time_us(7, SL_LINE_MS, &us) == 0 && us == 7000);
    CHECK(sl_line_time_us(-2, SL_LINE_S, &us) == 0 && us == -2000000);
    CHECK(sl_line_time_us(3, SL_LINE_M, &us) == 0 && us == 180000000);
    CHECK(sl_line_time_us(2, SL_LINE_H, &us) == 0 && us == 7200000000ll);
    CHECK(sl_line_time_us(INT64_MAX / 1000 + 1, SL_LINE_MS, &us) == -1);
    CHECK(sl_line_time_us(INT64_MIN / 3600000000ll - 1, SL_LINE_H, &us) == -1);
    CHECK(sl_line_time_us(1, (enum sl_line_precision)9, &us) == -1);
}

static void test_names(void)
{
    CHECK(strcmp(name_of("boiler,site=north,room=a temp=1", 0), "boiler,room=a,site=north temp") == 0);
    CHECK(strcmp(name_of("boiler,room=a,site=north temp=1", 0), "boiler,room=a,site=north temp") == 0);
    CHECK(strcmp(name_of("m f=1,g=2", 1), "m g") == 0);
    /* Escapes come out minimal: \= in a measurement is a kept pair, = needs none there. */
    CHECK(strcmp(name_of("a\\ b\\,c=d,k\\ 1=v\\=2 f\\,x=1", 0), "a\\ b\\,c=d,k\\ 1=v\\=2 f\\,x") == 0);
    CHECK(strcmp(name_of("m,b=1,a=2,b=0 f=1", 0), "m,a=2,b=1,b=0 f") == 0); /* stable */
    CHECK(strcmp(name_of("m,a\\=x=1,a=2 f=1", 0), "m,a=2,a\\=x=1 f") == 0); /* by unescaped key */
    /* A name of exactly 1,024 bytes fits; one more does not. */
    memset(big, 0, sizeof big);
    size_t len = SL_LINE_NAME_MAX - 2; /* "<m> f" */
    memset(big, 'm', len);
    memcpy(big + len, " f=1", 4);
    CHECK(strlen(name_of(big, 0)) == SL_LINE_NAME_MAX);
    big[len] = 'm';
    memcpy(big + len + 1, " f=1", 4);
    CHECK(parse(big) == SL_LINE_OK && strlen(name_of(big, 0)) == 0);
}

static void test_limits_and_errors(void)
{
    size_t n = (size_t)snprintf(big, sizeof big, "m");
    for (unsigned k = 0; k < SL_LINE_TAGS_MAX; k++) {
        n += (size_t)snprintf(big + n, sizeof big - n, ",t%u=v", k);
    }
    snprintf(big + n, sizeof big - n, " f=1");
    CHECK(parse(big) == SL_LINE_OK && line.tag_count == SL_LINE_TAGS_MAX);
    snprintf(big + n, sizeof big - n, ",x=y f=1");
    CHECK_EQ(parse(big), -SL_LINE_TOO_MANY_TAGS);
    n = (size_t)snprintf(big, sizeof big, "m ");
    for (unsigned k = 0; k <= SL_LINE_FIELDS_MAX; k++) {
        n += (size_t)snprintf(big + n, sizeof big - n, "%sf%u=1", k ? "," : "", k);
    }
    CHECK_EQ(parse(big), -SL_LINE_TOO_MANY_FIELDS);
    struct {
        const char *text;
        int want;
    } cases[] = {
        {"", SL_LINE_SKIP}, {"   ", SL_LINE_SKIP}, {"  # x", SL_LINE_SKIP}, {"\r", SL_LINE_SKIP},
        {",t=1 f=1", -SL_LINE_MISSING_MEASUREMENT}, {" f=1", -SL_LINE_MISSING_FIELDS},
        {"m", -SL_LINE_MISSING_FIELDS}, {"m ", -SL_LINE_MISSING_FIELDS}, {"m,t f=1", -SL_LINE_BAD_TAG},
        {"m,=v f=1", -SL_LINE_BAD_TAG}, {"m,t= f=1", -SL_LINE_BAD_TAG}, {"m,t=a=b f=1", -SL_LINE_BAD_TAG},
        {"m f", -SL_LINE_BAD_FIELD}, {"m =1", -SL_LINE_BAD_FIELD}, {"m f=", -SL_LINE_BAD_VALUE},
        {"m f=x", -SL_LINE_BAD_VALUE}, {"m f=1.2.3", -SL_LINE_BAD_VALUE}, {"m f=1e", -SL_LINE_BAD_VALUE},
        {"m f=nan", -SL_LINE_BAD_VALUE}, {"m f=0x10", -SL_LINE_BAD_VALUE},
        {"m f=9223372036854775808i", -SL_LINE_BAD_VALUE}, {"m f=-1u", -SL_LINE_BAD_VALUE},
        {"m f=\"x", -SL_LINE_UNTERMINATED_STRING}, {"m f=\"x\"y", -SL_LINE_BAD_VALUE},
        {"m f=1 x", -SL_LINE_BAD_TIMESTAMP}, {"m f=1 +1", -SL_LINE_BAD_TIMESTAMP},
        {"m f=1 9223372036854775808", -SL_LINE_BAD_TIMESTAMP}, {"m f=1 1 2", -SL_LINE_TRAILING_GARBAGE},
        {"m\\", -SL_LINE_BAD_ESCAPE}, {"m,t=v\\", -SL_LINE_BAD_ESCAPE},
        {"m f=1 -9223372036854775808", SL_LINE_OK}, {"m f=1   1  ", SL_LINE_OK}, {"m f=1\r", SL_LINE_OK},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = parse(cases[i].text);
        if (rc != cases[i].want) {
            fprintf(stderr, "case %zu %s: got %d (%s), want %d\n", i, cases[i].text, rc,
                    sl_line_error_name(rc), cases[i].want);
        }
        CHECK_EQ(rc, cases[i].want);
    }
    CHECK(strcmp(sl_line_error_name(-SL_LINE_BAD_TAG), "bad_tag") == 0);
    CHECK(strcmp(sl_line_error_name(99), "unknown") == 0);
}

static void test_values(void)
{
    CHECK(parse("m a=1.5,b=-2e-3,c=7,d=12i,e=12u,f=t,g=FALSE,h=\"on\",i=16777217,j=1e39") == SL_LINE_OK);
    CHECK(line.field_count == 10);
    CHECK(line.fields[0].type == SL_LINE_FLOAT && line.fields[0].value == 1.5f);
    CHECK(line.fields[1].value == -2e-3f && line.fields[2].value == 7.0f);
    CHECK(line.fields[3].type == SL_LINE_INT && line.fields[3].integer == 12 && line.fields[3].value == 12.0f);
    CHECK(line.fields[4].type == SL_LINE_UINT && line.fields[4].uinteger == 12);
    CHECK(line.fields[5].type == SL_LINE_BOOL && line.fields[5].value == 1.0f);
    CHECK(line.fields[6].type == SL_LINE_BOOL && line.fields[6].value == 0.0f);
    CHECK(line.fields[7].type == SL_LINE_STRING && line.fields[7].text.n == 2);
    CHECK(line.fields[8].value == 16777216.0f); /* nearest f32, ties to even */
    CHECK(line.fields[9].value > 3.4e38f);      /* overflows f32: infinity, rejected later */
    CHECK(!line.has_time);
}

int main(void)
{
    test_times();
    test_names();
    test_limits_and_errors();
    test_values();
    TEST_END("test_line");
}
