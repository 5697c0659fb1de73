#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "converter/safetensors.h"
#include "engine/error.h"
#include "tests/test_support.h"

namespace {

// A safetensors file: 8-byte little-endian header length, JSON, data.
std::string safetensors_bytes(const std::string &header, const std::string &data) {
    std::string out(8, '\0');
    uint64_t length = header.size();
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((length >> (8 * i)) & 0xff);
    return out + header + data;
}

template <typename T>
std::string raw_bytes(const std::vector<T> &values) {
    return std::string(reinterpret_cast<const char *>(values.data()), values.size() * sizeof(T));
}

// Runs `read` and returns the qdet::Error it throws; fails the test when it
// throws nothing.
template <typename Function>
qdet::Error expect_error(Function read) {
    try {
        read();
    } catch (const qdet::Error &e) {
        return e;
    }
    FAIL("no qdet::Error was thrown");
    return qdet::Error(qdet::ErrorKind::internal, "");
}

// A fresh directory under the system temporary directory, removed with
// everything in it at the end of the scope.
struct TempDir {
    std::string path = qdet::test::make_temp_dir("qdet-safetensors");
    ~TempDir() { std::filesystem::remove_all(path); }
};

bool contains(const std::string &text, const std::string &part) { return text.find(part) != std::string::npos; }

const std::vector<float> kWeights = {1.5f, -2.25f, 0.f, 3.125f, -0.5f, 1e-3f};
const std::vector<int64_t> kSteps = {7, -1, 1099511627776};
const std::vector<uint8_t> kFlags = {0, 1, 255, 128};

// A valid file: F32 [2, 3] at 0..24, I64 [3] at 24..48, U8 [4] at 48..52,
// an empty F32 [0] and the exporter's metadata.
std::string valid_file() {
    const std::string header =
        R"({"__metadata__": {"format": "\"qdet-torchvision-export\"", "min_size": "640"},)"
        R"( "body.weight": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},)"
        R"( "steps": {"dtype": "I64", "shape": [3], "data_offsets": [24, 48]},)"
        R"( "flags": {"dtype": "U8", "shape": [4], "data_offsets": [48, 52]},)"
        R"( "empty": {"dtype": "F32", "shape": [0], "data_offsets": [52, 52]}})";
    return safetensors_bytes(header, raw_bytes(kWeights) + raw_bytes(kSteps) + raw_bytes(kFlags));
}

}  // namespace

