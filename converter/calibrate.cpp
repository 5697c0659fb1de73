#include "converter/calibrate.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "engine/detector.h"
#include "engine/error.h"
#include "engine/feature_network.h"
#include "engine/layer_params.h"
#include "engine/log.h"
#include "engine/progress.h"

namespace qdet {
namespace {

// Tensors INT8 keeps in f32 (RPN head and predictor outputs) or stores with
// its input's scale (max pooling) need no calibration.
bool needs_scale(const std::string &name) {
    return name.rfind("rpn.head.output", 0) != 0 && name != kPredictorTensor && name != kFpnPoolTensor;
}

// Decodes an image, or logs why not and returns false.
bool try_read_image(const std::string &path, Image *image) {
    try {
        *image = read_image(path);
        return true;
    } catch (const Error &e) {
        QDET_LOG_WARNING(e.what() << " (skipped)");
        return false;
    }
}

double median_of(std::vector<float> values) {
    if (values.empty()) return 0.0;
    std::nth_element(values.begin(), values.begin() + values.size() / 2, values.end());
    return values[values.size() / 2];
}

std::string base_name(const std::string &path) {
    const auto slash = path.find_last_of('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

void validate_keep_fp32(const ModelConfig &config, const std::vector<std::string> &layers) {
    std::set<std::string> known;
    for (const LayerSpec &spec : detector_layers(config)) known.insert(spec.name);
    for (const std::string &name : layers) {
        if (!known.count(name)) {
            std::string close;
            int matches = 0;
            for (const std::string &candidate : known) {
                if (candidate.rfind(name, 0) != 0 || is_squeeze_excitation_layer(candidate)) continue;
                if (++matches <= 6) close += (close.empty() ? "" : ", ") + candidate;
            }
            if (matches > 6) close += " and " + std::to_string(matches - 6) + " more";
            fail(ErrorKind::usage,
                 "--keep-fp32: unknown layer '" + name + "'; " +
                     (close.empty() ? std::string("layer names are torchvision module names such as "
                                                  "backbone.body.4.block.0.0 or roi_heads.box_predictor.cls_score")
                                    : "layers with that prefix: " + close) +
                     " (convert --weights FILE --list-layers lists them all)");
        }
        if (is_squeeze_excitation_layer(name)) {
            fail(ErrorKind::usage, "--keep-fp32: layer '" + name +
                                       "' is part of squeeze-excitation, which always runs in FP32");
        }
    }
}

std::vector<std::string> with_stacked_partners(const std::vector<std::string> &layers) {
    static const std::pair<const char *, const char *> kStacked[] = {
        {"rpn.head.cls_logits", "rpn.head.bbox_pred"},
        {"roi_heads.box_predictor.cls_score", "roi_heads.box_predictor.bbox_pred"},
    };
    std::vector<std::string> result = layers;
    auto listed = [&](const std::string &name) { return std::find(result.begin(), result.end(), name) != result.end(); };
    for (const auto &[first, second] : kStacked) {
        if (listed(first) && !listed(second)) result.push_back(second);
        if (listed(second) && !listed(first)) result.push_back(first);
    }
    return result;
}

CalibrationResult calibrate_activations(const WeightFile &fp32_file, const std::vector<FoldedLayer> &layers,
                                        const std::vector<std::string> &images, const CalibrationOptions &options) {
    DetectorOptions detector_options;
    detector_options.precision = Precision::fp32;
    detector_options.observe_residual_branches = true;
    Detector detector(fp32_file, detector_options);

    // One magnitude histogram per channel of every tensor that needs scales.
    CalibrationResult result;
    std::map<std::string, size_t> index;
    std::vector<std::vector<MagnitudeHistogram>> histograms;
    const ActivationObserver observer = [&](const FeatureMap &map) {
        if (!needs_scale(map.name)) return;
        auto [it, inserted] = index.emplace(map.name, result.tensors.size());
        if (inserted) {
            TensorCalibration tensor;
            tensor.name = map.name;
            tensor.is_unsigned = map.nonnegative;
            result.tensors.push_back(tensor);
            histograms.emplace_back(static_cast<size_t>(map.channels), MagnitudeHistogram(options.bins));
        }
        std::vector<MagnitudeHistogram> &channels = histograms[it->second];
        if (static_cast<int>(channels.size()) != map.channels) {
            fail(ErrorKind::internal, "tensor " + map.name + " changed its channel count");
        }
        const DetectionTrace::Tensor planar = to_planar(map);
        const size_t plane = static_cast<size_t>(planar.height) * planar.width;
        for (int c = 0; c < planar.channels; ++c) channels[c].add(planar.values.data() + c * plane, plane);
    };

    Progress progress("calibrate", static_cast<int>(images.size()), options.show_progress);
    for (size_t i = 0; i < images.size(); ++i) {
        Image image;
        if (try_read_image(images[i], &image)) {
            detector.detect_observed(image, observer);
            ++result.images_used;
        } else {
            result.images_skipped.push_back(images[i]);
        }
        progress.update(static_cast<int>(i) + 1, base_name(images[i]));
    }
    progress.finish();
    if (result.images_used == 0) {
        fail(ErrorKind::input, "none of the " + std::to_string(images.size()) +
                                   " calibration images could be decoded; see the warnings above");
    }

    // A clipping threshold per channel.
    for (size_t t = 0; t < result.tensors.size(); ++t) {
        TensorCalibration &tensor = result.tensors[t];
        const int levels = tensor.is_unsigned ? 255 : 127;
        for (const MagnitudeHistogram &channel : histograms[t]) {
            tensor.max_abs = std::max(tensor.max_abs, channel.max_abs());
            tensor.clips.push_back(static_cast<float>(channel.clip(options.method, levels, options.percentile)));
        }
    }

    // Tensors that share scales take the larger clip of each channel, and the
    // smaller number of levels if their types differ.
    std::vector<int> levels(result.tensors.size());
    for (size_t t = 0; t < result.tensors.size(); ++t) levels[t] = result.tensors[t].is_unsigned ? 255 : 127;
    for (const std::vector<std::string> &group : shared_scale_groups(fp32_file.config())) {
        std::vector<size_t> members;
        for (const std::string &name : group) {
            auto it = index.find(name);
            if (it != index.end()) members.push_back(it->second);
        }
        if (members.size() < 2) continue;
        std::vector<float> clips = result.tensors[members[0]].clips;
        int group_levels = levels[members[0]];
        for (size_t m : members) {
            if (result.tensors[m].clips.size() != clips.size()) {
                fail(ErrorKind::internal, "tensors sharing scales differ in channels: " + result.tensors[m].name);
            }
            for (size_t c = 0; c < clips.size(); ++c) clips[c] = std::max(clips[c], result.tensors[m].clips[c]);
            group_levels = std::min(group_levels, levels[m]);
        }
        for (size_t m : members) {
            result.tensors[m].clips = clips;
            levels[m] = group_levels;
        }
    }

    // Per-channel magnitude of the weights that dense layers apply to each
    // tensor's channels (the largest over consumers and output channels).
    std::map<std::string, std::vector<float>> dense_weight_max;
    {
        std::map<std::string, const FoldedLayer *> by_name;
        for (const FoldedLayer &layer : layers) by_name[layer.spec.name] = &layer;
        for (const LayerInput &entry : layer_inputs(fp32_file.config())) {
            const FoldedLayer &layer = *by_name.at(entry.layer);
            auto tensor = index.find(entry.input);
            if (layer.spec.depthwise() || tensor == index.end()) continue;
            const size_t channels = result.tensors[tensor->second].clips.size();
            const int64_t per_output = layer.weight.numel() / layer.spec.out_channels;
            const int64_t run = per_output / static_cast<int64_t>(channels);
            std::vector<float> &wmax = dense_weight_max[entry.input];
            wmax.resize(channels, 0.f);
            const float *w = layer.weight.data<float>();
            for (int oc = 0; oc < layer.spec.out_channels; ++oc) {
                for (int64_t i = 0; i < per_output; ++i) {
                    float &m = wmax[static_cast<size_t>(i / run)];
                    m = std::max(m, std::fabs(w[oc * per_output + i]));
                }
            }
        }
        // Tensors that share scales take the larger weight of each channel.
        for (const std::vector<std::string> &group : shared_scale_groups(fp32_file.config())) {
            std::vector<float> merged;
            for (const std::string &name : group) {
                auto it = dense_weight_max.find(name);
                if (it == dense_weight_max.end()) continue;
                if (merged.empty()) merged.assign(it->second.size(), 0.f);
                for (size_t c = 0; c < merged.size(); ++c) merged[c] = std::max(merged[c], it->second[c]);
            }
            if (merged.empty()) continue;
            for (const std::string &name : group) {
                if (index.count(name)) dense_weight_max[name] = merged;
            }
        }
    }

    // Scales. A dense layer's input is divided by clip^m / wmax^(1 - m) per
    // channel and then quantized with one step for the whole tensor. A
    // depthwise layer's input gets its own step per channel. An all-zero
    // channel still needs a positive scale, and any value works.
    for (size_t t = 0; t < result.tensors.size(); ++t) {
        TensorCalibration &tensor = result.tensors[t];
        const float largest = *std::max_element(tensor.clips.begin(), tensor.clips.end());
        const float floor = largest > 0.f ? largest * 1e-4f : 1e-6f;
        std::vector<double> clips(tensor.clips.begin(), tensor.clips.end());
        for (double &clip : clips) clip = std::max(clip, static_cast<double>(floor));
        tensor.scales.assign(clips.size(), 0.f);

        auto wmax = dense_weight_max.find(tensor.name);
        if (wmax == dense_weight_max.end()) {
            for (size_t c = 0; c < clips.size(); ++c) tensor.scales[c] = static_cast<float>(clips[c] / levels[t]);
            continue;
        }
        const double m = options.migration;
        const float wlargest = *std::max_element(wmax->second.begin(), wmax->second.end());
        std::vector<double> smoothing(clips.size());
        double step = 0.0;  // largest clip / smoothing, divided by the levels below
        for (size_t c = 0; c < clips.size(); ++c) {
            const double w = std::max(static_cast<double>(wmax->second[c]), wlargest * 1e-6 + 1e-30);
            smoothing[c] = std::pow(clips[c], m) / std::pow(w, 1.0 - m);
            step = std::max(step, clips[c] / smoothing[c]);
        }
        for (size_t c = 0; c < clips.size(); ++c) {
            tensor.scales[c] = static_cast<float>(smoothing[c] * step / levels[t]);
        }
    }
    return result;
}

void add_int8_weights(WeightFileWriter &writer, const std::vector<FoldedLayer> &layers,
                      const CalibrationResult &result, const std::vector<std::string> &keep_fp32,
                      const ModelConfig &config) {
    const std::set<std::string> kept(keep_fp32.begin(), keep_fp32.end());
    std::map<std::string, std::string> input_of;
    for (const LayerInput &entry : layer_inputs(config)) input_of[entry.layer] = entry.input;
    std::map<std::string, const TensorCalibration *> tensors;
    for (const TensorCalibration &t : result.tensors) tensors[t.name] = &t;

    for (const FoldedLayer &layer : layers) {
        const LayerSpec &spec = layer.spec;
        if (is_squeeze_excitation_layer(spec.name) || kept.count(spec.name)) continue;
        auto input = input_of.find(spec.name);
        if (input == input_of.end() || !tensors.count(input->second)) {
            fail(ErrorKind::internal, "no calibrated input tensor for layer " + spec.name);
        }
        const std::vector<float> &input_scales = tensors.at(input->second)->scales;
        const int channels = spec.out_channels;
        const int64_t per_channel = layer.weight.numel() / channels;
        // Input channels per group, and weight elements per input channel
        // within one output channel. That is k*k for convolutions. For fc6
        // it is the pooled positions of one feature channel, because torch
        // flattens RoI features channel-major.
        const int64_t in_per_group = static_cast<int64_t>(input_scales.size()) / spec.groups;
        const int64_t run = per_channel / in_per_group;
        if (in_per_group * run != per_channel) {
            fail(ErrorKind::internal, "layer " + spec.name + ": input scales do not match its weights");
        }

        const float *w = layer.weight.data<float>();
        std::vector<float> folded(static_cast<size_t>(per_channel));
        HostTensor quantized(DType::s8, layer.weight.shape);
        std::vector<float> scales(channels);
        for (int oc = 0; oc < channels; ++oc) {
            const int group = oc / (channels / spec.groups);
            const float *row = w + oc * per_channel;
            float max_abs = 0.f;
            for (int64_t i = 0; i < per_channel; ++i) {
                const int64_t ic = group * in_per_group + i / run;
                folded[i] = row[i] * input_scales[ic];
                max_abs = std::max(max_abs, std::fabs(folded[i]));
            }
            scales[oc] = max_abs > 0.f ? max_abs / 127.f : 1.f;
            int8_t *q = quantized.data<int8_t>() + oc * per_channel;
            for (int64_t i = 0; i < per_channel; ++i) {
                q[i] = static_cast<int8_t>(std::max(-127.f, std::min(127.f, std::nearbyint(folded[i] / scales[oc]))));
            }
        }
        writer.add_tensor(weight_s8_name(spec.name), quantized);
        writer.add_tensor(weight_scale_name(spec.name), DType::f32, {channels}, scales.data());
    }
}

nlohmann::json quantization_section(const CalibrationResult &result, const CalibrationOptions &options) {
    nlohmann::json activations = nlohmann::json::object();
    for (const TensorCalibration &t : result.tensors) {
        activations[t.name] = {{"scales", t.scales}, {"dtype", t.is_unsigned ? "u8" : "s8"}, {"max_abs", t.max_abs}};
    }
    nlohmann::json section = {
        {"method", calibration_method_name(options.method)},
        {"histogram_bins_per_channel", options.bins},
        {"images", result.images_used},
        {"activations_layout", "one scale per channel, folded into the next layer's INT8 weights"},
        {"weights", "s8, symmetric per output channel, scale = max|w * input scale| / 127"},
        {"activations", activations},
        {"keep_fp32", options.keep_fp32},
    };
    if (options.method == CalibrationMethod::percentile) section["percentile"] = options.percentile;
    section["migration"] = options.migration;
    return section;
}

void measure_sqnr(const WeightFile &fp32_file, const WeightFile &int8_file, const std::vector<std::string> &images,
                  bool show_progress, CalibrationResult *result) {
    DetectorOptions fp32_options;
    fp32_options.precision = Precision::fp32;
    fp32_options.observe_residual_branches = true;
    DetectorOptions int8_options;
    int8_options.precision = Precision::int8;
    Detector fp32(fp32_file, fp32_options);
    Detector int8(int8_file, int8_options);

    std::map<std::string, size_t> index;
    for (size_t t = 0; t < result->tensors.size(); ++t) index[result->tensors[t].name] = t;
    std::vector<double> signal(result->tensors.size(), 0.0), noise(result->tensors.size(), 0.0);

    Progress progress("measure INT8 error", static_cast<int>(images.size()), show_progress);
    std::map<std::string, DetectionTrace::Tensor> reference;
    for (size_t i = 0; i < images.size(); ++i) {
        progress.update(static_cast<int>(i) + 1, base_name(images[i]));
        Image image;
        if (!try_read_image(images[i], &image)) continue;

        reference.clear();
        DetectionTrace trace;
        fp32.detect_observed(
            image,
            [&](const FeatureMap &map) {
                if (index.count(map.name)) reference[map.name] = to_planar(map);
            },
            &trace);
        int8.detect_observed(
            image,
            [&](const FeatureMap &map) {
                auto it = index.find(map.name);
                auto ref = reference.find(map.name);
                if (it == index.end() || ref == reference.end()) return;
                const DetectionTrace::Tensor ours = to_planar(map);
                if (ours.values.size() != ref->second.values.size()) {
                    fail(ErrorKind::internal, "tensor " + map.name + " differs in size between FP32 and INT8");
                }
                for (size_t k = 0; k < ours.values.size(); ++k) {
                    const double x = ref->second.values[k];
                    const double d = x - ours.values[k];
                    signal[it->second] += x * x;
                    noise[it->second] += d * d;
                }
            },
            nullptr, &trace.proposals);
    }
    progress.finish();

    for (size_t t = 0; t < result->tensors.size(); ++t) {
        TensorCalibration &tensor = result->tensors[t];
        tensor.measured = signal[t] > 0.0;
        tensor.sqnr_db = noise[t] > 0.0 ? 10.0 * std::log10(signal[t] / noise[t])
                                        : std::numeric_limits<double>::infinity();
    }
}

nlohmann::json calibration_report(const CalibrationResult &result, const CalibrationOptions &options) {
    nlohmann::json tensors = nlohmann::json::array();
    for (const TensorCalibration &t : result.tensors) {
        nlohmann::json entry = {{"tensor", t.name},
                                {"dtype", t.is_unsigned ? "u8" : "s8"},
                                {"channels", t.scales.size()},
                                {"max_abs", t.max_abs},
                                {"clip_median", median_of(t.clips)},
                                {"clip_max", *std::max_element(t.clips.begin(), t.clips.end())}};
        entry["sqnr_db"] = t.measured && std::isfinite(t.sqnr_db) ? nlohmann::json(t.sqnr_db) : nlohmann::json();
        tensors.push_back(entry);
    }
    nlohmann::json skipped = result.images_skipped;
    nlohmann::json report = {{"method", calibration_method_name(options.method)},
                             {"migration", options.migration},
                             {"images_used", result.images_used},
                             {"images_skipped", skipped},
                             {"keep_fp32", options.keep_fp32},
                             {"sqnr_definition",
                              "10 log10(sum x^2 / sum (x - x_int8)^2) per tensor over the calibration images, "
                              "FP32 against the INT8 engine end to end (INT8 box head on FP32 proposals)"},
                             {"tensors", tensors}};
    if (options.method == CalibrationMethod::percentile) report["percentile"] = options.percentile;
    return report;
}

std::string calibration_table(const CalibrationResult &result) {
    std::ostringstream out;
    char line[256];
    std::snprintf(line, sizeof(line), "%-44s %-4s %8s %10s %12s %10s %9s\n", "tensor", "type", "channels",
                  "max |x|", "median clip", "max clip", "SQNR dB");
    out << line;
    std::vector<const TensorCalibration *> worst;
    for (const TensorCalibration &t : result.tensors) {
        char sqnr[32];
        if (!t.measured) {
            std::snprintf(sqnr, sizeof(sqnr), "-");
        } else {
            std::snprintf(sqnr, sizeof(sqnr), "%.1f", t.sqnr_db);
            worst.push_back(&t);
        }
        std::snprintf(line, sizeof(line), "%-44s %-4s %8zu %10.4g %12.4g %10.4g %9s\n", t.name.c_str(),
                      t.is_unsigned ? "u8" : "s8", t.scales.size(), t.max_abs, median_of(t.clips),
                      static_cast<double>(*std::max_element(t.clips.begin(), t.clips.end())), sqnr);
        out << line;
    }
    std::sort(worst.begin(), worst.end(),
              [](const TensorCalibration *a, const TensorCalibration *b) { return a->sqnr_db < b->sqnr_db; });
    if (!worst.empty()) {
        out << "lowest SQNR:";
        for (size_t i = 0; i < std::min<size_t>(5, worst.size()); ++i) {
            std::snprintf(line, sizeof(line), " %s (%.1f dB)%s", worst[i]->name.c_str(), worst[i]->sqnr_db,
                          i + 1 < std::min<size_t>(5, worst.size()) ? "," : "");
            out << line;
        }
        out << "\n";
    }
    return out.str();
}

}  // namespace qdet
