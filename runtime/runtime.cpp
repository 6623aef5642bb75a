#include "runtime/runtime.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstdlib>
#include <iostream>
#include <stdexcept>
#include <thread>

#include <ATen/Parallel.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace alexnet::runtime {
namespace {

bool generic_openblas_core(std::string core) {
  std::transform(core.begin(), core.end(), core.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return core == "prescott" || core == "core2" || core == "nehalem" || core == "katmai" ||
         core == "unknown";
}

// The best kernel family this CPU supports, or nullptr where OpenBLAS's choice cannot improve.
const char* best_core_for_this_cpu() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
    return "SkylakeX";
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return nullptr;
}

}  // namespace

std::string openblas_core() {
  using CoreName = char* (*)();
  const auto get = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  const char* name = get != nullptr ? get() : nullptr;
  return name != nullptr ? name : "";
}

std::string better_openblas_core() {
  const std::string core = openblas_core();
  if (core.empty() || std::getenv("OPENBLAS_CORETYPE") != nullptr || !generic_openblas_core(core)) {
    return "";
  }
  const char* best = best_core_for_this_cpu();
  return best != nullptr ? best : "";
}

std::string blas_advice() {
  const std::string better = better_openblas_core();
  if (better.empty()) return "";
  return "warning: OpenBLAS runs its generic '" + openblas_core() +
         "' kernels although this CPU has " + (better == "SkylakeX" ? "AVX-512" : "AVX2") +
         " (its CPU model is unknown to this OpenBLAS or hidden, e.g. in a VM); matrix products "
         "run 1.5 to 5 times faster with OPENBLAS_CORETYPE=" +
         better + " in the environment (the alexnet command sets it and restarts itself)";
}

void use_openblas_kernels_for_this_cpu(const std::vector<std::string>& argv) {
  const std::string better = better_openblas_core();
  if (better.empty() || argv.empty()) return;
  std::cerr << "note: OpenBLAS fell back to its generic " << openblas_core()
            << " kernels on this CPU; restarting with OPENBLAS_CORETYPE=" << better
            << " (set OPENBLAS_CORETYPE yourself to choose)\n";
  setenv("OPENBLAS_CORETYPE", better.c_str(), /*overwrite=*/1);
  std::vector<char*> args;
  for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  std::cout.flush();
  execv("/proc/self/exe", args.data());
  std::cerr << "note: restarting failed; continuing with the " << openblas_core() << " kernels\n";
}

void retain_freed_memory() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_MAX, 0);              // large blocks from the heap, not fresh mappings
  mallopt(M_TRIM_THRESHOLD, INT_MAX);  // and kept for reuse when freed
  mallopt(M_TOP_PAD, 64 << 20);
#endif
}

void tune_runtime(const std::vector<std::string>& command, const std::vector<std::string>& args) {
  std::vector<std::string> argv{"alexnet"};
  argv.insert(argv.end(), command.begin(), command.end());
  argv.insert(argv.end(), args.begin(), args.end());
  use_openblas_kernels_for_this_cpu(argv);
  retain_freed_memory();
}

void set_threads(int64_t threads) {
  if (threads < 0) {
    throw std::invalid_argument("threads must be >= 0 (0: all hardware threads), got " +
                                std::to_string(threads));
  }
  const auto cores = static_cast<int64_t>(std::thread::hardware_concurrency());
  at::set_num_threads(static_cast<int>(threads > 0 ? threads : std::max<int64_t>(1, cores)));
}

}  // namespace alexnet::runtime
