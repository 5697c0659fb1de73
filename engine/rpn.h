// Proposal generation of torchvision's RegionProposalNetwork at test time:
// anchors, per-level top-n, box decoding, clipping, small-box removal, score
// threshold, per-level NMS and the post-NMS top-n.
#pragma once

#include <array>
#include <vector>

#include "engine/model_config.h"
#include "kernels/box_ops.h"
#include "kernels/feature_view.h"

namespace qdet {

// The RPN head's output on one level: anchors_per_location objectness
// logits, then dx, dy, dw, dh per anchor (channel a * 4 + k).
struct RpnLevelOutput {
    FeatureView<const float> head;
};

struct ImageSize {
    int height = 0;
    int width = 0;
};

class ProposalGenerator {
public:
    explicit ProposalGenerator(const ModelConfig &config);

    // Fills proposals and their sigmoid scores, sorted by descending score.
    // `padded` is the size of the batched image tensor, from which anchor
    // strides are computed as torchvision does. `image` is the resized size,
    // to which boxes are clipped.
    void generate(const std::vector<RpnLevelOutput> &levels, ImageSize padded, ImageSize image,
                  std::vector<Box> *proposals, std::vector<float> *scores);

private:
    const std::vector<Box> &anchors_for(int level, int grid_height, int grid_width, int stride_height,
                                        int stride_width);

    ModelConfig config_;
    std::vector<std::vector<Box>> cell_anchors_;  // per level
    struct CachedAnchors {
        int grid_height = -1, grid_width = -1, stride_height = -1, stride_width = -1;
        std::vector<Box> boxes;
    };
    std::vector<CachedAnchors> cache_;  // per level, for the last size seen
};

}  // namespace qdet
