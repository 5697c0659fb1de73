#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "kernels/quantize.h"
#include "tests/test_support.h"

namespace {

// Round to nearest with halves to even, written from the definition.
double round_half_even(double value) {
    const double lower = std::floor(value);
    const double fraction = value - lower;
    if (fraction > 0.5) return lower + 1.0;
    if (fraction < 0.5) return lower;
    return std::fmod(lower, 2.0) == 0.0 ? lower : lower + 1.0;
}

template <typename Q>
int reference_saturate_round(double value) {
    const double lo = std::numeric_limits<Q>::min();
    const double hi = std::numeric_limits<Q>::max();
    const double rounded = round_half_even(value);
    return static_cast<int>(rounded < lo ? lo : (rounded > hi ? hi : rounded));
}

struct RoundCase {
    const char *name;
    float value;
    int expected_s8;
    int expected_u8;
};

}  // namespace

TEST_SUITE("unit") {

TEST_CASE("quantize rounds half to even") {
    // Expected values follow round-half-to-even by hand.
    const RoundCase cases[] = {
        {"zero", 0.f, 0, 0},
        {"half", 0.5f, 0, 0},
        {"one and a half", 1.5f, 2, 2},
        {"two and a half", 2.5f, 2, 2},
        {"minus half", -0.5f, 0, 0},
        {"minus one and a half", -1.5f, -2, 0},
        {"minus two and a half", -2.5f, -2, 0},
        {"just below half", 0.49999997f, 0, 0},
        {"just above half", 0.50000006f, 1, 1},
        {"126.5", 126.5f, 126, 126},
        {"125.5", 125.5f, 126, 126},
        {"254.5", 254.5f, 127, 254},
        {"3.7", 3.7f, 4, 4},
        {"minus 3.7", -3.7f, -4, 0},
    };
    for (const RoundCase &c : cases) {
        INFO("case: ", std::string(c.name), ", value ", c.value);
        CHECK(static_cast<int>(qdet::saturate_round<int8_t>(c.value)) == c.expected_s8);
        CHECK(static_cast<int>(qdet::saturate_round<uint8_t>(c.value)) == c.expected_u8);
        CHECK(reference_saturate_round<int8_t>(c.value) == c.expected_s8);
        CHECK(reference_saturate_round<uint8_t>(c.value) == c.expected_u8);
    }
}

TEST_CASE("quantize saturates both ends") {
    const float inf = std::numeric_limits<float>::infinity();
    const RoundCase cases[] = {
        {"127.4", 127.4f, 127, 127},
        {"127.5", 127.5f, 127, 128},
        {"128", 128.f, 127, 128},
        {"255.4", 255.4f, 127, 255},
        {"255.5", 255.5f, 127, 255},
        {"256", 256.f, 127, 255},
        {"1e9", 1e9f, 127, 255},
        {"infinity", inf, 127, 255},
        {"minus 128.4", -128.4f, -128, 0},
        {"minus 128.5", -128.5f, -128, 0},
        {"minus 129", -129.f, -128, 0},
        {"minus 0.4", -0.4f, 0, 0},
        {"minus 0.6", -0.6f, -1, 0},
        {"minus 1e9", -1e9f, -128, 0},
        {"minus infinity", -inf, -128, 0},
    };
    for (const RoundCase &c : cases) {
        INFO("case: ", std::string(c.name), ", value ", c.value);
        CHECK(static_cast<int>(qdet::saturate_round<int8_t>(c.value)) == c.expected_s8);
        CHECK(static_cast<int>(qdet::saturate_round<uint8_t>(c.value)) == c.expected_u8);
    }
}

TEST_CASE("quantize array matches reference") {
    struct Case {
        const char *name;
        float scale;
        float lo, hi;
        uint32_t seed;
    };
    const Case cases[] = {
        {"unit scale", 1.f, -300.f, 300.f, 1},
        {"small scale", 0.0123f, -2.f, 2.f, 2},
        {"scale 0.5 hits halves", 0.5f, -70.f, 70.f, 3},
        {"large scale", 17.5f, -5000.f, 5000.f, 4},
    };
    for (const Case &c : cases) {
        INFO("case: ", std::string(c.name));
        CAPTURE(c.scale);
        std::vector<float> values = qdet::test::random_floats(2000, c.lo, c.hi, c.seed);
        // Exact multiples of scale / 2 exercise the tie rule.
        for (int k = -300; k <= 300; ++k) values.push_back(static_cast<float>(k) * 0.5f * c.scale);

        std::vector<int8_t> s8(values.size());
        std::vector<uint8_t> u8(values.size());
        qdet::quantize(values.data(), values.size(), c.scale, s8.data());
        qdet::quantize(values.data(), values.size(), c.scale, u8.data());

        // The reference multiplies by the same float reciprocal, one float
        // multiplication, so the products and hence the results are identical.
        const float inverse = 1.f / c.scale;
        int s8_mismatches = 0;
        int u8_mismatches = 0;
        for (size_t i = 0; i < values.size(); ++i) {
            const double product = static_cast<double>(values[i] * inverse);
            if (s8[i] != reference_saturate_round<int8_t>(product)) ++s8_mismatches;
            if (u8[i] != reference_saturate_round<uint8_t>(product)) ++u8_mismatches;
        }
        CHECK(s8_mismatches == 0);
        CHECK(u8_mismatches == 0);
    }
}

TEST_CASE("quantize dequantize round trip") {
    const float scales[] = {1.f, 0.05f, 0.0078125f, 3.3f};
    for (float scale : scales) {
        CAPTURE(scale);
        // Values inside the s8 range, so no saturation.
        const std::vector<float> values = qdet::test::random_floats(5000, -127.f * scale, 127.f * scale, 11);
        std::vector<int8_t> q(values.size());
        std::vector<float> back(values.size());
        qdet::quantize(values.data(), values.size(), scale, q.data());
        qdet::dequantize(q.data(), q.size(), scale, back.data());

        // Rounding alone errs by at most scale / 2. The float reciprocal and
        // the products add a relative error of a few 2^-24 on values up to
        // 127 * scale, about 1e-4 * scale, so the bound is scale * (0.5 + 1e-4).
        const double bound = scale * (0.5 + 1e-4);
        double max_error = 0.0;
        for (size_t i = 0; i < values.size(); ++i) {
            max_error = std::max(max_error, std::fabs(static_cast<double>(values[i]) - back[i]));
        }
        CHECK(max_error <= bound);

        // Dequantization is one float multiplication, so exact.
        int dequantize_mismatches = 0;
        for (size_t i = 0; i < q.size(); ++i) {
            if (back[i] != scale * static_cast<float>(q[i])) ++dequantize_mismatches;
        }
        CHECK(dequantize_mismatches == 0);
    }
}

TEST_CASE("requantize between scales") {
    struct Case {
        const char *name;
        float in_scale;
        float out_scale;
    };
    const Case cases[] = {
        {"halve the scale", 0.1f, 0.05f},
        {"double the scale", 0.05f, 0.1f},
        {"same scale", 0.02f, 0.02f},
        {"odd ratio", 0.037f, 0.011f},
    };
    std::vector<int8_t> s8_in(256);
    std::vector<uint8_t> u8_in(256);
    for (int i = 0; i < 256; ++i) {
        s8_in[i] = static_cast<int8_t>(i - 128);
        u8_in[i] = static_cast<uint8_t>(i);
    }
    for (const Case &c : cases) {
        INFO("case: ", std::string(c.name));
        CAPTURE(c.in_scale);
        CAPTURE(c.out_scale);
        std::vector<int8_t> s8_to_s8(256), u8_to_s8(256);
        std::vector<uint8_t> s8_to_u8(256), u8_to_u8(256);
        qdet::requantize(s8_in.data(), 256, c.in_scale, c.out_scale, s8_to_s8.data());
        qdet::requantize(s8_in.data(), 256, c.in_scale, c.out_scale, s8_to_u8.data());
        qdet::requantize(u8_in.data(), 256, c.in_scale, c.out_scale, u8_to_s8.data());
        qdet::requantize(u8_in.data(), 256, c.in_scale, c.out_scale, u8_to_u8.data());

        // The double reference q * in / out differs from the float factor
        // only in the last bits, so results agree exactly except where the
        // value is within 1e-4 of a rounding tie, and there by one step.
        auto check_all = [&](const char *direction, auto &in, auto &out, auto out_type_tag) {
            using Qout = decltype(out_type_tag);
            int mismatches = 0;
            int off_by_more = 0;
            for (int i = 0; i < 256; ++i) {
                const double exact = static_cast<double>(in[i]) * c.in_scale / c.out_scale;
                const int expected = reference_saturate_round<Qout>(exact);
                const int got = static_cast<int>(out[i]);
                const double distance_to_tie = std::fabs(exact - std::floor(exact) - 0.5);
                if (got != expected && distance_to_tie > 1e-4) ++mismatches;
                if (std::abs(got - expected) > 1) ++off_by_more;
            }
            INFO("direction: ", std::string(direction));
            CHECK(mismatches == 0);
            CHECK(off_by_more == 0);
        };
        check_all("s8 to s8", s8_in, s8_to_s8, int8_t{});
        check_all("s8 to u8", s8_in, s8_to_u8, uint8_t{});
        check_all("u8 to s8", u8_in, u8_to_s8, int8_t{});
        check_all("u8 to u8", u8_in, u8_to_u8, uint8_t{});
    }
}

}  // TEST_SUITE("unit")
