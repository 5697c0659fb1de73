#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "engine/model_config.h"
#include "engine/weight_file.h"
#include "tests/test_support.h"

namespace {

using nlohmann::json;

// A fresh directory under the system temporary directory, removed with
// everything in it at the end of the scope.
struct TempDir {
    std::string path = qdet::test::make_temp_dir("qdet-weight-file");
    ~TempDir() { std::filesystem::remove_all(path); }
};

template <typename Function>
qdet::Error expect_error(Function run) {
    try {
        run();
    } catch (const qdet::Error &e) {
        return e;
    }
    FAIL("no qdet::Error was thrown");
    return qdet::Error(qdet::ErrorKind::internal, "");
}

bool contains(const std::string &text, const std::string &part) { return text.find(part) != std::string::npos; }

qdet::ModelConfig test_config() {
    qdet::ModelConfig config;
    config.variant = "320_fpn";
    config.min_size = 320;
    config.max_size = 640;
    config.num_classes = 3;
    config.anchor_sizes.assign(3, {32, 64, 128, 256, 512});
    config.anchor_aspect_ratios.assign(3, {0.5, 1.0, 2.0});
    config.rpn_pre_nms_top_n_test = 150;
    config.rpn_post_nms_top_n_test = 150;
    config.rpn_score_thresh = 0.05;
    config.categories = {{1, "cat"}, {2, "dog"}};
    return config;
}

uint64_t load_u64(const std::string &bytes, size_t at) {
    uint64_t value;
    std::memcpy(&value, bytes.data() + at, sizeof(value));
    return value;
}

void store_u32(std::string &bytes, size_t at, uint32_t value) { std::memcpy(&bytes[at], &value, sizeof(value)); }
void store_u64(std::string &bytes, size_t at, uint64_t value) { std::memcpy(&bytes[at], &value, sizeof(value)); }

// Tensors of every type, with sizes that need padding to 64 bytes.
struct TestTensors {
    std::vector<float> weight = qdet::test::random_floats(12, -1.f, 1.f, 1);
    std::vector<int8_t> weight_s8 = {-128, -1, 0, 1, 127};
    std::vector<uint8_t> mask = {0, 1, 2, 3, 252, 253, 254, 255};
    std::vector<int32_t> indices = {-7, 0, 2147483647};
    std::vector<int64_t> steps = {-1, 1099511627776};
    std::vector<float> odd = qdet::test::random_floats(17, -5.f, 5.f, 2);

    void add_to(qdet::WeightFileWriter &writer) const {
        writer.add_tensor("a.weight", qdet::DType::f32, {3, 4}, weight.data());
        writer.add_tensor("a.weight_s8", qdet::DType::s8, {5}, weight_s8.data());
        writer.add_tensor("mask", qdet::DType::u8, {2, 2, 2}, mask.data());
        writer.add_tensor("indices", qdet::DType::s32, {3}, indices.data());
        writer.add_tensor("steps", qdet::DType::i64, {2}, steps.data());
        writer.add_tensor("empty", qdet::DType::f32, {0}, nullptr);
        writer.add_tensor("odd", qdet::DType::f32, {17}, odd.data());
    }
};

const json kQuantization = {{"scheme", "per-channel symmetric"}, {"activations", {{"a", 0.05}, {"b", 0.125}}}};

std::string write_test_file(const std::string &path) {
    qdet::WeightFileWriter writer;
    writer.set_config(test_config());
    writer.set_quantization(kQuantization);
    writer.set_producer({{"tool", "unit test"}});
    TestTensors().add_to(writer);
    writer.write(path);
    return qdet::test::read_bytes(path);
}

}  // namespace

