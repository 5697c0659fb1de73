// engine_eval, convert --calib and qdet on bad input, run as a user runs
// them. Every failure names the file and the problem and exits non-zero. A
// bad image in a data set is reported and counted, not a crash.
#include <doctest/doctest.h>

#include <string>

#include <nlohmann/json.hpp>

#include "tests/test_support.h"

namespace qdet {
namespace {

using nlohmann::json;

std::string tool(const std::string &name) { return test::bin_dir() + "/" + name; }
std::string eval_images() { return test::data_dir() + "/datasets/roadcars/eval/images"; }
std::string eval_annotations() { return test::data_dir() + "/datasets/roadcars/eval/annotations.json"; }
std::string fp32_model() { return test::test_data_dir() + "/roadcars_fp32.qdet"; }

// A small COCO data set: the first `count` eval images, linked into `dir`.
json small_dataset(const std::string &dir, int count) {
    const json all = json::parse(test::read_bytes(eval_annotations()));
    json subset = all;
    subset["images"] = json::array();
    subset["annotations"] = json::array();
    for (int i = 0; i < count; ++i) {
        const json &image = all["images"][i];
        subset["images"].push_back(image);
        const std::string name = image["file_name"];
        test::run_command("ln -s " + eval_images() + "/" + name + " " + dir + "/" + name);
    }
    for (const json &annotation : all["annotations"]) {
        if (annotation["image_id"].get<int>() <= subset["images"].back()["id"].get<int>()) {
            subset["annotations"].push_back(annotation);
        }
    }
    return subset;
}

test::CommandResult run_eval(const std::string &arguments) {
    return test::run_command(tool("engine_eval") + " --weights " + fp32_model() + " --threads 2 --quiet --warmup 0 " +
                             arguments);
}

}  // namespace

TEST_SUITE("tools") {

TEST_CASE("engine_eval rejects a missing image folder") {
    const test::CommandResult r = run_eval("--images /nonexistent/images --gt " + eval_annotations());
    INFO(r.output);
    CHECK(r.exit_code == 3);
    CHECK(r.output.find("/nonexistent/images: image folder not found") != std::string::npos);
}

TEST_CASE("engine_eval rejects annotations naming missing images") {
    const std::string dir = test::make_temp_dir("qdet-eval");
    json dataset = small_dataset(dir, 3);
    dataset["images"].push_back({{"id", 9001}, {"file_name", "not_there.jpg"}, {"width", 640}, {"height", 640}});
    test::write_bytes(dir + "/annotations.json", dataset.dump());
    const test::CommandResult r = run_eval("--images " + dir + " --gt " + dir + "/annotations.json");
    INFO(r.output);
    CHECK(r.exit_code == 3);
    CHECK(r.output.find("annotations.json names 1 image(s) not found in " + dir + ": not_there.jpg") !=
          std::string::npos);
}

TEST_CASE("engine_eval rejects malformed annotations") {
    const std::string dir = test::make_temp_dir("qdet-eval");
    small_dataset(dir, 1);
    test::write_bytes(dir + "/annotations.json", "{\"images\": [ {\"id\": 1, ");
    const test::CommandResult r = run_eval("--images " + dir + " --gt " + dir + "/annotations.json");
    INFO(r.output);
    CHECK(r.exit_code == 3);
    CHECK(r.output.find(dir + "/annotations.json") != std::string::npos);
    CHECK(r.output.find("not valid JSON") != std::string::npos);
}

TEST_CASE("engine_eval counts an undecodable image") {
    const std::string dir = test::make_temp_dir("qdet-eval");
    json dataset = small_dataset(dir, 3);
    dataset["images"].push_back({{"id", 9002}, {"file_name", "broken.jpg"}, {"width", 640}, {"height", 640}});
    test::write_bytes(dir + "/broken.jpg", "\xff\xd8\xff\xe0 this is not really a JPEG");
    test::write_bytes(dir + "/annotations.json", dataset.dump());
    const std::string report = dir + "/report.json";
    const test::CommandResult r =
        run_eval("--images " + dir + " --gt " + dir + "/annotations.json --report " + report);
    INFO(r.output);
    // The run completes and reports, then exits with the input-error code.
    CHECK(r.exit_code == 3);
    CHECK(r.output.find("broken.jpg: cannot decode image") != std::string::npos);
    CHECK(r.output.find("3 images evaluated, 1 skipped") != std::string::npos);
    REQUIRE(test::file_exists(report));
    const json written = json::parse(test::read_bytes(report));
    CHECK(written["images_evaluated"] == 3);
    CHECK(written["images_skipped"] == json::array({"broken.jpg"}));
}

TEST_CASE("engine_eval scores detection files") {
    const std::string dir = test::make_temp_dir("qdet-eval");
    json dataset = small_dataset(dir, 4);
    test::write_bytes(dir + "/annotations.json", dataset.dump());
    const test::CommandResult run =
        run_eval("--images " + dir + " --gt " + dir + "/annotations.json --dump " + dir + "/dump --report " + dir +
                 "/run.json");
    INFO(run.output);
    REQUIRE(run.exit_code == 0);
    // Scoring the dumped files must reproduce the run's own metrics.
    const test::CommandResult scored = test::run_command(tool("engine_eval") + " --gt " + dir +
                                                         "/annotations.json --detections " + dir +
                                                         "/dump/fp32 --report " + dir + "/scored.json");
    INFO(scored.output);
    REQUIRE(scored.exit_code == 0);
    const json a = json::parse(test::read_bytes(dir + "/run.json"))["results"]["fp32"]["classes"][0];
    const json b = json::parse(test::read_bytes(dir + "/scored.json"))["classes"][0];
    CHECK(a["recall"] == b["recall"]);
    CHECK(a["precision"] == b["precision"]);
    CHECK(a["ap50"] == b["ap50"]);
    CHECK(test::file_exists(dir + "/dump/fp32/coco_results.json"));
}

TEST_CASE("engine_eval rejects int8 without calibration") {
    const test::CommandResult r =
        run_eval("--images " + eval_images() + " --gt " + eval_annotations() + " --precision int8 --limit 1");
    INFO(r.output);
    CHECK(r.exit_code == 4);
    CHECK(r.output.find("no INT8 calibration") != std::string::npos);
}

TEST_CASE("engine_eval rejects bad options") {
    const std::string base = "--images " + eval_images() + " --gt " + eval_annotations();
    const struct {
        std::string options;
        std::string expected;
    } cases[] = {
        {" --precision fp16", "--precision takes fp32, int8 or fp32,int8"},
        {" --classes car", "--classes takes integer category ids"},
        {" --score-thresh 2", "--score-thresh must be a number from 0 to 1"},
        {" --threads many", "--threads must be an integer"},
        {" --precision int8,int8", "--precision names int8 twice"},
        {" --classes 999", "category 999 is not in " + eval_annotations()},
        {" --report /nonexistent/report.json", "cannot write --report: folder /nonexistent does not exist"},
        {" --report " + eval_annotations(), "is the input file " + eval_annotations()},
        {" --classes 3,,6", "option --classes has an empty item in '3,,6'"},
        {" --precision fp32,", "option --precision has an empty item in 'fp32,'"},
    };
    for (const auto &c : cases) {
        const test::CommandResult r = run_eval(base + c.options);
        INFO(c.options << "\n" << r.output);
        CHECK(r.exit_code == (c.options.find("/nonexistent/") != std::string::npos ? 3 : 2));
        CHECK(r.output.find(c.expected) != std::string::npos);
    }
}

TEST_CASE("convert rejects bad calibration folders") {
    const std::string dir = test::make_temp_dir("qdet-calib");
    const std::string empty = dir + "/empty";
    const std::string unreadable = dir + "/unreadable";
    test::run_command("mkdir -p " + empty + " " + unreadable);
    test::write_bytes(unreadable + "/a.jpg", "not an image");
    test::write_bytes(unreadable + "/b.png", "not an image either");
    const std::string weights = test::test_data_dir() + "/roadcars.safetensors";
    const struct {
        std::string options;
        int exit_code;
        std::string expected;
    } cases[] = {
        {"--calib " + dir + "/absent", 3, dir + "/absent: image folder not found"},
        {"--calib " + empty, 3, empty + ": no image files"},
        {"--calib " + unreadable, 3, "none of the 2 calibration images could be decoded"},
        {"--calib " + unreadable + " --keep-fp32 roi_heads.box_head.fc9", 2, "unknown layer 'roi_heads.box_head.fc9'"},
    };
    for (const auto &c : cases) {
        const std::string out = dir + "/out.qdet";
        const test::CommandResult r =
            test::run_command(tool("convert") + " --weights " + weights + " --quiet --out " + out + " " + c.options);
        INFO(c.options << "\n" << r.output);
        CHECK(r.exit_code == c.exit_code);
        CHECK(r.output.find(c.expected) != std::string::npos);
        CHECK_FALSE(test::file_exists(out));
    }
}

TEST_CASE("qdet reports an unreadable image") {
    const std::string dir = test::make_temp_dir("qdet-cli");
    test::write_bytes(dir + "/empty.jpg", "");
    const std::string good = eval_images() + "/eval_0002.jpg";
    const test::CommandResult r =
        test::run_command(tool("qdet") + " --weights " + fp32_model() + " " + dir + "/empty.jpg " + good);
    INFO(r.output);
    CHECK(r.exit_code == 3);
    CHECK(r.output.find(dir + "/empty.jpg: cannot decode image: the file is empty") != std::string::npos);
    // The good image after it is still processed.
    CHECK(r.output.find("eval_0002.jpg\tbus") != std::string::npos);
}

TEST_CASE("convert rejects output over input") {
    const std::string dir = test::make_temp_dir("qdet-convert");
    const std::string weights = dir + "/model.safetensors";
    test::run_command("cp " + test::test_data_dir() + "/roadcars.safetensors " + weights);
    const std::string before = test::read_bytes(weights);
    const test::CommandResult r = test::run_command(tool("convert") + " --weights " + weights + " --out " + weights);
    INFO(r.output);
    CHECK(r.exit_code == 2);
    CHECK(r.output.find("is the input file " + weights) != std::string::npos);
    CHECK(test::read_bytes(weights) == before);
}

TEST_CASE("qdet rejects a truncated JPEG") {
    // OpenCV decodes the first part of a cut-off JPEG and fills the rest with
    // grey. qdet must reject the file instead of detecting on grey pixels.
    const std::string dir = test::make_temp_dir("qdet-cli");
    const std::string whole = test::read_bytes(eval_images() + "/eval_0002.jpg");
    test::write_bytes(dir + "/cut.jpg", whole.substr(0, whole.size() / 2));
    const test::CommandResult r = test::run_command(tool("qdet") + " --weights " + fp32_model() + " " + dir + "/cut.jpg");
    INFO(r.output);
    CHECK(r.exit_code == 3);
    CHECK(r.output.find(dir + "/cut.jpg: cannot decode image: the JPEG data ends before") != std::string::npos);
}

TEST_CASE("qdet checks output folder first") {
    const std::string image = eval_images() + "/eval_0002.jpg";
    const test::CommandResult r =
        test::run_command(tool("qdet") + " --weights " + fp32_model() + " --json /nonexistent/out.json " + image);
    INFO(r.output);
    CHECK(r.exit_code == 3);
    CHECK(r.output.find("/nonexistent/out.json: cannot write --json: folder /nonexistent does not exist") !=
          std::string::npos);
    // It stops before detecting: no detection lines.
    CHECK(r.output.find("eval_0002.jpg\t") == std::string::npos);
}

TEST_CASE("qdet serve reports a bad request") {
    const std::string dir = test::make_temp_dir("qdet-serve");
    test::write_bytes(dir + "/requests.jsonl", "{\"op\": \"fly\"}\n");
    const test::CommandResult r = test::run_command(tool("qdet") + " --weights " + fp32_model() + " --serve < " + dir +
                                                    "/requests.jsonl");
    INFO(r.output);
    CHECK(r.exit_code == 3);
    CHECK(r.output.find("\"event\":\"ready\"") != std::string::npos);
    CHECK(r.output.find("{\"event\":\"error\",\"message\":\"request line 1: unknown op 'fly'") != std::string::npos);
}

}  // TEST_SUITE
}  // namespace qdet
