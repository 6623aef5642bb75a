#pragma once

// Command-line options that several benchmarks share, declared and checked in one place. The
// options that commands share as well (--threads, ...) are in cli/option_groups.h.

#include <cstdint>
#include <functional>
#include <string>

#include <torch/torch.h>

#include "cli/arg_parser.h"
#include "cli/option_groups.h"

namespace alexnet::bench {

/// Declares --device: cpu or cuda:N, default cpu.
void add_device_option(cli::ArgParser& parser);
/// The --device value; throws naming it when this LibTorch cannot use it.
torch::Device device_option(const cli::ArgParser& parser);

/// Declares --json: print the measurement as one JSON object.
void add_json_flag(cli::ArgParser& parser, const std::string& help = "print one JSON object");

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
