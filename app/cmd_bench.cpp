// `alexnet bench KIND`: dispatches to the benchmarks of bench/bench.h.
#include <iostream>

#include "bench/bench.h"
#include "cli.h"

namespace alexnet::cli {
namespace {

struct BenchKind {
  const char* name;
  const char* summary;
  int (*run)(const std::vector<std::string>&);
};

const BenchKind kKinds[] = {
    {"data", "images/s of decode + augment + batch", bench::run_data},
    {"distributed", "data-parallel AlexNet steps: images/s, all-reduce share",
     bench::run_distributed},
    {"infer", "eager model vs exported TorchScript, inference", bench::run_inference},
    {"lrn", "fused LRN vs torch's local_response_norm and clone", bench::run_lrn},
    {"train", "images/s of training steps, peak memory", bench::run_train_step},
};

int run_bench(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::cout << "usage: alexnet bench KIND [options] [--json]\n\n"
                 "Measures this build (median of several repeats after a warm-up).\n\nkinds:\n";
    for (const auto& kind : kKinds) {
      const std::string name = kind.name;
      std::cout << "  " << name << std::string(name.size() < 8 ? 8 - name.size() : 1, ' ')
                << kind.summary << "\n";
    }
    return args.empty() ? 2 : 0;
  }
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  for (const auto& kind : kKinds) {
    if (args[0] == kind.name) return kind.run(rest);
  }
  std::cerr << "alexnet bench: unknown kind '" << args[0] << "' (run `alexnet bench --help`)\n";
  return 2;
}

const Registration kBenchRegistration{
    "bench", "measure LRN, training, inference or data throughput", run_bench};

}  // namespace
}  // namespace alexnet::cli
