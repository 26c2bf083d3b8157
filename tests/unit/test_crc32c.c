/*
 * Proves that CRC-32C is right and that its two implementations agree:
 * - the published check values (crc32c("123456789") = 0xE3069283, the
 *   RFC 3720 iSCSI vectors), the empty input, and the CRC stored in every
 *   spec vector file (docs/spec/vectors; batch_badcrc.bin must not match);
 * - the slicing-by-8 tables, by comparing the portable path with a bitwise
 *   reference written here from the polynomial alone;
 * - the SSE4.2 path equals the portable one for every length 0..1024 at
 *   random alignments, at the block boundaries of its three-stream loop, on
 *   random long lengths and on a large buffer (skipped, with a note, only
 *   when the CPU lacks SSE4.2);
 * - sl_crc32c_extend over any split point equals the CRC of the whole.
 * Random buffers come from a fixed-seed generator, so a failure reproduces.
 */
#include "core/crc32c.h"
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/protocol.h"

#define CHECK_EQ32(a, b) CHECK_EQ((uint32_t)(a), (uint32_t)(b))

#define LARGE_BYTES ((size_t)(8u << 20) + 13u) /* odd, and many 3 x 8 KiB blocks */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rng_next(void)
{
    /* xorshift64*: fast, deterministic, good enough for test data. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

static size_t rng_below(size_t bound)
{
    return (size_t)(rng_next() % bound);
}

static void fill_random(uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = (uint8_t)(rng_next() >> 56);
    }
}

/* Bit at a time from the polynomial, in the finished-CRC convention of crc32c.h. */
static uint32_t ref_crc32c(uint32_t crc, const uint8_t *buf, size_t len)
{
    uint32_t reg = ~crc;
    for (size_t i = 0; i < len; i++) {
        reg ^= buf[i];
        for (int bit = 0; bit < 8; bit++) {
            reg = (reg >> 1) ^ ((reg & 1u) ? 0x82F63B78u : 0u);
        }
    }
    return ~reg;
}

static void test_known_values(bool hw)
{
    static const char check[] = "123456789";
    CHECK_EQ32(sl_crc32c(check, 9), 0xE3069283u);
    CHECK_EQ32(sl_crc32c_sw(0, check, 9), 0xE3069283u);
    CHECK_EQ32(sl_crc32c_extend(0, check, 9), 0xE3069283u);
    CHECK_EQ32(ref_crc32c(0, (const uint8_t *)check, 9), 0xE3069283u);
    CHECK_EQ32(sl_crc32c_extend(sl_crc32c(check, 4), check + 4, 5), 0xE3069283u);
    if (hw) {
        CHECK_EQ32(sl_crc32c_hw(0, check, 9), 0xE3069283u);
    }

    /* Empty input: 0, and extending by nothing changes nothing, even from NULL. */
    CHECK_EQ32(sl_crc32c(check, 0), 0);
    CHECK_EQ32(sl_crc32c(NULL, 0), 0);
    CHECK_EQ32(sl_crc32c_sw(0, NULL, 0), 0);
    CHECK_EQ32(sl_crc32c_extend(0xE3069283u, NULL, 0), 0xE3069283u);
    CHECK_EQ32(sl_crc32c_sw(0x12345678u, check, 0), 0x12345678u);
    if (hw) {
        CHECK_EQ32(sl_crc32c_hw(0, NULL, 0), 0);
        CHECK_EQ32(sl_crc32c_hw(0x12345678u, check, 0), 0x12345678u);
    }

    /* RFC 3720, appendix B.4. */
    uint8_t buf[32];
    uint32_t expect[4] = {0x8A9136AAu, 0x62A8AB43u, 0x46DD794Eu, 0x113FDB5Cu};
    for (int which = 0; which < 4; which++) {
        for (int i = 0; i < 32; i++) {
            buf[i] = which == 0   ? 0x00
                     : which == 1 ? 0xFF
                     : which == 2 ? (uint8_t)i
                                  : (uint8_t)(31 - i);
        }
        CHECK_EQ32(sl_crc32c(buf, sizeof buf), expect[which]);
        CHECK_EQ32(sl_crc32c_sw(0, buf, sizeof buf), expect[which]);
        if (hw) {
            CHECK_EQ32(sl_crc32c_hw(0, buf, sizeof buf), expect[which]);
        }
    }
}

/* Reads a spec vector into buf; returns its length, or 0 (after a failed check) when unreadable. */
static size_t read_vector(const char *name, uint8_t *buf, size_t cap)
{
    char path[512];
    snprintf(path, sizeof path, "%s/vectors/%s", SL_SPEC_DIR, name);
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (f == NULL) {
        fprintf(stderr, "cannot open %s\n", path);
        return 0;
    }
    size_t len = fread(buf, 1, cap, f);
    CHECK(ferror(f) == 0);
    CHECK(len < cap); /* the whole file fitted */
    fclose(f);
    return len;
}

static void test_spec_vectors(void)
{
    static const char *const good[] = {"batch_ok.bin", "batch_nan.bin", "ack_ok.bin",
                                       "ack_nan.bin"};
    uint8_t buf[256];
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        size_t len = read_vector(good[i], buf, sizeof buf);
        CHECK(len > SL_CRC_BYTES);
        if (len <= SL_CRC_BYTES) {
            continue;
        }
        uint32_t stored = sl_load_u32(buf + len - SL_CRC_BYTES);
        CHECK_EQ32(sl_crc32c(buf, len - SL_CRC_BYTES), stored);
        CHECK_EQ32(sl_crc32c_sw(0, buf, len - SL_CRC_BYTES), stored);
    }
    /* The values themselves, as PROTOCOL.md's hex dump and the files hold them. */
    size_t len = read_vector("batch_ok.bin", buf, sizeof buf);
    CHECK(len == 72);
    CHECK_EQ32(sl_crc32c(buf, 68), 0x9E9A868Au);
    len = read_vector("batch_nan.bin", buf, sizeof buf);
    CHECK(len == 60);
    CHECK_EQ32(sl_crc32c(buf, 56), 0x6D5948AFu);
    len = read_vector("ack_ok.bin", buf, sizeof buf);
    CHECK(len == 32);
    CHECK_EQ32(sl_crc32c(buf, 28), 0x209AF802u);
    len = read_vector("ack_nan.bin", buf, sizeof buf);
    CHECK(len == 32);
    CHECK_EQ32(sl_crc32c(buf, 28), 0x4FB943E7u);

    /* One flipped bit: the stored CRC (batch_ok's) must no longer match. */
    len = read_vector("batch_badcrc.bin", buf, sizeof buf);
    CHECK(len == 72);
    if (len == 72) {
        CHECK_EQ32(sl_load_u32(buf + 68), 0x9E9A868Au);
        CHECK(sl_crc32c(buf, 68) != sl_load_u32(buf + 68));
    }
}

