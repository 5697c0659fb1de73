#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/nms.h"
#include "tests/test_support.h"

namespace {

using qdet::Box;

// The IoU that torchvision's CPU NMS kernel evaluates: float operations,
// compared against the threshold as a double.
float kernel_style_iou(const Box &a, const Box &b) {
    const float area_a = (a.x2 - a.x1) * (a.y2 - a.y1);
    const float area_b = (b.x2 - b.x1) * (b.y2 - b.y1);
    const float w = std::max(0.f, std::min(a.x2, b.x2) - std::max(a.x1, b.x1));
    const float h = std::max(0.f, std::min(a.y2, b.y2) - std::max(a.y1, b.y1));
    const float inter = w * h;
    return inter / (area_a + area_b - inter);
}

// Indices of `indices` by descending score, ties by ascending index.
std::vector<int32_t> by_descending_score(std::vector<int32_t> indices, const std::vector<float> &scores) {
    std::sort(indices.begin(), indices.end(), [&](int32_t a, int32_t b) {
        if (scores[a] != scores[b]) return scores[a] > scores[b];
        return a < b;
    });
    return indices;
}

// Brute-force NMS over the boxes listed in `candidates`: a box is kept when
// no box kept before it overlaps it by more than the threshold.
std::vector<int32_t> reference_nms(const std::vector<Box> &boxes, const std::vector<float> &scores,
                                   const std::vector<int32_t> &candidates, double threshold) {
    std::vector<int32_t> keep;
    for (int32_t i : by_descending_score(candidates, scores)) {
        bool suppressed = false;
        for (int32_t k : keep) {
            if (static_cast<double>(kernel_style_iou(boxes[k], boxes[i])) > threshold) {
                suppressed = true;
                break;
            }
        }
        if (!suppressed) keep.push_back(i);
    }
    return keep;
}

std::vector<int32_t> all_indices(size_t n) {
    std::vector<int32_t> indices(n);
    std::iota(indices.begin(), indices.end(), 0);
    return indices;
}

// NMS per group, kept boxes merged by descending score (ties by index).
std::vector<int32_t> reference_batched_nms(const std::vector<Box> &boxes, const std::vector<float> &scores,
                                           const std::vector<int32_t> &groups, double threshold) {
    std::map<int32_t, std::vector<int32_t>> members;
    for (size_t i = 0; i < boxes.size(); ++i) members[groups[i]].push_back(static_cast<int32_t>(i));
    std::vector<int32_t> keep;
    for (const auto &entry : members) {
        const std::vector<int32_t> group_keep = reference_nms(boxes, scores, entry.second, threshold);
        keep.insert(keep.end(), group_keep.begin(), group_keep.end());
    }
    return by_descending_score(keep, scores);
}

struct RandomBoxes {
    std::vector<Box> boxes;
    std::vector<float> scores;
    std::vector<int32_t> groups;
};

// Boxes in a `extent` square. With `integer_coordinates` every coordinate is
// a whole number, so shifting boxes by whole offsets is exact in float.
// `score_levels` > 0 rounds scores to that many levels to create ties.
RandomBoxes make_random_boxes(size_t n, float extent, bool integer_coordinates, int score_levels, int group_count,
                              uint32_t seed) {
    RandomBoxes r;
    const std::vector<float> corners = qdet::test::random_floats(n * 2, 0.f, extent, seed);
    const std::vector<float> sides = qdet::test::random_floats(n * 2, 2.f, extent / 4.f, seed + 1);
    r.scores = qdet::test::random_floats(n, 0.f, 1.f, seed + 2);
    std::mt19937 generator(seed + 3);
    std::uniform_int_distribution<int32_t> group_of(0, std::max(group_count - 1, 0));
    for (size_t i = 0; i < n; ++i) {
        float x1 = corners[2 * i], y1 = corners[2 * i + 1];
        float w = sides[2 * i], h = sides[2 * i + 1];
        if (integer_coordinates) {
            x1 = std::floor(x1);
            y1 = std::floor(y1);
            w = std::floor(w);
            h = std::floor(h);
        }
        r.boxes.push_back({x1, y1, x1 + w, y1 + h});
        if (score_levels > 0) r.scores[i] = std::floor(r.scores[i] * score_levels) / score_levels;
        r.groups.push_back(group_of(generator));
    }
    return r;
}

}  // namespace

