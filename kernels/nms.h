// Non-maximum suppression as torchvision.ops.nms and batched_nms compute it.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/box_ops.h"

namespace qdet {

// Greedy NMS: visits boxes by descending score (ties in index order) and
// drops every later box whose IoU with a kept box exceeds `iou_threshold`.
// Returns the kept indices in visiting order.
std::vector<int32_t> nms(const std::vector<Box> &boxes, const std::vector<float> &scores, double iou_threshold);

// NMS applied separately per value of `groups` (class or level). Like
// torchvision 0.14 on CPU, it shifts each group's boxes apart by a
// group-dependent offset and runs one NMS when there are at most 1000 boxes,
// and runs one NMS per group otherwise. The offsets change float rounding, so
// the two paths can differ for boxes near the threshold. Returns kept indices
// sorted by descending score.
std::vector<int32_t> batched_nms(const std::vector<Box> &boxes, const std::vector<float> &scores,
                                 const std::vector<int32_t> &groups, double iou_threshold);

}  // namespace qdet
