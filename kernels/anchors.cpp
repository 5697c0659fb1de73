#include "kernels/anchors.h"

#include <cmath>

namespace qdet {

std::vector<Box> cell_anchors(const std::vector<double> &sizes, const std::vector<double> &aspect_ratios) {
    std::vector<Box> anchors;
    anchors.reserve(sizes.size() * aspect_ratios.size());
    for (double ratio : aspect_ratios) {
        // torchvision converts the settings to float32 tensors first.
        const float h_ratio = std::sqrt(static_cast<float>(ratio));
        const float w_ratio = 1.f / h_ratio;
        for (double size : sizes) {
            const float w = w_ratio * static_cast<float>(size);
            const float h = h_ratio * static_cast<float>(size);
            // std::nearbyint rounds halves to even, like torch.round.
            anchors.push_back({std::nearbyint(-w / 2.f), std::nearbyint(-h / 2.f), std::nearbyint(w / 2.f),
                               std::nearbyint(h / 2.f)});
        }
    }
    return anchors;
}

void grid_anchors(const std::vector<Box> &cell, int grid_height, int grid_width, int stride_height,
                  int stride_width, std::vector<Box> *out) {
    out->reserve(out->size() + static_cast<size_t>(grid_height) * grid_width * cell.size());
    for (int y = 0; y < grid_height; ++y) {
        const float shift_y = static_cast<float>(y * stride_height);
        for (int x = 0; x < grid_width; ++x) {
            const float shift_x = static_cast<float>(x * stride_width);
            for (const Box &a : cell) {
                out->push_back({shift_x + a.x1, shift_y + a.y1, shift_x + a.x2, shift_y + a.y2});
            }
        }
    }
}

}  // namespace qdet
