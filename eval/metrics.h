// Detection metrics for qdet's evaluator. The definitions are in
// eval/METRICS.md. AP follows the COCO evaluation (pycocotools 2.x COCOeval)
// for one IoU threshold.
#pragma once

#include <vector>

#include "engine/roi_heads.h"
#include "eval/coco.h"

namespace qdet {

struct MetricsOptions {
    std::vector<int> classes = {3};  // COCO category ids to score (3 = car)
    float score_threshold = 0.5f;    // for recall, precision and mean IoU
    float iou_threshold = 0.5f;      // for recall, precision, mean IoU and agreement: a match at IoU >= this
    float ap_iou_threshold = 0.5f;   // for AP: 0.5 gives AP50, whatever iou_threshold is
    int max_detections = 100;        // per image, for AP (COCO's maxDets)
};

struct ClassMetrics {
    int category_id = 0;
    int ground_truth = 0;    // boxes that are not crowd regions
    int detections = 0;      // detections with score >= score_threshold, less those left on crowd regions
    int true_positives = 0;  // of those, matched to a ground-truth box
    double recall = 0;       // true_positives / ground_truth (0 when no ground truth)
    double precision = 0;    // true_positives / detections (0 when no detections)
    double mean_iou = 0;     // mean IoU of the matched pairs (0 when none)
    double ap = -1;          // AP at ap_iou_threshold, 101-point COCO style; -1 without ground truth
};

struct Metrics {
    std::vector<ClassMetrics> classes;  // in MetricsOptions::classes order
};

// `detections[i]` are the detections of `dataset.images[i]`.
Metrics evaluate(const CocoDataset &dataset, const std::vector<std::vector<Detection>> &detections,
                 const MetricsOptions &options);

// How many detections of `reference` (score >= score_threshold, of the
// scored classes) have a detection of the same class in `other` at IoU >=
// iou_threshold, matched one to one in descending score order. Only the
// detections of `other` with score >= score_threshold take part, and each
// reference detection takes the unmatched one with the highest IoU.
// `reference[i]` and `other[i]` are the detections of the same image.
struct Agreement {
    int reference = 0;
    int matched = 0;
    double rate() const { return reference > 0 ? static_cast<double>(matched) / reference : 1.0; }
};
Agreement agreement(const std::vector<std::vector<Detection>> &reference,
                    const std::vector<std::vector<Detection>> &other, const MetricsOptions &options);

}  // namespace qdet
