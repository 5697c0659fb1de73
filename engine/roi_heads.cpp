#include "engine/roi_heads.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "engine/error.h"
#include "engine/log.h"
#include "kernels/nms.h"
#include "kernels/quantize.h"
#include "kernels/roi_align.h"

namespace qdet {
namespace {

using tag = dnnl::memory::format_tag;

// Proposal counts are padded to a multiple of this, so that a few primitives
// serve every count. Padded rows are zero and their outputs are ignored.
constexpr int kRowGranularity = 32;

int padded_rows(int rows) { return std::max(1, (rows + kRowGranularity - 1) / kRowGranularity) * kRowGranularity; }

// torchvision flattens RoI features as (channel, y, x); qdet's RoI Align
// writes (y, x, channel), so fc6's input columns are permuted to match.
template <typename T>
void permute_fc6_columns(HostTensor &weight, int channels, int pooled) {
    if (weight.bytes.empty()) return;
    const int rows = static_cast<int>(weight.shape[0]);
    const int columns = static_cast<int>(weight.shape[1]);
    HostTensor permuted(weight.dtype, weight.shape);
    const T *in = weight.data<T>();
    T *out = permuted.data<T>();
    for (int o = 0; o < rows; ++o) {
        for (int c = 0; c < channels; ++c) {
            for (int yx = 0; yx < pooled * pooled; ++yx) {
                out[static_cast<size_t>(o) * columns + yx * channels + c] =
                    in[static_cast<size_t>(o) * columns + c * pooled * pooled + yx];
            }
        }
    }
    weight = std::move(permuted);
}

size_t element_size(DType dtype) { return dtype_size(dtype); }

}  // namespace

float roi_spatial_scale(int feature_height, int image_height) {
    const float approx = static_cast<float>(feature_height) / static_cast<float>(image_height);
    return std::exp2(std::nearbyint(std::log2(approx)));
}

struct RoiHeads::Batch {
    int rows = 0;
    PreparedPrimitive fc6, fc7, predictor;
    std::unordered_map<int, dnnl::memory> fc6_args, fc7_args, predictor_args;
    dnnl::memory fc6_scratchpad, fc7_scratchpad, predictor_scratchpad;
    DType fc6_out_type = DType::f32, fc7_out_type = DType::f32;
};

RoiHeads::RoiHeads(const WeightFile &file, Precision precision, const QuantTable &quant, const dnnl::engine &engine)
    : config_(file.config()), precision_(precision), quant_(quant), context_(file.path()), engine_(engine) {
    pooled_ = config_.roi_output_size;
    feature_channels_ = kFpnChannels;
    max_rows_ = padded_rows(config_.rpn_post_nms_top_n_test);

    auto is_int8 = [&](const std::string &name) { return precision_ == Precision::int8 && !quant_.keeps_fp32(name); };
    auto load = [&](const LayerSpec &spec) {
        return load_layer_params(file, spec, is_int8(spec.name) ? Precision::int8 : Precision::fp32);
    };
    const std::vector<LayerSpec> layers = detector_layers(config_);
    auto find = [&](const std::string &name) -> const LayerSpec & {
        for (const LayerSpec &spec : layers) {
            if (spec.name == name) return spec;
        }
        fail(ErrorKind::internal, "no layer " + name);
    };

    LayerParams fc6 = load(find("roi_heads.box_head.fc6"));
    permute_fc6_columns<float>(fc6.weight, feature_channels_, pooled_);
    permute_fc6_columns<int8_t>(fc6.weight_s8, feature_channels_, pooled_);
    fc6_ = std::make_unique<DnnlLayer>(std::move(fc6), precision_, engine_);
    fc7_ = std::make_unique<DnnlLayer>(load(find("roi_heads.box_head.fc7")), precision_, engine_);

    const LayerSpec &cls = find("roi_heads.box_predictor.cls_score");
    const LayerSpec &bbox = find("roi_heads.box_predictor.bbox_pred");
    const bool predictor_int8 = is_int8(cls.name) && is_int8(bbox.name);
    const Precision p = predictor_int8 ? Precision::int8 : Precision::fp32;
    predictor_ = std::make_unique<DnnlLayer>(
        concat_output_channels(load_layer_params(file, cls, p), load_layer_params(file, bbox, p), kPredictorTensor),
        precision_, engine_);

    const size_t feature_columns = static_cast<size_t>(pooled_) * pooled_ * feature_channels_;
    roi_features_.resize(max_rows_ * feature_columns * sizeof(float));
    fc6_out_.resize(static_cast<size_t>(max_rows_) * kBoxHeadChannels * sizeof(float));
    fc7_out_.resize(static_cast<size_t>(max_rows_) * kBoxHeadChannels * sizeof(float));
    requantize_.resize(static_cast<size_t>(max_rows_) * kBoxHeadChannels * sizeof(float));
    predictor_out_.resize(static_cast<size_t>(max_rows_) * predictor_->spec().out_channels * sizeof(float));
}

RoiHeads::~RoiHeads() = default;

void RoiHeads::ensure_scratchpad(size_t bytes) {
    if (bytes <= scratchpad_.size()) return;
    scratchpad_.resize(bytes);
    for (auto &[rows, batch] : batches_) {
        for (dnnl::memory *m : {&batch->fc6_scratchpad, &batch->fc7_scratchpad, &batch->predictor_scratchpad}) {
            if (*m) m->set_data_handle(scratchpad_.data());
        }
    }
}

RoiHeads::Batch &RoiHeads::batch_for(int rows) {
    auto found = batches_.find(rows);
    if (found != batches_.end()) return *found->second;

    auto batch = std::make_unique<Batch>();
    batch->rows = rows;
    const bool fc6_int8 = fc6_->params().weight.bytes.empty();
    const bool fc7_int8 = fc7_->params().weight.bytes.empty();
    const bool predictor_int8 = predictor_->params().weight.bytes.empty();
    // An INT8 layer followed by an INT8 layer writes u8 (after ReLU);
    // anything else writes f32.
    batch->fc6_out_type = fc6_int8 && fc7_int8 ? DType::u8 : DType::f32;
    batch->fc7_out_type = fc7_int8 && predictor_int8 ? DType::u8 : DType::f32;
    const DType fc6_in_type = fc6_int8 ? DType::s8 : DType::f32;
    const DType fc7_in_type = fc7_int8 ? DType::u8 : DType::f32;
    const DType predictor_in_type = predictor_int8 ? DType::u8 : DType::f32;

    const int columns = pooled_ * pooled_ * feature_channels_;
    auto desc = [&](int width, DType dtype) {
        return dnnl::memory::desc({rows, width}, dnnl_type(dtype), tag::nc);
    };
    // INT8 layers read inputs whose scales the converter folded into their
    // weights, so only the output scales are needed here.
    auto scales_of = [&](const std::string &name, bool int8, int channels) {
        return int8 ? quant_.scales(name, channels, context_) : std::vector<float>();
    };
    const std::vector<float> fc6_scales = scales_of("roi_heads.box_head.fc6", fc6_int8 && fc7_int8, kBoxHeadChannels);
    const std::vector<float> fc7_scales =
        scales_of("roi_heads.box_head.fc7", fc7_int8 && predictor_int8, kBoxHeadChannels);

    batch->fc6 = fc6_->prepare(desc(columns, fc6_in_type), desc(kBoxHeadChannels, batch->fc6_out_type), 1.f,
                               fc6_scales, std::nullopt);
    batch->fc7 = fc7_->prepare(desc(kBoxHeadChannels, fc7_in_type), desc(kBoxHeadChannels, batch->fc7_out_type), 1.f,
                               fc7_scales, std::nullopt);
    batch->predictor = predictor_->prepare(desc(kBoxHeadChannels, predictor_in_type),
                                           desc(predictor_->spec().out_channels, DType::f32), 1.f, {},
                                           std::nullopt);

    // fc6 and fc7 write to requantize_ when their f32 result feeds an INT8 layer.
    auto out_buffer = [&](DType out_type, DType next_in_type, AlignedBuffer &buffer) -> void * {
        return out_type == DType::f32 && next_in_type != DType::f32 ? requantize_.data() : buffer.data();
    };
    auto memory = [&](const dnnl::memory::desc &d, void *p) { return dnnl::memory(d, engine_, p); };
    batch->fc6_args = batch->fc6.args(memory(batch->fc6.src_desc, roi_features_.data()),
                                      memory(batch->fc6.dst_desc, out_buffer(batch->fc6_out_type, fc7_in_type, fc6_out_)));
    batch->fc7_args = batch->fc7.args(memory(batch->fc7.src_desc, fc6_out_.data()),
                                      memory(batch->fc7.dst_desc,
                                             out_buffer(batch->fc7_out_type, predictor_in_type, fc7_out_)));
    batch->predictor_args = batch->predictor.args(memory(batch->predictor.src_desc, fc7_out_.data()),
                                                  memory(batch->predictor.dst_desc, predictor_out_.data()));

    size_t scratch = 0;
    for (const PreparedPrimitive *p : {&batch->fc6, &batch->fc7, &batch->predictor}) {
        scratch = std::max(scratch, p->scratchpad_desc.get_size());
    }
    ensure_scratchpad(scratch);
    auto bind_scratchpad = [&](const PreparedPrimitive &p, std::unordered_map<int, dnnl::memory> &args,
                               dnnl::memory &slot) {
        if (p.scratchpad_desc.get_size() == 0) return;
        slot = dnnl::memory(p.scratchpad_desc, engine_, scratchpad_.data());
        args[DNNL_ARG_SCRATCHPAD] = slot;
    };
    bind_scratchpad(batch->fc6, batch->fc6_args, batch->fc6_scratchpad);
    bind_scratchpad(batch->fc7, batch->fc7_args, batch->fc7_scratchpad);
    bind_scratchpad(batch->predictor, batch->predictor_args, batch->predictor_scratchpad);

    Batch &result = *batch;
    batches_[rows] = std::move(batch);
    return result;
}

void RoiHeads::prepare_all_batch_sizes() {
    for (int rows = kRowGranularity; rows <= max_rows_; rows += kRowGranularity) batch_for(rows);
}

void RoiHeads::run(dnnl::stream &stream, const FeatureMap &features, ImageSize image,
                   const std::vector<Box> &proposals, std::vector<float> *class_logits,
                   std::vector<float> *box_regression, const ActivationObserver *observer) {
    const int n = static_cast<int>(proposals.size());
    const int num_classes = config_.num_classes;
    class_logits->assign(static_cast<size_t>(n) * num_classes, 0.f);
    box_regression->assign(static_cast<size_t>(n) * num_classes * 4, 0.f);
    if (n == 0) return;
    if (n > max_rows_) {
        fail(ErrorKind::internal, "RoI heads: " + std::to_string(n) + " proposals exceed the post-NMS top-n");
    }
    Batch &batch = batch_for(padded_rows(n));
    const int columns = pooled_ * pooled_ * feature_channels_;

    // Optional timing of the parts, for --profile.
    auto mark = std::chrono::steady_clock::now();
    size_t part = 0;
    auto record = [&](const char *label) {
        if (!profiling_) return;
        const auto now = std::chrono::steady_clock::now();
        if (profile_.size() <= part) profile_.push_back({label, Stage::roi_heads, 0.0, 0});
        profile_[part].total_ms += std::chrono::duration<double, std::milli>(now - mark).count();
        profile_[part].runs += 1;
        ++part;
        mark = now;
    };

    // MultiScaleRoIAlign: every box maps to level "0" (see architecture.h).
    RoiAlignParams params;
    params.pooled_height = params.pooled_width = pooled_;
    params.sampling_ratio = config_.roi_sampling_ratio;
    params.spatial_scale = roi_spatial_scale(features.height, image.height);
    const bool fc6_int8 = batch.fc6.src_desc.data_type() == dnnl::memory::data_type::s8;
    DType roi_type = fc6_int8 ? DType::s8 : DType::f32;
    std::vector<float> roi_scales;
    if (fc6_int8) {
        roi_scales = quant_.scales(kRoiFeaturesTensor, feature_channels_, context_);
        if (features.dtype != DType::s8) fail(ErrorKind::internal, "RoI Align: INT8 fc6 needs s8 FPN features");
        roi_align(features.view<const int8_t>(), features.scales.data(), proposals, params, roi_scales.data(),
                  roi_features_.as<int8_t>());
    } else if (features.dtype == DType::s8) {
        roi_align(features.view<const int8_t>(), features.scales.data(), proposals, params,
                  roi_features_.as<float>());
    } else {
        roi_align(features.view<const float>(), proposals, params, roi_features_.as<float>());
    }
    const size_t row_bytes = static_cast<size_t>(columns) * element_size(roi_type);
    std::memset(roi_features_.data() + n * row_bytes, 0, (batch.rows - n) * row_bytes);
    record("roi_align");

    auto observe = [&](const char *name, void *data, int width, DType dtype, const std::vector<float> &scales,
                       int height, bool nonnegative) {
        if (observer == nullptr || !*observer) return;
        FeatureMap map;
        map.name = name;
        map.channels = width;
        map.height = height;
        map.width = n;
        map.dtype = dtype;
        map.layout = Layout::nhwc;
        map.scales = scales;
        map.nonnegative = nonnegative;
        // rows of `width` values viewed as 1 x width x height x n, channel-last
        map.memory = dnnl::memory({{1, width, height, n}, dnnl_type(dtype), tag::nhwc}, engine_, data);
        (*observer)(map);
    };
    observe(kRoiFeaturesTensor, roi_features_.data(), feature_channels_, roi_type, roi_scales, pooled_ * pooled_, false);

    // The fc layers; an FP32 result that feeds an INT8 layer is quantized
    // here with the calibrated scales of that tensor.
    auto requantize_into = [&](AlignedBuffer &target, const char *name) {
        const std::vector<float> &scales = quant_.scales(name, kBoxHeadChannels, context_);
        const float *in = requantize_.as<float>();
        uint8_t *out = target.as<uint8_t>();
        for (int r = 0; r < n; ++r) {
            for (int c = 0; c < kBoxHeadChannels; ++c) {
                const size_t i = static_cast<size_t>(r) * kBoxHeadChannels + c;
                out[i] = quantize_value<uint8_t>(in[i], 1.f / scales[c]);
            }
        }
        return scales;
    };
    auto run_fc = [&](const PreparedPrimitive &fc, const std::unordered_map<int, dnnl::memory> &args,
                      const PreparedPrimitive &next, DType out_type, AlignedBuffer &out, const char *name) {
        fc.primitive.execute(stream, args);
        stream.wait();
        std::vector<float> scales;
        DType type = out_type;
        if (next.src_desc.data_type() == dnnl::memory::data_type::u8) {
            scales = out_type == DType::f32 ? requantize_into(out, name)
                                            : quant_.scales(name, kBoxHeadChannels, context_);
            type = DType::u8;
        }
        observe(name, out.data(), kBoxHeadChannels, type, scales, 1, true);
    };
    run_fc(batch.fc6, batch.fc6_args, batch.fc7, batch.fc6_out_type, fc6_out_, "roi_heads.box_head.fc6");
    record("roi_heads.box_head.fc6");
    run_fc(batch.fc7, batch.fc7_args, batch.predictor, batch.fc7_out_type, fc7_out_, "roi_heads.box_head.fc7");
    record("roi_heads.box_head.fc7");

    batch.predictor.primitive.execute(stream, batch.predictor_args);
    stream.wait();
    record(kPredictorTensor);
    const int outputs = predictor_->spec().out_channels;
    observe(kPredictorTensor, predictor_out_.data(), outputs, DType::f32, {}, 1, false);

    const float *out = predictor_out_.as<float>();
    for (int r = 0; r < n; ++r) {
        const float *row = out + static_cast<size_t>(r) * outputs;
        std::copy(row, row + num_classes, class_logits->begin() + static_cast<size_t>(r) * num_classes);
        std::copy(row + num_classes, row + 5 * num_classes,
                  box_regression->begin() + static_cast<size_t>(r) * num_classes * 4);
    }
}

std::vector<Detection> RoiHeads::postprocess(const std::vector<Box> &proposals,
                                             const std::vector<float> &class_logits,
                                             const std::vector<float> &box_regression, ImageSize image) const {
    const int n = static_cast<int>(proposals.size());
    const int num_classes = config_.num_classes;
    const BoxCoderParams coder{{static_cast<float>(config_.box_coder_weights[0]),
                                static_cast<float>(config_.box_coder_weights[1]),
                                static_cast<float>(config_.box_coder_weights[2]),
                                static_cast<float>(config_.box_coder_weights[3])},
                               static_cast<float>(config_.bbox_xform_clip)};
    const float score_thresh = static_cast<float>(config_.box_score_thresh);
    const float min_size = 1e-2f;  // torchvision's fixed minimum box side in RoIHeads

    // Candidates in torchvision's order: proposal-major, then class 1..C-1.
    std::vector<Box> boxes;
    std::vector<float> scores;
    std::vector<int32_t> labels;
    std::vector<float> probabilities(num_classes);
    for (int r = 0; r < n; ++r) {
        const float *logits = class_logits.data() + static_cast<size_t>(r) * num_classes;
        const float max_logit = *std::max_element(logits, logits + num_classes);
        float sum = 0.f;
        for (int c = 0; c < num_classes; ++c) {
            probabilities[c] = std::exp(logits[c] - max_logit);
            sum += probabilities[c];
        }
        for (int c = 1; c < num_classes; ++c) {
            const float score = probabilities[c] / sum;
            if (!(score > score_thresh)) continue;
            const float *deltas = box_regression.data() + (static_cast<size_t>(r) * num_classes + c) * 4;
            const Box box = clip_box(decode_box(proposals[r], deltas, coder), static_cast<float>(image.height),
                                     static_cast<float>(image.width));
            if (!box_is_large_enough(box, min_size)) continue;
            boxes.push_back(box);
            scores.push_back(score);
            labels.push_back(c);
        }
    }

    std::vector<int32_t> keep = batched_nms(boxes, scores, labels, config_.box_nms_thresh);
    if (static_cast<int>(keep.size()) > config_.box_detections_per_img) keep.resize(config_.box_detections_per_img);
    std::vector<Detection> detections;
    detections.reserve(keep.size());
    for (int32_t k : keep) detections.push_back({boxes[k], scores[k], labels[k]});
    return detections;
}

}  // namespace qdet
