#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "kernels/box_ops.h"
#include "tests/test_support.h"

namespace {

using qdet::Box;

const float kClip = static_cast<float>(std::log(1000.0 / 16.0));

// torchvision's BoxCoder.decode_single for one box, one float32 operation per
// statement in torchvision's order, with std::exp in place of torch.exp.
Box reference_decode(const Box &reference, const float deltas[4], const float weights[4]) {
    const float widths = reference.x2 - reference.x1;
    const float heights = reference.y2 - reference.y1;
    const float ctr_x = reference.x1 + 0.5f * widths;
    const float ctr_y = reference.y1 + 0.5f * heights;
    const float dx = deltas[0] / weights[0];
    const float dy = deltas[1] / weights[1];
    float dw = deltas[2] / weights[2];
    float dh = deltas[3] / weights[3];
    if (dw > kClip) dw = kClip;
    if (dh > kClip) dh = kClip;
    const float pred_ctr_x = dx * widths + ctr_x;
    const float pred_ctr_y = dy * heights + ctr_y;
    const float pred_w = std::exp(dw) * widths;
    const float pred_h = std::exp(dh) * heights;
    const float c_to_c_w = 0.5f * pred_w;
    const float c_to_c_h = 0.5f * pred_h;
    return {pred_ctr_x - c_to_c_w, pred_ctr_y - c_to_c_h, pred_ctr_x + c_to_c_w, pred_ctr_y + c_to_c_h};
}

qdet::BoxCoderParams coder_params(const float weights[4]) {
    return {{weights[0], weights[1], weights[2], weights[3]}, kClip};
}

// IoU in double from the definition: intersection over union.
double reference_iou(const Box &a, const Box &b) {
    const double w = std::max(0.0, static_cast<double>(std::min(a.x2, b.x2)) - std::max(a.x1, b.x1));
    const double h = std::max(0.0, static_cast<double>(std::min(a.y2, b.y2)) - std::max(a.y1, b.y1));
    const double inter = w * h;
    const double area_a = (static_cast<double>(a.x2) - a.x1) * (static_cast<double>(a.y2) - a.y1);
    const double area_b = (static_cast<double>(b.x2) - b.x1) * (static_cast<double>(b.y2) - b.y1);
    return inter / (area_a + area_b - inter);
}

}  // namespace

