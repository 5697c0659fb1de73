#include "engine/architecture.h"

#include <algorithm>

namespace qdet {

std::string rpn_conv_tensor(int level) { return "rpn.head.conv.0.0#" + std::to_string(level); }
std::string rpn_output_tensor(int level) { return "rpn.head.output#" + std::to_string(level); }

const char *activation_name(Activation activation) {
    switch (activation) {
        case Activation::none: return "none";
        case Activation::relu: return "relu";
        case Activation::hardswish: return "hardswish";
    }
    return "?";
}

int InvertedResidualSpec::squeeze_channels() const {
    // torchvision's _make_divisible(v, 8): round to the nearest multiple of 8,
    // at least 8, and never more than 10% below v.
    const int divisor = 8;
    int v = expanded_channels / 4;
    int rounded = std::max(divisor, (v + divisor / 2) / divisor * divisor);
    if (rounded < 0.9 * v) rounded += divisor;
    return rounded;
}

const std::vector<InvertedResidualSpec> &mobilenet_v3_large_blocks() {
    using A = Activation;
    static const std::vector<InvertedResidualSpec> blocks = {
        // in, kernel, expanded, out, SE, activation, stride
        {16, 3, 16, 16, false, A::relu, 1},
        {16, 3, 64, 24, false, A::relu, 2},
        {24, 3, 72, 24, false, A::relu, 1},
        {24, 5, 72, 40, true, A::relu, 2},
        {40, 5, 120, 40, true, A::relu, 1},
        {40, 5, 120, 40, true, A::relu, 1},
        {40, 3, 240, 80, false, A::hardswish, 2},
        {80, 3, 200, 80, false, A::hardswish, 1},
        {80, 3, 184, 80, false, A::hardswish, 1},
        {80, 3, 184, 80, false, A::hardswish, 1},
        {80, 3, 480, 112, true, A::hardswish, 1},
        {112, 3, 672, 112, true, A::hardswish, 1},
        {112, 5, 672, 160, true, A::hardswish, 2},
        {160, 5, 960, 160, true, A::hardswish, 1},
        {160, 5, 960, 160, true, A::hardswish, 1},
    };
    return blocks;
}

Shape LayerSpec::weight_shape() const {
    if (kind == Kind::linear) return {out_channels, in_channels};
    return {out_channels, in_channels / groups, kernel, kernel};
}

namespace {

LayerSpec conv(std::string name, int in, int out, int kernel, int stride, int groups, Activation activation,
               std::string norm_name) {
    LayerSpec spec;
    spec.name = std::move(name);
    spec.kind = LayerSpec::Kind::conv;
    spec.in_channels = in;
    spec.out_channels = out;
    spec.kernel = kernel;
    spec.stride = stride;
    spec.groups = groups;
    spec.activation = activation;
    spec.norm_name = std::move(norm_name);
    return spec;
}

LayerSpec linear(std::string name, int in, int out, Activation activation) {
    LayerSpec spec;
    spec.name = std::move(name);
    spec.kind = LayerSpec::Kind::linear;
    spec.in_channels = in;
    spec.out_channels = out;
    spec.activation = activation;
    return spec;
}

}  // namespace

std::vector<LayerSpec> detector_layers(const ModelConfig &config) {
    std::vector<LayerSpec> layers;
    const Activation hs = Activation::hardswish;

    layers.push_back(conv("backbone.body.0.0", 3, kFirstConvChannels, 3, 2, 1, hs, "backbone.body.0.1"));

    const auto &blocks = mobilenet_v3_large_blocks();
    for (size_t b = 0; b < blocks.size(); ++b) {
        const InvertedResidualSpec &block = blocks[b];
        const std::string prefix = "backbone.body." + std::to_string(b + 1) + ".block.";
        int module = 0;
        auto sub = [&](int index) { return prefix + std::to_string(index); };

        if (block.has_expand()) {
            layers.push_back(conv(sub(module) + ".0", block.input_channels, block.expanded_channels, 1, 1, 1,
                                  block.activation, sub(module) + ".1"));
            ++module;
        }
        layers.push_back(conv(sub(module) + ".0", block.expanded_channels, block.expanded_channels, block.kernel,
                              block.stride, block.expanded_channels, block.activation, sub(module) + ".1"));
        ++module;
        if (block.use_se) {
            // fc2's hardsigmoid is applied by the squeeze-excitation kernel.
            layers.push_back(conv(sub(module) + ".fc1", block.expanded_channels, block.squeeze_channels(), 1, 1, 1,
                                  Activation::relu, ""));
            layers.push_back(conv(sub(module) + ".fc2", block.squeeze_channels(), block.expanded_channels, 1, 1, 1,
                                  Activation::none, ""));
            ++module;
        }
        layers.push_back(conv(sub(module) + ".0", block.expanded_channels, block.out_channels, 1, 1, 1,
                              Activation::none, sub(module) + ".1"));
    }
    layers.push_back(conv("backbone.body.16.0", blocks.back().out_channels, kLastConvChannels, 1, 1, 1, hs,
                          "backbone.body.16.1"));

    const int tap_channels = blocks[kFpnTapBlock - 1].out_channels;
    layers.push_back(conv("backbone.fpn.inner_blocks.0.0", tap_channels, kFpnChannels, 1, 1, 1, Activation::none, ""));
    layers.push_back(
        conv("backbone.fpn.inner_blocks.1.0", kLastConvChannels, kFpnChannels, 1, 1, 1, Activation::none, ""));
    layers.push_back(conv("backbone.fpn.layer_blocks.0.0", kFpnChannels, kFpnChannels, 3, 1, 1, Activation::none, ""));
    layers.push_back(conv("backbone.fpn.layer_blocks.1.0", kFpnChannels, kFpnChannels, 3, 1, 1, Activation::none, ""));

    const int anchors = config.anchors_per_location();
    layers.push_back(conv("rpn.head.conv.0.0", kFpnChannels, kFpnChannels, 3, 1, 1, Activation::relu, ""));
    layers.push_back(conv("rpn.head.cls_logits", kFpnChannels, anchors, 1, 1, 1, Activation::none, ""));
    layers.push_back(conv("rpn.head.bbox_pred", kFpnChannels, anchors * 4, 1, 1, 1, Activation::none, ""));

    const int pooled = kFpnChannels * config.roi_output_size * config.roi_output_size;
    layers.push_back(linear("roi_heads.box_head.fc6", pooled, kBoxHeadChannels, Activation::relu));
    layers.push_back(linear("roi_heads.box_head.fc7", kBoxHeadChannels, kBoxHeadChannels, Activation::relu));
    layers.push_back(linear("roi_heads.box_predictor.cls_score", kBoxHeadChannels, config.num_classes, Activation::none));
    layers.push_back(
        linear("roi_heads.box_predictor.bbox_pred", kBoxHeadChannels, config.num_classes * 4, Activation::none));
    return layers;
}

bool is_squeeze_excitation_layer(const std::string &name) {
    auto ends_with = [&](const char *suffix) {
        std::string s(suffix);
        return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
    };
    return ends_with(".fc1") || ends_with(".fc2");
}

namespace {

// Names of the layers of one block, as detector_layers() builds them.
struct BlockNames {
    std::string expand;  // empty without expansion
    std::string depthwise;
    std::string squeeze_excitation;  // empty without SE
    std::string project;
};

std::vector<BlockNames> block_names() {
    std::vector<BlockNames> names;
    const auto &blocks = mobilenet_v3_large_blocks();
    for (size_t b = 0; b < blocks.size(); ++b) {
        const std::string prefix = "backbone.body." + std::to_string(b + 1) + ".block.";
        BlockNames n;
        int module = 0;
        if (blocks[b].has_expand()) n.expand = prefix + std::to_string(module++) + ".0";
        n.depthwise = prefix + std::to_string(module++) + ".0";
        if (blocks[b].use_se) n.squeeze_excitation = prefix + std::to_string(module++);
        n.project = prefix + std::to_string(module) + ".0";
        names.push_back(n);
    }
    return names;
}

}  // namespace

std::string block_output_tensor(int block) {
    const InvertedResidualSpec &spec = mobilenet_v3_large_blocks().at(block - 1);
    return spec.use_residual() ? "backbone.body." + std::to_string(block) : block_names()[block - 1].project;
}

std::vector<LayerInput> layer_inputs(const ModelConfig &config) {
    (void)config;
    std::vector<LayerInput> inputs;
    inputs.push_back({"backbone.body.0.0", kInputTensor});
    std::string x = "backbone.body.0.0";
    int index = 0;
    for (const BlockNames &block : block_names()) {
        ++index;
        std::string y = x;
        if (!block.expand.empty()) {
            inputs.push_back({block.expand, y});
            y = block.expand;
        }
        inputs.push_back({block.depthwise, y});
        y = block.squeeze_excitation.empty() ? block.depthwise : block.squeeze_excitation;
        inputs.push_back({block.project, y});
        x = block_output_tensor(index);
    }
    inputs.push_back({"backbone.body.16.0", x});
    const std::string tap = block_output_tensor(kFpnTapBlock);
    inputs.push_back({"backbone.fpn.inner_blocks.1.0", "backbone.body.16.0"});
    inputs.push_back({"backbone.fpn.layer_blocks.1.0", "backbone.fpn.inner_blocks.1.0"});
    inputs.push_back({"backbone.fpn.inner_blocks.0.0", tap});
    inputs.push_back({"backbone.fpn.layer_blocks.0.0", "backbone.fpn.inner_blocks.0.0"});
    inputs.push_back({"rpn.head.conv.0.0", "backbone.fpn.layer_blocks.0.0"});
    inputs.push_back({"rpn.head.cls_logits", rpn_conv_tensor(0)});
    inputs.push_back({"rpn.head.bbox_pred", rpn_conv_tensor(0)});
    inputs.push_back({"roi_heads.box_head.fc6", kRoiFeaturesTensor});
    inputs.push_back({"roi_heads.box_head.fc7", "roi_heads.box_head.fc6"});
    inputs.push_back({"roi_heads.box_predictor.cls_score", "roi_heads.box_head.fc7"});
    inputs.push_back({"roi_heads.box_predictor.bbox_pred", "roi_heads.box_head.fc7"});
    return inputs;
}

std::vector<std::vector<std::string>> shared_scale_groups(const ModelConfig &config) {
    (void)config;
    std::vector<std::vector<std::string>> groups;
    groups.push_back({"backbone.fpn.inner_blocks.1.0", "backbone.fpn.inner_blocks.0.0"});
    groups.push_back({"backbone.fpn.layer_blocks.0.0", "backbone.fpn.layer_blocks.1.0", kFpnPoolTensor,
                      kRoiFeaturesTensor});
    groups.push_back({rpn_conv_tensor(0), rpn_conv_tensor(1), rpn_conv_tensor(2)});
    return groups;
}

}  // namespace qdet
