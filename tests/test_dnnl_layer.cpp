#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "engine/dnnl_layer.h"
#include "engine/error.h"
#include "engine/plan.h"
#include "tests/test_support.h"

namespace {

using qdet::Activation;
using qdet::Layout;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

struct Dnnl {
    dnnl::engine engine{dnnl::engine::kind::cpu, 0};
    dnnl::stream stream{engine};
};

Dnnl &dnnl_context() {
    static Dnnl context;
    return context;
}

template <typename T>
dt data_type_of();
template <>
dt data_type_of<float>() { return dt::f32; }
template <>
dt data_type_of<int8_t>() { return dt::s8; }
template <>
dt data_type_of<uint8_t>() { return dt::u8; }

tag tag_of(Layout layout) {
    switch (layout) {
        case Layout::nchw: return tag::nchw;
        case Layout::nhwc: return tag::nhwc;
        case Layout::blocked16: return tag::nChw16c;
    }
    return tag::undef;
}

const char *layout_text(Layout layout) {
    switch (layout) {
        case Layout::nchw: return "nchw";
        case Layout::nhwc: return "nhwc";
        case Layout::blocked16: return "nChw16c";
    }
    return "?";
}

const char *activation_text(Activation activation) {
    switch (activation) {
        case Activation::none: return "none";
        case Activation::relu: return "relu";
        case Activation::hardswish: return "hardswish";
    }
    return "?";
}

// Copies plain values (NCHW for 4-d dims, NC for 2-d) into `target`, whose
// descriptor may use any layout, through a oneDNN reorder.
template <typename T>
void fill_memory(const dnnl::memory &target, const std::vector<T> &plain) {
    const dnnl::memory::dims dims = target.get_desc().dims();
    const tag plain_tag = dims.size() == 4 ? tag::nchw : tag::nc;
    dnnl::memory user({dims, data_type_of<T>(), plain_tag}, dnnl_context().engine,
                      const_cast<T *>(plain.data()));
    dnnl::memory destination = target;
    dnnl::reorder(user, destination).execute(dnnl_context().stream, user, destination);
    dnnl_context().stream.wait();
}

// Reads `source` back as plain NCHW (or NC) values.
template <typename T>
std::vector<T> read_memory(const dnnl::memory &source) {
    const dnnl::memory::dims dims = source.get_desc().dims();
    size_t count = 1;
    for (auto d : dims) count *= static_cast<size_t>(d);
    std::vector<T> plain(count);
    const tag plain_tag = dims.size() == 4 ? tag::nchw : tag::nc;
    dnnl::memory user({dims, data_type_of<T>(), plain_tag}, dnnl_context().engine, plain.data());
    dnnl::memory from = source;
    dnnl::reorder(from, user).execute(dnnl_context().stream, from, user);
    dnnl_context().stream.wait();
    return plain;
}

double activate(Activation activation, double v) {
    switch (activation) {
        case Activation::none: return v;
        case Activation::relu: return std::max(v, 0.0);
        case Activation::hardswish: return v * std::min(std::max(v + 3.0, 0.0), 6.0) / 6.0;
    }
    return v;
}

struct ConvShape {
    int in_channels, out_channels;
    int height, width;
    int kernel, stride, groups;

