#include "eval/metrics.h"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <string>

#include "engine/error.h"

namespace qdet {
namespace {

// COCO averages precision at the recall thresholds 0, 0.01, ..., 1.00.
constexpr int kRecallThresholds = 101;

// Returns the shortest decimal that converts to `value` (0.55f -> 0.55) as a
// double, so that an IoU of exactly 0.55 reaches a threshold given as 0.55f,
// whose float value is 0.550000011920929.
double decimal_value(float value) {
    char text[64];
    auto result = std::to_chars(text, text + sizeof(text) - 1, value);
    *result.ptr = '\0';
    return std::strtod(text, nullptr);
}

double area_in_double(const Box &box) {
    return (static_cast<double>(box.x2) - box.x1) * (static_cast<double>(box.y2) - box.y1);
}

// IoU in double precision with continuous coordinates (no +1 on sizes). For a
// crowd region, COCO divides the intersection by the detection's area alone,
// so a detection inside the region overlaps it fully.
double overlap(const Box &detection, const Box &truth, bool crowd) {
    double width = std::min<double>(detection.x2, truth.x2) - std::max<double>(detection.x1, truth.x1);
    double height = std::min<double>(detection.y2, truth.y2) - std::max<double>(detection.y1, truth.y1);
    if (width <= 0 || height <= 0) return 0;

    double intersection = width * height;
    double detection_area = area_in_double(detection);
    double denominator = crowd ? detection_area : detection_area + area_in_double(truth) - intersection;
    return intersection / denominator;
}

// Returns the indices of the detections with label `category` and score >=
// `min_score`, by descending score. Equal scores keep their input order.
std::vector<size_t> ranked_detections(const std::vector<Detection> &detections, int category, float min_score) {
    std::vector<size_t> order;
    for (size_t i = 0; i < detections.size(); ++i) {
        if (detections[i].label == category && detections[i].score >= min_score) order.push_back(i);
    }
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return detections[a].score > detections[b].score; });
    return order;
}

// ---------------------------------------------------------------------------
// Average precision (COCOeval.evaluateImg and accumulate for one IoU
// threshold, area range "all").

struct RankedDetection {
    double score = 0;
    bool true_positive = false;
    bool ignored = false;  // matched to a crowd region: neither TP nor FP
};

// Matches one image's detections of `category` to its ground truth greedily in
// score order and appends the kept detections to `ranked`. Returns the number
// of ground-truth boxes that are not crowd regions.
int match_image_for_ap(const CocoImage &image, const std::vector<Detection> &detections, int category,
                       const MetricsOptions &options, std::vector<RankedDetection> *ranked) {
    // Ground truth of the class, crowd regions (ignored) last, file order kept.
    std::vector<const GroundTruthBox *> truths;
    for (const GroundTruthBox &box : image.boxes) {
        if (box.category_id == category && !box.iscrowd) truths.push_back(&box);
    }
    const int counted_truths = static_cast<int>(truths.size());
    for (const GroundTruthBox &box : image.boxes) {
        if (box.category_id == category && box.iscrowd) truths.push_back(&box);
    }

    // The top max_detections detections of the class.
    std::vector<size_t> order = ranked_detections(detections, category, -std::numeric_limits<float>::infinity());
    const size_t kept = static_cast<size_t>(std::max(options.max_detections, 0));
    if (order.size() > kept) order.resize(kept);

    // COCO caps the threshold just below 1 so that identical boxes still match
    // at a threshold of 1.0 despite rounding.
    const double threshold = std::min(decimal_value(options.ap_iou_threshold), 1.0 - 1e-10);
    std::vector<bool> truth_matched(truths.size(), false);
    for (size_t index : order) {
        const Detection &detection = detections[index];
        double best_iou = threshold;
        int best = -1;
        for (size_t t = 0; t < truths.size(); ++t) {
            const bool crowd = truths[t]->iscrowd;
            // A crowd region may absorb any number of detections.
            if (truth_matched[t] && !crowd) continue;
            // Crowd regions come last, so once a box that is not a crowd
            // region has matched, the search ends.
            if (best >= 0 && !truths[static_cast<size_t>(best)]->iscrowd && crowd) break;
            double iou = overlap(detection.box, truths[t]->box, crowd);
            if (iou < best_iou) continue;
            best_iou = iou;
            best = static_cast<int>(t);
        }

        RankedDetection result;
        result.score = detection.score;
        if (best >= 0) {
            truth_matched[static_cast<size_t>(best)] = true;
            result.ignored = truths[static_cast<size_t>(best)]->iscrowd;
            result.true_positive = !result.ignored;
        }
        ranked->push_back(result);
    }
    return counted_truths;
}

