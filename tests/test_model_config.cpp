#include <doctest/doctest.h>

#include <array>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "engine/model_config.h"

namespace {

using nlohmann::json;

template <typename Function>
qdet::Error expect_error(Function run) {
    try {
        run();
    } catch (const qdet::Error &e) {
        return e;
    }
    FAIL("no qdet::Error was thrown");
    return qdet::Error(qdet::ErrorKind::internal, "");
}

bool contains(const std::string &text, const std::string &part) { return text.find(part) != std::string::npos; }

// A valid configuration with every field away from its default.
qdet::ModelConfig custom_config() {
    qdet::ModelConfig c;
    c.variant = "320_fpn";
    c.min_size = 320;
    c.max_size = 640;
    c.image_mean = {0.5f, 0.25f, 0.125f};
    c.image_std = {0.3f, 0.2f, 0.1f};
    c.size_divisible = 64;
    c.num_classes = 4;
    c.anchor_sizes = {{16, 32}, {64, 128}, {256, 512}};
    c.anchor_aspect_ratios = {{0.5, 2.0, 3.0}, {0.5, 2.0, 3.0}, {0.5, 2.0, 3.0}};
    c.rpn_pre_nms_top_n_test = 150;
    c.rpn_post_nms_top_n_test = 120;
    c.rpn_nms_thresh = 0.65;
    c.rpn_score_thresh = 0.05;
    c.rpn_min_size = 0.01;
    c.rpn_box_coder_weights = {2, 2, 1, 1};
    c.box_coder_weights = {8, 8, 4, 4};
    c.bbox_xform_clip = 3.5;
    c.box_score_thresh = 0.1;
    c.box_nms_thresh = 0.45;
    c.box_detections_per_img = 50;
    c.roi_output_size = 5;
    c.roi_sampling_ratio = 3;
    c.bn_eps = 1e-3;
    c.norm_layer = "BatchNorm2d";
    c.categories = {{1, "person"}, {3, "car"}, {90, "toothbrush"}};
    return c;
}

void check_same_config(const qdet::ModelConfig &a, const qdet::ModelConfig &b) {
    CHECK(a.architecture == b.architecture);
    CHECK(a.variant == b.variant);
    CHECK(a.min_size == b.min_size);
    CHECK(a.max_size == b.max_size);
    CHECK(a.image_mean == b.image_mean);
    CHECK(a.image_std == b.image_std);
    CHECK(a.size_divisible == b.size_divisible);
    CHECK(a.num_classes == b.num_classes);
    CHECK(a.anchor_sizes == b.anchor_sizes);
    CHECK(a.anchor_aspect_ratios == b.anchor_aspect_ratios);
    CHECK(a.rpn_pre_nms_top_n_test == b.rpn_pre_nms_top_n_test);
    CHECK(a.rpn_post_nms_top_n_test == b.rpn_post_nms_top_n_test);
    CHECK(a.rpn_nms_thresh == b.rpn_nms_thresh);
    CHECK(a.rpn_score_thresh == b.rpn_score_thresh);
    CHECK(a.rpn_min_size == b.rpn_min_size);
    CHECK(a.rpn_box_coder_weights == b.rpn_box_coder_weights);
    CHECK(a.box_coder_weights == b.box_coder_weights);
    CHECK(a.bbox_xform_clip == b.bbox_xform_clip);
    CHECK(a.box_score_thresh == b.box_score_thresh);
    CHECK(a.box_nms_thresh == b.box_nms_thresh);
    CHECK(a.box_detections_per_img == b.box_detections_per_img);
    CHECK(a.roi_output_size == b.roi_output_size);
    CHECK(a.roi_sampling_ratio == b.roi_sampling_ratio);
    CHECK(a.bn_eps == b.bn_eps);
    CHECK(a.norm_layer == b.norm_layer);
    CHECK(a.categories == b.categories);
}

// Metadata as weights/export_torchvision.py writes it: every value is JSON
// text, so strings carry their quotes.
std::map<std::string, std::string> export_metadata() {
    return {
        {"format", "\"qdet-torchvision-export\""},
        {"format_version", "1"},
        {"architecture", "\"fasterrcnn_mobilenet_v3_large_fpn\""},
        {"variant", "\"fpn\""},
        {"min_size", "640"},
        {"max_size", "1066"},
        {"image_mean", "[0.485, 0.456, 0.406]"},
        {"image_std", "[0.229, 0.224, 0.225]"},
        {"size_divisible", "32"},
        {"num_classes", "91"},
        {"anchor_sizes", "[[32, 64, 128, 256, 512], [32, 64, 128, 256, 512], [32, 64, 128, 256, 512]]"},
        {"anchor_aspect_ratios", "[[0.5, 1.0, 2.0], [0.5, 1.0, 2.0], [0.5, 1.0, 2.0]]"},
        {"rpn_pre_nms_top_n_test", "1000"},
        {"rpn_post_nms_top_n_test", "1000"},
        {"rpn_nms_thresh", "0.7"},
        {"rpn_score_thresh", "0.0"},
        {"rpn_min_size", "0.001"},
        {"rpn_box_coder_weights", "[1.0, 1.0, 1.0, 1.0]"},
        {"box_coder_weights", "[10.0, 10.0, 5.0, 5.0]"},
        {"bbox_xform_clip", "4.135166556742356"},
        {"box_score_thresh", "0.05"},
        {"box_nms_thresh", "0.5"},
        {"box_detections_per_img", "100"},
        {"roi_output_size", "7"},
        {"roi_sampling_ratio", "2"},
        {"bn_eps", "0.001"},
        {"norm_layer", "\"FrozenBatchNorm2d\""},
        {"categories", "{\"1\": \"person\", \"2\": \"bicycle\"}"},
        {"torch_version", "\"1.13.1\""},
    };
}

}  // namespace