TEST_SUITE("unit") {

TEST_CASE("nms matches brute force") {
    struct Case {
        const char *name;
        size_t count;
        double threshold;
        int score_levels;  // 0: continuous scores
        uint32_t seed;
    };
    const Case cases[] = {
        {"threshold 0.7", 300, 0.7, 0, 41},
        {"threshold 0.5", 300, 0.5, 0, 42},
        {"threshold 0.3", 300, 0.3, 0, 43},
        {"threshold 0 drops any overlap", 200, 0.0, 0, 44},
        {"threshold 1 keeps all", 200, 1.0, 0, 45},
        {"score ties, threshold 0.5", 300, 0.5, 4, 46},
        {"all scores tied, threshold 0.3", 300, 0.3, 1, 47},
    };
    for (const Case &c : cases) {
        INFO("case: ", std::string(c.name));
        CAPTURE(c.count);
        CAPTURE(c.threshold);
        const RandomBoxes r = make_random_boxes(c.count, 200.f, false, c.score_levels, 1, c.seed);
        const std::vector<int32_t> expected = reference_nms(r.boxes, r.scores, all_indices(c.count), c.threshold);
        const std::vector<int32_t> got = qdet::nms(r.boxes, r.scores, c.threshold);
        CHECK(got == expected);
        // The case must suppress something, except at threshold 1.
        if (c.threshold < 1.0) CHECK(expected.size() < c.count);
        if (c.threshold >= 1.0) CHECK(expected.size() == c.count);
    }
}

TEST_CASE("nms empty and single box") {
    CHECK(qdet::nms({}, {}, 0.5).empty());
    const std::vector<int32_t> single = qdet::nms({{1.f, 2.f, 3.f, 4.f}}, {0.25f}, 0.5);
    CHECK(single == std::vector<int32_t>{0});
}

TEST_CASE("nms all identical boxes") {
    const std::vector<Box> boxes(6, Box{10.f, 10.f, 50.f, 40.f});
    SUBCASE("distinct scores keep the best") {
        const std::vector<float> scores = {0.1f, 0.7f, 0.3f, 0.9f, 0.2f, 0.5f};
        CHECK(qdet::nms(boxes, scores, 0.5) == std::vector<int32_t>{3});
        CHECK(qdet::nms(boxes, scores, 0.99) == std::vector<int32_t>{3});
    }
    SUBCASE("equal scores keep the first index") {
        const std::vector<float> scores(6, 0.4f);
        CHECK(qdet::nms(boxes, scores, 0.5) == std::vector<int32_t>{0});
    }
    SUBCASE("threshold 1 keeps every box in score order") {
        const std::vector<float> scores = {0.1f, 0.7f, 0.3f, 0.7f, 0.2f, 0.5f};
        // IoU 1 does not exceed 1; the tie at 0.7 keeps index order.
        CHECK(qdet::nms(boxes, scores, 1.0) == std::vector<int32_t>{1, 3, 5, 2, 4, 0});
    }
}

TEST_CASE("batched_nms matches per-group reference") {
    struct Case {
        const char *name;
        size_t count;  // at most 1000 shifts groups apart, more runs NMS per group
        int groups;
        double threshold;
        int score_levels;
        uint32_t seed;
    };
    const Case cases[] = {
        {"offset strategy, 3 groups", 600, 3, 0.5, 0, 51},
        {"offset strategy, 90 groups", 1000, 90, 0.5, 0, 52},
        {"offset strategy, score ties", 800, 4, 0.7, 5, 53},
        {"per-group strategy, 3 groups", 1001, 3, 0.5, 0, 54},
        {"per-group strategy, 90 groups", 2500, 90, 0.5, 0, 55},
        {"per-group strategy, score ties", 1500, 4, 0.7, 5, 56},
        {"one group", 700, 1, 0.3, 0, 57},
    };
    for (const Case &c : cases) {
        INFO("case: ", std::string(c.name));
        CAPTURE(c.count);
        CAPTURE(c.groups);
        CAPTURE(c.threshold);
        // Whole-number coordinates keep the offset strategy's shifted boxes
        // exact, so both strategies see the same IoUs as the reference.
        const RandomBoxes r = make_random_boxes(c.count, 300.f, true, c.score_levels, c.groups, c.seed);
        const std::vector<int32_t> expected = reference_batched_nms(r.boxes, r.scores, r.groups, c.threshold);
        const std::vector<int32_t> got = qdet::batched_nms(r.boxes, r.scores, r.groups, c.threshold);
        CHECK(got == expected);
        CHECK(expected.size() < c.count);
    }
}

TEST_CASE("batched_nms groups never suppress each other") {
    // Every box is the same, so within a group only the best survives, and
    // each group keeps one box regardless of the others.
    for (size_t count : {size_t{12}, size_t{1200}}) {
        CAPTURE(count);
        const int group_count = 6;
        std::vector<Box> boxes(count, Box{5.f, 5.f, 105.f, 85.f});
        std::vector<float> scores(count);
        std::vector<int32_t> groups(count);
        for (size_t i = 0; i < count; ++i) {
            scores[i] = static_cast<float>((i * 7919) % count) / static_cast<float>(count);
            groups[i] = static_cast<int32_t>(i % group_count);
        }
        const std::vector<int32_t> got = qdet::batched_nms(boxes, scores, groups, 0.5);
        const std::vector<int32_t> expected = reference_batched_nms(boxes, scores, groups, 0.5);
        CHECK(got.size() == static_cast<size_t>(group_count));
        CHECK(got == expected);
        std::vector<int32_t> seen_groups;
        for (int32_t i : got) seen_groups.push_back(groups[i]);
        std::sort(seen_groups.begin(), seen_groups.end());
        CHECK(seen_groups == std::vector<int32_t>{0, 1, 2, 3, 4, 5});
    }
}

TEST_CASE("batched_nms empty input") {
    CHECK(qdet::batched_nms({}, {}, {}, 0.5).empty());
}

}  // TEST_SUITE("unit")
