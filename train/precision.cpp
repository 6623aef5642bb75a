#include "train/precision.h"

#include <fstream>
#include <sstream>
#include <stdexcept>
#include <utility>

#include <ATen/autocast_mode.h>
#include <torch/version.h>

namespace alexnet::train {
namespace {

// The C++ autocast API became per-device-type in LibTorch 2.4; before it, CUDA and CPU had
// functions of their own.
bool autocast_enabled(torch::DeviceType device_type) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  return at::autocast::is_autocast_enabled(device_type);
#else
  return device_type == torch::kCUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
#endif
}

void set_autocast_enabled(torch::DeviceType device_type, bool enabled) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  at::autocast::set_autocast_enabled(device_type, enabled);
#else
  if (device_type == torch::kCUDA) {
    at::autocast::set_enabled(enabled);
  } else {
    at::autocast::set_cpu_enabled(enabled);
  }
#endif
}

void set_autocast_dtype(torch::DeviceType device_type, torch::ScalarType dtype) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  at::autocast::set_autocast_dtype(device_type, dtype);
#else
  if (device_type == torch::kCUDA) {
    at::autocast::set_autocast_gpu_dtype(dtype);
  } else {
    at::autocast::set_autocast_cpu_dtype(dtype);
  }
#endif
}

// Each precision with the name parse_precision reads.
constexpr std::pair<Precision, const char*> kPrecisionNames[] = {
    {Precision::kFloat32, "fp32"}, {Precision::kBFloat16, "bf16"}, {Precision::kFloat16, "fp16"}};

}  // namespace

Precision parse_precision(const std::string& name) {
  for (const auto& [precision, text] : kPrecisionNames) {
    if (name == text) return precision;
  }
  throw std::invalid_argument("unknown precision '" + name + "' (expected fp32, bf16 or fp16)");
}

std::string precision_name(Precision precision) {
  for (const auto& [value, text] : kPrecisionNames) {
    if (value == precision) return text;
  }
  return "fp32";
}

void check_precision(Precision precision, const torch::Device& device) {
  if (precision == Precision::kFloat16 && !device.is_cuda()) {
    throw std::invalid_argument(
        "precision fp16 needs a CUDA device (float16 autocast is CUDA "
        "only here), not " +
        device.str() + "; use bf16 on a CPU");
  }
}

bool cpu_has_native_bf16() {
  // Read once: PrecisionGuard asks at every step, and the flags do not change.
  static const bool native = [] {
    std::ifstream cpuinfo("/proc/cpuinfo");
    std::string line;
    while (std::getline(cpuinfo, line)) {
      if (line.rfind("flags", 0) != 0) continue;
      std::istringstream flags(line.substr(line.find(':') + 1));
      std::string flag;
      while (flags >> flag) {
        if (flag == "avx512_bf16" || flag == "amx_bf16") return true;
      }
      return false;
    }
    return false;
  }();
  return native;
}

bool emulates_bf16(Precision precision, const torch::Device& device) {
  return precision == Precision::kBFloat16 && device.is_cpu() && !cpu_has_native_bf16();
}

std::string precision_label(Precision precision, const torch::Device& device) {
  if (precision == Precision::kFloat32) return "fp32";
  return precision_name(precision) +
         (emulates_bf16(precision, device) ? " emulated in fp32" : " autocast");
}

std::string precision_advice(Precision precision, const torch::Device& device) {
  if (!emulates_bf16(precision, device)) return "";
  return "note: this CPU has no native bfloat16 arithmetic (neither avx512_bf16 nor amx_bf16 in "
         "/proc/cpuinfo); bf16 is emulated in float32: bfloat16 operands and results with "
         "float32 accumulation (the numerics of bfloat16 hardware), somewhat slower than fp32";
}

PrecisionGuard::PrecisionGuard(const torch::Device& device, Precision precision)
    : device_type_(device.type()), autocast_(false) {
  check_precision(precision, device);
  if (precision == Precision::kFloat32) return;
  if (emulates_bf16(precision, device)) {
    emulation_.emplace();
    return;
  }
  TORCH_CHECK(!autocast_enabled(device_type_), "autocast is already on for ", device.str());
  set_autocast_dtype(device_type_,
                     precision == Precision::kBFloat16 ? torch::kBFloat16 : torch::kHalf);
  set_autocast_enabled(device_type_, true);
  autocast_ = true;
}

PrecisionGuard::~PrecisionGuard() {
  if (!autocast_) return;
  set_autocast_enabled(device_type_, false);
  at::autocast::clear_cache();
}

ForwardFunction forward_in_precision(ForwardFunction forward, const torch::Device& device,
                                     Precision precision) {
  check_precision(precision, device);
  if (precision == Precision::kFloat32) return forward;
  return [forward = std::move(forward), device, precision](const torch::Tensor& x) {
    PrecisionGuard guard(device, precision);
    return forward(x).to(torch::kFloat);
  };
}

LossScaler::LossScaler(double initial_scale, int64_t growth_interval)
    : scale_(initial_scale), growth_interval_(growth_interval) {
  TORCH_CHECK(initial_scale > 0 && growth_interval > 0,
              "LossScaler needs a positive scale and growth interval, got ", initial_scale, " and ",
              growth_interval);
}

bool LossScaler::unscale(const std::vector<torch::Tensor>& parameters) const {
  torch::NoGradGuard no_grad;
  bool finite = true;
  for (const auto& p : parameters) {
    auto& grad = p.mutable_grad();
    if (!grad.defined()) continue;
    grad.div_(scale_);
    finite = finite && grad.isfinite().all().item<bool>();
  }
  return finite;
}

void LossScaler::update(bool finite) {
  if (!finite) {
    scale_ /= 2.0;
    good_steps_ = 0;
    return;
  }
  if (++good_steps_ >= growth_interval_) {
    scale_ *= 2.0;
    good_steps_ = 0;
  }
}

}  // namespace alexnet::train
