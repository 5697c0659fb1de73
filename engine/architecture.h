// The layers of fasterrcnn_mobilenet_v3_large_fpn as torchvision 0.14 builds
// them, with torchvision's module names. The converter uses this list to check
// a checkpoint; the engine uses it to build the network.
#pragma once

#include <string>
#include <vector>

#include "engine/model_config.h"
#include "engine/tensor.h"

namespace qdet {

enum class Activation { none, relu, hardswish };

const char *activation_name(Activation activation);

// One InvertedResidual block of MobileNetV3 (torchvision's
// InvertedResidualConfig with width_mult 1.0 and no dilation).
struct InvertedResidualSpec {
    int input_channels;
    int kernel;
    int expanded_channels;
    int out_channels;
    bool use_se;
    Activation activation;  // relu ("RE") or hardswish ("HS")
    int stride;

    bool has_expand() const { return expanded_channels != input_channels; }
    bool use_residual() const { return stride == 1 && input_channels == out_channels; }
    // torchvision's _make_divisible(expanded_channels // 4, 8).
    int squeeze_channels() const;
};

// features[1..15] of mobilenet_v3_large.
const std::vector<InvertedResidualSpec> &mobilenet_v3_large_blocks();

// The backbone body returns features[13] (160 channels) and features[16]
// (960 channels), both at stride 32; they feed the FPN as levels "0" and "1".
constexpr int kFirstConvChannels = 16;
constexpr int kLastConvChannels = 960;
constexpr int kFpnTapBlock = 13;
constexpr int kFpnChannels = 256;
constexpr int kRoiFeatureLevel = 0;  // every box maps to FPN level "0" (see roi_heads)
constexpr int kBoxHeadChannels = 1024;

constexpr int kRpnLevels = 3;  // FPN "0", "1" and "pool"

// Activation tensors are named after the torchvision module that produces
// them; these are the tensors that no single layer produces.
constexpr const char *kInputTensor = "input";                          // the transformed image
constexpr const char *kFpnPoolTensor = "backbone.fpn.extra_blocks";   // LastLevelMaxPool
constexpr const char *kRoiFeaturesTensor = "roi_heads.box_roi_pool";  // MultiScaleRoIAlign
constexpr const char *kPredictorTensor = "roi_heads.box_predictor";   // cls_score and bbox_pred
std::string rpn_conv_tensor(int level);    // "rpn.head.conv.0.0#<level>"
std::string rpn_output_tensor(int level);  // "rpn.head.output#<level>"

// A convolution or linear layer after BatchNorm folding: the unit that the
// converter quantizes and the engine runs on a oneDNN primitive.
struct LayerSpec {
    std::string name;  // torchvision module name of the convolution / linear
    enum class Kind { conv, linear } kind = Kind::conv;
    int in_channels = 0;
    int out_channels = 0;
    int kernel = 1;
    int stride = 1;
    int groups = 1;
    Activation activation = Activation::none;
    // The torchvision module name of the BatchNorm folded into this layer,
    // empty when the layer has its own bias.
    std::string norm_name;

    int padding() const { return (kernel - 1) / 2; }
    Shape weight_shape() const;
    bool depthwise() const { return groups > 1; }
};

// Every convolution and linear layer of the detector in execution order
// (squeeze-excitation's fc1/fc2 included, as conv 1x1 layers).
std::vector<LayerSpec> detector_layers(const ModelConfig &config);

// Names of the layers whose activations become scalars per channel inside
// squeeze-excitation (fc1, fc2); they run in FP32 in every precision.
bool is_squeeze_excitation_layer(const std::string &name);

// The INT8 data flow, for calibration. INT8 activations have one scale per
// channel, and the converter folds each layer's input scales into that
// layer's INT8 weights. So every layer needs to know which tensor it reads.
struct LayerInput {
    std::string layer;
    std::string input;  // the tensor the layer reads
};
// Every layer except squeeze-excitation's, in execution order.
std::vector<LayerInput> layer_inputs(const ModelConfig &config);

// The output tensor of backbone block `block` (1..15): the block's module
// name ("backbone.body.5") when it adds a residual, else its projection's.
std::string block_output_tensor(int block);

// Groups of tensors that must carry the same per-channel scales:
// - the two FPN inner tensors, because their sum is fused into a
//   convolution and a fused sum has one scale;
// - the FPN outputs and the RoI features, because one set of RPN weights
//   and one set of fc6 weights read them all;
// - the RPN head's three levels, for the same reason.
std::vector<std::vector<std::string>> shared_scale_groups(const ModelConfig &config);

}  // namespace qdet
