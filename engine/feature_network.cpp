#include "engine/feature_network.h"

#include <cstring>

#include "engine/error.h"
#include "engine/log.h"
#include "kernels/residual_add.h"
#include "kernels/squeeze_excitation.h"

namespace qdet {

struct FeatureNetwork::Block {
    InvertedResidualSpec spec;
    int index = 0;                       // position in backbone.body (1..15)
    std::unique_ptr<DnnlLayer> expand;   // absent when expanded == input channels
    std::unique_ptr<DnnlLayer> depthwise;
    std::unique_ptr<DnnlLayer> project;
    std::string se_name;  // torchvision module name of SqueezeExcitation, empty without SE
    LayerParams se_fc1;
    LayerParams se_fc2;
};

FeatureNetwork::FeatureNetwork(const WeightFile &file, Precision precision, const QuantTable &quant,
                               const dnnl::engine &engine, Layout fp32_layout, bool observe_residual_branches)
    : config_(file.config()),
      precision_(precision),
      quant_(quant),
      context_(file.path()),
      engine_(engine),
      fp32_layout_(fp32_layout),
      observe_residual_branches_(observe_residual_branches && precision == Precision::fp32) {
    if (precision_ == Precision::int8 && quant_.empty()) {
        fail(ErrorKind::unsupported, file.path() + ": the model has no INT8 calibration; run convert with --calib");
    }
    // detector_layers() lists the layers in execution order; walk it in step.
    const std::vector<LayerSpec> layers = detector_layers(config_);
    size_t next = 0;
    auto take = [&](const std::string &expected_prefix) -> const LayerSpec & {
        if (next >= layers.size() || layers[next].name.rfind(expected_prefix, 0) != 0) {
            fail(ErrorKind::internal, "layer list out of step at " + expected_prefix);
        }
        return layers[next++];
    };
    auto load = [&](const LayerSpec &spec) {
        return std::make_unique<DnnlLayer>(
            load_layer_params(file, spec, layer_is_int8(spec.name) ? Precision::int8 : Precision::fp32), precision_,
            engine_);
    };

    first_conv_ = load(take("backbone.body.0."));
    const auto &specs = mobilenet_v3_large_blocks();
    for (size_t b = 0; b < specs.size(); ++b) {
        auto block = std::make_unique<Block>();
        block->spec = specs[b];
        block->index = static_cast<int>(b) + 1;
        const std::string prefix = "backbone.body." + std::to_string(block->index) + ".block.";
        if (block->spec.has_expand()) block->expand = load(take(prefix));
        block->depthwise = load(take(prefix));
        if (block->spec.use_se) {
            const LayerSpec &fc1 = take(prefix);
            const LayerSpec &fc2 = take(prefix);
            block->se_name = fc1.name.substr(0, fc1.name.size() - std::string(".fc1").size());
            block->se_fc1 = load_layer_params(file, fc1, Precision::fp32);
            block->se_fc2 = load_layer_params(file, fc2, Precision::fp32);
        }
        block->project = load(take(prefix));
        blocks_.push_back(std::move(block));
    }
    last_conv_ = load(take("backbone.body.16."));
    fpn_inner_[0] = load(take("backbone.fpn.inner_blocks.0."));
    fpn_inner_[1] = load(take("backbone.fpn.inner_blocks.1."));
    fpn_layer_[0] = load(take("backbone.fpn.layer_blocks.0."));
    fpn_layer_[1] = load(take("backbone.fpn.layer_blocks.1."));
    rpn_conv_ = load(take("rpn.head.conv."));

    const LayerSpec &cls = take("rpn.head.cls_logits");
    const LayerSpec &bbox = take("rpn.head.bbox_pred");
    const bool int8_output = layer_is_int8(cls.name) && layer_is_int8(bbox.name);
    const Precision output_precision = int8_output ? Precision::int8 : Precision::fp32;
    rpn_output_ = std::make_unique<DnnlLayer>(
        concat_output_channels(load_layer_params(file, cls, output_precision),
                               load_layer_params(file, bbox, output_precision), "rpn.head.output"),
        precision_, engine_);
}

FeatureNetwork::~FeatureNetwork() = default;

bool FeatureNetwork::layer_is_int8(const std::string &name) const {
    return precision_ == Precision::int8 && !quant_.keeps_fp32(name) && !is_squeeze_excitation_layer(name);
}

LayerOutput FeatureNetwork::output_of(const DnnlLayer &layer, const std::string &name) const {
    LayerOutput out;
    if (precision_ == Precision::fp32) {
        out.dtype = DType::f32;
        out.layout = fp32_layout_;
        return out;
    }
    // FP32 layers of an INT8 model keep FP32's blocked layout: oneDNN's
    // FP32 convolutions are much slower on nhwc.
    if (!layer.quantized()) {
        out.dtype = DType::f32;
        out.layout = fp32_layout_;
        return out;
    }
    out.layout = Layout::nhwc;
    out.dtype = layer.spec().activation == Activation::relu ? DType::u8 : DType::s8;
    out.scales = quant_.scales(name, layer.spec().out_channels, context_);
    return out;
}

FeatureMap FeatureNetwork::input_for(PlanBuilder &builder, Stage stage, const DnnlLayer &layer,
                                     const FeatureMap &src, bool *converted) {
    *converted = false;
    const bool wants_int8 = layer.quantized();
    const bool has_int8 = src.dtype != DType::f32;
    if (wants_int8 == has_int8) return src;

    // Mixed precision: a reorder with per-channel scales moves between f32
    // and int8.
    *converted = true;
    const DType dtype = wants_int8 ? DType::s8 : DType::f32;
    std::vector<float> scales;
    std::vector<float> factors;
    if (wants_int8) {
        scales = quant_.scales(src.name, src.channels, context_);
        for (float scale : scales) factors.push_back(1.f / scale);
    } else {
        factors = src.scales;
    }
    const Layout layout = wants_int8 ? Layout::nhwc : fp32_layout_;
    FeatureMap out = builder.allocate(src.name, src.channels, src.height, src.width, dtype, layout, scales);
    out.nonnegative = src.nonnegative;
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    attr.set_output_scales(1 << 1, factors);  // per channel (dimension 1)
    dnnl::reorder::primitive_desc pd;
    try {
        pd = dnnl::reorder::primitive_desc(engine_, src.desc(), engine_, out.desc(), attr);
    } catch (const dnnl::error &e) {
        throw_dnnl_error("precision conversion of " + src.name, e);
    }
    builder.add_primitive(stage, "convert " + src.name, dnnl::reorder(pd), pd.scratchpad_desc(),
                          {{DNNL_ARG_FROM, src.memory}, {DNNL_ARG_TO, out.memory}});
    return out;
}

FeatureMap FeatureNetwork::run_layer(PlanBuilder &builder, Stage stage, DnnlLayer &layer, const FeatureMap &src,
                                     const std::string &name, const FeatureMap *accumulate) {
    const std::string output_name = name.empty() ? layer.spec().name : name;
    bool converted = false;
    FeatureMap input = input_for(builder, stage, layer, src, &converted);
    LayerOutput output = output_of(layer, output_name);
    output.accumulate = accumulate;
    FeatureMap out = layer.append(builder, stage, input, output, output_name);
    out.nonnegative = layer.spec().activation == Activation::relu;
    if (converted) builder.release(input);
    builder.observe(out);
    return out;
}

FeatureMap FeatureNetwork::copy_tensor(PlanBuilder &builder, Stage stage, const FeatureMap &x) {
    FeatureMap copy = builder.allocate(x.name, x.desc(), x.channels, x.height, x.width, x.dtype, x.layout, x.scales);
    copy.nonnegative = x.nonnegative;
    const size_t bytes = x.desc().get_size();
    builder.add_kernel(stage, "copy " + x.name, [x, copy, bytes] { std::memcpy(copy.data(), x.data(), bytes); });
    return copy;
}

FeatureMap FeatureNetwork::as_int8(PlanBuilder &builder, Stage stage, const FeatureMap &x, bool *converted) {
    *converted = false;
    if (x.dtype != DType::f32) return x;
    *converted = true;
    const std::vector<float> &scales = quant_.scales(x.name, x.channels, context_);
    std::vector<float> factors;
    for (float scale : scales) factors.push_back(1.f / scale);
    FeatureMap out = builder.allocate(x.name, x.channels, x.height, x.width, DType::s8, Layout::nhwc, scales);
    out.nonnegative = x.nonnegative;
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    attr.set_output_scales(1 << 1, factors);
    dnnl::reorder::primitive_desc pd;
    try {
        pd = dnnl::reorder::primitive_desc(engine_, x.desc(), engine_, out.desc(), attr);
    } catch (const dnnl::error &e) {
        throw_dnnl_error("quantization of " + x.name, e);
    }
    builder.add_primitive(stage, "quantize " + x.name, dnnl::reorder(pd), pd.scratchpad_desc(),
                          {{DNNL_ARG_FROM, x.memory}, {DNNL_ARG_TO, out.memory}});
    return out;
}

FeatureMap FeatureNetwork::append_residual_add(PlanBuilder &builder, const FeatureMap &x, const FeatureMap &branch,
                                               const std::string &name) {
    FeatureMap out = x;
    out.name = name;
    out.nonnegative = false;
    if (x.dtype == DType::f32) {
        const size_t count = x.desc().get_size() / sizeof(float);
        builder.add_kernel(Stage::backbone, name, [x, branch, count] {
            add_residual(static_cast<const float *>(x.data()), static_cast<const float *>(branch.data()), count,
                         static_cast<float *>(x.data()));
        });
    } else {
        out.scales = quant_.scales(name, x.channels, context_);
        builder.add_kernel(Stage::backbone, name, [x, branch, out] {
            add_residual(x.view<const int8_t>(), x.scales.data(), branch.view<const int8_t>(), branch.scales.data(),
                         out.view<int8_t>(), out.scales.data());
        });
    }
    builder.observe(out);
    return out;
}

FeatureMap FeatureNetwork::append_squeeze_excitation(PlanBuilder &builder, const Block &block,
                                                     const FeatureMap &x) {
    SqueezeExcitationWeights w;
    w.channels = block.spec.expanded_channels;
    w.squeeze_channels = block.spec.squeeze_channels();
    w.fc1_weight = block.se_fc1.weight.data<float>();
    w.fc1_bias = block.se_fc1.bias.data<float>();
    w.fc2_weight = block.se_fc2.weight.data<float>();
    w.fc2_bias = block.se_fc2.bias.data<float>();
    auto scratch = std::make_shared<std::vector<float>>(static_cast<size_t>(2 * w.channels + w.squeeze_channels));

    if (x.dtype == DType::f32) {
        // FP32 scales in place: the product needs no new tensor.
        FeatureMap out = x;
        out.name = block.se_name;  // nonnegative as x: the scales are in [0, 1]
        builder.add_kernel(Stage::backbone, block.se_name, [x, w, scratch] {
            float *means = scratch->data();
            float *scales = means + w.channels;
            channel_means(x.view<const float>(), means);
            excitation_scales(w, means, scales + w.channels, scales);
            scale_channels(x.view<float>(), scales);
        });
        builder.observe(out);
        return out;
    }

    // INT8 reads the quantized input, computes the scales in FP32 and writes
    // a new tensor quantized with its own calibrated scale: the product's
    // range is often much smaller than the input's.
    FeatureMap out = builder.allocate(block.se_name, x.channels, x.height, x.width, x.dtype, x.layout,
                                      quant_.scales(block.se_name, x.channels, context_));
    out.nonnegative = x.nonnegative;
    builder.add_kernel(Stage::backbone, block.se_name, [x, out, w, scratch] {
        float *means = scratch->data();
        float *scales = means + w.channels;
        if (x.dtype == DType::u8) {
            channel_means(x.view<const uint8_t>(), x.scales.data(), means);
            excitation_scales(w, means, scales + w.channels, scales);
            scale_channels(x.view<const uint8_t>(), x.scales.data(), scales, out.scales.data(),
                           out.view<uint8_t>());
        } else {
            channel_means(x.view<const int8_t>(), x.scales.data(), means);
            excitation_scales(w, means, scales + w.channels, scales);
            scale_channels(x.view<const int8_t>(), x.scales.data(), scales, out.scales.data(), out.view<int8_t>());
        }
    });
    builder.observe(out);
    return out;
}

FeatureMap FeatureNetwork::append_max_pool(PlanBuilder &builder, const FeatureMap &x) {
    // LastLevelMaxPool: F.max_pool2d(x, kernel_size=1, stride=2, padding=0),
    // which keeps every other row and column. Max pooling commutes with a
    // positive scale, so the quantized output keeps the input's scale.
    const int out_h = (x.height - 1) / 2 + 1;
    const int out_w = (x.width - 1) / 2 + 1;
    FeatureMap out = builder.allocate(kFpnPoolTensor, x.channels, out_h, out_w, x.dtype, x.layout, x.scales);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::pooling_forward::primitive_desc pd;
    try {
        dnnl::pooling_forward::desc desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::pooling_max, x.desc(),
                                         out.desc(), {2, 2}, {1, 1}, {0, 0}, {0, 0});
        pd = dnnl::pooling_forward::primitive_desc(desc, attr, engine_);
    } catch (const dnnl::error &e) {
        throw_dnnl_error("FPN max pool", e);
    }
    builder.add_primitive(Stage::backbone, kFpnPoolTensor, dnnl::pooling_forward(pd), pd.scratchpad_desc(),
                          {{DNNL_ARG_SRC, x.memory}, {DNNL_ARG_DST, out.memory}});
    builder.observe(out);
    return out;
}

