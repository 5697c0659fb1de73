// Residual sums against a plain reference, on the layouts the engine uses.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "kernels/feature_view.h"
#include "kernels/residual_add.h"
#include "tests/test_support.h"

namespace qdet {

TEST_SUITE("unit") {

TEST_CASE("residual add fp32") {
    const std::vector<float> x = test::random_floats(1000, -5.f, 5.f, 1);
    const std::vector<float> branch = test::random_floats(1000, -5.f, 5.f, 2);
    std::vector<float> y(1000);
    add_residual(x.data(), branch.data(), x.size(), y.data());
    int mismatches = 0;
    for (size_t i = 0; i < x.size(); ++i) mismatches += y[i] != x[i] + branch[i];
    CHECK(mismatches == 0);
    // In place, as the engine calls it.
    std::vector<float> in_place = x;
    add_residual(in_place.data(), branch.data(), x.size(), in_place.data());
    CHECK(in_place == y);
}

TEST_CASE("residual add int8 per channel") {
    struct Case {
        const char *name;
        int channels, height, width;
        float x_scale, branch_scale, y_scale;  // channel c multiplies these by 1 + c % 3
    };
    // 40 and 24 channels leave tails after the 16-channel vectors; the last
    // case doubles values, so large sums saturate.
    const Case cases[] = {
        {"40 channels", 40, 3, 5, 0.05f, 0.02f, 0.06f},
        {"24 channels", 24, 4, 4, 0.01f, 0.03f, 0.03f},
        {"16 channels saturating", 16, 2, 7, 0.02f, 0.02f, 0.01f},
    };
    uint32_t seed = 10;
    for (const Case &c : cases) {
        INFO("case " << c.name);
        const size_t n = static_cast<size_t>(c.channels) * c.height * c.width;
        const std::vector<float> rx = test::random_floats(n, -128.f, 127.f, ++seed);
        const std::vector<float> rb = test::random_floats(n, -128.f, 127.f, ++seed);
        std::vector<int8_t> x(n), branch(n), y(n);
        for (size_t i = 0; i < n; ++i) {
            x[i] = static_cast<int8_t>(std::lround(rx[i]));
            branch[i] = static_cast<int8_t>(std::lround(rb[i]));
        }
        std::vector<float> xs(c.channels), bs(c.channels), ys(c.channels);
        for (int ch = 0; ch < c.channels; ++ch) {
            xs[ch] = c.x_scale * (1 + ch % 3);
            bs[ch] = c.branch_scale * (1 + ch % 3);
            ys[ch] = c.y_scale * (1 + (ch + 1) % 3);
        }
        add_residual(nhwc_view<const int8_t>(x.data(), c.channels, c.height, c.width), xs.data(),
                     nhwc_view<const int8_t>(branch.data(), c.channels, c.height, c.width), bs.data(),
                     nhwc_view<int8_t>(y.data(), c.channels, c.height, c.width), ys.data());

        // Reference in double; float rounding may move values within 1e-4
        // of a tie by one step.
        int far = 0, saturated = 0;
        for (size_t i = 0; i < n; ++i) {
            const int ch = static_cast<int>(i % c.channels);
            const double real = (static_cast<double>(x[i]) * xs[ch] + static_cast<double>(branch[i]) * bs[ch]) / ys[ch];
            const double want = std::min(127.0, std::max(-128.0, std::nearbyint(real)));
            if (want == 127.0 || want == -128.0) ++saturated;
            const bool near_tie = std::fabs(real - std::floor(real) - 0.5) < 1e-4;
            if (y[i] != want && !(near_tie && std::fabs(y[i] - want) <= 1)) ++far;
        }
        CHECK(far == 0);
        if (c.y_scale < c.x_scale) CHECK(saturated > 0);
    }
}

}  // TEST_SUITE
}  // namespace qdet
