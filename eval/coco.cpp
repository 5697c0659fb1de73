#include "eval/coco.h"

#include <cmath>
#include <limits>
#include <set>
#include <string>

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

// Reads a section of the root object that must be an array.
const json &read_array_section(const json &root, const char *key, const std::string &path) {
    auto it = root.find(key);
    if (it == root.end()) fail(ErrorKind::input, path + ": '" + key + "' is missing, expected an array");
    if (!it->is_array()) {
        fail(ErrorKind::input, path + ": '" + key + "' is a JSON " + it->type_name() + ", expected an array");
    }
    return *it;
}

// Reads `key` of `entry` as an int. `entry_name` is the entry as messages
// name it ("image at index 3").
int read_int(const json &entry, const char *key, const std::string &entry_name, const std::string &path) {
    auto it = entry.find(key);
    if (it == entry.end()) fail(ErrorKind::input, path + ": " + entry_name + " has no '" + key + "'");
    bool fits = false;
    if (it->is_number_integer()) {
        if (it->is_number_unsigned()) {
            fits = it->get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int>::max());
        } else {
            int64_t value = it->get<int64_t>();
            fits = value >= std::numeric_limits<int>::min() && value <= std::numeric_limits<int>::max();
        }
    }
    if (!fits) {
        fail(ErrorKind::input, path + ": " + entry_name + " has '" + key + "' " + it->dump() +
                                   ", expected an integer that fits in 32 bits");
    }
    return it->get<int>();
}

std::string read_string(const json &entry, const char *key, const std::string &entry_name, const std::string &path) {
    auto it = entry.find(key);
    if (it == entry.end()) fail(ErrorKind::input, path + ": " + entry_name + " has no '" + key + "'");
    if (!it->is_string()) {
        fail(ErrorKind::input, path + ": " + entry_name + " has '" + key + "' " + it->dump() + ", expected a string");
    }
    return it->get<std::string>();
}

void require_object(const json &entry, const std::string &entry_name, const std::string &path) {
    if (!entry.is_object()) {
        fail(ErrorKind::input, path + ": " + entry_name + " is a JSON " + entry.type_name() + ", expected an object");
    }
}

CocoImage read_image(const json &entry, size_t index, const std::string &path) {
    std::string entry_name = "image at index " + std::to_string(index);
    require_object(entry, entry_name, path);

    CocoImage image;
    image.id = read_int(entry, "id", entry_name, path);
    entry_name = "image " + std::to_string(image.id) + " (index " + std::to_string(index) + ")";
    image.file_name = read_string(entry, "file_name", entry_name, path);
    if (image.file_name.empty()) fail(ErrorKind::input, path + ": " + entry_name + " has an empty 'file_name'");

    // Width and height are optional: the metrics never need them.
    if (entry.contains("width")) image.width = read_int(entry, "width", entry_name, path);
    if (entry.contains("height")) image.height = read_int(entry, "height", entry_name, path);
    if (image.width < 0 || image.height < 0) {
        fail(ErrorKind::input, path + ": " + entry_name + " has size " + std::to_string(image.width) + " x " +
                                   std::to_string(image.height) + ", expected non-negative numbers");
    }
    return image;
}

// Converts COCO's [x, y, width, height] to corners and stores width * height
// in `box_area`.
Box read_bbox(const json &entry, const std::string &entry_name, const std::string &path, float *box_area) {
    auto it = entry.find("bbox");
    if (it == entry.end()) fail(ErrorKind::input, path + ": " + entry_name + " has no 'bbox'");
    const json &bbox = *it;
    bool four_numbers = bbox.is_array() && bbox.size() == 4;
    for (size_t k = 0; four_numbers && k < 4; ++k) four_numbers = bbox[k].is_number();
    if (!four_numbers) {
        fail(ErrorKind::input,
             path + ": " + entry_name + " has bbox " + bbox.dump() + ", expected 4 numbers [x, y, width, height]");
    }

    double x = bbox[0].get<double>();
    double y = bbox[1].get<double>();
    double width = bbox[2].get<double>();
    double height = bbox[3].get<double>();
    if (width < 0) {
        fail(ErrorKind::input, path + ": " + entry_name + " has bbox " + bbox.dump() + " with a negative width");
    }
    if (height < 0) {
        fail(ErrorKind::input, path + ": " + entry_name + " has bbox " + bbox.dump() + " with a negative height");
    }
    Box box{static_cast<float>(x), static_cast<float>(y), static_cast<float>(x + width),
            static_cast<float>(y + height)};
    if (!std::isfinite(box.x1) || !std::isfinite(box.y1) || !std::isfinite(box.x2) || !std::isfinite(box.y2)) {
        fail(ErrorKind::input,
             path + ": " + entry_name + " has bbox " + bbox.dump() + ", which does not fit in a float");
    }
    *box_area = static_cast<float>(width * height);
    return box;
}

