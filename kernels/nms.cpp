#include "kernels/nms.h"

#include <algorithm>
#include <map>
#include <numeric>

namespace qdet {
namespace {

// torchvision switches strategy above 4000 box coordinates on CPU.
constexpr size_t kMaxBoxesForOffsetStrategy = 1000;

std::vector<int32_t> order_by_descending_score(const std::vector<float> &scores) {
    std::vector<int32_t> order(scores.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return scores[a] > scores[b]; });
    return order;
}

}  // namespace

std::vector<int32_t> nms(const std::vector<Box> &boxes, const std::vector<float> &scores, double iou_threshold) {
    const size_t n = boxes.size();
    std::vector<int32_t> order = order_by_descending_score(scores);
    std::vector<float> areas(n);
    for (size_t i = 0; i < n; ++i) areas[i] = box_area(boxes[i]);

    std::vector<uint8_t> suppressed(n, 0);
    std::vector<int32_t> keep;
    for (size_t oi = 0; oi < n; ++oi) {
        const int32_t i = order[oi];
        if (suppressed[i]) continue;
        keep.push_back(i);
        const Box &a = boxes[i];
        for (size_t oj = oi + 1; oj < n; ++oj) {
            const int32_t j = order[oj];
            if (suppressed[j]) continue;
            const Box &b = boxes[j];
            const float w = std::max(0.f, std::min(a.x2, b.x2) - std::max(a.x1, b.x1));
            const float h = std::max(0.f, std::min(a.y2, b.y2) - std::max(a.y1, b.y1));
            const float inter = w * h;
            const float iou = inter / (areas[i] + areas[j] - inter);
            // float IoU against a double threshold, as torchvision compares them
            if (static_cast<double>(iou) > iou_threshold) suppressed[j] = 1;
        }
    }
    return keep;
}

std::vector<int32_t> batched_nms(const std::vector<Box> &boxes, const std::vector<float> &scores,
                                 const std::vector<int32_t> &groups, double iou_threshold) {
    const size_t n = boxes.size();
    if (n == 0) return {};

    if (n <= kMaxBoxesForOffsetStrategy) {
        float max_coordinate = boxes[0].x1;
        for (const Box &b : boxes) max_coordinate = std::max({max_coordinate, b.x1, b.y1, b.x2, b.y2});
        const float spacing = max_coordinate + 1.f;
        std::vector<Box> shifted(n);
        for (size_t i = 0; i < n; ++i) {
            const float offset = static_cast<float>(groups[i]) * spacing;
            shifted[i] = {boxes[i].x1 + offset, boxes[i].y1 + offset, boxes[i].x2 + offset, boxes[i].y2 + offset};
        }
        return nms(shifted, scores, iou_threshold);
    }

    std::map<int32_t, std::vector<int32_t>> members;
    for (size_t i = 0; i < n; ++i) members[groups[i]].push_back(static_cast<int32_t>(i));
    std::vector<uint8_t> kept(n, 0);
    std::vector<Box> group_boxes;
    std::vector<float> group_scores;
    for (const auto &[group, indices] : members) {
        group_boxes.clear();
        group_scores.clear();
        for (int32_t i : indices) {
            group_boxes.push_back(boxes[i]);
            group_scores.push_back(scores[i]);
        }
        for (int32_t k : nms(group_boxes, group_scores, iou_threshold)) kept[indices[k]] = 1;
    }
    std::vector<int32_t> keep;
    for (size_t i = 0; i < n; ++i) {
        if (kept[i]) keep.push_back(static_cast<int32_t>(i));
    }
    std::stable_sort(keep.begin(), keep.end(), [&](int32_t a, int32_t b) { return scores[a] > scores[b]; });
    return keep;
}

}  // namespace qdet
