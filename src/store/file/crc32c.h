/* CRC-32C (Castagnoli), the checksum of every record in the file store. Uses the SSE4.2
 * instruction when the CPU has it, a table otherwise; both give the same value. */
#ifndef KQ_STORE_FILE_CRC32C_H
#define KQ_STORE_FILE_CRC32C_H
#include <stddef.h>
#include <stdint.h>

uint32_t kq_crc32c(uint32_t crc, const void *data, size_t len);
#endif
