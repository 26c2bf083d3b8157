/* Helpers shared by the store's writer (store.c) and reader (view.c) sides. */
#ifndef SL_STORE_INTERNAL_H
#define SL_STORE_INTERNAL_H

#include <stdint.h>

#include "core/hash.h"

/* Floor division for b > 0: the coarse bucket of a (possibly negative) time. */
static inline int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

/* Non-negative remainder for b > 0: a bucket's slot in its ring. */
static inline uint32_t floor_mod(int64_t a, uint32_t b)
{
    int64_t r = a % (int64_t)b;
    return (uint32_t)(r < 0 ? r + b : r);
}

/*
 * Prefetch a line the writer will touch soon. Not __builtin_prefetch: GCC 12
 * deletes a loop whose only effect is __builtin_prefetch (measured: the
 * apply pipeline's ring pass compiled to nothing), so the x86 instruction is
 * issued by hand, in an asm the compiler must keep.
 */
static inline void sl_prefetch(const void *p)
{
#if defined(__x86_64__) || defined(__i386__)
    __asm__ volatile("prefetcht0 %0" : : "m"(*(const char *)p));
#else
    __builtin_prefetch(p, 1, 3);
#endif
}

#endif
