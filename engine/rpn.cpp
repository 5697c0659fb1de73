#include "engine/rpn.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/error.h"
#include "kernels/anchors.h"
#include "kernels/nms.h"

namespace qdet {

ProposalGenerator::ProposalGenerator(const ModelConfig &config) : config_(config) {
    for (size_t level = 0; level < config_.anchor_sizes.size(); ++level) {
        cell_anchors_.push_back(cell_anchors(config_.anchor_sizes[level], config_.anchor_aspect_ratios[level]));
    }
    cache_.resize(cell_anchors_.size());
}

const std::vector<Box> &ProposalGenerator::anchors_for(int level, int grid_height, int grid_width, int stride_height,
                                                       int stride_width) {
    CachedAnchors &c = cache_[level];
    if (c.grid_height != grid_height || c.grid_width != grid_width || c.stride_height != stride_height ||
        c.stride_width != stride_width) {
        c.boxes.clear();
        grid_anchors(cell_anchors_[level], grid_height, grid_width, stride_height, stride_width, &c.boxes);
        c.grid_height = grid_height;
        c.grid_width = grid_width;
        c.stride_height = stride_height;
        c.stride_width = stride_width;
    }
    return c.boxes;
}

void ProposalGenerator::generate(const std::vector<RpnLevelOutput> &levels, ImageSize padded, ImageSize image,
                                 std::vector<Box> *proposals, std::vector<float> *scores) {
    if (levels.size() != cell_anchors_.size()) {
        fail(ErrorKind::internal, "RPN: got " + std::to_string(levels.size()) + " levels, the model has " +
                                      std::to_string(cell_anchors_.size()));
    }
    const int anchors_per_location = config_.anchors_per_location();
    const BoxCoderParams coder{{static_cast<float>(config_.rpn_box_coder_weights[0]),
                                static_cast<float>(config_.rpn_box_coder_weights[1]),
                                static_cast<float>(config_.rpn_box_coder_weights[2]),
                                static_cast<float>(config_.rpn_box_coder_weights[3])},
                               static_cast<float>(config_.bbox_xform_clip)};

    std::vector<Box> boxes;
    std::vector<float> logits;
    std::vector<int32_t> box_level;
    std::vector<int32_t> order;
    for (size_t level = 0; level < levels.size(); ++level) {
        const FeatureView<const float> &head = levels[level].head;
        if (head.channels != anchors_per_location * 5) {
            fail(ErrorKind::internal, "RPN head output has " + std::to_string(head.channels) + " channels");
        }
        // torchvision: stride = padded image size // feature map size.
        const int stride_h = padded.height / head.height;
        const int stride_w = padded.width / head.width;
        const std::vector<Box> &anchors = anchors_for(static_cast<int>(level), head.height, head.width, stride_h,
                                                      stride_w);

        // Objectness in torchvision's flattening order: location-major, then anchor.
        const int count = head.height * head.width * anchors_per_location;
        std::vector<float> level_logits(count);
        for (int y = 0; y < head.height; ++y) {
            for (int x = 0; x < head.width; ++x) {
                for (int a = 0; a < anchors_per_location; ++a) {
                    level_logits[(y * head.width + x) * anchors_per_location + a] = head.data[head.offset(a, y, x)];
                }
            }
        }

        // Top-n by logit (sigmoid is monotonic), best first.
        const int top_n = std::min(config_.rpn_pre_nms_top_n_test, count);
        order.resize(count);
        std::iota(order.begin(), order.end(), 0);
        auto better = [&](int32_t a, int32_t b) {
            return level_logits[a] > level_logits[b] || (level_logits[a] == level_logits[b] && a < b);
        };
        std::partial_sort(order.begin(), order.begin() + top_n, order.end(), better);

        for (int i = 0; i < top_n; ++i) {
            const int index = order[i];
            const int location = index / anchors_per_location;
            const int a = index % anchors_per_location;
            const int y = location / head.width;
            const int x = location % head.width;
            float deltas[4];
            for (int k = 0; k < 4; ++k) deltas[k] = head.data[head.offset(anchors_per_location + a * 4 + k, y, x)];
            boxes.push_back(decode_box(anchors[index], deltas, coder));
            logits.push_back(level_logits[index]);
            box_level.push_back(static_cast<int32_t>(level));
        }
    }

    // Clip, drop small boxes and low scores, then NMS per level.
    const float min_size = static_cast<float>(config_.rpn_min_size);
    const float score_thresh = static_cast<float>(config_.rpn_score_thresh);
    std::vector<Box> kept_boxes;
    std::vector<float> kept_scores;
    std::vector<int32_t> kept_levels;
    for (size_t i = 0; i < boxes.size(); ++i) {
        const Box box = clip_box(boxes[i], static_cast<float>(image.height), static_cast<float>(image.width));
        if (!box_is_large_enough(box, min_size)) continue;
        const float score = 1.f / (1.f + std::exp(-logits[i]));
        if (!(score >= score_thresh)) continue;
        kept_boxes.push_back(box);
        kept_scores.push_back(score);
        kept_levels.push_back(box_level[i]);
    }
    std::vector<int32_t> keep = batched_nms(kept_boxes, kept_scores, kept_levels, config_.rpn_nms_thresh);
    if (static_cast<int>(keep.size()) > config_.rpn_post_nms_top_n_test) keep.resize(config_.rpn_post_nms_top_n_test);

    proposals->clear();
    scores->clear();
    for (int32_t k : keep) {
        proposals->push_back(kept_boxes[k]);
        scores->push_back(kept_scores[k]);
    }
}

}  // namespace qdet
