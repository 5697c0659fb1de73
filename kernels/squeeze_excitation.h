// Squeeze-excitation of MobileNetV3 (torchvision's SqueezeExcitation):
//   scale = hardsigmoid(fc2(relu(fc1(mean over H, W of x))))
//   out   = scale[c] * x[c]
// The two 1x1 convolutions act on one vector per image, so they run here as
// small matrix-vector products in FP32 in every precision. oneDNN
// primitives would cost more to call than to compute.
#pragma once

#include <cstdint>

#include "kernels/feature_view.h"

namespace qdet {

// Per-channel means over the spatial plane. For quantized input the means
// are of the real values scales[c] * q.
void channel_means(const FeatureView<const float> &x, float *means);
void channel_means(const FeatureView<const int8_t> &x, const float *scales, float *means);
void channel_means(const FeatureView<const uint8_t> &x, const float *scales, float *means);

struct SqueezeExcitationWeights {
    int channels = 0;
    int squeeze_channels = 0;
    const float *fc1_weight = nullptr;  // squeeze_channels x channels
    const float *fc1_bias = nullptr;
    const float *fc2_weight = nullptr;  // channels x squeeze_channels
    const float *fc2_bias = nullptr;
};

// Computes the per-channel scales from the channel means. `scratch` has room for
// squeeze_channels floats.
void excitation_scales(const SqueezeExcitationWeights &w, const float *means, float *scratch, float *scales);

// x[c] *= scales[c], in place.
void scale_channels(const FeatureView<float> &x, const float *scales);

// out = round(x * scales[c] * in_scales[c] / out_scales[c]): scales
// quantized data and moves it to the output's quantization scales. `out`
// may alias `x`.
template <typename T>
void scale_channels(const FeatureView<const T> &x, const float *in_scales, const float *scales,
                    const float *out_scales, const FeatureView<T> &out);

}  // namespace qdet
