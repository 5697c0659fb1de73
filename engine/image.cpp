#include "engine/image.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <sys/stat.h>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#define STB_IMAGE_IMPLEMENTATION
#define STBI_NO_STDIO
#define STBI_NO_HDR
#define STBI_NO_LINEAR
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#include <stb/stb_image.h>

#include "engine/error.h"
#include "engine/file_util.h"

namespace qdet {
namespace {

// OpenCV reports a failed decode with an empty matrix and no reason.
// stb_image can name the problem ("bad huffman code", "unknown marker") for
// JPEG, PNG and BMP, so it supplies the reason in the error message.
std::string decode_failure_reason(const uint8_t *data, size_t size) {
    int width = 0, height = 0, channels = 0;
    if (size > static_cast<size_t>(INT32_MAX)) return "the file is too large";
    // stb_image reads neither WebP nor TIFF, so name those formats here.
    if (size >= 12 && std::memcmp(data, "RIFF", 4) == 0 && std::memcmp(data + 8, "WEBP", 4) == 0) {
        return "the WebP data is corrupt or truncated";
    }
    if (size >= 4 && (std::memcmp(data, "II*\0", 4) == 0 || std::memcmp(data, "MM\0*", 4) == 0)) {
        return "the TIFF data is corrupt or truncated";
    }
    if (!stbi_info_from_memory(data, static_cast<int>(size), &width, &height, &channels)) {
        const char *reason = stbi_failure_reason();
        return reason ? std::string("not a supported image (") + reason + ")" : "not a supported image";
    }
    unsigned char *pixels = stbi_load_from_memory(data, static_cast<int>(size), &width, &height, &channels, 3);
    if (pixels == nullptr) {
        const char *reason = stbi_failure_reason();
        return std::string("the image data is corrupt (") + (reason ? reason : "unknown error") + ")";
    }
    stbi_image_free(pixels);
    return "OpenCV could not decode the image";
}

// OpenCV decodes a truncated JPEG without an error and fills the missing
// rows with grey. A complete JPEG has an end-of-image marker (FF D9) after its
// last start-of-scan marker (FF DA). In entropy-coded data an FF byte is
// always followed by 00 or a restart marker, so neither pair occurs there.
bool jpeg_is_truncated(const uint8_t *data, size_t size) {
    if (size < 3 || data[0] != 0xFF || data[1] != 0xD8 || data[2] != 0xFF) return false;
    for (size_t i = size - 1; i > 0; --i) {
        if (data[i - 1] != 0xFF) continue;
        if (data[i] == 0xD9) return false;
        if (data[i] == 0xDA) return true;
    }
    return true;
}

}  // namespace

Image decode_image(const uint8_t *data, size_t size, const std::string &name) {
    if (size == 0) fail(ErrorKind::input, name + ": cannot decode image: the file is empty");
    cv::Mat encoded(1, static_cast<int>(size), CV_8UC1, const_cast<uint8_t *>(data));
    cv::Mat bgr;
    try {
        bgr = cv::imdecode(encoded, cv::IMREAD_COLOR);
    } catch (const cv::Exception &e) {
        fail(ErrorKind::input, name + ": cannot decode image: " + e.what());
    }
    if (bgr.empty()) fail(ErrorKind::input, name + ": cannot decode image: " + decode_failure_reason(data, size));
    if (jpeg_is_truncated(data, size)) {
        fail(ErrorKind::input, name + ": cannot decode image: the JPEG data ends before its end-of-image marker "
                                      "(the file is probably truncated)");
    }

    Image image;
    image.width = bgr.cols;
    image.height = bgr.rows;
    image.rgb.resize(static_cast<size_t>(image.width) * image.height * 3);
    cv::Mat rgb(image.height, image.width, CV_8UC3, image.rgb.data());
    cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
    return image;
}

std::vector<std::string> list_image_files(const std::string &dir) {
    struct stat info {};
    if (::stat(dir.c_str(), &info) != 0) fail(ErrorKind::input, dir + ": image folder not found");
    if (!S_ISDIR(info.st_mode)) fail(ErrorKind::input, dir + ": is not a folder");
    DIR *handle = ::opendir(dir.c_str());
    if (handle == nullptr) fail(ErrorKind::input, dir + ": cannot open folder: " + std::strerror(errno));

    static const char *const extensions[] = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"};
    std::vector<std::string> files;
    while (const dirent *entry = ::readdir(handle)) {
        std::string name = entry->d_name;
        std::string lower = name;
        std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
        for (const char *extension : extensions) {
            const size_t n = std::strlen(extension);
            if (lower.size() > n && lower.compare(lower.size() - n, n, extension) == 0) {
                files.push_back(dir + "/" + name);
                break;
            }
        }
    }
    ::closedir(handle);
    if (files.empty()) {
        fail(ErrorKind::input, dir + ": no image files (.jpg, .jpeg, .png, .bmp, .tif, .tiff, .webp) in the folder");
    }
    std::sort(files.begin(), files.end());
    return files;
}

Image read_image(const std::string &path) {
    AlignedBuffer bytes = read_file(path);
    return decode_image(bytes.data(), bytes.size(), path);
}

}  // namespace qdet
