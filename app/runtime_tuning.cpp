#include "runtime_tuning.h"

#include <dlfcn.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <iostream>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace alexnet::cli {

std::string openblas_core() {
  using CoreName = char* (*)();
  const auto get = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  const char* name = get != nullptr ? get() : nullptr;
  return name != nullptr ? name : "";
}

void use_openblas_kernels_for_this_cpu(const std::vector<std::string>& argv) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr || openblas_core() != "Prescott") return;
  __builtin_cpu_init();
  const char* core = nullptr;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
    core = "SkylakeX";
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    core = "Haswell";
  }
  if (core == nullptr || argv.empty()) return;
  std::cerr << "note: OpenBLAS fell back to its generic Prescott kernels on this CPU; "
               "restarting with OPENBLAS_CORETYPE="
            << core << " (set OPENBLAS_CORETYPE yourself to choose)\n";
  setenv("OPENBLAS_CORETYPE", core, /*overwrite=*/1);
  std::vector<char*> args;
  for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  std::cout.flush();
  execv("/proc/self/exe", args.data());
  std::cerr << "note: restarting failed; continuing with the Prescott kernels\n";
#else
  (void)argv;
#endif
}

void retain_freed_memory() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_MAX, 0);                     // large blocks from the heap, not fresh mappings
  mallopt(M_TRIM_THRESHOLD, INT_MAX);         // and kept for reuse when freed
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

}  // namespace alexnet::cli
