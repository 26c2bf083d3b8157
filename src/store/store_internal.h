/* Helpers shared by the store's writer (store.c) and reader (view.c) sides. */
#ifndef SL_STORE_INTERNAL_H
#define SL_STORE_INTERNAL_H

#include <stdint.h>

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

#endif
