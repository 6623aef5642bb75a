// `alexnet train`: trains AlexNet from a JSON configuration plus command-line overrides.
#include <atomic>
#include <csignal>
#include <ctime>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli.h"
#include "cli/option_groups.h"
#include "cli/stop_on_signal.h"
#include "distributed/environment.h"
#include "distributed/launcher.h"
#include "runtime/runtime.h"
#include "train/config.h"
#include "train/trainer.h"

namespace alexnet::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string default_run_dir() {
  const std::time_t now = std::time(nullptr);
  std::ostringstream out;
  out << "runs/train-" << std::put_time(std::localtime(&now), "%Y%m%d-%H%M%S");
  return out.str();
}

// `--nproc N`: runs `alexnet train` again in N processes (the data-parallel ranks) with the
// same arguments, all writing to one run folder, and waits for them.
int launch_ranks(const std::vector<std::string>& args, int64_t nproc, int64_t master_port,
                 const std::string& run_dir, bool out_given) {
  std::vector<std::string> child_args{"train"};
  for (const auto& arg : without_option(args, "nproc")) child_args.push_back(arg);
  if (!out_given) child_args.insert(child_args.end(), {"--out", run_dir});
  distributed::LaunchOptions launch;
  launch.nproc = nproc;
  launch.master_port = master_port;
  launch.log = &std::cerr;
  std::cerr << "starting " << nproc << " data-parallel processes; run folder: " << run_dir << "\n";
  const auto result = distributed::launch_local_processes(
      fs::read_symlink("/proc/self/exe").string(), child_args, launch);
  if (result.exit_code == 130 || result.exit_code == 143) {
    std::cerr << "interrupted; continue with: alexnet train --nproc " << nproc << " --resume "
              << run_dir << "\n";
  } else if (result.exit_code != 0) {
    std::cerr << "error: " << result.message << "\n";
  }
  return result.exit_code;
}

ArgParser train_parser() {
  ArgParser parser(
      "alexnet train [--config FILE] [--data SRC] [--out RUN_DIR] [options]",
      "Trains AlexNet with SGD as the configuration says (see configs/imagenet.json for the "
      "paper's settings). Without --config and --data it trains the Fashion-MNIST demo "
      "(configs/fashion-mnist.json). Writes RUN_DIR/config.json (the effective "
      "configuration), metrics.jsonl, checkpoints/last.pt and best.pt, curves.png and "
      "model.pt (TorchScript of the best checkpoint). Ctrl-C finishes the step, writes a "
      "checkpoint and exits; --resume RUN_DIR continues exactly where it stopped.");
  parser.option("config", "JSON configuration file (keys: see configs/imagenet.json)")
      .option("data",
              "training data (image folder, packed file, IDX folder, fashion-mnist); "
              "sets data.source")
      .option("val-data", "validation data; sets data.val_source")
      .option("val-labels",
              "labels file for --val-data as one flat folder of images (FILENAME CLASS lines, "
              "LOC_val_solution.csv or the devkit's ground truth); sets data.val_labels");
  // The run folder.
  parser.option("out", "run folder (default: runs/train-DATE-TIME)")
      .option("resume", "continue the run in this folder from checkpoints/last.pt")
      .option("init-from",
              "fine-tune: start from the weights of this checkpoint or exported model.pt where "
              "names and shapes match (fc8 stays new when the classes differ); sets init_from")
      .flag("overwrite",
            "start afresh in a run folder that holds an earlier run, removing its files "
            "(without it such a folder is refused)");
  // Overrides of the configuration.
  parser.option("epochs", "sets epochs")
      .option("max-steps", "stop after this many steps in total; sets max_steps")
      .option("batch-size", "sets batch_size")
      .option("lr", "sets optimizer.lr")
      .option("devices", "auto, cpu, cuda:0, or cuda:0,cuda:1 (the two-column split)");
  add_threads_option(parser, /*default_value=*/"", "intra-op threads (default: all cores)");
  parser.option("workers", "data loading threads; sets data.workers")
      .option("seed", "sets seed")
      .option("precision",
              "fp32, bf16 (autocast; fast on CPUs with avx512_bf16 or AMX, emulated in float32 "
              "on other CPUs) or fp16 (CUDA, with loss scaling); sets precision")
      .option("set",
              "other overrides, 'key=value' separated by ';' "
              "(e.g. 'optimizer.rule=pytorch;schedule.milestones=[30,60]'); may be repeated");
  // Data-parallel training.
  parser
      .option("nproc",
              "data-parallel: start this many local processes (Gloo on the CPU); batch_size "
              "stays the global batch, split evenly over them",
              "1")
      .option("dist-backend", "data-parallel backend: auto (NCCL on CUDA, else Gloo), gloo, nccl",
              "auto")
      .option("dist-timeout", "data-parallel: seconds a rank waits for the others before failing",
              "300")
      .option("master-port", "--nproc: rank 0's rendezvous port (default: a free one)", "0");
  parser.flag("print-config", "print the configuration that would be used and exit");
  return parser;
}

