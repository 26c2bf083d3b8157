/* Hashing for the fixed tables (sensor index, streams, TCP addresses). */
#ifndef SL_CORE_HASH_H
#define SL_CORE_HASH_H

#include <stdint.h>

/*
 * A 64-bit finaliser (MurmurHash3's fmix64): every input bit moves every
 * output bit, so the top bits a table keeps are well spread for any pattern
 * of ids (sequential, strided, multiples of a constant). A plain
 * multiply-shift with a random multiplier clusters badly on strided ids
 * under linear probing (measured: thousands of probes a lookup).
 */
static inline uint64_t sl_mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

#endif
