// The two ways qdet runs a model.
#pragma once

#include <string>

namespace qdet {

enum class Precision { fp32, int8 };

inline const char *precision_name(Precision precision) { return precision == Precision::fp32 ? "fp32" : "int8"; }

// Returns false when `text` is neither "fp32" nor "int8".
inline bool parse_precision(const std::string &text, Precision *precision) {
    if (text == "fp32") {
        *precision = Precision::fp32;
        return true;
    }
    if (text == "int8") {
        *precision = Precision::int8;
        return true;
    }
    return false;
}

}  // namespace qdet
