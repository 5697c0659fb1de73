// qdet's weight file: the model settings, a manifest of tensors and their
// data, written by the converter and read by the engine.
//
// Layout (all integers little-endian):
//   bytes 0..63   fixed header
//                   0  char[8]  magic "QDETWGT\0"
//                   8  uint32   format version (kWeightFileVersion)
//                  12  uint32   CRC-32C of the JSON header
//                  16  uint64   JSON header size in bytes
//                  24  uint64   data offset (a multiple of 64)
//                  32  uint64   data size in bytes
//                  40  uint32   CRC-32C of the data
//                  44  20 bytes reserved, zero
//   bytes 64..    JSON header: {"config": {...}, "tensors": [{"name", "dtype",
//                 "shape", "offset", "nbytes"}, ...], "quantization": {...} or
//                 null, "producer": {...}}; tensor offsets are relative to
//                 the data offset
//   data offset.. tensor data, each tensor starting on a 64-byte boundary
//
// The engine rejects a file unless the magic, the version, every bound and
// both checksums are right, so a model is either loaded whole or not at all.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/aligned_buffer.h"
#include "engine/model_config.h"
#include "engine/tensor.h"

namespace qdet {

constexpr char kWeightFileMagic[8] = {'Q', 'D', 'E', 'T', 'W', 'G', 'T', '\0'};
constexpr uint32_t kWeightFileVersion = 1;
constexpr size_t kWeightFileFixedHeaderSize = 64;

struct TensorInfo {
    std::string name;
    DType dtype = DType::f32;
    Shape shape;
    uint64_t offset = 0;  // from the start of the data section
    uint64_t nbytes = 0;
};

class WeightFile {
public:
    // Reads and verifies the whole file; throws Error naming the file and the
    // first problem found.
    static WeightFile read(const std::string &path);
    // Verifies and takes over a file image already in memory; `name` stands
    // for the path in messages.
    static WeightFile parse(AlignedBuffer bytes, const std::string &name);

    const std::string &path() const { return path_; }
    const ModelConfig &config() const { return config_; }
    // The "quantization" object of the header; null for an FP32-only file.
    const nlohmann::json &quantization() const { return quantization_; }
    const nlohmann::json &producer() const { return producer_; }
    const std::vector<TensorInfo> &tensors() const { return tensors_; }
    uint64_t file_size() const { return file_size_; }

    bool has(const std::string &name) const { return index_.count(name) != 0; }
    const TensorInfo &info(const std::string &name) const;

    // Returns the data of tensor `name` after checking its type and shape.
    const void *data(const std::string &name, DType dtype, const Shape &shape) const;
    const float *f32(const std::string &name, const Shape &shape) const {
        return static_cast<const float *>(data(name, DType::f32, shape));
    }

private:
    std::string path_;
    AlignedBuffer bytes_;
    uint64_t data_offset_ = 0;
    uint64_t file_size_ = 0;
    ModelConfig config_;
    nlohmann::json quantization_;
    nlohmann::json producer_;
    std::vector<TensorInfo> tensors_;
    std::map<std::string, size_t> index_;
};

class WeightFileWriter {
public:
    void set_config(const ModelConfig &config) { config_ = config; }
    void set_quantization(nlohmann::json quantization) { quantization_ = std::move(quantization); }
    void set_producer(nlohmann::json producer) { producer_ = std::move(producer); }

    // Copies the data; names must be unique.
    void add_tensor(const std::string &name, DType dtype, const Shape &shape, const void *data);
    void add_tensor(const std::string &name, const HostTensor &tensor) {
        add_tensor(name, tensor.dtype, tensor.shape, tensor.bytes.data());
    }

    // The complete file image.
    AlignedBuffer serialize() const;
    // Writes to a temporary file and renames it over `path`.
    void write(const std::string &path) const;

    // Total bytes of the tensors of each type, for reports.
    std::map<DType, uint64_t> bytes_by_dtype() const;

private:
    struct Entry {
        TensorInfo info;
        HostTensor data;
    };
    ModelConfig config_;
    nlohmann::json quantization_;  // null unless set
    nlohmann::json producer_ = nlohmann::json::object();
    std::vector<Entry> entries_;
    std::map<std::string, size_t> index_;
};

}  // namespace qdet