std::unique_ptr<FeaturePlan> FeatureNetwork::build(int height, int width, ActivationArena *arena) {
    auto result = std::make_unique<FeaturePlan>();
    result->height = height;
    result->width = width;
    PlanBuilder builder(engine_, &result->plan, arena);

    // The input is written by the preprocessing kernel before each run.
    if (layer_is_int8(first_conv_->spec().name)) {
        result->input = builder.allocate(kInputTensor, 3, height, width, DType::s8, Layout::nhwc,
                                         quant_.scales(kInputTensor, 3, context_));
    } else {
        result->input = builder.allocate(kInputTensor, 3, height, width, DType::f32, Layout::nchw);
    }
    FeatureMap x = run_layer(builder, Stage::backbone, *first_conv_, result->input);
    builder.release(result->input);

    FeatureMap tap;  // features[13], the FPN's first input
    for (const auto &block : blocks_) {
        const FeatureMap in = x;
        FeatureMap expanded = block->expand ? run_layer(builder, Stage::backbone, *block->expand, in) : in;
        FeatureMap y = run_layer(builder, Stage::backbone, *block->depthwise, expanded);
        if (block->expand) builder.release(expanded);
        if (block->spec.use_se) {
            FeatureMap scaled = append_squeeze_excitation(builder, *block, y);
            if (scaled.slot != y.slot) builder.release(y);
            y = scaled;
        }
        if (block->spec.use_residual()) {
            // The block input is overwritten by the sum unless it must
            // survive (the FPN tap), in which case the sum goes to a copy.
            const std::string out_name = block_output_tensor(block->index);
            FeatureMap target = in.slot == tap.slot && tap.slot >= 0 ? copy_tensor(builder, Stage::backbone, in) : in;
            if (precision_ == Precision::int8 || observe_residual_branches_) {
                // A separate sum: INT8 tensors have their own per-channel
                // scales, which a fused sum cannot combine.
                FeatureMap branch = run_layer(builder, Stage::backbone, *block->project, y);
                bool target_converted = false, branch_converted = false;
                FeatureMap sum_target = target;
                FeatureMap sum_branch = branch;
                if (precision_ == Precision::int8) {
                    sum_target = as_int8(builder, Stage::backbone, target, &target_converted);
                    sum_branch = as_int8(builder, Stage::backbone, branch, &branch_converted);
                }
                x = append_residual_add(builder, sum_target, sum_branch, out_name);
                if (target_converted) builder.release(target);
                if (branch_converted) builder.release(sum_branch);
                builder.release(branch);
            } else {
                x = run_layer(builder, Stage::backbone, *block->project, y, out_name, &target);
            }
        } else {
            x = run_layer(builder, Stage::backbone, *block->project, y);
            if (in.slot != tap.slot || tap.slot < 0) builder.release(in);
        }
        builder.release(y);
        if (block->index == kFpnTapBlock) tap = x;
    }
    FeatureMap c5 = run_layer(builder, Stage::backbone, *last_conv_, x);
    if (x.slot != tap.slot) builder.release(x);

    // FPN. Both inputs are at stride 32, so the top-down path's nearest
    // upsampling is the identity and the lateral sum fuses into the
    // lateral 1x1 convolution as a sum post-op.
    if (tap.height != c5.height || tap.width != c5.width) {
        fail(ErrorKind::unsupported, "FPN inputs differ in size; this backbone configuration is not supported");
    }
    FeatureMap inner_top = run_layer(builder, Stage::backbone, *fpn_inner_[1], c5);
    builder.release(c5);
    FeatureMap p1 = run_layer(builder, Stage::backbone, *fpn_layer_[1], inner_top);
    FeatureMap inner = run_layer(builder, Stage::backbone, *fpn_inner_[0], tap, "", &inner_top);
    builder.release(tap);
    FeatureMap p0 = run_layer(builder, Stage::backbone, *fpn_layer_[0], inner);
    builder.release(inner);
    FeatureMap pool = append_max_pool(builder, p1);
    result->fpn = {p0, p1, pool};

    // RPN head on every level; the output layer writes f32 for decoding.
    // When that layer runs in FP32, an INT8 RPN convolution hands it f32
    // directly instead of quantizing its output.
    for (int level = 0; level < kRpnLevels; ++level) {
        FeatureMap t;
        if (rpn_conv_->quantized() && !rpn_output_->quantized()) {
            LayerOutput conv_output;
            conv_output.dtype = DType::f32;
            conv_output.layout = Layout::nhwc;
            t = rpn_conv_->append(builder, Stage::rpn, result->fpn[level], conv_output, rpn_conv_tensor(level));
            t.nonnegative = true;
            builder.observe(t);
        } else {
            t = run_layer(builder, Stage::rpn, *rpn_conv_, result->fpn[level], rpn_conv_tensor(level));
        }
        bool converted = false;
        FeatureMap input = input_for(builder, Stage::rpn, *rpn_output_, t, &converted);
        LayerOutput output;
        output.dtype = DType::f32;
        output.layout = rpn_output_->quantized() ? Layout::nhwc : input.layout;
        result->rpn_head[level] = rpn_output_->append(builder, Stage::rpn, input, output, rpn_output_tensor(level));
        builder.observe(result->rpn_head[level]);
        if (converted) builder.release(input);
        builder.release(t);
    }

    builder.finalize();
    QDET_LOG_INFO("plan for " << width << "x" << height << " (" << precision_name(precision_) << "): "
                              << result->plan.step_count() << " steps, "
                              << result->plan.activation_bytes() / (1024.0 * 1024.0) << " MB of activations");
    return result;
}

}  // namespace qdet