TEST_SUITE("unit") {

TEST_CASE("safetensors reads values and metadata") {
    const TempDir temp;
    const std::string &dir = temp.path;
    const std::string path = dir + "/model.safetensors";
    qdet::test::write_bytes(path, valid_file());

    const qdet::SafetensorsFile file = qdet::SafetensorsFile::read(path);
    CHECK(file.path() == path);
    CHECK(file.metadata().size() == 2);
    CHECK(file.metadata().at("format") == "\"qdet-torchvision-export\"");
    CHECK(file.metadata().at("min_size") == "640");
    CHECK(file.entries().size() == 4);
    CHECK(file.has("body.weight"));
    CHECK(file.has("steps"));
    CHECK_FALSE(file.has("__metadata__"));
    CHECK_FALSE(file.has("missing"));

    const qdet::SafetensorsEntry &entry = file.entry("steps");
    CHECK(entry.dtype == "I64");
    CHECK(entry.shape == qdet::Shape{3});
    CHECK(entry.begin == 24);
    CHECK(entry.end == 48);

    const qdet::HostTensor weight = file.f32("body.weight");
    CHECK(weight.dtype == qdet::DType::f32);
    CHECK(weight.shape == qdet::Shape{2, 3});
    REQUIRE(weight.nbytes() == 24);
    CHECK(std::memcmp(weight.data<float>(), kWeights.data(), 24) == 0);

    const qdet::HostTensor steps = file.tensor("steps", qdet::DType::i64);
    REQUIRE(steps.nbytes() == 24);
    CHECK(steps.data<int64_t>()[0] == 7);
    CHECK(steps.data<int64_t>()[1] == -1);
    CHECK(steps.data<int64_t>()[2] == 1099511627776);

    const qdet::Shape flags_shape = {4};
    const qdet::HostTensor flags = file.tensor("flags", qdet::DType::u8, &flags_shape);
    REQUIRE(flags.nbytes() == 4);
    CHECK(std::memcmp(flags.data<uint8_t>(), kFlags.data(), 4) == 0);

    const qdet::HostTensor empty = file.f32("empty");
    CHECK(empty.shape == qdet::Shape{0});
    CHECK(empty.nbytes() == 0);
}

TEST_CASE("safetensors without metadata") {
    const TempDir temp;
    const std::string &dir = temp.path;
    const std::string path = dir + "/plain.safetensors";
    const std::vector<int8_t> values = {-128, 0, 127};
    qdet::test::write_bytes(
        path, safetensors_bytes(R"({"q": {"dtype": "I8", "shape": [3], "data_offsets": [0, 3]}})", raw_bytes(values)));
    const qdet::SafetensorsFile file = qdet::SafetensorsFile::read(path);
    CHECK(file.metadata().empty());
    const qdet::HostTensor q = file.tensor("q", qdet::DType::s8);
    REQUIRE(q.nbytes() == 3);
    CHECK(q.data<int8_t>()[0] == -128);
    CHECK(q.data<int8_t>()[2] == 127);
}

TEST_CASE("safetensors rejects malformed files") {
    const std::string data = raw_bytes(kWeights);  // 24 bytes
    auto tensor_header = [](const std::string &dtype, const std::string &shape, const std::string &offsets) {
        return R"({"t": {"dtype": ")" + dtype + R"(", "shape": )" + shape + R"(, "data_offsets": )" + offsets + "}}";
    };
    struct Case {
        const char *name;
        std::string bytes;
        const char *expected_text;  // part of the message naming the problem
    };

    // The length field claims one byte more than the rest of the file.
    const std::string header = tensor_header("F32", "[6]", "[0, 24]");
    std::string header_past_end = safetensors_bytes(header, data);
    header_past_end[0] = static_cast<char>(header.size() + data.size() + 1);

    const Case cases[] = {
        {"empty file", "", "fewer than the 8-byte header length"},
        {"truncated length field", std::string("\x10\0\0\0\0", 5), "fewer than the 8-byte header length"},
        {"header length past the end", header_past_end, "runs past the end of the file"},
        {"huge header length", std::string("\xff\xff\xff\xff\xff\xff\xff\xff{}", 10), "runs past the end"},
        {"invalid JSON", safetensors_bytes(R"({"t": {"dtype": "F32",)", data), "not valid JSON"},
        {"header not an object", safetensors_bytes("[1, 2]", data), "not a JSON object"},
        {"data_offsets past the data", safetensors_bytes(tensor_header("F32", "[7]", "[0, 28]"), data),
         "outside the data section"},
        {"data_offsets reversed", safetensors_bytes(tensor_header("F32", "[0]", "[8, 4]"), data),
         "outside the data section"},
        {"byte size does not match shape", safetensors_bytes(tensor_header("F32", "[5]", "[0, 24]"), data),
         "has 24 bytes, its shape [5] needs 20"},
        {"byte size does not match dtype", safetensors_bytes(tensor_header("I64", "[6]", "[0, 24]"), data),
         "needs 48"},
        {"unknown dtype", safetensors_bytes(tensor_header("F8", "[24]", "[0, 24]"), data), "unknown dtype 'F8'"},
        {"negative dimension", safetensors_bytes(tensor_header("F32", "[-6]", "[0, 24]"), data),
         "negative dimension"},
        {"missing data_offsets", safetensors_bytes(R"({"t": {"dtype": "F32", "shape": [6]}})", data),
         "malformed entry for tensor 't'"},
        {"three data_offsets", safetensors_bytes(tensor_header("F32", "[6]", "[0, 24, 24]"), data),
         "needs two data_offsets"},
        {"metadata value not a string",
         safetensors_bytes(R"({"__metadata__": {"min_size": 640}})", ""), "metadata value of 'min_size'"},
    };

    const TempDir temp;
    const std::string &dir = temp.path;
    int index = 0;
    for (const Case &c : cases) {
        INFO("case: ", std::string(c.name));
        const std::string path = dir + "/case" + std::to_string(index++) + ".safetensors";
        qdet::test::write_bytes(path, c.bytes);
        const qdet::Error error = expect_error([&] { qdet::SafetensorsFile::read(path); });
        const std::string message = error.what();
        INFO("message: ", message);
        CHECK(error.kind() == qdet::ErrorKind::input);
        CHECK(contains(message, path));
        CHECK(contains(message, c.expected_text));
    }
}

TEST_CASE("safetensors rejects overflowing shape") {
    const TempDir temp;
    const std::string path = temp.path + "/overflow.safetensors";
    qdet::test::write_bytes(
        path, safetensors_bytes(R"({"t": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})",
                                ""));
    const qdet::Error error = expect_error([&] { qdet::SafetensorsFile::read(path); });
    CHECK(contains(error.what(), path));
    CHECK(contains(error.what(), "'t'"));
}

TEST_CASE("safetensors missing file") {
    const TempDir temp;
    const std::string &dir = temp.path;
    const std::string path = dir + "/absent.safetensors";
    const qdet::Error error = expect_error([&] { qdet::SafetensorsFile::read(path); });
    CHECK(error.kind() == qdet::ErrorKind::input);
    CHECK(contains(error.what(), path));
}

TEST_CASE("safetensors rejects wrong requests") {
    const TempDir temp;
    const std::string &dir = temp.path;
    const std::string path = dir + "/model.safetensors";
    qdet::test::write_bytes(path, valid_file());
    const qdet::SafetensorsFile file = qdet::SafetensorsFile::read(path);

    SUBCASE("wrong dtype") {
        const qdet::Error error = expect_error([&] { file.tensor("body.weight", qdet::DType::s8); });
        CHECK(contains(error.what(), path));
        CHECK(contains(error.what(), "'body.weight' has dtype F32, expected I8"));
    }
    SUBCASE("f32 of an integer tensor") {
        const qdet::Error error = expect_error([&] { file.f32("steps"); });
        CHECK(contains(error.what(), path));
        CHECK(contains(error.what(), "has dtype I64, expected F32"));
    }
    SUBCASE("wrong shape") {
        const qdet::Shape shape = {3, 2};
        const qdet::Error error = expect_error([&] { file.tensor("body.weight", qdet::DType::f32, &shape); });
        CHECK(contains(error.what(), path));
        CHECK(contains(error.what(), "has shape [2, 3], expected [3, 2]"));
    }
    SUBCASE("missing tensor") {
        const qdet::Error error = expect_error([&] { file.f32("head.bias"); });
        CHECK(error.kind() == qdet::ErrorKind::input);
        CHECK(contains(error.what(), path));
        CHECK(contains(error.what(), "'head.bias' is missing"));
    }
    SUBCASE("missing entry") {
        const qdet::Error error = expect_error([&] { file.entry("head.bias"); });
        CHECK(contains(error.what(), path));
        CHECK(contains(error.what(), "'head.bias' is missing"));
    }
}

}  // TEST_SUITE("unit")
