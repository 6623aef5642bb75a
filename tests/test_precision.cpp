#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "train/precision.h"

namespace test_precision {

using alexnet::train::LossScaler;
using alexnet::train::Precision;
using alexnet::train::PrecisionGuard;

TEST_CASE("Precision names round-trip; unknown names are refused naming the value", "[precision]") {
  for (auto p : {Precision::kFloat32, Precision::kBFloat16, Precision::kFloat16}) {
    CHECK(alexnet::train::parse_precision(alexnet::train::precision_name(p)) == p);
  }
  CHECK_THROWS_WITH(alexnet::train::parse_precision("float16"),
                    Catch::Contains("'float16'") && Catch::Contains("fp32, bf16 or fp16"));
}

TEST_CASE("PrecisionGuard runs bf16 under autocast, or emulated on a CPU without bfloat16",
          "[precision]") {
  const auto a = torch::randn({4, 8});
  const auto b = torch::randn({8, 3});
  const bool emulated = !alexnet::train::cpu_has_native_bf16();
  CHECK(alexnet::train::emulates_bf16(Precision::kBFloat16, torch::kCPU) == emulated);
  CHECK_FALSE(alexnet::train::emulates_bf16(Precision::kFloat32, torch::kCPU));
  CHECK_FALSE(alexnet::train::emulates_bf16(Precision::kBFloat16, torch::Device("cuda:0")));
  CHECK(alexnet::train::precision_label(Precision::kBFloat16, torch::kCPU) ==
        (emulated ? "bf16 emulated in fp32" : "bf16 autocast"));
  {
    PrecisionGuard guard(torch::kCPU, Precision::kBFloat16);
    // Autocast computes the product in bfloat16; the emulation leaves it to AlexNet's layers.
    CHECK(torch::mm(a, b).scalar_type() == (emulated ? torch::kFloat : torch::kBFloat16));
    CHECK(alexnet::bfloat16_emulated() == emulated);
  }
  CHECK(torch::mm(a, b).scalar_type() == torch::kFloat);
  CHECK_FALSE(alexnet::bfloat16_emulated());
  {
    PrecisionGuard none(torch::kCPU, Precision::kFloat32);
    CHECK(torch::mm(a, b).scalar_type() == torch::kFloat);
    CHECK_FALSE(alexnet::bfloat16_emulated());
  }
  // float16 autocast is CUDA only here; the refusal names the device and the alternative.
  CHECK_THROWS_WITH(PrecisionGuard(torch::kCPU, Precision::kFloat16),
                    Catch::Contains("CUDA") && Catch::Contains("cpu") && Catch::Contains("bf16"));
  CHECK(torch::mm(a, b).scalar_type() == torch::kFloat);
}

TEST_CASE("LossScaler unscales gradients, skips overflowed steps and grows the scale",
          "[precision]") {
  auto w = torch::ones({3}).requires_grad_();
  LossScaler scaler(/*initial_scale=*/1024.0, /*growth_interval=*/3);
  CHECK(scaler.scale() == 1024.0);

  // A finite gradient comes back divided by the scale (powers of two divide exactly).
  (w.sum() * scaler.scale()).backward();
  CHECK(scaler.unscale({w}));
  CHECK(torch::equal(w.grad(), torch::ones({3})));
  scaler.update(true);
  CHECK(scaler.good_steps() == 1);

  // An overflow (infinity in a gradient) is reported; the scale halves and the count restarts.
  w.mutable_grad() = torch::tensor({1.0f, std::numeric_limits<float>::infinity(), 1.0f});
  CHECK_FALSE(scaler.unscale({w}));
  scaler.update(false);
  CHECK(scaler.scale() == 512.0);
  CHECK(scaler.good_steps() == 0);
  w.mutable_grad() = torch::tensor({std::nanf(""), 0.0f, 0.0f});
  CHECK_FALSE(scaler.unscale({w}));

  // Three finite steps in a row double it.
  for (int i = 0; i < 3; ++i) scaler.update(true);
  CHECK(scaler.scale() == 1024.0);
  CHECK(scaler.good_steps() == 0);
  // Parameters without a gradient are left alone.
  auto unused = torch::ones({2}).requires_grad_();
  CHECK(scaler.unscale({unused}));
  CHECK_FALSE(unused.grad().defined());
}

TEST_CASE("Native bfloat16 support is read from /proc/cpuinfo", "[precision]") {
  // The advice appears exactly when the CPU lacks native bfloat16, and only for bf16 on a CPU.
  const bool native = alexnet::train::cpu_has_native_bf16();
  const auto advice = alexnet::train::precision_advice(Precision::kBFloat16, torch::kCPU);
  CHECK(advice.empty() == native);
  CHECK(alexnet::train::precision_advice(Precision::kFloat32, torch::kCPU).empty());
}

}  // namespace test_precision