/* sw against the bitwise reference: proves the tables, at every length and alignment. */
static void test_sw_tables(uint8_t *pool)
{
    for (size_t len = 0; len <= 1024; len++) {
        size_t align = rng_below(8);
        uint8_t *p = pool + align;
        fill_random(p, len);
        uint32_t seed = (len % 3 == 0) ? 0 : (uint32_t)rng_next();
        CHECK_EQ32(sl_crc32c_sw(seed, p, len), ref_crc32c(seed, p, len));
    }
}

/* hw against sw, whole and split, for one buffer. */
static void compare_paths(const uint8_t *p, size_t len, bool hw)
{
    uint32_t sw = sl_crc32c_sw(0, p, len);
    CHECK_EQ32(sl_crc32c(p, len), sw);
    size_t split = len == 0 ? 0 : rng_below(len + 1);
    CHECK_EQ32(sl_crc32c_extend(sl_crc32c(p, split), p + split, len - split), sw);
    CHECK_EQ32(sl_crc32c_sw(sl_crc32c_sw(0, p, split), p + split, len - split), sw);
    if (hw) {
        CHECK_EQ32(sl_crc32c_hw(0, p, len), sw);
        CHECK_EQ32(sl_crc32c_hw(sl_crc32c_hw(0, p, split), p + split, len - split), sw);
        /* Mixed: each path continues the other's CRC. */
        CHECK_EQ32(sl_crc32c_sw(sl_crc32c_hw(0, p, split), p + split, len - split), sw);
        CHECK_EQ32(sl_crc32c_hw(sl_crc32c_sw(0, p, split), p + split, len - split), sw);
    }
}

