// INT8 against FP32 on real images, with the model the fixture calibrated on
// eight calibration images.
#include <doctest/doctest.h>

#include <cmath>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/detector.h"
#include "engine/weight_file.h"
#include "tests/test_support.h"

namespace qdet {
namespace {

std::string int8_model() { return test::test_data_dir() + "/roadcars_int8.qdet"; }

std::string eval_image(int index) {
    char name[32];
    std::snprintf(name, sizeof(name), "eval_%04d.jpg", index);
    return test::data_dir() + "/datasets/roadcars/eval/images/" + name;
}

}  // namespace

TEST_SUITE("int8") {

TEST_CASE("int8 finds the cars fp32 finds") {
    set_thread_count(2);
    const WeightFile file = WeightFile::read(int8_model());
    DetectorOptions fp32_options;
    DetectorOptions int8_options;
    int8_options.precision = Precision::int8;
    Detector fp32(file, fp32_options);
    Detector int8(file, int8_options);

    // Highway photos (640x640) and fog photos of other sizes.
    const int images[] = {2, 4, 12, 30, 252, 260, 300};
    int reference = 0;
    int found = 0;
    for (int index : images) {
        const Image image = read_image(eval_image(index));
        const std::vector<Detection> a = fp32.detect(image);
        const std::vector<Detection> b = int8.detect(image);
        for (const Detection &d : a) {
            if (d.label != 3 || d.score < 0.5f) continue;
            ++reference;
            bool matched = false;
            for (const Detection &e : b) matched = matched || (e.label == 3 && box_iou(d.box, e.box) >= 0.5f);
            INFO("image " << eval_image(index) << ": FP32 car at [" << d.box.x1 << ", " << d.box.y1 << ", "
                          << d.box.x2 << ", " << d.box.y2 << "] score " << d.score << (matched ? "" : " missed"));
            found += matched ? 1 : 0;
        }
    }
    CAPTURE(reference);
    CAPTURE(found);
    REQUIRE(reference >= 10);
    CHECK(found >= 0.95 * reference);
}

TEST_CASE("detector handles images without objects") {
    // A flat image gives no proposals above the RPN's score threshold, so
    // the box head runs on nothing; odd sizes exercise resize and padding.
    set_thread_count(2);
    const WeightFile file = WeightFile::read(int8_model());
    struct Case {
        const char *name;
        int width, height;
    };
    const Case cases[] = {{"flat 640x480", 640, 480}, {"one pixel", 1, 1}, {"thin strip", 3000, 20}};
    for (const Precision precision : {Precision::fp32, Precision::int8}) {
        DetectorOptions options;
        options.precision = precision;
        Detector detector(file, options);
        for (const Case &c : cases) {
            INFO(precision_name(precision) << ", " << c.name);
            Image image;
            image.width = c.width;
            image.height = c.height;
            image.rgb.assign(static_cast<size_t>(c.width) * c.height * 3, 128);
            DetectionTrace trace;
            const std::vector<Detection> detections = detector.detect(image, nullptr, &trace);
            CHECK(detections.empty());
            CHECK(trace.geometry.padded.height % 32 == 0);
            CHECK(trace.geometry.padded.width % 32 == 0);
        }
    }
}

TEST_CASE("int8 weights are a quarter of fp32") {
    const WeightFile file = WeightFile::read(int8_model());
    uint64_t fp32_weights = 0;
    uint64_t int8_weights = 0;
    for (const TensorInfo &tensor : file.tensors()) {
        const bool weight = tensor.name.size() > 7 && tensor.name.compare(tensor.name.size() - 7, 7, ".weight") == 0;
        if (weight) fp32_weights += tensor.nbytes;
        if (tensor.dtype == DType::s8) int8_weights += tensor.nbytes;
    }
    CAPTURE(fp32_weights);
    CAPTURE(int8_weights);
    // s8 is a quarter of f32; squeeze-excitation stays FP32 only.
    CHECK(int8_weights <= 0.30 * fp32_weights);
    CHECK(int8_weights >= 0.20 * fp32_weights);
}

TEST_CASE("int8 calibration report covers every tensor") {
    const auto report =
        nlohmann::json::parse(test::read_bytes(test::test_data_dir() + "/calibration_report.json"));
    CHECK(report["images_used"] == 8);
    int measured = 0;
    int tensors = 0;
    for (const auto &tensor : report["tensors"]) {
        ++tensors;
        INFO("tensor " << tensor["tensor"]);
        if (tensor["sqnr_db"].is_null()) continue;
        ++measured;
        // INT8 keeps at least 5 dB of signal over noise everywhere; the
        // input image, quantized once, keeps far more.
        CHECK(tensor["sqnr_db"].get<double>() > 5.0);
    }
    CHECK(tensors > 60);
    CHECK(measured == tensors);
    CHECK(report["tensors"][0]["tensor"] == "input");
    CHECK(report["tensors"][0]["sqnr_db"].get<double>() > 35.0);
}

}  // TEST_SUITE
}  // namespace qdet
