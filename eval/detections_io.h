// Detection files: one JSON per image, the format every benchmarked system
// writes, and COCO results files.
//
//   {"image": "eval_0001.jpg", "width": 640, "height": 640,
//    "detections": [{"box": [x1, y1, x2, y2], "score": 0.98, "label": 3}, ...]}
#pragma once

#include <string>
#include <vector>

#include "engine/roi_heads.h"
#include "eval/coco.h"

namespace qdet {

struct ImageDetections {
    std::string image;  // file name
    int width = 0;
    int height = 0;
    std::vector<Detection> detections;
};

// Writes one image's file (temporary file + rename).
void write_image_detections(const std::string &path, const ImageDetections &detections);
// Reads one image's file; throws Error(input) naming the file and entry.
ImageDetections read_image_detections(const std::string &path);

// Reads the per-image files of `dir` for every image of `dataset`; a missing
// file is an error that names it.
std::vector<std::vector<Detection>> read_detection_dir(const std::string &dir, const CocoDataset &dataset);

// Writes a COCO results file: [{"image_id", "category_id", "bbox": [x, y,
// w, h], "score"}, ...], image ids taken from `dataset` by position.
void write_coco_results(const std::string &path, const CocoDataset &dataset,
                        const std::vector<std::vector<Detection>> &detections);

}  // namespace qdet
