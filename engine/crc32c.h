// CRC-32C (Castagnoli polynomial 0x1EDC6F41, reflected), the checksum of the
// qdet weight file. Uses the SSE4.2 crc32 instruction when the CPU has it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace qdet {

// Continues a checksum: pass the previous result as `crc` (0 to start).
uint32_t crc32c(const void *data, size_t size, uint32_t crc = 0);

}  // namespace qdet
