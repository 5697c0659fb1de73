// qdet's public API: a Faster R-CNN MobileNetV3-Large FPN detector loaded
// from a qdet weight file, run in FP32 or INT8.
//
//   qdet::Detector detector("model.qdet", {qdet::Precision::int8});
//   auto detections = detector.detect(qdet::read_image("car.jpg"));
//
// A Detector runs one image at a time; use one per thread.
#pragma once

#include <list>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/image.h"
#include "engine/model_config.h"
#include "engine/plan.h"
#include "engine/precision.h"
#include "engine/roi_heads.h"

namespace qdet {

class WeightFile;
class FeatureNetwork;
class ProposalGenerator;
struct FeaturePlan;

struct DetectorOptions {
    Precision precision = Precision::fp32;
    // Activation layout of FP32 convolutions: nChw16c (oneDNN's blocked
    // layout) or nhwc. INT8 always uses nhwc.
    Layout fp32_layout = Layout::blocked16;
    // Plans (primitives and buffers) kept for this many input sizes.
    int max_cached_sizes = 8;
    // FP32 only: compute residual sums apart from the projection so that
    // calibration observes each block's branch (slower; same results).
    bool observe_residual_branches = false;
};

// Sizes of GeneralizedRCNNTransform for one image.
struct TransformGeometry {
    ImageSize original;
    ImageSize resized;  // after resize, before padding
    ImageSize padded;   // a multiple of size_divisible
};

// torchvision's resize rule: scale = min(min_size / short side, max_size /
// long side) computed in float32, output size floor(side * scale).
TransformGeometry transform_geometry(const ModelConfig &config, int height, int width);

// Intermediate results of one detect() call, for tests and debugging.
// Feature maps are copied out as planar float32 (C x H x W, dequantized).
struct DetectionTrace {
    struct Tensor {
        int channels = 0, height = 0, width = 0;
        std::vector<float> values;
    };
    std::map<std::string, Tensor> tensors;  // by tensor name (see feature_network.h)
    TransformGeometry geometry;
    std::vector<Box> proposals;
    std::vector<float> proposal_scores;
    std::vector<float> class_logits;    // proposals x num_classes
    std::vector<float> box_regression;  // proposals x 4 num_classes
};

// Copies a feature map out as planar float32 (C x H x W), dequantized.
DetectionTrace::Tensor to_planar(const FeatureMap &map);

class Detector {
public:
    Detector(const std::string &weight_path, const DetectorOptions &options);
    Detector(const WeightFile &file, const DetectorOptions &options);
    ~Detector();
    Detector(const Detector &) = delete;
    Detector &operator=(const Detector &) = delete;

    // Detects objects; boxes are in the image's pixel coordinates.
    std::vector<Detection> detect(const Image &image, StageTimes *times = nullptr,
                                  DetectionTrace *trace = nullptr);

    // Runs the network and reports every named activation to `observer`
    // (used by INT8 calibration). Returns the detections as detect() does.
    // With `proposals`, the box head runs on those boxes instead of the RPN's,
    // so that two precisions can be compared layer by layer on the same RoIs.
    std::vector<Detection> detect_observed(const Image &image, const ActivationObserver &observer,
                                           DetectionTrace *trace = nullptr,
                                           const std::vector<Box> *proposals = nullptr);

    // Builds the plan of an input size and the box head primitives of every
    // proposal count ahead of time, so that timed runs measure only inference.
    void warm_up(int height, int width);

    // Times every step of the plans (oneDNN primitive or kernel) from now
    // on; profile() returns the sums of the most recently used plan.
    void set_profiling(bool enabled);
    std::vector<Plan::StepProfile> profile() const;

    const ModelConfig &config() const { return config_; }
    Precision precision() const { return options_.precision; }
    const std::string &weight_path() const { return weight_path_; }

private:
    void load(const WeightFile &file);
    FeaturePlan &plan_for(const TransformGeometry &geometry);
    std::vector<Detection> run(const Image &image, StageTimes *times, const ActivationObserver *observer,
                               DetectionTrace *trace, const std::vector<Box> *forced_proposals);

    DetectorOptions options_;
    ModelConfig config_;
    std::string weight_path_;
    DnnlContext dnnl_;
    std::unique_ptr<FeatureNetwork> network_;
    std::unique_ptr<ProposalGenerator> proposals_;
    std::unique_ptr<RoiHeads> roi_heads_;
    ActivationArena arena_;  // before plans_: plans detach from it when destroyed
    std::list<std::unique_ptr<FeaturePlan>> plans_;  // most recently used first
    bool profiling_ = false;
    struct {
        std::array<double, kStageCount> ms{};
        int runs = 0;
    } profile_totals_;  // the stages outside plans and the box head
};

// Sets the number of threads of oneDNN and qdet's kernels (OpenMP); 0 keeps
// the default (all cores).
void set_thread_count(int threads);
int thread_count();

}  // namespace qdet