TEST_SUITE("unit") {

TEST_CASE("weight file round trip") {
    const TempDir temp;
    const std::string path = temp.path + "/model.qdet";
    const TestTensors tensors;
    qdet::WeightFileWriter writer;
    writer.set_config(test_config());
    writer.set_quantization(kQuantization);
    writer.set_producer({{"tool", "unit test"}});
    tensors.add_to(writer);
    writer.write(path);

    const qdet::WeightFile file = qdet::WeightFile::read(path);
    CHECK(file.path() == path);
    CHECK(file.file_size() == std::filesystem::file_size(path));
    CHECK(qdet::config_to_json(file.config()) == qdet::config_to_json(test_config()));
    CHECK(file.quantization() == kQuantization);
    CHECK(file.producer() == json{{"tool", "unit test"}});

    const std::vector<std::string> names = {"a.weight", "a.weight_s8", "mask", "indices", "steps", "empty", "odd"};
    REQUIRE(file.tensors().size() == names.size());
    for (size_t i = 0; i < names.size(); ++i) {
        CAPTURE(i);
        CHECK(file.tensors()[i].name == names[i]);
        CHECK(file.has(names[i]));
    }
    CHECK_FALSE(file.has("b.weight"));

    struct Expected {
        const char *name;
        qdet::DType dtype;
        qdet::Shape shape;
        const void *data;
        size_t nbytes;
    };
    const Expected expected[] = {
        {"a.weight", qdet::DType::f32, {3, 4}, tensors.weight.data(), 48},
        {"a.weight_s8", qdet::DType::s8, {5}, tensors.weight_s8.data(), 5},
        {"mask", qdet::DType::u8, {2, 2, 2}, tensors.mask.data(), 8},
        {"indices", qdet::DType::s32, {3}, tensors.indices.data(), 12},
        {"steps", qdet::DType::i64, {2}, tensors.steps.data(), 16},
        {"empty", qdet::DType::f32, {0}, nullptr, 0},
        {"odd", qdet::DType::f32, {17}, tensors.odd.data(), 68},
    };
    for (const Expected &e : expected) {
        INFO("tensor: ", std::string(e.name));
        const qdet::TensorInfo &info = file.info(e.name);
        CHECK(info.dtype == e.dtype);
        CHECK(info.shape == e.shape);
        CHECK(info.nbytes == e.nbytes);
        CHECK(info.offset % 64 == 0);
        const void *data = file.data(e.name, e.dtype, e.shape);
        CHECK(reinterpret_cast<uintptr_t>(data) % 64 == 0);
        if (e.nbytes > 0) CHECK(std::memcmp(data, e.data, e.nbytes) == 0);
    }
    const float *weight = file.f32("a.weight", {3, 4});
    CHECK(weight[11] == tensors.weight[11]);

    const std::map<qdet::DType, uint64_t> totals = writer.bytes_by_dtype();
    CHECK(totals.at(qdet::DType::f32) == 48 + 68);
    CHECK(totals.at(qdet::DType::s8) == 5);
    CHECK(totals.at(qdet::DType::u8) == 8);
    CHECK(totals.at(qdet::DType::s32) == 12);
    CHECK(totals.at(qdet::DType::i64) == 16);
}

TEST_CASE("weight file without quantization") {
    const TempDir temp;
    const std::string path = temp.path + "/fp32.qdet";
    qdet::WeightFileWriter writer;
    writer.set_config(test_config());
    const std::vector<float> bias = {0.5f, -0.5f};
    writer.add_tensor("bias", qdet::DType::f32, {2}, bias.data());
    writer.write(path);
    const qdet::WeightFile file = qdet::WeightFile::read(path);
    CHECK(file.quantization().is_null());
    CHECK(file.producer() == json::object());
    CHECK(file.f32("bias", {2})[1] == -0.5f);
}

TEST_CASE("weight file rejects wrong requests") {
    const TempDir temp;
    const std::string path = temp.path + "/model.qdet";
    write_test_file(path);
    const qdet::WeightFile file = qdet::WeightFile::read(path);

    const qdet::Error wrong_type = expect_error([&] { file.data("a.weight", qdet::DType::s8, {3, 4}); });
    CHECK(contains(wrong_type.what(), path));
    CHECK(contains(wrong_type.what(), "'a.weight' is F32 [3, 4], expected I8 [3, 4]"));

    const qdet::Error wrong_shape = expect_error([&] { file.f32("a.weight", {4, 3}); });
    CHECK(contains(wrong_shape.what(), path));
    CHECK(contains(wrong_shape.what(), "expected F32 [4, 3]"));

    const qdet::Error missing = expect_error([&] { file.info("b.weight"); });
    CHECK(missing.kind() == qdet::ErrorKind::input);
    CHECK(contains(missing.what(), path));
    CHECK(contains(missing.what(), "'b.weight' is missing"));

    qdet::WeightFileWriter writer;
    const float value = 1.f;
    writer.add_tensor("x", qdet::DType::f32, {1}, &value);
    const qdet::Error twice = expect_error([&] { writer.add_tensor("x", qdet::DType::f32, {1}, &value); });
    CHECK(contains(twice.what(), "'x' added twice"));
}

TEST_CASE("weight file rejects corruption") {
    const TempDir temp;
    const std::string good = write_test_file(temp.path + "/good.qdet");
    const uint64_t header_size = load_u64(good, 16);
    const uint64_t data_offset = load_u64(good, 24);
    REQUIRE(data_offset % 64 == 0);
    REQUIRE(data_offset >= 64 + header_size);
    REQUIRE(good.size() > data_offset + 40);

    struct Case {
        const char *name;
        std::string bytes;
        const char *expected_text;
    };
    std::vector<Case> cases;
    {
        std::string b = good;
        b[0] = 'X';
        cases.push_back({"wrong magic", b, "magic bytes are missing"});
    }
    cases.push_back({"shorter than the fixed header", good.substr(0, 40), "magic bytes are missing"});
    {
        std::string b = good;
        store_u32(b, 8, 2);
        cases.push_back({"unsupported version", b, "version 2 is not supported"});
    }
    cases.push_back({"truncated data", good.substr(0, good.size() - 10), "truncated or damaged"});
    cases.push_back({"truncated header", good.substr(0, 64 + header_size / 2), "truncated or damaged"});
    {
        std::string b = good;
        b[data_offset + 5] = static_cast<char>(b[data_offset + 5] ^ 0x10);
        cases.push_back({"flipped data byte", b, "data checksum does not match"});
    }
    {
        std::string b = good;
        b[good.size() - 1] = static_cast<char>(b[good.size() - 1] ^ 0x01);
        cases.push_back({"flipped last data byte", b, "data checksum does not match"});
    }
    {
        std::string b = good;
        b[64 + header_size / 2] = static_cast<char>(b[64 + header_size / 2] ^ 0x02);
        cases.push_back({"flipped header byte", b, "header checksum does not match"});
    }
    {
        std::string b = good;
        store_u64(b, 16, good.size());
        cases.push_back({"header size past the end", b, "section sizes do not match"});
    }
    {
        std::string b = good;
        store_u64(b, 16, ~uint64_t{0});
        cases.push_back({"header size near 2^64", b, "section sizes do not match"});
    }
    {
        std::string b = good;
        store_u64(b, 24, data_offset + 64);
        cases.push_back({"data offset moved", b, "section sizes do not match"});
    }

    int index = 0;
    for (const Case &c : cases) {
        INFO("case: ", std::string(c.name));
        const std::string path = temp.path + "/case" + std::to_string(index++) + ".qdet";
        qdet::test::write_bytes(path, c.bytes);
        const qdet::Error error = expect_error([&] { qdet::WeightFile::read(path); });
        const std::string message = error.what();
        INFO("message: ", message);
        CHECK(error.kind() == qdet::ErrorKind::input);
        CHECK(contains(message, path));
        CHECK(contains(message, c.expected_text));
    }
}

TEST_CASE("weight file failed write leaves nothing") {
    const TempDir temp;
    qdet::WeightFileWriter writer;
    writer.set_config(test_config());
    TestTensors().add_to(writer);

    SUBCASE("directory does not exist") {
        const std::string path = temp.path + "/missing/model.qdet";
        const qdet::Error error = expect_error([&] { writer.write(path); });
        CHECK(contains(error.what(), path));
        CHECK_FALSE(qdet::test::file_exists(path));
        CHECK(qdet::test::list_dir(temp.path).empty());
    }
    SUBCASE("target is a directory") {
        const std::string path = temp.path + "/model.qdet";
        std::filesystem::create_directory(path);
        const qdet::Error error = expect_error([&] { writer.write(path); });
        CHECK(contains(error.what(), path));
        CHECK(std::filesystem::is_directory(path));
        // Only the directory remains: no temporary file is left beside it.
        CHECK(qdet::test::list_dir(temp.path) == std::vector<std::string>{"model.qdet"});
    }
}

TEST_CASE("weight file write replaces whole file") {
    const TempDir temp;
    const std::string path = temp.path + "/model.qdet";
    const std::string reference_path = temp.path + "/reference.qdet";

    // A larger file first, so any leftover tail would show.
    qdet::WeightFileWriter large;
    large.set_config(test_config());
    const std::vector<float> big = qdet::test::random_floats(50000, -1.f, 1.f, 9);
    large.add_tensor("big", qdet::DType::f32, {50000}, big.data());
    large.write(path);
    REQUIRE(std::filesystem::file_size(path) > 200000);

    const std::string expected = write_test_file(reference_path);
    const std::string rewritten = write_test_file(path);
    CHECK(rewritten.size() == expected.size());
    CHECK(rewritten == expected);
    const qdet::WeightFile file = qdet::WeightFile::read(path);
    CHECK_FALSE(file.has("big"));
    CHECK(file.has("odd"));
    CHECK(qdet::test::list_dir(temp.path) == std::vector<std::string>{"model.qdet", "reference.qdet"});
}

}  // TEST_SUITE("unit")
