#include "cli/option_groups.h"

#include <stdexcept>

#include "runtime/runtime.h"

namespace alexnet::cli {

void add_threads_option(ArgParser& parser, const std::string& default_value,
                        const std::string& help) {
  parser.option("threads", help, default_value);
}

void apply_threads_option(const ArgParser& parser, int64_t minimum) {
  runtime::set_threads(int_option(parser, "threads", minimum));
}

int64_t int_option(const ArgParser& parser, const std::string& name, int64_t minimum) {
  const int64_t value = parser.get_int(name);
  if (value < minimum) {
    throw UsageError("--" + name + " must be " +
                     (minimum == 1 ? std::string("positive") : ">= " + std::to_string(minimum)) +
                     ", got " + parser.get(name));
  }
  return value;
}

void require_options(const ArgParser& parser, const std::vector<std::string>& names,
                     const std::string& command) {
  for (const auto& name : names) {
    if (!parser.has(name)) {
      throw UsageError("--" + name + " is required (see alexnet " + command + " --help)");
    }
  }
}

void add_subset_options(ArgParser& parser) {
  parser
      .option("limit", "only N images, every class in proportion, drawn with --seed (0: all)", "0")
      .option("seed", "seed of the images --limit keeps", "0");
}

std::vector<size_t> subset_indices_option(const ArgParser& parser, const data::Dataset& dataset) {
  const int64_t limit = int_option(parser, "limit", /*minimum=*/0);
  if (limit == 0) return {};
  return data::stratified_indices(dataset, static_cast<size_t>(limit),
                                  static_cast<uint64_t>(parser.get_int("seed")));
}

data::DatasetPtr subset_option(const ArgParser& parser, data::DatasetPtr dataset) {
  auto indices = subset_indices_option(parser, *dataset);
  if (indices.empty()) return dataset;
  return data::subset(std::move(dataset), std::move(indices));
}

}  // namespace alexnet::cli
