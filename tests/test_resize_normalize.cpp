#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "kernels/resize_normalize.h"

namespace {

// Non-zero entries of one output pixel's impulse response: input index and
// the weight torch gives it.
struct Tap {
    int index;
    float weight;
};

struct TorchRow {
    int in_size;
    int out_size;
    int output_index;
    std::vector<Tap> taps;
};

// Produced by /usr/bin/python3 with torch 1.13: for each (in, out) pair,
//   x = torch.eye(in).reshape(1, in, 1, in)
//   y = F.interpolate(x, size=(1, out), mode="bilinear", align_corners=False)
// and for a few output indices j the non-zero entries of y[0, :, 0, j],
// printed with "%.9g". Channel k contains an impulse at input k, so entry k
// is the weight of input k.
const std::vector<TorchRow> &torch_rows() {
    static const std::vector<TorchRow> rows = {
        {474, 640, 0, {{0, 1.f}}},
        {474, 640, 1, {{0, 0.389062464f}, {1, 0.610937536f}}},
        {474, 640, 2, {{1, 0.64843744f}, {2, 0.35156256f}}},
        {474, 640, 213, {{157, 0.37655741f}, {158, 0.62344259f}}},
        {474, 640, 320, {{236, 0.129679859f}, {237, 0.870320141f}}},
        {474, 640, 638, {{472, 0.610922277f}, {473, 0.389077723f}}},
        {474, 640, 639, {{473, 1.f}}},
        {1280, 853, 0, {{0, 0.749706924f}, {1, 0.250293076f}}},
        {1280, 853, 1, {{1, 0.249120772f}, {2, 0.750879228f}}},
        {1280, 853, 2, {{3, 0.74853462f}, {4, 0.25146538f}}},
        {1280, 853, 284, {{426, 0.583239734f}, {427, 0.416760266f}}},
        {1280, 853, 426, {{639, 0.500006139f}, {640, 0.499993861f}}},
        {1280, 853, 851, {{1277, 0.750891507f}, {1278, 0.249108493f}}},
        {1280, 853, 852, {{1278, 0.250305355f}, {1279, 0.749694645f}}},
        {720, 640, 0, {{0, 0.9375f}, {1, 0.0625f}}},
        {720, 640, 1, {{1, 0.8125f}, {2, 0.1875f}}},
        {720, 640, 2, {{2, 0.6875f}, {3, 0.3125f}}},
        {720, 640, 213, {{239, 0.3125f}, {240, 0.6875f}}},
        {720, 640, 320, {{360, 0.9375f}, {361, 0.0625f}}},
        {720, 640, 638, {{717, 0.1875f}, {718, 0.8125f}}},
        {720, 640, 639, {{718, 0.0625f}, {719, 0.9375f}}},
        {364, 640, 0, {{0, 1.f}}},
        {364, 640, 1, {{0, 0.646874964f}, {1, 0.353125036f}}},
        {364, 640, 2, {{0, 0.0781249404f}, {1, 0.92187506f}}},
        {364, 640, 213, {{120, 0.0718699098f}, {121, 0.92813009f}}},
        {364, 640, 320, {{181, 0.215617359f}, {182, 0.784382641f}}},
        {364, 640, 638, {{362, 0.353109777f}, {363, 0.646890223f}}},
        {364, 640, 639, {{363, 1.f}}},
        {640, 640, 0, {{0, 1.f}}},
        {640, 640, 1, {{1, 1.f}}},
        {640, 640, 2, {{2, 1.f}}},
        {640, 640, 213, {{213, 1.f}}},
        {640, 640, 320, {{320, 1.f}}},
        {640, 640, 638, {{638, 1.f}}},
        {640, 640, 639, {{639, 1.f}}},
    };
    return rows;
}

const qdet::NormalizeParams kImageNet{{0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}};

// Source position of output pixel `i` as torch 1.13 computes it on CPU: the
// in / out ratio rounded to float32, the rest in double, clamped at 0.
double source_position(int in_size, int out_size, int i) {
    const double ratio = static_cast<double>(static_cast<float>(in_size) / static_cast<float>(out_size));
    return std::max(ratio * (i + 0.5) - 0.5, 0.0);
}

// The synthetic test image, interleaved RGB bytes.
std::vector<uint8_t> make_image(int height, int width) {
    std::vector<uint8_t> rgb(static_cast<size_t>(height) * width * 3);
    for (int y = 0; y < height; ++y) {
        for (int x = 0; x < width; ++x) {
            for (int c = 0; c < 3; ++c) {
                rgb[(static_cast<size_t>(y) * width + x) * 3 + c] =
                    static_cast<uint8_t>((y * 37 + x * 11 + c * 101 + (x * y) % 7 * 13) % 256);
            }
        }
    }
    return rgb;
}

// Normalisation then bilinear resize, in double except for the normalised
// values, which torch stores as float: (byte / 255 - mean) / std.
// Returns planar 3 x out_height x out_width values.
std::vector<double> reference_resize(const std::vector<uint8_t> &rgb, const qdet::ResizeGeometry &g) {
    std::vector<float> normalized(rgb.size());
    for (size_t i = 0; i < rgb.size(); ++i) {
        const int c = static_cast<int>(i % 3);
        const float unit = static_cast<float>(rgb[i]) / 255.f;
        normalized[i] = (unit - kImageNet.mean[c]) / kImageNet.std[c];
    }
    auto pixel = [&](int c, int y, int x) {
        return static_cast<double>(normalized[(static_cast<size_t>(y) * g.in_width + x) * 3 + c]);
    };
    std::vector<double> out(static_cast<size_t>(3) * g.out_height * g.out_width);
    for (int y = 0; y < g.out_height; ++y) {
        const double sy = g.in_height == g.out_height ? y : source_position(g.in_height, g.out_height, y);
        const int y0 = static_cast<int>(sy);
        const int y1 = std::min(y0 + 1, g.in_height - 1);
        const double ly = sy - y0;
        for (int x = 0; x < g.out_width; ++x) {
            const double sx = g.in_width == g.out_width ? x : source_position(g.in_width, g.out_width, x);
            const int x0 = static_cast<int>(sx);
            const int x1 = std::min(x0 + 1, g.in_width - 1);
            const double lx = sx - x0;
            for (int c = 0; c < 3; ++c) {
                const double top = pixel(c, y0, x0) * (1 - lx) + pixel(c, y0, x1) * lx;
                const double bottom = pixel(c, y1, x0) * (1 - lx) + pixel(c, y1, x1) * lx;
                out[(static_cast<size_t>(c) * g.out_height + y) * g.out_width + x] = top * (1 - ly) + bottom * ly;
            }
        }
    }
    return out;
}

// Compares the kernel with torch on the image of make_image(13, 11) resized
// to 20 x 7. Produced by /usr/bin/python3 with torch 1.13:
//   t = img.permute(2, 0, 1).contiguous().to(torch.float32).div(255)
//   t = (t - mean[:, None, None]) / std[:, None, None]
//   F.interpolate(t[None], size=(20, 7), mode="bilinear", align_corners=False)
// with img the uint8 H x W x 3 tensor, printed with "%.9g" at (y, x) for
// channels 0, 1, 2.
void check_torch_pixels(double tolerance) {
    struct Pixel {
        int y, x;
        float value[3];
    };
    const Pixel pixels[] = {
        {0, 0, {-2.06408334f, -0.212484956f, 1.77103031f}},
        {0, 6, {-0.288001746f, 1.60324121f, -0.883187056f}},
        {1, 3, {-0.346348256f, -0.585258663f, -0.942570567f}},
        {7, 2, {1.37462866f, -0.458520949f, 1.52608776f}},
        {10, 5, {-0.0801803395f, 1.81570137f, -0.671671093f}},
        {13, 4, {0.525424123f, 0.514054954f, -0.0553002656f}},
        {18, 1, {1.35670829f, -0.860994875f, 1.12540281f}},
        {19, 6, {-1.10265064f, 0.770408273f, -1.71231866f}},
    };
    const qdet::ResizeGeometry g{13, 11, 20, 7, 20, 7};
    const std::vector<uint8_t> rgb = make_image(g.in_height, g.in_width);
    std::vector<float> dst(static_cast<size_t>(3) * g.dst_height * g.dst_width);
    qdet::resize_normalize(rgb.data(), g, kImageNet, dst.data());
    const size_t plane = static_cast<size_t>(g.dst_height) * g.dst_width;
    for (const Pixel &p : pixels) {
        for (int c = 0; c < 3; ++c) {
            const float got = dst[c * plane + static_cast<size_t>(p.y) * g.dst_width + p.x];
            INFO("y ", p.y, ", x ", p.x, ", channel ", c, ": got ", got, ", torch ", p.value[c]);
            CHECK(std::fabs(static_cast<double>(got) - p.value[c]) <= tolerance);
        }
    }
}

struct GeometryCase {
    const char *name;
    qdet::ResizeGeometry geometry;
};

const GeometryCase kGeometries[] = {
    {"upscale with padding", {13, 11, 20, 7, 24, 8}},
    {"upscale both axes", {30, 45, 40, 60, 64, 64}},
    {"downscale both axes", {64, 48, 37, 29, 40, 32}},
    {"identity size, no padding", {17, 23, 17, 23, 17, 23}},
    {"identity size, padded", {17, 23, 17, 23, 32, 32}},
    {"one input pixel", {1, 1, 5, 4, 8, 8}},
    {"one output pixel", {9, 6, 1, 1, 2, 3}},
};

}  // namespace