// Computes the area under the interpolated precision-recall curve, sampled
// at the 101 recall thresholds.
double average_precision(std::vector<RankedDetection> ranked, int truth_count) {
    if (truth_count == 0) return -1;

    // A stable sort, so equal scores keep image order, then score order
    // within the image.
    std::stable_sort(ranked.begin(), ranked.end(),
                     [](const RankedDetection &a, const RankedDetection &b) { return a.score > b.score; });

    // Ignored detections keep their position but count as neither TP nor FP.
    // COCO adds the spacing of 1.0 to the denominator, so that a position
    // before any counted detection has precision 0 instead of 0 / 0.
    std::vector<double> recall(ranked.size());
    std::vector<double> precision(ranked.size());
    double true_positives = 0;
    double false_positives = 0;
    for (size_t i = 0; i < ranked.size(); ++i) {
        if (ranked[i].true_positive) {
            true_positives += 1;
        } else if (!ranked[i].ignored) {
            false_positives += 1;
        }
        recall[i] = true_positives / truth_count;
        precision[i] = true_positives / (true_positives + false_positives + std::numeric_limits<double>::epsilon());
    }

    // Interpolated precision: the maximum precision at this or any higher recall.
    for (size_t i = ranked.size(); i-- > 1;) precision[i - 1] = std::max(precision[i - 1], precision[i]);

    // At each recall threshold, take the precision at the first position whose
    // recall reaches it (numpy's searchsorted, side 'left'), or 0 past the end.
    // The thresholds are computed as numpy.linspace(0, 1, 101) does.
    double sum = 0;
    for (int r = 0; r < kRecallThresholds; ++r) {
        double recall_threshold = r == kRecallThresholds - 1 ? 1.0 : r * 0.01;
        auto position = std::lower_bound(recall.begin(), recall.end(), recall_threshold);
        if (position == recall.end()) break;
        sum += precision[static_cast<size_t>(position - recall.begin())];
    }
    return sum / kRecallThresholds;
}

// ---------------------------------------------------------------------------
// Recall, precision and mean IoU at the score threshold.

struct ThresholdCounts {
    int ground_truth = 0;
    int detections = 0;
    int true_positives = 0;
    double iou_sum = 0;  // over the matched pairs
};

// Adds the counts of one image's detections of `category` to `counts`.
void count_at_threshold(const CocoImage &image, const std::vector<Detection> &detections, int category,
                        const MetricsOptions &options, ThresholdCounts *counts) {
    std::vector<const GroundTruthBox *> boxes;
    std::vector<const GroundTruthBox *> crowds;
    for (const GroundTruthBox &box : image.boxes) {
        if (box.category_id != category) continue;
        (box.iscrowd ? crowds : boxes).push_back(&box);
    }
    counts->ground_truth += static_cast<int>(boxes.size());

    const double threshold = decimal_value(options.iou_threshold);
    std::vector<bool> matched(boxes.size(), false);
    for (size_t index : ranked_detections(detections, category, options.score_threshold)) {
        const Box &box = detections[index].box;

        // The unmatched box with the highest IoU, the first one on ties.
        double best_iou = threshold;
        int best = -1;
        for (size_t b = 0; b < boxes.size(); ++b) {
            if (matched[b]) continue;
            double iou = overlap(box, boxes[b]->box, false);
            if (iou < best_iou || (best >= 0 && iou == best_iou)) continue;
            best_iou = iou;
            best = static_cast<int>(b);
        }
        if (best >= 0) {
            matched[static_cast<size_t>(best)] = true;
            counts->detections += 1;
            counts->true_positives += 1;
            counts->iou_sum += best_iou;
            continue;
        }

        // Without a box to match, a detection on a crowd region is left out.
        bool on_crowd = std::any_of(crowds.begin(), crowds.end(), [&](const GroundTruthBox *crowd) {
            return overlap(box, crowd->box, true) >= threshold;
        });
        if (!on_crowd) counts->detections += 1;
    }
}

