#include "bench/options.h"

namespace alexnet::bench {

void add_device_option(cli::ArgParser& parser) { parser.option("device", "cpu or cuda:N", "cpu"); }

torch::Device device_option(const cli::ArgParser& parser) {
  const torch::Device device(parser.get("device"));
  TORCH_CHECK(!device.is_cuda() || torch::cuda::is_available(), "--device ", device.str(),
              " requested but this LibTorch has no usable CUDA device");
  return device;
}

void add_json_flag(cli::ArgParser& parser, const std::string& help) { parser.flag("json", help); }

void add_timed_run_options(cli::ArgParser& parser, const std::string& batch_help,
                           const std::string& warmup_help, const std::string& warmup_default,
                           const std::string& repeats_help) {
  parser.option("batch-size", batch_help, "64")
      .option("image-size", "input height and width", "224")
      .option("warmup", warmup_help, warmup_default)
      .option("repeats", repeats_help, "5");
}

TimedRun timed_run_options(const cli::ArgParser& parser) {
  TimedRun run;
  run.batch = cli::int_option(parser, "batch-size", /*minimum=*/1);
  run.image_size = cli::int_option(parser, "image-size", /*minimum=*/1);
  run.warmup = cli::int_option(parser, "warmup", /*minimum=*/0);
  run.repeats = cli::int_option(parser, "repeats", /*minimum=*/1);
  return run;
}

std::function<void()> synchronizer(const torch::Device& device) {
  if (!device.is_cuda()) return nullptr;
  return [] { torch::cuda::synchronize(); };
}

}  // namespace alexnet::bench
