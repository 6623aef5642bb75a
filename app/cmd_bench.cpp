// `alexnet bench KIND`: dispatches to the benchmarks registered in app/bench_*.cpp.
#include <iostream>

#include "cli.h"

namespace alexnet::cli {
namespace {

int run_bench(const std::vector<std::string>& args) {
  const auto& kinds = bench_kinds();
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::cout << "usage: alexnet bench KIND [options] [--json]\n\n"
                 "Measures this build (median of several repeats after a warm-up).\n\nkinds:\n";
    for (const auto& [name, kind] : kinds) {
      std::cout << "  " << name << std::string(name.size() < 8 ? 8 - name.size() : 1, ' ')
                << kind.summary << "\n";
    }
    return args.empty() ? 1 : 0;
  }
  auto it = kinds.find(args[0]);
  if (it == kinds.end()) {
    std::cerr << "alexnet bench: unknown kind '" << args[0] << "' (run `alexnet bench --help`)\n";
    return 2;
  }
  return it->second.run(std::vector<std::string>(args.begin() + 1, args.end()));
}

const Registration kRegistration{"bench", "measure LRN, training, inference or data throughput",
                                 run_bench};

}  // namespace
}  // namespace alexnet::cli
