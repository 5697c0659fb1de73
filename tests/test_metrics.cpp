#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "engine/error.h"
#include "eval/metrics.h"

using namespace qdet;

namespace {

constexpr int kCar = 3;
constexpr int kTruck = 8;

// AP values below are exact fractions n / 101. The evaluator sums at most 101
// precision values of at most 1 in double, so its rounding error stays below
// 101 * 2^-53 (about 1e-14). A tolerance of 1e-12 leaves room for that and is
// far below the differences the cases test for (the two closest expected
// values, 1/2 and 51/101, differ by about 0.005).
constexpr double kApTolerance = 1e-12;

GroundTruthBox truth(Box box, int category = kCar, bool crowd = false) {
    GroundTruthBox result;
    result.box = box;
    result.category_id = category;
    result.iscrowd = crowd;
    result.area = (box.x2 - box.x1) * (box.y2 - box.y1);
    return result;
}

Detection detection(Box box, float score, int label = kCar) {
    Detection result;
    result.box = box;
    result.score = score;
    result.label = label;
    return result;
}

CocoImage image(int id, std::vector<GroundTruthBox> boxes) {
    CocoImage result;
    result.id = id;
    result.file_name = "image_" + std::to_string(id) + ".jpg";
    result.width = 100;
    result.height = 100;
    result.boxes = std::move(boxes);
    return result;
}

// Unit-height boxes along x: their IoU is the 1-D overlap ratio.
Box span(float x1, float x2) { return Box{x1, 0.f, x2, 1.f}; }

std::string describe(const std::vector<std::vector<Detection>> &detections) {
    std::string text;
    for (size_t i = 0; i < detections.size(); ++i) {
        text += "image " + std::to_string(i) + ":";
        for (const Detection &d : detections[i]) {
            text += " [" + std::to_string(d.box.x1) + "," + std::to_string(d.box.y1) + "," +
                    std::to_string(d.box.x2) + "," + std::to_string(d.box.y2) + "] s=" + std::to_string(d.score) +
                    " l=" + std::to_string(d.label);
        }
        text += "\n";
    }
    return text;
}

std::string describe(const std::vector<CocoImage> &images) {
    std::string text;
    for (const CocoImage &current : images) {
        text += "image id " + std::to_string(current.id) + " truth:";
        for (const GroundTruthBox &t : current.boxes) {
            text += " [" + std::to_string(t.box.x1) + "," + std::to_string(t.box.y1) + "," +
                    std::to_string(t.box.x2) + "," + std::to_string(t.box.y2) + "] c=" +
                    std::to_string(t.category_id) + (t.iscrowd ? " crowd" : "");
        }
        text += "\n";
    }
    return text;
}

MetricsOptions options_for(std::vector<int> classes, float iou_threshold = 0.5f, int max_detections = 100) {
    MetricsOptions options;
    options.classes = std::move(classes);
    options.iou_threshold = iou_threshold;
    options.ap_iou_threshold = iou_threshold;
    options.max_detections = max_detections;
    return options;
}

struct ApCase {
    std::string name;
    std::vector<CocoImage> images;
    std::vector<std::vector<Detection>> detections;
    MetricsOptions options;
    double expected_ap;
};

std::vector<ApCase> ap_cases() {
    const Box a{0, 0, 10, 10};
    const Box b{20, 0, 30, 10};
    const Box c{40, 0, 50, 10};
    const Box nowhere{80, 80, 90, 90};
    // A 40 x 40 crowd region and a 10 x 10 detection inside it: the standard
    // IoU is 100 / 1600, but COCO's crowd overlap is 100 / 100.
    const Box crowd{50, 50, 90, 90};
    const Box inside_crowd{60, 60, 70, 70};
    const Box inside_crowd_too{75, 75, 85, 85};

    std::vector<ApCase> cases;

    // Worked by hand: 3 boxes, detections in score order TP, FP, TP, FP.
    //   recall    1/3, 1/3, 2/3, 2/3
    //   precision 1,   1/2, 2/3, 1/2  -> interpolated 1, 2/3, 2/3, 1/2
    // Recall thresholds 0.00..0.33 (34 of them) reach recall 1/3 at the
    // first detection: precision 1. Thresholds 0.34..0.66 (33) first reach
    // recall 2/3 at the third detection: precision 2/3. Thresholds
    // 0.67..1.00 are never reached: 0. AP = (34 + 33 * 2/3) / 101 = 56 / 101.
    cases.push_back({"3 boxes, TP FP TP FP",
                     {image(1, {truth(a), truth(b), truth(c)})},
                     {{detection(a, 0.9f), detection(nowhere, 0.8f), detection(b, 0.7f),
                       detection(Box{60, 0, 70, 10}, 0.6f)}},
                     options_for({kCar}),
                     56.0 / 101});
    // The same detections spread over two images and listed out of score
    // order: the ranking is global, so the AP is the same.
    cases.push_back({"3 boxes over 2 images",
                     {image(1, {truth(a), truth(b)}), image(2, {truth(c)})},
                     {{detection(b, 0.7f), detection(nowhere, 0.6f), detection(a, 0.9f)},
                      {detection(nowhere, 0.8f)}},
                     options_for({kCar}),
                     56.0 / 101});
    cases.push_back({"perfect detections",
                     {image(1, {truth(a), truth(b)}), image(2, {truth(c)})},
                     {{detection(a, 0.9f), detection(b, 0.3f)}, {detection(c, 0.6f)}},
                     options_for({kCar}),
                     1.0});
    cases.push_back({"no detections", {image(1, {truth(a)})}, {{}}, options_for({kCar}), 0.0});
    cases.push_back({"no ground truth", {image(1, {})}, {{detection(a, 0.9f)}}, options_for({kCar}), -1.0});
    // Image 2 has no box, so its detection is a false positive ranked first:
    // recall 0, 1; precision 0, 1/2 -> interpolated 1/2 at every threshold.
    cases.push_back({"false positive on an empty image",
                     {image(1, {truth(a)}), image(2, {}), image(3, {})},
                     {{detection(a, 0.9f)}, {detection(a, 0.95f)}, {}},
                     options_for({kCar}),
                     0.5});
    // The detection inside the crowd region is ignored, leaving one TP.
    cases.push_back({"detection on a crowd region is ignored",
                     {image(1, {truth(a), truth(crowd, kCar, true)})},
                     {{detection(inside_crowd, 0.95f), detection(a, 0.9f)}},
                     options_for({kCar}),
                     1.0});
    // The same geometry without the crowd flag: FP then TP, so AP = 1/2.
    cases.push_back({"same box without crowd flag",
                     {image(1, {truth(a), truth(crowd)})},
                     {{detection(inside_crowd, 0.95f), detection(a, 0.9f)}},
                     options_for({kCar}),
                     // recall 0, 1/2; precision 0, 1/2 over 2 boxes:
                     // thresholds 0..0.50 (51) get 1/2, the rest 0.
                     51.0 / 101 * 0.5});
    cases.push_back({"crowd region absorbs several detections",
                     {image(1, {truth(a), truth(crowd, kCar, true)})},
                     {{detection(inside_crowd, 0.95f), detection(inside_crowd_too, 0.94f), detection(a, 0.5f)}},
                     options_for({kCar}),
                     1.0});
    // Ranking: ignored, TP, FP over 2 boxes. Recall 0, 1/2, 1/2 and
    // interpolated precision 1, 1, 1/2: thresholds 0..0.50 (51) get 1. A
    // crowd match counted as TP would reach recall 1 (AP 1); counted as FP
    // it would halve the precision (AP 51/202).
    cases.push_back({"crowd match is neither TP nor FP",
                     {image(1, {truth(a), truth(b), truth(crowd, kCar, true)})},
                     {{detection(inside_crowd, 0.95f), detection(a, 0.9f), detection(nowhere, 0.8f)}},
                     options_for({kCar}),
                     51.0 / 101});
    // The crowd region comes first in the file, and the detection overlaps
    // it fully (crowd overlap 1) and box `a` at IoU 0.6. Boxes that are not
    // crowd regions are tried first, so the detection is a TP.
    cases.push_back({"real box preferred over crowd",
                     {image(1, {truth(Box{0, 0, 40, 40}, kCar, true), truth(span(0, 10))})},
                     {{detection(span(0, 6), 0.9f)}},
                     options_for({kCar}),
                     1.0});
    // Only the highest-scored detection is kept, and it is a false positive;
    // taking the first one in input order would keep the TP.
    cases.push_back({"max detections keeps top scores",
                     {image(1, {truth(a)})},
                     {{detection(a, 0.6f), detection(nowhere, 0.9f)}},
                     options_for({kCar}, 0.5f, 1),
                     0.0});
    // Two TPs, only one kept: recall reaches 1/2, thresholds 0..0.50 (51).
    cases.push_back({"max detections limits recall",
                     {image(1, {truth(a), truth(b)})},
                     {{detection(a, 0.9f), detection(b, 0.8f)}},
                     options_for({kCar}, 0.5f, 1),
                     51.0 / 101});
    // Equal scores keep input order: FP first gives precision 0, 1/2.
    cases.push_back({"score tie, FP listed first",
                     {image(1, {truth(a)})},
                     {{detection(nowhere, 0.5f), detection(a, 0.5f)}},
                     options_for({kCar}),
                     0.5});
    cases.push_back({"score tie, TP listed first",
                     {image(1, {truth(a)})},
                     {{detection(a, 0.5f), detection(nowhere, 0.5f)}},
                     options_for({kCar}),
                     1.0});
    // Equal scores in different images rank by image id (1 before 2), not by
    // position in the dataset: the TP of image 1 comes first.
    cases.push_back({"score tie across images, by image id",
                     {image(2, {}), image(1, {truth(a)})},
                     {{detection(nowhere, 0.5f)}, {detection(a, 0.5f)}},
                     options_for({kCar}),
                     1.0});
    // Many equal scores, so that an unstable sort would reorder them (small
    // ranges are often sorted stably by chance). Images 1..20 hold one TP
    // each and images 21..40 one FP each, listed with the FP images first:
    // by image id the 20 TPs rank first, so AP = 1.
    {
        ApCase many{"many score ties across images", {}, {}, options_for({kCar}), 1.0};
        for (int id = 40; id >= 1; --id) {
            const bool has_box = id <= 20;
            many.images.push_back(image(id, has_box ? std::vector<GroundTruthBox>{truth(a)}
                                                    : std::vector<GroundTruthBox>{}));
            many.detections.push_back({detection(a, 0.5f)});
        }
        cases.push_back(many);
    }
    // 10 boxes in one image and 30 detections of equal score, the 10 TPs
    // listed first: kept in input order, full recall comes before any FP.
    {
        ApCase many{"many score ties in one image", {image(1, {})}, {{}}, options_for({kCar}), 1.0};
        for (int k = 0; k < 10; ++k) {
            const Box box{20.f * k, 0, 20.f * k + 10, 10};
            many.images[0].boxes.push_back(truth(box));
            many.detections[0].push_back(detection(box, 0.5f));
        }
        for (int k = 0; k < 20; ++k) many.detections[0].push_back(detection(Box{500, 500, 510, 510}, 0.5f));
        cases.push_back(many);
    }
    // Detection 1 overlaps box 1 at IoU 7/13 and box 2 at 9/11 and takes the
    // better box 2. Detection 2 overlaps box 2 at 9/11 and box 1 at 1/3, so it
    // finds nothing left: TP, FP over 2 boxes -> thresholds 0..0.50 (51).
    cases.push_back({"match takes the highest IoU",
                     {image(1, {truth(span(0, 10)), truth(span(4, 14))})},
                     {{detection(span(3, 13), 0.9f), detection(span(5, 15), 0.8f)}},
                     options_for({kCar}),
                     51.0 / 101});
    // IoU 0.5 exactly: 10 x 5 inside 10 x 10.
    cases.push_back({"IoU equal to threshold matches",
                     {image(1, {truth(a)})},
                     {{detection(Box{0, 0, 10, 5}, 0.9f)}},
                     options_for({kCar}),
                     1.0});
    cases.push_back({"IoU below threshold misses",
                     {image(1, {truth(a)})},
                     {{detection(Box{0, 0, 10, 4.9f}, 0.9f)}},
                     options_for({kCar}),
                     0.0});
    // IoU 55 / 100 = 0.55 in double, while the float 0.55f is 0.5500000119.
    cases.push_back({"IoU 0.55 at threshold 0.55f",
                     {image(1, {truth(span(0, 100))})},
                     {{detection(span(0, 55), 0.9f)}},
                     options_for({kCar}, 0.55f),
                     1.0});
    // A truck detection on a car box is neither TP nor FP for cars.
    cases.push_back({"other classes are ignored",
                     {image(1, {truth(a), truth(b, kTruck)})},
                     {{detection(a, 0.99f, kTruck), detection(b, 0.98f), detection(a, 0.5f)}},
                     options_for({kCar}),
                     // car ranking: FP (b is a truck box), TP -> 1/2.
                     0.5});
    cases.push_back({"threshold 0.75 rejects IoU 0.6",
                     {image(1, {truth(span(0, 10))})},
                     {{detection(span(0, 6), 0.9f)}},
                     options_for({kCar}, 0.75f),
                     0.0});
    return cases;
}

struct ThresholdCase {
    std::string name;
    std::vector<CocoImage> images;
    std::vector<std::vector<Detection>> detections;
    int ground_truth;
    int detections_counted;
    int true_positives;
    double recall;
    double precision;
    double mean_iou;
};

struct AgreementCase {
    std::string name;
    std::vector<std::vector<Detection>> reference;
    std::vector<std::vector<Detection>> other;
    int reference_count;
    int matched;
};

}  // namespace

