// The second stage of Faster R-CNN at test time (torchvision's RoIHeads):
// MultiScaleRoIAlign, TwoMLPHead (fc6, fc7), FastRCNNPredictor and
// postprocess_detections.
#pragma once

#include <map>
#include <memory>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "engine/dnnl_layer.h"
#include "engine/model_config.h"
#include "engine/plan.h"
#include "engine/precision.h"
#include "engine/quant_table.h"
#include "engine/rpn.h"
#include "engine/weight_file.h"
#include "kernels/box_ops.h"

namespace qdet {

struct Detection {
    Box box;
    float score = 0.f;
    int label = 0;
};

// torchvision's MultiScaleRoIAlign scale of a feature map: 2^round(log2(
// feature height / image height)), from the height alone.
float roi_spatial_scale(int feature_height, int image_height);

class RoiHeads {
public:
    RoiHeads(const WeightFile &file, Precision precision, const QuantTable &quant, const dnnl::engine &engine);
    ~RoiHeads();

    // Computes class logits (N x num_classes) and box regression
    // (N x 4 num_classes) for N proposals on FPN level "0".
    void run(dnnl::stream &stream, const FeatureMap &features, ImageSize image, const std::vector<Box> &proposals,
             std::vector<float> *class_logits, std::vector<float> *box_regression,
             const ActivationObserver *observer);

    // postprocess_detections: softmax, per-class box decoding, clipping,
    // score threshold, small-box removal, per-class NMS, top-k. Boxes are
    // in resized-image coordinates.
    std::vector<Detection> postprocess(const std::vector<Box> &proposals, const std::vector<float> &class_logits,
                                       const std::vector<float> &box_regression, ImageSize image) const;

    // Times RoI Align and each fully connected layer while enabled.
    void set_profiling(bool enabled) { profiling_ = enabled; }
    const std::vector<Plan::StepProfile> &profile() const { return profile_; }

    // Creates the primitives of every batch size up to the post-NMS top-n,
    // so that no later image pays for their creation.
    void prepare_all_batch_sizes();

private:
    struct Batch;  // primitives and arguments for one padded proposal count
    Batch &batch_for(int rows);
    void ensure_scratchpad(size_t bytes);

    ModelConfig config_;
    Precision precision_;
    QuantTable quant_;
    std::string context_;
    dnnl::engine engine_;
    int pooled_ = 7;
    int feature_channels_ = 0;
    int max_rows_ = 0;

    std::unique_ptr<DnnlLayer> fc6_;
    std::unique_ptr<DnnlLayer> fc7_;
    std::unique_ptr<DnnlLayer> predictor_;  // cls_score and bbox_pred stacked

    // Buffers sized for the largest batch; each layer's output has the
    // type the next layer reads.
    AlignedBuffer roi_features_;  // rows x pooled x pooled x channels
    AlignedBuffer fc6_out_;
    AlignedBuffer fc7_out_;
    AlignedBuffer predictor_out_;  // f32
    AlignedBuffer requantize_;     // f32 output of an FP32 layer whose successor runs INT8
    AlignedBuffer scratchpad_;
    std::map<int, std::unique_ptr<Batch>> batches_;
    bool profiling_ = false;
    std::vector<Plan::StepProfile> profile_;
};

}  // namespace qdet
