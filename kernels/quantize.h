// Symmetric linear quantization: real = scale * q. Rounding is to nearest,
// halves to even (the default rounding mode, as oneDNN uses), and values
// saturate at the type's limits.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace qdet {

template <typename Q>
inline Q saturate_round(float value) {
    const float lo = static_cast<float>(std::numeric_limits<Q>::min());
    const float hi = static_cast<float>(std::numeric_limits<Q>::max());
    return static_cast<Q>(std::nearbyint(std::min(std::max(value, lo), hi)));
}

// q = round(real / scale), multiplied by the precomputed reciprocal.
template <typename Q>
inline Q quantize_value(float real, float inverse_scale) {
    return saturate_round<Q>(real * inverse_scale);
}

template <typename Q>
inline float dequantize_value(Q q, float scale) {
    return scale * static_cast<float>(q);
}

template <typename Q>
void quantize(const float *in, size_t n, float scale, Q *out) {
    const float inverse = 1.f / scale;
    for (size_t i = 0; i < n; ++i) out[i] = quantize_value<Q>(in[i], inverse);
}

template <typename Q>
void dequantize(const Q *in, size_t n, float scale, float *out) {
    for (size_t i = 0; i < n; ++i) out[i] = dequantize_value(in[i], scale);
}

// Moves values from scale `in_scale` to `out_scale`: q' = round(q * in / out).
template <typename Qin, typename Qout>
void requantize(const Qin *in, size_t n, float in_scale, float out_scale, Qout *out) {
    const float factor = in_scale / out_scale;
    for (size_t i = 0; i < n; ++i) out[i] = saturate_round<Qout>(static_cast<float>(in[i]) * factor);
}

}  // namespace qdet
