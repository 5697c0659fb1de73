#include "engine/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace qdet {
namespace {

constexpr uint32_t kReflectedPolynomial = 0x82F63B78u;

std::array<uint32_t, 256> make_table() {
    std::array<uint32_t, 256> table{};
    for (uint32_t i = 0; i < 256; ++i) {
        uint32_t value = i;
        for (int bit = 0; bit < 8; ++bit) {
            value = (value & 1u) ? (value >> 1) ^ kReflectedPolynomial : value >> 1;
        }
        table[i] = value;
    }
    return table;
}

uint32_t crc32c_portable(const uint8_t *p, size_t size, uint32_t state) {
    static const std::array<uint32_t, 256> table = make_table();
    for (size_t i = 0; i < size; ++i) state = table[(state ^ p[i]) & 0xFFu] ^ (state >> 8);
    return state;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t crc32c_sse42(const uint8_t *p, size_t size, uint32_t state) {
    uint64_t state64 = state;
    while (size >= 8) {
        uint64_t word;
        std::memcpy(&word, p, 8);
        state64 = _mm_crc32_u64(state64, word);
        p += 8;
        size -= 8;
    }
    uint32_t state32 = static_cast<uint32_t>(state64);
    while (size > 0) {
        state32 = _mm_crc32_u8(state32, *p);
        ++p;
        --size;
    }
    return state32;
}
#endif

}  // namespace

uint32_t crc32c(const void *data, size_t size, uint32_t crc) {
    const auto *p = static_cast<const uint8_t *>(data);
    uint32_t state = ~crc;
#if defined(__x86_64__)
    static const bool has_sse42 = __builtin_cpu_supports("sse4.2");
    if (has_sse42) return ~crc32c_sse42(p, size, state);
#endif
    return ~crc32c_portable(p, size, state);
}

}  // namespace qdet
