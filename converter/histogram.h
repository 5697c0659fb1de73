// Histogram of the magnitudes |x| of one activation tensor over a
// calibration set, and the clipping thresholds chosen from it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace qdet {

enum class CalibrationMethod { minmax, percentile, entropy, mse };

const char *calibration_method_name(CalibrationMethod method);
bool parse_calibration_method(const std::string &text, CalibrationMethod *method);

class MagnitudeHistogram {
public:
    explicit MagnitudeHistogram(int bins = 2048) : counts_(static_cast<size_t>(bins), 0.0) {}

    // Adds |values[i]|. The range starts at the first nonzero maximum and
    // doubles (merging pairs of bins) whenever a larger value arrives, so
    // the bins stay as fine as the largest value seen allows.
    void add(const float *values, size_t count);

    double max_abs() const { return max_abs_; }
    double total() const { return total_; }
    double bin_width() const { return range_ / static_cast<double>(counts_.size()); }
    const std::vector<double> &counts() const { return counts_; }

    // The clipping threshold for a symmetric quantizer with `levels` steps
    // above zero (127 for s8, 255 for u8 of non-negative data).
    double clip(CalibrationMethod method, int levels, double percentile) const;

    // The individual rules, public for tests.
    double percentile_clip(double percentile) const;
    // TensorRT's entropy calibration: the threshold whose quantized
    // distribution has the least KL divergence from the clipped original.
    double entropy_clip(int levels) const;
    // The threshold with the least expected squared error, rounding noise
    // below it and clipping error above it, over the histogram.
    double mse_clip(int levels) const;

private:
    void grow_to(double value);

    std::vector<double> counts_;
    double range_ = 0.0;  // upper edge of the last bin
    double max_abs_ = 0.0;
    double total_ = 0.0;
};

}  // namespace qdet
