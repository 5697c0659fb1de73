// Settings of a torchvision fasterrcnn_mobilenet_v3_large_fpn model that the
// engine needs at inference time. Field names follow torchvision's.
#pragma once

#include <array>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace qdet {

struct ModelConfig {
    std::string architecture = "fasterrcnn_mobilenet_v3_large_fpn";
    std::string variant = "fpn";  // "fpn" or "320_fpn"

    // GeneralizedRCNNTransform
    int min_size = 800;
    int max_size = 1333;
    std::array<float, 3> image_mean{{0.485f, 0.456f, 0.406f}};
    std::array<float, 3> image_std{{0.229f, 0.224f, 0.225f}};
    int size_divisible = 32;

    int num_classes = 91;  // including background (label 0)

    // AnchorGenerator: one list of sizes and one of aspect ratios per level.
    std::vector<std::vector<double>> anchor_sizes;
    std::vector<std::vector<double>> anchor_aspect_ratios;

    // RegionProposalNetwork, test-time values
    int rpn_pre_nms_top_n_test = 1000;
    int rpn_post_nms_top_n_test = 1000;
    double rpn_nms_thresh = 0.7;
    double rpn_score_thresh = 0.0;
    double rpn_min_size = 1e-3;
    std::array<double, 4> rpn_box_coder_weights{{1, 1, 1, 1}};

    // RoIHeads
    std::array<double, 4> box_coder_weights{{10, 10, 5, 5}};
    double bbox_xform_clip = 4.135166556742356;  // log(1000 / 16)
    double box_score_thresh = 0.05;
    double box_nms_thresh = 0.5;
    int box_detections_per_img = 100;
    int roi_output_size = 7;
    int roi_sampling_ratio = 2;

    double bn_eps = 1e-5;
    std::string norm_layer = "FrozenBatchNorm2d";

    std::map<int, std::string> categories;  // COCO category id -> name

    // Anchors per feature-map location, the same on every level.
    int anchors_per_location() const;

    // Throws Error(input) naming `context` when a value is out of range.
    void validate(const std::string &context) const;
};

nlohmann::json config_to_json(const ModelConfig &config);
// Reads the object written by config_to_json; `context` names the file.
ModelConfig config_from_json(const nlohmann::json &json, const std::string &context);

// Reads the string map of a safetensors "__metadata__" written by
// weights/export_torchvision.py, where every value is JSON-encoded text.
ModelConfig config_from_export_metadata(const std::map<std::string, std::string> &metadata,
                                        const std::string &context);

}  // namespace qdet
