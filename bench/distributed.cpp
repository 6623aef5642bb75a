// `alexnet bench distributed`: data-parallel training steps of AlexNet on synthetic data,
// images/s and the share of step time spent waiting for the gradient all-reduce.
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <thread>

#include <nlohmann/json.hpp>

#include "bench/bench.h"
#include "bench/options.h"
#include "bench/timing.h"
#include "distributed/communicator.h"
#include "distributed/environment.h"
#include "distributed/gradient_reducer.h"
#include "distributed/launcher.h"
#include "model/alexnet.h"

namespace alexnet::bench {
namespace {

struct DataParallelStepTimes {
  std::vector<double> step, backward, wait;
};

// `steps` timed SGD steps (after `warmup`) of one rank on its share of a synthetic batch.
DataParallelStepTimes time_steps(AlexNet& model, distributed::Communicator* communicator,
                                 int64_t share, int64_t image_size, int64_t warmup, int64_t steps,
                                 bool overlap) {
  std::unique_ptr<distributed::GradientReducer> reducer;
  if (communicator != nullptr) {
    distributed::GradientReducerOptions options;
    options.overlap = overlap;
    reducer = std::make_unique<distributed::GradientReducer>(
        *communicator, distributed::parameters_in_backward_order(*model), options);
  }
  torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  auto images = torch::randn({share, model->options.in_channels(), image_size, image_size});
  auto labels = torch::randint(0, model->options.num_classes(), {share}, torch::kLong);
  DataParallelStepTimes times;
  for (int64_t i = 0; i < warmup + steps; ++i) {
    const auto start = Clock::now();
    sgd.zero_grad();
    torch::nn::functional::cross_entropy(model->forward(images), labels).backward();
    const double backward_done = seconds_since(start);
    const double wait_before = reducer ? reducer->wait_seconds() : 0.0;
    if (reducer) reducer->synchronize();
    const double wait = reducer ? reducer->wait_seconds() - wait_before : 0.0;
    sgd.step();
    if (i >= warmup) {
      times.step.push_back(seconds_since(start));
      times.backward.push_back(backward_done);
      times.wait.push_back(wait);
    }
  }
  return times;
}

double sum(const std::vector<double>& values) {
  double total = 0.0;
  for (double v : values) total += v;
  return total;
}

cli::ArgParser distributed_parser() {
  cli::ArgParser parser(
      "alexnet bench distributed [options]",
      "Times data-parallel SGD steps of AlexNet on synthetic images: every rank runs forward "
      "and backward on batch-size / world-size images, the gradients are averaged with "
      "bucketed all-reduces (Gloo on the CPU). Reports global images/s and the share of the "
      "step spent waiting for communication, with and without overlapping the all-reduce "
      "with backward. Run with --nproc N, or under torchrun (RANK, WORLD_SIZE, ...).");
  parser.option("nproc", "start this many local processes (1: no communication)", "1")
      .option("batch-size", "global batch, split over the processes", "32")
      .option("image-size", "input height and width", "224")
      .option("num-classes", "output classes", "1000")
      .option("steps", "timed steps per mode", "3")
      .option("warmup", "untimed steps per mode", "1");
  cli::add_threads_option(parser, /*default_value=*/"1", "intra-op threads per process");
  parser.option("timeout", "seconds a rank waits for the others", "600");
  add_json_flag(parser, "print one JSON object (rank 0)");
  return parser;
}

// Refuses a bad number before any process starts (cli::UsageError naming the option).
void check_numbers(const cli::ArgParser& parser, int64_t world_size) {
  for (const char* name : {"steps", "timeout", "num-classes", "threads"}) {
    cli::int_option(parser, name, /*minimum=*/1);
  }
  cli::int_option(parser, "warmup", /*minimum=*/0);
  cli::int_option(parser, "image-size", /*minimum=*/kMinImageSide);
  const int64_t batch = cli::int_option(parser, "batch-size", /*minimum=*/1);
  if (batch % world_size != 0) {
    throw cli::UsageError("--batch-size must be a multiple of the " + std::to_string(world_size) +
                          " processes, got " + parser.get("batch-size"));
  }
}

// Starts `nproc` local processes running this benchmark with the same options.
int launch_ranks(const cli::ArgParser& parser, const std::vector<std::string>& args,
                 int64_t nproc) {
  std::vector<std::string> child_args{"bench", "distributed"};
  for (const auto& arg : cli::without_option(args, "nproc")) child_args.push_back(arg);
  distributed::LaunchOptions launch;
  launch.nproc = nproc;
  launch.log = &std::cerr;
  launch.env = {{"OMP_NUM_THREADS", parser.get("threads")}};
  const auto result = distributed::launch_local_processes(
      std::filesystem::read_symlink("/proc/self/exe").string(), child_args, launch);
  if (result.exit_code != 0) std::cerr << "error: " << result.message << "\n";
  return result.exit_code;
}

// Times each mode (single process; or overlapped and not) on this rank, as one JSON object.
nlohmann::json measure(const cli::ArgParser& parser,
                       const distributed::DistributedConfig& config_env, int64_t batch,
                       int64_t image_size) {
  const int64_t steps = parser.get_int("steps");
  const int64_t warmup = parser.get_int("warmup");
  cli::apply_threads_option(parser, /*minimum=*/1);
  torch::manual_seed(0);
  AlexNet model(AlexNetOptions().num_classes(parser.get_int("num-classes")));
  model->train();

  std::unique_ptr<distributed::Communicator> communicator;
  if (config_env.enabled()) {
    auto config = config_env;
    config.timeout = std::chrono::seconds(parser.get_int("timeout"));
    communicator = std::make_unique<distributed::Communicator>(config, torch::kCPU);
    distributed::broadcast_module(*communicator, *model);
  }
  const int64_t share = batch / config_env.world_size;
  nlohmann::json out{{"world_size", config_env.world_size},
                     {"global_batch", batch},
                     {"image_size", image_size},
                     {"threads_per_process", torch::get_num_threads()},
                     {"hardware_threads", std::thread::hardware_concurrency()},
                     {"backend", communicator ? communicator->backend() : "none"}};
  for (const bool overlap : {true, false}) {
    if (!communicator && !overlap) break;
    const auto times =
        time_steps(model, communicator.get(), share, image_size, warmup, steps, overlap);
    const double step = median(times.step);
    nlohmann::json mode{{"step_s", step},
                        {"images_per_s", static_cast<double>(batch) / step},
                        {"forward_backward_s", median(times.backward)},
                        {"allreduce_wait_s", median(times.wait)},
                        {"allreduce_share", sum(times.wait) / sum(times.step)},
                        {"steps", times.step}};
    out[communicator ? (overlap ? "overlap" : "no_overlap") : "single"] = mode;
  }
  return out;
}

void print_modes(const nlohmann::json& out) {
  std::cout << std::fixed << std::setprecision(2) << "AlexNet " << out["image_size"].get<int64_t>()
            << "x" << out["image_size"].get<int64_t>() << ", global batch "
            << out["global_batch"].get<int64_t>() << ", " << out["world_size"].get<int64_t>()
            << " process(es) x " << torch::get_num_threads() << " thread(s), backend "
            << out["backend"].get<std::string>() << "\n";
  for (const char* name : {"single", "overlap", "no_overlap"}) {
    if (!out.contains(name)) continue;
    const auto& mode = out[name];
    std::cout << "  " << std::left << std::setw(11) << name << std::right
              << mode["images_per_s"].get<double>() << " images/s, step "
              << mode["step_s"].get<double>() << " s, all-reduce wait "
              << mode["allreduce_wait_s"].get<double>() << " s ("
              << 100 * mode["allreduce_share"].get<double>() << "% of the step)\n";
  }
}

}  // namespace

int run_distributed(const std::vector<std::string>& args) {
  cli::ArgParser parser = distributed_parser();
  if (!parser.parse(args)) return 0;
  const int64_t nproc = cli::int_option(parser, "nproc", /*minimum=*/1);
  const auto config_env = distributed::distributed_config_from_env();
  const bool launch = nproc > 1 && !config_env.enabled();
  check_numbers(parser, launch ? nproc : config_env.world_size);
  if (launch) return launch_ranks(parser, args, nproc);

  const nlohmann::json out =
      measure(parser, config_env, parser.get_int("batch-size"), parser.get_int("image-size"));
  if (config_env.rank != 0) return 0;
  if (parser.get_flag("json")) {
    std::cout << out.dump(2) << "\n";
  } else {
    print_modes(out);
  }
  return 0;
}

}  // namespace alexnet::bench
