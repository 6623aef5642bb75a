#pragma once

// Mixed precision: which floating type the forward pass computes in, autocast on CPU and
// CUDA across LibTorch versions, and dynamic loss scaling for float16.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace alexnet::train {

/// The type a forward pass computes in. Weights, gradients and optimiser state stay float32
/// in every case; kBFloat16 and kFloat16 run the convolutions and matrix products under
/// autocast (LRN and the loss compute in float32).
enum class Precision { kFloat32, kBFloat16, kFloat16 };

/// "fp32", "bf16" or "fp16"; throws std::invalid_argument naming `name` otherwise.
Precision parse_precision(const std::string& name);
/// The name parse_precision() reads.
std::string precision_name(Precision precision);

/// Refuses a precision the device cannot run (float16 autocast is CUDA only), naming both;
/// std::invalid_argument.
void check_precision(Precision precision, const torch::Device& device);

/// Whether this CPU computes bfloat16 products natively (avx512_bf16 or AMX), read from
/// /proc/cpuinfo. Without it oneDNN emulates bfloat16 and training is slower than float32.
bool cpu_has_native_bf16();

/// A warning for a run about to use `precision` on `device` when that will be slow (bfloat16
/// on a CPU without native support); empty otherwise.
std::string precision_advice(Precision precision, const torch::Device& device);

/// Autocast to `precision` for `device`'s type while in scope; does nothing for kFloat32.
/// Leaving the scope turns autocast off again and drops its cache of converted weights.
class AutocastGuard {
 public:
  AutocastGuard(const torch::Device& device, Precision precision);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  torch::DeviceType device_type_;
  bool enabled_;
};

/// A model's forward function.
using ForwardFunction = std::function<torch::Tensor(const torch::Tensor&)>;

/// `forward` run under an AutocastGuard for `precision` on `device`, its output returned as
/// float32 ([N, classes] logits stay [N, classes]); `forward` itself for kFloat32. Refuses a
/// precision the device cannot run (check_precision) when called, not when run.
ForwardFunction forward_in_precision(ForwardFunction forward, const torch::Device& device,
                                     Precision precision);

/// Dynamic loss scaling for float16 training (LibTorch has no GradScaler): the loss is
/// multiplied by scale() before backward; unscale() divides the gradients again and says
/// whether all are finite. A step with non-finite gradients is skipped and the scale halved;
/// after `growth_interval` finite steps in a row it doubles. The schedule is
/// torch.cuda.amp.GradScaler's defaults.
class LossScaler {
 public:
  explicit LossScaler(double initial_scale = 65536.0, int64_t growth_interval = 2000);

  double scale() const { return scale_; }
  /// Divides every defined gradient of `parameters` by scale(); returns whether all of them
  /// are finite afterwards.
  bool unscale(const std::vector<torch::Tensor>& parameters) const;
  /// Adjusts the scale after a step whose gradients were (or were not) finite.
  void update(bool finite);
  /// Finite steps since the scale last changed.
  int64_t good_steps() const { return good_steps_; }

 private:
  double scale_;
  int64_t growth_interval_;
  int64_t good_steps_ = 0;
};

}  // namespace alexnet::train
