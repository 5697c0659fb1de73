#include "kernels/resize_normalize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/quantize.h"

namespace qdet {

LinearResizeAxis linear_resize_axis(int in_size, int out_size) {
    LinearResizeAxis axis;
    axis.index0.resize(out_size);
    axis.index1.resize(out_size);
    axis.lambda0.resize(out_size);
    axis.lambda1.resize(out_size);
    // torch 1.13's CPU kernel takes the ratio in float32 but evaluates the
    // source coordinate and its fraction in double; the weights then match it
    // exactly.
    const double ratio = static_cast<double>(static_cast<float>(in_size) / static_cast<float>(out_size));
    for (int i = 0; i < out_size; ++i) {
        if (in_size == out_size) {
            axis.index0[i] = axis.index1[i] = i;
            axis.lambda0[i] = 1.f;
            axis.lambda1[i] = 0.f;
            continue;
        }
        const double source = std::max(ratio * (i + 0.5) - 0.5, 0.0);
        const int i0 = static_cast<int>(source);
        axis.index0[i] = i0;
        axis.index1[i] = i0 + (i0 < in_size - 1 ? 1 : 0);
        axis.lambda1[i] = static_cast<float>(std::min(std::max(source - i0, 0.0), 1.0));
        axis.lambda0[i] = 1.f - axis.lambda1[i];
    }
    return axis;
}

namespace {

// normalized[c][byte] = (byte / 255 - mean[c]) / std[c], with the float
// operations torch applies to the float tensor, so the values are equal.
std::array<std::array<float, 256>, 3> normalize_table(const NormalizeParams &params) {
    std::array<std::array<float, 256>, 3> table{};
    for (int c = 0; c < 3; ++c) {
        for (int v = 0; v < 256; ++v) {
            const float unit = static_cast<float>(v) / 255.f;
            table[c][v] = (unit - params.mean[c]) / params.std[c];
        }
    }
    return table;
}

// Calls store(c, y, x, value) for every pixel of the resized image. The
// blend matches torch 1.13's CPU kernel for contiguous float tensors (as
// built by Debian, which contracts each axis to one fused multiply-add):
// per axis fma(t0, w0, t1 * w1), the width axis inside the height axis.
template <typename Store>
void for_each_resized_pixel(const uint8_t *rgb, const ResizeGeometry &g, const NormalizeParams &params,
                            Store store) {
    const auto table = normalize_table(params);
    const LinearResizeAxis ys = linear_resize_axis(g.in_height, g.out_height);
    const LinearResizeAxis xs = linear_resize_axis(g.in_width, g.out_width);
    const size_t row_bytes = static_cast<size_t>(g.in_width) * 3;

#pragma omp parallel for schedule(static)
    for (int y = 0; y < g.out_height; ++y) {
        const uint8_t *row0 = rgb + ys.index0[y] * row_bytes;
        const uint8_t *row1 = rgb + ys.index1[y] * row_bytes;
        const float ly0 = ys.lambda0[y], ly1 = ys.lambda1[y];
        for (int x = 0; x < g.out_width; ++x) {
            const int x0 = xs.index0[x] * 3, x1 = xs.index1[x] * 3;
            const float lx0 = xs.lambda0[x], lx1 = xs.lambda1[x];
            for (int c = 0; c < 3; ++c) {
                const auto &t = table[c];
                const float top = std::fma(t[row0[x0 + c]], lx0, t[row0[x1 + c]] * lx1);
                const float bottom = std::fma(t[row1[x0 + c]], lx0, t[row1[x1 + c]] * lx1);
                store(c, y, x, std::fma(top, ly0, bottom * ly1));
            }
        }
    }
}

}  // namespace

namespace {

// Zeroes the destination outside the resized image: the rows below it and
// the columns right of it. `row_of(y)` points at row y of one plane.
template <typename T, typename RowOf>
void zero_padding(const ResizeGeometry &g, int values_per_pixel, RowOf row_of) {
    for (int y = 0; y < g.dst_height; ++y) {
        T *row = row_of(y);
        const int first = y < g.out_height ? g.out_width : 0;
        std::memset(row + static_cast<size_t>(first) * values_per_pixel, 0,
                    static_cast<size_t>(g.dst_width - first) * values_per_pixel * sizeof(T));
    }
}

bool is_identity(const ResizeGeometry &g) { return g.in_height == g.out_height && g.in_width == g.out_width; }

}  // namespace

void resize_normalize(const uint8_t *rgb, const ResizeGeometry &g, const NormalizeParams &params, float *dst) {
    const size_t plane = static_cast<size_t>(g.dst_height) * g.dst_width;
    for (int c = 0; c < 3; ++c) {
        zero_padding<float>(g, 1, [&](int y) { return dst + c * plane + static_cast<size_t>(y) * g.dst_width; });
    }
    if (is_identity(g)) {
        // torch's kernel copies at the same size; so does a table lookup.
        const auto table = normalize_table(params);
#pragma omp parallel for schedule(static)
        for (int y = 0; y < g.out_height; ++y) {
            const uint8_t *in = rgb + static_cast<size_t>(y) * g.in_width * 3;
            for (int c = 0; c < 3; ++c) {
                float *out = dst + c * plane + static_cast<size_t>(y) * g.dst_width;
                for (int x = 0; x < g.out_width; ++x) out[x] = table[c][in[x * 3 + c]];
            }
        }
        return;
    }
    for_each_resized_pixel(rgb, g, params, [&](int c, int y, int x, float value) {
        dst[c * plane + static_cast<size_t>(y) * g.dst_width + x] = value;
    });
}

void resize_normalize(const uint8_t *rgb, const ResizeGeometry &g, const NormalizeParams &params,
                      const float *scales, int8_t *dst) {
    zero_padding<int8_t>(g, 3, [&](int y) { return dst + static_cast<size_t>(y) * g.dst_width * 3; });
    const float inverse[3] = {1.f / scales[0], 1.f / scales[1], 1.f / scales[2]};
    if (is_identity(g)) {
        // Quantizing the table gives the same bytes as quantizing each value.
        const auto table = normalize_table(params);
        std::array<std::array<int8_t, 256>, 3> quantized{};
        for (int c = 0; c < 3; ++c) {
            for (int v = 0; v < 256; ++v) quantized[c][v] = quantize_value<int8_t>(table[c][v], inverse[c]);
        }
#pragma omp parallel for schedule(static)
        for (int y = 0; y < g.out_height; ++y) {
            const uint8_t *in = rgb + static_cast<size_t>(y) * g.in_width * 3;
            int8_t *out = dst + static_cast<size_t>(y) * g.dst_width * 3;
            for (int i = 0; i < g.out_width * 3; i += 3) {
                out[i] = quantized[0][in[i]];
                out[i + 1] = quantized[1][in[i + 1]];
                out[i + 2] = quantized[2][in[i + 2]];
            }
        }
        return;
    }
    for_each_resized_pixel(rgb, g, params, [&](int c, int y, int x, float value) {
        dst[(static_cast<size_t>(y) * g.dst_width + x) * 3 + c] = quantize_value<int8_t>(value, inverse[c]);
    });
}

}  // namespace qdet