    int padding() const { return (kernel - 1) / 2; }
    int out_height() const { return (height + 2 * padding() - kernel) / stride + 1; }
    int out_width() const { return (width + 2 * padding() - kernel) / stride + 1; }
    size_t weight_count() const {
        return static_cast<size_t>(out_channels) * (in_channels / groups) * kernel * kernel;
    }
};

// Direct convolution from the definition, NCHW in and out, weights
// OC x IC/groups x K x K, zero padding of (K - 1) / 2, accumulated in double.
// `magnitude` receives the sum of |terms| of each output, bias included.
template <typename Src, typename Weight>
std::vector<double> reference_conv(const ConvShape &s, const std::vector<Src> &src, const std::vector<Weight> &weight,
                                   const std::vector<double> &bias, std::vector<double> *magnitude) {
    const int oh = s.out_height(), ow = s.out_width();
    const int in_per_group = s.in_channels / s.groups;
    const int out_per_group = s.out_channels / s.groups;
    std::vector<double> out(static_cast<size_t>(s.out_channels) * oh * ow);
    magnitude->assign(out.size(), 0.0);
    for (int o = 0; o < s.out_channels; ++o) {
        const int group = o / out_per_group;
        for (int y = 0; y < oh; ++y) {
            for (int x = 0; x < ow; ++x) {
                double acc = bias[o];
                double sum_abs = std::fabs(bias[o]);
                for (int ci = 0; ci < in_per_group; ++ci) {
                    const int c = group * in_per_group + ci;
                    for (int ky = 0; ky < s.kernel; ++ky) {
                        const int iy = y * s.stride - s.padding() + ky;
                        if (iy < 0 || iy >= s.height) continue;
                        for (int kx = 0; kx < s.kernel; ++kx) {
                            const int ix = x * s.stride - s.padding() + kx;
                            if (ix < 0 || ix >= s.width) continue;
                            const double w =
                                weight[((static_cast<size_t>(o) * in_per_group + ci) * s.kernel + ky) * s.kernel + kx];
                            const double v = src[(static_cast<size_t>(c) * s.height + iy) * s.width + ix];
                            acc += w * v;
                            sum_abs += std::fabs(w * v);
                        }
                    }
                }
                const size_t at = (static_cast<size_t>(o) * oh + y) * ow + x;
                out[at] = acc;
                (*magnitude)[at] = sum_abs;
            }
        }
    }
    return out;
}

qdet::LayerSpec conv_spec(const ConvShape &s, Activation activation) {
    qdet::LayerSpec spec;
    spec.name = "test.conv";
    spec.kind = qdet::LayerSpec::Kind::conv;
    spec.in_channels = s.in_channels;
    spec.out_channels = s.out_channels;
    spec.kernel = s.kernel;
    spec.stride = s.stride;
    spec.groups = s.groups;
    spec.activation = activation;
    return spec;
}

qdet::LayerSpec linear_spec(int in_features, int out_features, Activation activation) {
    qdet::LayerSpec spec;
    spec.name = "test.linear";
    spec.kind = qdet::LayerSpec::Kind::linear;
    spec.in_channels = in_features;
    spec.out_channels = out_features;
    spec.activation = activation;
    return spec;
}

qdet::LayerParams fp32_params(const qdet::LayerSpec &spec, const std::vector<float> &weight,
                              const std::vector<float> &bias) {
    qdet::LayerParams params;
    params.spec = spec;
    params.bias = qdet::make_f32_tensor({spec.out_channels}, bias.data());
    params.weight = qdet::make_f32_tensor(spec.weight_shape(), weight.data());
    return params;
}

qdet::LayerParams int8_params(const qdet::LayerSpec &spec, const std::vector<int8_t> &weight,
                              const std::vector<float> &scales, const std::vector<float> &bias) {
    qdet::LayerParams params;
    params.spec = spec;
    params.bias = qdet::make_f32_tensor({spec.out_channels}, bias.data());
    params.weight_s8 = qdet::HostTensor(qdet::DType::s8, spec.weight_shape());
    std::memcpy(params.weight_s8.bytes.data(), weight.data(), weight.size());
    params.weight_scales = scales;
    return params;
}

// Executes a prepared primitive with its own scratchpad.
void execute(const qdet::PreparedPrimitive &prepared, const dnnl::memory &src, const dnnl::memory &dst) {
    auto args = prepared.args(src, dst);
    dnnl::memory scratchpad;
    if (prepared.scratchpad_desc.get_size() > 0) {
        scratchpad = dnnl::memory(prepared.scratchpad_desc, dnnl_context().engine);
        args[DNNL_ARG_SCRATCHPAD] = scratchpad;
    }
    prepared.primitive.execute(dnnl_context().stream, args);
    dnnl_context().stream.wait();
}

// Random integers in [lo, hi] as type T.
template <typename T>
std::vector<T> random_integers(size_t count, int lo, int hi, uint32_t seed) {
    std::mt19937 generator(seed);
    std::uniform_int_distribution<int> distribution(lo, hi);
    std::vector<T> values(count);
    for (T &v : values) v = static_cast<T>(distribution(generator));
    return values;
}

template <typename T>
std::vector<double> to_double(const std::vector<T> &values) {
    return std::vector<double>(values.begin(), values.end());
}

int saturate_round(double value, dt type) {
    const double lo = type == dt::u8 ? 0.0 : -128.0;
    const double hi = type == dt::u8 ? 255.0 : 127.0;
    return static_cast<int>(std::min(std::max(std::nearbyint(value), lo), hi));
}

// FP32 results agree with the double reference to 1e-5 of the sum of |terms|
// (oneDNN sums in another order and in float); hardswish's slope is at most
// 1.5, so its error bound is 1.5 times larger.
size_t count_fp32_mismatches(const std::vector<float> &got, const std::vector<double> &expected,
                             const std::vector<double> &magnitude, Activation activation, double *worst) {
    const double slope = activation == Activation::hardswish ? 1.5 : 1.0;
    size_t mismatches = 0;
    *worst = 0.0;
    for (size_t i = 0; i < got.size(); ++i) {
        const double error = std::fabs(got[i] - expected[i]);
        const double tolerance = slope * 1e-5 * magnitude[i] + 1e-7;
        *worst = std::max(*worst, error / tolerance);
        if (!(error <= tolerance)) ++mismatches;
    }
    return mismatches;
}

struct Fp32ConvCase {
    const char *name;
    ConvShape shape;
    Activation activation;
    Layout layout;
    bool residual;
};

// groups == in_channels marks a depthwise convolution.
const Fp32ConvCase kFp32ConvCases[] = {
    {"1x1 24 to 40", {24, 40, 7, 9, 1, 1, 1}, Activation::none, Layout::blocked16, false},
    {"1x1 24 to 40 relu", {24, 40, 7, 9, 1, 1, 1}, Activation::relu, Layout::nhwc, false},
    {"3x3 pad 1 16 to 32 relu", {16, 32, 7, 9, 3, 1, 1}, Activation::relu, Layout::blocked16, false},
    {"3x3 pad 1 20 to 24 hardswish", {20, 24, 7, 9, 3, 1, 1}, Activation::hardswish, Layout::nhwc, false},
    {"5x5 pad 2 24 to 40 hardswish", {24, 40, 9, 7, 5, 1, 1}, Activation::hardswish, Layout::blocked16, false},
    {"3x3 stride 2 16 to 24 relu", {16, 24, 7, 9, 3, 2, 1}, Activation::relu, Layout::nhwc, false},
    {"3x3 stride 2 3 to 16 hardswish", {3, 16, 11, 13, 3, 2, 1}, Activation::hardswish, Layout::blocked16, false},
    {"1x1 on 1x1 map 960 to 240 relu", {960, 240, 1, 1, 1, 1, 1}, Activation::relu, Layout::nhwc, false},
    {"1x1 on 1x1 map 120 to 40", {120, 40, 1, 1, 1, 1, 1}, Activation::none, Layout::blocked16, false},
    {"3x3 on 1x1 map 16 to 20", {16, 20, 1, 1, 3, 1, 1}, Activation::relu, Layout::nhwc, false},
    {"depthwise 3x3 72 relu", {72, 72, 7, 9, 3, 1, 72}, Activation::relu, Layout::blocked16, false},
    {"depthwise 3x3 72 relu nhwc", {72, 72, 7, 9, 3, 1, 72}, Activation::relu, Layout::nhwc, false},
    {"depthwise 5x5 stride 2 40 hardswish", {40, 40, 9, 7, 5, 2, 40}, Activation::hardswish, Layout::nhwc, false},
    {"depthwise 3x3 stride 2 120", {120, 120, 8, 5, 3, 2, 120}, Activation::hardswish, Layout::blocked16, false},
    {"depthwise 5x5 on 1x1 map 24", {24, 24, 1, 1, 5, 1, 24}, Activation::none, Layout::nhwc, false},
    {"1x1 24 to 40 plus residual", {24, 40, 7, 9, 1, 1, 1}, Activation::none, Layout::blocked16, true},
    {"1x1 40 to 24 plus residual", {40, 24, 5, 3, 1, 1, 1}, Activation::none, Layout::nhwc, true},
    {"depthwise 3x3 plus residual relu", {72, 72, 5, 6, 3, 1, 72}, Activation::relu, Layout::nhwc, true},
};

struct Int8ConvCase {
    const char *name;
    ConvShape shape;
    Activation activation;
};

const Int8ConvCase kInt8ConvCases[] = {
    {"1x1 24 to 40", {24, 40, 7, 9, 1, 1, 1}, Activation::none},
    {"1x1 24 to 40 relu", {24, 40, 7, 9, 1, 1, 1}, Activation::relu},
    {"3x3 stride 2 20 to 24", {20, 24, 7, 9, 3, 2, 1}, Activation::relu},
    {"5x5 pad 2 16 to 40", {16, 40, 6, 5, 5, 1, 1}, Activation::none},
    {"1x1 on 1x1 map 120 to 40", {120, 40, 1, 1, 1, 1, 1}, Activation::none},
    {"depthwise 3x3 72", {72, 72, 7, 9, 3, 1, 72}, Activation::relu},
    {"depthwise 5x5 stride 2 40", {40, 40, 9, 7, 5, 2, 40}, Activation::none},
    {"depthwise 3x3 stride 2 120 hardswish", {120, 120, 8, 5, 3, 2, 120}, Activation::hardswish},
    {"3x3 pad 1 16 to 24 hardswish", {16, 24, 5, 7, 3, 1, 1}, Activation::hardswish},
};

}  // namespace

