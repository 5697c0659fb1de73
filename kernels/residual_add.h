// The sum of a residual block, y = x + branch, for when it is not fused into
// the convolution that computes the branch: INT8 (where each tensor has its
// own per-channel scales, which a fused sum cannot express) and FP32 when
// calibration needs to see the branch alone.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/feature_view.h"

namespace qdet {

// y = x + branch elementwise over `count` floats; `y` may alias `x`.
void add_residual(const float *x, const float *branch, size_t count, float *y);

// y[c] = round((x[c] * x_scales[c] + branch[c] * branch_scales[c]) /
// y_scales[c]), saturated; the three views share one layout and shape, and
// `y` may alias `x` or `branch`.
void add_residual(const FeatureView<const int8_t> &x, const float *x_scales, const FeatureView<const int8_t> &branch,
                  const float *branch_scales, const FeatureView<int8_t> &y, const float *y_scales);

}  // namespace qdet
