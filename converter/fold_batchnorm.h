// Reads a torchvision export and produces the FP32 layers of a qdet weight
// file, with every BatchNorm folded into the convolution before it.
#pragma once

#include <vector>

#include "converter/safetensors.h"
#include "engine/architecture.h"
#include "engine/model_config.h"
#include "engine/tensor.h"

namespace qdet {

struct FoldedLayer {
    LayerSpec spec;
    HostTensor weight;  // f32, spec.weight_shape()
    HostTensor bias;    // f32 [out_channels]
};

// Checks that the export contains exactly the tensors the architecture needs,
// with the right shapes, and folds BatchNorm:
//   w' = w * gamma / sqrt(var + eps),  b' = beta - mean * gamma / sqrt(var + eps)
// computed in float32 as FrozenBatchNorm2d computes its scale. Throws
// Error(input) naming the first missing, misshapen or unexpected tensor.
std::vector<FoldedLayer> fold_checkpoint(const SafetensorsFile &file, const ModelConfig &config);

}  // namespace qdet
