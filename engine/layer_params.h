// Host copies of one convolution or linear layer's parameters, as the
// engine reads them from a weight file.
#pragma once

#include <string>
#include <vector>

#include "engine/architecture.h"
#include "engine/precision.h"
#include "engine/tensor.h"
#include "engine/weight_file.h"

namespace qdet {

// Tensor names of a layer in the qdet weight file.
std::string weight_name(const std::string &layer);        // FP32 weight, BatchNorm folded
std::string bias_name(const std::string &layer);          // FP32 bias, BatchNorm folded
std::string weight_s8_name(const std::string &layer);     // INT8 weight, per-output-channel symmetric
std::string weight_scale_name(const std::string &layer);  // FP32 scale per output channel

struct LayerParams {
    LayerSpec spec;
    HostTensor bias;                  // f32 [out_channels]
    HostTensor weight;                // f32, spec.weight_shape(); empty when running INT8
    HostTensor weight_s8;             // s8, spec.weight_shape(); empty when running FP32
    std::vector<float> weight_scales;  // one per output channel, with weight_s8
};

// Reads the tensors `precision` needs; throws Error naming the file and
// tensor when one is missing or has the wrong shape.
LayerParams load_layer_params(const WeightFile &file, const LayerSpec &spec, Precision precision);

// Stacks two layers with the same input into one with a.out + b.out output
// channels (RPN cls_logits with bbox_pred, cls_score with bbox_pred).
LayerParams concat_output_channels(const LayerParams &a, const LayerParams &b, const std::string &name);

}  // namespace qdet