TEST_SUITE("unit") {

TEST_CASE("linear_resize_axis matches torch weights") {
    for (const TorchRow &row : torch_rows()) {
        INFO("in ", row.in_size, ", out ", row.out_size, ", output index ", row.output_index);
        const qdet::LinearResizeAxis axis = qdet::linear_resize_axis(row.in_size, row.out_size);
        REQUIRE(axis.index0.size() == static_cast<size_t>(row.out_size));
        const int j = row.output_index;
        if (row.taps.size() == 2) {
            CHECK(axis.index0[j] == row.taps[0].index);
            CHECK(axis.index1[j] == row.taps[1].index);
            CHECK(axis.lambda0[j] == row.taps[0].weight);
            CHECK(axis.lambda1[j] == row.taps[1].weight);
            continue;
        }
        REQUIRE(row.taps.size() == 1);
        const Tap &tap = row.taps[0];
        CHECK(axis.index0[j] == tap.index);
        if (axis.lambda1[j] == 0.f) {
            // Only index0 contributes; index1 has weight zero.
            CHECK(axis.lambda0[j] == tap.weight);
            CHECK(axis.index1[j] >= axis.index0[j]);
            CHECK(axis.index1[j] <= std::min(axis.index0[j] + 1, row.in_size - 1));
        } else {
            // At the last input both indices name the same pixel, whose
            // weight is the float sum of the two lambdas, as in torch.
            CHECK(axis.index1[j] == tap.index);
            CHECK(axis.lambda0[j] + axis.lambda1[j] == tap.weight);
        }
    }
}

TEST_CASE("linear_resize_axis whole axis") {
    struct Case {
        int in_size, out_size;
    };
    const Case cases[] = {{474, 640}, {1280, 853}, {720, 640}, {364, 640}, {640, 640}, {1, 7}, {7, 1}, {2, 3}};
    for (const Case &c : cases) {
        INFO("in ", c.in_size, ", out ", c.out_size);
        const qdet::LinearResizeAxis axis = qdet::linear_resize_axis(c.in_size, c.out_size);
        REQUIRE(axis.index0.size() == static_cast<size_t>(c.out_size));
        REQUIRE(axis.index1.size() == static_cast<size_t>(c.out_size));
        REQUIRE(axis.lambda0.size() == static_cast<size_t>(c.out_size));
        REQUIRE(axis.lambda1.size() == static_cast<size_t>(c.out_size));
        int index_mismatches = 0;
        int lambda_mismatches = 0;
        int out_of_range = 0;
        for (int i = 0; i < c.out_size; ++i) {
            const double source = c.in_size == c.out_size ? i : source_position(c.in_size, c.out_size, i);
            const int i0 = static_cast<int>(source);
            const float lambda1 = static_cast<float>(source - i0);
            if (axis.index0[i] != i0) ++index_mismatches;
            // At the identity size lambda1 is 0, so index1 does not matter.
            if (c.in_size != c.out_size && axis.index1[i] != std::min(i0 + 1, c.in_size - 1)) ++index_mismatches;
            // Both are one float rounding of the same double: exact.
            if (axis.lambda1[i] != lambda1 || axis.lambda0[i] != 1.f - lambda1) ++lambda_mismatches;
            if (axis.index0[i] < 0 || axis.index1[i] >= c.in_size) ++out_of_range;
        }
        CHECK(index_mismatches == 0);
        CHECK(lambda_mismatches == 0);
        CHECK(out_of_range == 0);
    }
}

// The tensor is contiguous, as torchvision's to_tensor and read_image make
// it; a channels-last tensor takes another torch kernel that rounds
// differently.
TEST_CASE("resize_normalize exact torch values") {
    check_torch_pixels(0.0);
}

TEST_CASE("resize_normalize fp32 vs reference") {
    for (const GeometryCase &gc : kGeometries) {
        const qdet::ResizeGeometry &g = gc.geometry;
        INFO("case: ", std::string(gc.name));
        const std::vector<uint8_t> rgb = make_image(g.in_height, g.in_width);
        const std::vector<double> expected = reference_resize(rgb, g);
        const size_t plane = static_cast<size_t>(g.dst_height) * g.dst_width;
        // Garbage before the call: the padding must come out as zeros.
        std::vector<float> dst(plane * 3, std::numeric_limits<float>::quiet_NaN());
        qdet::resize_normalize(rgb.data(), g, kImageNet, dst.data());

        // The kernel rounds each lambda and each of the three blends to
        // float; the normalised values are below 2.7 in magnitude, so it
        // stays within 6 * 2^-24 * 2.7 < 1e-6 of the double reference.
        // 2e-6 leaves room. At the identity size the weights are 1 and 0,
        // so there the result is the normalised byte itself.
        const bool identity = g.in_height == g.out_height && g.in_width == g.out_width;
        const double tolerance = identity ? 0.0 : 2e-6;
        int value_mismatches = 0;
        int padding_not_zero = 0;
        double max_error = 0.0;
        for (int c = 0; c < 3; ++c) {
            for (int y = 0; y < g.dst_height; ++y) {
                for (int x = 0; x < g.dst_width; ++x) {
                    const float got = dst[c * plane + static_cast<size_t>(y) * g.dst_width + x];
                    if (y >= g.out_height || x >= g.out_width) {
                        if (got != 0.f) ++padding_not_zero;
                        continue;
                    }
                    const double want = expected[(static_cast<size_t>(c) * g.out_height + y) * g.out_width + x];
                    const double error = std::fabs(got - want);
                    max_error = std::max(max_error, error);
                    if (!(error <= tolerance)) ++value_mismatches;
                }
            }
        }
        CAPTURE(max_error);
        CHECK(value_mismatches == 0);
        CHECK(padding_not_zero == 0);
    }
}

TEST_CASE("resize_normalize int8 within one step") {
    struct ScaleCase {
        const char *name;
        float scale;
    };
    // Normalised values lie in [-2.12, 2.64]: 0.025 keeps them inside
    // [-127, 127] steps, 0.018 saturates the top of the range.
    const ScaleCase scales[] = {{"no saturation", 0.025f}, {"saturating", 0.018f}};
    for (const ScaleCase &sc : scales) {
        for (const GeometryCase &gc : kGeometries) {
            const qdet::ResizeGeometry &g = gc.geometry;
            INFO("case: ", std::string(gc.name), ", scale ", std::string(sc.name), " ", sc.scale);
            const std::vector<uint8_t> rgb = make_image(g.in_height, g.in_width);
            const std::vector<double> expected = reference_resize(rgb, g);
            std::vector<int8_t> dst(static_cast<size_t>(g.dst_height) * g.dst_width * 3, int8_t{77});
            // One scale per colour channel; blue's is 10% larger.
            const float channel_scales[3] = {sc.scale, sc.scale, sc.scale * 1.1f};
            qdet::resize_normalize(rgb.data(), g, kImageNet, channel_scales, dst.data());

            int off_by_more = 0;
            int padding_not_zero = 0;
            int saturated = 0;
            for (int y = 0; y < g.dst_height; ++y) {
                for (int x = 0; x < g.dst_width; ++x) {
                    for (int c = 0; c < 3; ++c) {
                        const int got = dst[(static_cast<size_t>(y) * g.dst_width + x) * 3 + c];
                        if (y >= g.out_height || x >= g.out_width) {
                            if (got != 0) ++padding_not_zero;
                            continue;
                        }
                        const double real =
                            expected[(static_cast<size_t>(c) * g.out_height + y) * g.out_width + x];
                        const double want =
                            std::min(std::max(std::nearbyint(real / channel_scales[c]), -128.0), 127.0);
                        if (want == 127.0) ++saturated;
                        if (std::fabs(got - want) > 1.0) ++off_by_more;
                    }
                }
            }
            CHECK(off_by_more == 0);
            CHECK(padding_not_zero == 0);
            if (sc.scale < 0.02f && g.out_height * g.out_width > 100) CHECK(saturated > 0);
        }
    }
}

}  // TEST_SUITE("unit")
