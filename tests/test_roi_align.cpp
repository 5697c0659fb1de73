#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "kernels/roi_align.h"
#include "tests/test_support.h"

namespace {

using qdet::Box;

enum class Layout { nhwc, blocked16 };

const char *layout_name(Layout layout) { return layout == Layout::nhwc ? "nhwc" : "nChw16c"; }

// A C x H x W map stored in a qdet layout. Padding channels of the blocked
// layout hold NaN, so any read of them shows up in the output.
template <typename T>
struct StoredMap {
    std::vector<T> data;
    qdet::FeatureView<const T> view;
};

template <typename T>
StoredMap<T> store(const std::vector<T> &nchw, int channels, int height, int width, Layout layout, T padding) {
    StoredMap<T> map;
    qdet::FeatureView<const T> shape = layout == Layout::nhwc
                                           ? qdet::nhwc_view<const T>(nullptr, channels, height, width)
                                           : qdet::blocked16_view<const T>(nullptr, channels, height, width);
    map.data.assign(static_cast<size_t>(shape.padded_channels) * height * width, padding);
    for (int c = 0; c < channels; ++c) {
        for (int y = 0; y < height; ++y) {
            for (int x = 0; x < width; ++x) {
                map.data[shape.offset(c, y, x)] = nchw[(static_cast<size_t>(c) * height + y) * width + x];
            }
        }
    }
    shape.data = map.data.data();
    map.view = shape;
    return map;
}

// torchvision's bilinear_interpolate (roi_align_kernel.cpp) for one sample
// of one channel plane.
float reference_bilinear(const float *plane, int height, int width, float y, float x) {
    if (y < -1.0 || y > height || x < -1.0 || x > width) return 0.f;
    if (y <= 0) y = 0;
    if (x <= 0) x = 0;
    int y_low = static_cast<int>(y);
    int x_low = static_cast<int>(x);
    int y_high;
    int x_high;
    if (y_low >= height - 1) {
        y_high = y_low = height - 1;
        y = static_cast<float>(y_low);
    } else {
        y_high = y_low + 1;
    }
    if (x_low >= width - 1) {
        x_high = x_low = width - 1;
        x = static_cast<float>(x_low);
    } else {
        x_high = x_low + 1;
    }
    const float ly = y - static_cast<float>(y_low);
    const float lx = x - static_cast<float>(x_low);
    const float hy = 1.f - ly;
    const float hx = 1.f - lx;
    const float v1 = plane[y_low * width + x_low];
    const float v2 = plane[y_low * width + x_high];
    const float v3 = plane[y_high * width + x_low];
    const float v4 = plane[y_high * width + x_high];
    const float w1 = hy * hx, w2 = hy * lx, w3 = ly * hx, w4 = ly * lx;
    return w1 * v1 + w2 * v2 + w3 * v3 + w4 * v4;
}

// torchvision.ops.roi_align forward with aligned=False and a fixed sampling
// ratio, from an NCHW map; the output is rois x pooled_h x pooled_w x C.
std::vector<float> reference_roi_align(const std::vector<float> &nchw, int channels, int height, int width,
                                       const std::vector<Box> &rois, const qdet::RoiAlignParams &p) {
    const int grid = p.sampling_ratio;
    const float count = static_cast<float>(std::max(grid * grid, 1));
    std::vector<float> out(rois.size() * p.pooled_height * p.pooled_width * channels);
    for (size_t r = 0; r < rois.size(); ++r) {
        const float start_w = rois[r].x1 * p.spatial_scale;
        const float start_h = rois[r].y1 * p.spatial_scale;
        const float end_w = rois[r].x2 * p.spatial_scale;
        const float end_h = rois[r].y2 * p.spatial_scale;
        const float roi_width = std::max(end_w - start_w, 1.f);
        const float roi_height = std::max(end_h - start_h, 1.f);
        const float bin_h = roi_height / static_cast<float>(p.pooled_height);
        const float bin_w = roi_width / static_cast<float>(p.pooled_width);
        for (int c = 0; c < channels; ++c) {
            const float *plane = nchw.data() + static_cast<size_t>(c) * height * width;
            for (int ph = 0; ph < p.pooled_height; ++ph) {
                for (int pw = 0; pw < p.pooled_width; ++pw) {
                    float value = 0.f;
                    for (int iy = 0; iy < grid; ++iy) {
                        const float y = start_h + static_cast<float>(ph) * bin_h +
                                        static_cast<float>(iy + .5f) * bin_h / static_cast<float>(grid);
                        for (int ix = 0; ix < grid; ++ix) {
                            const float x = start_w + static_cast<float>(pw) * bin_w +
                                            static_cast<float>(ix + .5f) * bin_w / static_cast<float>(grid);
                            value += reference_bilinear(plane, height, width, y, x);
                        }
                    }
                    value /= count;
                    out[((r * p.pooled_height + ph) * p.pooled_width + pw) * channels + c] = value;
                }
            }
        }
    }
    return out;
}

// RoIs in image pixels for a map of height x width at `scale` map pixels per
// image pixel: random ones inside, then the edge cases.
std::vector<Box> make_rois(int height, int width, float scale, uint32_t seed) {
    const float image_w = width / scale;
    const float image_h = height / scale;
    std::vector<Box> rois;
    const std::vector<float> v = qdet::test::random_floats(6 * 4, 0.f, 1.f, seed);
    for (int i = 0; i < 6; ++i) {
        const float x1 = v[4 * i] * image_w * 0.8f;
        const float y1 = v[4 * i + 1] * image_h * 0.8f;
        rois.push_back({x1, y1, x1 + (0.05f + v[4 * i + 2]) * image_w * 0.5f,
                        y1 + (0.05f + v[4 * i + 3]) * image_h * 0.5f});
    }
    const float pixel = 1.f / scale;  // one map pixel in image pixels
    // partly outside the map on every side
    rois.push_back({-3.f * pixel, -2.5f * pixel, 0.5f * image_w, 0.4f * image_h});
    rois.push_back({0.6f * image_w, 0.5f * image_h, image_w + 2.7f * pixel, image_h + 1.3f * pixel});
    // smaller than one map pixel, widened to one pixel
    rois.push_back({2.3f * pixel, 1.6f * pixel, 2.6f * pixel, 1.8f * pixel});
    // a point
    rois.push_back({3.f * pixel, 4.f * pixel, 3.f * pixel, 4.f * pixel});
    // on the last row and column
    rois.push_back({image_w - 1.5f * pixel, image_h - 1.5f * pixel, image_w, image_h});
    rois.push_back({image_w - 0.9f * pixel, 0.f, image_w + 0.5f * pixel, image_h});
    // entirely outside: every sample is dropped
    rois.push_back({image_w + 3.f * pixel, image_h + 3.f * pixel, image_w + 9.f * pixel, image_h + 9.f * pixel});
    rois.push_back({-9.f * pixel, -9.f * pixel, -2.f * pixel, -1.5f * pixel});
    return rois;
}

struct Case {
    const char *name;
    int channels, height, width;
    Layout layout;
    int pooled;
    int sampling_ratio;
    float spatial_scale;
};

const Case kCases[] = {
    {"nhwc 24 channels, 7x7, ratio 2", 24, 13, 17, Layout::nhwc, 7, 2, 0.0625f},
    {"nhwc 40 channels, 3x3, ratio 1", 40, 9, 6, Layout::nhwc, 3, 1, 0.25f},
    {"nhwc 40 channels, 7x7, ratio 1", 40, 12, 11, Layout::nhwc, 7, 1, 1.f},
    {"blocked 24 channels, 7x7, ratio 2", 24, 13, 17, Layout::blocked16, 7, 2, 0.0625f},
    {"blocked 40 channels, 3x3, ratio 2", 40, 10, 8, Layout::blocked16, 3, 2, 0.03125f},
    {"blocked 40 channels, 7x7, ratio 1", 40, 7, 9, Layout::blocked16, 7, 1, 0.25f},
    {"blocked 32 channels, 3x3, ratio 1", 32, 5, 5, Layout::blocked16, 3, 1, 1.f},
    {"nhwc one-pixel map", 24, 1, 1, Layout::nhwc, 3, 2, 1.f},
    // 64-channel SIMD chunks: four whole chunks, and one chunk plus 8.
    {"nhwc 256 channels, 7x7, ratio 2", 256, 12, 10, Layout::nhwc, 7, 2, 0.125f},
    {"nhwc 72 channels, 7x7, ratio 2", 72, 9, 13, Layout::nhwc, 7, 2, 0.25f},
};

qdet::RoiAlignParams params_of(const Case &c) {
    qdet::RoiAlignParams p;
    p.pooled_height = c.pooled;
    p.pooled_width = c.pooled;
    p.sampling_ratio = c.sampling_ratio;
    p.spatial_scale = c.spatial_scale;
    return p;
}

// A random INT8 feature map stored in the case's layout, and its real values
// (channel-major) under per-channel scales.
struct QuantizedMap {
    StoredMap<int8_t> map;
    std::vector<float> dequantized;
};

QuantizedMap random_quantized_map(const Case &c, const std::vector<float> &scales, uint32_t seed) {
    const size_t n = static_cast<size_t>(c.channels) * c.height * c.width;
    const size_t plane = static_cast<size_t>(c.height) * c.width;
    const std::vector<float> random = qdet::test::random_floats(n, -128.f, 127.f, seed);
    std::vector<int8_t> q(n);
    std::vector<float> dequantized(n);
    for (size_t i = 0; i < n; ++i) {
        q[i] = static_cast<int8_t>(std::lround(random[i]));
        dequantized[i] = scales[i / plane] * static_cast<float>(q[i]);
    }
    return {store(q, c.channels, c.height, c.width, c.layout, int8_t{127}), std::move(dequantized)};
}

int saturate_round_s8(double value) {
    return static_cast<int>(std::min(std::max(std::nearbyint(value), -128.0), 127.0));
}

}  // namespace

