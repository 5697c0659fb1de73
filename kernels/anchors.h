// Anchor boxes as torchvision's AnchorGenerator makes them.
#pragma once

#include <vector>

#include "kernels/box_ops.h"

namespace qdet {

// Zero-centred anchors of one location: for each aspect ratio r (outer) and
// size s (inner), half extents w = s / sqrt(r) / 2, h = s * sqrt(r) / 2,
// rounded to integers as torchvision does.
std::vector<Box> cell_anchors(const std::vector<double> &sizes, const std::vector<double> &aspect_ratios);

// Anchors of a feature map of grid_height x grid_width: location-major
// (row, then column), then the cell anchors in order. Strides are in pixels.
void grid_anchors(const std::vector<Box> &cell, int grid_height, int grid_width, int stride_height,
                  int stride_width, std::vector<Box> *out);

}  // namespace qdet
