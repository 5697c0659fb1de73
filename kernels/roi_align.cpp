#include "kernels/roi_align.h"

#include <algorithm>
#include <cstring>

#include "kernels/quantize.h"
#include "kernels/requantize_simd.h"

namespace qdet {

void roi_align_samples(const Box &roi, int height, int width, const RoiAlignParams &params,
                       std::vector<BilinearSample> *samples) {
    const int grid = params.sampling_ratio;
    samples->resize(static_cast<size_t>(params.pooled_height) * params.pooled_width * grid * grid);

    // torchvision: no rounding of the RoI, and RoIs smaller than one
    // feature-map pixel are widened to one pixel (aligned=False).
    const float start_w = roi.x1 * params.spatial_scale;
    const float start_h = roi.y1 * params.spatial_scale;
    const float end_w = roi.x2 * params.spatial_scale;
    const float end_h = roi.y2 * params.spatial_scale;
    const float roi_width = std::max(end_w - start_w, 1.f);
    const float roi_height = std::max(end_h - start_h, 1.f);
    const float bin_h = roi_height / static_cast<float>(params.pooled_height);
    const float bin_w = roi_width / static_cast<float>(params.pooled_width);

    size_t index = 0;
    for (int ph = 0; ph < params.pooled_height; ++ph) {
        for (int pw = 0; pw < params.pooled_width; ++pw) {
            for (int iy = 0; iy < grid; ++iy) {
                const float yy = start_h + static_cast<float>(ph) * bin_h +
                                 static_cast<float>(iy + .5f) * bin_h / static_cast<float>(grid);
                for (int ix = 0; ix < grid; ++ix) {
                    const float xx = start_w + static_cast<float>(pw) * bin_w +
                                     static_cast<float>(ix + .5f) * bin_w / static_cast<float>(grid);
                    BilinearSample &s = (*samples)[index++];
                    float y = yy;
                    float x = xx;
                    if (y < -1.f || y > static_cast<float>(height) || x < -1.f || x > static_cast<float>(width)) {
                        s = BilinearSample{{0, 0, 0, 0}, {0.f, 0.f, 0.f, 0.f}};
                        continue;
                    }
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
                    s.position[0] = y_low * width + x_low;
                    s.position[1] = y_low * width + x_high;
                    s.position[2] = y_high * width + x_low;
                    s.position[3] = y_high * width + x_high;
                    s.weight[0] = hy * hx;
                    s.weight[1] = hy * lx;
                    s.weight[2] = ly * hx;
                    s.weight[3] = ly * lx;
                }
            }
        }
    }
}

namespace {

// The FP32 driver, in torchvision's order of operations: `emit(acc, count, roi,
// bin, channel_offset, n)` stores one bin's run.
template <typename T, typename Emit>
void roi_align_impl(const FeatureView<const T> &input, const std::vector<Box> &rois, const RoiAlignParams &params,
                    Emit emit) {
    const int bins = params.pooled_height * params.pooled_width;
    const int per_bin = params.sampling_ratio * params.sampling_ratio;
    const int count = std::max(per_bin, 1);
    const size_t plane = static_cast<size_t>(input.height) * input.width;
    const int n_rois = static_cast<int>(rois.size());

#pragma omp parallel
    {
        std::vector<BilinearSample> samples;
        std::vector<float> acc(static_cast<size_t>(input.block));
#pragma omp for schedule(dynamic, 4)
        for (int r = 0; r < n_rois; ++r) {
            roi_align_samples(rois[r], input.height, input.width, params, &samples);
            for (int b = 0; b < input.blocks(); ++b) {
                const int n = input.block_channels(b);
                const T *base = input.data + static_cast<size_t>(b) * plane * input.block;
                for (int bin = 0; bin < bins; ++bin) {
                    std::fill(acc.begin(), acc.begin() + n, 0.f);
                    const BilinearSample *bin_samples = samples.data() + static_cast<size_t>(bin) * per_bin;
                    for (int s = 0; s < per_bin; ++s) {
                        const BilinearSample &sample = bin_samples[s];
                        const T *v1 = base + static_cast<size_t>(sample.position[0]) * input.block;
                        const T *v2 = base + static_cast<size_t>(sample.position[1]) * input.block;
                        const T *v3 = base + static_cast<size_t>(sample.position[2]) * input.block;
                        const T *v4 = base + static_cast<size_t>(sample.position[3]) * input.block;
                        const float w1 = sample.weight[0], w2 = sample.weight[1];
                        const float w3 = sample.weight[2], w4 = sample.weight[3];
#pragma omp simd
                        for (int c = 0; c < n; ++c) {
                            const float value = w1 * static_cast<float>(v1[c]) + w2 * static_cast<float>(v2[c]) +
                                                w3 * static_cast<float>(v3[c]) + w4 * static_cast<float>(v4[c]);
                            acc[c] += value;
                        }
                    }
                    emit(acc.data(), static_cast<float>(count), r, bin, b * input.block, n);
                }
            }
        }
    }
}

// One bilinear tap of a bin: a feature-map position and its weight.
struct Tap {
    int32_t position;
    float weight;
};

// Collects the taps of a bin's samples into `taps`, adding the weights of taps
// at the same position and dropping zero weights. Returns the tap count. When
// a bin is smaller than a feature-map pixel its samples share neighbours, and
// as few as 4 of the 16 taps remain.
int merge_taps(const BilinearSample *samples, int count, Tap *taps) {
    int n = 0;
    for (int s = 0; s < count; ++s) {
        for (int k = 0; k < 4; ++k) {
            const float weight = samples[s].weight[k];
            if (weight == 0.f) continue;
            const int32_t position = samples[s].position[k];
            int j = 0;
            while (j < n && taps[j].position != position) ++j;
            if (j == n) {
                taps[n++] = {position, weight};
            } else {
                taps[j].weight += weight;
            }
        }
    }
    return n;
}

// acc[c] = sum over taps of weight * run[c], for the n channels of the runs
// that start at base + position * stride.
void accumulate_taps(const int8_t *base, size_t stride, const Tap *taps, int tap_count, int n, float *acc) {
    int c = 0;
#ifdef QDET_AVX512
    // 64 channels at a time in four registers, so each tap loads each
    // channel once and the sums never leave the registers.
    for (; c + 64 <= n; c += 64) {
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        __m512 a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        for (int t = 0; t < tap_count; ++t) {
            const int8_t *v = base + static_cast<size_t>(taps[t].position) * stride + c;
            const __m512 w = _mm512_set1_ps(taps[t].weight);
            a0 = _mm512_fmadd_ps(w, simd::load_as_float(v, 0xFFFF), a0);
            a1 = _mm512_fmadd_ps(w, simd::load_as_float(v + 16, 0xFFFF), a1);
            a2 = _mm512_fmadd_ps(w, simd::load_as_float(v + 32, 0xFFFF), a2);
            a3 = _mm512_fmadd_ps(w, simd::load_as_float(v + 48, 0xFFFF), a3);
        }
        _mm512_storeu_ps(acc + c, a0);
        _mm512_storeu_ps(acc + c + 16, a1);
        _mm512_storeu_ps(acc + c + 32, a2);
        _mm512_storeu_ps(acc + c + 48, a3);
    }
#endif
    for (; c < n; ++c) {
        float sum = 0.f;
        for (int t = 0; t < tap_count; ++t) {
            sum += taps[t].weight * static_cast<float>(base[static_cast<size_t>(taps[t].position) * stride + c]);
        }
        acc[c] = sum;
    }
}

// The INT8 driver. Unlike the FP32 one, which keeps torchvision's order of
// operations, it merges each bin's taps first: the result differs from the
// FP32 order only by float rounding, far below one INT8 step.
template <typename Emit>
void roi_align_s8_impl(const FeatureView<const int8_t> &input, const std::vector<Box> &rois,
                       const RoiAlignParams &params, Emit emit) {
    const int bins = params.pooled_height * params.pooled_width;
    const int per_bin = params.sampling_ratio * params.sampling_ratio;
    const size_t plane = static_cast<size_t>(input.height) * input.width;
    const int n_rois = static_cast<int>(rois.size());

#pragma omp parallel
    {
        std::vector<BilinearSample> samples;
        std::vector<Tap> taps(static_cast<size_t>(per_bin) * 4);
        std::vector<float> acc(static_cast<size_t>(input.block));
#pragma omp for schedule(dynamic, 4)
        for (int r = 0; r < n_rois; ++r) {
            roi_align_samples(rois[r], input.height, input.width, params, &samples);
            for (int bin = 0; bin < bins; ++bin) {
                const int tap_count = merge_taps(samples.data() + static_cast<size_t>(bin) * per_bin, per_bin,
                                                 taps.data());
                for (int b = 0; b < input.blocks(); ++b) {
                    const int n = input.block_channels(b);
                    const int8_t *base = input.data + static_cast<size_t>(b) * plane * input.block;
                    accumulate_taps(base, static_cast<size_t>(input.block), taps.data(), tap_count, n, acc.data());
                    emit(acc.data(), r, bin, b * input.block, n);
                }
            }
        }
    }
}

}  // namespace

void roi_align(const FeatureView<const float> &input, const std::vector<Box> &rois, const RoiAlignParams &params,
               float *output) {
    const int bins = params.pooled_height * params.pooled_width;
    const int channels = input.channels;
    roi_align_impl<float>(input, rois, params, [&](const float *acc, float count, int r, int bin, int c0, int n) {
        float *out = output + (static_cast<size_t>(r) * bins + bin) * channels + c0;
        for (int c = 0; c < n; ++c) out[c] = acc[c] / count;
    });
}

void roi_align(const FeatureView<const int8_t> &input, const float *in_scales, const std::vector<Box> &rois,
               const RoiAlignParams &params, const float *out_scales, int8_t *output) {
    const int bins = params.pooled_height * params.pooled_width;
    const int channels = input.channels;
    const float per_count = std::max(static_cast<float>(params.sampling_ratio * params.sampling_ratio), 1.f);
    std::vector<float> factors(static_cast<size_t>(channels));
    for (int c = 0; c < channels; ++c) factors[c] = in_scales[c] / (out_scales[c] * per_count);
    roi_align_s8_impl(input, rois, params, [&](const float *acc, int r, int bin, int c0, int n) {
        int8_t *out = output + (static_cast<size_t>(r) * bins + bin) * channels + c0;
        simd::quantize_run(acc, factors.data() + c0, n, out);
    });
}

void roi_align(const FeatureView<const int8_t> &input, const float *in_scales, const std::vector<Box> &rois,
               const RoiAlignParams &params, float *output) {
    const int bins = params.pooled_height * params.pooled_width;
    const int channels = input.channels;
    const float per_count = std::max(static_cast<float>(params.sampling_ratio * params.sampling_ratio), 1.f);
    roi_align_s8_impl(input, rois, params, [&](const float *acc, int r, int bin, int c0, int n) {
        float *out = output + (static_cast<size_t>(r) * bins + bin) * channels + c0;
        for (int c = 0; c < n; ++c) out[c] = acc[c] * in_scales[c0 + c] / per_count;
    });
}

}  // namespace qdet
