#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "eval/detections_io.h"
#include "tests/test_support.h"

using namespace qdet;

namespace {

// Detections with seeded random boxes, scores and labels. The values use the
// full float mantissa, so a lossy number format would change them.
std::vector<Detection> random_detections(size_t count, uint32_t seed) {
    std::vector<float> values = test::random_floats(count * 6, 0.f, 640.f, seed);
    std::vector<Detection> detections(count);
    for (size_t i = 0; i < count; ++i) {
        const float *v = &values[i * 6];
        detections[i].box = Box{v[0], v[1], v[0] + v[2] / 4, v[1] + v[3] / 4};
        detections[i].score = v[4] / 640.f;
        detections[i].label = 1 + static_cast<int>(v[5]) % 90;
    }
    return detections;
}

CocoDataset two_image_dataset() {
    CocoDataset dataset;
    dataset.path = "annotations.json";
    CocoImage first;
    first.id = 11;
    first.file_name = "images/street.jpg";
    CocoImage second;
    second.id = 4;
    second.file_name = "road.v2.png";
    dataset.images = {first, second};
    return dataset;
}

std::string error_message(const std::function<void()> &action) {
    try {
        action();
    } catch (const Error &e) {
        return e.what();
    }
    return "";
}

struct MalformedCase {
    std::string name;
    std::string text;
    std::string expected;  // a fragment the message must contain
};

}  // namespace

