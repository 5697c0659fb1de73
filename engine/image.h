// Decoded images: 8-bit RGB, row-major, channels interleaved.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qdet {

struct Image {
    int width = 0;
    int height = 0;
    std::vector<uint8_t> rgb;  // height * width * 3 bytes
};

// Decodes a JPEG, PNG, BMP, TIFF or WebP file with OpenCV (the decoder that
// Python's cv2.imread uses, so both see the same pixels). Throws Error(input)
// naming the file when it is missing, empty or cannot be decoded.
Image read_image(const std::string &path);

// Paths of the image files of `dir` (by extension: jpg, jpeg, png, bmp, tif,
// tiff, webp; any case), sorted by name, not recursive. Throws Error(input)
// when `dir` is missing, is not a directory or contains no image files.
std::vector<std::string> list_image_files(const std::string &dir);

// Decodes an image held in memory; `name` is used in error messages.
Image decode_image(const uint8_t *data, size_t size, const std::string &name);

}  // namespace qdet
