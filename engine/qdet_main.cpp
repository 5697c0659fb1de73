// qdet: runs the detector on image files, or serves as a benchmark worker.
//
//   qdet --weights model.qdet [--precision int8] [--threads 2] car.jpg ...
//   qdet --weights model.qdet --serve      (JSON lines on stdin/stdout)
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/cli.h"
#include "engine/detector.h"
#include "engine/error.h"
#include "engine/file_util.h"
#include "engine/log.h"
#include "engine/weight_file.h"

namespace {

using namespace qdet;
using nlohmann::json;

json detections_json(const std::vector<Detection> &detections) {
    json list = json::array();
    for (const Detection &d : detections) {
        list.push_back({{"box", {d.box.x1, d.box.y1, d.box.x2, d.box.y2}}, {"score", d.score}, {"label", d.label}});
    }
    return list;
}

std::string label_name(const ModelConfig &config, int label) {
    auto it = config.categories.find(label);
    return it == config.categories.end() ? "class " + std::to_string(label) : it->second;
}

// One JSON object per line in both directions; see bench/peers/README.md.
int serve(Detector &detector, double load_ms, uint64_t model_bytes) {
    auto send = [](const json &message) {
        std::cout << message.dump() << '\n' << std::flush;
    };
    send({{"event", "ready"},
          {"system", std::string("qdet_") + precision_name(detector.precision())},
          {"load_ms", load_ms},
          {"model_bytes", model_bytes},
          {"details", {{"threads", thread_count()}, {"weights", detector.weight_path()}}}});

    // Handles one request line. Returns false on quit.
    int line_number = 0;
    auto handle = [&](const std::string &line) {
        const std::string where = "request line " + std::to_string(line_number);
        json request;
        try {
            request = json::parse(line);
        } catch (const json::exception &e) {
            fail(ErrorKind::input, where + " is not valid JSON: " + e.what());
        }
        if (!request.is_object()) fail(ErrorKind::input, where + " is not a JSON object");
        const std::string op = request.value("op", "");
        if (op == "quit") return false;
        Image image;
        std::string input;
        try {
            if (op == "warm_up") {
                detector.warm_up(request.at("height").get<int>(), request.at("width").get<int>());
                send({{"event", "warmed_up"}});
                return true;
            }
            if (op != "run") fail(ErrorKind::input, where + ": unknown op '" + op + "', expected run, warm_up or quit");
            input = request.at("input").get<std::string>();
            image.width = request.at("width").get<int>();
            image.height = request.at("height").get<int>();
        } catch (const json::exception &e) {
            fail(ErrorKind::input, where + ": " + e.what());
        }
        if (image.width <= 0 || image.height <= 0) {
            fail(ErrorKind::input, where + ": width and height must be positive, got " + std::to_string(image.width) +
                                       "x" + std::to_string(image.height));
        }
        AlignedBuffer bytes = read_file(input);
        const size_t expected = static_cast<size_t>(image.width) * image.height * 3;
        if (bytes.size() != expected) {
            fail(ErrorKind::input, input + ": size is " + std::to_string(bytes.size()) + " bytes, expected " +
                                       std::to_string(expected) + " (" + std::to_string(image.width) + "x" +
                                       std::to_string(image.height) + " RGB)");
        }
        image.rgb.assign(bytes.data(), bytes.data() + bytes.size());

        StageTimes times;
        auto start = std::chrono::steady_clock::now();
        const std::vector<Detection> detections = detector.detect(image, &times);
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();

        if (request.contains("dump")) {
            const json document = {{"image", request.value("image", input)},
                                   {"width", image.width},
                                   {"height", image.height},
                                   {"detections", detections_json(detections)}};
            write_text_file_atomically(request.at("dump").get<std::string>(), document.dump());
        }
        json stages = json::object();
        for (int s = 0; s < kStageCount; ++s) stages[stage_name(static_cast<Stage>(s))] = times.ms[s];
        send({{"event", "result"}, {"ms", ms}, {"detections", detections.size()}, {"stages", stages}});
        return true;
    };

    // A failed request gets an error event in reply. The worker then exits
    // with the error's code, and run_tool repeats the message on stderr.
    std::string line;
    while (std::getline(std::cin, line)) {
        ++line_number;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        try {
            if (!handle(line)) return 0;
        } catch (const std::exception &e) {
            send({{"event", "error"}, {"message", e.what()}});
            throw;
        }
    }
    return 0;
}

int qdet_main(int argc, char **argv) {
    CommandLine cli("qdet",
                    "Detect objects in images with a qdet weight file (from convert).\n"
                    "Prints one line per detection: image, label, score, box x1 y1 x2 y2 in pixels.",
                    "--weights FILE [options] IMAGE...\n       qdet --weights FILE [options] --serve");
    cli.option("weights", "FILE", "qdet weight file");
    cli.option("precision", "fp32|int8", "arithmetic to run in", "fp32");
    cli.option("threads", "N", "CPU threads (0: all cores)", "0");
    cli.option("score-thresh", "S", "print detections with score >= S", "0.5");
    cli.option("json", "FILE", "also write all detections of all images as JSON");
    cli.flag("serve", "benchmark worker: read JSON requests on stdin, answer on stdout");
    cli.option("profile", "N", "run each image N more times and print the mean time of every step (plan of the "
               "last image)", "0");
    cli.flag("verbose", "log the oneDNN implementation of every layer and plan sizes");
    if (!cli.parse(argc, argv, /*allow_positional=*/true)) return 0;
    if (cli.has("verbose")) set_log_level(LogLevel::info);

    DetectorOptions options;
    if (!parse_precision(cli.get("precision"), &options.precision)) {
        fail(ErrorKind::usage, "option --precision must be fp32 or int8, got '" + cli.get("precision") + "'");
    }
    set_thread_count(cli.get_int("threads", 0, 1024));
    const float score_thresh = static_cast<float>(cli.get_double("score-thresh", 0.0, 1.0));
    const std::string weights = cli.require("weights");
    if (!cli.has("serve") && cli.positional().empty()) fail(ErrorKind::usage, "no image given (see --help)");
    if (cli.has("serve") && !cli.positional().empty()) {
        fail(ErrorKind::usage, "--serve reads its images from requests on stdin, got image arguments too");
    }
    if (cli.has("serve") && (cli.has("json") || cli.has("profile"))) {
        fail(ErrorKind::usage, "--json and --profile do not apply to --serve");
    }
    if (cli.has("json")) {
        std::vector<std::string> inputs = cli.positional();
        inputs.push_back(weights);
        check_output_file(cli.get("json"), "json", inputs);
    }

    // The file image is released once the detector holds its layers.
    auto start = std::chrono::steady_clock::now();
    uint64_t file_size = 0;
    std::unique_ptr<Detector> loaded;
    {
        const WeightFile file = WeightFile::read(weights);
        file_size = file.file_size();
        loaded = std::make_unique<Detector>(file, options);
    }
    Detector &detector = *loaded;
    const double load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (cli.has("serve")) return serve(detector, load_ms, file_size);

    const int profile_runs = cli.get_int("profile", 0, 100000);
    json all = json::array();
    int failures = 0;
    for (const std::string &path : cli.positional()) {
        Image image;
        try {
            image = read_image(path);
        } catch (const Error &e) {
            std::fprintf(stderr, "qdet: error: %s\n", e.what());
            ++failures;
            continue;
        }
        StageTimes times;
        const std::vector<Detection> detections = detector.detect(image, &times);
        for (const Detection &d : detections) {
            if (d.score < score_thresh) continue;
            std::printf("%s\t%s\t%.3f\t%.1f %.1f %.1f %.1f\n", path.c_str(), label_name(detector.config(), d.label).c_str(),
                        d.score, d.box.x1, d.box.y1, d.box.x2, d.box.y2);
        }
        QDET_LOG_INFO(path << ": " << detections.size() << " detections in " << times.total() << " ms");
        if (profile_runs > 0) {
            detector.set_profiling(true);
            for (int r = 0; r < profile_runs; ++r) detector.detect(image);
            detector.set_profiling(false);
            double total = 0;
            for (const auto &step : detector.profile()) total += step.total_ms / step.runs;
            std::printf("profile of %s (%s, mean of %d runs), ms:\n", path.c_str(), precision_name(options.precision),
                        profile_runs);
            for (const auto &step : detector.profile()) {
                const double ms = step.total_ms / step.runs;
                std::printf("  %-44s %-12s %8.3f %5.1f%%\n", step.label.c_str(), stage_name(step.stage), ms,
                            100.0 * ms / total);
            }
            std::printf("  %-44s %-12s %8.3f\n", "plan total", "", total);
        }
        all.push_back({{"image", path}, {"width", image.width}, {"height", image.height},
                       {"detections", detections_json(detections)}});
    }
    // With every image failed there is nothing to write, and an older file stays.
    if (cli.has("json") && !all.empty()) write_text_file_atomically(cli.get("json"), all.dump(1));
    return failures == 0 ? 0 : static_cast<int>(ErrorKind::input);
}

}  // namespace

int main(int argc, char **argv) {
    return qdet::run_tool("qdet", [&] { return qdet_main(argc, argv); });
}
