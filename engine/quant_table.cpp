#include "engine/quant_table.h"

#include <cmath>

#include <nlohmann/json.hpp>

#include "engine/error.h"

namespace qdet {

const std::vector<float> &QuantTable::scales(const std::string &tensor, int channels,
                                             const std::string &context) const {
    auto it = activation_scales.find(tensor);
    if (it == activation_scales.end()) {
        fail(ErrorKind::input, context + ": no INT8 activation scales for tensor '" + tensor +
                                   "'; run convert with --calib to quantize the model");
    }
    if (static_cast<int>(it->second.size()) != channels) {
        fail(ErrorKind::input, context + ": tensor '" + tensor + "' has " + std::to_string(it->second.size()) +
                                   " activation scales, expected one per channel (" + std::to_string(channels) +
                                   ")");
    }
    return it->second;
}

QuantTable quant_table_from_json(const nlohmann::json &quantization, const std::string &context) {
    QuantTable table;
    if (quantization.is_null()) return table;
    try {
        for (const auto &[name, entry] : quantization.at("activations").items()) {
            std::vector<float> scales = entry.at("scales").get<std::vector<float>>();
            for (float scale : scales) {
                if (!(scale > 0.f) || !std::isfinite(scale)) {
                    fail(ErrorKind::input, context + ": an activation scale of '" + name +
                                               "' is not a positive number");
                }
            }
            table.activation_scales[name] = std::move(scales);
        }
        for (const auto &layer : quantization.value("keep_fp32", nlohmann::json::array())) {
            table.fp32_layers.insert(layer.get<std::string>());
        }
    } catch (const nlohmann::json::exception &e) {
        fail(ErrorKind::input, context + ": malformed quantization section: " + e.what());
    }
    return table;
}

}  // namespace qdet
