// bench_layers: times every convolution and fully connected layer of the
// detector in FP32 and INT8, at the shapes one input size produces, with the
// same oneDNN primitives and layouts the engine uses. It also measures the
// machine's FP32 and INT8 peak, so each layer's speed reads as a fraction
// of it.
//
//   build/bench_layers --weights model.qdet [--size 640x640] [--proposals 300]
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "engine/architecture.h"
#include "engine/cli.h"
#include "engine/detector.h"
#include "engine/dnnl_layer.h"
#include "engine/error.h"
#include "engine/file_util.h"
#include "engine/quant_table.h"
#include "engine/weight_file.h"

namespace {

using namespace qdet;
using Clock = std::chrono::steady_clock;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

// One timed layer call: the layer and its input shape.
struct Call {
    std::string label;  // layer name, with "#level" for the RPN head
    const LayerSpec *spec = nullptr;
    std::string input;  // input tensor name (for INT8 signedness)
    int rows = 1;       // fully connected: proposals
    int channels = 0, height = 0, width = 0;
    bool input_nonnegative = false;
};

struct Timing {
    double fp32_ms = 0, int8_ms = 0;
    double ops = 0;  // 2 x multiply-adds
    std::string fp32_impl, int8_impl;
};

double median(std::vector<double> values) {
    std::sort(values.begin(), values.end());
    return values[values.size() / 2];
}

// Runs `body` `repeats` times after two warm-up calls; returns the median ms.
template <typename Body>
double time_ms(int repeats, Body body) {
    body();
    body();
    std::vector<double> samples;
    for (int r = 0; r < repeats; ++r) {
        auto start = Clock::now();
        body();
        samples.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
    }
    return median(samples);
}

// Peak throughput: per thread, a loop of 12 independent 512-bit FMA
// (FP32) or VPDPBUSD (INT8) chains, enough to hide their latency. Written
// in assembly so that the compiler can neither fold nor drop the chains.
__attribute__((target("avx512f,avx512vnni"))) void peak_loop(bool int8, long iterations) {
#define QDET_CLOBBERS "zmm0", "zmm1", "zmm2", "zmm3", "zmm4", "zmm5", "zmm6", "zmm7", "zmm8", "zmm9", "zmm10", \
                      "zmm11", "zmm12", "zmm13", "cc"
    if (int8) {
        asm volatile(
            "vpxord %%zmm12, %%zmm12, %%zmm12\n\t"
            "vpternlogd $0xff, %%zmm13, %%zmm13, %%zmm13\n\t"
            "1:\n\t"
            "vpdpbusd %%zmm12, %%zmm13, %%zmm0\n\t"
            "vpdpbusd %%zmm12, %%zmm13, %%zmm1\n\t"
            "vpdpbusd %%zmm12, %%zmm13, %%zmm2\n\t"
            "vpdpbusd %%zmm12, %%zmm13, %%zmm3\n\t"
            "vpdpbusd %%zmm12, %%zmm13, %%zmm4\n\t"
            "vpdpbusd %%zmm12, %%zmm13, %%zmm5\n\t"
            "vpdpbusd %%zmm12, %%zmm13, %%zmm6\n\t"
            "vpdpbusd %%zmm12, %%zmm13, %%zmm7\n\t"
            "vpdpbusd %%zmm12, %%zmm13, %%zmm8\n\t"
            "vpdpbusd %%zmm12, %%zmm13, %%zmm9\n\t"
            "vpdpbusd %%zmm12, %%zmm13, %%zmm10\n\t"
            "vpdpbusd %%zmm12, %%zmm13, %%zmm11\n\t"
            "dec %0\n\t"
            "jnz 1b\n\t"
            : "+r"(iterations)
            :
            : QDET_CLOBBERS);
    } else {
        asm volatile(
            "vpxord %%zmm12, %%zmm12, %%zmm12\n\t"
            "vpxord %%zmm13, %%zmm13, %%zmm13\n\t"
            "1:\n\t"
            "vfmadd231ps %%zmm12, %%zmm13, %%zmm0\n\t"
            "vfmadd231ps %%zmm12, %%zmm13, %%zmm1\n\t"
            "vfmadd231ps %%zmm12, %%zmm13, %%zmm2\n\t"
            "vfmadd231ps %%zmm12, %%zmm13, %%zmm3\n\t"
            "vfmadd231ps %%zmm12, %%zmm13, %%zmm4\n\t"
            "vfmadd231ps %%zmm12, %%zmm13, %%zmm5\n\t"
            "vfmadd231ps %%zmm12, %%zmm13, %%zmm6\n\t"
            "vfmadd231ps %%zmm12, %%zmm13, %%zmm7\n\t"
            "vfmadd231ps %%zmm12, %%zmm13, %%zmm8\n\t"
            "vfmadd231ps %%zmm12, %%zmm13, %%zmm9\n\t"
            "vfmadd231ps %%zmm12, %%zmm13, %%zmm10\n\t"
            "vfmadd231ps %%zmm12, %%zmm13, %%zmm11\n\t"
            "dec %0\n\t"
            "jnz 1b\n\t"
            : "+r"(iterations)
            :
            : QDET_CLOBBERS);
    }
#undef QDET_CLOBBERS
}

double measure_peak_gops(bool int8, int threads) {
    const long iterations = 2000000;
    auto run = [&] {
#pragma omp parallel num_threads(threads)
        peak_loop(int8, iterations);
    };
    run();  // warm up the clocks
    auto start = Clock::now();
    run();
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    // Per instruction: FP32 16 lanes x 2 ops; INT8 64 u8 x s8 products x 2 ops.
    const double ops_per_instruction = int8 ? 128.0 : 32.0;
    return static_cast<double>(iterations) * 12 * ops_per_instruction * threads / seconds / 1e9;
}

// Multiply-adds of one call.
double multiply_adds(const Call &c) {
    const LayerSpec &s = *c.spec;
    if (s.kind == LayerSpec::Kind::linear) return static_cast<double>(c.rows) * s.in_channels * s.out_channels;
    const int out_h = (c.height + 2 * s.padding() - s.kernel) / s.stride + 1;
    const int out_w = (c.width + 2 * s.padding() - s.kernel) / s.stride + 1;
    return static_cast<double>(out_h) * out_w * s.out_channels * (s.in_channels / s.groups) * s.kernel * s.kernel;
}

Timing time_call(const Call &call, const WeightFile &file, const QuantTable &quant, const dnnl::engine &engine,
                 dnnl::stream &stream, int repeats) {
    const LayerSpec &s = *call.spec;
    Timing timing;
    timing.ops = 2.0 * multiply_adds(call);
    const bool linear = s.kind == LayerSpec::Kind::linear;
    const int out_h = linear ? 1 : (call.height + 2 * s.padding() - s.kernel) / s.stride + 1;
    const int out_w = linear ? 1 : (call.width + 2 * s.padding() - s.kernel) / s.stride + 1;
    // The engine's f32-output layers: RPN head outputs and the predictor.
    const bool f32_output = call.label.rfind("rpn.head.cls_logits", 0) == 0 ||
                            call.label.rfind("rpn.head.bbox_pred", 0) == 0 ||
                            call.label.rfind("roi_heads.box_predictor", 0) == 0;

    for (const Precision precision : {Precision::fp32, Precision::int8}) {
        const bool int8 = precision == Precision::int8;
        DnnlLayer layer(load_layer_params(file, s, precision), precision, engine);
        dt src_type = dt::f32, dst_type = dt::f32;
        if (int8) {
            src_type = call.input_nonnegative ? dt::u8 : dt::s8;
            if (f32_output) {
                dst_type = dt::f32;
            } else {
                dst_type = s.activation == Activation::relu ? dt::u8 : dt::s8;
            }
        }
        const tag layout = int8 ? tag::nhwc : tag::nChw16c;
        dnnl::memory::desc src_desc, dst_desc;
        if (linear) {
            src_desc = dnnl::memory::desc({call.rows, s.in_channels}, src_type, tag::nc);
            dst_desc = dnnl::memory::desc({call.rows, s.out_channels}, dst_type, tag::nc);
        } else {
            src_desc = dnnl::memory::desc({1, s.in_channels, call.height, call.width}, src_type,
                                          call.label == "backbone.body.0.0" && !int8 ? tag::nchw : layout);
            dst_desc = dnnl::memory::desc({1, s.out_channels, out_h, out_w}, dst_type, layout);
        }
        std::vector<float> dst_scales;
        if (int8 && dst_type != dt::f32) {
            auto it = quant.activation_scales.find(call.label.substr(0, call.label.find('#')) ==
                                                           "rpn.head.conv.0.0"
                                                       ? call.label
                                                       : s.name);
            dst_scales = it != quant.activation_scales.end() && static_cast<int>(it->second.size()) == s.out_channels
                             ? it->second
                             : std::vector<float>(s.out_channels, 0.05f);
        }
        const PreparedPrimitive prepared = layer.prepare(src_desc, dst_desc, 1.f, dst_scales, std::nullopt);
        dnnl::memory src(src_desc, engine), dst(dst_desc, engine);
        std::memset(src.get_data_handle(), 1, src_desc.get_size());
        auto args = prepared.args(src, dst);
        dnnl::memory scratchpad;
        if (prepared.scratchpad_desc.get_size() > 0) {
            scratchpad = dnnl::memory(prepared.scratchpad_desc, engine);
            args[DNNL_ARG_SCRATCHPAD] = scratchpad;
        }
        const double ms = time_ms(repeats, [&] {
            prepared.primitive.execute(stream, args);
            stream.wait();
        });
        (int8 ? timing.int8_ms : timing.fp32_ms) = ms;
        (int8 ? timing.int8_impl : timing.fp32_impl) = prepared.implementation;
    }
    return timing;
}

// The detector resizes every image to its min_size/max_size range, so larger
// inputs only cost memory for the synthetic image.
constexpr int kMaxSide = 8192;

int bench_main(int argc, char **argv) {
    CommandLine cli("bench_layers",
                    "Time every convolution and fully connected layer of the detector in FP32 and INT8\n"
                    "at the shapes one input size produces, with the engine's primitives and layouts.\n"
                    "Needs a weight file converted with --calib.");
    cli.option("weights", "FILE", "qdet weight file with INT8 calibration");
    cli.option("size", "WxH", "input image size", "640x640");
    cli.option("proposals", "N", "proposals reaching the box head (fc layers' batch)", "300");
    cli.option("threads", "N", "CPU threads (0: all cores)", "0");
    cli.option("repeats", "N", "timed calls per layer and precision (median reported)", "20");
    cli.option("csv", "FILE", "also write the table as CSV");
    if (!cli.parse(argc, argv)) return 0;
    set_thread_count(cli.get_int("threads", 0, 1024));
    const int threads = thread_count();
    const int proposals = cli.get_int("proposals", 1, 100000);
    const int repeats = cli.get_int("repeats", 1, 100000);
    int width = 0, height = 0;
    if (std::sscanf(cli.get("size").c_str(), "%dx%d", &width, &height) != 2 || width <= 0 || height <= 0 ||
        width > kMaxSide || height > kMaxSide) {
        fail(ErrorKind::usage, "option --size takes WIDTHxHEIGHT, each from 1 to " + std::to_string(kMaxSide) +
                                   ", got '" + cli.get("size") + "'");
    }
    if (cli.has("csv")) check_output_file(cli.get("csv"), "csv");

    const WeightFile file = WeightFile::read(cli.require("weights"));
    const QuantTable quant = quant_table_from_json(file.quantization(), file.path());
    if (quant.empty()) fail(ErrorKind::unsupported, file.path() + ": no INT8 calibration; run convert with --calib");

    // Tensor shapes at this input size, from one traced FP32 run.
    Image image;
    image.width = width;
    image.height = height;
    image.rgb.assign(static_cast<size_t>(width) * height * 3, 128);
    DetectorOptions options;
    Detector detector(file, options);
    DetectionTrace trace;
    detector.detect(image, nullptr, &trace);

    std::map<std::string, std::string> input_of;
    for (const LayerInput &entry : layer_inputs(file.config())) input_of[entry.layer] = entry.input;
    std::map<std::string, bool> nonnegative;
    for (const auto &entry : file.quantization().at("activations").items()) {
        nonnegative[entry.key()] = entry.value().value("dtype", "s8") == "u8";
    }

    const std::vector<LayerSpec> layers = detector_layers(file.config());
    std::vector<Call> calls;
    for (const LayerSpec &spec : layers) {
        if (is_squeeze_excitation_layer(spec.name)) continue;
        const std::string input = input_of.at(spec.name);
        const bool rpn = spec.name.rfind("rpn.head.", 0) == 0;
        for (int level = 0; level < (rpn ? kRpnLevels : 1); ++level) {
            Call call;
            call.spec = &spec;
            call.label = rpn ? spec.name + "#" + std::to_string(level) : spec.name;
            call.input = rpn ? (spec.name == "rpn.head.conv.0.0"
                                    ? std::vector<std::string>{"backbone.fpn.layer_blocks.0.0",
                                                               "backbone.fpn.layer_blocks.1.0", kFpnPoolTensor}[level]
                                    : rpn_conv_tensor(level))
                             : input;
            call.input_nonnegative = nonnegative[call.input];
            if (spec.kind == LayerSpec::Kind::linear) {
                call.rows = proposals;
            } else {
                const auto &shape = trace.tensors.at(call.input);
                call.channels = shape.channels;
                call.height = shape.height;
                call.width = shape.width;
            }
            calls.push_back(call);
        }
    }

    const double fp32_peak = measure_peak_gops(false, threads);
    const double int8_peak = measure_peak_gops(true, threads);
    dnnl::engine engine(dnnl::engine::kind::cpu, 0);
    dnnl::stream stream(engine);
    std::vector<Timing> timings;
    double fp32_total = 0, int8_total = 0;
    for (const Call &call : calls) {
        timings.push_back(time_call(call, file, quant, engine, stream, repeats));
        fp32_total += timings.back().fp32_ms;
        int8_total += timings.back().int8_ms;
    }

    std::printf("bench_layers: input %dx%d, %d proposals, %d threads, median of %d calls\n", width, height,
                proposals, threads, repeats);
    std::printf("measured peak: FP32 %.0f GFLOP/s, INT8 %.0f GOP/s (VNNI)\n\n", fp32_peak, int8_peak);
    std::printf("%-40s %9s %9s %8s %8s %8s %8s %7s %6s %6s\n", "layer", "fp32 ms", "int8 ms", "fp32 GOP/s",
                "int8 GOP/s", "fp32 %pk", "int8 %pk", "speedup", "%fp32", "%int8");
    std::string csv =
        "layer,input,fp32_ms,int8_ms,gop,fp32_gops,int8_gops,fp32_peak_fraction,int8_peak_fraction,int8_speedup,"
        "fp32_share,int8_share,fp32_impl,int8_impl\n";
    for (size_t i = 0; i < calls.size(); ++i) {
        const Timing &t = timings[i];
        const double fp32_gops = t.ops / t.fp32_ms / 1e6;
        const double int8_gops = t.ops / t.int8_ms / 1e6;
        std::printf("%-40s %9.3f %9.3f %8.1f %8.1f %8.1f %8.1f %6.2fx %6.1f %6.1f\n", calls[i].label.c_str(),
                    t.fp32_ms, t.int8_ms, fp32_gops, int8_gops, 100 * fp32_gops / fp32_peak,
                    100 * int8_gops / int8_peak, t.fp32_ms / t.int8_ms, 100 * t.fp32_ms / fp32_total,
                    100 * t.int8_ms / int8_total);
        // Input shape: channels x height x width, or rows x features for a fully connected layer.
        const std::string input = calls[i].spec->kind == LayerSpec::Kind::linear
                                      ? std::to_string(calls[i].rows) + "x" + std::to_string(calls[i].spec->in_channels)
                                      : std::to_string(calls[i].channels) + "x" + std::to_string(calls[i].height) +
                                            "x" + std::to_string(calls[i].width);
        char line[512];
        std::snprintf(line, sizeof(line), "%s,%s,%.4f,%.4f,%.4f,%.2f,%.2f,%.4f,%.4f,%.3f,%.4f,%.4f,%s,%s\n",
                      calls[i].label.c_str(), input.c_str(), t.fp32_ms,
                      t.int8_ms, t.ops / 1e9, fp32_gops, int8_gops, fp32_gops / fp32_peak, int8_gops / int8_peak,
                      t.fp32_ms / t.int8_ms, t.fp32_ms / fp32_total, t.int8_ms / int8_total, t.fp32_impl.c_str(),
                      t.int8_impl.c_str());
        csv += line;
    }
    std::printf("%-40s %9.3f %9.3f %42s %6.2fx\n", "all layers", fp32_total, int8_total, "", fp32_total / int8_total);
    if (cli.has("csv")) write_text_file_atomically(cli.get("csv"), csv);
    return 0;
}

}  // namespace

int main(int argc, char **argv) {
    return qdet::run_tool("bench_layers", [&] { return bench_main(argc, argv); });
}
