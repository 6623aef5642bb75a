#include "model/bfloat16_emulation.h"

namespace alexnet {
namespace {

thread_local bool emulating = false;

}  // namespace

Bfloat16Emulation::Bfloat16Emulation() : previous_(emulating) { emulating = true; }

Bfloat16Emulation::~Bfloat16Emulation() { emulating = previous_; }

bool bfloat16_emulated() { return emulating; }

torch::Tensor round_to_bfloat16(const torch::Tensor& x) {
  if (!x.defined()) return x;
  return x.to(torch::kBFloat16).to(x.scalar_type());
}

}  // namespace alexnet
