#include "engine/detector.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <omp.h>

#include "engine/error.h"
#include "engine/feature_network.h"
#include "engine/log.h"
#include "engine/quant_table.h"
#include "engine/rpn.h"
#include "engine/weight_file.h"
#include "kernels/resize_normalize.h"

namespace qdet {
namespace {

using Clock = std::chrono::steady_clock;

double elapsed_ms(Clock::time_point start) {
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

}  // namespace

DetectionTrace::Tensor to_planar(const FeatureMap &map) {
    DetectionTrace::Tensor tensor;
    tensor.channels = map.channels;
    tensor.height = map.height;
    tensor.width = map.width;
    tensor.values.resize(static_cast<size_t>(map.channels) * map.height * map.width);
    auto copy = [&](auto view) {
        for (int c = 0; c < map.channels; ++c) {
            const float scale = map.scales.empty() ? 1.f : map.scales[c];
            for (int y = 0; y < map.height; ++y) {
                for (int x = 0; x < map.width; ++x) {
                    tensor.values[(static_cast<size_t>(c) * map.height + y) * map.width + x] =
                        scale * static_cast<float>(view.data[view.offset(c, y, x)]);
                }
            }
        }
    };
    if (map.layout == Layout::nchw) {
        if (map.dtype != DType::f32) fail(ErrorKind::internal, "planar tensors are f32");
        const float *p = static_cast<const float *>(map.data());
        std::copy(p, p + tensor.values.size(), tensor.values.begin());
        return tensor;
    }
    switch (map.dtype) {
        case DType::f32: copy(map.view<const float>()); break;
        case DType::s8: copy(map.view<const int8_t>()); break;
        case DType::u8: copy(map.view<const uint8_t>()); break;
        default: fail(ErrorKind::internal, "cannot trace tensor " + map.name);
    }
    return tensor;
}


void set_thread_count(int threads) {
    if (threads > 0) omp_set_num_threads(threads);
}

int thread_count() { return omp_get_max_threads(); }

TransformGeometry transform_geometry(const ModelConfig &config, int height, int width) {
    TransformGeometry g;
    g.original = {height, width};
    // torchvision computes min_size / short_side in float32, and torch's
    // scalar / tensor is reciprocal(tensor) * scalar.
    const float short_side = static_cast<float>(std::min(height, width));
    const float long_side = static_cast<float>(std::max(height, width));
    const float by_min = (1.f / short_side) * static_cast<float>(config.min_size);
    const float by_max = (1.f / long_side) * static_cast<float>(config.max_size);
    const double scale = static_cast<double>(std::min(by_min, by_max));
    g.resized = {static_cast<int>(std::floor(static_cast<double>(height) * scale)),
                 static_cast<int>(std::floor(static_cast<double>(width) * scale))};
    g.resized.height = std::max(g.resized.height, 1);
    g.resized.width = std::max(g.resized.width, 1);
    const int d = config.size_divisible;
    g.padded = {(g.resized.height + d - 1) / d * d, (g.resized.width + d - 1) / d * d};
    return g;
}

Detector::Detector(const std::string &weight_path, const DetectorOptions &options) : options_(options) {
    load(WeightFile::read(weight_path));
}

Detector::Detector(const WeightFile &file, const DetectorOptions &options) : options_(options) { load(file); }

Detector::~Detector() = default;

void Detector::load(const WeightFile &file) {
    config_ = file.config();
    weight_path_ = file.path();
    const QuantTable quant = quant_table_from_json(file.quantization(), file.path());
    if (options_.precision == Precision::int8 && quant.empty()) {
        fail(ErrorKind::unsupported, file.path() + ": the model has no INT8 calibration; run convert with --calib");
    }
    network_ = std::make_unique<FeatureNetwork>(file, options_.precision, quant, dnnl_.engine, options_.fp32_layout,
                                                options_.observe_residual_branches);
    proposals_ = std::make_unique<ProposalGenerator>(config_);
    roi_heads_ = std::make_unique<RoiHeads>(file, options_.precision, quant, dnnl_.engine);
}

FeaturePlan &Detector::plan_for(const TransformGeometry &geometry) {
    for (auto it = plans_.begin(); it != plans_.end(); ++it) {
        if ((*it)->height == geometry.padded.height && (*it)->width == geometry.padded.width) {
            plans_.splice(plans_.begin(), plans_, it);
            return *plans_.front();
        }
    }
    auto start = Clock::now();
    plans_.push_front(network_->build(geometry.padded.height, geometry.padded.width, &arena_));
    plans_.front()->plan.set_profiling(profiling_);
    QDET_LOG_INFO("built the " << precision_name(options_.precision) << " plan for " << geometry.padded.width << "x"
                               << geometry.padded.height << " in " << elapsed_ms(start) << " ms");
    while (static_cast<int>(plans_.size()) > std::max(1, options_.max_cached_sizes)) plans_.pop_back();
    return *plans_.front();
}

void Detector::set_profiling(bool enabled) {
    profiling_ = enabled;
    for (auto &plan : plans_) plan->plan.set_profiling(enabled);
    roi_heads_->set_profiling(enabled);
}

std::vector<Plan::StepProfile> Detector::profile() const {
    std::vector<Plan::StepProfile> steps;
    if (!plans_.empty()) steps = plans_.front()->plan.profile();
    for (const auto &[label, stage] : {std::pair<const char *, Stage>{"preprocess", Stage::preprocess},
                                       {"proposals", Stage::rpn},
                                       {"postprocess", Stage::postprocess}}) {
        if (profile_totals_.runs > 0) {
            steps.push_back({label, stage, profile_totals_.ms[static_cast<int>(stage)], profile_totals_.runs});
        }
    }
    const auto &heads = roi_heads_->profile();
    steps.insert(steps.end(), heads.begin(), heads.end());
    return steps;
}

void Detector::warm_up(int height, int width) {
    plan_for(transform_geometry(config_, height, width));
    roi_heads_->prepare_all_batch_sizes();
}

std::vector<Detection> Detector::detect(const Image &image, StageTimes *times, DetectionTrace *trace) {
    if (trace == nullptr) return run(image, times, nullptr, nullptr, nullptr);
    ActivationObserver record = [trace](const FeatureMap &map) { trace->tensors[map.name] = to_planar(map); };
    return run(image, times, &record, trace, nullptr);
}

std::vector<Detection> Detector::detect_observed(const Image &image, const ActivationObserver &observer,
                                                 DetectionTrace *trace, const std::vector<Box> *proposals) {
    return run(image, nullptr, &observer, trace, proposals);
}

std::vector<Detection> Detector::run(const Image &image, StageTimes *times, const ActivationObserver *observer,
                                     DetectionTrace *trace, const std::vector<Box> *forced_proposals) {
    if (image.width <= 0 || image.height <= 0 ||
        image.rgb.size() != static_cast<size_t>(image.width) * image.height * 3) {
        fail(ErrorKind::input, "image of " + std::to_string(image.width) + "x" + std::to_string(image.height) +
                                   " pixels has " + std::to_string(image.rgb.size()) + " bytes of RGB data");
    }
    const TransformGeometry geometry = transform_geometry(config_, image.height, image.width);
    FeaturePlan &plan = plan_for(geometry);
    StageTimes local_times;
    StageTimes &t = times != nullptr ? *times : local_times;

    // GeneralizedRCNNTransform: normalise, resize, pad.
    auto start = Clock::now();
    const ResizeGeometry resize{image.height,         image.width,         geometry.resized.height,
                                geometry.resized.width, geometry.padded.height, geometry.padded.width};
    const NormalizeParams normalize{config_.image_mean, config_.image_std};
    if (plan.input.dtype == DType::s8) {
        resize_normalize(image.rgb.data(), resize, normalize, plan.input.scales.data(),
                         static_cast<int8_t *>(plan.input.data()));
    } else {
        resize_normalize(image.rgb.data(), resize, normalize, static_cast<float *>(plan.input.data()));
    }
    t[Stage::preprocess] += elapsed_ms(start);
    if (observer != nullptr) (*observer)(plan.input);

    // Backbone, FPN and the RPN head convolutions.
    plan.plan.run(dnnl_.stream, &t, observer);

    // Proposals.
    start = Clock::now();
    std::vector<RpnLevelOutput> levels;
    for (const FeatureMap &head : plan.rpn_head) levels.push_back({head.view<const float>()});
    std::vector<Box> proposals;
    std::vector<float> proposal_scores;
    proposals_->generate(levels, geometry.padded, geometry.resized, &proposals, &proposal_scores);
    if (forced_proposals != nullptr) {
        proposals = *forced_proposals;
        proposal_scores.assign(proposals.size(), 1.f);
    }
    const double proposal_ms = elapsed_ms(start);
    t[Stage::rpn] += proposal_ms;

    // Box head.
    start = Clock::now();
    std::vector<float> class_logits, box_regression;
    roi_heads_->run(dnnl_.stream, plan.fpn[kRoiFeatureLevel], geometry.resized, proposals, &class_logits,
                    &box_regression, observer);
    t[Stage::roi_heads] += elapsed_ms(start);

    // Detections, mapped back to the original image (torchvision's
    // transform.postprocess divides by the float32 size ratio).
    start = Clock::now();
    std::vector<Detection> detections =
        roi_heads_->postprocess(proposals, class_logits, box_regression, geometry.resized);
    const float ratio_h = static_cast<float>(geometry.resized.height) / static_cast<float>(image.height);
    const float ratio_w = static_cast<float>(geometry.resized.width) / static_cast<float>(image.width);
    for (Detection &d : detections) {
        d.box = {d.box.x1 / ratio_w, d.box.y1 / ratio_h, d.box.x2 / ratio_w, d.box.y2 / ratio_h};
    }
    t[Stage::postprocess] += elapsed_ms(start);
    if (profiling_) {
        profile_totals_.ms[static_cast<int>(Stage::preprocess)] += t[Stage::preprocess];
        profile_totals_.ms[static_cast<int>(Stage::rpn)] += proposal_ms;
        profile_totals_.ms[static_cast<int>(Stage::postprocess)] += t[Stage::postprocess];
        ++profile_totals_.runs;
    }

    if (trace != nullptr) {
        trace->geometry = geometry;
        trace->proposals = proposals;
        trace->proposal_scores = proposal_scores;
        trace->class_logits = class_logits;
        trace->box_regression = box_regression;
    }
    return detections;
}

}  // namespace qdet