static void test_agreement(uint8_t *pool, size_t pool_bytes, bool hw)
{
    /* Every short length, at a random alignment. */
    for (size_t len = 0; len <= 1024; len++) {
        uint8_t *p = pool + rng_below(16);
        fill_random(p, len);
        compare_paths(p, len, hw);
    }
    /* Around the three-stream block boundaries (3 x 256 and 3 x 8192) and their multiples. */
    static const size_t edges[] = {767,   768,         769,   775,         776,
                                   1536,  1543,        24575, 24576,       24577,
                                   24583, 24576 + 768, 49152, 49152 + 767, 65536};
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++) {
        for (size_t align = 0; align < 8; align++) {
            uint8_t *p = pool + align;
            fill_random(p, edges[i]);
            compare_paths(p, edges[i], hw);
        }
    }
    /* Random longer lengths. */
    for (int round = 0; round < 200; round++) {
        size_t len = 1025 + rng_below(200000);
        uint8_t *p = pool + rng_below(64);
        CHECK(len + 64 <= pool_bytes);
        fill_random(p, len);
        compare_paths(p, len, hw);
    }
}

/* A large buffer: whole, and as a chain of random-sized pieces through extend(). */
static void test_large(bool hw)
{
    uint8_t *big = malloc(LARGE_BYTES);
    CHECK(big != NULL);
    if (big == NULL) {
        return;
    }
    fill_random(big, LARGE_BYTES);
    uint32_t sw = sl_crc32c_sw(0, big, LARGE_BYTES);
    CHECK_EQ32(sl_crc32c(big, LARGE_BYTES), sw);
    CHECK_EQ32(ref_crc32c(0, big, LARGE_BYTES), sw);
    if (hw) {
        CHECK_EQ32(sl_crc32c_hw(0, big, LARGE_BYTES), sw);
        CHECK_EQ32(sl_crc32c_hw(0, big + 3, LARGE_BYTES - 3),
                   sl_crc32c_sw(0, big + 3, LARGE_BYTES - 3));
    }
    uint32_t crc = 0;
    size_t done = 0;
    for (int piece = 0; done < LARGE_BYTES; piece++) {
        size_t n = rng_below(100000);
        if (n > LARGE_BYTES - done) {
            n = LARGE_BYTES - done;
        }
        crc = (hw && piece % 2 == 0) ? sl_crc32c_hw(crc, big + done, n)
                                     : sl_crc32c_extend(crc, big + done, n);
        done += n;
    }
    CHECK_EQ32(crc, sw);
    free(big);
}

int main(void)
{
    bool hw = sl_crc32c_hw_available();
#if defined(__x86_64__)
    __builtin_cpu_init();
    CHECK(hw == (__builtin_cpu_supports("sse4.2") != 0));
#endif
    if (!hw) {
        printf("test_crc32c: note: no SSE4.2 on this CPU, hardware comparison skipped\n");
    }
    CHECK(sl_crc32c_hw_available() == hw); /* the cached answer is stable */

    size_t pool_bytes = 256u * 1024u;
    uint8_t *pool = malloc(pool_bytes);
    CHECK(pool != NULL);
    if (pool == NULL) {
        return 1;
    }
    test_known_values(hw);
    test_spec_vectors();
    test_sw_tables(pool);
    test_agreement(pool, pool_bytes, hw);
    test_large(hw);
    free(pool);

    if (!hw) {
        printf("test_crc32c: no SSE4.2 on this CPU: software path only\n");
    }
    TEST_END("test_crc32c");
}
