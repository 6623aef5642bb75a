#pragma once

// Fused LRN kernels shared by the autograd function (lrn.cpp) and the CUDA source.
// All tensors are contiguous [N, C, H, W]; `alpha` is the effective alpha (already divided
// by n where that convention is selected).

#include <torch/torch.h>

namespace alexnet::detail {

struct LrnConstants {
  int64_t size;
  double alpha;
  double beta;
  double k;
};

/// Writes output and, when `scale` is defined, k + alpha * window sum of squares.
void lrn_forward_cpu(const torch::Tensor& input, torch::Tensor& output, torch::Tensor* scale,
                     const LrnConstants& c);
/// Gradient with respect to the input from the input, the saved scale and grad_output.
torch::Tensor lrn_backward_cpu(const torch::Tensor& input, const torch::Tensor& scale,
                               const torch::Tensor& grad_output, const LrnConstants& c);

#if ALEXNET_WITH_CUDA
void lrn_forward_cuda(const torch::Tensor& input, torch::Tensor& output, torch::Tensor* scale,
                      const LrnConstants& c);
torch::Tensor lrn_backward_cuda(const torch::Tensor& input, const torch::Tensor& scale,
                                const torch::Tensor& grad_output, const LrnConstants& c);
#endif

}  // namespace alexnet::detail
