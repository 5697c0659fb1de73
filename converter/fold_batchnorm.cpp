#include "converter/fold_batchnorm.h"

#include <cmath>
#include <set>

#include "engine/error.h"

namespace qdet {
namespace {

// Reads an F32 tensor after checking its shape.
HostTensor read_checked(const SafetensorsFile &file, const std::string &name, const Shape &shape,
                        std::set<std::string> *used) {
    if (!file.has(name)) {
        fail(ErrorKind::input, file.path() + ": tensor '" + name + "' is missing (expected shape " +
                                   shape_to_string(shape) + "); the checkpoint does not match " +
                                   "fasterrcnn_mobilenet_v3_large_fpn");
    }
    used->insert(name);
    return file.tensor(name, DType::f32, &shape);
}

}  // namespace

std::vector<FoldedLayer> fold_checkpoint(const SafetensorsFile &file, const ModelConfig &config) {
    const float eps = static_cast<float>(config.bn_eps);
    std::set<std::string> used;
    std::vector<FoldedLayer> folded;

    for (const LayerSpec &spec : detector_layers(config)) {
        FoldedLayer layer;
        layer.spec = spec;
        const Shape channels = {spec.out_channels};
        layer.weight = read_checked(file, spec.name + ".weight", spec.weight_shape(), &used);

        if (spec.norm_name.empty()) {
            layer.bias = read_checked(file, spec.name + ".bias", channels, &used);
            folded.push_back(std::move(layer));
            continue;
        }

        const HostTensor gamma = read_checked(file, spec.norm_name + ".weight", channels, &used);
        const HostTensor beta = read_checked(file, spec.norm_name + ".bias", channels, &used);
        const HostTensor mean = read_checked(file, spec.norm_name + ".running_mean", channels, &used);
        const HostTensor var = read_checked(file, spec.norm_name + ".running_var", channels, &used);
        layer.bias = HostTensor(DType::f32, channels);

        float *w = layer.weight.data<float>();
        const int64_t per_channel = layer.weight.numel() / spec.out_channels;
        for (int oc = 0; oc < spec.out_channels; ++oc) {
            const float v = var.data<float>()[oc];
            if (!(v + eps > 0.f)) {
                fail(ErrorKind::input, file.path() + ": '" + spec.norm_name + ".running_var' has a negative value " +
                                           "at channel " + std::to_string(oc));
            }
            // FrozenBatchNorm2d: scale = weight * (running_var + eps).rsqrt()
            const float scale = gamma.data<float>()[oc] * (1.f / std::sqrt(v + eps));
            for (int64_t i = 0; i < per_channel; ++i) w[oc * per_channel + i] *= scale;
            layer.bias.data<float>()[oc] = beta.data<float>()[oc] - mean.data<float>()[oc] * scale;
        }
        folded.push_back(std::move(layer));
    }

    for (const SafetensorsEntry &entry : file.entries()) {
        if (used.count(entry.name)) continue;
        // BatchNorm2d checkpoints carry a step counter that inference ignores.
        if (entry.name.size() > 20 && entry.name.compare(entry.name.size() - 20, 20, ".num_batches_tracked") == 0) {
            continue;
        }
        fail(ErrorKind::input, file.path() + ": unexpected tensor '" + entry.name + "' " +
                                   shape_to_string(entry.shape) +
                                   "; the checkpoint does not match fasterrcnn_mobilenet_v3_large_fpn");
    }
    return folded;
}

}  // namespace qdet
