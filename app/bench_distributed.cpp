// `alexnet bench distributed`: data-parallel training steps of AlexNet on synthetic data,
// images/s and the share of step time spent waiting for the gradient all-reduce.
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <thread>

#include <nlohmann/json.hpp>

#include "bench_timing.h"
#include "cli.h"
#include "distributed/communicator.h"
#include "distributed/environment.h"
#include "distributed/gradient_reducer.h"
#include "distributed/launcher.h"
#include "model/alexnet.h"

namespace alexnet::cli {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct StepTimes {
  std::vector<double> step, backward, wait;
};

// `steps` timed SGD steps (after `warmup`) of one rank on its share of a synthetic batch.
StepTimes time_steps(AlexNet& model, distributed::Communicator* communicator, int64_t share,
                     int64_t image_size, int64_t warmup, int64_t steps, bool overlap) {
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
  StepTimes times;
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

int run_bench_distributed(const std::vector<std::string>& args) {
  ArgParser parser(
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
      .option("warmup", "untimed steps per mode", "1")
      .option("threads", "intra-op threads per process", "1")
      .option("timeout", "seconds a rank waits for the others", "600")
      .flag("json", "print one JSON object (rank 0)");
  if (!parser.parse(args)) return 0;
  const int64_t nproc = parser.get_int("nproc");
  const auto config_env = distributed::distributed_config_from_env();
  if (nproc > 1 && !config_env.enabled()) {
    std::vector<std::string> child_args{"bench", "distributed"};
    for (size_t i = 0; i < args.size(); ++i) {
      if (args[i] == "--nproc") {
        ++i;
        continue;
      }
      if (args[i].rfind("--nproc=", 0) == 0) continue;
      child_args.push_back(args[i]);
    }
    distributed::LaunchOptions launch;
    launch.nproc = nproc;
    launch.log = &std::cerr;
    launch.env = {{"OMP_NUM_THREADS", parser.get("threads")}};
    const auto result = distributed::launch_local_processes(
        std::filesystem::read_symlink("/proc/self/exe").string(), child_args, launch);
    if (result.exit_code != 0) std::cerr << "error: " << result.message << "\n";
    return result.exit_code;
  }

  const int64_t batch = parser.get_int("batch-size");
  const int64_t image_size = parser.get_int("image-size");
  const int64_t steps = parser.get_int("steps");
  const int64_t warmup = parser.get_int("warmup");
  if (batch <= 0 || steps <= 0 || warmup < 0 || batch % config_env.world_size != 0) {
    throw std::invalid_argument("--batch-size must be a positive multiple of the " +
                                std::to_string(config_env.world_size) +
                                " processes; --steps positive; --warmup >= 0");
  }
  torch::set_num_threads(static_cast<int>(parser.get_int("threads")));
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
  const int64_t world = config_env.world_size;
  const int64_t share = batch / world;

  nlohmann::json out{{"world_size", world},
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
  if (config_env.rank != 0) return 0;
  if (parser.get_flag("json")) {
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::cout << std::fixed << std::setprecision(2) << "AlexNet " << image_size << "x" << image_size
            << ", global batch " << batch << ", " << world << " process(es) x "
            << torch::get_num_threads() << " thread(s), backend "
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
  return 0;
}

const BenchRegistration kRegistration{"distributed",
                                      "data-parallel AlexNet steps: images/s, all-reduce share",
                                      run_bench_distributed};

}  // namespace
}  // namespace alexnet::cli
