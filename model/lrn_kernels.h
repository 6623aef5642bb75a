#pragma once

// Fused LRN kernels shared by the autograd function (lrn.cpp) and the CUDA source.
// All tensors are contiguous [N, C, H, W]; `alpha` is the effective alpha (already divided
// by n where that convention is selected).

// Only ATen's tensor type, so that nvcc compiles the CUDA source without the C++ frontend.
#include <ATen/core/Tensor.h>

namespace alexnet::detail {

struct LrnConstants {
  int64_t size;
  double alpha;
  double beta;
  double k;
};

/// Writes b = a * (k + alpha * window sum of a^2)^-beta into `output` (same shape, dtype and
/// device as `input`; float or double).
void lrn_forward_cpu(const at::Tensor& input, at::Tensor& output, const LrnConstants& c);
/// Gradient with respect to the input, from the input and grad_output (both [N, C, H, W],
/// contiguous, float or double); the scale is recomputed, not saved by the forward pass.
at::Tensor lrn_backward_cpu(const at::Tensor& input, const at::Tensor& grad_output,
                            const LrnConstants& c);

#if ALEXNET_WITH_CUDA
/// The same two functions for CUDA tensors (model/lrn_cuda.cu), on the current stream.
void lrn_forward_cuda(const at::Tensor& input, at::Tensor& output, const LrnConstants& c);
at::Tensor lrn_backward_cuda(const at::Tensor& input, const at::Tensor& grad_output,
                             const LrnConstants& c);
#endif

}  // namespace alexnet::detail
