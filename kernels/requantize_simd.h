// Inner loops shared by the INT8 kernels: a run of n channels at one
// position, each multiplied by its own factor, rounded to nearest even and
// saturated to the output type. AVX-512 when the build targets it, else
// portable C++ with the same results.
#pragma once

#include <cstdint>

#include "kernels/quantize.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>
#define QDET_AVX512 1
#endif

namespace qdet::simd {

#ifdef QDET_AVX512
// GCC 12 reports the masked intrinsics' internal pass-through operand as
// possibly uninitialized; it is not read.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
inline __m512 load_as_float(const int8_t *p, __mmask16 mask) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, p)));
}
inline __m512 load_as_float(const uint8_t *p, __mmask16 mask) {
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, p)));
}
// Rounds with the default MXCSR mode (to nearest, ties to even).
inline void store_rounded(int8_t *p, __m512 v, __mmask16 mask) {
    _mm_mask_storeu_epi8(p, mask, _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(v)));
}
inline void store_rounded(uint8_t *p, __m512 v, __mmask16 mask) {
    const __m512i rounded = _mm512_max_epi32(_mm512_cvtps_epi32(v), _mm512_setzero_si512());
    _mm_mask_storeu_epi8(p, mask, _mm512_cvtusepi32_epi8(rounded));
}
inline __mmask16 tail_mask(int remaining) {
    return remaining >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << remaining) - 1u);
}
#pragma GCC diagnostic pop
#endif

// out[c] = saturate(round(in[c] * factors[c])), c < n. `out` may alias `in`.
template <typename T>
inline void scale_run(const T *in, const float *factors, int n, T *out) {
#ifdef QDET_AVX512
    for (int c = 0; c < n; c += 16) {
        const __mmask16 mask = tail_mask(n - c);
        const __m512 v = _mm512_mul_ps(load_as_float(in + c, mask), _mm512_maskz_loadu_ps(mask, factors + c));
        store_rounded(out + c, v, mask);
    }
#else
    for (int c = 0; c < n; ++c) out[c] = saturate_round<T>(static_cast<float>(in[c]) * factors[c]);
#endif
}

// out[c] = saturate(round(in[c] * factors[c])) from float input, c < n.
inline void quantize_run(const float *in, const float *factors, int n, int8_t *out) {
#ifdef QDET_AVX512
    for (int c = 0; c < n; c += 16) {
        const __mmask16 mask = tail_mask(n - c);
        store_rounded(out + c, _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, in + c), _mm512_maskz_loadu_ps(mask, factors + c)),
                      mask);
    }
#else
    for (int c = 0; c < n; ++c) out[c] = saturate_round<int8_t>(in[c] * factors[c]);
#endif
}

// out[c] = saturate(round(a[c] * fa[c] + b[c] * fb[c])), c < n. `out` may
// alias `a` or `b`.
inline void add_run(const int8_t *a, const float *fa, const int8_t *b, const float *fb, int n, int8_t *out) {
#ifdef QDET_AVX512
    for (int c = 0; c < n; c += 16) {
        const __mmask16 mask = tail_mask(n - c);
        const __m512 x = _mm512_mul_ps(load_as_float(a + c, mask), _mm512_maskz_loadu_ps(mask, fa + c));
        const __m512 v = _mm512_fmadd_ps(load_as_float(b + c, mask), _mm512_maskz_loadu_ps(mask, fb + c), x);
        store_rounded(out + c, v, mask);
    }
#else
    for (int c = 0; c < n; ++c) {
        out[c] = saturate_round<int8_t>(static_cast<float>(a[c]) * fa[c] + static_cast<float>(b[c]) * fb[c]);
    }
#endif
}

}  // namespace qdet::simd
