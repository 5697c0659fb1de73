#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "kernels/squeeze_excitation.h"
#include "tests/test_support.h"

namespace {

enum class Layout { nhwc, blocked16 };

const char *layout_name(Layout layout) { return layout == Layout::nhwc ? "nhwc" : "nChw16c"; }

// A C x H x W map in a qdet layout; padding channels hold `padding`.
template <typename T>
struct StoredMap {
    std::vector<T> data;
    qdet::FeatureView<T> view;
};

template <typename T>
StoredMap<T> store(const std::vector<T> &nchw, int channels, int height, int width, Layout layout, T padding) {
    StoredMap<T> map;
    qdet::FeatureView<T> shape = layout == Layout::nhwc ? qdet::nhwc_view<T>(nullptr, channels, height, width)
                                                        : qdet::blocked16_view<T>(nullptr, channels, height, width);
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

template <typename T>
qdet::FeatureView<const T> as_const(const qdet::FeatureView<T> &v) {
    return {v.data, v.channels, v.height, v.width, v.block, v.padded_channels};
}

// Counts padding lanes of a blocked map that no longer hold `padding`.
template <typename T>
size_t changed_padding(const StoredMap<T> &map, T padding) {
    const qdet::FeatureView<T> &v = map.view;
    size_t changed = 0;
    for (int c = v.channels; c < v.padded_channels; ++c) {
        for (int y = 0; y < v.height; ++y) {
            for (int x = 0; x < v.width; ++x) {
                const T value = map.data[v.offset(c, y, x)];
                if (!(value == padding)) ++changed;
            }
        }
    }
    return changed;
}

struct ShapeCase {
    const char *name;
    int channels, height, width;
    Layout layout;
};

// Channel counts of MobileNetV3-Large squeeze-excitation blocks; 72 and 120
// are not multiples of 16.
const ShapeCase kShapes[] = {
    {"72 channels nhwc", 72, 20, 20, Layout::nhwc},
    {"72 channels blocked", 72, 20, 20, Layout::blocked16},
    {"120 channels nhwc", 120, 10, 13, Layout::nhwc},
    {"120 channels blocked", 120, 10, 13, Layout::blocked16},
    {"960 channels nhwc", 960, 5, 7, Layout::nhwc},
    {"960 channels blocked", 960, 5, 7, Layout::blocked16},
    {"24 channels one pixel", 24, 1, 1, Layout::blocked16},
};

// Round half to even, then clamp to T's range.
template <typename T>
int saturate_round(double value) {
    const double lo = std::numeric_limits<T>::min();
    const double hi = std::numeric_limits<T>::max();
    return static_cast<int>(std::min(std::max(std::nearbyint(value), lo), hi));
}

}  // namespace

TEST_SUITE("unit") {

TEST_CASE("channel_means fp32 vs reference") {
    uint32_t seed = 500;
    for (const ShapeCase &s : kShapes) {
        INFO("case: ", std::string(s.name), ", layout ", std::string(layout_name(s.layout)));
        const size_t plane = static_cast<size_t>(s.height) * s.width;
        // An offset of 2 keeps the mean away from zero.
        const std::vector<float> nchw = qdet::test::random_floats(s.channels * plane, -1.f, 5.f, ++seed);
        const StoredMap<float> map =
            store(nchw, s.channels, s.height, s.width, s.layout, std::numeric_limits<float>::quiet_NaN());
        std::vector<float> means(s.channels, -1.f);
        qdet::channel_means(as_const(map.view), means.data());

        size_t mismatches = 0;
        for (int c = 0; c < s.channels; ++c) {
            double sum = 0.0;
            double sum_abs = 0.0;
            for (size_t i = 0; i < plane; ++i) {
                sum += nchw[c * plane + i];
                sum_abs += std::fabs(nchw[c * plane + i]);
            }
            // Float partial sums run over one row of at most 20 values, so
            // their error is below 20 * 2^-24 of the sum of |x|: 2e-6 of
            // the mean of |x|, plus one rounding of the mean.
            const double expected = sum / static_cast<double>(plane);
            const double tolerance = 2e-6 * sum_abs / static_cast<double>(plane) + 1e-7 * std::fabs(expected);
            if (!(std::fabs(means[c] - expected) <= tolerance)) ++mismatches;
        }
        CHECK(mismatches == 0);
    }
}

// Per-channel quantization scales that differ from channel to channel.
std::vector<float> varied_scales(int channels, float base) {
    std::vector<float> scales(channels);
    for (int c = 0; c < channels; ++c) scales[c] = base * (1.f + 0.25f * static_cast<float>(c % 5));
    return scales;
}

TEST_CASE("channel_means int8 and uint8") {
    uint32_t seed = 600;
    for (const ShapeCase &s : kShapes) {
        INFO("case: ", std::string(s.name), ", layout ", std::string(layout_name(s.layout)));
        const size_t plane = static_cast<size_t>(s.height) * s.width;
        const std::vector<float> random = qdet::test::random_floats(s.channels * plane, 0.f, 255.f, ++seed);
        std::vector<int8_t> s8(random.size());
        std::vector<uint8_t> u8(random.size());
        for (size_t i = 0; i < random.size(); ++i) {
            u8[i] = static_cast<uint8_t>(random[i]);
            s8[i] = static_cast<int8_t>(static_cast<int>(random[i]) - 128);
        }
        const StoredMap<int8_t> s8_map = store(s8, s.channels, s.height, s.width, s.layout, int8_t{99});
        const StoredMap<uint8_t> u8_map = store(u8, s.channels, s.height, s.width, s.layout, uint8_t{99});
        std::vector<float> s8_means(s.channels), u8_means(s.channels);
        const std::vector<float> scales = varied_scales(s.channels, 0.037f);
        qdet::channel_means(as_const(s8_map.view), scales.data(), s8_means.data());
        qdet::channel_means(as_const(u8_map.view), scales.data(), u8_means.data());

        // Integer sums are exact in float and double here (below 2^24), so
        // the means agree with sum / count * scale rounded once to float.
        size_t s8_mismatches = 0;
        size_t u8_mismatches = 0;
        for (int c = 0; c < s.channels; ++c) {
            long s8_sum = 0;
            long u8_sum = 0;
            for (size_t i = 0; i < plane; ++i) {
                s8_sum += s8[c * plane + i];
                u8_sum += u8[c * plane + i];
            }
            const double count = static_cast<double>(plane);
            if (s8_means[c] != static_cast<float>(s8_sum / count * scales[c])) ++s8_mismatches;
            if (u8_means[c] != static_cast<float>(u8_sum / count * scales[c])) ++u8_mismatches;
        }
        CHECK(s8_mismatches == 0);
        CHECK(u8_mismatches == 0);
    }
}

TEST_CASE("excitation_scales vs reference") {
    struct Case {
        const char *name;
        int channels;
        int squeeze_channels;
    };
    // torchvision's _make_divisible(channels // 4, 8) squeeze widths.
    const Case cases[] = {{"72 -> 24", 72, 24}, {"120 -> 32", 120, 32}, {"960 -> 240", 960, 240}, {"4 -> 1", 4, 1}};
    uint32_t seed = 700;
    for (const Case &c : cases) {
        INFO("case: ", std::string(c.name));
        const int C = c.channels;
        const int S = c.squeeze_channels;
        const std::vector<float> means = qdet::test::random_floats(C, -1.f, 2.f, ++seed);
        const std::vector<float> fc1_w = qdet::test::random_floats(static_cast<size_t>(S) * C, -0.3f, 0.3f, ++seed);
        const std::vector<float> fc1_b = qdet::test::random_floats(S, -0.5f, 0.5f, ++seed);
        const std::vector<float> fc2_w = qdet::test::random_floats(static_cast<size_t>(C) * S, -1.f, 1.f, ++seed);
        const std::vector<float> fc2_b = qdet::test::random_floats(C, -2.f, 2.f, ++seed);
        qdet::SqueezeExcitationWeights w;
        w.channels = C;
        w.squeeze_channels = S;
        w.fc1_weight = fc1_w.data();
        w.fc1_bias = fc1_b.data();
        w.fc2_weight = fc2_w.data();
        w.fc2_bias = fc2_b.data();
        std::vector<float> scratch(S), scales(C, -1.f);
        qdet::excitation_scales(w, means.data(), scratch.data(), scales.data());

        // Reference in double: relu(fc1), then hardsigmoid(fc2). A float sum
        // of n terms in any order errs by at most n * 2^-24 of the sum of
        // |terms|; the fc1 error passes through |fc2 weight|, and
        // hardsigmoid divides the error by 6.
        const double unit = std::ldexp(1.0, -24);
        std::vector<double> hidden(S), hidden_error(S);
        for (int s = 0; s < S; ++s) {
            double acc = fc1_b[s];
            double magnitude = std::fabs(fc1_b[s]);
            for (int k = 0; k < C; ++k) {
                acc += static_cast<double>(fc1_w[static_cast<size_t>(s) * C + k]) * means[k];
                magnitude += std::fabs(static_cast<double>(fc1_w[static_cast<size_t>(s) * C + k]) * means[k]);
            }
            hidden[s] = std::max(acc, 0.0);
            hidden_error[s] = (C + 2) * unit * magnitude;
        }
        size_t mismatches = 0;
        size_t saturated = 0;
        for (int k = 0; k < C; ++k) {
            double acc = fc2_b[k];
            double magnitude = std::fabs(fc2_b[k]) + 3.0;
            double propagated = 0.0;
            for (int s = 0; s < S; ++s) {
                const double weight = fc2_w[static_cast<size_t>(k) * S + s];
                acc += weight * hidden[s];
                magnitude += std::fabs(weight * hidden[s]);
                propagated += std::fabs(weight) * hidden_error[s];
            }
            const double expected = std::min(std::max(acc + 3.0, 0.0), 6.0) / 6.0;
            if (expected == 0.0 || expected == 1.0) ++saturated;
            const double tolerance = ((S + 4) * unit * magnitude + propagated) / 6.0 + unit;
            if (!(std::fabs(scales[k] - expected) <= tolerance)) ++mismatches;
        }
        CHECK(mismatches == 0);
        if (C >= 72) CHECK(saturated < static_cast<size_t>(C));
    }
}

TEST_CASE("excitation_scales hardsigmoid values") {
    // With zero fc2 weights the scale is hardsigmoid(bias) exactly:
    // min(max(b + 3, 0), 6) / 6 in float.
    const std::vector<float> biases = {-10.f, -3.f, -2.9f, -1.5f, 0.f, 0.75f, 1.5f, 2.999f, 3.f, 4.f, 100.f};
    const std::vector<float> expected = {0.f,
                                         0.f,
                                         (-2.9f + 3.f) / 6.f,
                                         0.25f,
                                         0.5f,
                                         (0.75f + 3.f) / 6.f,
                                         0.75f,
                                         (2.999f + 3.f) / 6.f,
                                         1.f,
                                         1.f,
                                         1.f};

    const int C = static_cast<int>(biases.size());
    const std::vector<float> means(C, 1.f);
    const std::vector<float> fc1_w(C, 1.f), fc1_b(1, 0.f);
    const std::vector<float> fc2_w(C, 0.f);
    qdet::SqueezeExcitationWeights w;
    w.channels = C;
    w.squeeze_channels = 1;
    w.fc1_weight = fc1_w.data();
    w.fc1_bias = fc1_b.data();
    w.fc2_weight = fc2_w.data();
    w.fc2_bias = biases.data();
    float scratch = -1.f;
    std::vector<float> scales(C, -1.f);
    qdet::excitation_scales(w, means.data(), &scratch, scales.data());

    CHECK(scratch == static_cast<float>(C));
    for (int k = 0; k < C; ++k) {
        INFO("bias ", biases[k]);
        CHECK(scales[k] == expected[k]);
    }
}

TEST_CASE("scale_channels fp32 in place") {
    uint32_t seed = 800;
    for (const ShapeCase &s : kShapes) {
        INFO("case: ", std::string(s.name), ", layout ", std::string(layout_name(s.layout)));
        const size_t plane = static_cast<size_t>(s.height) * s.width;
        const std::vector<float> nchw = qdet::test::random_floats(s.channels * plane, -4.f, 4.f, ++seed);
        const std::vector<float> scales = qdet::test::random_floats(s.channels, 0.f, 1.f, ++seed);
        const float padding = 12345.f;
        StoredMap<float> map = store(nchw, s.channels, s.height, s.width, s.layout, padding);
        qdet::scale_channels(map.view, scales.data());

        // One float multiplication per value: exact.
        size_t mismatches = 0;
        for (int c = 0; c < s.channels; ++c) {
            for (int y = 0; y < s.height; ++y) {
                for (int x = 0; x < s.width; ++x) {
                    const float expected = nchw[(c * static_cast<size_t>(s.height) + y) * s.width + x] * scales[c];
                    if (map.data[map.view.offset(c, y, x)] != expected) ++mismatches;
                }
            }
        }
        CHECK(mismatches == 0);
        CHECK(changed_padding(map, padding) == 0);
    }
}

TEST_CASE("scale_channels requantizes int8 and uint8") {
    struct ScaleCase {
        float in_scale;
        float out_scale;
    };
    // The last pair doubles values, so large ones saturate.
    const ScaleCase scale_cases[] = {{0.05f, 0.05f}, {0.05f, 0.031f}, {0.02f, 0.01f}};
    uint32_t seed = 900;
    for (const ShapeCase &s : kShapes) {
        for (const ScaleCase &sc : scale_cases) {
            for (const bool in_place : {false, true}) {
                INFO("case: ", std::string(s.name), ", layout ", std::string(layout_name(s.layout)), ", in scale ",
                     sc.in_scale, ", out scale ", sc.out_scale, ", in place ", in_place);
                const size_t plane = static_cast<size_t>(s.height) * s.width;
                const std::vector<float> random = qdet::test::random_floats(s.channels * plane, 0.f, 255.f, ++seed);
                std::vector<float> scales = qdet::test::random_floats(s.channels, 0.f, 1.f, ++seed);
                scales[0] = 1.f;
                scales[s.channels - 1] = 0.f;
                std::vector<int8_t> s8(random.size());
                std::vector<uint8_t> u8(random.size());
                for (size_t i = 0; i < random.size(); ++i) {
                    u8[i] = static_cast<uint8_t>(random[i]);
                    s8[i] = static_cast<int8_t>(static_cast<int>(random[i]) - 128);
                }
                const int8_t s8_padding = 77;
                const uint8_t u8_padding = 77;
                StoredMap<int8_t> s8_in = store(s8, s.channels, s.height, s.width, s.layout, s8_padding);
                StoredMap<uint8_t> u8_in = store(u8, s.channels, s.height, s.width, s.layout, u8_padding);
                StoredMap<int8_t> s8_out = store(std::vector<int8_t>(s8.size(), 0), s.channels, s.height, s.width,
                                                 s.layout, s8_padding);
                StoredMap<uint8_t> u8_out = store(std::vector<uint8_t>(u8.size(), 0), s.channels, s.height,
                                                  s.width, s.layout, u8_padding);
                StoredMap<int8_t> &s8_target = in_place ? s8_in : s8_out;
                StoredMap<uint8_t> &u8_target = in_place ? u8_in : u8_out;
                // Input scales vary by channel; output scales vary the other way.
                const std::vector<float> in_scales = varied_scales(s.channels, sc.in_scale);
                std::vector<float> out_scales = varied_scales(s.channels, sc.out_scale);
                std::reverse(out_scales.begin(), out_scales.end());
                qdet::scale_channels<int8_t>(as_const(s8_in.view), in_scales.data(), scales.data(),
                                             out_scales.data(), s8_target.view);
                qdet::scale_channels<uint8_t>(as_const(u8_in.view), in_scales.data(), scales.data(),
                                              out_scales.data(), u8_target.view);

                // Reference in double: round(q * scale * in / out). The
                // kernel's float factor differs in the last bits, so values
                // within 1e-4 of a rounding tie may be one step off.
                size_t s8_bad = 0, u8_bad = 0, s8_far = 0, u8_far = 0;
                for (int c = 0; c < s.channels; ++c) {
                    for (size_t i = 0; i < plane; ++i) {
                        const int y = static_cast<int>(i / s.width);
                        const int x = static_cast<int>(i % s.width);
                        const size_t at = s8_target.view.offset(c, y, x);
                        const double factor = static_cast<double>(scales[c]) * in_scales[c] / out_scales[c];
                        const double s8_real = s8[c * plane + i] * factor;
                        const double u8_real = u8[c * plane + i] * factor;
                        const int s8_want = saturate_round<int8_t>(s8_real);
                        const int u8_want = saturate_round<uint8_t>(u8_real);
                        const int s8_got = s8_target.data[at];
                        const int u8_got = u8_target.data[at];
                        const bool s8_near_tie = std::fabs(s8_real - std::floor(s8_real) - 0.5) < 1e-4;
                        const bool u8_near_tie = std::fabs(u8_real - std::floor(u8_real) - 0.5) < 1e-4;
                        if (s8_got != s8_want && !s8_near_tie) ++s8_bad;
                        if (u8_got != u8_want && !u8_near_tie) ++u8_bad;
                        if (std::abs(s8_got - s8_want) > 1) ++s8_far;
                        if (std::abs(u8_got - u8_want) > 1) ++u8_far;
                    }
                }
                CHECK(s8_bad == 0);
                CHECK(u8_bad == 0);
                CHECK(s8_far == 0);
                CHECK(u8_far == 0);
                CHECK(changed_padding(s8_target, s8_padding) == 0);
                CHECK(changed_padding(u8_target, u8_padding) == 0);
            }
        }
    }
}

}  // TEST_SUITE("unit")
