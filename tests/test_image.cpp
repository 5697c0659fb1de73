// Image decoding: a real JPEG decodes to its size, and damaged files fail
// with a message that names the file and the problem.
#include <doctest/doctest.h>

#include <string>

#include "engine/error.h"
#include "engine/image.h"
#include "tests/test_support.h"

namespace qdet {
namespace {

// Decodes `bytes` and returns the error message, or "" when decoding worked.
std::string decode_error(const std::string &bytes, const std::string &name) {
    try {
        decode_image(reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size(), name);
    } catch (const Error &e) {
        CHECK(e.exit_code() == 3);
        return e.what();
    }
    return "";
}

std::string eval_image_bytes() {
    return test::read_bytes(test::data_dir() + "/datasets/roadcars/eval/images/eval_0002.jpg");
}

}  // namespace

TEST_SUITE("unit") {

TEST_CASE("decode_image reads an eval JPEG") {
    const std::string bytes = eval_image_bytes();
    const Image image = decode_image(reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size(), "eval_0002.jpg");
    CHECK(image.width == 640);
    CHECK(image.height == 640);
    CHECK(image.rgb.size() == 640u * 640u * 3u);
}

TEST_CASE("decode_image rejects damaged files") {
    const std::string jpeg = eval_image_bytes();
    const struct {
        std::string name;
        std::string bytes;
        std::string expected;
    } cases[] = {
        {"empty.jpg", "", "empty.jpg: cannot decode image: the file is empty"},
        {"cut.jpg", jpeg.substr(0, jpeg.size() / 2), "cut.jpg: cannot decode image: the JPEG data ends before"},
        {"cut_early.jpg", jpeg.substr(0, 400), "cut_early.jpg: cannot decode image:"},
        {"text.png", "not an image", "text.png: cannot decode image: not a supported image"},
        {"cut.webp", std::string("RIFF\x10\0\0\0WEBPVP8 ", 16), "cut.webp: cannot decode image: the WebP data is corrupt"},
        {"cut.tif", std::string("II*\0\x08\0\0\0", 8), "cut.tif: cannot decode image: the TIFF data is corrupt"},
    };
    for (const auto &c : cases) {
        INFO(c.name);
        const std::string message = decode_error(c.bytes, c.name);
        CHECK(message.find(c.expected) != std::string::npos);
    }
}

}  // TEST_SUITE
}  // namespace qdet
