/*
 * A minimal test harness: CHECK counts and reports failures with file:line
 * and keeps going; TEST_END prints "<name>: N checks passed" or the failure
 * count and returns the process status.
 */
#ifndef SL_TESTLIB_H
#define SL_TESTLIB_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

static unsigned long tl_checks, tl_failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        tl_checks++;                                                                               \
        if (!(cond)) {                                                                             \
            tl_failures++;                                                                         \
            if (tl_failures <= 50)                                                                 \
                fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);           \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_U64(a, b)                                                                         \
    do {                                                                                           \
        uint64_t tl_a = (uint64_t)(a), tl_b = (uint64_t)(b);                                       \
        tl_checks++;                                                                               \
        if (tl_a != tl_b) {                                                                        \
            tl_failures++;                                                                         \
            if (tl_failures <= 50)                                                                 \
                fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%" PRIu64 " != %" PRIu64 ")\n",    \
                        __FILE__, __LINE__, #a, #b, tl_a, tl_b);                                   \
        }                                                                                          \
    } while (0)

/* Two integers (as signed 64-bit), both printed on failure. */
#define CHECK_EQ(a, b)                                                                             \
    do {                                                                                           \
        long long tl_x = (long long)(a), tl_y = (long long)(b);                                    \
        tl_checks++;                                                                               \
        if (tl_x != tl_y) {                                                                        \
            tl_failures++;                                                                         \
            if (tl_failures <= 50)                                                                 \
                fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld != %lld)\n", __FILE__,         \
                        __LINE__, #a, #b, tl_x, tl_y);                                             \
        }                                                                                          \
    } while (0)

/* |a - b| <= tol * max(1, |b|) */
#define CHECK_NEAR(a, b, tol)                                                                      \
    do {                                                                                           \
        double tl_a = (a), tl_b = (b);                                                             \
        double tl_scale = fabs(tl_b) > 1 ? fabs(tl_b) : 1;                                         \
        tl_checks++;                                                                               \
        if (!(fabs(tl_a - tl_b) <= (tol)*tl_scale)) {                                              \
            tl_failures++;                                                                         \
            if (tl_failures <= 50)                                                                 \
                fprintf(stderr, "%s:%d: CHECK failed: %s ~ %s (%.17g vs %.17g)\n", __FILE__,       \
                        __LINE__, #a, #b, tl_a, tl_b);                                             \
        }                                                                                          \
    } while (0)

#define TEST_END(name)                                                                             \
    do {                                                                                           \
        if (tl_failures) {                                                                         \
            fprintf(stderr, "%s: %lu of %lu checks FAILED\n", name, tl_failures, tl_checks);       \
            return 1;                                                                              \
        }                                                                                          \
        printf("%s: %lu checks passed\n", name, tl_checks);                                        \
        return 0;                                                                                  \
    } while (0)

/* xorshift64*: deterministic pseudo-random numbers for reproducible tests. */
static inline uint64_t tl_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

#endif
