#include "engine/model_config.h"

#include <cmath>
#include <sstream>

#include <nlohmann/json.hpp>

#include "engine/error.h"

namespace qdet {
namespace {

using nlohmann::json;

// Reads `key` from `object` as T, with an error that names the file, the key,
// the JSON type found and the type expected.
template <typename T>
T read_value(const json &object, const char *key, const std::string &context) {
    auto it = object.find(key);
    if (it == object.end()) {
        fail(ErrorKind::input, context + ": model setting '" + key + "' is missing");
    }
    try {
        return it->template get<T>();
    } catch (const json::exception &) {
        fail(ErrorKind::input, context + ": model setting '" + key + "' has the wrong type (" +
                                   it->type_name() + ": " + it->dump() + ")");
    }
}

template <typename T>
void read_into(T &field, const json &object, const char *key, const std::string &context) {
    field = read_value<T>(object, key, context);
}

}  // namespace

int ModelConfig::anchors_per_location() const {
    if (anchor_sizes.empty() || anchor_aspect_ratios.empty()) return 0;
    return static_cast<int>(anchor_sizes[0].size() * anchor_aspect_ratios[0].size());
}

void ModelConfig::validate(const std::string &context) const {
    auto require = [&](bool condition, const std::string &what) {
        if (!condition) fail(ErrorKind::input, context + ": invalid model setting: " + what);
    };
    require(architecture == "fasterrcnn_mobilenet_v3_large_fpn",
            "architecture is '" + architecture + "', expected 'fasterrcnn_mobilenet_v3_large_fpn'");
    require(variant == "fpn" || variant == "320_fpn",
            "variant is '" + variant + "', expected 'fpn' or '320_fpn'");
    require(min_size > 0 && max_size >= min_size, "min_size and max_size must satisfy 0 < min_size <= max_size");
    for (int c = 0; c < 3; ++c) require(image_std[c] > 0.f, "image_std must be positive");
    require(size_divisible > 0, "size_divisible must be positive");
    require(num_classes >= 2, "num_classes must be at least 2 (background and one class)");
    // The MobileNetV3 FPN gives the RPN three levels, each with the same anchors.
    require(anchor_sizes.size() == 3 && anchor_aspect_ratios.size() == 3,
            "anchor_sizes and anchor_aspect_ratios need one entry per FPN level (3)");
    for (size_t level = 0; level < anchor_sizes.size(); ++level) {
        require(anchor_sizes[level].size() == anchor_sizes[0].size() &&
                    anchor_aspect_ratios[level].size() == anchor_aspect_ratios[0].size(),
                "every FPN level needs the same number of anchors");
        for (double size : anchor_sizes[level]) require(size > 0, "anchor sizes must be positive");
        for (double ratio : anchor_aspect_ratios[level]) require(ratio > 0, "aspect ratios must be positive");
    }
    require(anchors_per_location() > 0, "there must be at least one anchor per location");
    require(rpn_pre_nms_top_n_test > 0 && rpn_post_nms_top_n_test > 0, "RPN top-n values must be positive");
    require(rpn_nms_thresh > 0 && rpn_nms_thresh <= 1, "rpn_nms_thresh must be in (0, 1]");
    require(box_nms_thresh > 0 && box_nms_thresh <= 1, "box_nms_thresh must be in (0, 1]");
    require(box_detections_per_img > 0, "box_detections_per_img must be positive");
    require(roi_output_size > 0 && roi_sampling_ratio > 0,
            "roi_output_size and roi_sampling_ratio must be positive (adaptive sampling is not supported)");
    for (int k = 0; k < 4; ++k) {
        require(rpn_box_coder_weights[k] > 0 && box_coder_weights[k] > 0, "box coder weights must be positive");
    }
    require(bbox_xform_clip > 0, "bbox_xform_clip must be positive");
    require(bn_eps > 0, "bn_eps must be positive");
}

json config_to_json(const ModelConfig &c) {
    json categories = json::object();
    for (const auto &[id, name] : c.categories) categories[std::to_string(id)] = name;
    return json{
        {"architecture", c.architecture},
        {"variant", c.variant},
        {"min_size", c.min_size},
        {"max_size", c.max_size},
        {"image_mean", c.image_mean},
        {"image_std", c.image_std},
        {"size_divisible", c.size_divisible},
        {"num_classes", c.num_classes},
        {"anchor_sizes", c.anchor_sizes},
        {"anchor_aspect_ratios", c.anchor_aspect_ratios},
        {"rpn_pre_nms_top_n_test", c.rpn_pre_nms_top_n_test},
        {"rpn_post_nms_top_n_test", c.rpn_post_nms_top_n_test},
        {"rpn_nms_thresh", c.rpn_nms_thresh},
        {"rpn_score_thresh", c.rpn_score_thresh},
        {"rpn_min_size", c.rpn_min_size},
        {"rpn_box_coder_weights", c.rpn_box_coder_weights},
        {"box_coder_weights", c.box_coder_weights},
        {"bbox_xform_clip", c.bbox_xform_clip},
        {"box_score_thresh", c.box_score_thresh},
        {"box_nms_thresh", c.box_nms_thresh},
        {"box_detections_per_img", c.box_detections_per_img},
        {"roi_output_size", c.roi_output_size},
        {"roi_sampling_ratio", c.roi_sampling_ratio},
        {"bn_eps", c.bn_eps},
        {"norm_layer", c.norm_layer},
        {"categories", categories},
    };
}

ModelConfig config_from_json(const json &object, const std::string &context) {
    if (!object.is_object()) fail(ErrorKind::input, context + ": model settings are not a JSON object");
    ModelConfig c;
    read_into(c.architecture, object, "architecture", context);
    read_into(c.variant, object, "variant", context);
    read_into(c.min_size, object, "min_size", context);
    read_into(c.max_size, object, "max_size", context);
    read_into(c.image_mean, object, "image_mean", context);
    read_into(c.image_std, object, "image_std", context);
    read_into(c.size_divisible, object, "size_divisible", context);
    read_into(c.num_classes, object, "num_classes", context);
    read_into(c.anchor_sizes, object, "anchor_sizes", context);
    read_into(c.anchor_aspect_ratios, object, "anchor_aspect_ratios", context);
    read_into(c.rpn_pre_nms_top_n_test, object, "rpn_pre_nms_top_n_test", context);
    read_into(c.rpn_post_nms_top_n_test, object, "rpn_post_nms_top_n_test", context);
    read_into(c.rpn_nms_thresh, object, "rpn_nms_thresh", context);
    read_into(c.rpn_score_thresh, object, "rpn_score_thresh", context);
    read_into(c.rpn_min_size, object, "rpn_min_size", context);
    read_into(c.rpn_box_coder_weights, object, "rpn_box_coder_weights", context);
    read_into(c.box_coder_weights, object, "box_coder_weights", context);
    read_into(c.bbox_xform_clip, object, "bbox_xform_clip", context);
    read_into(c.box_score_thresh, object, "box_score_thresh", context);
    read_into(c.box_nms_thresh, object, "box_nms_thresh", context);
    read_into(c.box_detections_per_img, object, "box_detections_per_img", context);
    read_into(c.roi_output_size, object, "roi_output_size", context);
    read_into(c.roi_sampling_ratio, object, "roi_sampling_ratio", context);
    read_into(c.bn_eps, object, "bn_eps", context);
    read_into(c.norm_layer, object, "norm_layer", context);

    auto categories = object.find("categories");
    if (categories != object.end()) {
        if (!categories->is_object()) {
            fail(ErrorKind::input, context + ": model setting 'categories' must map ids to names");
        }
        for (const auto &[id, name] : categories->items()) {
            if (!name.is_string()) {
                fail(ErrorKind::input, context + ": category " + id + " has no name string");
            }
            size_t parsed = 0;
            int value = 0;
            try {
                value = std::stoi(id, &parsed);
            } catch (const std::exception &) {
                parsed = 0;
            }
            if (parsed == 0 || parsed != id.size()) {
                fail(ErrorKind::input, context + ": category id '" + id + "' is not an integer");
            }
            c.categories[value] = name.get<std::string>();
        }
    }
    c.validate(context);
    return c;
}

ModelConfig config_from_export_metadata(const std::map<std::string, std::string> &metadata,
                                        const std::string &context) {
    auto format = metadata.find("format");
    if (format == metadata.end() || format->second != "\"qdet-torchvision-export\"") {
        fail(ErrorKind::input, context +
                                   ": the safetensors metadata has no format \"qdet-torchvision-export\"; "
                                   "export the checkpoint with weights/export_torchvision.py");
    }
    json object = json::object();
    for (const auto &[key, text] : metadata) {
        try {
            object[key] = json::parse(text);
        } catch (const json::exception &) {
            fail(ErrorKind::input, context + ": metadata value of '" + key + "' is not valid JSON: " + text);
        }
    }
    return config_from_json(object, context);
}

}  // namespace qdet
