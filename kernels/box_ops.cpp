#include "kernels/box_ops.h"

#include <algorithm>
#include <cmath>

namespace qdet {

Box decode_box(const Box &reference, const float *deltas, const BoxCoderParams &params) {
    // Each statement is one rounded float32 operation, as in torchvision;
    // the build disables FMA contraction so the compiler keeps them apart.
    const float width = reference.x2 - reference.x1;
    const float height = reference.y2 - reference.y1;
    const float ctr_x = reference.x1 + 0.5f * width;
    const float ctr_y = reference.y1 + 0.5f * height;

    const float dx = deltas[0] / params.weights[0];
    const float dy = deltas[1] / params.weights[1];
    const float dw = std::min(deltas[2] / params.weights[2], params.clip);
    const float dh = std::min(deltas[3] / params.weights[3], params.clip);

    const float pred_ctr_x = dx * width + ctr_x;
    const float pred_ctr_y = dy * height + ctr_y;
    const float pred_w = std::exp(dw) * width;
    const float pred_h = std::exp(dh) * height;
    const float half_w = 0.5f * pred_w;
    const float half_h = 0.5f * pred_h;
    return {pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h};
}

Box clip_box(const Box &box, float height, float width) {
    auto clamp = [](float v, float hi) { return std::min(std::max(v, 0.f), hi); };
    return {clamp(box.x1, width), clamp(box.y1, height), clamp(box.x2, width), clamp(box.y2, height)};
}

float box_area(const Box &box) { return (box.x2 - box.x1) * (box.y2 - box.y1); }

float box_iou(const Box &a, const Box &b) {
    const float w = std::max(0.f, std::min(a.x2, b.x2) - std::max(a.x1, b.x1));
    const float h = std::max(0.f, std::min(a.y2, b.y2) - std::max(a.y1, b.y1));
    const float inter = w * h;
    return inter / (box_area(a) + box_area(b) - inter);
}

}  // namespace qdet
