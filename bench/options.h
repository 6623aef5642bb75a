#pragma once

// Command-line options that several benchmarks share, declared and checked in one place.

#include <cstdint>
#include <functional>
#include <string>

#include <torch/torch.h>

#include "cli/arg_parser.h"

namespace alexnet::bench {

/// Declares --threads: intra-op threads, 0 meaning every hardware thread.
void add_threads_option(cli::ArgParser& parser, const std::string& default_value = "0",
                        const std::string& help = "intra-op threads (0: all hardware threads)");
/// Sets LibTorch's intra-op threads from --threads; throws naming the option when negative.
void apply_threads_option(const cli::ArgParser& parser);

/// Declares --device: cpu or cuda:N, default cpu.
void add_device_option(cli::ArgParser& parser);
/// The --device value; throws naming it when this LibTorch cannot use it.
torch::Device device_option(const cli::ArgParser& parser);

/// The integer option `name`, at least `minimum`; throws naming the option and the value.
int64_t int_option(const cli::ArgParser& parser, const std::string& name, int64_t minimum);

/// The sizes and counts of a timed run over random images.
struct TimedRun {
  int64_t batch = 0, image_size = 0, warmup = 0, repeats = 0;
};
/// Declares what timed_run_options reads: --batch-size (default 64), --image-size (224), --warmup
/// and --repeats (5), each with the help text given.
void add_timed_run_options(cli::ArgParser& parser, const std::string& batch_help,
                           const std::string& warmup_help, const std::string& warmup_default,
                           const std::string& repeats_help);
/// Reads --batch-size and --image-size (positive), --warmup (>= 0) and --repeats (positive).
TimedRun timed_run_options(const cli::ArgParser& parser);

/// What time_repeats runs after every call on `device`: a CUDA synchronise on CUDA devices,
/// nothing elsewhere.
std::function<void()> synchronizer(const torch::Device& device);

}  // namespace alexnet::bench
