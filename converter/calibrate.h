// INT8 calibration. It runs the FP32 engine over calibration images and
// records the distribution of each channel of every activation tensor that
// INT8 quantizes. From those it chooses the activation scales, then
// quantizes the weights per output channel and measures how far each INT8
// tensor ends up from FP32.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "converter/fold_batchnorm.h"
#include "converter/histogram.h"
#include "engine/weight_file.h"

namespace qdet {

struct CalibrationOptions {
    CalibrationMethod method = CalibrationMethod::minmax;
    double percentile = 99.99;  // for CalibrationMethod::percentile
    int bins = 512;             // histogram bins per channel
    // How the per-channel ranges of a dense layer's input (a convolution
    // that is not depthwise, or a linear layer) split between the activation
    // and the folded weights, as in SmoothQuant. Channel c of the input is
    // divided by clip[c]^m / wmax[c]^(1 - m), where wmax[c] is the largest
    // weight the layer applies to it. With 1 every channel keeps its own
    // range and all the spread goes into the folded weights; 0 equalizes
    // the weights' columns instead. Depthwise inputs always use 1, because
    // their folding is exact.
    double migration = 0.5;
    std::vector<std::string> keep_fp32;  // layer names run in FP32 in INT8 mode
    bool show_progress = true;
};

// One quantized activation tensor, quantized per channel.
struct TensorCalibration {
    std::string name;
    bool is_unsigned = false;  // u8 (a ReLU output) rather than s8
    double max_abs = 0;        // largest magnitude seen in any channel
    std::vector<float> clips;   // chosen threshold per channel
    // clips / 127 (s8) or / 255 (u8), after tensors that must share scales
    // took the larger clip of each channel
    std::vector<float> scales;
    // FP32 versus INT8 at this tensor, end to end over the images
    // (signal-to-quantization-noise ratio); NaN until measured.
    double sqnr_db = 0;
    bool measured = false;
};

struct CalibrationResult {
    std::vector<TensorCalibration> tensors;  // in execution order
    int images_used = 0;
    std::vector<std::string> images_skipped;  // could not be decoded
};

// Checks --keep-fp32 names against the model's layers; throws Error(usage)
// naming an unknown layer.
void validate_keep_fp32(const ModelConfig &config, const std::vector<std::string> &layers);

// Adds the partners of stacked layers to a --keep-fp32 list: the engine runs
// the RPN head's cls_logits and bbox_pred as one layer, and the predictor's
// cls_score and bbox_pred too, so keeping one member keeps both.
std::vector<std::string> with_stacked_partners(const std::vector<std::string> &layers);

// Collects per-channel histograms with the FP32 engine of `fp32_file` and
// chooses scales (shared_scale_groups() applied). Unreadable images are
// skipped with a warning; none readable is an Error(input).
CalibrationResult calibrate_activations(const WeightFile &fp32_file, const std::vector<FoldedLayer> &layers,
                                        const std::vector<std::string> &images, const CalibrationOptions &options);

// Adds `<layer>.weight_s8` and `<layer>.weight_scale` for every layer that
// runs INT8 (not the squeeze-excitation layers, not `keep_fp32`). The input
// tensor's per-channel scales are folded in first (w'[.., ic, ..] =
// w[.., ic, ..] * s_in[ic]), then w' is quantized symmetrically per output
// channel with scale max|w'| / 127.
void add_int8_weights(WeightFileWriter &writer, const std::vector<FoldedLayer> &layers,
                      const CalibrationResult &result, const std::vector<std::string> &keep_fp32,
                      const ModelConfig &config);

// The weight file's "quantization" section.
nlohmann::json quantization_section(const CalibrationResult &result, const CalibrationOptions &options);

// Runs FP32 and INT8 on the images (INT8's box head on FP32's proposals, so
// that RoIs match) and fills each tensor's SQNR.
void measure_sqnr(const WeightFile &fp32_file, const WeightFile &int8_file, const std::vector<std::string> &images,
                  bool show_progress, CalibrationResult *result);

// The per-tensor report: JSON, and a table for people.
nlohmann::json calibration_report(const CalibrationResult &result, const CalibrationOptions &options);
std::string calibration_table(const CalibrationResult &result);

}  // namespace qdet
