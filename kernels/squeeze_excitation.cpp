#include "kernels/squeeze_excitation.h"

#include <algorithm>
#include <vector>

#include "kernels/quantize.h"

namespace qdet {
namespace {

template <typename T>
void channel_sums(const FeatureView<const T> &x, double *sums) {
    std::fill(sums, sums + x.channels, 0.0);
    for (int b = 0; b < x.blocks(); ++b) {
        const int n = x.block_channels(b);
        const T *base = x.run(b, 0, 0);
        std::vector<float> partial(static_cast<size_t>(n), 0.f);
        // float partial sums per row keep the vector loop; rows add in double
        for (int y = 0; y < x.height; ++y) {
            std::fill(partial.begin(), partial.end(), 0.f);
            for (int xx = 0; xx < x.width; ++xx) {
                const T *v = base + (static_cast<size_t>(y) * x.width + xx) * x.block;
#pragma omp simd
                for (int c = 0; c < n; ++c) partial[c] += static_cast<float>(v[c]);
            }
            for (int c = 0; c < n; ++c) sums[b * x.block + c] += partial[c];
        }
    }
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
    const float lo = static_cast<float>(std::numeric_limits<T>::min());
    const float hi = static_cast<float>(std::numeric_limits<T>::max());
    const int rows = x.blocks() * x.height;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; ++r) {
        const int b = r / x.height, y = r % x.height;
        const int n = x.block_channels(b);
        const float *f = factors.data() + b * x.block;
        const T *v = x.run(b, y, 0);
        T *o = out.run(b, y, 0);
        for (int xx = 0; xx < x.width; ++xx, v += x.block, o += out.block) {
#pragma omp simd
            for (int c = 0; c < n; ++c) {
                const float value = std::min(std::max(static_cast<float>(v[c]) * f[c], lo), hi);
                o[c] = static_cast<T>(std::nearbyint(value));
            }
        }
    }
}

template void scale_channels<int8_t>(const FeatureView<const int8_t> &, const float *, const float *,
                                     const float *, const FeatureView<int8_t> &);
template void scale_channels<uint8_t>(const FeatureView<const uint8_t> &, const float *, const float *,
                                      const float *, const FeatureView<uint8_t> &);

}  // namespace qdet
