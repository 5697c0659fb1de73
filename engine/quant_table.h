// INT8 settings of a weight file: the activation scale of every named tensor
// and the layers kept in FP32.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace qdet {

struct QuantTable {
    // Tensor name -> one scale per channel (real value = scale * q).
    std::map<std::string, std::vector<float>> activation_scales;
    std::set<std::string> fp32_layers;

    bool empty() const { return activation_scales.empty(); }
    // Throws Error(input) naming `context` when `tensor` has no scales or
    // not `channels` of them.
    const std::vector<float> &scales(const std::string &tensor, int channels, const std::string &context) const;
    bool keeps_fp32(const std::string &layer) const { return fp32_layers.count(layer) != 0; }
};

// Reads the "quantization" object of a weight file header (null: empty table).
QuantTable quant_table_from_json(const nlohmann::json &quantization, const std::string &context);

}  // namespace qdet
