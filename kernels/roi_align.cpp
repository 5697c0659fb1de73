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

// Shared driver: `emit(acc, channel_offset, n, out)` stores one bin's run.
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
    roi_align_impl<int8_t>(input, rois, params, [&](const float *acc, float, int r, int bin, int c0, int n) {
        int8_t *out = output + (static_cast<size_t>(r) * bins + bin) * channels + c0;
        simd::quantize_run(acc, factors.data() + c0, n, out);
    });
}

void roi_align(const FeatureView<const int8_t> &input, const float *in_scales, const std::vector<Box> &rois,
               const RoiAlignParams &params, float *output) {
    const int bins = params.pooled_height * params.pooled_width;
    const int channels = input.channels;
    const float per_count = std::max(static_cast<float>(params.sampling_ratio * params.sampling_ratio), 1.f);
    roi_align_impl<int8_t>(input, rois, params, [&](const float *acc, float, int r, int bin, int c0, int n) {
        float *out = output + (static_cast<size_t>(r) * bins + bin) * channels + c0;
        for (int c = 0; c < n; ++c) out[c] = acc[c] * in_scales[c0 + c] / per_count;
    });
}

}  // namespace qdet