TEST_SUITE("unit") {

TEST_CASE("evaluate AP cases") {
    for (const ApCase &test : ap_cases()) {
        CocoDataset dataset;
        dataset.images = test.images;
        CAPTURE(test.name);
        CAPTURE(test.options.ap_iou_threshold);
        CAPTURE(test.options.max_detections);
        INFO("ground truth:\n" << describe(test.images) << "detections:\n" << describe(test.detections));

        Metrics metrics = evaluate(dataset, test.detections, test.options);
        REQUIRE(metrics.classes.size() == 1);
        CHECK(metrics.classes[0].category_id == test.options.classes[0]);
        CHECK(metrics.classes[0].ap == doctest::Approx(test.expected_ap).epsilon(kApTolerance));
    }
}

TEST_CASE("evaluate AP50 ignores the match threshold") {
    // IoU of the detection with its box: 60 / 100 = 0.6.
    CocoDataset dataset;
    dataset.images = {image(1, {truth(Box{0, 0, 10, 10})})};
    std::vector<std::vector<Detection>> detections = {{detection(Box{0, 0, 10, 6}, 0.9f)}};
    MetricsOptions options = options_for({kCar});
    options.iou_threshold = 0.75f;

    const ClassMetrics metrics = evaluate(dataset, detections, options).classes[0];
    CHECK(metrics.true_positives == 0);
    CHECK(metrics.recall == 0.0);
    CHECK(metrics.ap == doctest::Approx(1.0).epsilon(kApTolerance));
}

TEST_CASE("evaluate classes in option order") {
    CocoDataset dataset;
    dataset.images = {image(1, {truth(Box{0, 0, 10, 10}), truth(Box{20, 0, 30, 10}, kTruck)})};
    std::vector<std::vector<Detection>> detections = {{detection(Box{20, 0, 30, 10}, 0.9f, kTruck)}};

    Metrics metrics = evaluate(dataset, detections, options_for({kTruck, kCar, 1}));
    REQUIRE(metrics.classes.size() == 3);
    CHECK(metrics.classes[0].category_id == kTruck);
    CHECK(metrics.classes[0].ap == doctest::Approx(1.0).epsilon(kApTolerance));
    CHECK(metrics.classes[1].category_id == kCar);
    CHECK(metrics.classes[1].ap == 0.0);
    CHECK(metrics.classes[2].category_id == 1);
    CHECK(metrics.classes[2].ap == -1.0);
}

TEST_CASE("evaluate recall precision mean IoU") {
    const Box a{0, 0, 10, 10};
    const Box b{20, 0, 30, 10};
    const Box c{40, 0, 50, 10};
    const Box nowhere{60, 0, 70, 10};
    const Box crowd{50, 50, 90, 90};
    const Box inside_crowd{60, 60, 70, 70};

    // The IoU of 10 x 8 inside 10 x 10 is 0.8 and of 10 x 6 is 0.6. With
    // integer corners the double division is off by at most 1 ulp, so a
    // tolerance of 1e-9 is generous.
    const std::vector<ThresholdCase> cases = {
        // a: IoU 1; b: IoU 0.8; nowhere: FP; c: score below 0.5, not counted.
        {"two TP, one FP, one below score",
         {image(1, {truth(a), truth(b), truth(c)})},
         {{detection(a, 0.9f), detection(Box{20, 0, 30, 8}, 0.8f), detection(nowhere, 0.7f),
           detection(c, 0.3f)}},
         3, 3, 2, 2.0 / 3, 2.0 / 3, 0.9},
        {"score equal to threshold counts", {image(1, {truth(a)})}, {{detection(a, 0.5f)}}, 1, 1, 1, 1, 1, 1},
        {"duplicate is a false positive",
         {image(1, {truth(a)})},
         {{detection(a, 0.9f), detection(Box{0, 0, 10, 6}, 0.8f)}},
         1, 2, 1, 1, 0.5, 1},
        {"detection on crowd is left out",
         {image(1, {truth(a), truth(crowd, kCar, true)})},
         {{detection(inside_crowd, 0.9f), detection(Box{0, 0, 10, 8}, 0.8f)}},
         1, 1, 1, 1, 1, 0.8},
        {"crowd regions are not ground truth",
         {image(1, {truth(crowd, kCar, true)})},
         {{detection(nowhere, 0.9f)}},
         0, 1, 0, 0, 0, 0},
        {"no detections", {image(1, {truth(a)}), image(2, {})}, {{}, {}}, 1, 0, 0, 0, 0, 0},
        {"no ground truth", {image(1, {})}, {{detection(a, 0.9f)}}, 0, 1, 0, 0, 0, 0},
        // IoUs 7/13 and 9/11 for the first detection, 1/3 and 9/11 for the
        // second: the first takes box 2, the second finds nothing.
        {"match takes the highest IoU",
         {image(1, {truth(span(0, 10)), truth(span(4, 14))})},
         {{detection(span(3, 13), 0.9f), detection(span(5, 15), 0.8f)}},
         2, 2, 1, 0.5, 0.5, 9.0 / 11},
        {"truck detections do not count for cars",
         {image(1, {truth(a), truth(b, kTruck)})},
         {{detection(b, 0.9f, kTruck), detection(a, 0.9f, kTruck)}},
         1, 0, 0, 0, 0, 0},
        {"images are summed",
         {image(1, {truth(a)}), image(2, {truth(b), truth(c)})},
         {{detection(a, 0.9f)}, {detection(b, 0.9f), detection(nowhere, 0.9f)}},
         3, 3, 2, 2.0 / 3, 2.0 / 3, 1},
    };

    for (const ThresholdCase &test : cases) {
        CocoDataset dataset;
        dataset.images = test.images;
        CAPTURE(test.name);
        INFO("ground truth:\n" << describe(test.images) << "detections:\n" << describe(test.detections));

        Metrics metrics = evaluate(dataset, test.detections, options_for({kCar}));
        REQUIRE(metrics.classes.size() == 1);
        const ClassMetrics &m = metrics.classes[0];
        CHECK(m.ground_truth == test.ground_truth);
        CHECK(m.detections == test.detections_counted);
        CHECK(m.true_positives == test.true_positives);
        CHECK(m.recall == doctest::Approx(test.recall).epsilon(1e-9));
        CHECK(m.precision == doctest::Approx(test.precision).epsilon(1e-9));
        CHECK(m.mean_iou == doctest::Approx(test.mean_iou).epsilon(1e-9));
    }
}

TEST_CASE("evaluate score threshold option") {
    CocoDataset dataset;
    dataset.images = {image(1, {truth(Box{0, 0, 10, 10})})};
    std::vector<std::vector<Detection>> detections = {{detection(Box{0, 0, 10, 10}, 0.2f)}};

    for (float threshold : {0.1f, 0.2f, 0.3f}) {
        CAPTURE(threshold);
        MetricsOptions options = options_for({kCar});
        options.score_threshold = threshold;
        const ClassMetrics m = evaluate(dataset, detections, options).classes[0];
        const int expected = threshold <= 0.2f ? 1 : 0;
        CHECK(m.detections == expected);
        CHECK(m.true_positives == expected);
        // AP ignores the score threshold.
        CHECK(m.ap == doctest::Approx(1.0).epsilon(kApTolerance));
    }
}

TEST_CASE("evaluate random perfect detections") {
    // Detections equal to every box, plus false positives scored below all
    // of them: AP is 1 because full recall is reached before the first FP.
    std::mt19937 random(1234);
    std::uniform_real_distribution<float> coordinate(0.f, 500.f);
    std::uniform_real_distribution<float> size(5.f, 100.f);
    std::uniform_real_distribution<float> high_score(0.5f, 1.f);
    std::uniform_real_distribution<float> low_score(0.f, 0.49f);

    CocoDataset dataset;
    std::vector<std::vector<Detection>> detections;
    int boxes = 0;
    int false_positives = 0;
    for (int id = 1; id <= 20; ++id) {
        CocoImage current = image(id, {});
        std::vector<Detection> found;
        const int count = id % 5;
        for (int k = 0; k < count; ++k) {
            float x = coordinate(random);
            float y = coordinate(random);
            Box box{x, y, x + size(random), y + size(random)};
            current.boxes.push_back(truth(box));
            found.push_back(detection(box, high_score(random)));
        }
        // Far from every box: coordinates start at 1000.
        for (int k = 0; k < id % 3; ++k) {
            found.push_back(detection(Box{1000.f + 20 * k, 1000, 1010.f + 20 * k, 1010}, low_score(random)));
        }
        std::shuffle(found.begin(), found.end(), random);
        boxes += count;
        false_positives += id % 3;
        dataset.images.push_back(current);
        detections.push_back(found);
    }
    CAPTURE(boxes);
    CAPTURE(false_positives);

    MetricsOptions options = options_for({kCar});
    options.score_threshold = 0.f;
    const ClassMetrics m = evaluate(dataset, detections, options).classes[0];
    CHECK(m.ap == doctest::Approx(1.0).epsilon(kApTolerance));
    CHECK(m.ground_truth == boxes);
    CHECK(m.true_positives == boxes);
    CHECK(m.detections == boxes + false_positives);
    CHECK(m.mean_iou == doctest::Approx(1.0).epsilon(1e-9));
}

TEST_CASE("evaluate AP ignores listing order") {
    // Noisy detections with distinct scores: shuffling each image's list and
    // the order of the images (ids unchanged) must not change any metric.
    std::mt19937 random(99);
    std::uniform_real_distribution<float> coordinate(0.f, 300.f);
    std::uniform_real_distribution<float> jitter(-6.f, 6.f);

    CocoDataset dataset;
    std::vector<std::vector<Detection>> detections;
    float score = 1.f;
    for (int id = 1; id <= 12; ++id) {
        CocoImage current = image(id, {});
        std::vector<Detection> found;
        for (int k = 0; k < 4; ++k) {
            float x = coordinate(random);
            float y = coordinate(random);
            Box box{x, y, x + 40, y + 30};
            current.boxes.push_back(truth(box, kCar, k == 3));
            Box moved{box.x1 + jitter(random), box.y1 + jitter(random), box.x2 + jitter(random),
                      box.y2 + jitter(random)};
            score -= 0.01f;
            found.push_back(detection(moved, score));
            score -= 0.01f;
            found.push_back(detection(Box{x + 20, y, x + 60, y + 30}, score));
        }
        dataset.images.push_back(current);
        detections.push_back(found);
    }

    const ClassMetrics before = evaluate(dataset, detections, options_for({kCar})).classes[0];
    CAPTURE(before.ap);
    CHECK(before.ap > 0.0);
    CHECK(before.ap < 1.0);

    std::vector<size_t> order(dataset.images.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), random);
    CocoDataset shuffled;
    std::vector<std::vector<Detection>> shuffled_detections;
    for (size_t i : order) {
        shuffled.images.push_back(dataset.images[i]);
        std::vector<Detection> found = detections[i];
        std::shuffle(found.begin(), found.end(), random);
        shuffled_detections.push_back(found);
    }

    const ClassMetrics after = evaluate(shuffled, shuffled_detections, options_for({kCar})).classes[0];
    // The same matches in the same global order: identical sums.
    CHECK(after.ap == before.ap);
    CHECK(after.true_positives == before.true_positives);
    CHECK(after.detections == before.detections);
    CHECK(after.mean_iou == doctest::Approx(before.mean_iou).epsilon(1e-12));
}

