// `alexnet bench train`: images/s of full training steps (forward, cross-entropy, backward,
// SGD with momentum) on random data, and the process's peak resident memory.
#include <iomanip>
#include <iostream>
#include <thread>

#include <ATen/autocast_mode.h>
#include <torch/version.h>
#include <nlohmann/json.hpp>

#include "bench_timing.h"
#include "cli.h"
#include "model/alexnet.h"
#include "runtime_tuning.h"

namespace alexnet::cli {
namespace {

// Turns bfloat16 autocast on or off for one device type. The C++ API changed in LibTorch 2.4
// (per-device-type functions); before it CUDA and CPU had functions of their own.
void set_bf16_autocast(torch::DeviceType device_type, bool enabled) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  at::autocast::set_autocast_dtype(device_type, torch::kBFloat16);
  at::autocast::set_autocast_enabled(device_type, enabled);
#else
  if (device_type == torch::kCUDA) {
    at::autocast::set_autocast_gpu_dtype(torch::kBFloat16);
    at::autocast::set_enabled(enabled);
  } else {
    at::autocast::set_autocast_cpu_dtype(torch::kBFloat16);
    at::autocast::set_cpu_enabled(enabled);
  }
#endif
  if (!enabled) at::autocast::clear_cache();
}

// Converts every 4-d parameter (the convolution kernels) to channels-last.
void to_channels_last(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  for (auto& p : model.parameters()) {
    if (p.dim() == 4) p.set_data(p.contiguous(torch::MemoryFormat::ChannelsLast));
  }
}

int run_bench_train(const std::vector<std::string>& args) {
  ArgParser parser("alexnet bench train [options]",
                   "Times full training steps of AlexNet (forward, cross-entropy loss, backward, "
                   "SGD with momentum 0.9 and weight decay 5e-4) on random images, and reports "
                   "images/s (median of the repeats) and the process's peak resident memory.");
  parser.option("batch", "images per step", "64")
      .option("image-size", "input height and width", "224")
      .option("num-classes", "output classes", "1000")
      .option("columns", "2: the paper's two columns; 1: one column of half width", "2")
      .option("devices", "cpu, cuda:0, or two devices for the column split (cpu,cpu)", "cpu")
      .option("threads", "intra-op threads (0: all hardware threads)", "0")
      .option("warmup", "untimed steps first", "1")
      .option("repeats", "timed steps", "5")
      .flag("no-lrn", "leave out local response normalisation")
      .flag("channels-last", "channels-last input and convolution kernels")
      .flag("no-mkldnn", "turn LibTorch's oneDNN (MKLDNN) CPU kernels off")
      .flag("bf16", "bfloat16 autocast on the model's device (LRN still computes in float)")
      .flag("stock-runtime",
            "keep OpenBLAS's own kernel choice and glibc's default of returning freed memory "
            "(to measure what app/runtime_tuning.h gains)")
      .flag("json", "print one JSON object");
  if (!parser.parse(args)) return 0;
  const bool tuned = !parser.get_flag("stock-runtime");
  if (tuned) tune_runtime({"bench", "train"}, args);
  const int64_t batch = parser.get_int("batch");
  const int64_t image_size = parser.get_int("image-size");
  const int64_t warmup = parser.get_int("warmup");
  const int64_t repeats = parser.get_int("repeats");
  const int64_t threads = parser.get_int("threads");
  if (batch <= 0 || repeats <= 0 || warmup < 0 || threads < 0) {
    throw std::invalid_argument(
        "--batch and --repeats must be positive, --warmup and --threads >= 0");
  }
  torch::set_num_threads(threads > 0 ? static_cast<int>(threads)
                                     : static_cast<int>(std::thread::hardware_concurrency()));
  const bool channels_last = parser.get_flag("channels-last");
  const bool bf16 = parser.get_flag("bf16");
  if (parser.get_flag("no-mkldnn")) at::globalContext().setUserEnabledMkldnn(false);

  auto options = AlexNetOptions()
                     .num_classes(parser.get_int("num-classes"))
                     .columns(parser.get_int("columns"))
                     .lrn(!parser.get_flag("no-lrn"))
                     .devices(parse_devices(parser.get("devices")));
  const torch::Device device = options.devices()[0];
  torch::manual_seed(0);
  AlexNet model(options);
  model->train();
  if (channels_last) to_channels_last(*model);
  torch::optim::SGD optimizer(model->parameters(),
                              torch::optim::SGDOptions(0.01).momentum(0.9).weight_decay(5e-4));

  auto images = torch::randn({batch, 3, image_size, image_size}, torch::TensorOptions(device));
  if (channels_last) images = images.contiguous(torch::MemoryFormat::ChannelsLast);
  const auto labels = torch::randint(options.num_classes(), {batch},
                                     torch::TensorOptions(device).dtype(torch::kLong));

  if (bf16) set_bf16_autocast(device.type(), true);
  auto step = [&] {
    optimizer.zero_grad();
    auto loss =
        torch::nn::functional::cross_entropy(model->forward(images).to(torch::kFloat), labels);
    loss.backward();
    optimizer.step();
    if (bf16) at::autocast::clear_cache();
  };
  std::function<void()> sync;
  if (device.is_cuda()) sync = [] { torch::cuda::synchronize(); };
  time_repeats(step, warmup, /*repeats=*/0, sync);
  // CPU time per step as well: unlike wall time it barely changes when other processes
  // compete for the cores, so it compares runs made on a busy machine.
  const double cpu_start = process_cpu_seconds();
  const auto seconds = time_repeats(step, /*warmup=*/0, repeats, sync);
  const double cpu_per_step = (process_cpu_seconds() - cpu_start) / static_cast<double>(repeats);
  if (bf16) set_bf16_autocast(device.type(), false);
  const double step_s = median(seconds);
  const double images_per_s = static_cast<double>(batch) / step_s;
  const double peak_mib = proc_status_mib("VmHWM");

  if (parser.get_flag("json")) {
    nlohmann::json out{{"bench", "train"},
                       {"batch", batch},
                       {"image_size", image_size},
                       {"devices", parser.get("devices")},
                       {"threads", torch::get_num_threads()},
                       {"lrn", options.lrn()},
                       {"channels_last", channels_last},
                       {"mkldnn", at::globalContext().userEnabledMkldnn()},
                       {"bf16", bf16},
                       {"openblas_core", openblas_core()},
                       {"retain_freed_memory", tuned},
                       {"step_s", step_s},
                       {"images_per_s", images_per_s},
                       {"steps_s", seconds},
                       {"cpu_s_per_step", cpu_per_step},
                       {"images_per_cpu_s", static_cast<double>(batch) / cpu_per_step},
                       {"peak_rss_mib", peak_mib},
                       {"libtorch", TORCH_VERSION}};
    std::cout << out.dump(2) << "\n";
  } else {
    std::cout << std::fixed << std::setprecision(2) << "train: batch " << batch << ", "
              << image_size << "x" << image_size << ", " << parser.get("devices") << ", "
              << torch::get_num_threads() << " threads" << (options.lrn() ? "" : ", no LRN")
              << (channels_last ? ", channels-last" : "") << (bf16 ? ", bf16 autocast" : "")
              << (tuned ? "" : ", stock runtime") << ": " << images_per_s << " images/s ("
              << std::setprecision(3) << step_s << " s/step, median of " << repeats << "; "
              << cpu_per_step << " CPU s/step), peak RSS " << std::setprecision(0) << peak_mib
              << " MiB\n";
  }
  return 0;
}

const BenchRegistration kRegistration{"train", "images/s of training steps, peak memory",
                                      run_bench_train};

}  // namespace
}  // namespace alexnet::cli
