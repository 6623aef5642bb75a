// `alexnet bench train`: images/s of full training steps (forward, cross-entropy, backward,
// SGD with momentum) on random data, and the process's peak resident memory.
#include <iomanip>
#include <iostream>

#include <ATen/autocast_mode.h>
#include <torch/version.h>
#include <nlohmann/json.hpp>

#include "bench/bench.h"
#include "bench/options.h"
#include "bench/timing.h"
#include "model/alexnet.h"
#include "runtime/runtime.h"
#include "train/precision.h"

namespace alexnet::bench {
namespace {

// Converts every 4-d parameter (the convolution kernels) to channels-last.
void to_channels_last(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  for (auto& p : model.parameters()) {
    if (p.dim() == 4) p.set_data(p.contiguous(torch::MemoryFormat::ChannelsLast));
  }
}

cli::ArgParser train_step_parser() {
  cli::ArgParser parser(
      "alexnet bench train [options]",
      "Times full training steps of AlexNet (forward, cross-entropy loss, backward, SGD with "
      "momentum 0.9 and weight decay 5e-4) on random images, and reports images/s (median of "
      "the repeats) and the process's peak resident memory.");
  add_timed_run_options(parser, "images per step", "untimed steps first",
                        /*warmup_default=*/"1", "timed steps");
  parser.option("num-classes", "output classes", "1000")
      .option("columns", "2: the paper's two columns; 1: one column of half width", "2")
      .option("width", "multiplies every layer's width but fc8's (0.25: a narrow net)", "1")
      .option("devices", "cpu, cuda:0, or two devices for the column split (cpu,cpu)", "cpu");
  cli::add_threads_option(parser, /*default_value=*/"0", cli::kThreadsHelpHardware);
  parser.flag("no-lrn", "leave out local response normalisation")
      .flag("channels-last", "channels-last input and convolution kernels")
      .flag("no-mkldnn", "turn LibTorch's oneDNN (MKLDNN) CPU kernels off")
      .flag("bf16",
            "bfloat16 autocast on the model's device (LRN still computes in float); emulated "
            "in float32 on a CPU without bfloat16 arithmetic")
      .flag("fp16",
            "float16 autocast, CUDA only (LRN still computes in float; no loss scaling, so "
            "this measures speed, not a training recipe)")
      .flag("stock-runtime",
            "keep OpenBLAS's own kernel choice and glibc's default of returning freed memory "
            "(to measure what runtime/runtime.h gains)");
  add_json_flag(parser);
  return parser;
}

// What a training-step measurement varies.
struct StepSetup {
  AlexNetOptions model;
  TimedRun run;
  bool channels_last = false;
  train::Precision precision = train::Precision::kFloat32;
};

struct StepTimes {
  std::vector<double> seconds;  // wall time of each timed step
  double cpu_per_step = 0.0;    // process CPU time per timed step
};

StepTimes time_training_steps(const StepSetup& setup) {
  const torch::Device device = setup.model.devices()[0];
  torch::manual_seed(0);
  AlexNet model(setup.model);
  model->train();
  if (setup.channels_last) to_channels_last(*model);
  torch::optim::SGD optimizer(model->parameters(),
                              torch::optim::SGDOptions(0.01).momentum(0.9).weight_decay(5e-4));
  const auto size = setup.run.image_size;
  auto images = torch::randn({setup.run.batch, 3, size, size}, torch::TensorOptions(device));
  if (setup.channels_last) images = images.contiguous(torch::MemoryFormat::ChannelsLast);
  const auto labels = torch::randint(setup.model.num_classes(), {setup.run.batch},
                                     torch::TensorOptions(device).dtype(torch::kLong));

  const train::PrecisionGuard precision(device, setup.precision);
  const bool autocast_on = setup.precision != train::Precision::kFloat32;
  auto step = [&] {
    optimizer.zero_grad();
    auto loss =
        torch::nn::functional::cross_entropy(model->forward(images).to(torch::kFloat), labels);
    loss.backward();
    optimizer.step();
    if (autocast_on) at::autocast::clear_cache();
  };
  const auto sync = synchronizer(device);
  time_repeats(step, setup.run.warmup, /*repeats=*/0, sync);
  // CPU time per step as well: unlike wall time it barely changes when other processes
  // compete for the cores, so it compares runs made on a busy machine.
  StepTimes times;
  const double cpu_start = process_cpu_seconds();
  times.seconds = time_repeats(step, /*warmup=*/0, setup.run.repeats, sync);
  times.cpu_per_step = (process_cpu_seconds() - cpu_start) / static_cast<double>(setup.run.repeats);
  return times;
}

void print_train_step(const cli::ArgParser& parser, const StepSetup& setup,
                      const StepTimes& times) {
  const bool tuned = !parser.get_flag("stock-runtime");
  const double step_s = median(times.seconds);
  const double images_per_s = static_cast<double>(setup.run.batch) / step_s;
  const double peak_mib = proc_status_mib("VmHWM");
  if (parser.get_flag("json")) {
    nlohmann::json out{
        {"bench", "train"},
        {"batch", setup.run.batch},
        {"image_size", setup.run.image_size},
        {"devices", parser.get("devices")},
        {"threads", torch::get_num_threads()},
        {"lrn", setup.model.lrn()},
        {"channels_last", setup.channels_last},
        {"mkldnn", at::globalContext().userEnabledMkldnn()},
        {"bf16", setup.precision == train::Precision::kBFloat16},
        {"fp16", setup.precision == train::Precision::kFloat16},
        {"precision", train::precision_name(setup.precision)},
        {"bf16_emulated", train::emulates_bf16(setup.precision, setup.model.devices()[0])},
        {"openblas_core", runtime::openblas_core()},
        {"retain_freed_memory", tuned},
        {"step_s", step_s},
        {"images_per_s", images_per_s},
        {"steps_s", times.seconds},
        {"cpu_s_per_step", times.cpu_per_step},
        {"images_per_cpu_s", static_cast<double>(setup.run.batch) / times.cpu_per_step},
        {"peak_rss_mib", peak_mib},
        {"libtorch", TORCH_VERSION}};
    std::cout << out.dump(2) << "\n";
    return;
  }
  std::cout << std::fixed << std::setprecision(2) << "train: batch " << setup.run.batch << ", "
            << setup.run.image_size << "x" << setup.run.image_size << ", " << parser.get("devices")
            << ", " << torch::get_num_threads() << " threads"
            << (setup.model.lrn() ? "" : ", no LRN")
            << (setup.channels_last ? ", channels-last" : "")
            << (setup.precision != train::Precision::kFloat32
                    ? ", " + train::precision_label(setup.precision, setup.model.devices()[0])
                    : "")
            << (tuned ? "" : ", stock runtime") << ": " << images_per_s << " images/s ("
            << std::setprecision(3) << step_s << " s/step, median of " << setup.run.repeats << "; "
            << times.cpu_per_step << " CPU s/step), peak RSS " << std::setprecision(0) << peak_mib
            << " MiB\n";
}

}  // namespace

int run_train_step(const std::vector<std::string>& args) {
  cli::ArgParser parser = train_step_parser();
  if (!parser.parse(args)) return 0;
  if (!parser.get_flag("stock-runtime")) runtime::tune_runtime({"bench", "train"}, args);
  StepSetup setup;
  setup.run = timed_run_options(parser);
  cli::apply_threads_option(parser);
  setup.channels_last = parser.get_flag("channels-last");
  if (parser.get_flag("bf16") && parser.get_flag("fp16")) {
    throw cli::UsageError("--bf16 and --fp16 exclude each other");
  }
  if (parser.get_flag("bf16")) setup.precision = train::Precision::kBFloat16;
  if (parser.get_flag("fp16")) setup.precision = train::Precision::kFloat16;
  if (parser.get_flag("no-mkldnn")) at::globalContext().setUserEnabledMkldnn(false);
  setup.model = AlexNetOptions()
                    .num_classes(parser.get_int("num-classes"))
                    .columns(parser.get_int("columns"))
                    .width(parser.get_double("width"))
                    .lrn(!parser.get_flag("no-lrn"))
                    .devices(parse_devices(parser.get("devices")));
  if (const auto advice = train::precision_advice(setup.precision, setup.model.devices()[0]);
      !advice.empty()) {
    std::cerr << advice << "\n";
  }
  print_train_step(parser, setup, time_training_steps(setup));
  return 0;
}

}  // namespace alexnet::bench
