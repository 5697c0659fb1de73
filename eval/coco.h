// Ground truth in COCO format: images, annotations with [x, y, width, height]
// boxes in pixels, and categories.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "kernels/box_ops.h"

namespace qdet {

struct GroundTruthBox {
    Box box;  // x1, y1, x2, y2 in pixels
    int category_id = 0;
    bool iscrowd = false;
    float area = 0.f;  // the annotation's "area" (segment area), or box area when absent
};

struct CocoImage {
    int id = 0;
    std::string file_name;
    int width = 0;
    int height = 0;
    std::vector<GroundTruthBox> boxes;
};

struct CocoDataset {
    std::string path;
    std::vector<CocoImage> images;  // in file order
    std::map<int, std::string> categories;

    // nullptr when no image has that file name (compared without directories).
    const CocoImage *find_by_file_name(const std::string &file_name) const;
    const CocoImage *find_by_id(int id) const;
};

// Loads and validates a COCO annotation file. Throws Error(input) naming the
// file and the offending entry for malformed JSON, missing sections, boxes
// with negative size, duplicate image ids and annotations of unknown images.
CocoDataset load_coco(const std::string &path);

}  // namespace qdet
