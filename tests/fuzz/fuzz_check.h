/*
 * What the fuzz targets share: FUZZ_CHECK, an invariant that holds for
 * every input; a violation stops the run at once (a trap, which libFuzzer
 * reports as a crash with the input that caused it).
 */
#ifndef SL_FUZZ_CHECK_H
#define SL_FUZZ_CHECK_H

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            __builtin_trap();                                                                      \
        }                                                                                          \
    } while (0)

#endif
