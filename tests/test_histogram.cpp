// Calibration histograms and the clipping rules chosen from them, on
// distributions with known thresholds.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include "converter/histogram.h"

namespace qdet {
namespace {

std::vector<float> normal_samples(size_t count, float sigma, uint32_t seed) {
    std::mt19937 generator(seed);
    std::normal_distribution<float> distribution(0.f, sigma);
    std::vector<float> values(count);
    for (float &v : values) v = distribution(generator);
    return values;
}

}  // namespace

TEST_SUITE("unit") {

TEST_CASE("histogram grows without losing counts") {
    MagnitudeHistogram histogram(64);
    const std::vector<float> small = {0.1f, -0.2f, 0.3f};
    const std::vector<float> large = {5.f, -7.5f};
    histogram.add(small.data(), small.size());
    histogram.add(large.data(), large.size());
    CHECK(histogram.total() == 5.0);
    CHECK(histogram.max_abs() == doctest::Approx(7.5));
    double counted = 0;
    for (double c : histogram.counts()) counted += c;
    CHECK(counted == 5.0);
    // The range doubled from 0.3 until it covered 7.5: 0.3 * 2^5 = 9.6.
    CHECK(histogram.bin_width() * 64 == doctest::Approx(9.6));
}

TEST_CASE("histogram of zeros keeps a zero clip") {
    MagnitudeHistogram histogram(32);
    const std::vector<float> zeros(100, 0.f);
    histogram.add(zeros.data(), zeros.size());
    for (CalibrationMethod method : {CalibrationMethod::minmax, CalibrationMethod::percentile,
                                     CalibrationMethod::entropy, CalibrationMethod::mse}) {
        INFO("method " << calibration_method_name(method));
        CHECK(histogram.clip(method, 127, 99.9) == 0.0);
    }
}

TEST_CASE("histogram minmax and percentile clips") {
    MagnitudeHistogram histogram(2048);
    const std::vector<float> values = normal_samples(200000, 1.f, 7);
    histogram.add(values.data(), values.size());
    float largest = 0.f;
    for (float v : values) largest = std::max(largest, std::fabs(v));
    CHECK(histogram.clip(CalibrationMethod::minmax, 127, 0) == doctest::Approx(largest));
    // |N(0, 1)| has its 99% quantile at 2.576 and its 90% quantile at 1.645;
    // the bin width (about 2.5e-3 here) bounds the error with sampling noise.
    CHECK(histogram.percentile_clip(99.0) == doctest::Approx(2.576).epsilon(0.01));
    CHECK(histogram.percentile_clip(90.0) == doctest::Approx(1.645).epsilon(0.01));
}

// Squared error of quantizing `values` symmetrically with `levels` steps
// up to `clip`: rounding inside, clipping outside.
double quantization_error(const std::vector<float> &values, double clip, int levels) {
    const double step = clip / levels;
    double error = 0;
    for (float v : values) {
        const double x = std::fabs(v);
        const double q = x >= clip ? clip : step * std::nearbyint(x / step);
        error += (x - q) * (x - q);
    }
    return error;
}

TEST_CASE("histogram entropy clips outliers") {
    // A Gaussian body plus 0.01% of far outliers: the entropy rule keeps
    // the body (|x| < 4 sigma) and clips well inside the outliers.
    MagnitudeHistogram histogram(2048);
    std::vector<float> values = normal_samples(100000, 1.f, 11);
    for (int i = 0; i < 10; ++i) values.push_back(i % 2 ? 60.f : -60.f);
    histogram.add(values.data(), values.size());
    for (int levels : {127, 255}) {
        const double entropy = histogram.entropy_clip(levels);
        INFO("levels " << levels << ", entropy clip " << entropy);
        CHECK(entropy > 2.0);
        CHECK(entropy < 20.0);
    }
}

TEST_CASE("histogram mse clip has the least error") {
    // Checked on the samples themselves: no other candidate does better
    // than the histogram's choice, up to the bin width's effect (1%).
    for (const int outliers : {0, 10, 1000}) {
        MagnitudeHistogram histogram(1024);
        std::vector<float> values = normal_samples(50000, 1.f, 13);
        for (int i = 0; i < outliers; ++i) values.push_back(i % 2 ? 30.f : -30.f);
        histogram.add(values.data(), values.size());
        const double chosen = histogram.mse_clip(127);
        const double chosen_error = quantization_error(values, chosen, 127);
        INFO("outliers " << outliers << ", mse clip " << chosen);
        for (const double candidate : {1.0, 2.0, 3.0, 4.0, 6.0, 10.0, 20.0, 30.0}) {
            INFO("candidate " << candidate);
            CHECK(chosen_error <= 1.01 * quantization_error(values, candidate, 127));
        }
    }
}

TEST_CASE("histogram mse clip of a uniform range") {
    // Values spread evenly over [0, 1]: clipping the top costs more than the
    // finer rounding gains, so the best threshold lies within 1% of the top.
    // Analytically it is 0.997, and the histogram's bin centres move it by a
    // bin.
    MagnitudeHistogram histogram(256);
    std::vector<float> values(25600);
    for (size_t i = 0; i < values.size(); ++i) values[i] = (static_cast<float>(i) + 0.5f) / values.size();
    histogram.add(values.data(), values.size());
    CHECK(histogram.mse_clip(127) == doctest::Approx(1.0).epsilon(0.01));
}

TEST_CASE("calibration method names round trip") {
    for (CalibrationMethod method : {CalibrationMethod::minmax, CalibrationMethod::percentile,
                                     CalibrationMethod::entropy, CalibrationMethod::mse}) {
        CalibrationMethod parsed;
        REQUIRE(parse_calibration_method(calibration_method_name(method), &parsed));
        CHECK(parsed == method);
    }
    CalibrationMethod parsed;
    CHECK_FALSE(parse_calibration_method("kl", &parsed));
}

}  // TEST_SUITE
}  // namespace qdet
