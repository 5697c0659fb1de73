#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "engine/error.h"
#include "eval/coco.h"
#include "tests/test_support.h"

using namespace qdet;

namespace {

// Writes `text` as <temporary dir>/annotations.json and returns its path.
std::string write_annotations(const std::string &text) {
    std::string path = test::make_temp_dir("qdet-coco") + "/annotations.json";
    test::write_bytes(path, text);
    return path;
}

const char *kValidAnnotations = R"({
  "images": [
    {"id": 7, "file_name": "images/eval_0007.jpg", "width": 640, "height": 480},
    {"id": 2, "file_name": "eval_0002.jpg", "width": 320, "height": 240},
    {"id": 9, "file_name": "eval_0009.jpg"}
  ],
  "annotations": [
    {"id": 1, "image_id": 2, "category_id": 3, "bbox": [10, 20, 30, 40], "area": 900.5, "iscrowd": 0},
    {"id": 2, "image_id": 7, "category_id": 8, "bbox": [1.5, 2.5, 0, 4], "iscrowd": 1},
    {"id": 3, "image_id": 2, "category_id": 3, "bbox": [-5, 0, 10, 10]},
    {"id": 4, "image_id": 7, "category_id": 3, "bbox": [0, 0, 2, 2], "iscrowd": true}
  ],
  "categories": [{"id": 3, "name": "car"}, {"id": 8, "name": "truck"}]
})";

struct MalformedCase {
    std::string name;
    std::string text;
    std::vector<std::string> expected;  // fragments the message must contain
};

}  // namespace

