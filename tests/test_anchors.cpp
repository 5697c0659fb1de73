#include <doctest/doctest.h>

#include <cstddef>
#include <string>
#include <vector>

#include "kernels/anchors.h"

namespace {

using qdet::Box;

// Checks every coordinate; on a mismatch reports the first differing box.
void check_boxes_equal(const std::vector<Box> &got, const std::vector<Box> &expected) {
    REQUIRE(got.size() == expected.size());
    if (got.empty()) return;
    size_t mismatches = 0;
    size_t first = 0;
    for (size_t i = 0; i < got.size(); ++i) {
        const bool same = got[i].x1 == expected[i].x1 && got[i].y1 == expected[i].y1 &&
                          got[i].x2 == expected[i].x2 && got[i].y2 == expected[i].y2;
        if (!same && mismatches++ == 0) first = i;
    }
    INFO("first mismatch at box ", first, ": got {", got[first].x1, ", ", got[first].y1, ", ", got[first].x2, ", ",
         got[first].y2, "}, expected {", expected[first].x1, ", ", expected[first].y1, ", ", expected[first].x2,
         ", ", expected[first].y2, "}");
    CHECK(mismatches == 0);
}

// Anchors of a grid from the definition: for each row, each column, each cell
// anchor, the cell anchor shifted by (column * stride_width, row * stride_height).
std::vector<Box> reference_grid(const std::vector<Box> &cell, int rows, int columns, int stride_height,
                                int stride_width) {
    std::vector<Box> out;
    for (int y = 0; y < rows; ++y) {
        for (int x = 0; x < columns; ++x) {
            const float dx = static_cast<float>(x) * static_cast<float>(stride_width);
            const float dy = static_cast<float>(y) * static_cast<float>(stride_height);
            for (const Box &a : cell) out.push_back({a.x1 + dx, a.y1 + dy, a.x2 + dx, a.y2 + dy});
        }
    }
    return out;
}

}  // namespace