TEST_SUITE("unit") {

TEST_CASE("dnnl layer fp32 convolution") {
    Dnnl &context = dnnl_context();
    uint32_t seed = 1000;
    for (const Fp32ConvCase &c : kFp32ConvCases) {
        const ConvShape &s = c.shape;
        INFO("case: ", std::string(c.name), ", layout ", std::string(layout_text(c.layout)), ", activation ",
             std::string(activation_text(c.activation)));
        const std::vector<float> src = qdet::test::random_floats(
            static_cast<size_t>(s.in_channels) * s.height * s.width, -2.f, 2.f, ++seed);
        const std::vector<float> weight = qdet::test::random_floats(s.weight_count(), -0.5f, 0.5f, ++seed);
        const std::vector<float> bias = qdet::test::random_floats(s.out_channels, -1.f, 1.f, ++seed);
        const size_t out_count = static_cast<size_t>(s.out_channels) * s.out_height() * s.out_width();
        const std::vector<float> residual = qdet::test::random_floats(out_count, -3.f, 3.f, ++seed);

        std::vector<double> magnitude;
        std::vector<double> expected = reference_conv(s, src, weight, to_double(bias), &magnitude);
        for (size_t i = 0; i < expected.size(); ++i) {
            if (c.residual) {
                expected[i] += residual[i];
                magnitude[i] += std::fabs(residual[i]);
            }
            // oneDNN applies the sum post-op before the activation.
            expected[i] = activate(c.activation, expected[i]);
        }

        qdet::DnnlLayer layer(fp32_params(conv_spec(s, c.activation), weight, bias), qdet::Precision::fp32,
                              context.engine);
        const dnnl::memory::desc src_desc({1, s.in_channels, s.height, s.width}, dt::f32, tag_of(c.layout));
        const dnnl::memory::desc dst_desc({1, s.out_channels, s.out_height(), s.out_width()}, dt::f32,
                                          tag_of(c.layout));
        const std::optional<float> sum_scale = c.residual ? std::optional<float>(1.f) : std::nullopt;
        const qdet::PreparedPrimitive prepared = layer.prepare(src_desc, dst_desc, 1.f, {}, sum_scale);
        CHECK(prepared.src_desc == src_desc);
        CHECK(prepared.dst_desc == dst_desc);
        CHECK_FALSE(prepared.implementation.empty());

        dnnl::memory src_memory(src_desc, context.engine);
        dnnl::memory dst_memory(dst_desc, context.engine);
        fill_memory(src_memory, src);
        fill_memory(dst_memory, c.residual ? residual : std::vector<float>(out_count, 1e6f));
        execute(prepared, src_memory, dst_memory);

        double worst = 0.0;
        const std::vector<float> got = read_memory<float>(dst_memory);
        const size_t mismatches = count_fp32_mismatches(got, expected, magnitude, c.activation, &worst);
        INFO("largest error / tolerance ", worst);
        CHECK(mismatches == 0);
    }
}

TEST_CASE("dnnl layer fp32 linear") {
    struct Case {
        const char *name;
        int rows;
        dnnl::memory::dims src_dims;  // {rows, features}
        tag src_tag;
        int out_features;
        Activation activation;
    };
    const Case cases[] = {
        {"2-d input", 5, {5, 100}, tag::nc, 37, Activation::none},
        {"2-d input relu", 3, {3, 256}, tag::nc, 64, Activation::relu},
        {"one row", 1, {1, 33}, tag::nc, 17, Activation::none},
    };
    Dnnl &context = dnnl_context();
    uint32_t seed = 2000;
    for (const Case &c : cases) {
        INFO("case: ", std::string(c.name));
        int features = 1;
        for (size_t d = 1; d < c.src_dims.size(); ++d) features *= static_cast<int>(c.src_dims[d]);
        const std::vector<float> src =
            qdet::test::random_floats(static_cast<size_t>(c.rows) * features, -2.f, 2.f, ++seed);
        const std::vector<float> weight =
            qdet::test::random_floats(static_cast<size_t>(c.out_features) * features, -0.5f, 0.5f, ++seed);
        const std::vector<float> bias = qdet::test::random_floats(c.out_features, -1.f, 1.f, ++seed);

        // The reference flattens each row in C, H, W order, as torch does.
        std::vector<double> expected(static_cast<size_t>(c.rows) * c.out_features);
        std::vector<double> magnitude(expected.size());
        for (int r = 0; r < c.rows; ++r) {
            for (int o = 0; o < c.out_features; ++o) {
                double acc = bias[o];
                double sum_abs = std::fabs(bias[o]);
                for (int k = 0; k < features; ++k) {
                    const double term = static_cast<double>(weight[static_cast<size_t>(o) * features + k]) *
                                        src[static_cast<size_t>(r) * features + k];
                    acc += term;
                    sum_abs += std::fabs(term);
                }
                expected[static_cast<size_t>(r) * c.out_features + o] = activate(c.activation, acc);
                magnitude[static_cast<size_t>(r) * c.out_features + o] = sum_abs;
            }
        }

        qdet::DnnlLayer layer(fp32_params(linear_spec(features, c.out_features, c.activation), weight, bias),
                              qdet::Precision::fp32, context.engine);
        const dnnl::memory::desc src_desc(c.src_dims, dt::f32, c.src_tag);
        const dnnl::memory::desc dst_desc({c.rows, c.out_features}, dt::f32, tag::nc);
        const qdet::PreparedPrimitive prepared = layer.prepare(src_desc, dst_desc, 1.f, {}, std::nullopt);
        dnnl::memory src_memory(src_desc, context.engine);
        dnnl::memory dst_memory(dst_desc, context.engine);
        fill_memory(src_memory, src);
        execute(prepared, src_memory, dst_memory);

        double worst = 0.0;
        const std::vector<float> got = read_memory<float>(dst_memory);
        const size_t mismatches = count_fp32_mismatches(got, expected, magnitude, c.activation, &worst);
        INFO("largest error / tolerance ", worst);
        CHECK(mismatches == 0);
    }
}

TEST_CASE("dnnl layer int8 exact on integers") {
    // Integer data with all scales 1, zero bias and an f32 destination: the
    // s32 accumulator is converted to float exactly while |acc| < 2^24. The
    // ranges keep each pair of u8 x s8 products inside int16 as well, which
    // CPUs without VNNI need for an exact result.
    Dnnl &context = dnnl_context();
    uint32_t seed = 3000;
    for (const Int8ConvCase &c : kInt8ConvCases) {
        if (c.activation == Activation::hardswish) continue;  // not exact in float; see the scaled test
        for (const dt src_type : {dt::u8, dt::s8}) {
            const ConvShape &s = c.shape;
            INFO("case: ", std::string(c.name), ", src ", std::string(src_type == dt::u8 ? "u8" : "s8"));
            const size_t src_count = static_cast<size_t>(s.in_channels) * s.height * s.width;
            const std::vector<int8_t> weight = random_integers<int8_t>(s.weight_count(), -60, 60, ++seed);
            const std::vector<float> ones(s.out_channels, 1.f);
            const std::vector<float> zeros(s.out_channels, 0.f);
            const std::vector<uint8_t> src_u8 = random_integers<uint8_t>(src_count, 0, 100, ++seed);
            const std::vector<int8_t> src_s8 = random_integers<int8_t>(src_count, -100, 100, ++seed);

            std::vector<double> magnitude;
            const std::vector<double> zero_bias(s.out_channels, 0.0);
            std::vector<double> expected = src_type == dt::u8
                                               ? reference_conv(s, src_u8, weight, zero_bias, &magnitude)
                                               : reference_conv(s, src_s8, weight, zero_bias, &magnitude);
            for (double &v : expected) v = activate(c.activation, v);

            qdet::DnnlLayer layer(int8_params(conv_spec(s, c.activation), weight, ones, zeros),
                                  qdet::Precision::int8, context.engine);
            const dnnl::memory::desc src_desc({1, s.in_channels, s.height, s.width}, src_type, tag::nhwc);
            const dnnl::memory::desc dst_desc({1, s.out_channels, s.out_height(), s.out_width()}, dt::f32,
                                              tag::nhwc);
            const qdet::PreparedPrimitive prepared = layer.prepare(src_desc, dst_desc, 1.f, {}, std::nullopt);
            dnnl::memory src_memory(src_desc, context.engine);
            dnnl::memory dst_memory(dst_desc, context.engine);
            if (src_type == dt::u8) {
                fill_memory(src_memory, src_u8);
            } else {
                fill_memory(src_memory, src_s8);
            }
            execute(prepared, src_memory, dst_memory);

            const std::vector<float> got = read_memory<float>(dst_memory);
            size_t mismatches = 0;
            size_t first = 0;
            for (size_t i = 0; i < got.size(); ++i) {
                if (static_cast<double>(got[i]) != expected[i] && mismatches++ == 0) first = i;
            }
            INFO("first mismatch at ", first, ": got ", got[first], ", expected ", expected[first]);
            CHECK(mismatches == 0);
        }
    }
}

TEST_CASE("dnnl layer int8 linear exact") {
    Dnnl &context = dnnl_context();
    const int rows = 4, features = 200, outputs = 30;
    const std::vector<uint8_t> src = random_integers<uint8_t>(static_cast<size_t>(rows) * features, 0, 100, 41);
    const std::vector<int8_t> weight = random_integers<int8_t>(static_cast<size_t>(outputs) * features, -60, 60, 42);
    qdet::DnnlLayer layer(int8_params(linear_spec(features, outputs, Activation::relu), weight,
                                      std::vector<float>(outputs, 1.f), std::vector<float>(outputs, 0.f)),
                          qdet::Precision::int8, context.engine);
    const dnnl::memory::desc src_desc({rows, features}, dt::u8, tag::nc);
    const dnnl::memory::desc dst_desc({rows, outputs}, dt::f32, tag::nc);
    const qdet::PreparedPrimitive prepared = layer.prepare(src_desc, dst_desc, 1.f, {}, std::nullopt);
    dnnl::memory src_memory(src_desc, context.engine);
    dnnl::memory dst_memory(dst_desc, context.engine);
    fill_memory(src_memory, src);
    execute(prepared, src_memory, dst_memory);
    const std::vector<float> got = read_memory<float>(dst_memory);

    size_t mismatches = 0;
    for (int r = 0; r < rows; ++r) {
        for (int o = 0; o < outputs; ++o) {
            long acc = 0;
            for (int k = 0; k < features; ++k) {
                acc += static_cast<long>(src[static_cast<size_t>(r) * features + k]) *
                       weight[static_cast<size_t>(o) * features + k];
            }
            if (got[static_cast<size_t>(r) * outputs + o] != static_cast<float>(std::max(acc, 0L))) ++mismatches;
        }
    }
    CHECK(mismatches == 0);
}

TEST_CASE("dnnl layer int8 scaled within one step") {
    struct DstCase {
        const char *name;
        dt type;
        double range_steps;  // the largest |real| maps to this many steps
        bool saturating;     // range_steps exceeds the type's maximum
        bool residual;
    };
    // u8 follows relu and s8 the other activations, as the engine writes them.
    const DstCase dst_cases[] = {
        {"u8 dst", dt::u8, 200.0, false, false},
        {"s8 dst", dt::s8, 100.0, false, false},
        {"s8 dst saturating", dt::s8, 200.0, true, false},
        {"u8 dst saturating", dt::u8, 400.0, true, false},
        {"f32 dst", dt::f32, 0.0, false, false},
        {"s8 dst plus residual", dt::s8, 100.0, false, true},
        {"u8 dst plus residual", dt::u8, 200.0, false, true},
    };
    Dnnl &context = dnnl_context();
    uint32_t seed = 4000;
    for (const Int8ConvCase &c : kInt8ConvCases) {
        for (const DstCase &d : dst_cases) {
            if (d.type == dt::u8 && c.activation != Activation::relu) continue;
            if (d.type == dt::s8 && c.activation == Activation::relu) continue;
            // A residual sum after hardswish is rejected; checked below.
            if (d.residual && c.activation == Activation::hardswish) continue;
            const ConvShape &s = c.shape;
            INFO("case: ", std::string(c.name), ", ", std::string(d.name), ", activation ",
                 std::string(activation_text(c.activation)));
            const size_t src_count = static_cast<size_t>(s.in_channels) * s.height * s.width;
            const size_t out_count = static_cast<size_t>(s.out_channels) * s.out_height() * s.out_width();
            const std::vector<uint8_t> src = random_integers<uint8_t>(src_count, 0, 100, ++seed);
            const std::vector<int8_t> weight = random_integers<int8_t>(s.weight_count(), -60, 60, ++seed);
            const std::vector<float> weight_scales = qdet::test::random_floats(s.out_channels, 0.002f, 0.01f, ++seed);
            const std::vector<float> bias = qdet::test::random_floats(s.out_channels, -1.f, 1.f, ++seed);
            const float src_scale = 0.05f;
            const std::vector<int8_t> previous_s8 = random_integers<int8_t>(out_count, -100, 100, ++seed);
            const std::vector<uint8_t> previous_u8 = random_integers<uint8_t>(out_count, 0, 200, ++seed);
            const float previous_scale = 0.01f;

            // Real-valued reference: scale the integer products, add the
            // bias and the residual, then activate.
            std::vector<double> magnitude;
            std::vector<double> acc = reference_conv(s, src, weight, std::vector<double>(s.out_channels, 0.0),
                                                     &magnitude);
            const size_t plane = static_cast<size_t>(s.out_height()) * s.out_width();
            std::vector<double> real(out_count);
            std::vector<double> largest(s.out_channels, 0.0);
            for (size_t i = 0; i < out_count; ++i) {
                const int o = static_cast<int>(i / plane);
                double value = static_cast<double>(src_scale) * weight_scales[o] * acc[i] + bias[o];
                if (d.residual) {
                    const double previous = d.type == dt::u8 ? previous_u8[i] : previous_s8[i];
                    value += previous_scale * previous;
                }
                real[i] = activate(c.activation, value);
                largest[o] = std::max(largest[o], std::fabs(real[i]));
            }
            const double overall = *std::max_element(largest.begin(), largest.end());
            REQUIRE(overall > 0.0);
            // One scale per output channel, each mapping that channel's largest
            // value to range_steps. A fused residual sum has a single sum
            // scale, so those cases use one scale for every channel.
            std::vector<float> dst_scales;
            if (d.type != dt::f32) {
                for (int o = 0; o < s.out_channels; ++o) {
                    const double channel_largest = d.residual || largest[o] == 0.0 ? overall : largest[o];
                    dst_scales.push_back(static_cast<float>(channel_largest / d.range_steps));
                }
            }

            qdet::DnnlLayer layer(int8_params(conv_spec(s, c.activation), weight, weight_scales, bias),
                                  qdet::Precision::int8, context.engine);
            const dnnl::memory::desc src_desc({1, s.in_channels, s.height, s.width}, dt::u8, tag::nhwc);
            const dnnl::memory::desc dst_desc({1, s.out_channels, s.out_height(), s.out_width()}, d.type,
                                              tag::nhwc);
            const std::optional<float> sum_scale =
                d.residual ? std::optional<float>(previous_scale / dst_scales[0]) : std::nullopt;
            const qdet::PreparedPrimitive prepared = layer.prepare(src_desc, dst_desc, src_scale, dst_scales, sum_scale);
            dnnl::memory src_memory(src_desc, context.engine);
            dnnl::memory dst_memory(dst_desc, context.engine);
            fill_memory(src_memory, src);
            if (d.type == dt::u8) fill_memory(dst_memory, previous_u8);
            if (d.type == dt::s8) fill_memory(dst_memory, previous_s8);
            execute(prepared, src_memory, dst_memory);

            size_t bad = 0;
            size_t saturated = 0;
            if (d.type == dt::f32) {
                // Exact integer accumulator, then a few float roundings of
                // values below |real| + |bias|: 1e-6 relative.
                const std::vector<float> got = read_memory<float>(dst_memory);
                for (size_t i = 0; i < out_count; ++i) {
                    if (!(std::fabs(got[i] - real[i]) <= 1e-6 * (std::fabs(real[i]) + 1.0))) ++bad;
                }
            } else {
                // oneDNN rounds to nearest even and saturates; its float
                // arithmetic may move a value near a tie by one step.
                std::vector<int> got;
                if (d.type == dt::u8) {
                    for (uint8_t v : read_memory<uint8_t>(dst_memory)) got.push_back(v);
                } else {
                    for (int8_t v : read_memory<int8_t>(dst_memory)) got.push_back(v);
                }
                for (size_t i = 0; i < out_count; ++i) {
                    const int o = static_cast<int>(i / plane);
                    const int want = saturate_round(real[i] / dst_scales[o], d.type);
                    if (want == 127 || want == 255) ++saturated;
                    if (std::abs(got[i] - want) > 1) ++bad;
                }
                if (d.saturating) CHECK(saturated > 0);
            }
            CHECK(bad == 0);
        }
    }
}

TEST_CASE("dnnl layer int8 hardswish sum rejected") {
    const ConvShape s{16, 16, 4, 4, 1, 1, 1};
    qdet::DnnlLayer layer(int8_params(conv_spec(s, Activation::hardswish), std::vector<int8_t>(256, 1),
                                      std::vector<float>(16, 0.01f), std::vector<float>(16, 0.f)),
                          qdet::Precision::int8, dnnl_context().engine);
    const dnnl::memory::desc src_desc({1, 16, 4, 4}, dt::u8, tag::nhwc);
    const dnnl::memory::desc dst_desc({1, 16, 4, 4}, dt::s8, tag::nhwc);
    CHECK_THROWS_AS(layer.prepare(src_desc, dst_desc, 0.1f, std::vector<float>(16, 0.1f), 1.f), qdet::Error);
}

TEST_CASE("dnnl layer append accumulates residual") {
    struct Case {
        const char *name;
        Layout layout;
        bool int8;
    };
    const Case cases[] = {
        {"fp32 nChw16c", Layout::blocked16, false},
        {"fp32 nhwc", Layout::nhwc, false},
        {"int8 nhwc", Layout::nhwc, true},
    };
    Dnnl &context = dnnl_context();
    const ConvShape s{24, 40, 6, 5, 1, 1, 1};
    const size_t src_count = static_cast<size_t>(s.in_channels) * s.height * s.width;
    const size_t out_count = static_cast<size_t>(s.out_channels) * s.height * s.width;
    uint32_t seed = 5000;
    for (const Case &c : cases) {
        INFO("case: ", std::string(c.name));
        const std::vector<float> weight = qdet::test::random_floats(s.weight_count(), -0.5f, 0.5f, ++seed);
        const std::vector<int8_t> weight_s8 = random_integers<int8_t>(s.weight_count(), -60, 60, ++seed);
        const std::vector<float> weight_scales = qdet::test::random_floats(s.out_channels, 0.002f, 0.01f, ++seed);
        const std::vector<float> bias = qdet::test::random_floats(s.out_channels, -1.f, 1.f, ++seed);
        const std::vector<float> src_f32 = qdet::test::random_floats(src_count, -2.f, 2.f, ++seed);
        const std::vector<float> residual_f32 = qdet::test::random_floats(out_count, -3.f, 3.f, ++seed);
        const std::vector<uint8_t> src_u8 = random_integers<uint8_t>(src_count, 0, 100, ++seed);
        const std::vector<int8_t> residual_s8 = random_integers<int8_t>(out_count, -100, 100, ++seed);
        // append() expects the source scale folded into the weight scales.
        const float src_scale = 0.05f;       // INT8 source
        const float residual_scale = 0.02f;  // INT8 residual tensor
        const float output_scale = 0.03f;    // INT8 result
        std::vector<float> folded_scales = weight_scales;
        for (float &scale : folded_scales) scale *= src_scale;
        const auto per_channel = [](int channels, float scale) { return std::vector<float>(channels, scale); };

        qdet::Plan plan;
        qdet::PlanBuilder builder(context.engine, &plan);
        const qdet::DType data_type = c.int8 ? qdet::DType::s8 : qdet::DType::f32;
        const qdet::FeatureMap src =
            builder.allocate("src", s.in_channels, s.height, s.width, c.int8 ? qdet::DType::u8 : qdet::DType::f32,
                             c.layout, c.int8 ? per_channel(s.in_channels, src_scale) : std::vector<float>());
        const qdet::FeatureMap residual =
            builder.allocate("residual", s.out_channels, s.height, s.width, data_type, c.layout,
                             c.int8 ? per_channel(s.out_channels, residual_scale) : std::vector<float>());
        qdet::DnnlLayer layer(c.int8 ? int8_params(conv_spec(s, Activation::none), weight_s8, folded_scales, bias)
                                     : fp32_params(conv_spec(s, Activation::none), weight, bias),
                              c.int8 ? qdet::Precision::int8 : qdet::Precision::fp32, context.engine);
        qdet::LayerOutput output;
        output.dtype = data_type;
        output.layout = c.layout;
        if (c.int8) output.scales = per_channel(s.out_channels, output_scale);
        output.accumulate = &residual;
        const qdet::FeatureMap out = layer.append(builder, qdet::Stage::backbone, src, output, "sum");
        builder.finalize();
        CHECK(out.name == "sum");
        CHECK(out.data() == residual.data());

        if (c.int8) {
            fill_memory(src.memory, src_u8);
            fill_memory(residual.memory, residual_s8);
        } else {
            fill_memory(src.memory, src_f32);
            fill_memory(residual.memory, residual_f32);
        }
        plan.run(context.stream, nullptr);

        std::vector<double> magnitude;
        const size_t plane = static_cast<size_t>(s.height) * s.width;
        size_t bad = 0;
        if (c.int8) {
            const std::vector<double> acc =
                reference_conv(s, src_u8, weight_s8, std::vector<double>(s.out_channels, 0.0), &magnitude);
            const std::vector<int8_t> got = read_memory<int8_t>(out.memory);
            for (size_t i = 0; i < out_count; ++i) {
                const int o = static_cast<int>(i / plane);
                const double real = static_cast<double>(src_scale) * weight_scales[o] * acc[i] + bias[o] +
                                    static_cast<double>(residual_scale) * residual_s8[i];
                if (std::abs(got[i] - saturate_round(real / output_scale, dt::s8)) > 1) ++bad;
            }
        } else {
            std::vector<double> expected = reference_conv(s, src_f32, weight, to_double(bias), &magnitude);
            for (size_t i = 0; i < out_count; ++i) {
                expected[i] += residual_f32[i];
                magnitude[i] += std::fabs(residual_f32[i]);
            }
            double worst = 0.0;
            bad = count_fp32_mismatches(read_memory<float>(out.memory), expected, magnitude, Activation::none,
                                        &worst);
        }
        CHECK(bad == 0);
    }
}

}  // TEST_SUITE("unit")
