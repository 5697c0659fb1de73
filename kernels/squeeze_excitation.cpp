#include "kernels/squeeze_excitation.h"

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "kernels/quantize.h"
#include "kernels/requantize_simd.h"

namespace qdet {
namespace {

// Per-channel sums over the plane, split across threads by rows. Integer
// inputs sum exactly in int64; float inputs in float per row, then double.
template <typename T>
void channel_sums(const FeatureView<const T> &x, double *sums) {
    using Accumulator = std::conditional_t<std::is_integral_v<T>, int64_t, double>;
    using RowSum = std::conditional_t<std::is_integral_v<T>, int32_t, float>;
    const int padded = x.padded_channels;
    std::vector<Accumulator> total(static_cast<size_t>(padded), 0);
#pragma omp parallel
    {
        std::vector<Accumulator> mine(static_cast<size_t>(padded), 0);
        std::vector<RowSum> row(static_cast<size_t>(x.block));
#pragma omp for schedule(static) nowait
        for (int r = 0; r < x.blocks() * x.height; ++r) {
            const int b = r / x.height, y = r % x.height;
            std::fill(row.begin(), row.end(), RowSum(0));
            const T *v = x.run(b, y, 0);
            for (int col = 0; col < x.width; ++col, v += x.block) {
#pragma omp simd
                for (int c = 0; c < x.block; ++c) row[c] += static_cast<RowSum>(v[c]);
            }
            for (int c = 0; c < x.block; ++c) mine[b * x.block + c] += row[c];
        }
#pragma omp critical
        for (int c = 0; c < padded; ++c) total[c] += mine[c];
    }
    for (int c = 0; c < x.channels; ++c) sums[c] = static_cast<double>(total[c]);
}

// `scales` null means 1 for every channel.
template <typename T>
void channel_means_impl(const FeatureView<const T> &x, const float *scales, float *means) {
    std::vector<double> sums(static_cast<size_t>(x.channels));
    channel_sums(x, sums.data());
    const double count = static_cast<double>(x.height) * x.width;
    for (int c = 0; c < x.channels; ++c) {
        means[c] = static_cast<float>(sums[c] / count * (scales != nullptr ? scales[c] : 1.f));
    }
}

}  // namespace

void channel_means(const FeatureView<const float> &x, float *means) { channel_means_impl(x, nullptr, means); }
void channel_means(const FeatureView<const int8_t> &x, const float *scales, float *means) {
    channel_means_impl(x, scales, means);
}
void channel_means(const FeatureView<const uint8_t> &x, const float *scales, float *means) {
    channel_means_impl(x, scales, means);
}

void excitation_scales(const SqueezeExcitationWeights &w, const float *means, float *scratch, float *scales) {
    for (int s = 0; s < w.squeeze_channels; ++s) {
        const float *row = w.fc1_weight + static_cast<size_t>(s) * w.channels;
        float acc = 0.f;
#pragma omp simd reduction(+ : acc)
        for (int c = 0; c < w.channels; ++c) acc += row[c] * means[c];
        scratch[s] = std::max(acc + w.fc1_bias[s], 0.f);
    }
    for (int c = 0; c < w.channels; ++c) {
        const float *row = w.fc2_weight + static_cast<size_t>(c) * w.squeeze_channels;
        float acc = 0.f;
#pragma omp simd reduction(+ : acc)
        for (int s = 0; s < w.squeeze_channels; ++s) acc += row[s] * scratch[s];
        // hardsigmoid(v) = min(max(v + 3, 0), 6) / 6, as torch computes it
        scales[c] = std::min(std::max(acc + w.fc2_bias[c] + 3.f, 0.f), 6.f) / 6.f;
    }
}

void scale_channels(const FeatureView<float> &x, const float *scales) {
    const int rows = x.blocks() * x.height;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; ++r) {
        const int b = r / x.height, y = r % x.height;
        const int n = x.block_channels(b);
        const float *s = scales + b * x.block;
        float *v = x.run(b, y, 0);
        for (int xx = 0; xx < x.width; ++xx, v += x.block) {
#pragma omp simd
            for (int c = 0; c < n; ++c) v[c] *= s[c];
        }
    }
}

template <typename T>
void scale_channels(const FeatureView<const T> &x, const float *in_scales, const float *scales,
                    const float *out_scales, const FeatureView<T> &out) {
    std::vector<float> factors(static_cast<size_t>(x.padded_channels), 0.f);
    for (int c = 0; c < x.channels; ++c) factors[c] = scales[c] * in_scales[c] / out_scales[c];
    const int rows = x.blocks() * x.height;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; ++r) {
        const int b = r / x.height, y = r % x.height;
        const int n = x.block_channels(b);
        const float *f = factors.data() + b * x.block;
        const T *v = x.run(b, y, 0);
        T *o = out.run(b, y, 0);
        for (int xx = 0; xx < x.width; ++xx, v += x.block, o += out.block) simd::scale_run(v, f, n, o);
    }
}

template void scale_channels<int8_t>(const FeatureView<const int8_t> &, const float *, const float *,
                                     const float *, const FeatureView<int8_t> &);
template void scale_channels<uint8_t>(const FeatureView<const uint8_t> &, const float *, const float *,
                                      const float *, const FeatureView<uint8_t> &);

}  // namespace qdet