TEST_SUITE("unit") {

TEST_CASE("cell_anchors match torchvision") {
    // Produced with /usr/bin/python3, torchvision 0.14:
    // AnchorGenerator(((32, 64, 128, 256, 512),), ((0.5, 1.0, 2.0),))
    //     .generate_anchors([32, 64, 128, 256, 512], [0.5, 1.0, 2.0])
    const std::vector<Box> expected = {
        {-23.0f, -11.0f, 23.0f, 11.0f},       {-45.0f, -23.0f, 45.0f, 23.0f},
        {-91.0f, -45.0f, 91.0f, 45.0f},       {-181.0f, -91.0f, 181.0f, 91.0f},
        {-362.0f, -181.0f, 362.0f, 181.0f},   {-16.0f, -16.0f, 16.0f, 16.0f},
        {-32.0f, -32.0f, 32.0f, 32.0f},       {-64.0f, -64.0f, 64.0f, 64.0f},
        {-128.0f, -128.0f, 128.0f, 128.0f},   {-256.0f, -256.0f, 256.0f, 256.0f},
        {-11.0f, -23.0f, 11.0f, 23.0f},       {-23.0f, -45.0f, 23.0f, 45.0f},
        {-45.0f, -91.0f, 45.0f, 91.0f},       {-91.0f, -181.0f, 91.0f, 181.0f},
        {-181.0f, -362.0f, 181.0f, 362.0f},
    };
    check_boxes_equal(qdet::cell_anchors({32, 64, 128, 256, 512}, {0.5, 1.0, 2.0}), expected);
}

TEST_CASE("cell_anchors round halves to even") {
    // Half extents 1.5, 2.5, 3.5, 4.5 (ratio 1) and 0.75 .. 2.25 (ratio 4).
    // Produced with /usr/bin/python3, torchvision 0.14:
    // AnchorGenerator(((3, 5, 7, 9),), ((1.0, 4.0),)).generate_anchors([3, 5, 7, 9], [1.0, 4.0])
    const std::vector<Box> expected = {
        {-2.0f, -2.0f, 2.0f, 2.0f}, {-2.0f, -2.0f, 2.0f, 2.0f}, {-4.0f, -4.0f, 4.0f, 4.0f},
        {-4.0f, -4.0f, 4.0f, 4.0f}, {-1.0f, -3.0f, 1.0f, 3.0f}, {-1.0f, -5.0f, 1.0f, 5.0f},
        {-2.0f, -7.0f, 2.0f, 7.0f}, {-2.0f, -9.0f, 2.0f, 9.0f},
    };
    check_boxes_equal(qdet::cell_anchors({3, 5, 7, 9}, {1.0, 4.0}), expected);
}

TEST_CASE("grid_anchors match torchvision") {
    // Produced with /usr/bin/python3, torchvision 0.14: an AnchorGenerator
    // with cell anchors generate_anchors([32], [0.5, 2.0]), then
    // grid_anchors([[2, 3]], [[tensor(32), tensor(61)]]): 2 rows, 3 columns,
    // stride 32 down and 61 across.
    const std::vector<Box> expected = {
        {-23.0f, -11.0f, 23.0f, 11.0f}, {-11.0f, -23.0f, 11.0f, 23.0f}, {38.0f, -11.0f, 84.0f, 11.0f},
        {50.0f, -23.0f, 72.0f, 23.0f},  {99.0f, -11.0f, 145.0f, 11.0f}, {111.0f, -23.0f, 133.0f, 23.0f},
        {-23.0f, 21.0f, 23.0f, 43.0f},  {-11.0f, 9.0f, 11.0f, 55.0f},   {38.0f, 21.0f, 84.0f, 43.0f},
        {50.0f, 9.0f, 72.0f, 55.0f},    {99.0f, 21.0f, 145.0f, 43.0f},  {111.0f, 9.0f, 133.0f, 55.0f},
    };
    const std::vector<Box> cell = {{-23.0f, -11.0f, 23.0f, 11.0f}, {-11.0f, -23.0f, 11.0f, 23.0f}};
    std::vector<Box> got;
    qdet::grid_anchors(cell, 2, 3, 32, 61, &got);
    check_boxes_equal(got, expected);
}

TEST_CASE("grid_anchors order and strides") {
    struct Case {
        const char *name;
        int rows, columns;
        int stride_height, stride_width;
    };
    const Case cases[] = {
        {"square stride 16", 5, 7, 16, 16},
        {"square stride 32", 20, 20, 32, 32},
        {"stride 32 x 61", 4, 6, 32, 61},
        {"stride 61 x 32", 6, 4, 61, 32},
        {"one location", 1, 1, 32, 32},
        {"one row", 1, 9, 8, 8},
        {"one column", 9, 1, 8, 8},
    };
    const std::vector<Box> cell = qdet::cell_anchors({32, 64, 128, 256, 512}, {0.5, 1.0, 2.0});
    for (const Case &c : cases) {
        INFO("case: ", std::string(c.name));
        std::vector<Box> got;
        qdet::grid_anchors(cell, c.rows, c.columns, c.stride_height, c.stride_width, &got);
        check_boxes_equal(got, reference_grid(cell, c.rows, c.columns, c.stride_height, c.stride_width));
    }
}

TEST_CASE("grid_anchors append to output") {
    const std::vector<Box> cell = {{-2.f, -3.f, 2.f, 3.f}};
    std::vector<Box> got = {{1.f, 2.f, 3.f, 4.f}};
    qdet::grid_anchors(cell, 2, 2, 10, 20, &got);
    const std::vector<Box> expected = {
        {1.f, 2.f, 3.f, 4.f},       {-2.f, -3.f, 2.f, 3.f},  {18.f, -3.f, 22.f, 3.f},
        {-2.f, 7.f, 2.f, 13.f},     {18.f, 7.f, 22.f, 13.f},
    };
    check_boxes_equal(got, expected);
}

}  // TEST_SUITE("unit")
