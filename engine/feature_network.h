// The convolutional part of the detector: MobileNetV3-Large, the FPN with its
// max-pool level, and the RPN head's convolutions on the three levels. It
// builds one Plan per padded input size.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "engine/architecture.h"
#include "engine/dnnl_layer.h"
#include "engine/model_config.h"
#include "engine/plan.h"
#include "engine/precision.h"
#include "engine/quant_table.h"
#include "engine/weight_file.h"

namespace qdet {


// A plan and the tensors the rest of the detector reads or writes.
struct FeaturePlan {
    Plan plan;
    int height = 0;  // padded input size
    int width = 0;
    FeatureMap input;  // FP32: planar f32; INT8: nhwc s8
    std::array<FeatureMap, kRpnLevels> fpn;
    // Per level: anchors_per_location objectness logits, then 4 deltas per
    // anchor, as f32.
    std::array<FeatureMap, kRpnLevels> rpn_head;
};

class FeatureNetwork {
public:
    // `fp32_layout` is the activation layout of FP32 layers (nChw16c or nhwc);
    // INT8 activations are always nhwc.
    // `observe_residual_branches` (FP32 only) computes residual sums in a
    // separate step, so that calibration observes each block's branch alone.
    FeatureNetwork(const WeightFile &file, Precision precision, const QuantTable &quant, const dnnl::engine &engine,
                   Layout fp32_layout, bool observe_residual_branches = false);
    ~FeatureNetwork();

    // Builds the plan of one padded input size on the shared buffers of `arena`.
    std::unique_ptr<FeaturePlan> build(int height, int width, ActivationArena *arena);

private:
    struct Block;

    std::unique_ptr<DnnlLayer> make_layer(const LayerSpec &spec);
    bool layer_is_int8(const std::string &name) const;
    // The output description of tensor `name` written by a layer with
    // activation `activation`.
    LayerOutput output_of(const DnnlLayer &layer, const std::string &name) const;
    // Converts `src` to the precision `layer` runs in, if they differ.
    FeatureMap input_for(PlanBuilder &builder, Stage stage, const DnnlLayer &layer, const FeatureMap &src,
                         bool *converted);
    FeatureMap run_layer(PlanBuilder &builder, Stage stage, DnnlLayer &layer, const FeatureMap &src,
                         const std::string &name = "", const FeatureMap *accumulate = nullptr);
    FeatureMap append_squeeze_excitation(PlanBuilder &builder, const Block &block, const FeatureMap &x);
    FeatureMap append_max_pool(PlanBuilder &builder, const FeatureMap &x);
    FeatureMap copy_tensor(PlanBuilder &builder, Stage stage, const FeatureMap &x);
    FeatureMap as_int8(PlanBuilder &builder, Stage stage, const FeatureMap &x, bool *converted);
    // x + branch, written over x (which must not be needed afterwards).
    FeatureMap append_residual_add(PlanBuilder &builder, const FeatureMap &x, const FeatureMap &branch,
                                   const std::string &name);

    const ModelConfig config_;
    const Precision precision_;
    const QuantTable quant_;
    const std::string context_;  // weight file path, for messages
    dnnl::engine engine_;
    Layout fp32_layout_;
    bool observe_residual_branches_;

    std::unique_ptr<DnnlLayer> first_conv_;
    std::vector<std::unique_ptr<Block>> blocks_;
    std::unique_ptr<DnnlLayer> last_conv_;
    std::array<std::unique_ptr<DnnlLayer>, 2> fpn_inner_;
    std::array<std::unique_ptr<DnnlLayer>, 2> fpn_layer_;
    std::unique_ptr<DnnlLayer> rpn_conv_;
    std::unique_ptr<DnnlLayer> rpn_output_;  // cls_logits and bbox_pred stacked
};

}  // namespace qdet
