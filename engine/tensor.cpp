#include "engine/tensor.h"

#include <sstream>

#include "engine/error.h"

namespace qdet {

size_t dtype_size(DType dtype) {
    switch (dtype) {
        case DType::f32: return 4;
        case DType::s8: return 1;
        case DType::u8: return 1;
        case DType::s32: return 4;
        case DType::i64: return 8;
    }
    fail(ErrorKind::internal, "unknown data type");
}

const char *dtype_name(DType dtype) {
    switch (dtype) {
        case DType::f32: return "F32";
        case DType::s8: return "I8";
        case DType::u8: return "U8";
        case DType::s32: return "I32";
        case DType::i64: return "I64";
    }
    return "?";
}

bool dtype_from_name(const std::string &name, DType *dtype) {
    static const std::pair<const char *, DType> names[] = {
        {"F32", DType::f32}, {"I8", DType::s8}, {"U8", DType::u8}, {"I32", DType::s32}, {"I64", DType::i64}};
    for (const auto &[text, value] : names) {
        if (name == text) {
            *dtype = value;
            return true;
        }
    }
    return false;
}

bool checked_numel(const Shape &shape, int64_t *count) {
    *count = 1;
    for (int64_t d : shape) {
        if (d < 0 || __builtin_mul_overflow(*count, d, count)) return false;
    }
    return true;
}

int64_t shape_numel(const Shape &shape) {
    int64_t count = 0;
    if (!checked_numel(shape, &count)) {
        fail(ErrorKind::input, "shape " + shape_to_string(shape) + " is negative or has too many elements");
    }
    return count;
}

std::string shape_to_string(const Shape &shape) {
    std::ostringstream out;
    out << '[';
    for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
    out << ']';
    return out.str();
}

HostTensor make_f32_tensor(const Shape &shape, const float *values) {
    HostTensor tensor(DType::f32, shape);
    if (tensor.nbytes() > 0) std::memcpy(tensor.bytes.data(), values, tensor.nbytes());
    return tensor;
}

}  // namespace qdet
