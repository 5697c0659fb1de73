#include "engine/layer_params.h"

#include <cstring>

#include "engine/error.h"

namespace qdet {

std::string weight_name(const std::string &layer) { return layer + ".weight"; }
std::string bias_name(const std::string &layer) { return layer + ".bias"; }
std::string weight_s8_name(const std::string &layer) { return layer + ".weight_s8"; }
std::string weight_scale_name(const std::string &layer) { return layer + ".weight_scale"; }

namespace {

HostTensor copy_tensor(const WeightFile &file, const std::string &name, DType dtype, const Shape &shape) {
    HostTensor tensor(dtype, shape);
    const void *source = file.data(name, dtype, shape);
    if (tensor.nbytes() > 0) std::memcpy(tensor.bytes.data(), source, tensor.nbytes());
    return tensor;
}

HostTensor concat_rows(const HostTensor &a, const HostTensor &b) {
    Shape shape = a.shape;
    shape[0] += b.shape[0];
    HostTensor out(a.dtype, shape);
    std::memcpy(out.bytes.data(), a.bytes.data(), a.nbytes());
    std::memcpy(out.bytes.data() + a.nbytes(), b.bytes.data(), b.nbytes());
    return out;
}

}  // namespace

LayerParams load_layer_params(const WeightFile &file, const LayerSpec &spec, Precision precision) {
    LayerParams params;
    params.spec = spec;
    const Shape shape = spec.weight_shape();
    const Shape channels = {spec.out_channels};
    params.bias = copy_tensor(file, bias_name(spec.name), DType::f32, channels);
    if (precision == Precision::fp32 || is_squeeze_excitation_layer(spec.name)) {
        params.weight = copy_tensor(file, weight_name(spec.name), DType::f32, shape);
        return params;
    }
    params.weight_s8 = copy_tensor(file, weight_s8_name(spec.name), DType::s8, shape);
    const float *scales = file.f32(weight_scale_name(spec.name), channels);
    params.weight_scales.assign(scales, scales + spec.out_channels);
    for (float s : params.weight_scales) {
        if (!(s > 0.f)) {
            fail(ErrorKind::input, file.path() + ": tensor '" + weight_scale_name(spec.name) +
                                       "' holds a scale that is not positive; convert the model again");
        }
    }
    return params;
}

LayerParams concat_output_channels(const LayerParams &a, const LayerParams &b, const std::string &name) {
    if (a.spec.in_channels != b.spec.in_channels || a.spec.kernel != b.spec.kernel || a.spec.groups != 1 ||
        b.spec.groups != 1 || a.spec.kind != b.spec.kind) {
        fail(ErrorKind::internal, "cannot stack layers " + a.spec.name + " and " + b.spec.name);
    }
    LayerParams out;
    out.spec = a.spec;
    out.spec.name = name;
    out.spec.out_channels = a.spec.out_channels + b.spec.out_channels;
    out.bias = concat_rows(a.bias, b.bias);
    if (!a.weight.bytes.empty()) out.weight = concat_rows(a.weight, b.weight);
    if (!a.weight_s8.bytes.empty()) out.weight_s8 = concat_rows(a.weight_s8, b.weight_s8);
    out.weight_scales = a.weight_scales;
    out.weight_scales.insert(out.weight_scales.end(), b.weight_scales.begin(), b.weight_scales.end());
    return out;
}

}  // namespace qdet