TEST_SUITE("unit") {

TEST_CASE("model config json round trip") {
    const qdet::ModelConfig original = custom_config();
    const json object = qdet::config_to_json(original);
    check_same_config(qdet::config_from_json(object, "config.json"), original);
    // Through text as well: numbers and nested arrays survive dump and parse.
    check_same_config(qdet::config_from_json(json::parse(object.dump()), "config.json"), original);
    CHECK(object.at("categories") == json{{"1", "person"}, {"3", "car"}, {"90", "toothbrush"}});
}

TEST_CASE("model config anchors per location") {
    qdet::ModelConfig c = custom_config();
    CHECK(c.anchors_per_location() == 6);
    c.anchor_sizes.clear();
    CHECK(c.anchors_per_location() == 0);
}

TEST_CASE("model config from export metadata") {
    const qdet::ModelConfig c = qdet::config_from_export_metadata(export_metadata(), "model.safetensors");
    CHECK(c.architecture == "fasterrcnn_mobilenet_v3_large_fpn");
    CHECK(c.variant == "fpn");
    CHECK(c.min_size == 640);
    CHECK(c.max_size == 1066);
    CHECK(c.image_mean[1] == 0.456f);
    CHECK(c.image_std[2] == 0.225f);
    CHECK(c.num_classes == 91);
    CHECK(c.anchor_sizes.size() == 3);
    CHECK(c.anchor_sizes[2] == std::vector<double>{32, 64, 128, 256, 512});
    CHECK(c.anchor_aspect_ratios[0] == std::vector<double>{0.5, 1.0, 2.0});
    CHECK(c.rpn_nms_thresh == 0.7);
    CHECK(c.rpn_min_size == 0.001);
    CHECK(c.box_coder_weights == std::array<double, 4>{10, 10, 5, 5});
    CHECK(c.bbox_xform_clip == 4.135166556742356);
    CHECK(c.roi_sampling_ratio == 2);
    CHECK(c.bn_eps == 0.001);
    CHECK(c.norm_layer == "FrozenBatchNorm2d");
    CHECK(c.categories == std::map<int, std::string>{{1, "person"}, {2, "bicycle"}});
    CHECK(c.anchors_per_location() == 15);
}

TEST_CASE("model config metadata errors") {
    struct Case {
        const char *name;
        std::function<void(std::map<std::string, std::string> &)> edit;
        std::vector<std::string> expected_texts;
    };
    const Case cases[] = {
        {"missing key", [](auto &m) { m.erase("num_classes"); }, {"'num_classes' is missing"}},
        {"missing nested list", [](auto &m) { m.erase("anchor_aspect_ratios"); }, {"'anchor_aspect_ratios'"}},
        {"string where a number belongs", [](auto &m) { m["min_size"] = "\"640\""; },
         {"'min_size' has the wrong type", "string"}},
        {"unquoted string", [](auto &m) { m["variant"] = "fpn"; }, {"'variant' is not valid JSON"}},
        {"number where a string belongs", [](auto &m) { m["norm_layer"] = "3"; }, {"'norm_layer' has the wrong type"}},
        {"flat anchor sizes", [](auto &m) { m["anchor_sizes"] = "[32, 64]"; }, {"'anchor_sizes' has the wrong type"}},
        {"missing format marker", [](auto &m) { m.erase("format"); }, {"qdet-torchvision-export"}},
        {"other format marker", [](auto &m) { m["format"] = "\"safetensors\""; }, {"qdet-torchvision-export"}},
        {"format marker without quotes", [](auto &m) { m["format"] = "qdet-torchvision-export"; },
         {"qdet-torchvision-export"}},
        {"unsupported variant", [](auto &m) { m["variant"] = "\"c4\""; }, {"invalid model setting", "'c4'"}},
        {"category id not a number", [](auto &m) { m["categories"] = "{\"one\": \"person\"}"; },
         {"category id 'one'"}},
        {"category name not a string", [](auto &m) { m["categories"] = "{\"1\": 5}"; }, {"category 1"}},
    };
    for (const Case &c : cases) {
        INFO("case: ", std::string(c.name));
        std::map<std::string, std::string> metadata = export_metadata();
        c.edit(metadata);
        const qdet::Error error =
            expect_error([&] { qdet::config_from_export_metadata(metadata, "/tmp/exported.safetensors"); });
        const std::string message = error.what();
        INFO("message: ", message);
        CHECK(error.kind() == qdet::ErrorKind::input);
        CHECK(contains(message, "/tmp/exported.safetensors"));
        for (const std::string &text : c.expected_texts) CHECK(contains(message, text));
    }
}

TEST_CASE("model config validate rejects invalid values") {
    struct Case {
        const char *name;
        std::function<void(qdet::ModelConfig &)> edit;
        const char *expected_text;
    };
    const Case cases[] = {
        {"other architecture", [](auto &c) { c.architecture = "retinanet"; }, "architecture"},
        {"unknown variant", [](auto &c) { c.variant = "fpn_640"; }, "variant"},
        {"zero min size", [](auto &c) { c.min_size = 0; }, "min_size"},
        {"max below min", [](auto &c) { c.max_size = c.min_size - 1; }, "max_size"},
        {"zero std", [](auto &c) { c.image_std[1] = 0.f; }, "image_std"},
        {"zero size divisible", [](auto &c) { c.size_divisible = 0; }, "size_divisible"},
        {"one class", [](auto &c) { c.num_classes = 1; }, "num_classes"},
        {"two anchor levels", [](auto &c) { c.anchor_sizes.pop_back(); }, "one entry per FPN level"},
        {"uneven anchor levels", [](auto &c) { c.anchor_sizes[1].push_back(1024); }, "same number of anchors"},
        {"negative anchor size", [](auto &c) { c.anchor_sizes[0][0] = -32; }, "anchor sizes must be positive"},
        {"zero aspect ratio", [](auto &c) { c.anchor_aspect_ratios[2][1] = 0; }, "aspect ratios must be positive"},
        {"zero top n", [](auto &c) { c.rpn_post_nms_top_n_test = 0; }, "top-n"},
        {"rpn nms threshold 0", [](auto &c) { c.rpn_nms_thresh = 0; }, "rpn_nms_thresh"},
        {"box nms threshold above 1", [](auto &c) { c.box_nms_thresh = 1.5; }, "box_nms_thresh"},
        {"zero detections", [](auto &c) { c.box_detections_per_img = 0; }, "box_detections_per_img"},
        {"adaptive sampling", [](auto &c) { c.roi_sampling_ratio = 0; }, "roi_sampling_ratio"},
        {"zero roi size", [](auto &c) { c.roi_output_size = 0; }, "roi_output_size"},
        {"zero coder weight", [](auto &c) { c.box_coder_weights[3] = 0; }, "box coder weights"},
        {"zero rpn coder weight", [](auto &c) { c.rpn_box_coder_weights[0] = 0; }, "box coder weights"},
        {"zero clip", [](auto &c) { c.bbox_xform_clip = 0; }, "bbox_xform_clip"},
        {"zero eps", [](auto &c) { c.bn_eps = 0; }, "bn_eps"},
    };
    // The valid starting point passes.
    CHECK_NOTHROW(custom_config().validate("config.json"));
    for (const Case &c : cases) {
        INFO("case: ", std::string(c.name));
        qdet::ModelConfig config = custom_config();
        c.edit(config);
        const qdet::Error direct = expect_error([&] { config.validate("config.json"); });
        INFO("message: ", std::string(direct.what()));
        CHECK(direct.kind() == qdet::ErrorKind::input);
        CHECK(contains(direct.what(), "config.json: invalid model setting"));
        CHECK(contains(direct.what(), c.expected_text));
        // config_from_json validates what it reads.
        const qdet::Error through_json =
            expect_error([&] { qdet::config_from_json(qdet::config_to_json(config), "weights.qdet"); });
        CHECK(contains(through_json.what(), "weights.qdet: invalid model setting"));
    }
}

TEST_CASE("model config rejects partial category id") {
    json object = qdet::config_to_json(custom_config());
    object["categories"] = {{"1x", "person"}};
    const qdet::Error error = expect_error([&] { qdet::config_from_json(object, "config.json"); });
    CHECK(contains(error.what(), "config.json"));
    CHECK(contains(error.what(), "category id '1x' is not an integer"));
}

TEST_CASE("model config json errors") {
    const qdet::Error not_object = expect_error([] { qdet::config_from_json(json::array(), "config.json"); });
    CHECK(contains(not_object.what(), "config.json"));
    CHECK(contains(not_object.what(), "not a JSON object"));

    json object = qdet::config_to_json(custom_config());
    object.erase("bn_eps");
    const qdet::Error missing = expect_error([&] { qdet::config_from_json(object, "config.json"); });
    CHECK(contains(missing.what(), "config.json: model setting 'bn_eps' is missing"));

    object = qdet::config_to_json(custom_config());
    object["image_mean"] = {0.5, 0.5};
    const qdet::Error short_array = expect_error([&] { qdet::config_from_json(object, "config.json"); });
    CHECK(contains(short_array.what(), "'image_mean' has the wrong type"));

    object = qdet::config_to_json(custom_config());
    object["categories"] = json::array({"person"});
    const qdet::Error categories = expect_error([&] { qdet::config_from_json(object, "config.json"); });
    CHECK(contains(categories.what(), "'categories' must map ids to names"));
}

}  // TEST_SUITE("unit")
