#include "kernels/residual_add.h"

#include "kernels/requantize_simd.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace qdet {

void add_residual(const float *x, const float *branch, size_t count, float *y) {
    const ptrdiff_t n = static_cast<ptrdiff_t>(count);
#pragma omp parallel for simd schedule(static)
    for (ptrdiff_t i = 0; i < n; ++i) y[i] = x[i] + branch[i];
}

void add_residual(const FeatureView<const int8_t> &x, const float *x_scales, const FeatureView<const int8_t> &branch,
                  const float *branch_scales, const FeatureView<int8_t> &y, const float *y_scales) {
    // Padding channels of a blocked layout get factor 0 and stay zero.
    std::vector<float> x_factors(static_cast<size_t>(x.padded_channels), 0.f);
    std::vector<float> branch_factors(static_cast<size_t>(x.padded_channels), 0.f);
    for (int c = 0; c < x.channels; ++c) {
        x_factors[c] = x_scales[c] / y_scales[c];
        branch_factors[c] = branch_scales[c] / y_scales[c];
    }
    const int rows = x.blocks() * x.height;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; ++r) {
        const int b = r / x.height, row = r % x.height;
        const float *fx = x_factors.data() + b * x.block;
        const float *fb = branch_factors.data() + b * x.block;
        const int8_t *px = x.run(b, row, 0);
        const int8_t *pb = branch.run(b, row, 0);
        int8_t *py = y.run(b, row, 0);
        for (int col = 0; col < x.width; ++col, px += x.block, pb += x.block, py += x.block) {
            simd::add_run(px, fx, pb, fb, x.block, py);
        }
    }
}

}  // namespace qdet
