// The image half of torchvision's GeneralizedRCNNTransform in one pass: the
// RGB bytes are scaled to [0, 1], normalised with the mean and standard
// deviation, resized with bilinear interpolation (F.interpolate with
// align_corners=False and an output size given) and written into the
// top-left corner of a zero-padded destination.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace qdet {

// Source indices and weights of one output axis, as torch's CPU kernel
// computes them: source = (dst + 0.5) * in / out - 0.5, clamped at 0;
// index0 = floor(source), index1 = index0 + 1 (but not past the edge),
// lambda1 = source - index0, lambda0 = 1 - lambda1.
struct LinearResizeAxis {
    std::vector<int32_t> index0, index1;
    std::vector<float> lambda0, lambda1;
};
LinearResizeAxis linear_resize_axis(int in_size, int out_size);

struct NormalizeParams {
    std::array<float, 3> mean;
    std::array<float, 3> std;
};

struct ResizeGeometry {
    int in_height, in_width;    // source image
    int out_height, out_width;  // resized image
    int dst_height, dst_width;  // padded destination, at least the resized size
};

// FP32 destination in planar layout (3 x dst_height x dst_width).
void resize_normalize(const uint8_t *rgb, const ResizeGeometry &geometry, const NormalizeParams &params,
                      float *dst);

// INT8 destination in channel-last layout (dst_height x dst_width x 3),
// channel c quantized as real = scales[c] * q.
void resize_normalize(const uint8_t *rgb, const ResizeGeometry &geometry, const NormalizeParams &params,
                      const float *scales, int8_t *dst);

}  // namespace qdet