// The configuration as JSON: the defaults, then --resume's config.json, --config or the demo's,
// then the options that set keys, then --set. With --resume, `run_dir` becomes its folder.
json train_config_json(const ArgParser& parser, std::string& run_dir) {
  json config_json = train::to_json(train::TrainConfig());
  const bool resume = parser.has("resume");
  if (resume && parser.has("init-from")) {
    throw UsageError(
        "--resume continues from RUN_DIR/checkpoints/last.pt, which already holds the weights "
        "(the run's init_from is recorded in its config.json); leave out --init-from");
  }
  if (resume) {
    if (!run_dir.empty() && run_dir != parser.get("resume")) {
      throw UsageError("--resume RUN_DIR writes to RUN_DIR; leave out --out");
    }
    run_dir = parser.get("resume");
    const std::string config_path = (fs::path(run_dir) / "config.json").string();
    if (!fs::exists(config_path)) {
      throw std::runtime_error("cannot resume: '" + config_path + "' does not exist");
    }
    config_json = train::merge_json(config_json, train::read_json_file(config_path));
  } else if (parser.has("config")) {
    config_json = train::merge_json(config_json, train::read_json_file(parser.get("config")));
  } else if (!parser.has("data")) {
    const std::string demo = find_config("fashion-mnist.json");
    std::cerr << "no --config or --data: training the Fashion-MNIST demo (" << demo << ")\n";
    config_json = train::merge_json(config_json, train::read_json_file(demo));
  }
  if (resume && parser.has("config")) {
    throw UsageError("--resume uses RUN_DIR/config.json; leave out --config");
  }
  if (parser.has("init-from")) config_json["init_from"] = parser.get("init-from");

  const std::vector<std::pair<std::string, std::string>> direct{
      {"data", "data.source"},      {"val-data", "data.val_source"},
      {"epochs", "epochs"},         {"max-steps", "max_steps"},
      {"batch-size", "batch_size"}, {"lr", "optimizer.lr"},
      {"devices", "devices"},       {"threads", "threads"},
      {"workers", "data.workers"},  {"seed", "seed"},
      {"precision", "precision"},   {"val-labels", "data.val_labels"}};
  for (const auto& [option, key] : direct) {
    if (parser.has(option)) train::set_config_value(config_json, key, parser.get(option));
  }
  // A malformed number is a usage error (status 2); its range is the configuration's to check.
  for (const char* option : {"epochs", "max-steps", "batch-size", "threads", "workers"}) {
    if (parser.has(option)) parser.get_int(option);
  }
  if (parser.has("lr")) parser.get_double("lr");
  // So is a precision that is not one of the names (the device is the configuration's).
  if (parser.has("precision")) precision_option(parser);
  for (const auto& overrides : parser.get_all("set")) {
    train::apply_config_overrides(config_json, overrides);
  }
  return config_json;
}