TEST_SUITE("unit") {

TEST_CASE("decode_box matches torchvision values") {
    // Produced with /usr/bin/python3, torch 1.13 and torchvision 0.14:
    // BoxCoder(weights, bbox_xform_clip=math.log(1000.0 / 16)).decode_single(
    // deltas, reference), printed with "%.9g". Rows 3 and 7 clamp dw.
    struct Case {
        float weights[4];
        Box reference;
        float deltas[4];
        Box expected;
    };
    const Case cases[] = {
        {{1.f, 1.f, 1.f, 1.f}, {0.f, 0.f, 16.f, 16.f}, {0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 16.f, 16.f}},
        {{1.f, 1.f, 1.f, 1.f}, {10.5f, 20.25f, 74.5f, 52.75f}, {0.300000012f, -0.699999988f, 0.25f, -1.5f},
         {20.611187f, 10.124135f, 102.788818f, 17.3758659f}},
        {{1.f, 1.f, 1.f, 1.f}, {-23.f, -11.f, 23.f, 11.f}, {-1.20000005f, 2.5f, 10.f, -10.f},
         {-1492.70007f, 54.9995003f, 1382.30017f, 55.0004997f}},
        {{1.f, 1.f, 1.f, 1.f}, {300.f, 100.f, 301.f, 400.f}, {0.0500000007f, 0.00999999978f, 4.19999981f, 5.f},
         {269.299988f, -9122.00098f, 331.799988f, 9628.00098f}},
        {{10.f, 10.f, 5.f, 5.f}, {0.f, 0.f, 16.f, 16.f}, {0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 16.f, 16.f}},
        {{10.f, 10.f, 5.f, 5.f}, {10.5f, 20.25f, 74.5f, 52.75f}, {0.300000012f, -0.699999988f, 0.25f, -1.5f},
         {10.7793236f, 22.1867027f, 78.0606689f, 46.2632942f}},
        {{10.f, 10.f, 5.f, 5.f}, {-23.f, -11.f, 23.f, 11.f}, {-1.20000005f, 2.5f, 10.f, -10.f},
         {-175.468292f, 4.01131201f, 164.428284f, 6.98868799f}},
        {{10.f, 10.f, 5.f, 5.f}, {300.f, 100.f, 301.f, 400.f}, {0.0500000007f, 0.00999999978f, 4.19999981f, 5.f},
         {299.346832f, -157.442245f, 301.663177f, 658.042236f}},
    };
    for (size_t i = 0; i < std::size(cases); ++i) {
        const Case &c = cases[i];
        CAPTURE(i);
        const Box got = qdet::decode_box(c.reference, c.deltas, coder_params(c.weights));
        // torch.exp (SLEEF) and glibc's expf may differ by one ulp. The
        // products and sums keep that within 2 ulp of the coordinate's
        // magnitude, so the bound is 4e-7 relative, at least 1e-6.
        auto near = [](float value, float expected) {
            return std::fabs(value - expected) <= 4e-7f * std::max(std::fabs(expected), 2.5f);
        };
        CHECK_MESSAGE(near(got.x1, c.expected.x1), got.x1, " vs ", c.expected.x1);
        CHECK_MESSAGE(near(got.y1, c.expected.y1), got.y1, " vs ", c.expected.y1);
        CHECK_MESSAGE(near(got.x2, c.expected.x2), got.x2, " vs ", c.expected.x2);
        CHECK_MESSAGE(near(got.y2, c.expected.y2), got.y2, " vs ", c.expected.y2);
    }
}

TEST_CASE("decode_box matches reference formula") {
    struct Case {
        const char *name;
        float weights[4];
        float delta_lo, delta_hi;
        uint32_t seed;
    };
    // Deltas up to 40 with weights 1 and up to 80 with ww = wh = 5 push
    // dw and dh past the clamp at log(1000 / 16) for part of the boxes.
    const Case cases[] = {
        {"rpn weights, small deltas", {1.f, 1.f, 1.f, 1.f}, -2.f, 2.f, 21},
        {"rpn weights, clamped deltas", {1.f, 1.f, 1.f, 1.f}, -8.f, 40.f, 22},
        {"box head weights, small deltas", {10.f, 10.f, 5.f, 5.f}, -2.f, 2.f, 23},
        {"box head weights, clamped deltas", {10.f, 10.f, 5.f, 5.f}, -20.f, 80.f, 24},
    };
    for (const Case &c : cases) {
        INFO("case: ", std::string(c.name));
        const size_t n = 500;
        const std::vector<float> corners = qdet::test::random_floats(n * 2, -50.f, 800.f, c.seed);
        const std::vector<float> sides = qdet::test::random_floats(n * 2, 0.f, 300.f, c.seed + 100);
        const std::vector<float> deltas = qdet::test::random_floats(n * 4, c.delta_lo, c.delta_hi, c.seed + 200);
        int mismatches = 0;
        int clamped = 0;
        for (size_t i = 0; i < n; ++i) {
            const Box reference{corners[2 * i], corners[2 * i + 1], corners[2 * i] + sides[2 * i],
                                corners[2 * i + 1] + sides[2 * i + 1]};
            const float *d = &deltas[4 * i];
            if (d[2] / c.weights[2] > kClip || d[3] / c.weights[3] > kClip) ++clamped;
            // Identical float operations in the same order: exact.
            const Box expected = reference_decode(reference, d, c.weights);
            const Box got = qdet::decode_box(reference, d, coder_params(c.weights));
            if (got.x1 != expected.x1 || got.y1 != expected.y1 || got.x2 != expected.x2 || got.y2 != expected.y2) {
                ++mismatches;
            }
        }
        CHECK(mismatches == 0);
        if (c.delta_hi > 2.f) CHECK(clamped > 0);
    }
}

TEST_CASE("decode_box clamps dw and dh") {
    // Beyond the clamp every dw gives the same width: exp(log(1000/16)) * w.
    const float weights[4] = {1.f, 1.f, 1.f, 1.f};
    const Box reference{0.f, 0.f, 10.f, 20.f};
    const float at_clip[4] = {0.f, 0.f, kClip, kClip};
    const float beyond[4] = {0.f, 0.f, 50.f, 1000.f};
    const Box a = qdet::decode_box(reference, at_clip, coder_params(weights));
    const Box b = qdet::decode_box(reference, beyond, coder_params(weights));
    CHECK(a.x1 == b.x1);
    CHECK(a.y1 == b.y1);
    CHECK(a.x2 == b.x2);
    CHECK(a.y2 == b.y2);
    // exp(log(62.5)) * 10 = 625 up to float rounding.
    CHECK(b.x2 - b.x1 == doctest::Approx(625.0).epsilon(1e-6));
    CHECK(b.y2 - b.y1 == doctest::Approx(1250.0).epsilon(1e-6));
}

TEST_CASE("clip_box clamps to image") {
    struct Case {
        const char *name;
        Box box;
        float height, width;
        Box expected;
    };
    const Case cases[] = {
        {"inside", {1.f, 2.f, 30.f, 40.f}, 50.f, 60.f, {1.f, 2.f, 30.f, 40.f}},
        {"negative corner", {-5.f, -0.5f, 30.f, 40.f}, 50.f, 60.f, {0.f, 0.f, 30.f, 40.f}},
        {"past far edges", {10.f, 20.f, 61.f, 50.5f}, 50.f, 60.f, {10.f, 20.f, 60.f, 50.f}},
        {"on the edges", {0.f, 0.f, 60.f, 50.f}, 50.f, 60.f, {0.f, 0.f, 60.f, 50.f}},
        {"entirely left and above", {-30.f, -20.f, -10.f, -1.f}, 50.f, 60.f, {0.f, 0.f, 0.f, 0.f}},
        {"entirely right and below", {70.f, 55.f, 90.f, 80.f}, 50.f, 60.f, {60.f, 50.f, 60.f, 50.f}},
        {"non-square image", {-1.f, -1.f, 700.f, 700.f}, 427.f, 640.f, {0.f, 0.f, 640.f, 427.f}},
    };
    for (const Case &c : cases) {
        INFO("case: ", std::string(c.name));
        const Box got = qdet::clip_box(c.box, c.height, c.width);
        CHECK(got.x1 == c.expected.x1);
        CHECK(got.y1 == c.expected.y1);
        CHECK(got.x2 == c.expected.x2);
        CHECK(got.y2 == c.expected.y2);
    }
}

TEST_CASE("box_is_large_enough compares both sides") {
    struct Case {
        const char *name;
        Box box;
        float min_size;
        bool expected;
    };
    const Case cases[] = {
        {"both sides larger", {0.f, 0.f, 5.f, 6.f}, 1.f, true},
        {"sides equal to the minimum", {1.f, 2.f, 4.f, 5.f}, 3.f, true},
        {"width just below", {0.f, 0.f, 2.999f, 5.f}, 3.f, false},
        {"height just below", {0.f, 0.f, 5.f, 2.999f}, 3.f, false},
        {"below rpn min size 1e-3", {10.f, 10.f, 10.0009f, 10.0009f}, 1e-3f, false},
        {"above rpn min size 1e-3", {10.f, 10.f, 10.0011f, 10.0011f}, 1e-3f, true},
        {"zero width", {4.f, 0.f, 4.f, 5.f}, 1e-3f, false},
        {"inverted box", {5.f, 5.f, 1.f, 9.f}, 0.f, false},
        {"zero min size, empty box", {3.f, 3.f, 3.f, 3.f}, 0.f, true},
    };
    for (const Case &c : cases) {
        INFO("case: ", std::string(c.name));
        const bool expected_by_definition =
            (c.box.x2 - c.box.x1) >= c.min_size && (c.box.y2 - c.box.y1) >= c.min_size;
        CHECK(expected_by_definition == c.expected);
        CHECK(qdet::box_is_large_enough(c.box, c.min_size) == c.expected);
    }
}

TEST_CASE("box_iou special cases") {
    struct Case {
        const char *name;
        Box a, b;
        double expected;
    };
    const Case cases[] = {
        {"disjoint", {0.f, 0.f, 10.f, 10.f}, {20.f, 20.f, 30.f, 30.f}, 0.0},
        {"disjoint in x only", {0.f, 0.f, 10.f, 10.f}, {11.f, 0.f, 20.f, 10.f}, 0.0},
        {"nested", {0.f, 0.f, 10.f, 10.f}, {2.f, 3.f, 7.f, 8.f}, 25.0 / 100.0},
        {"nested reversed", {2.f, 3.f, 7.f, 8.f}, {0.f, 0.f, 10.f, 10.f}, 25.0 / 100.0},
        {"identical", {1.5f, 2.5f, 9.25f, 7.f}, {1.5f, 2.5f, 9.25f, 7.f}, 1.0},
        {"touching edge", {0.f, 0.f, 10.f, 10.f}, {10.f, 0.f, 20.f, 10.f}, 0.0},
        {"touching corner", {0.f, 0.f, 10.f, 10.f}, {10.f, 10.f, 20.f, 20.f}, 0.0},
        {"half overlap", {0.f, 0.f, 10.f, 10.f}, {5.f, 0.f, 15.f, 10.f}, 50.0 / 150.0},
        {"zero-area box inside another", {2.f, 2.f, 2.f, 8.f}, {0.f, 0.f, 10.f, 10.f}, 0.0},
    };
    for (const Case &c : cases) {
        INFO("case: ", std::string(c.name));
        CHECK(reference_iou(c.a, c.b) == doctest::Approx(c.expected).epsilon(1e-12));
        // A few float roundings: 1e-6 relative.
        CHECK(qdet::box_iou(c.a, c.b) == doctest::Approx(c.expected).epsilon(1e-6));
    }
    // Two identical zero-area boxes give 0 / 0; torchvision's box_iou returns
    // NaN for them too (checked with torchvision 0.14), and NaN never exceeds
    // an NMS threshold.
    const Box empty{3.f, 3.f, 3.f, 9.f};
    CHECK(std::isnan(qdet::box_iou(empty, empty)));
}

TEST_CASE("box_iou random boxes") {
    const size_t n = 400;
    const std::vector<float> corners = qdet::test::random_floats(n * 2, 0.f, 100.f, 31);
    const std::vector<float> sides = qdet::test::random_floats(n * 2, 0.5f, 60.f, 32);
    std::vector<Box> boxes(n);
    for (size_t i = 0; i < n; ++i) {
        boxes[i] = {corners[2 * i], corners[2 * i + 1], corners[2 * i] + sides[2 * i],
                    corners[2 * i + 1] + sides[2 * i + 1]};
    }
    int mismatches = 0;
    int overlapping = 0;
    for (size_t i = 0; i + 1 < n; i += 2) {
        const double expected = reference_iou(boxes[i], boxes[i + 1]);
        const double got = qdet::box_iou(boxes[i], boxes[i + 1]);
        if (expected > 0) ++overlapping;
        // The kernel rounds six float operations, and the subtraction
        // union - inter can lose bits for thin overlaps. Its IoU stays within
        // 1e-5 of the double value, an absolute bound because IoU is in [0, 1].
        if (std::fabs(got - expected) > 1e-5) ++mismatches;
    }
    CHECK(mismatches == 0);
    CHECK(overlapping > 20);
}

}  // TEST_SUITE("unit")