TEST_SUITE("unit") {

TEST_CASE("load_coco valid file") {
    const std::string path = write_annotations(kValidAnnotations);
    CocoDataset dataset = load_coco(path);

    CHECK(dataset.path == path);
    REQUIRE(dataset.images.size() == 3);
    // File order, not id order.
    CHECK(dataset.images[0].id == 7);
    CHECK(dataset.images[0].file_name == "images/eval_0007.jpg");
    CHECK(dataset.images[0].width == 640);
    CHECK(dataset.images[0].height == 480);
    CHECK(dataset.images[1].id == 2);
    CHECK(dataset.images[2].width == 0);  // width and height are optional
    CHECK(dataset.images[2].boxes.empty());

    REQUIRE(dataset.categories.size() == 2);
    CHECK(dataset.categories.at(3) == "car");
    CHECK(dataset.categories.at(8) == "truck");

    // Image 2: annotations 1 and 3 in file order, [x, y, w, h] -> corners.
    const std::vector<GroundTruthBox> &two = dataset.images[1].boxes;
    REQUIRE(two.size() == 2);
    CHECK(two[0].box.x1 == 10.f);
    CHECK(two[0].box.y1 == 20.f);
    CHECK(two[0].box.x2 == 40.f);
    CHECK(two[0].box.y2 == 60.f);
    CHECK(two[0].category_id == 3);
    CHECK_FALSE(two[0].iscrowd);
    CHECK(two[0].area == 900.5f);  // the file's area, not w * h
    CHECK(two[1].box.x1 == -5.f);
    CHECK(two[1].box.x2 == 5.f);
    CHECK_FALSE(two[1].iscrowd);   // iscrowd defaults to 0
    CHECK(two[1].area == 100.f);   // area defaults to w * h

    const std::vector<GroundTruthBox> &seven = dataset.images[0].boxes;
    REQUIRE(seven.size() == 2);
    CHECK(seven[0].category_id == 8);
    CHECK(seven[0].iscrowd);
    CHECK(seven[0].box.x1 == 1.5f);
    CHECK(seven[0].box.x2 == 1.5f);  // zero width is allowed
    CHECK(seven[0].area == 0.f);
    CHECK(seven[1].iscrowd);         // true is accepted for 1
}

TEST_CASE("load_coco without categories") {
    const std::string path = write_annotations(R"({"images": [{"id": 1, "file_name": "a.jpg"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 42, "bbox": [0, 0, 1, 1]}]})");
    CocoDataset dataset = load_coco(path);
    CHECK(dataset.categories.empty());
    REQUIRE(dataset.images.size() == 1);
    REQUIRE(dataset.images[0].boxes.size() == 1);
    CHECK(dataset.images[0].boxes[0].category_id == 42);
}

TEST_CASE("load_coco empty sections") {
    CocoDataset dataset = load_coco(write_annotations(R"({"images": [], "annotations": []})"));
    CHECK(dataset.images.empty());
    CHECK(dataset.categories.empty());
}

TEST_CASE("CocoDataset find by file name and id") {
    CocoDataset dataset = load_coco(write_annotations(kValidAnnotations));

    struct Lookup {
        std::string file_name;
        int expected_id;  // 0: not found
    };
    const Lookup lookups[] = {
        {"eval_0007.jpg", 7},                 // the dataset's name has a directory
        {"/data/other/eval_0007.jpg", 7},     // the query has another one
        {"eval_0002.jpg", 2},
        {"x/eval_0002.jpg", 2},
        {"eval_0002.png", 0},
        {"eval_000.jpg", 0},
        {"", 0},
    };
    for (const Lookup &lookup : lookups) {
        CAPTURE(lookup.file_name);
        const CocoImage *found = dataset.find_by_file_name(lookup.file_name);
        if (lookup.expected_id == 0) {
            CHECK(found == nullptr);
        } else {
            REQUIRE(found != nullptr);
            CHECK(found->id == lookup.expected_id);
        }
    }

    REQUIRE(dataset.find_by_id(9) != nullptr);
    CHECK(dataset.find_by_id(9)->file_name == "eval_0009.jpg");
    CHECK(dataset.find_by_id(2) == &dataset.images[1]);
    CHECK(dataset.find_by_id(3) == nullptr);
}

TEST_CASE("load_coco rejects malformed files") {
    const std::vector<MalformedCase> cases = {
        {"not JSON", R"({"images": [)", {"not valid JSON"}},
        {"empty file", "", {"not valid JSON"}},
        {"top level array", "[]", {"top level is a JSON array", "expected an object"}},
        {"images missing", R"({"annotations": []})", {"'images' is missing"}},
        {"annotations missing", R"({"images": []})", {"'annotations' is missing"}},
        {"images not an array", R"({"images": {}, "annotations": []})",
         {"'images' is a JSON object, expected an array"}},
        {"categories not an array", R"({"images": [], "annotations": [], "categories": 3})",
         {"'categories' is a JSON number, expected an array"}},
        {"image not an object", R"({"images": [3], "annotations": []})",
         {"image at index 0 is a JSON number, expected an object"}},
        {"image without id", R"({"images": [{"file_name": "a.jpg"}], "annotations": []})",
         {"image at index 0 has no 'id'"}},
        {"image id is a string", R"({"images": [{"id": "1", "file_name": "a.jpg"}], "annotations": []})",
         {"image at index 0 has 'id' \"1\"", "expected an integer"}},
        {"image id is fractional", R"({"images": [{"id": 1.5, "file_name": "a.jpg"}], "annotations": []})",
         {"'id' 1.5", "expected an integer"}},
        {"image id too large", R"({"images": [{"id": 4294967296, "file_name": "a.jpg"}], "annotations": []})",
         {"'id' 4294967296", "fits in 32 bits"}},
        {"image without file name", R"({"images": [{"id": 4}], "annotations": []})",
         {"image 4 (index 0) has no 'file_name'"}},
        {"image with negative width",
         R"({"images": [{"id": 4, "file_name": "a.jpg", "width": -1, "height": 5}], "annotations": []})",
         {"image 4 (index 0) has size -1 x 5"}},
        {"duplicate image ids",
         R"({"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"},
                        {"id": 1, "file_name": "c.jpg"}], "annotations": []})",
         {"image at index 2 repeats image id 1 of the image at index 0"}},
        {"annotation of unknown image",
         R"({"images": [{"id": 1, "file_name": "a.jpg"}],
             "annotations": [{"id": 5, "image_id": 999, "category_id": 3, "bbox": [0, 0, 1, 1]}]})",
         {"annotation 5 (index 0) refers to image_id 999, which is not in 'images'"}},
        {"negative width",
         R"({"images": [{"id": 1, "file_name": "a.jpg"}],
             "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1]},
                             {"id": 17, "image_id": 1, "category_id": 3, "bbox": [1, 2, -3, 4]}]})",
         {"annotation 17 (index 1) has bbox [1,2,-3,4] with a negative width"}},
        {"negative height",
         R"({"images": [{"id": 1, "file_name": "a.jpg"}],
             "annotations": [{"id": 17, "image_id": 1, "category_id": 3, "bbox": [1, 2, 3, -0.5]}]})",
         {"annotation 17 (index 0) has bbox [1,2,3,-0.5] with a negative height"}},
        {"bbox of 3 numbers",
         R"({"images": [{"id": 1, "file_name": "a.jpg"}],
             "annotations": [{"id": 8, "image_id": 1, "category_id": 3, "bbox": [1, 2, 3]}]})",
         {"annotation 8 (index 0) has bbox [1,2,3], expected 4 numbers"}},
        {"bbox with a string",
         R"({"images": [{"id": 1, "file_name": "a.jpg"}],
             "annotations": [{"id": 8, "image_id": 1, "category_id": 3, "bbox": [1, 2, "3", 4]}]})",
         {"annotation 8 (index 0) has bbox [1,2,\"3\",4], expected 4 numbers"}},
        {"bbox too large for float",
         R"({"images": [{"id": 1, "file_name": "a.jpg"}],
             "annotations": [{"id": 8, "image_id": 1, "category_id": 3, "bbox": [1e39, 2, 3, 4]}]})",
         {"annotation 8 (index 0) has bbox", "does not fit in a float"}},
        {"bbox missing",
         R"({"images": [{"id": 1, "file_name": "a.jpg"}],
             "annotations": [{"id": 8, "image_id": 1, "category_id": 3}]})",
         {"annotation 8 (index 0) has no 'bbox'"}},
        {"annotation without id names its index",
         R"({"images": [{"id": 1, "file_name": "a.jpg"}],
             "annotations": [{"image_id": 1, "category_id": 3}]})",
         {"annotation at index 0 has no 'bbox'"}},
        {"annotation not an object",
         R"({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [[0, 0, 1, 1]]})",
         {"annotation at index 0 is a JSON array, expected an object"}},
        {"category_id missing",
         R"({"images": [{"id": 1, "file_name": "a.jpg"}],
             "annotations": [{"id": 8, "image_id": 1, "bbox": [0, 0, 1, 1]}]})",
         {"annotation 8 (index 0) has no 'category_id'"}},
        {"unknown category",
         R"({"images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 3, "name": "car"}],
             "annotations": [{"id": 8, "image_id": 1, "category_id": 99, "bbox": [0, 0, 1, 1]}]})",
         {"annotation 8 (index 0) refers to category_id 99, which is not in 'categories'"}},
        {"duplicate category ids",
         R"({"images": [], "annotations": [],
             "categories": [{"id": 3, "name": "car"}, {"id": 3, "name": "auto"}]})",
         {"category at index 1 repeats category id 3"}},
        {"category without name", R"({"images": [], "annotations": [], "categories": [{"id": 3}]})",
         {"category at index 0 has no 'name'"}},
        {"iscrowd of 2",
         R"({"images": [{"id": 1, "file_name": "a.jpg"}],
             "annotations": [{"id": 8, "image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "iscrowd": 2}]})",
         {"annotation 8 (index 0) has 'iscrowd' 2, expected 0 or 1"}},
        {"negative area",
         R"({"images": [{"id": 1, "file_name": "a.jpg"}],
             "annotations": [{"id": 8, "image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "area": -2}]})",
         {"annotation 8 (index 0) has 'area' -2, expected a non-negative number"}},
        {"area as a string",
         R"({"images": [{"id": 1, "file_name": "a.jpg"}],
             "annotations": [{"id": 8, "image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "area": "1"}]})",
         {"annotation 8 (index 0) has 'area' \"1\""}},
    };

    for (const MalformedCase &test : cases) {
        CAPTURE(test.name);
        CAPTURE(test.text);
        const std::string path = write_annotations(test.text);
        try {
            load_coco(path);
            FAIL("load_coco accepted the file");
        } catch (const Error &e) {
            const std::string message = e.what();
            CAPTURE(message);
            CHECK(e.kind() == ErrorKind::input);
            CHECK(message.rfind(path + ": ", 0) == 0);  // starts with the file name
            for (const std::string &fragment : test.expected) {
                CAPTURE(fragment);
                CHECK(message.find(fragment) != std::string::npos);
            }
        }
    }
}

TEST_CASE("load_coco missing file") {
    const std::string path = test::make_temp_dir("qdet-coco") + "/absent.json";
    try {
        load_coco(path);
        FAIL("load_coco accepted a missing file");
    } catch (const Error &e) {
        CAPTURE(e.what());
        CHECK(e.kind() == ErrorKind::input);
        CHECK(std::string(e.what()).find(path) != std::string::npos);
    }
}

}  // TEST_SUITE