// Prints how the run ended, unless `quiet`; returns the exit status.
int report_training(const train::TrainSummary& summary, const std::string& run_dir,
                    const distributed::DistributedConfig& distributed, bool quiet,
                    int stopped_code) {
  if (quiet) return summary.interrupted ? stopped_code : 0;
  if (summary.interrupted) {
    std::cerr << "interrupted at step " << summary.steps << "; checkpoint "
              << summary.last_checkpoint << "\ncontinue with: alexnet train --resume " << run_dir
              << "\n";
    return stopped_code;
  }
  std::ostringstream line;
  line << std::fixed << std::setprecision(2);
  line << "done: " << summary.steps << " steps, " << summary.images_per_s << " images/s, "
       << summary.seconds << " s";
  if (summary.best_val_top1_error <= 1.0) {
    line << "; best validation top-1 error " << 100 * summary.best_val_top1_error << "%";
  }
  if (distributed.enabled()) {
    line << "; " << distributed.world_size << " processes, all-reduce wait "
         << summary.allreduce_wait_s << " s";
  }
  std::cerr << line.str() << "\n";
  if (!summary.model_path.empty()) std::cerr << "model: " << summary.model_path << "\n";
  return 0;
}

int run_train(const std::vector<std::string>& args) {
  ArgParser parser = train_parser();
  if (!parser.parse(args)) return 0;
  runtime::tune_runtime({"train"}, args);

  std::string run_dir = parser.has("out") ? parser.get("out") : "";
  const bool resume = parser.has("resume");
  const train::TrainConfig config = train::config_from_json(train_config_json(parser, run_dir));
  if (parser.get_flag("print-config")) {
    std::cout << train::to_json(config).dump(2) << "\n";
    return 0;
  }
  if (run_dir.empty()) run_dir = default_run_dir();

  // Data-parallel: under torchrun (WORLD_SIZE set) this process is one rank; with --nproc it
  // starts the ranks itself.
  distributed::DistributedConfig distributed = distributed::distributed_config_from_env();
  const int64_t nproc = parser.get_int("nproc");
  if (nproc < 1) throw std::invalid_argument("--nproc must be at least 1");
  if (nproc > 1 && distributed.enabled()) {
    throw std::invalid_argument(
        "--nproc starts its own processes; under a launcher that sets "
        "WORLD_SIZE (torchrun) leave it out");
  }
  if (nproc > 1) {
    return launch_ranks(args, nproc, parser.get_int("master-port"), run_dir,
                        parser.has("out") || resume);
  }
  distributed.backend = parser.get("dist-backend");
  distributed.timeout =
      std::chrono::milliseconds(static_cast<int64_t>(1000 * parser.get_double("dist-timeout")));
  const bool quiet = distributed.rank > 0;  // rank 0 speaks for the job

  runtime::set_threads(config.threads);
  const train::RunData data = train::open_run_data(config.data, config.seed);

  const StopOnSignal stop;
  train::RunOptions options;
  options.run_dir = run_dir;
  options.resume = resume;
  options.overwrite = parser.get_flag("overwrite");
  options.stop = stop.flag();
  options.distributed = distributed;
  if (!quiet) std::cerr << "run folder: " << run_dir << "\n";
  const train::TrainSummary summary = train::train(config, data, options);
  // 130 after SIGINT, 143 after SIGTERM, as a shell reports a process the signal ended.
  const int status = report_training(summary, run_dir, distributed, quiet,
                                     stop.requested() ? stop.exit_code() : 130);
  if (status == 0 && stop.requested()) {
    // The signal came after the last step, while the run exported its model: the run is
    // complete, and the status still says that a signal arrived.
    if (!quiet) std::cerr << stop.name() << " arrived after the last step; the run is complete\n";
    return stop.exit_code();
  }
  return status;
}

const Registration kTrainRegistration{"train", "train AlexNet (default: the Fashion-MNIST demo)",
                                      run_train};

}  // namespace
}  // namespace alexnet::cli
