#pragma once

// Options that several commands declare, each group declared and read in one place so that
// its name, default and check are the same wherever it appears.

#include <cstdint>
#include <string>
#include <vector>

#include "cli/arg_parser.h"
#include "data/dataset.h"

namespace alexnet::cli {

/// The help of --threads in `predict` and the benchmarks (the other commands say "all cores").
inline constexpr const char* kThreadsHelpHardware = "intra-op threads (0: all hardware threads)";
/// Declares --threads: LibTorch's intra-op threads, 0 meaning every hardware thread.
void add_threads_option(ArgParser& parser, const std::string& default_value = "0",
                        const std::string& help = "intra-op threads (0: all cores)");
/// Sets LibTorch's intra-op threads from --threads; throws naming the option when it is below
/// `minimum`.
void apply_threads_option(const ArgParser& parser, int64_t minimum = 0);

/// The integer option `name`, at least `minimum`; throws UsageError naming the
/// option and the value.
int64_t int_option(const ArgParser& parser, const std::string& name, int64_t minimum);

/// Throws UsageError naming the first of `names` that was not given:
/// "--NAME is required (see alexnet COMMAND --help)".
void require_options(const ArgParser& parser, const std::vector<std::string>& names,
                     const std::string& command);

/// Declares --limit and --seed: only some images of a data set, every class in proportion.
void add_subset_options(ArgParser& parser);
/// The positions in `dataset` of the --limit images, every class in proportion, drawn with
/// --seed, ascending (data::stratified_indices); empty when --limit is 0 (all images). A
/// negative --limit is a UsageError.
std::vector<size_t> subset_indices_option(const ArgParser& parser, const data::Dataset& dataset);
/// The --limit images of `dataset` (subset_indices_option); `dataset` itself when --limit is 0.
data::DatasetPtr subset_option(const ArgParser& parser, data::DatasetPtr dataset);

}  // namespace alexnet::cli
