/*
 * Assertions that stay on in release builds (SL_ASSERT) and debug-only ones
 * for O(n) checks (SL_DEBUG_ASSERT). A broken invariant is a bug: print where
 * and abort, so that a core dump shows the state. Never assert on input.
 */
#ifndef SL_CORE_ASSERT_H
#define SL_CORE_ASSERT_H

#include <stdio.h>
#include <stdlib.h>

#define SL_LIKELY(x) __builtin_expect(!!(x), 1)
#define SL_UNLIKELY(x) __builtin_expect(!!(x), 0)

#define SL_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (SL_UNLIKELY(!(cond))) {                                                                \
            fprintf(stderr, "sluice: assertion failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#ifdef SL_DEBUG
#define SL_DEBUG_ASSERT(cond) SL_ASSERT(cond)
#else
#define SL_DEBUG_ASSERT(cond) ((void)0)
#endif

#define SL_ARRAY_COUNT(a) (sizeof(a) / sizeof((a)[0]))

#endif