void check_image_count(size_t detection_lists, size_t images, const char *function_name) {
    if (detection_lists != images) {
        fail(ErrorKind::internal, std::string(function_name) + ": got detections for " +
                                      std::to_string(detection_lists) + " images, expected one list per image (" +
                                      std::to_string(images) + ")");
    }
}

}  // namespace

Metrics evaluate(const CocoDataset &dataset, const std::vector<std::vector<Detection>> &detections,
                 const MetricsOptions &options) {
    check_image_count(detections.size(), dataset.images.size(), "evaluate");

    // COCO evaluates images by ascending id, which decides the order of equal
    // scores from different images.
    std::vector<size_t> image_order(dataset.images.size());
    std::iota(image_order.begin(), image_order.end(), size_t{0});
    std::stable_sort(image_order.begin(), image_order.end(),
                     [&](size_t a, size_t b) { return dataset.images[a].id < dataset.images[b].id; });

    Metrics metrics;
    for (int category : options.classes) {
        std::vector<RankedDetection> ranked;
        int ap_truths = 0;
        ThresholdCounts counts;
        for (size_t i : image_order) {
            ap_truths += match_image_for_ap(dataset.images[i], detections[i], category, options, &ranked);
            count_at_threshold(dataset.images[i], detections[i], category, options, &counts);
        }

        ClassMetrics result;
        result.category_id = category;
        result.ground_truth = counts.ground_truth;
        result.detections = counts.detections;
        result.true_positives = counts.true_positives;
        if (counts.ground_truth > 0) result.recall = static_cast<double>(counts.true_positives) / counts.ground_truth;
        if (counts.detections > 0) result.precision = static_cast<double>(counts.true_positives) / counts.detections;
        if (counts.true_positives > 0) result.mean_iou = counts.iou_sum / counts.true_positives;
        result.ap = average_precision(std::move(ranked), ap_truths);
        metrics.classes.push_back(result);
    }
    return metrics;
}

Agreement agreement(const std::vector<std::vector<Detection>> &reference,
                    const std::vector<std::vector<Detection>> &other, const MetricsOptions &options) {
    check_image_count(other.size(), reference.size(), "agreement");

    const double threshold = decimal_value(options.iou_threshold);
    Agreement result;
    for (size_t image = 0; image < reference.size(); ++image) {
        for (int category : options.classes) {
            std::vector<size_t> candidates = ranked_detections(other[image], category, options.score_threshold);
            std::vector<bool> taken(candidates.size(), false);

            for (size_t index : ranked_detections(reference[image], category, options.score_threshold)) {
                result.reference += 1;

                // The untaken detection of `other` with the highest IoU, the
                // higher-scored one on ties.
                double best_iou = threshold;
                int best = -1;
                for (size_t c = 0; c < candidates.size(); ++c) {
                    if (taken[c]) continue;
                    double iou = overlap(reference[image][index].box, other[image][candidates[c]].box, false);
                    if (iou < best_iou || (best >= 0 && iou == best_iou)) continue;
                    best_iou = iou;
                    best = static_cast<int>(c);
                }
                if (best >= 0) {
                    taken[static_cast<size_t>(best)] = true;
                    result.matched += 1;
                }
            }
        }
    }
    return result;
}

}  // namespace qdet
