#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <torch/torch.h>

#include "distributed/communicator.h"

namespace alexnet::distributed {

/// The parameters of `module` in the order backward produces their gradients: the reverse
/// of registration order, which for AlexNet is fc8 first and conv1 last.
std::vector<torch::Tensor> parameters_in_backward_order(torch::nn::Module& module);

/// How GradientReducer groups and starts its all-reduces.
struct GradientReducerOptions {
  /// Gradients are flattened into buckets of about this many bytes (one parameter larger
  /// than this gets a bucket of its own); one all-reduce per bucket.
  int64_t bucket_bytes = 25 << 20;
  /// Start a bucket's all-reduce from autograd hooks as soon as all its gradients exist,
  /// overlapping communication with the rest of backward. false: all buckets after
  /// backward (for measuring the overlap's gain).
  bool overlap = true;
};

/// Averages gradients over ranks with bucketed all-reduces (the core of PyTorch's DDP).
/// Use: zero the gradients, run backward, call synchronize(), step the optimiser. Each
/// parameter must get its gradient from one backward pass per step (no accumulation over
/// several backward passes between synchronize() calls). Parameters may live on several
/// devices (the two-device column split): a bucket holds parameters of one device and dtype.
class GradientReducer {
 public:
  /// `parameters` in the order their gradients become ready (parameters_in_backward_order);
  /// those that do not require a gradient are left out. Throws c10::Error when
  /// options.bucket_bytes is not positive or no parameter requires a gradient.
  GradientReducer(Communicator& communicator, std::vector<torch::Tensor> parameters,
                  GradientReducerOptions options = {});
  /// Removes the autograd hooks and waits for all-reduces still in flight.
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  /// After backward: starts the buckets not yet started, waits for all and leaves in every
  /// parameter's .grad the mean of that gradient over ranks. A parameter that got no
  /// gradient this step contributes zeros. Throws DistributedError when a rank fails.
  void synchronize();

  /// The number of buckets (all-reduces per step).
  int64_t bucket_count() const;
  /// Bytes in each bucket, in launch order.
  std::vector<int64_t> bucket_bytes() const;
  /// Seconds synchronize() spent waiting for all-reduces, summed over calls: the part of
  /// communication that did not overlap with computation.
  double wait_seconds() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace alexnet::distributed
