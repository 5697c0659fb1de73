#include "converter/safetensors.h"

#include <cstring>

#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "engine/file_util.h"

namespace qdet {
namespace {

using nlohmann::json;

[[noreturn]] void invalid(const std::string &path, const std::string &problem) {
    fail(ErrorKind::input, path + ": not a valid safetensors file: " + problem);
}

// Element size of a safetensors dtype name, 0 when unknown.
size_t element_size(const std::string &dtype) {
    static const std::map<std::string, size_t> sizes = {
        {"BOOL", 1}, {"U8", 1}, {"I8", 1}, {"F16", 2}, {"BF16", 2}, {"I16", 2}, {"U16", 2},
        {"F32", 4},  {"I32", 4}, {"U32", 4}, {"F64", 8}, {"I64", 8},  {"U64", 8}};
    auto it = sizes.find(dtype);
    return it == sizes.end() ? 0 : it->second;
}

}  // namespace

SafetensorsFile SafetensorsFile::read(const std::string &path) {
    SafetensorsFile file;
    file.path_ = path;
    file.bytes_ = read_file(path);
    const uint64_t size = file.bytes_.size();
    if (size < 8) invalid(path, "the file has " + std::to_string(size) + " bytes, fewer than the 8-byte header length");

    if (std::memcmp(file.bytes_.data(), "QDETWGT", 8) == 0) {
        invalid(path, "this is a qdet weight file (from convert); --weights takes the .safetensors file that "
                      "weights/export_torchvision.py writes");
    }

    uint64_t header_size;
    std::memcpy(&header_size, file.bytes_.data(), 8);
    if (header_size > size - 8) {
        invalid(path, "the header length (" + std::to_string(header_size) + ") runs past the end of the file (" +
                          std::to_string(size) + " bytes); the file is truncated or not safetensors");
    }
    json header;
    try {
        const auto *text = reinterpret_cast<const char *>(file.bytes_.data() + 8);
        header = json::parse(text, text + header_size);
    } catch (const json::exception &e) {
        invalid(path, std::string("the header is not valid JSON: ") + e.what());
    }
    if (!header.is_object()) invalid(path, "the header is not a JSON object");
    file.data_offset_ = 8 + header_size;
    const uint64_t data_size = size - file.data_offset_;

    for (const auto &[name, value] : header.items()) {
        if (name == "__metadata__") {
            if (!value.is_object()) invalid(path, "__metadata__ is not an object");
            for (const auto &[key, text] : value.items()) {
                if (!text.is_string()) invalid(path, "metadata value of '" + key + "' is not a string");
                file.metadata_[key] = text.get<std::string>();
            }
            continue;
        }
        SafetensorsEntry entry;
        entry.name = name;
        try {
            entry.dtype = value.at("dtype").get<std::string>();
            entry.shape = value.at("shape").get<Shape>();
            auto offsets = value.at("data_offsets").get<std::vector<uint64_t>>();
            if (offsets.size() != 2) invalid(path, "tensor '" + name + "' needs two data_offsets");
            entry.begin = offsets[0];
            entry.end = offsets[1];
        } catch (const json::exception &e) {
            invalid(path, "malformed entry for tensor '" + name + "': " + e.what());
        }
        size_t element = element_size(entry.dtype);
        if (element == 0) invalid(path, "tensor '" + name + "' has unknown dtype '" + entry.dtype + "'");
        for (int64_t d : entry.shape) {
            if (d < 0) invalid(path, "tensor '" + name + "' has a negative dimension");
        }
        int64_t count = 0;
        if (!checked_numel(entry.shape, &count) || static_cast<uint64_t>(count) > data_size) {
            invalid(path, "tensor '" + name + "' has an impossible shape " + shape_to_string(entry.shape));
        }
        if (entry.begin > entry.end || entry.end > data_size) {
            invalid(path, "tensor '" + name + "' lies outside the data section; the file is truncated");
        }
        uint64_t expected = static_cast<uint64_t>(count) * element;
        if (entry.end - entry.begin != expected) {
            invalid(path, "tensor '" + name + "' has " + std::to_string(entry.end - entry.begin) +
                              " bytes, its shape " + shape_to_string(entry.shape) + " needs " +
                              std::to_string(expected));
        }
        file.index_[name] = file.entries_.size();
        file.entries_.push_back(std::move(entry));
    }
    return file;
}

const SafetensorsEntry &SafetensorsFile::entry(const std::string &name) const {
    auto it = index_.find(name);
    if (it == index_.end()) fail(ErrorKind::input, path_ + ": tensor '" + name + "' is missing");
    return entries_[it->second];
}

HostTensor SafetensorsFile::tensor(const std::string &name, DType dtype, const Shape *shape) const {
    const SafetensorsEntry &e = entry(name);
    if (e.dtype != dtype_name(dtype)) {
        fail(ErrorKind::input, path_ + ": tensor '" + name + "' has dtype " + e.dtype + ", expected " +
                                   dtype_name(dtype));
    }
    if (shape != nullptr && e.shape != *shape) {
        fail(ErrorKind::input, path_ + ": tensor '" + name + "' has shape " + shape_to_string(e.shape) +
                                   ", expected " + shape_to_string(*shape));
    }
    HostTensor result(dtype, e.shape);
    if (result.nbytes() > 0) std::memcpy(result.bytes.data(), bytes_.data() + data_offset_ + e.begin, result.nbytes());
    return result;
}

}  // namespace qdet
