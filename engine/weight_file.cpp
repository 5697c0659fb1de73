#include "engine/weight_file.h"

#include <cstring>
#include <set>

#include "engine/crc32c.h"
#include "engine/error.h"
#include "engine/file_util.h"

namespace qdet {
namespace {

using nlohmann::json;

template <typename T>
T load_le(const uint8_t *p) {
    T value;
    std::memcpy(&value, p, sizeof(T));  // x86-64 is little-endian, as the format
    return value;
}

template <typename T>
void store_le(uint8_t *p, T value) {
    std::memcpy(p, &value, sizeof(T));
}

[[noreturn]] void corrupt(const std::string &path, const std::string &problem) {
    fail(ErrorKind::input, path + ": not a valid qdet weight file: " + problem);
}

TensorInfo parse_tensor_entry(const json &entry, const std::string &path, uint64_t data_size) {
    TensorInfo info;
    try {
        info.name = entry.at("name").get<std::string>();
        std::string dtype = entry.at("dtype").get<std::string>();
        if (!dtype_from_name(dtype, &info.dtype)) {
            corrupt(path, "tensor '" + info.name + "' has unknown data type '" + dtype + "'");
        }
        info.shape = entry.at("shape").get<Shape>();
        info.offset = entry.at("offset").get<uint64_t>();
        info.nbytes = entry.at("nbytes").get<uint64_t>();
    } catch (const json::exception &e) {
        corrupt(path, std::string("malformed tensor entry in the header: ") + e.what());
    }
    for (int64_t d : info.shape) {
        if (d < 0) corrupt(path, "tensor '" + info.name + "' has a negative dimension");
    }
    int64_t count = 0;
    if (!checked_numel(info.shape, &count) || static_cast<uint64_t>(count) > data_size) {
        corrupt(path, "tensor '" + info.name + "' has an impossible shape " + shape_to_string(info.shape));
    }
    uint64_t expected = static_cast<uint64_t>(count) * dtype_size(info.dtype);
    if (info.nbytes != expected) {
        corrupt(path, "tensor '" + info.name + "' has " + std::to_string(info.nbytes) + " bytes, its shape " +
                          shape_to_string(info.shape) + " needs " + std::to_string(expected));
    }
    if (info.offset % kAlignment != 0) corrupt(path, "tensor '" + info.name + "' is not 64-byte aligned");
    if (info.offset > data_size || info.nbytes > data_size - info.offset) {
        corrupt(path, "tensor '" + info.name + "' extends past the end of the data");
    }
    return info;
}

}  // namespace

WeightFile WeightFile::read(const std::string &path) { return parse(read_file(path), path); }

WeightFile WeightFile::parse(AlignedBuffer bytes, const std::string &path) {
    WeightFile file;
    file.path_ = path;
    file.bytes_ = std::move(bytes);
    const uint8_t *p = file.bytes_.data();
    const uint64_t size = file.bytes_.size();
    file.file_size_ = size;

    if (size < kWeightFileFixedHeaderSize || std::memcmp(p, kWeightFileMagic, sizeof(kWeightFileMagic)) != 0) {
        corrupt(path, "the magic bytes are missing (expected a file written by qdet's convert)");
    }
    uint32_t version = load_le<uint32_t>(p + 8);
    if (version != kWeightFileVersion) {
        fail(ErrorKind::input, path + ": weight file format version " + std::to_string(version) +
                                   " is not supported; this build reads version " +
                                   std::to_string(kWeightFileVersion) + ". Convert the model again.");
    }
    uint32_t header_crc = load_le<uint32_t>(p + 12);
    uint64_t header_size = load_le<uint64_t>(p + 16);
    uint64_t data_offset = load_le<uint64_t>(p + 24);
    uint64_t data_size = load_le<uint64_t>(p + 32);
    uint32_t data_crc = load_le<uint32_t>(p + 40);

    if (header_size > size - kWeightFileFixedHeaderSize ||
        data_offset < kWeightFileFixedHeaderSize + header_size || data_offset % kAlignment != 0 ||
        data_offset > size || data_size != size - data_offset) {
        corrupt(path, "the section sizes do not match the file size (" + std::to_string(size) +
                          " bytes); the file is truncated or damaged");
    }
    if (crc32c(p + kWeightFileFixedHeaderSize, header_size) != header_crc) {
        corrupt(path, "the header checksum does not match; the file is damaged");
    }
    if (crc32c(p + data_offset, data_size) != data_crc) {
        corrupt(path, "the data checksum does not match; the file is damaged");
    }

    json header;
    try {
        header = json::parse(p + kWeightFileFixedHeaderSize, p + kWeightFileFixedHeaderSize + header_size);
    } catch (const json::exception &e) {
        corrupt(path, std::string("the header is not valid JSON: ") + e.what());
    }
    if (!header.is_object() || !header.contains("config") || !header.contains("tensors") ||
        !header["tensors"].is_array()) {
        corrupt(path, "the header lacks 'config' or 'tensors'");
    }
    file.config_ = config_from_json(header["config"], path);
    file.quantization_ = header.value("quantization", json());
    file.producer_ = header.value("producer", json::object());
    file.data_offset_ = data_offset;

    for (const json &entry : header["tensors"]) {
        TensorInfo info = parse_tensor_entry(entry, path, data_size);
        if (!file.index_.emplace(info.name, file.tensors_.size()).second) {
            corrupt(path, "tensor '" + info.name + "' appears twice");
        }
        file.tensors_.push_back(std::move(info));
    }
    return file;
}

const TensorInfo &WeightFile::info(const std::string &name) const {
    auto it = index_.find(name);
    if (it == index_.end()) {
        fail(ErrorKind::input, path_ + ": tensor '" + name + "' is missing; convert the model again");
    }
    return tensors_[it->second];
}

const void *WeightFile::data(const std::string &name, DType dtype, const Shape &shape) const {
    const TensorInfo &entry = info(name);
    if (entry.dtype != dtype || entry.shape != shape) {
        fail(ErrorKind::input, path_ + ": tensor '" + name + "' is " + dtype_name(entry.dtype) + " " +
                                   shape_to_string(entry.shape) + ", expected " + dtype_name(dtype) + " " +
                                   shape_to_string(shape));
    }
    return bytes_.data() + data_offset_ + entry.offset;
}

void WeightFileWriter::add_tensor(const std::string &name, DType dtype, const Shape &shape, const void *data) {
    if (index_.count(name)) fail(ErrorKind::internal, "weight file writer: tensor '" + name + "' added twice");
    Entry entry;
    entry.info.name = name;
    entry.info.dtype = dtype;
    entry.info.shape = shape;
    entry.data = HostTensor(dtype, shape);
    entry.info.nbytes = entry.data.nbytes();
    if (entry.info.nbytes > 0) std::memcpy(entry.data.bytes.data(), data, entry.info.nbytes);
    index_[name] = entries_.size();
    entries_.push_back(std::move(entry));
}

std::map<DType, uint64_t> WeightFileWriter::bytes_by_dtype() const {
    std::map<DType, uint64_t> totals;
    for (const Entry &entry : entries_) totals[entry.info.dtype] += entry.info.nbytes;
    return totals;
}

AlignedBuffer WeightFileWriter::serialize() const {
    // Lay the tensors out first: each starts on a 64-byte boundary.
    std::vector<TensorInfo> layout;
    uint64_t data_size = 0;
    for (const Entry &entry : entries_) {
        TensorInfo info = entry.info;
        info.offset = data_size;
        data_size = align_up(data_size + info.nbytes);
        layout.push_back(info);
    }

    json tensors = json::array();
    for (const TensorInfo &info : layout) {
        tensors.push_back({{"name", info.name},
                           {"dtype", dtype_name(info.dtype)},
                           {"shape", info.shape},
                           {"offset", info.offset},
                           {"nbytes", info.nbytes}});
    }
    json header = {{"config", config_to_json(config_)},
                   {"tensors", tensors},
                   {"quantization", quantization_},
                   {"producer", producer_}};
    std::string header_text = header.dump();
    uint64_t data_offset = align_up(kWeightFileFixedHeaderSize + header_text.size());

    AlignedBuffer image(data_offset + data_size);
    uint8_t *out = image.data();
    std::memset(out, 0, data_offset);
    std::memcpy(out + kWeightFileFixedHeaderSize, header_text.data(), header_text.size());
    for (size_t i = 0; i < entries_.size(); ++i) {
        uint8_t *tensor = out + data_offset + layout[i].offset;
        std::memcpy(tensor, entries_[i].data.bytes.data(), layout[i].nbytes);
        std::memset(tensor + layout[i].nbytes, 0, align_up(layout[i].nbytes) - layout[i].nbytes);
    }

    std::memcpy(out, kWeightFileMagic, sizeof(kWeightFileMagic));
    store_le<uint32_t>(out + 8, kWeightFileVersion);
    store_le<uint32_t>(out + 12, crc32c(header_text.data(), header_text.size()));
    store_le<uint64_t>(out + 16, header_text.size());
    store_le<uint64_t>(out + 24, data_offset);
    store_le<uint64_t>(out + 32, data_size);
    store_le<uint32_t>(out + 40, crc32c(out + data_offset, data_size));
    return image;
}

void WeightFileWriter::write(const std::string &path) const {
    const AlignedBuffer image = serialize();
    write_file_atomically(path, [&](const ByteSink &sink) { sink(image.data(), image.size()); });
}

}  // namespace qdet
