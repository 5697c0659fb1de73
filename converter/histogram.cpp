#include "converter/histogram.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace qdet {

const char *calibration_method_name(CalibrationMethod method) {
    switch (method) {
        case CalibrationMethod::minmax: return "minmax";
        case CalibrationMethod::percentile: return "percentile";
        case CalibrationMethod::entropy: return "entropy";
        case CalibrationMethod::mse: return "mse";
    }
    return "?";
}

bool parse_calibration_method(const std::string &text, CalibrationMethod *method) {
    for (CalibrationMethod m : {CalibrationMethod::minmax, CalibrationMethod::percentile, CalibrationMethod::entropy,
                                CalibrationMethod::mse}) {
        if (text == calibration_method_name(m)) {
            *method = m;
            return true;
        }
    }
    return false;
}

void MagnitudeHistogram::grow_to(double value) {
    if (range_ == 0.0) {
        range_ = value;
        return;
    }
    const size_t bins = counts_.size();
    while (range_ < value) {
        for (size_t i = 0; i < bins / 2; ++i) counts_[i] = counts_[2 * i] + counts_[2 * i + 1];
        std::fill(counts_.begin() + bins / 2, counts_.end(), 0.0);
        range_ *= 2.0;
    }
}

void MagnitudeHistogram::add(const float *values, size_t count) {
    float batch_max = 0.f;
    for (size_t i = 0; i < count; ++i) batch_max = std::max(batch_max, std::fabs(values[i]));
    if (!std::isfinite(batch_max)) batch_max = std::numeric_limits<float>::max();
    max_abs_ = std::max(max_abs_, static_cast<double>(batch_max));
    total_ += static_cast<double>(count);
    if (batch_max > range_) grow_to(batch_max);
    if (range_ == 0.0) {
        counts_[0] += static_cast<double>(count);  // all zeros so far
        return;
    }
    const double scale = static_cast<double>(counts_.size()) / range_;
    const size_t last = counts_.size() - 1;
    // Integer counts per bin in a local array, then one pass into doubles.
    std::vector<uint32_t> local(counts_.size(), 0);
    for (size_t i = 0; i < count; ++i) {
        const double position = std::fabs(static_cast<double>(values[i])) * scale;
        const size_t bin = position >= static_cast<double>(last) ? last : static_cast<size_t>(position);
        ++local[bin];
    }
    for (size_t b = 0; b < counts_.size(); ++b) counts_[b] += local[b];
}

double MagnitudeHistogram::percentile_clip(double percentile) const {
    if (total_ == 0.0 || max_abs_ == 0.0) return max_abs_;
    const double target = total_ * percentile / 100.0;
    double cumulative = 0.0;
    for (size_t b = 0; b < counts_.size(); ++b) {
        cumulative += counts_[b];
        if (cumulative >= target) return std::min(max_abs_, (static_cast<double>(b) + 1.0) * bin_width());
    }
    return max_abs_;
}

double MagnitudeHistogram::entropy_clip(int levels) const {
    if (total_ == 0.0 || max_abs_ == 0.0) return max_abs_;
    // Bins that hold data; thresholds beyond them change nothing.
    size_t used = counts_.size();
    while (used > 0 && counts_[used - 1] == 0.0) --used;
    const size_t first = static_cast<size_t>(levels);
    if (used <= first) return max_abs_;

    double best_divergence = std::numeric_limits<double>::infinity();
    size_t best = used;
    std::vector<double> reference, expanded;
    for (size_t threshold = first; threshold <= used; ++threshold) {
        // P: the histogram cut at `threshold`, outliers folded into the last bin.
        reference.assign(counts_.begin(), counts_.begin() + threshold);
        for (size_t b = threshold; b < used; ++b) reference[threshold - 1] += counts_[b];

        // Q: the histogram (without the folded outliers) merged into
        // `levels` groups, each group's mass spread evenly over the bins
        // where P is nonzero.
        expanded.assign(threshold, 0.0);
        const double group = static_cast<double>(threshold) / levels;
        for (int q = 0; q < levels; ++q) {
            const size_t begin = static_cast<size_t>(std::floor(q * group));
            const size_t end = q == levels - 1 ? threshold : static_cast<size_t>(std::floor((q + 1) * group));
            double mass = 0.0;
            int nonzero = 0;
            for (size_t b = begin; b < end; ++b) {
                mass += counts_[b];
                nonzero += reference[b] > 0.0 ? 1 : 0;
            }
            if (nonzero == 0) continue;
            for (size_t b = begin; b < end; ++b) {
                if (reference[b] > 0.0) expanded[b] = mass / nonzero;
            }
        }

        double p_total = 0.0, q_total = 0.0;
        for (size_t b = 0; b < threshold; ++b) {
            p_total += reference[b];
            q_total += expanded[b];
        }
        double divergence = 0.0;
        for (size_t b = 0; b < threshold; ++b) {
            if (reference[b] == 0.0) continue;
            const double p = reference[b] / p_total;
            // A group whose only mass is the folded outliers has Q = 0 where
            // P > 0; a tiny floor keeps the divergence finite but large.
            const double q = std::max(expanded[b] / q_total, 1e-12);
            divergence += p * std::log(p / q);
        }
        if (divergence < best_divergence) {
            best_divergence = divergence;
            best = threshold;
        }
    }
    return std::min(max_abs_, (static_cast<double>(best) + 0.5) * bin_width());
}

double MagnitudeHistogram::mse_clip(int levels) const {
    if (total_ == 0.0 || max_abs_ == 0.0) return max_abs_;
    size_t used = counts_.size();
    while (used > 0 && counts_[used - 1] == 0.0) --used;
    const double width = bin_width();

    double best_error = std::numeric_limits<double>::infinity();
    double best_clip = max_abs_;
    for (size_t edge = 1; edge <= used; ++edge) {
        const double clip = std::min(max_abs_, static_cast<double>(edge) * width);
        const double step = clip / levels;
        double error = 0.0;
        for (size_t b = 0; b < used; ++b) {
            if (counts_[b] == 0.0) continue;
            const double x = (static_cast<double>(b) + 0.5) * width;
            double e;
            if (x >= clip) {
                e = x - clip;
            } else {
                e = x - step * std::nearbyint(x / step);
            }
            error += counts_[b] * e * e;
        }
        if (error < best_error) {
            best_error = error;
            best_clip = clip;
        }
    }
    return best_clip;
}

double MagnitudeHistogram::clip(CalibrationMethod method, int levels, double percentile) const {
    switch (method) {
        case CalibrationMethod::minmax: return max_abs_;
        case CalibrationMethod::percentile: return percentile_clip(percentile);
        case CalibrationMethod::entropy: return entropy_clip(levels);
        case CalibrationMethod::mse: return mse_clip(levels);
    }
    return max_abs_;
}

}  // namespace qdet
