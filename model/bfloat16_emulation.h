// bfloat16 arithmetic emulated in float32, for CPUs without bfloat16 instructions.
#pragma once

#include <torch/torch.h>

namespace alexnet {

/// While an instance lives, AlexNet's forward on this thread computes as bfloat16 hardware
/// (avx512_bf16, AMX) does under bfloat16 autocast, but in float32 instructions: the inputs,
/// weights, biases and outputs of the convolutions and fully connected layers, and the input
/// and output of LRN, are rounded to the nearest bfloat16, and every product accumulates in
/// float32. The backward pass rounds the gradients at the same tensors, as autocast's
/// bfloat16 copies do. Activations stay float32 tensors holding bfloat16 values.
///
/// LibTorch 1.13's own bfloat16 kernels on a CPU without those instructions are about 30 times
/// slower than float32 and accumulate matrix products in bfloat16; this runs at float32's
/// speed with the hardware's numerics. Instances nest; the state is per thread.
class Bfloat16Emulation {
 public:
  Bfloat16Emulation();
  ~Bfloat16Emulation();
  Bfloat16Emulation(const Bfloat16Emulation&) = delete;
  Bfloat16Emulation& operator=(const Bfloat16Emulation&) = delete;

 private:
  bool previous_;
};

/// Whether a Bfloat16Emulation is alive on this thread.
bool bfloat16_emulated();

/// `x` (float32) rounded to the nearest bfloat16 (ties to even), as float32. Differentiable:
/// the gradient is rounded to bfloat16 the same way. An undefined tensor passes through.
torch::Tensor round_to_bfloat16(const torch::Tensor& x);

}  // namespace alexnet
