// RoI Align as torchvision.ops.roi_align computes it (aligned=False,
// fixed sampling ratio): each output bin averages sampling_ratio^2 bilinear
// samples of the feature map.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/box_ops.h"
#include "kernels/feature_view.h"

namespace qdet {

struct RoiAlignParams {
    int pooled_height = 7;
    int pooled_width = 7;
    int sampling_ratio = 2;     // samples per bin side; must be positive
    float spatial_scale = 1.f;  // feature-map pixels per image pixel
};

// One bilinear sample: four feature-map positions (y * width + x) and weights.
struct BilinearSample {
    int32_t position[4];
    float weight[4];
};

// The samples of every bin of one RoI, bin-major (ph, pw), then the
// sampling grid (iy, ix): pooled_height * pooled_width * sampling_ratio^2
// entries. Samples outside the map get zero weights, as in torchvision.
void roi_align_samples(const Box &roi, int height, int width, const RoiAlignParams &params,
                       std::vector<BilinearSample> *samples);

// FP32. `output` receives rois.size() x pooled_height x pooled_width x
// channels values, channels innermost.
void roi_align(const FeatureView<const float> &input, const std::vector<Box> &rois, const RoiAlignParams &params,
               float *output);

// INT8: the real value of input channel c is in_scales[c] * q. The output is
// quantized with out_scales[c], in the same layout as the FP32 version.
void roi_align(const FeatureView<const int8_t> &input, const float *in_scales, const std::vector<Box> &rois,
               const RoiAlignParams &params, const float *out_scales, int8_t *output);

// INT8 input, FP32 output (for an FP32 fc6 behind an INT8 FPN).
void roi_align(const FeatureView<const int8_t> &input, const float *in_scales, const std::vector<Box> &rois,
               const RoiAlignParams &params, float *output);

}  // namespace qdet
