#pragma once

// Process-wide settings that make CPU training faster on LibTorch builds such as Debian's.
// Used by `alexnet train|eval|features|neighbours` and `alexnet bench train|infer`.

#include <string>
#include <vector>

namespace alexnet::cli {

/// The kernel family OpenBLAS chose ("SkylakeX", "Haswell", "Prescott", ...), or "" when the
/// BLAS LibTorch uses is not OpenBLAS.
std::string openblas_core();

/// OpenBLAS 0.3.21 (Debian 12) does not know Sapphire/Emerald Rapids CPUs and falls back to
/// its generic SSE3 "Prescott" kernels, about 1.5x slower here than its AVX-512 ones. Where
/// that happened and OPENBLAS_CORETYPE is unset, this restarts the process (execv of
/// /proc/self/exe with `argv`, the full command line including the program name) with
/// OPENBLAS_CORETYPE set to the best family the CPU supports (SkylakeX with AVX-512, Haswell
/// with AVX2), which OpenBLAS reads only when it is loaded; it prints a note to stderr.
/// Otherwise (variable set, another BLAS, kernels chosen well, exec failure) it returns.
void use_openblas_kernels_for_this_cpu(const std::vector<std::string>& argv);

/// Makes glibc keep freed memory for reuse instead of returning large blocks to the kernel:
/// a training step allocates and frees the same activation sizes every step, and mapping
/// fresh pages for them (page faults, zeroing) cost about 20% of a CPU step here. Raises
/// peak resident memory somewhat (reported by `alexnet bench train`).
void retain_freed_memory();

/// Both of the above for a command's run, first thing after its options are parsed:
/// `command` is its words after the program name (e.g. {"train"}), `args` its arguments.
void tune_runtime(const std::vector<std::string>& command, const std::vector<std::string>& args);

}  // namespace alexnet::cli