TEST_SUITE("unit") {

TEST_CASE("roi_align fp32 vs reference") {
    uint32_t seed = 100;
    for (const Case &c : kCases) {
        INFO("case: ", std::string(c.name), ", layout ", std::string(layout_name(c.layout)));
        const std::vector<float> nchw =
            qdet::test::random_floats(static_cast<size_t>(c.channels) * c.height * c.width, -3.f, 3.f, ++seed);
        const StoredMap<float> map =
            store(nchw, c.channels, c.height, c.width, c.layout, std::numeric_limits<float>::quiet_NaN());
        const std::vector<Box> rois = make_rois(c.height, c.width, c.spatial_scale, ++seed);
        const qdet::RoiAlignParams p = params_of(c);

        const std::vector<float> expected = reference_roi_align(nchw, c.channels, c.height, c.width, rois, p);
        std::vector<float> got(expected.size(), -1234.f);
        qdet::roi_align(map.view, rois, p, got.data());

        // Kernel and reference both evaluate each sample as w1 * v1 + w2 * v2
        // + w3 * v3 + w4 * v4, add a bin's samples in grid order and divide
        // by the count. The results are therefore identical.
        size_t mismatches = 0;
        size_t first = 0;
        for (size_t i = 0; i < got.size(); ++i) {
            if (!(got[i] == expected[i]) && mismatches++ == 0) first = i;
        }
        INFO("first mismatch at ", first, ": got ", got[first], ", expected ", expected[first]);
        CHECK(mismatches == 0);

        // The last two RoIs lie outside the map, so their bins are zero.
        const size_t per_roi = static_cast<size_t>(c.pooled) * c.pooled * c.channels;
        size_t outside_not_zero = 0;
        for (size_t i = got.size() - 2 * per_roi; i < got.size(); ++i) {
            if (got[i] != 0.f) ++outside_not_zero;
        }
        CHECK(outside_not_zero == 0);
    }
}

TEST_CASE("roi_align zero rois") {
    std::vector<float> nchw = qdet::test::random_floats(24 * 5 * 5, -1.f, 1.f, 7);
    const StoredMap<float> map = store(nchw, 24, 5, 5, Layout::blocked16, 0.f);
    std::vector<float> output(16, 42.f);
    qdet::roi_align(map.view, {}, qdet::RoiAlignParams{}, output.data());
    CHECK(std::count(output.begin(), output.end(), 42.f) == 16);

    std::vector<int8_t> q(24 * 5 * 5, 3);
    const StoredMap<int8_t> qmap = store(q, 24, 5, 5, Layout::nhwc, int8_t{0});
    std::vector<int8_t> q_output(16, 42);
    const std::vector<float> scales(24, 0.1f);
    qdet::roi_align(qmap.view, scales.data(), {}, qdet::RoiAlignParams{}, scales.data(), q_output.data());
    CHECK(std::count(q_output.begin(), q_output.end(), int8_t{42}) == 16);
}

TEST_CASE("roi_align int8 within one step") {
    struct ScaleCase {
        float in_scale;
        float out_scale;
    };
    // 0.05 -> 0.02 needs up to 320 steps and saturates; the others do not.
    const ScaleCase scales[] = {{0.05f, 0.05f}, {0.05f, 0.0371f}, {0.02f, 0.05f}, {0.05f, 0.02f}};
    uint32_t seed = 300;
    for (const Case &c : kCases) {
        for (const ScaleCase &s : scales) {
            INFO("case: ", std::string(c.name), ", layout ", std::string(layout_name(c.layout)), ", in scale ",
                 s.in_scale, ", out scale ", s.out_scale);
            // Per-channel scales: channel c uses the case's scale times
            // 1, 1.25, ..., 2 (output) or 2, 1.75, ..., 1 (input).
            std::vector<float> in_scales(c.channels), out_scales(c.channels);
            for (int ch = 0; ch < c.channels; ++ch) {
                in_scales[ch] = s.in_scale * (2.f - 0.25f * static_cast<float>(ch % 5));
                out_scales[ch] = s.out_scale * (1.f + 0.25f * static_cast<float>(ch % 5));
            }
            const QuantizedMap input = random_quantized_map(c, in_scales, ++seed);
            const std::vector<Box> rois = make_rois(c.height, c.width, c.spatial_scale, ++seed);
            const qdet::RoiAlignParams p = params_of(c);

            const std::vector<float> real =
                reference_roi_align(input.dequantized, c.channels, c.height, c.width, rois, p);
            std::vector<int8_t> got(real.size(), int8_t{-99});
            qdet::roi_align(input.map.view, in_scales.data(), rois, p, out_scales.data(), got.data());

            // The kernel adds the weights of taps at the same position and
            // scales once at the end, the reference interpolates real values.
            // Both stay within 1e-4 steps of the exact value (float sums of at
            // most 16 weighted taps of |q| <= 128, then one scaling), so they
            // round alike unless the value lies within 1e-3 steps of a tie,
            // and there they differ by one step.
            size_t off_by_more = 0;
            size_t off_away_from_tie = 0;
            for (size_t i = 0; i < got.size(); ++i) {
                const double steps = static_cast<double>(real[i]) / out_scales[i % c.channels];
                const int want = saturate_round_s8(steps);
                const int diff = std::abs(static_cast<int>(got[i]) - want);
                const bool near_tie = std::fabs(steps - std::floor(steps) - 0.5) < 1e-3;
                if (diff > 1) ++off_by_more;
                if (diff != 0 && !near_tie) ++off_away_from_tie;
            }
            CHECK(off_by_more == 0);
            CHECK(off_away_from_tie == 0);
        }
    }
}

TEST_CASE("roi_align int8 to fp32 vs reference") {
    uint32_t seed = 500;
    for (const Case &c : kCases) {
        INFO("case: ", std::string(c.name), ", layout ", std::string(layout_name(c.layout)));
        std::vector<float> in_scales(c.channels);
        for (int ch = 0; ch < c.channels; ++ch) in_scales[ch] = 0.01f * static_cast<float>(1 + ch % 7);
        const QuantizedMap input = random_quantized_map(c, in_scales, ++seed);
        const std::vector<Box> rois = make_rois(c.height, c.width, c.spatial_scale, ++seed);
        const qdet::RoiAlignParams p = params_of(c);

        const std::vector<float> expected =
            reference_roi_align(input.dequantized, c.channels, c.height, c.width, rois, p);
        std::vector<float> got(expected.size(), -1234.f);
        qdet::roi_align(input.map.view, in_scales.data(), rois, p, got.data());

        // Only float rounding separates the two, which stays below 1e-5 of
        // the largest value a bin can reach (128 times the channel's scale).
        size_t far = 0;
        size_t first = 0;
        for (size_t i = 0; i < got.size(); ++i) {
            const float bound = 1e-5f * 128.f * in_scales[i % c.channels];
            if (!(std::fabs(got[i] - expected[i]) <= bound) && far++ == 0) first = i;
        }
        INFO("first difference at ", first, ": got ", got[first], ", expected ", expected[first]);
        CHECK(far == 0);
    }
}

}  // TEST_SUITE("unit")
