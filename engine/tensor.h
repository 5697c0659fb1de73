// Host tensors as stored in weight files: a data type, a shape and bytes.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "engine/aligned_buffer.h"

namespace qdet {

enum class DType : uint8_t { f32, s8, u8, s32, i64 };

size_t dtype_size(DType dtype);
// Names as in safetensors: F32, I8, U8, I32, I64.
const char *dtype_name(DType dtype);
// Returns false when `name` is not one of the names above.
bool dtype_from_name(const std::string &name, DType *dtype);

using Shape = std::vector<int64_t>;

// Throws Error(input) for a negative dimension or a count beyond int64.
int64_t shape_numel(const Shape &shape);
// The same without throwing: false for a negative dimension or overflow.
bool checked_numel(const Shape &shape, int64_t *count);
std::string shape_to_string(const Shape &shape);  // "[256, 160, 1, 1]"

struct HostTensor {
    DType dtype = DType::f32;
    Shape shape;
    AlignedBuffer bytes;

    HostTensor() = default;
    HostTensor(DType dtype_, Shape shape_)
        : dtype(dtype_), shape(std::move(shape_)), bytes(shape_numel(shape) * dtype_size(dtype)) {}

    int64_t numel() const { return shape_numel(shape); }
    size_t nbytes() const { return bytes.size(); }

    template <typename T>
    T *data() { return bytes.as<T>(); }
    template <typename T>
    const T *data() const { return bytes.as<T>(); }
};

// Makes an f32 tensor of `shape` holding a copy of `values` (numel must match).
HostTensor make_f32_tensor(const Shape &shape, const float *values);

}  // namespace qdet
