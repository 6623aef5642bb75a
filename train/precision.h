#pragma once

// Mixed precision: which floating type the forward pass computes in, autocast on CPU and
// CUDA across LibTorch versions, and dynamic loss scaling for float16.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "model/bfloat16_emulation.h"

namespace alexnet::train {

/// The type a forward pass computes in. Weights, gradients and optimiser state stay float32
/// in every case; kBFloat16 and kFloat16 run the convolutions and matrix products under
/// autocast, or kBFloat16 emulated on a CPU without bfloat16 arithmetic (PrecisionGuard;
/// LRN and the loss compute in float32).
enum class Precision { kFloat32, kBFloat16, kFloat16 };

/// "fp32", "bf16" or "fp16"; throws std::invalid_argument naming `name` otherwise.
Precision parse_precision(const std::string& name);
/// The name parse_precision() reads.
std::string precision_name(Precision precision);

/// Refuses a precision the device cannot run (float16 autocast is CUDA only), naming both;
/// std::invalid_argument.
void check_precision(Precision precision, const torch::Device& device);

/// Whether this CPU computes bfloat16 products natively (avx512_bf16 or AMX), read from
/// /proc/cpuinfo. Without it bf16 runs emulated (emulates_bf16).
bool cpu_has_native_bf16();

/// Whether `precision` on `device` runs as AlexNet's Bfloat16Emulation
/// (model/bfloat16_emulation.h): bf16 on a CPU without native bfloat16 arithmetic, where
/// LibTorch's own bfloat16 kernels are about 30 times slower than float32 and accumulate in
/// bfloat16. bf16 elsewhere and fp16 run under autocast.
bool emulates_bf16(Precision precision, const torch::Device& device);

/// How `precision` runs on `device`, for logs: "fp32", "bf16 autocast", "bf16 emulated in
/// fp32" (emulates_bf16) or "fp16 autocast".
std::string precision_label(Precision precision, const torch::Device& device);

/// A note for a run about to use `precision` on `device` when it runs emulated (emulates_bf16):
/// bfloat16's numerics, somewhat slower than float32. Empty otherwise.
std::string precision_advice(Precision precision, const torch::Device& device);

/// While in scope, AlexNet's forward on this thread computes in `precision` on `device`:
/// autocast to bfloat16 or float16 for `device`'s type, or Bfloat16Emulation where
/// emulates_bf16. Nothing for kFloat32. Leaving the scope turns autocast off again and drops
/// its cache of converted weights.
///
/// Only AlexNet's eager forward honours the emulation: a TorchScript module run under it
/// computes float32 (cli code runs an exported model's eager copy instead, eager_model).
class PrecisionGuard {
 public:
  PrecisionGuard(const torch::Device& device, Precision precision);
  ~PrecisionGuard();
  PrecisionGuard(const PrecisionGuard&) = delete;
  PrecisionGuard& operator=(const PrecisionGuard&) = delete;

 private:
  torch::DeviceType device_type_;
  bool autocast_;
  std::optional<alexnet::Bfloat16Emulation> emulation_;
};

/// A model's forward function.
using ForwardFunction = std::function<torch::Tensor(const torch::Tensor&)>;

/// `forward` run under a PrecisionGuard for `precision` on `device`, its output returned as
/// float32 ([N, classes] logits stay [N, classes]); `forward` itself for kFloat32. Refuses a
/// precision the device cannot run (check_precision) when called, not when run. Where
/// emulates_bf16, `forward` must be AlexNet's eager forward (see PrecisionGuard).
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
