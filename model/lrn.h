#pragma once

#include <optional>

#include <torch/torch.h>

#include "model/option_problem.h"

namespace alexnet {

/// Options for `LocalResponseNorm`.
///
/// b[c] = a[c] / (k + alpha' * sum_{j = max(0, c - n/2)}^{min(C - 1, c + n/2)} a[j]^2)^beta
///
/// With `divide_alpha_by_size(false)` (the default) alpha' = alpha, the paper's printed
/// formula. With `divide_alpha_by_size(true)` alpha' = alpha / n, the convention of
/// cuda-convnet, Caffe, cuDNN and `torch::nn::LocalResponseNorm`.
struct LocalResponseNormOptions {
  /* implicit */ LocalResponseNormOptions(int64_t size = 5) : size_(size) {}
  /// The alpha actually multiplied into the sum of squares.
  double effective_alpha() const {
    return divide_alpha_by_size_ ? alpha_ / static_cast<double>(size_) : alpha_;
  }
  /// n, the number of neighbouring channels summed over (odd, >= 1).
  TORCH_ARG(int64_t, size);
  TORCH_ARG(double, alpha) = 1e-4;
  TORCH_ARG(double, beta) = 0.75;
  TORCH_ARG(double, k) = 2.0;
  /// Divide alpha by n (the reference implementations' convention) instead of the paper's
  /// printed formula.
  TORCH_ARG(bool, divide_alpha_by_size) = false;

};

/// The first option outside its range, or nothing: size odd and >= 1, alpha and beta finite
/// and >= 0, k finite and > 0.
std::optional<OptionProblem> find_option_problem(const LocalResponseNormOptions& options);

/// Throws c10::Error naming the bad option (see find_option_problem).
void validate(const LocalResponseNormOptions& options);

/// Local response normalisation across channels, with its own fused forward and backward
/// (a custom autograd function; CPU for float and double, CUDA where LibTorch has it).
/// Input: any [N, C, H, W] floating-point tensor, contiguous or not (half and bfloat16, e.g.
/// under autocast, are computed in float). Returns a contiguous tensor of the same shape and
/// dtype.
torch::Tensor local_response_norm(const torch::Tensor& input,
                                  const LocalResponseNormOptions& options);

/// Same function, written with plain tensor operations (square, channel window sum by
/// cumulative sum, pow). Used as the formulation inside exported TorchScript models and as
/// an independent reference in tests.
torch::Tensor local_response_norm_reference(const torch::Tensor& input,
                                            const LocalResponseNormOptions& options);

class LocalResponseNormImpl : public torch::nn::Cloneable<LocalResponseNormImpl> {
 public:
  explicit LocalResponseNormImpl(LocalResponseNormOptions options = {});

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  /// [N, C, H, W] float or double -> same shape.
  torch::Tensor forward(const torch::Tensor& input);

  LocalResponseNormOptions options;
};

TORCH_MODULE(LocalResponseNorm);

}  // namespace alexnet
