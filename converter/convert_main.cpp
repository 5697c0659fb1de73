// convert: turns a torchvision export (.safetensors) into a qdet weight file,
// folding BatchNorm and, with --calib, adding calibrated INT8 weights and
// activation scales.
#include <chrono>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "converter/calibrate.h"
#include "converter/fold_batchnorm.h"
#include "converter/safetensors.h"
#include "engine/cli.h"
#include "engine/detector.h"
#include "engine/error.h"
#include "engine/file_util.h"
#include "engine/image.h"
#include "engine/layer_params.h"
#include "engine/log.h"
#include "engine/weight_file.h"

namespace {

using namespace qdet;

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double megabytes(uint64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

int convert_main(int argc, char **argv) {
    CommandLine cli("convert",
                    "Convert a torchvision fasterrcnn_mobilenet_v3_large_fpn export (written by\n"
                    "weights/export_torchvision.py) into a qdet weight file. BatchNorm is folded into\n"
                    "the convolutions. With --calib, the FP32 engine runs over the calibration images\n"
                    "to choose INT8 activation scales, and the file also gets per-channel INT8\n"
                    "weights; the same file then runs in either precision.");
    cli.option("weights", "FILE", "input .safetensors file from the exporter");
    cli.option("out", "FILE", "output qdet weight file");
    cli.option("calib", "DIR", "folder of calibration images; adds INT8 weights and scales");
    cli.option("calib-method", "METHOD", "activation clipping: minmax, percentile, entropy or mse", "minmax");
    cli.option("percentile", "P", "percentile of |x| kept by --calib-method percentile", "99.99");
    cli.option("migration", "M",
               "0..1: SmoothQuant's alpha for dense layers' inputs. 1 gives each input channel a scale "
               "matched to its range, 0 sets the scales from the weights alone",
               "0.5");
    cli.option("calib-limit", "N", "use at most the first N calibration images (0: all)", "0");
    cli.option("keep-fp32", "LAYERS", "comma-separated layers that stay FP32 in INT8 mode");
    cli.option("report", "FILE", "write the per-tensor calibration report as JSON");
    cli.flag("skip-sqnr", "do not measure each tensor's INT8 error against FP32 (halves the time)");
    cli.option("threads", "N", "CPU threads (0: all cores)", "0");
    cli.flag("list-layers", "print the names of the layers --keep-fp32 accepts and exit");
    cli.flag("quiet", "no progress display and no report table");
    cli.flag("verbose", "log details, including each layer's oneDNN implementation");
    if (!cli.parse(argc, argv)) return 0;
    if (cli.has("verbose")) set_log_level(LogLevel::info);
    const bool quiet = cli.has("quiet");

    const std::string input = cli.require("weights");
    if (cli.has("list-layers")) {
        const SafetensorsFile checkpoint = SafetensorsFile::read(input);
        for (const LayerSpec &spec : detector_layers(config_from_export_metadata(checkpoint.metadata(), input))) {
            if (!is_squeeze_excitation_layer(spec.name)) std::printf("%s\n", spec.name.c_str());
        }
        return 0;
    }
    const std::string output = cli.require("out");
    check_output_file(output, "out", {input});
    if (cli.has("report")) {
        check_output_file(cli.get("report"), "report", {input, output});
        if (cli.get("report") == output) fail(ErrorKind::usage, "options --report and --out name the same file");
    }
    if (cli.has("percentile") && cli.get("calib-method") != "percentile") {
        fail(ErrorKind::usage, "option --percentile needs --calib-method percentile");
    }
    const bool calibrate = cli.has("calib");
    for (const char *option :
         {"keep-fp32", "report", "calib-limit", "calib-method", "percentile", "migration", "skip-sqnr"}) {
        if (!calibrate && cli.has(option)) fail(ErrorKind::usage, std::string("option --") + option + " needs --calib");
    }
    CalibrationOptions calibration;
    if (!parse_calibration_method(cli.get("calib-method"), &calibration.method)) {
        fail(ErrorKind::usage, "option --calib-method must be minmax, percentile, entropy or mse, got '" +
                                   cli.get("calib-method") + "'");
    }
    calibration.percentile = cli.get_double("percentile", 50.0, 100.0);
    calibration.migration = cli.get_double("migration", 0.0, 1.0);
    calibration.keep_fp32 = cli.get_list("keep-fp32");
    calibration.show_progress = !quiet;
    const int limit = cli.get_int("calib-limit", 0, 1000000);
    set_thread_count(cli.get_int("threads", 0, 1024));
    auto start = std::chrono::steady_clock::now();

    // FP32: check the export against the architecture and fold BatchNorm.
    const SafetensorsFile checkpoint = SafetensorsFile::read(input);
    const ModelConfig config = config_from_export_metadata(checkpoint.metadata(), input);
    const std::vector<FoldedLayer> layers = fold_checkpoint(checkpoint, config);
    validate_keep_fp32(config, calibration.keep_fp32);
    calibration.keep_fp32 = with_stacked_partners(calibration.keep_fp32);

    WeightFileWriter writer;
    writer.set_config(config);
    for (const FoldedLayer &layer : layers) {
        writer.add_tensor(weight_name(layer.spec.name), layer.weight);
        writer.add_tensor(bias_name(layer.spec.name), layer.bias);
    }
    nlohmann::json producer = {{"tool", "qdet convert"}, {"source", input}};
    auto source = checkpoint.metadata().find("source");
    if (source != checkpoint.metadata().end()) producer["checkpoint"] = nlohmann::json::parse(source->second);
    writer.set_producer(producer);
    const uint64_t fp32_bytes = writer.bytes_by_dtype()[DType::f32];

    if (!calibrate) {
        writer.write(output);
        std::printf("convert: wrote %s: %zu layers, FP32 weights %.1f MB, in %.1f s\n", output.c_str(),
                    layers.size(), megabytes(fp32_bytes), seconds_since(start));
        return 0;
    }

    // INT8: collect activation statistics with the FP32 engine, quantize, and
    // measure the result against FP32.
    std::vector<std::string> images = list_image_files(cli.get("calib"));
    if (limit > 0 && static_cast<int>(images.size()) > limit) images.resize(limit);
    const WeightFile fp32_file = WeightFile::parse(writer.serialize(), input);
    CalibrationResult result = calibrate_activations(fp32_file, layers, images, calibration);

    add_int8_weights(writer, layers, result, calibration.keep_fp32, config);
    writer.set_quantization(quantization_section(result, calibration));
    const auto bytes = writer.bytes_by_dtype();
    const uint64_t int8_bytes = bytes.count(DType::s8) ? bytes.at(DType::s8) : 0;
    const WeightFile int8_file = WeightFile::parse(writer.serialize(), output);
    if (!cli.has("skip-sqnr")) measure_sqnr(fp32_file, int8_file, images, !quiet, &result);

    if (cli.has("report")) {
        write_text_file_atomically(cli.get("report"), calibration_report(result, calibration).dump(1));
    }
    writer.write(output);
    if (!quiet) std::fputs(calibration_table(result).c_str(), stdout);
    std::printf(
        "convert: wrote %s: %zu layers; FP32 weights %.1f MB, INT8 weights %.1f MB (%.0f%%); "
        "%d calibration images (%zu skipped), %s clipping; %.1f s\n",
        output.c_str(), layers.size(), megabytes(fp32_bytes), megabytes(int8_bytes),
        100.0 * static_cast<double>(int8_bytes) / static_cast<double>(fp32_bytes), result.images_used,
        result.images_skipped.size(), calibration_method_name(calibration.method), seconds_since(start));
    if (!calibration.keep_fp32.empty()) {
        std::string names;
        for (const std::string &name : calibration.keep_fp32) names += (names.empty() ? "" : ", ") + name;
        std::printf("convert: kept in FP32: %s\n", names.c_str());
    }
    return 0;
}

}  // namespace

int main(int argc, char **argv) {
    return qdet::run_tool("convert", [&] { return convert_main(argc, argv); });
}
