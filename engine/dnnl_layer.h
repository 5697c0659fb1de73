// A convolution or linear layer on oneDNN primitives. Weights are reordered
// once, into the layout each primitive picks when it is prepared, and cached
// by layout. Nothing is allocated when the primitive runs.
//
// FP32: dst = post_ops(conv(src, w) + b).
// INT8: src, weights and dst are quantized (real = scale * q), the weights
// and dst with one scale per output channel. The converter folds the
// per-channel scales of a layer's input into its INT8 weight scales, so the
// engine passes src_scale = 1. oneDNN 2.6 computes
// dst = post_ops(oscale * (acc + b')) on the s32 accumulator acc, so the bias
// is stored divided by src_scale * w_scale[oc], and
// oscale[oc] = src_scale * w_scale[oc] / dst_scale[oc]. Hardswish is not
// scale-invariant, so for it oscale stops at the real value and the output
// scale is applied after the activation: by the eltwise post-op's own scale
// when every channel has the same scale, else by a per-channel binary
// multiplication.
#pragma once

#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "engine/layer_params.h"
#include "engine/plan.h"

namespace qdet {

struct PreparedPrimitive {
    dnnl::primitive primitive;
    dnnl::memory::desc src_desc;
    dnnl::memory::desc dst_desc;
    dnnl::memory::desc scratchpad_desc;
    dnnl::memory weights;
    dnnl::memory bias;
    std::unordered_map<int, dnnl::memory> post_op_args;  // binary post-op operands
    std::string implementation;                          // oneDNN's impl_info_str()

    // Arguments except the scratchpad.
    std::unordered_map<int, dnnl::memory> args(const dnnl::memory &src, const dnnl::memory &dst) const;
};

// What a layer writes: the type, layout and per-channel scales of its
// output. With `accumulate`, the layer adds its result to that existing
// tensor (a fused sum), whose scales must be proportional to `scales`.
struct LayerOutput {
    DType dtype = DType::f32;
    Layout layout = Layout::nhwc;
    std::vector<float> scales;  // one per output channel; empty for f32
    const FeatureMap *accumulate = nullptr;
};

class DnnlLayer {
public:
    DnnlLayer(LayerParams params, Precision precision, const dnnl::engine &engine);

    const LayerSpec &spec() const { return params_.spec; }
    Precision precision() const { return precision_; }
    const LayerParams &params() const { return params_; }
    // True when the layer runs on INT8 weights.
    bool quantized() const { return quantized_; }

    // Creates the primitive for fixed source and destination descriptors.
    // `dst_scales` has one entry per output channel, or is empty for an f32
    // destination. `sum_scale` set means dst += sum_scale * (previous dst).
    PreparedPrimitive prepare(const dnnl::memory::desc &src, const dnnl::memory::desc &dst, float src_scale,
                              const std::vector<float> &dst_scales, std::optional<float> sum_scale);

    // Appends the layer to a plan and returns its output tensor, named after
    // the layer unless `output_name` is given. INT8 inputs must have their
    // scales folded into the weights (src_scale 1).
    FeatureMap append(PlanBuilder &builder, Stage stage, const FeatureMap &src, const LayerOutput &output,
                      const std::string &output_name = "");

    // Output height and width for an input of height x width.
    int output_size(int input_size) const;

private:
    dnnl::memory weights_in(const dnnl::memory::desc &wanted);
    dnnl::memory bias_for(float src_scale);
    dnnl::primitive_attr make_attr(float src_scale, const std::vector<float> &dst_scales,
                                   std::optional<float> sum_scale, dnnl::memory *binary_scales,
                                   int *binary_index) const;

    LayerParams params_;
    Precision precision_;
    bool quantized_;  // INT8 weights (FP32 precision and squeeze-excitation layers are not)
    dnnl::engine engine_;
    std::vector<std::pair<dnnl::memory::desc, dnnl::memory>> weight_cache_;
};

}  // namespace qdet
