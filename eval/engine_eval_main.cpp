// engine_eval: runs qdet over a COCO-annotated image set in one or both
// precisions and reports detection metrics and latency side by side. With
// --detections it scores detection files written by any system instead.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/cli.h"
#include "engine/detector.h"
#include "engine/error.h"
#include "engine/file_util.h"
#include "engine/log.h"
#include "engine/progress.h"
#include "eval/coco.h"
#include "eval/detections_io.h"
#include "eval/metrics.h"

namespace {

using namespace qdet;
using nlohmann::json;

struct LatencyStats {
    double mean = 0, median = 0, p90 = 0;
};

// Nearest-rank percentile of a non-empty sample.
double percentile(std::vector<double> values, double p) {
    std::sort(values.begin(), values.end());
    const size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * values.size()));
    return values[std::min(values.size() - 1, rank > 0 ? rank - 1 : 0)];
}

LatencyStats latency_stats(const std::vector<double> &values) {
    LatencyStats s;
    if (values.empty()) return s;
    double sum = 0;
    for (double v : values) sum += v;
    s.mean = sum / values.size();
    std::vector<double> sorted = values;
    std::sort(sorted.begin(), sorted.end());
    const size_t n = sorted.size();
    s.median = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
    s.p90 = percentile(values, 90.0);
    return s;
}

json stats_json(const LatencyStats &s) { return {{"mean", s.mean}, {"median", s.median}, {"p90", s.p90}}; }

// The results of one precision over the image set.
struct Run {
    Precision precision;
    std::string label;  // column heading: the precision, or the scored folder's name
    std::unique_ptr<Detector> detector;
    std::vector<std::vector<Detection>> detections;  // per evaluated image
    std::vector<StageTimes> times;                   // per evaluated image
    Metrics metrics;
    double load_ms = 0;
};

std::string stem_of(const std::string &file_name) {
    std::string name = file_name.substr(file_name.find_last_of('/') + 1);
    return name.substr(0, name.find_last_of('.'));
}

std::string class_label(const CocoDataset &dataset, int id) {
    auto it = dataset.categories.find(id);
    return it == dataset.categories.end() ? "class " + std::to_string(id) : it->second;
}

// Keeps the images with `keep[i]` set, in order.
CocoDataset subset(const CocoDataset &dataset, const std::vector<bool> &keep) {
    CocoDataset out;
    out.path = dataset.path;
    out.categories = dataset.categories;
    for (size_t i = 0; i < dataset.images.size(); ++i) {
        if (keep[i]) out.images.push_back(dataset.images[i]);
    }
    return out;
}

json metrics_json(const Metrics &metrics, const CocoDataset &dataset) {
    json classes = json::array();
    for (const ClassMetrics &c : metrics.classes) {
        classes.push_back({{"category_id", c.category_id},
                           {"name", class_label(dataset, c.category_id)},
                           {"ground_truth", c.ground_truth},
                           {"detections", c.detections},
                           {"true_positives", c.true_positives},
                           {"recall", c.recall},
                           {"precision", c.precision},
                           {"mean_iou", c.mean_iou},
                           {"ap50", c.ap >= 0 ? json(c.ap) : json()}});
    }
    return classes;
}