TEST_SUITE("unit") {

TEST_CASE("image detections round trip") {
    const std::string dir = test::make_temp_dir("qdet-detections");
    for (size_t count : {size_t{0}, size_t{1}, size_t{37}}) {
        CAPTURE(count);
        ImageDetections written;
        written.image = "eval_0003.jpg";
        written.width = 640;
        written.height = 427;
        written.detections = random_detections(count, 17 + static_cast<uint32_t>(count));

        const std::string path = dir + "/eval_0003.json";
        write_image_detections(path, written);
        ImageDetections read = read_image_detections(path);

        CHECK(read.image == written.image);
        CHECK(read.width == 640);
        CHECK(read.height == 427);
        REQUIRE(read.detections.size() == count);
        // Exact equality: the JSON numbers must round-trip every float bit.
        for (size_t i = 0; i < count; ++i) {
            CAPTURE(i);
            CHECK(read.detections[i].box.x1 == written.detections[i].box.x1);
            CHECK(read.detections[i].box.y1 == written.detections[i].box.y1);
            CHECK(read.detections[i].box.x2 == written.detections[i].box.x2);
            CHECK(read.detections[i].box.y2 == written.detections[i].box.y2);
            CHECK(read.detections[i].score == written.detections[i].score);
            CHECK(read.detections[i].label == written.detections[i].label);
        }
    }
    // The temporary file was renamed over the target, nothing else is left.
    CHECK(test::list_dir(dir) == std::vector<std::string>{"eval_0003.json"});
}

TEST_CASE("image detections file format") {
    const std::string dir = test::make_temp_dir("qdet-detections");
    ImageDetections written;
    written.image = "eval_0001.jpg";
    written.width = 640;
    written.height = 640;
    written.detections = {Detection{Box{1.5f, 2.f, 30.25f, 40.f}, 0.75f, 3}};
    write_image_detections(dir + "/a.json", written);

    nlohmann::json file = nlohmann::json::parse(test::read_bytes(dir + "/a.json"));
    CHECK(file["image"] == "eval_0001.jpg");
    CHECK(file["width"] == 640);
    CHECK(file["height"] == 640);
    REQUIRE(file["detections"].size() == 1);
    CHECK(file["detections"][0]["box"] == nlohmann::json::array({1.5, 2.0, 30.25, 40.0}));
    CHECK(file["detections"][0]["score"] == 0.75);
    CHECK(file["detections"][0]["label"] == 3);
}

TEST_CASE("write image detections rejects non-finite values") {
    const std::string dir = test::make_temp_dir("qdet-detections");
    ImageDetections written;
    written.image = "a.jpg";
    written.detections = {Detection{Box{0, 0, 1, std::numeric_limits<float>::quiet_NaN()}, 0.5f, 3}};
    std::string message = error_message([&] { write_image_detections(dir + "/a.json", written); });
    CAPTURE(message);
    CHECK(message.find(dir + "/a.json: detection 0 has a non-finite box or score") != std::string::npos);
    CHECK(test::list_dir(dir).empty());
}

TEST_CASE("read image detections rejects malformed files") {
    // Where a detection is at fault it is the second one (index 1), after a
    // valid one, so that the message must name the right index.
    const std::vector<MalformedCase> cases = {
        {"not JSON", R"({"image": "a.jpg", )", "not valid JSON"},
        {"empty file", "", "not valid JSON"},
        {"top level array", "[]", "top level is a JSON array"},
        {"image missing", R"({"width": 1, "height": 1, "detections": []})", "'image' is missing"},
        {"image not a string", R"({"image": 5, "width": 1, "height": 1, "detections": []})", "'image' is 5"},
        {"width missing", R"({"image": "a.jpg", "height": 1, "detections": []})", "'width' is missing"},
        {"height fractional", R"({"image": "a.jpg", "width": 1, "height": 1.5, "detections": []})",
         "'height' is 1.5, expected an integer"},
        {"detections missing", R"({"image": "a.jpg", "width": 1, "height": 1})", "'detections' is missing"},
        {"detections an object", R"({"image": "a.jpg", "width": 1, "height": 1, "detections": {}})",
         "'detections' is a JSON object, expected an array"},
        {"detection not an object",
         R"({"image": "a.jpg", "width": 1, "height": 1, "detections": [
             {"box": [0, 0, 1, 1], "score": 0.5, "label": 3}, [0, 0, 1, 1]]})",
         "detection 1 is a JSON array, expected an object"},
        {"box missing",
         R"({"image": "a.jpg", "width": 1, "height": 1, "detections": [
             {"box": [0, 0, 1, 1], "score": 0.5, "label": 3}, {"score": 0.5, "label": 3}]})",
         "detection 1 has no 'box'"},
        {"box of 3 numbers",
         R"({"image": "a.jpg", "width": 1, "height": 1, "detections": [
             {"box": [0, 0, 1, 1], "score": 0.5, "label": 3}, {"box": [0, 0, 1], "score": 0.5, "label": 3}]})",
         "detection 1 has box [0,0,1], expected 4 finite numbers"},
        {"box with a string",
         R"({"image": "a.jpg", "width": 1, "height": 1, "detections": [
             {"box": [0, 0, 1, 1], "score": 0.5, "label": 3}, {"box": [0, "0", 1, 1], "score": 0.5, "label": 3}]})",
         "detection 1 has box [0,\"0\",1,1], expected 4 finite numbers"},
        {"box too large for float",
         R"({"image": "a.jpg", "width": 1, "height": 1, "detections": [
             {"box": [0, 0, 1, 1], "score": 0.5, "label": 3}, {"box": [0, 0, 1e39, 1], "score": 0.5, "label": 3}]})",
         "detection 1 has box [0,0,1e+39,1], expected 4 finite numbers"},
        {"box with x2 < x1",
         R"({"image": "a.jpg", "width": 1, "height": 1, "detections": [
             {"box": [0, 0, 1, 1], "score": 0.5, "label": 3}, {"box": [5, 0, 4, 1], "score": 0.5, "label": 3}]})",
         "detection 1 has box [5,0,4,1], expected x2 >= x1 and y2 >= y1"},
        {"box with y2 < y1",
         R"({"image": "a.jpg", "width": 1, "height": 1, "detections": [
             {"box": [0, 0, 1, 1], "score": 0.5, "label": 3}, {"box": [0, 3, 4, 2], "score": 0.5, "label": 3}]})",
         "detection 1 has box [0,3,4,2], expected x2 >= x1 and y2 >= y1"},
        {"score missing",
         R"({"image": "a.jpg", "width": 1, "height": 1, "detections": [
             {"box": [0, 0, 1, 1], "score": 0.5, "label": 3}, {"box": [0, 0, 1, 1], "label": 3}]})",
         "detection 1 has no 'score'"},
        {"score a string",
         R"({"image": "a.jpg", "width": 1, "height": 1, "detections": [
             {"box": [0, 0, 1, 1], "score": 0.5, "label": 3}, {"box": [0, 0, 1, 1], "score": "0.5", "label": 3}]})",
         "detection 1 has score \"0.5\", expected a finite number"},
        {"label missing",
         R"({"image": "a.jpg", "width": 1, "height": 1, "detections": [
             {"box": [0, 0, 1, 1], "score": 0.5, "label": 3}, {"box": [0, 0, 1, 1], "score": 0.5}]})",
         "detection 1 has no 'label'"},
        {"label fractional",
         R"({"image": "a.jpg", "width": 1, "height": 1, "detections": [
             {"box": [0, 0, 1, 1], "score": 0.5, "label": 3}, {"box": [0, 0, 1, 1], "score": 0.5, "label": 3.5}]})",
         "detection 1 has label 3.5, expected an integer category id"},
        {"label a string",
         R"({"image": "a.jpg", "width": 1, "height": 1, "detections": [
             {"box": [0, 0, 1, 1], "score": 0.5, "label": 3}, {"box": [0, 0, 1, 1], "score": 0.5, "label": "car"}]})",
         "detection 1 has label \"car\""},
    };

    const std::string dir = test::make_temp_dir("qdet-detections");
    for (const MalformedCase &test : cases) {
        CAPTURE(test.name);
        CAPTURE(test.text);
        const std::string path = dir + "/bad.json";
        test::write_bytes(path, test.text);
        try {
            read_image_detections(path);
            FAIL("read_image_detections accepted the file");
        } catch (const Error &e) {
            const std::string message = e.what();
            CAPTURE(message);
            CHECK(e.kind() == ErrorKind::input);
            CHECK(message.rfind(path + ": ", 0) == 0);  // starts with the file name
            CHECK(message.find(test.expected) != std::string::npos);
        }
    }
}

