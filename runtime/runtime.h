#pragma once

// Process-wide settings that make CPU training and inference faster on LibTorch builds such as
// Debian's: OpenBLAS's kernel family, glibc's handling of freed memory, intra-op threads.

#include <cstdint>
#include <string>
#include <vector>

namespace alexnet::runtime {

/// The kernel family OpenBLAS chose ("SkylakeX", "Haswell", "Prescott", ...), or "" when the
/// BLAS LibTorch uses is not OpenBLAS.
std::string openblas_core();

/// The kernel family OpenBLAS should use instead of the one it chose ("SkylakeX" on a CPU with
/// AVX-512, "Haswell" with AVX2 and FMA), or "" when there is nothing better to choose: the
/// BLAS is not OpenBLAS, OPENBLAS_CORETYPE is set, or OpenBLAS chose a family other than its
/// generic ones (Prescott, Core2, Nehalem, Katmai, Unknown). OpenBLAS 0.3.21 (Debian 12)
/// falls back to a generic family on CPUs it does not know (Sapphire/Emerald Rapids) or whose
/// model a VM hides, and runs matrix products 1.5 to 5 times slower there.
std::string better_openblas_core();

/// A warning with the remedy (OPENBLAS_CORETYPE) when better_openblas_core() names a family;
/// empty otherwise.
std::string blas_advice();

/// Where better_openblas_core() names a family, restarts the process (execv of /proc/self/exe
/// with `argv`, the full command line including the program name) with OPENBLAS_CORETYPE set
/// to it, since OpenBLAS reads the variable only when it is loaded; prints a note to stderr.
/// Otherwise, and when the exec fails, it returns.
void use_openblas_kernels_for_this_cpu(const std::vector<std::string>& argv);

/// Makes glibc keep freed memory for reuse instead of returning large blocks to the kernel:
/// a training step allocates and frees the same activation sizes every step, and mapping
/// fresh pages for them (page faults, zeroing) cost about 20% of a CPU step here. Raises
/// peak resident memory somewhat (reported by `alexnet bench train`).
void retain_freed_memory();

/// Both of the above for a command's run, first thing after its options are parsed:
/// `command` is its words after the program name (e.g. {"train"}), `args` its arguments.
void tune_runtime(const std::vector<std::string>& command, const std::vector<std::string>& args);

/// Sets LibTorch's intra-op threads: `threads`, or every hardware thread when 0 (LibTorch's
/// own default may be one). Throws std::invalid_argument when `threads` is negative.
void set_threads(int64_t threads);

}  // namespace alexnet::runtime