void print_metrics(const std::vector<const Run *> &runs, const CocoDataset &dataset, const MetricsOptions &options) {
    const bool pair = runs.size() == 2;
    std::printf("\n%-24s", "metric");
    for (const Run *run : runs) std::printf(" %10s", run->label.c_str());
    if (pair) std::printf(" %12s", "int8 - fp32");
    std::printf("\n");
    for (size_t c = 0; c < options.classes.size(); ++c) {
        const std::string name = class_label(dataset, options.classes[c]);
        auto row = [&](const char *metric, auto value) {
            std::printf("%-24s", (name + " " + metric).c_str());
            for (const Run *run : runs) std::printf(" %10.4f", value(run->metrics.classes[c]));
            if (pair) std::printf(" %+12.4f", value(runs[1]->metrics.classes[c]) - value(runs[0]->metrics.classes[c]));
            std::printf("\n");
        };
        row("recall", [](const ClassMetrics &m) { return m.recall; });
        row("precision", [](const ClassMetrics &m) { return m.precision; });
        row("mean IoU", [](const ClassMetrics &m) { return m.mean_iou; });
        // AP is undefined for a class without ground truth.
        std::printf("%-24s", (name + " AP50").c_str());
        for (const Run *run : runs) {
            const double ap = run->metrics.classes[c].ap;
            if (ap >= 0) {
                std::printf(" %10.4f", ap);
            } else {
                std::printf(" %10s", "n/a");
            }
        }
        if (pair) {
            const double a = runs[0]->metrics.classes[c].ap, b = runs[1]->metrics.classes[c].ap;
            if (a >= 0 && b >= 0) {
                std::printf(" %+12.4f", b - a);
            } else {
                std::printf(" %12s", "n/a");
            }
        }
        std::printf("\n");
        std::printf("%-24s", (name + " ground truth").c_str());
        for (const Run *run : runs) std::printf(" %10d", run->metrics.classes[c].ground_truth);
        std::printf("\n%-24s", (name + " detections").c_str());
        for (const Run *run : runs) std::printf(" %10d", run->metrics.classes[c].detections);
        std::printf("\n");
    }
}

int score_detection_files(const CommandLine &cli, const CocoDataset &all, const MetricsOptions &options, int limit,
                          double score_threshold, double iou_threshold) {
    std::vector<bool> keep(all.images.size(), true);
    for (size_t i = limit > 0 ? static_cast<size_t>(limit) : keep.size(); i < keep.size(); ++i) keep[i] = false;
    const CocoDataset dataset = subset(all, keep);
    std::string folder = cli.get("detections");
    while (folder.size() > 1 && folder.back() == '/') folder.pop_back();
    Run run;
    run.precision = Precision::fp32;
    run.label = folder.substr(folder.find_last_of('/') + 1);
    run.detections = read_detection_dir(cli.get("detections"), dataset);
    run.metrics = evaluate(dataset, run.detections, options);
    std::printf("engine_eval: scored %zu images from %s; score >= %.2f, IoU >= %.2f (AP50 at IoU 0.50)\n",
                dataset.images.size(), cli.get("detections").c_str(), score_threshold, iou_threshold);
    print_metrics({&run}, dataset, options);
    if (cli.has("report")) {
        const json report = {{"detections", cli.get("detections")},
                             {"annotations", dataset.path},
                             {"images", dataset.images.size()},
                             {"score_threshold", score_threshold},
                             {"iou_threshold", iou_threshold},
                             {"ap_iou_threshold", 0.5},
                             {"classes", metrics_json(run.metrics, dataset)}};
        write_text_file_atomically(cli.get("report"), report.dump(1));
    }
    return 0;
}

