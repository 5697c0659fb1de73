// The convert tool and the engine's weight-file loader on bad input: each
// case must fail with a message naming the file and the problem, a non-zero
// exit code, and no output file.
#include <doctest/doctest.h>

#include <cstring>
#include <string>

#include <nlohmann/json.hpp>

#include "tests/test_support.h"

namespace qdet {
namespace {

using nlohmann::json;

std::string convert_tool() { return test::bin_dir() + "/convert"; }
std::string qdet_tool() { return test::bin_dir() + "/qdet"; }
std::string exported_model() { return test::test_data_dir() + "/roadcars.safetensors"; }
std::string fp32_model() { return test::test_data_dir() + "/roadcars_fp32.qdet"; }

// A safetensors file split into its JSON header and its data section.
struct Safetensors {
    json header;
    std::string data;
};

Safetensors read_safetensors(const std::string &path) {
    const std::string bytes = test::read_bytes(path);
    uint64_t header_size = 0;
    std::memcpy(&header_size, bytes.data(), 8);
    return {json::parse(bytes.substr(8, header_size)), bytes.substr(8 + header_size)};
}

void write_safetensors(const std::string &path, const Safetensors &file) {
    const std::string header = file.header.dump();
    const uint64_t size = header.size();
    std::string bytes(reinterpret_cast<const char *>(&size), 8);
    test::write_bytes(path, bytes + header + file.data);
}

// Runs convert and checks the failure: exit code, message fragments, and
// that no output (nor a temporary file) was left behind.
void check_convert_fails(const std::string &dir, const std::string &arguments, int exit_code,
                         const std::vector<std::string> &fragments) {
    const std::string out = dir + "/out.qdet";
    const test::CommandResult result = test::run_command(convert_tool() + " " + arguments + " --out " + out);
    INFO("convert " << arguments << "\noutput: " << result.output);
    CHECK(result.exit_code == exit_code);
    for (const std::string &fragment : fragments) CHECK(result.output.find(fragment) != std::string::npos);
    CHECK_FALSE(test::file_exists(out));
    for (const std::string &name : test::list_dir(dir)) CHECK(name.find(".qdet-tmp") == std::string::npos);
}

}  // namespace

TEST_SUITE("converter") {

TEST_CASE("convert rejects a missing tensor") {
    const std::string dir = test::make_temp_dir("qdet-convert");
    Safetensors file = read_safetensors(exported_model());
    file.header.erase("backbone.body.4.block.1.1.running_var");
    write_safetensors(dir + "/missing.safetensors", file);
    check_convert_fails(dir, "--weights " + dir + "/missing.safetensors", 3,
                        {"missing.safetensors", "backbone.body.4.block.1.1.running_var", "missing"});
}

TEST_CASE("convert rejects a wrong shape") {
    const std::string dir = test::make_temp_dir("qdet-convert");
    Safetensors file = read_safetensors(exported_model());
    // Same byte count, other shape: only the shape check can catch it.
    file.header["roi_heads.box_head.fc7.weight"]["shape"] = {2048, 512};
    write_safetensors(dir + "/shape.safetensors", file);
    check_convert_fails(dir, "--weights " + dir + "/shape.safetensors", 3,
                        {"shape.safetensors", "roi_heads.box_head.fc7.weight", "[2048, 512]", "[1024, 1024]"});
}

TEST_CASE("convert rejects an unexpected tensor") {
    const std::string dir = test::make_temp_dir("qdet-convert");
    Safetensors file = read_safetensors(exported_model());
    file.header["backbone.body.17.0.weight"] = file.header["roi_heads.box_head.fc7.bias"];
    write_safetensors(dir + "/extra.safetensors", file);
    check_convert_fails(dir, "--weights " + dir + "/extra.safetensors", 3,
                        {"extra.safetensors", "unexpected tensor 'backbone.body.17.0.weight'"});
}

TEST_CASE("convert rejects a truncated file") {
    const std::string dir = test::make_temp_dir("qdet-convert");
    const std::string bytes = test::read_bytes(exported_model());
    test::write_bytes(dir + "/truncated.safetensors", bytes.substr(0, bytes.size() / 2));
    check_convert_fails(dir, "--weights " + dir + "/truncated.safetensors", 3, {"truncated.safetensors", "truncated"});
}

TEST_CASE("convert rejects a file that is not safetensors") {
    const std::string dir = test::make_temp_dir("qdet-convert");
    test::write_bytes(dir + "/text.safetensors", "this is a text file, not a model\n");
    check_convert_fails(dir, "--weights " + dir + "/text.safetensors", 3, {"text.safetensors", "not a valid"});
}

TEST_CASE("convert rejects missing model settings") {
    const std::string dir = test::make_temp_dir("qdet-convert");
    Safetensors file = read_safetensors(exported_model());
    file.header["__metadata__"].erase("rpn_nms_thresh");
    write_safetensors(dir + "/settings.safetensors", file);
    check_convert_fails(dir, "--weights " + dir + "/settings.safetensors", 3, {"settings.safetensors", "rpn_nms_thresh"});
}

TEST_CASE("convert rejects a missing input file") {
    const std::string dir = test::make_temp_dir("qdet-convert");
    check_convert_fails(dir, "--weights " + dir + "/absent.safetensors", 3, {"absent.safetensors", "No such file"});
}

TEST_CASE("convert rejects bad command lines") {
    const std::string dir = test::make_temp_dir("qdet-convert");
    check_convert_fails(dir, "--weights " + exported_model() + " --frobnicate", 2, {"unknown option --frobnicate"});
    check_convert_fails(dir, "--weights " + exported_model() + " --keep-fp32 roi_heads.box_head.fc6", 2,
                        {"--keep-fp32 needs --calib"});
    check_convert_fails(dir, "--weights " + exported_model() + " --calib " + dir + " --calib-method best", 2,
                        {"--calib-method"});
}

TEST_CASE("engine rejects damaged weight files") {
    const std::string dir = test::make_temp_dir("qdet-weights");
    const std::string image = test::data_dir() + "/datasets/roadcars/eval/images/eval_0001.jpg";
    const std::string good = test::read_bytes(fp32_model());

    struct Case {
        const char *name;
        std::string bytes;
        const char *expected;
    };
    std::string flipped_data = good;
    flipped_data[flipped_data.size() - 1000] ^= 0x40;
    std::string flipped_header = good;
    flipped_header[100] ^= 0x01;
    std::string bad_magic = good;
    bad_magic[0] = 'X';
    std::string bad_version = good;
    bad_version[8] = 9;
    const Case cases[] = {
        {"data_checksum", flipped_data, "data checksum does not match"},
        {"header_checksum", flipped_header, "header checksum does not match"},
        {"magic", bad_magic, "magic bytes are missing"},
        {"version", bad_version, "format version 9 is not supported"},
        {"truncated", good.substr(0, good.size() / 3), "truncated or damaged"},
        {"empty", std::string(), "magic bytes are missing"},
    };

    for (const Case &c : cases) {
        const std::string path = dir + "/" + c.name + ".qdet";
        test::write_bytes(path, c.bytes);
        const test::CommandResult result = test::run_command(qdet_tool() + " --weights " + path + " " + image);
        INFO("case " << std::string(c.name) << "\noutput: " << result.output);
        CHECK(result.exit_code == 3);
        CHECK(result.output.find(path) != std::string::npos);
        CHECK(result.output.find(c.expected) != std::string::npos);
    }
}

}  // TEST_SUITE
}  // namespace qdet
