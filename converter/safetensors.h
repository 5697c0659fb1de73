// Reader for the safetensors format: an 8-byte little-endian header length, a
// JSON header mapping tensor names to {"dtype", "shape", "data_offsets"} plus
// an optional "__metadata__" string map, then the raw little-endian data.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "engine/aligned_buffer.h"
#include "engine/tensor.h"

namespace qdet {

struct SafetensorsEntry {
    std::string name;
    std::string dtype;  // as written: "F32", "U8", "I64", ...
    Shape shape;
    uint64_t begin = 0;  // byte offsets into the data section
    uint64_t end = 0;
};

class SafetensorsFile {
public:
    // Reads and checks the whole file: header bounds, JSON, every tensor's
    // offsets against its dtype and shape. Errors name the file and tensor.
    static SafetensorsFile read(const std::string &path);

    const std::string &path() const { return path_; }
    const std::map<std::string, std::string> &metadata() const { return metadata_; }
    const std::vector<SafetensorsEntry> &entries() const { return entries_; }

    bool has(const std::string &name) const { return index_.count(name) != 0; }
    const SafetensorsEntry &entry(const std::string &name) const;

    // Returns a copy of tensor `name`; throws unless its dtype is `dtype`
    // and, when `shape` is given, its shape equals `shape`.
    HostTensor tensor(const std::string &name, DType dtype, const Shape *shape = nullptr) const;
    HostTensor f32(const std::string &name) const { return tensor(name, DType::f32); }

private:
    std::string path_;
    AlignedBuffer bytes_;
    uint64_t data_offset_ = 0;
    std::map<std::string, std::string> metadata_;
    std::vector<SafetensorsEntry> entries_;
    std::map<std::string, size_t> index_;
};

}  // namespace qdet