TEST_CASE("evaluate rejects wrong image count") {
    CocoDataset dataset;
    dataset.images = {image(1, {}), image(2, {})};
    std::vector<std::vector<Detection>> detections(1);
    try {
        evaluate(dataset, detections, MetricsOptions{});
        FAIL("evaluate accepted 1 detection list for 2 images");
    } catch (const Error &e) {
        // A caller bug: read_detection_dir returns one list per image.
        CHECK(e.kind() == ErrorKind::internal);
        CHECK(std::string(e.what()).find("got detections for 1 images") != std::string::npos);
    }
}

TEST_CASE("agreement cases") {
    const Box a{0, 0, 10, 10};
    const Box b{20, 0, 30, 10};
    const Box shifted{6, 0, 16, 10};  // IoU with a: 4 / 16 = 0.25
    const std::vector<AgreementCase> cases = {
        {"identical", {{detection(a, 0.9f), detection(b, 0.8f)}}, {{detection(a, 0.9f), detection(b, 0.8f)}}, 2, 2},
        {"scores may differ", {{detection(a, 0.9f)}}, {{detection(Box{0, 0, 10, 8}, 0.6f)}}, 1, 1},
        {"IoU below threshold", {{detection(a, 0.9f)}}, {{detection(shifted, 0.9f)}}, 1, 0},
        {"other class", {{detection(a, 0.9f)}}, {{detection(a, 0.9f, kTruck)}}, 1, 0},
        {"unscored class left out", {{detection(a, 0.9f, kTruck)}}, {{detection(a, 0.9f, kTruck)}}, 0, 0},
        {"reference below score", {{detection(a, 0.4f), detection(b, 0.9f)}}, {{detection(b, 0.9f)}}, 1, 1},
        // `other` detections below the score threshold take no part.
        {"other below score", {{detection(a, 0.9f)}}, {{detection(a, 0.4f)}}, 1, 0},
        // One to one: the second reference detection finds `a` taken.
        {"one to one", {{detection(a, 0.9f), detection(a, 0.8f)}}, {{detection(a, 0.9f)}}, 2, 1},
        // The first reference detection takes its best partner (IoU 9/11,
        // not 7/13). The second one reaches IoU 0.5 only with that partner
        // (9/11, against 1/3), so it stays unmatched.
        {"best IoU partner",
         {{detection(span(3, 13), 0.9f), detection(span(5, 15), 0.8f)}},
         {{detection(span(0, 10), 0.9f), detection(span(4, 14), 0.9f)}},
         2, 1},
        {"per image", {{detection(a, 0.9f)}, {}}, {{}, {detection(a, 0.9f)}}, 1, 0},
        {"empty", {{}, {}}, {{}, {}}, 0, 0},
    };

    for (const AgreementCase &test : cases) {
        CAPTURE(test.name);
        INFO("reference:\n" << describe(test.reference) << "other:\n" << describe(test.other));
        Agreement result = agreement(test.reference, test.other, options_for({kCar}));
        CHECK(result.reference == test.reference_count);
        CHECK(result.matched == test.matched);
    }
}

TEST_CASE("agreement rate") {
    Agreement none;
    CHECK(none.rate() == 1.0);
    Agreement some;
    some.reference = 4;
    some.matched = 3;
    CHECK(some.rate() == 0.75);
}

TEST_CASE("agreement rejects wrong image count") {
    std::vector<std::vector<Detection>> reference(3);
    std::vector<std::vector<Detection>> other(2);
    CHECK_THROWS_AS(agreement(reference, other, MetricsOptions{}), Error);
}

}  // TEST_SUITE
