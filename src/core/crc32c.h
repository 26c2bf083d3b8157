/*
 * CRC-32C (Castagnoli): reflected polynomial 0x82F63B78, initial value and
 * final XOR 0xFFFFFFFF, so sl_crc32c("123456789", 9) == 0xE3069283.
 *
 * sl_crc32c() uses the SSE4.2 crc32 instruction when the CPU has it (checked
 * once, at first use, with __builtin_cpu_supports) and the portable
 * slicing-by-8 table otherwise. Both are exposed so tests can compare them.
 * Pure functions of their input; any thread.
 */
#ifndef SL_CORE_CRC32C_H
#define SL_CORE_CRC32C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* CRC-32C of buf[0, len). */
uint32_t sl_crc32c(const void *buf, size_t len);

/*
 * Continue a CRC: crc is the value returned for the bytes so far (0 for
 * none), so sl_crc32c_extend(sl_crc32c(a), b) == sl_crc32c(a || b).
 */
uint32_t sl_crc32c_extend(uint32_t crc, const void *buf, size_t len);

/* The portable table implementation, and the hardware one (only when available). */
uint32_t sl_crc32c_sw(uint32_t crc, const void *buf, size_t len);
uint32_t sl_crc32c_hw(uint32_t crc, const void *buf, size_t len);
bool sl_crc32c_hw_available(void);

#endif
