#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "cli/arg_parser.h"
#include "cli/option_groups.h"
#include "data/dataset.h"
#include "tests/app_support.h"
#include "tests/support.h"

namespace test_cli {

namespace fs = std::filesystem;
using alexnet::cli::ArgParser;
using alexnet::cli::UsageError;
using namespace alexnet::testing;

namespace {

ArgParser example_parser() {
  ArgParser parser("alexnet example [options] FILE...", "An example.");
  parser.option("threads", "threads", "0").option("set", "key=value").positionals("FILE", "files");
  return parser;
}

}  // namespace

TEST_CASE("-h is --help; other single-dash words are unknown options", "[cli]") {
  auto parser = example_parser();
  CHECK_FALSE(parser.parse({"a.jpg", "-h"}));
  CHECK_THROWS_AS(example_parser().parse({"-x"}), UsageError);
  CHECK_THROWS_WITH(example_parser().parse({"-batch", "4"}), Catch::Contains("-batch"));
  // A lone "-" stays a positional argument.
  auto dash = example_parser();
  CHECK(dash.parse({"-"}));
  CHECK(dash.positional() == std::vector<std::string>{"-"});
}

TEST_CASE("Parse errors are UsageErrors naming the option and value", "[cli]") {
  CHECK_THROWS_AS(example_parser().parse({"--nope"}), UsageError);
  CHECK_THROWS_AS(example_parser().parse({"--threads"}), UsageError);
  auto parser = example_parser();
  REQUIRE(parser.parse({"--threads", "many"}));
  CHECK_THROWS_AS(parser.get_int("threads"), UsageError);
  CHECK_THROWS_WITH(parser.get_int("threads"),
                    Catch::Contains("--threads") && Catch::Contains("many"));
}

TEST_CASE("Repeated options keep every value", "[cli]") {
  auto parser = example_parser();
  REQUIRE(parser.parse({"--set", "a=1", "--set=b=2"}));
  CHECK(parser.get_all("set") == std::vector<std::string>{"a=1", "b=2"});
  CHECK(parser.get("set") == "b=2");
}

TEST_CASE("without_option leaves out --name VALUE and --name=VALUE only", "[cli]") {
  using alexnet::cli::without_option;
  const std::vector<std::string> args{"--nproc", "2", "--out", "run", "--nproc=3", "--nprocs", "4"};
  CHECK(without_option(args, "nproc") == std::vector<std::string>{"--out", "run", "--nprocs", "4"});
  CHECK(without_option({"--nproc"}, "nproc").empty());
}

TEST_CASE("Option groups check and name their options", "[cli]") {
  ArgParser parser("alexnet example [options]", "An example.");
  alexnet::cli::add_threads_option(parser);
  alexnet::cli::add_subset_options(parser);
  parser.option("index", "a file");
  REQUIRE(parser.parse({"--threads", "-1"}));
  CHECK(parser.get("limit") == "0");
  CHECK_THROWS_WITH(alexnet::cli::apply_threads_option(parser),
                    Catch::Contains("--threads") && Catch::Contains("-1"));
  CHECK_THROWS_WITH(alexnet::cli::int_option(parser, "threads", /*minimum=*/1),
                    Catch::Contains("--threads must be positive"));
  CHECK_THROWS_WITH(alexnet::cli::require_options(parser, {"index"}, "codes"),
                    Catch::Contains("--index is required (see alexnet codes --help)"));
  // --limit 0 keeps the data set itself.
  CHECK(alexnet::cli::subset_option(parser, nullptr) == nullptr);
}

TEST_CASE("alexnet: -h prints help for every command", "[cli]") {
  TempDir dir;
  for (const std::string command :
       {"train", "eval", "predict", "export", "prepare", "summary", "features", "neighbours",
        "codes", "cluster", "kernels", "experiment", "experiment relu-vs-tanh",
        "experiment ablation", "bench data", "bench distributed", "bench infer", "bench lrn",
        "bench train"}) {
    INFO(command);
    const auto help = run_alexnet(command + " -h", dir);
    CHECK(help.status == 0);
    CHECK_THAT(help.output, Catch::Contains("usage: alexnet " + command));
  }
}

TEST_CASE("alexnet: status 2 for usage errors", "[cli]") {
  TempDir dir;
  const auto unknown = run_alexnet("train --no-such-option", dir);
  CHECK(unknown.status == 2);
  CHECK_THAT(unknown.output, Catch::Contains("--no-such-option"));
  CHECK(run_alexnet("predict --top many --model m.pt a.jpg", dir).status == 2);
  CHECK(run_alexnet("no-such-command", dir).status == 2);
  CHECK(run_alexnet("", dir).status == 2);
  // A command without the word that says what to do, a malformed or missing value.
  CHECK(run_alexnet("bench", dir).status == 2);
  CHECK(run_alexnet("experiment", dir).status == 2);
  CHECK(run_alexnet("train --epochs 5x", dir).status == 2);
  CHECK(run_alexnet("export", dir).status == 2);
  const auto forgotten = run_alexnet("train --epochs --lr 0.1", dir);
  CHECK(forgotten.status == 2);
  CHECK_THAT(forgotten.output, Catch::Contains("--epochs needs a value"));
  // bench distributed refuses its numbers before it starts any process.
  for (const std::string bad : {"--steps 0", "--timeout 0", "--batch-size 5", "--image-size 32",
                                "--threads 0", "--nproc 0"}) {
    const auto refused = run_alexnet("bench distributed --nproc 2 " + bad, dir);
    INFO(bad);
    CHECK(refused.status == 2);
    CHECK_THAT(refused.output, Catch::Contains(bad.substr(0, bad.find(' '))));
    CHECK_THAT(refused.output, !Catch::Contains("rank"));
  }
}

TEST_CASE("alexnet train stopped by SIGTERM checkpoints and exits 143", "[cli]") {
  if (!fs::exists(alexnet::data::kFashionMnistDir)) {
    WARN("skipped: dataset-fashion-mnist is not installed");
    return;
  }
  TempDir dir;
  const std::string run = dir / "run";
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const std::string log = dir / "train.txt";
    if (!freopen(log.c_str(), "w", stderr)) _exit(126);
    execl(ALEXNET_BINARY, ALEXNET_BINARY, "train", "--out", run.c_str(), "--epochs", "50",
          "--batch-size", "16", "--threads", "1", "--set",
          "data.train_limit=64;data.stats_images=64;data.holdout=16;log_interval=1",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  // Once a step is logged the run is inside training, where SIGTERM means "checkpoint, stop".
  const auto metrics = fs::path(run) / "metrics.jsonl";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while ((!fs::exists(metrics) || fs::file_size(metrics) == 0) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  const std::string log = read_text(dir / "train.txt");
  INFO(log);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 143);
  CHECK(fs::exists(fs::path(run) / "checkpoints" / "last.pt"));
  CHECK_THAT(log, Catch::Contains("--resume"));
}

TEST_CASE("alexnet experiment stopped by SIGINT checkpoints its run and exits 130", "[cli]") {
  if (!fs::exists(alexnet::data::kFashionMnistDir)) {
    WARN("skipped: dataset-fashion-mnist is not installed");
    return;
  }
  TempDir dir;
  const std::string out = dir / "ablation";
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const std::string log = dir / "experiment.txt";
    if (!freopen(log.c_str(), "w", stderr)) _exit(126);
    execl(ALEXNET_BINARY, ALEXNET_BINARY, "experiment", "ablation", "--variants", "no-lrn",
          "--seeds", "1", "--train-limit", "64", "--epochs", "50", "--threads", "1", "--out",
          out.c_str(), "--set",
          "batch_size=16;data.stats_images=64;data.holdout=16;log_interval=1",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  // The run's folder, once it has logged a step.
  fs::path run;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (run.empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::error_code error;
    for (const auto& entry : fs::recursive_directory_iterator(out, error)) {
      if (entry.path().filename() == "metrics.jsonl" && fs::file_size(entry.path(), error) > 0) {
        run = entry.path().parent_path();
      }
    }
  }
  kill(pid, SIGINT);
  int status = 0;
  waitpid(pid, &status, 0);
  const std::string log = read_text(dir / "experiment.txt");
  INFO(log);
  REQUIRE_FALSE(run.empty());
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 130);
  CHECK_THAT(log, Catch::Contains("stopped during run") && Catch::Contains("--reuse"));
  // The stopped run keeps its checkpoint and records no result, so --reuse trains it again.
  CHECK(fs::exists(run / "checkpoints" / "last.pt"));
  CHECK_FALSE(fs::exists(run / "result.json"));
  CHECK_FALSE(fs::exists(fs::path(out) / "ablation.json"));
}

}  // namespace test_cli