int engine_eval_main(int argc, char **argv) {
    CommandLine cli("engine_eval",
                    "Run qdet over a COCO-annotated image set and report detection metrics and latency,\n"
                    "in FP32, INT8 or both side by side (same images, interleaved), or score the\n"
                    "detection files of any system with --detections. Metrics are defined in\n"
                    "eval/METRICS.md.");
    cli.option("weights", "FILE", "qdet weight file (from convert; INT8 needs convert --calib)");
    cli.option("images", "DIR", "folder holding the images named in the annotations");
    cli.option("gt", "FILE", "COCO annotations (images, annotations, categories)");
    cli.option("precision", "LIST", "fp32, int8 or fp32,int8", "fp32");
    cli.option("threads", "N", "CPU threads (0: all cores)", "0");
    cli.option("classes", "IDS", "comma-separated COCO category ids to score", "3");
    cli.option("score-thresh", "S", "score threshold for recall, precision and mean IoU", "0.5");
    cli.option("iou-thresh", "T", "IoU threshold for a match", "0.5");
    cli.option("limit", "N", "evaluate only the first N annotated images (0: all)", "0");
    cli.option("warmup", "N", "untimed runs before timing, per precision", "2");
    cli.option("dump", "DIR", "write each precision's detections: DIR/<precision>/<image>.json and coco_results.json");
    cli.option("report", "FILE", "write the whole report as JSON");
    cli.option("detections", "DIR", "score per-image detection files from DIR instead of running qdet");
    cli.flag("quiet", "no progress display");
    cli.flag("verbose", "log details, including each layer's oneDNN implementation");
    if (!cli.parse(argc, argv)) return 0;
    if (cli.has("verbose")) set_log_level(LogLevel::info);

    MetricsOptions options;
    options.classes.clear();
    for (const std::string &id : cli.get_list("classes")) {
        try {
            options.classes.push_back(std::stoi(id));
        } catch (const std::exception &) {
            fail(ErrorKind::usage, "option --classes takes integer category ids, got '" + id + "'");
        }
    }
    if (options.classes.empty()) fail(ErrorKind::usage, "option --classes needs at least one category id");
    // The report keeps the thresholds as typed (0.55, not the float 0.550000012).
    const double score_threshold = cli.get_double("score-thresh", 0.0, 1.0);
    const double iou_threshold = cli.get_double("iou-thresh", 0.01, 1.0);
    options.score_threshold = static_cast<float>(score_threshold);
    options.iou_threshold = static_cast<float>(iou_threshold);
    const int limit = cli.get_int("limit", 0, 100000000);
    if (cli.has("detections")) {
        for (const char *option : {"weights", "images", "precision", "dump", "warmup", "threads"}) {
            if (cli.has(option)) {
                fail(ErrorKind::usage, std::string("option --") + option + " does not apply to --detections, "
                                       "which scores files instead of running qdet");
            }
        }
    }
    if (cli.has("report")) check_output_file(cli.get("report"), "report", {cli.get("gt"), cli.get("weights")});
    const CocoDataset all = load_coco(cli.require("gt"));
    if (all.images.empty()) fail(ErrorKind::input, all.path + ": the annotations list no images");
    for (int id : options.classes) {
        if (!all.categories.count(id)) {
            std::string ids;
            for (const auto &category : all.categories) ids += (ids.empty() ? "" : ", ") + std::to_string(category.first);
            fail(ErrorKind::usage, "option --classes: category " + std::to_string(id) + " is not in " + all.path +
                                       " (its category ids: " + ids + ")");
        }
    }
    if (cli.has("detections")) return score_detection_files(cli, all, options, limit, score_threshold, iou_threshold);

    std::vector<Precision> precisions;
    for (const std::string &name : cli.get_list("precision")) {
        Precision p;
        if (!parse_precision(name, &p)) {
            fail(ErrorKind::usage, "option --precision takes fp32, int8 or fp32,int8, got '" + name + "'");
        }
        if (std::find(precisions.begin(), precisions.end(), p) != precisions.end()) {
            fail(ErrorKind::usage, "option --precision names " + name + " twice");
        }
        precisions.push_back(p);
    }
    if (precisions.empty()) fail(ErrorKind::usage, "option --precision needs fp32, int8 or both");
    // The dump folders are made before the run, so a path that cannot hold
    // them fails at once rather than after every image.
    if (cli.has("dump")) {
        for (Precision p : precisions) make_directories(cli.get("dump") + "/" + precision_name(p));
    }
    const std::string weights = cli.require("weights");
    const std::string image_dir = cli.require("images");
    set_thread_count(cli.get_int("threads", 0, 1024));
    const int warmup = cli.get_int("warmup", 0, 1000);
    const bool show_progress = !cli.has("quiet");

    // Every annotated image must exist before anything runs.
    list_image_files(image_dir);
    const size_t count = limit > 0 ? std::min<size_t>(limit, all.images.size()) : all.images.size();
    std::vector<std::string> missing;
    for (size_t i = 0; i < count; ++i) {
        const std::string path = image_dir + "/" + all.images[i].file_name;
        if (!file_exists_regular(path)) missing.push_back(all.images[i].file_name);
    }
    if (!missing.empty()) {
        std::string names;
        for (size_t i = 0; i < std::min<size_t>(5, missing.size()); ++i) names += (i ? ", " : "") + missing[i];
        if (missing.size() > 5) names += " and " + std::to_string(missing.size() - 5) + " more";
        fail(ErrorKind::input, all.path + " names " + std::to_string(missing.size()) + " image(s) not found in " +
                                   image_dir + ": " + names);
    }

    // Load every precision, then warm up: plans for the first image's size,
    // box-head primitives for every proposal count, and a few untimed runs.
    std::vector<Run> runs(precisions.size());
    {
        const WeightFile file = WeightFile::read(weights);  // released once every detector holds its layers
        for (size_t r = 0; r < precisions.size(); ++r) {
            auto start = std::chrono::steady_clock::now();
            runs[r].precision = precisions[r];
            runs[r].label = precision_name(precisions[r]);
            DetectorOptions detector_options;
            detector_options.precision = precisions[r];
            runs[r].detector = std::make_unique<Detector>(file, detector_options);
            runs[r].load_ms =
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
        }
    }
    for (Run &run : runs) {
        run.detector->warm_up(all.images[0].height > 0 ? all.images[0].height : 640,
                              all.images[0].width > 0 ? all.images[0].width : 640);
        for (int w = 0; w < warmup && w < static_cast<int>(count); ++w) {
            try {
                run.detector->detect(read_image(image_dir + "/" + all.images[w].file_name));
            } catch (const Error &) {
                // reported in the timed loop below
            }
        }
    }

    // The timed loop: each image goes through every precision, alternating
    // which runs first so that neither always follows the decode.
    std::vector<bool> evaluated(all.images.size(), false);
    std::vector<std::string> skipped;
    Progress progress("engine_eval", static_cast<int>(count), show_progress);
    for (size_t i = 0; i < count; ++i) {
        const CocoImage &info = all.images[i];
        Image image;
        try {
            image = read_image(image_dir + "/" + info.file_name);
        } catch (const Error &e) {
            QDET_LOG_WARNING(e.what() << " (skipped; counted in the report)");
            skipped.push_back(info.file_name);
            progress.update(static_cast<int>(i) + 1, info.file_name);
            continue;
        }
        evaluated[i] = true;
        for (size_t k = 0; k < runs.size(); ++k) {
            Run &run = runs[(i + k) % runs.size()];
            StageTimes times;
            run.detections.push_back(run.detector->detect(image, &times));
            run.times.push_back(times);
        }
        progress.update(static_cast<int>(i) + 1, info.file_name);
    }
    progress.finish();
    const CocoDataset dataset = subset(all, evaluated);
    if (dataset.images.empty()) fail(ErrorKind::input, "no image could be decoded; see the warnings above");
    for (Run &run : runs) run.metrics = evaluate(dataset, run.detections, options);

    // Report.
    std::string class_names;
    for (int id : options.classes) class_names += (class_names.empty() ? "" : ", ") + class_label(dataset, id) + " (" + std::to_string(id) + ")";
    std::printf("engine_eval: %zu images evaluated, %zu skipped; %s; score >= %.2f, IoU >= %.2f (AP50 at IoU 0.50); "
                "%d threads\n",
                dataset.images.size(), skipped.size(), class_names.c_str(), score_threshold, iou_threshold,
                thread_count());
    std::vector<const Run *> ordered;
    for (const Run &run : runs) ordered.push_back(&run);
    print_metrics(ordered, dataset, options);

    json report = {{"weights", weights},
                   {"images_dir", image_dir},
                   {"annotations", dataset.path},
                   {"images_evaluated", dataset.images.size()},
                   {"images_skipped", skipped},
                   {"threads", thread_count()},
                   {"score_threshold", score_threshold},
                   {"iou_threshold", iou_threshold},
                   {"ap_iou_threshold", 0.5}};
    if (runs.size() == 2) {
        const Agreement agree = agreement(runs[0].detections, runs[1].detections, options);
        std::printf("detections agreeing (%s found by %s, same class, IoU >= %.2f, score >= %.2f): %d/%d (%.1f%%)\n",
                    precision_name(runs[0].precision), precision_name(runs[1].precision), options.iou_threshold,
                    options.score_threshold, agree.matched, agree.reference, 100.0 * agree.rate());
        report["agreement"] = {{"reference", precision_name(runs[0].precision)},
                               {"other", precision_name(runs[1].precision)},
                               {"reference_detections", agree.reference},
                               {"matched", agree.matched},
                               {"rate", agree.rate()}};
    }

    std::printf("\nlatency per image, ms (mean / median / p90)\n%-14s", "stage");
    for (const Run &run : runs) std::printf(" %28s", precision_name(run.precision));
    if (runs.size() == 2) std::printf(" %16s", "speedup (median)");
    std::printf("\n");
    json latency = json::object();
    for (int s = 0; s <= kStageCount; ++s) {
        const bool total = s == kStageCount;
        const std::string name = total ? "total" : stage_name(static_cast<Stage>(s));
        std::printf("%-14s", name.c_str());
        std::vector<LatencyStats> stats;
        for (const Run &run : runs) {
            std::vector<double> values;
            for (const StageTimes &t : run.times) values.push_back(total ? t.total() : t.ms[s]);
            stats.push_back(latency_stats(values));
            std::printf("   %8.2f / %7.2f / %7.2f", stats.back().mean, stats.back().median, stats.back().p90);
            latency[precision_name(run.precision)][name] = stats_json(stats.back());
        }
        if (runs.size() == 2) {
            const double speedup = stats[1].median > 0 ? stats[0].median / stats[1].median : 0.0;
            std::printf(" %15.2fx", speedup);
            latency["speedup_median"][name] = speedup;
        }
        std::printf("\n");
    }
    report["latency_ms"] = latency;
    json results = json::object();
    for (const Run &run : runs) {
        results[precision_name(run.precision)] = {{"classes", metrics_json(run.metrics, dataset)},
                                                  {"load_ms", run.load_ms}};
    }
    report["results"] = results;

    if (cli.has("dump")) {
        for (const Run &run : runs) {
            const std::string dir = cli.get("dump") + "/" + precision_name(run.precision);
            make_directories(dir);
            for (size_t i = 0; i < dataset.images.size(); ++i) {
                const CocoImage &info = dataset.images[i];
                write_image_detections(dir + "/" + stem_of(info.file_name) + ".json",
                                       {info.file_name, info.width, info.height, run.detections[i]});
            }
            write_coco_results(dir + "/coco_results.json", dataset, run.detections);
        }
    }
    if (cli.has("report")) write_text_file_atomically(cli.get("report"), report.dump(1));
    if (!skipped.empty()) {
        std::string names;
        for (size_t i = 0; i < std::min<size_t>(5, skipped.size()); ++i) names += (i ? ", " : "") + skipped[i];
        if (skipped.size() > 5) names += " and " + std::to_string(skipped.size() - 5) + " more";
        std::fprintf(stderr, "engine_eval: %zu image(s) could not be decoded and were left out: %s\n", skipped.size(),
                     names.c_str());
        return static_cast<int>(ErrorKind::input);
    }
    return 0;
}

}  // namespace

int main(int argc, char **argv) {
    return qdet::run_tool("engine_eval", [&] { return engine_eval_main(argc, argv); });
}
