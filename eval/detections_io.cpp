#include "eval/detections_io.h"

#include <cmath>
#include <limits>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "engine/file_util.h"

namespace qdet {
namespace {

using nlohmann::json;

std::string base_name(const std::string &path) {
    auto slash = path.find_last_of('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The file name without directories and without its last extension.
std::string stem(const std::string &path) {
    std::string name = base_name(path);
    auto dot = name.find_last_of('.');
    return dot == std::string::npos || dot == 0 ? name : name.substr(0, dot);
}

bool fits_int(const json &value) {
    if (!value.is_number_integer()) return false;
    if (value.is_number_unsigned()) {
        return value.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int>::max());
    }
    int64_t v = value.get<int64_t>();
    return v >= std::numeric_limits<int>::min() && v <= std::numeric_limits<int>::max();
}

// Reads `key` of the root object as an int.
int read_header_int(const json &root, const char *key, const std::string &path) {
    auto it = root.find(key);
    if (it == root.end()) fail(ErrorKind::input, path + ": '" + key + "' is missing, expected an integer");
    if (!fits_int(*it)) {
        fail(ErrorKind::input, path + ": '" + key + "' is " + it->dump() + ", expected an integer");
    }
    return it->get<int>();
}

Detection read_detection(const json &entry, size_t index, const std::string &path) {
    const std::string prefix = path + ": detection " + std::to_string(index);
    if (!entry.is_object()) {
        fail(ErrorKind::input, prefix + " is a JSON " + entry.type_name() + ", expected an object");
    }

    auto box = entry.find("box");
    if (box == entry.end()) fail(ErrorKind::input, prefix + " has no 'box'");
    bool four_numbers = box->is_array() && box->size() == 4;
    for (size_t k = 0; four_numbers && k < 4; ++k) {
        four_numbers = (*box)[k].is_number() && std::isfinite((*box)[k].get<float>());
    }
    if (!four_numbers) {
        fail(ErrorKind::input, prefix + " has box " + box->dump() + ", expected 4 finite numbers [x1, y1, x2, y2]");
    }
    Detection detection;
    detection.box = Box{(*box)[0].get<float>(), (*box)[1].get<float>(), (*box)[2].get<float>(),
                        (*box)[3].get<float>()};
    if (detection.box.x2 < detection.box.x1 || detection.box.y2 < detection.box.y1) {
        fail(ErrorKind::input, prefix + " has box " + box->dump() + ", expected x2 >= x1 and y2 >= y1");
    }

    auto score = entry.find("score");
    if (score == entry.end()) fail(ErrorKind::input, prefix + " has no 'score'");
    if (!score->is_number() || !std::isfinite(score->get<float>())) {
        fail(ErrorKind::input, prefix + " has score " + score->dump() + ", expected a finite number");
    }
    detection.score = score->get<float>();

    auto label = entry.find("label");
    if (label == entry.end()) fail(ErrorKind::input, prefix + " has no 'label'");
    if (!fits_int(*label)) {
        fail(ErrorKind::input, prefix + " has label " + label->dump() + ", expected an integer category id");
    }
    detection.label = label->get<int>();
    return detection;
}

// JSON has no NaN or infinity, so such a detection could not be read back.
bool is_finite(const Detection &detection) {
    const Box &b = detection.box;
    return std::isfinite(b.x1) && std::isfinite(b.y1) && std::isfinite(b.x2) && std::isfinite(b.y2) &&
           std::isfinite(detection.score);
}

}  // namespace

void write_image_detections(const std::string &path, const ImageDetections &detections) {
    json list = json::array();
    for (size_t i = 0; i < detections.detections.size(); ++i) {
        const Detection &d = detections.detections[i];
        if (!is_finite(d)) {
            fail(ErrorKind::internal, path + ": detection " + std::to_string(i) + " has a non-finite box or score");
        }
        list.push_back(json{{"box", {d.box.x1, d.box.y1, d.box.x2, d.box.y2}}, {"score", d.score}, {"label", d.label}});
    }
    json root{{"image", detections.image},
              {"width", detections.width},
              {"height", detections.height},
              {"detections", std::move(list)}};
    write_text_file_atomically(path, root.dump() + "\n");
}

ImageDetections read_image_detections(const std::string &path) {
    AlignedBuffer bytes = read_file(path);
    const char *text = reinterpret_cast<const char *>(bytes.data());
    json root;
    try {
        root = json::parse(text, text + bytes.size());
    } catch (const json::parse_error &e) {
        fail(ErrorKind::input, path + ": not valid JSON: " + e.what());
    }
    if (!root.is_object()) {
        fail(ErrorKind::input, path + ": the top level is a JSON " + std::string(root.type_name()) +
                                   ", expected an object with 'image', 'width', 'height' and 'detections'");
    }

    ImageDetections result;
    auto image = root.find("image");
    if (image == root.end() || !image->is_string()) {
        fail(ErrorKind::input, path + ": 'image' is " + (image == root.end() ? "missing" : image->dump()) +
                                   ", expected the image file name as a string");
    }
    result.image = image->get<std::string>();
    result.width = read_header_int(root, "width", path);
    result.height = read_header_int(root, "height", path);

    auto list = root.find("detections");
    if (list == root.end()) fail(ErrorKind::input, path + ": 'detections' is missing, expected an array");
    if (!list->is_array()) {
        fail(ErrorKind::input, path + ": 'detections' is a JSON " + list->type_name() + ", expected an array");
    }
    result.detections.reserve(list->size());
    for (size_t i = 0; i < list->size(); ++i) result.detections.push_back(read_detection((*list)[i], i, path));
    return result;
}

std::vector<std::vector<Detection>> read_detection_dir(const std::string &dir, const CocoDataset &dataset) {
    struct stat folder {};
    if (::stat(dir.c_str(), &folder) != 0) fail(ErrorKind::input, dir + ": detection folder not found");
    if (!S_ISDIR(folder.st_mode)) fail(ErrorKind::input, dir + ": is not a folder, expected a folder of detection files");
    std::vector<std::vector<Detection>> result;
    result.reserve(dataset.images.size());
    for (const CocoImage &image : dataset.images) {
        const std::string path = dir + "/" + stem(image.file_name) + ".json";
        struct stat info {};
        if (::stat(path.c_str(), &info) != 0) {
            fail(ErrorKind::input, path + ": detection file of image '" + image.file_name + "' (id " +
                                       std::to_string(image.id) + ") of " + dataset.path +
                                       " is missing; run the detector on every image of the dataset");
        }

        ImageDetections file = read_image_detections(path);
        // A file of another image under this name would be scored silently.
        if (base_name(file.image) != base_name(image.file_name)) {
            fail(ErrorKind::input, path + ": 'image' is '" + file.image + "', expected '" +
                                       base_name(image.file_name) + "'");
        }
        result.push_back(std::move(file.detections));
    }
    return result;
}

void write_coco_results(const std::string &path, const CocoDataset &dataset,
                        const std::vector<std::vector<Detection>> &detections) {
    if (detections.size() != dataset.images.size()) {
        fail(ErrorKind::internal, path + ": got detections for " + std::to_string(detections.size()) +
                                      " images, expected one list per image of " + dataset.path + " (" +
                                      std::to_string(dataset.images.size()) + ")");
    }

    json results = json::array();
    for (size_t i = 0; i < detections.size(); ++i) {
        for (size_t k = 0; k < detections[i].size(); ++k) {
            const Detection &d = detections[i][k];
            if (!is_finite(d)) {
                fail(ErrorKind::internal, path + ": detection " + std::to_string(k) + " of image '" +
                                              dataset.images[i].file_name + "' has a non-finite box or score");
            }
            // COCO boxes are [x, y, width, height].
            results.push_back(json{{"image_id", dataset.images[i].id},
                                   {"category_id", d.label},
                                   {"bbox", {d.box.x1, d.box.y1, d.box.x2 - d.box.x1, d.box.y2 - d.box.y1}},
                                   {"score", d.score}});
        }
    }
    write_text_file_atomically(path, results.dump() + "\n");
}

}  // namespace qdet