// "iscrowd" is 0 or 1 in COCO files. True and false are accepted as well.
bool read_iscrowd(const json &entry, const std::string &entry_name, const std::string &path) {
    auto it = entry.find("iscrowd");
    if (it == entry.end()) return false;
    if (it->is_boolean()) return it->get<bool>();
    if (it->is_number_integer() && (it->get<int64_t>() == 0 || it->get<int64_t>() == 1)) {
        return it->get<int64_t>() == 1;
    }
    fail(ErrorKind::input, path + ": " + entry_name + " has 'iscrowd' " + it->dump() + ", expected 0 or 1");
}

}  // namespace

const CocoImage *CocoDataset::find_by_file_name(const std::string &file_name) const {
    const std::string wanted = base_name(file_name);
    for (const CocoImage &image : images) {
        if (base_name(image.file_name) == wanted) return &image;
    }
    return nullptr;
}

const CocoImage *CocoDataset::find_by_id(int id) const {
    for (const CocoImage &image : images) {
        if (image.id == id) return &image;
    }
    return nullptr;
}

CocoDataset load_coco(const std::string &path) {
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
                                   ", expected an object with 'images' and 'annotations'");
    }

    CocoDataset dataset;
    dataset.path = path;

    // Categories are optional. When present, annotations must use their ids.
    auto categories = root.find("categories");
    const bool has_categories = categories != root.end();
    if (has_categories) {
        if (!categories->is_array()) {
            fail(ErrorKind::input,
                 path + ": 'categories' is a JSON " + categories->type_name() + ", expected an array");
        }
        for (size_t index = 0; index < categories->size(); ++index) {
            const json &entry = (*categories)[index];
            std::string entry_name = "category at index " + std::to_string(index);
            require_object(entry, entry_name, path);
            int id = read_int(entry, "id", entry_name, path);
            std::string name = read_string(entry, "name", entry_name, path);
            if (!dataset.categories.emplace(id, name).second) {
                fail(ErrorKind::input, path + ": " + entry_name + " repeats category id " + std::to_string(id));
            }
        }
    }

    // Images in file order. Their ids must be unique.
    const json &images = read_array_section(root, "images", path);
    std::map<int, size_t> image_index;  // image id -> position in dataset.images
    for (size_t index = 0; index < images.size(); ++index) {
        CocoImage image = read_image(images[index], index, path);
        auto [it, inserted] = image_index.emplace(image.id, index);
        if (!inserted) {
            fail(ErrorKind::input, path + ": image at index " + std::to_string(index) + " repeats image id " +
                                       std::to_string(image.id) + " of the image at index " +
                                       std::to_string(it->second) + ", expected unique ids");
        }
        dataset.images.push_back(std::move(image));
    }

    // Annotations, attached to their image in file order.
    const json &annotations = read_array_section(root, "annotations", path);
    for (size_t index = 0; index < annotations.size(); ++index) {
        const json &entry = annotations[index];
        std::string entry_name = "annotation at index " + std::to_string(index);
        require_object(entry, entry_name, path);
        // The annotation id only serves to name the entry in messages.
        if (entry.contains("id")) {
            entry_name = "annotation " + std::to_string(read_int(entry, "id", entry_name, path)) + " (index " +
                   std::to_string(index) + ")";
        }

        int image_id = read_int(entry, "image_id", entry_name, path);
        auto image = image_index.find(image_id);
        if (image == image_index.end()) {
            fail(ErrorKind::input, path + ": " + entry_name + " refers to image_id " + std::to_string(image_id) +
                                       ", which is not in 'images'");
        }

        GroundTruthBox box;
        box.category_id = read_int(entry, "category_id", entry_name, path);
        if (has_categories && dataset.categories.count(box.category_id) == 0) {
            fail(ErrorKind::input, path + ": " + entry_name + " refers to category_id " +
                                       std::to_string(box.category_id) + ", which is not in 'categories'");
        }
        box.box = read_bbox(entry, entry_name, path, &box.area);
        box.iscrowd = read_iscrowd(entry, entry_name, path);
        if (entry.contains("area")) {
            const json &area = entry["area"];
            if (!area.is_number() || !(area.get<double>() >= 0) || !std::isfinite(area.get<float>())) {
                fail(ErrorKind::input, path + ": " + entry_name + " has 'area' " + area.dump() +
                                           ", expected a non-negative number that fits in a float");
            }
            box.area = area.get<float>();
        }
        dataset.images[image->second].boxes.push_back(box);
    }
    return dataset;
}

}  // namespace qdet