TEST_CASE("read image detections accepts zero-size boxes") {
    const std::string dir = test::make_temp_dir("qdet-detections");
    test::write_bytes(dir + "/a.json", R"({"image": "a.jpg", "width": 8, "height": 8, "detections": [
        {"box": [2, 3, 2, 3], "score": 0, "label": -1}]})");
    ImageDetections read = read_image_detections(dir + "/a.json");
    REQUIRE(read.detections.size() == 1);
    CHECK(read.detections[0].box.x2 == 2.f);
    CHECK(read.detections[0].score == 0.f);
    CHECK(read.detections[0].label == -1);
}

TEST_CASE("read detection dir") {
    const std::string dir = test::make_temp_dir("qdet-detections");
    const CocoDataset dataset = two_image_dataset();

    // Files are named after the image's stem: street.json, road.v2.json.
    ImageDetections street{"street.jpg", 640, 480, random_detections(3, 1)};
    ImageDetections road{"road.v2.png", 320, 240, random_detections(2, 2)};
    write_image_detections(dir + "/street.json", street);
    write_image_detections(dir + "/road.v2.json", road);

    std::vector<std::vector<Detection>> detections = read_detection_dir(dir, dataset);
    REQUIRE(detections.size() == 2);
    REQUIRE(detections[0].size() == 3);
    REQUIRE(detections[1].size() == 2);
    CHECK(detections[0][2].score == street.detections[2].score);
    CHECK(detections[1][1].box.y2 == road.detections[1].box.y2);
}

TEST_CASE("read detection dir missing file") {
    const std::string dir = test::make_temp_dir("qdet-detections");
    write_image_detections(dir + "/street.json", ImageDetections{"street.jpg", 640, 480, {}});

    std::string message = error_message([&] { read_detection_dir(dir, two_image_dataset()); });
    CAPTURE(message);
    CHECK(message.find(dir + "/road.v2.json") != std::string::npos);
    CHECK(message.find("'road.v2.png' (id 4)") != std::string::npos);
    CHECK(message.find("is missing") != std::string::npos);
}

TEST_CASE("read detection dir wrong image name") {
    const std::string dir = test::make_temp_dir("qdet-detections");
    write_image_detections(dir + "/street.json", ImageDetections{"street.jpg", 640, 480, {}});
    write_image_detections(dir + "/road.v2.json", ImageDetections{"street.jpg", 640, 480, {}});

    std::string message = error_message([&] { read_detection_dir(dir, two_image_dataset()); });
    CAPTURE(message);
    CHECK(message.find(dir + "/road.v2.json: 'image' is 'street.jpg', expected 'road.v2.png'") !=
          std::string::npos);
}

TEST_CASE("write coco results") {
    const std::string dir = test::make_temp_dir("qdet-detections");
    const CocoDataset dataset = two_image_dataset();
    std::vector<std::vector<Detection>> detections = {
        {Detection{Box{10, 20, 40, 60}, 0.9f, 3}, Detection{Box{0.5f, 0.25f, 1.5f, 2.25f}, 0.125f, 8}},
        {},
    };
    // The second image's only detection: ids come from the dataset by position.
    detections[1].push_back(Detection{Box{100, 100, 101, 103}, 0.5f, 1});

    write_coco_results(dir + "/results.json", dataset, detections);
    nlohmann::json results = nlohmann::json::parse(test::read_bytes(dir + "/results.json"));
    REQUIRE(results.is_array());
    REQUIRE(results.size() == 3);

    CHECK(results[0]["image_id"] == 11);
    CHECK(results[0]["category_id"] == 3);
    CHECK(results[0]["bbox"] == nlohmann::json::array({10.0, 20.0, 30.0, 40.0}));
    CHECK(results[0]["score"].get<float>() == 0.9f);
    CHECK(results[1]["image_id"] == 11);
    CHECK(results[1]["category_id"] == 8);
    CHECK(results[1]["bbox"] == nlohmann::json::array({0.5, 0.25, 1.0, 2.0}));
    CHECK(results[2]["image_id"] == 4);
    CHECK(results[2]["bbox"] == nlohmann::json::array({100.0, 100.0, 1.0, 3.0}));
    CHECK(results[2]["score"] == 0.5);
}

TEST_CASE("write coco results rejects wrong image count") {
    const std::string dir = test::make_temp_dir("qdet-detections");
    std::vector<std::vector<Detection>> detections(1);
    std::string message =
        error_message([&] { write_coco_results(dir + "/results.json", two_image_dataset(), detections); });
    CAPTURE(message);
    CHECK(message.find("got detections for 1 images") != std::string::npos);
    CHECK(test::list_dir(dir).empty());
}

}  // TEST_SUITE
