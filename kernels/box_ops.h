// Box arithmetic of torchvision's detection models (BoxCoder.decode_single,
// clip_boxes_to_image, remove_small_boxes), in float32 with torchvision's
// operation order so that results match it to the last few bits.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace qdet {

struct Box {
    float x1, y1, x2, y2;
};

struct BoxCoderParams {
    std::array<float, 4> weights;  // wx, wy, ww, wh
    float clip;                    // upper bound of dw and dh before exp, log(1000 / 16)
};

// Decodes one box: `deltas` are dx, dy, dw, dh relative to `reference`.
Box decode_box(const Box &reference, const float *deltas, const BoxCoderParams &params);

// Clamps x to [0, width] and y to [0, height].
Box clip_box(const Box &box, float height, float width);

// torchvision.ops.remove_small_boxes: both sides at least `min_size`.
inline bool box_is_large_enough(const Box &box, float min_size) {
    return (box.x2 - box.x1) >= min_size && (box.y2 - box.y1) >= min_size;
}

float box_area(const Box &box);
float box_iou(const Box &a, const Box &b);

}  // namespace qdet
