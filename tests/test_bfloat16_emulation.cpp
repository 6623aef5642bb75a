// Bfloat16Emulation: rounding to bfloat16 in float32, and AlexNet computing under it.
#include <cmath>

#include <torch/torch.h>
#include <catch2/catch.hpp>

#include "model/alexnet.h"
#include "model/bfloat16_emulation.h"

namespace test_bfloat16_emulation {

using alexnet::round_to_bfloat16;

// Whether every element of `t` is a bfloat16 value (rounding leaves it alone).
bool holds_bfloat16_values(const torch::Tensor& t) { return torch::equal(round_to_bfloat16(t), t); }

TEST_CASE("round_to_bfloat16 keeps 8 significant bits, ties to even, and rounds the gradient",
          "[bfloat16]") {
  // bfloat16 values near 1 are 2^-7 apart: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7 and
  // goes to the even one (1); 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 (odd) and 1 + 2^-6.
  const auto x = torch::tensor({1.0f, 1.0f + 0x1p-7f, 1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f,
                                1.0f + 0x1p-8f + 0x1p-12f, -3.0f, 0.0f});
  const auto expected =
      torch::tensor({1.0f, 1.0f + 0x1p-7f, 1.0f, 1.0f + 0x1p-6f, 1.0f + 0x1p-7f, -3.0f, 0.0f});
  CHECK(torch::equal(round_to_bfloat16(x), expected));
  CHECK(round_to_bfloat16(x).scalar_type() == torch::kFloat);
  CHECK_FALSE(round_to_bfloat16(torch::Tensor()).defined());

  // The gradient passes through rounded the same way.
  auto leaf = torch::ones({3}).requires_grad_();
  const auto weight = torch::tensor({1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 0.5f});
  (round_to_bfloat16(leaf) * weight).sum().backward();
  CHECK(torch::equal(leaf.grad(), torch::tensor({1.0f, 1.0f + 0x1p-6f, 0.5f})));
}

TEST_CASE("Bfloat16Emulation is per scope and nests", "[bfloat16]") {
  CHECK_FALSE(alexnet::bfloat16_emulated());
  {
    alexnet::Bfloat16Emulation outer;
    CHECK(alexnet::bfloat16_emulated());
    {
      alexnet::Bfloat16Emulation inner;
      CHECK(alexnet::bfloat16_emulated());
    }
    CHECK(alexnet::bfloat16_emulated());
  }
  CHECK_FALSE(alexnet::bfloat16_emulated());
}

// A sixteenth-width net (fc7 gives 256 features) in training mode without dropout (kaiming
// init keeps the activations' scale over the layers).
alexnet::AlexNet narrow_model() {
  torch::manual_seed(0);
  return alexnet::AlexNet(
      alexnet::AlexNetOptions().num_classes(5).width(1.0 / 16).dropout(0.0).init(
          alexnet::Init::kKaiming));
}

// Checks `logits` = fc8(fc7) computed as bfloat16 hardware does: inputs, weights and bias
// rounded to bfloat16 (exact in double), the K + 1 products summed in float32, the sum rounded
// to the nearest bfloat16. The float32 sum differs from the exact one by at most
// (K + 1) 2^-24 times the sum of the products' magnitudes, so the result is the exact sum
// rounded, or its bfloat16 neighbour when the exact sum lies within that distance of the
// midpoint between them. Returns whether that holds for every logit.
bool matches_bfloat16_product(const torch::Tensor& logits, const torch::Tensor& fc7,
                              const torch::Tensor& weight, const torch::Tensor& bias) {
  const auto w = round_to_bfloat16(weight).to(torch::kDouble);
  const auto b = round_to_bfloat16(bias).to(torch::kDouble);
  const auto f = fc7.to(torch::kDouble);
  const auto exact = torch::addmm(b, f, w.t());
  const auto magnitude = torch::addmm(b.abs(), f.abs(), w.abs().t());
  const double terms = static_cast<double>(w.size(1) + 1);
  // The float32 rounding of the exact value, on its way to bfloat16, adds 2^-24 of it.
  const auto slack = magnitude * terms * 0x1p-24 * 1.01 + exact.abs() * 0x1p-24;
  const auto got = logits.to(torch::kDouble);
  const auto nearest = exact.to(torch::kBFloat16).to(torch::kDouble);
  const auto neighbour = (got - nearest).abs() <= nearest.abs() * 0x1p-7 * 1.01;
  const auto near_midpoint = (exact - (got + nearest) / 2).abs() <= slack;
  return (got.eq(nearest) | (neighbour & near_midpoint)).all().item<bool>();
}

TEST_CASE("AlexNet under Bfloat16Emulation rounds its layers' results and gradients",
          "[bfloat16]") {
  auto model = narrow_model();
  torch::manual_seed(1);
  const auto x = torch::randn({16, 3, 64, 64});
  torch::Tensor logits, fc7;
  {
    alexnet::Bfloat16Emulation emulation;
    logits = model->forward(x);
    fc7 = model->features(x).detach();
    logits.pow(2).sum().backward();
  }
  // Every layer's output is rounded, the logits included, and float32 differs from it.
  CHECK(logits.scalar_type() == torch::kFloat);
  CHECK(holds_bfloat16_values(logits.detach()));
  CHECK(holds_bfloat16_values(fc7));
  CHECK_FALSE(torch::equal(model->forward(x).detach(), logits.detach()));
  // One backward pass: each weight's gradient is the gradient of its bfloat16 copy, rounded.
  for (const auto& item : model->named_parameters()) {
    INFO(item.key());
    REQUIRE(item.value().grad().defined());
    CHECK(holds_bfloat16_values(item.value().grad()));
  }

  const auto* fc8 = model->named_modules()["fc8"]->as<torch::nn::Linear>();
  REQUIRE(fc8 != nullptr);
  REQUIRE(fc8->weight.size(1) == 256);
  const auto weight = fc8->weight.detach(), bias = fc8->bias.detach();
  CHECK(matches_bfloat16_product(logits.detach(), fc7, weight, bias));
  // The check tells rounded weights from unrounded ones: float32 arithmetic on the weights as
  // they are, its result rounded to bfloat16, fails it.
  const auto unrounded = round_to_bfloat16(torch::addmm(bias, fc7, weight.t()));
  CHECK_FALSE(matches_bfloat16_product(unrounded, fc7, weight, bias));
}

TEST_CASE("The two-device form rounds as the single-device form does", "[bfloat16]") {
  auto single = narrow_model();
  alexnet::AlexNet two(
      alexnet::AlexNetOptions(single->options).devices({torch::kCPU, torch::kCPU}));
  two->load_single_device_state(single->single_device_state());
  torch::manual_seed(2);
  const auto x = torch::randn({4, 3, 64, 64});
  const auto fp32 = two->forward(x).detach();
  torch::Tensor expected, got;
  {
    alexnet::Bfloat16Emulation emulation;
    expected = single->forward(x).detach();
    got = two->forward(x);
    got.sum().backward();
  }
  CHECK(holds_bfloat16_values(got.detach()));
  CHECK_FALSE(torch::equal(got.detach(), fp32));
  for (const auto& item : two->named_parameters()) {
    INFO(item.key());
    CHECK(holds_bfloat16_values(item.value().grad()));
  }
  // The columns sum their products in another order than the grouped layers of the
  // single-device form, which can move a rounding to the neighbouring bfloat16 value (2^-8 of
  // it at most); over the network's roundings (three per layer, two per LRN, 28 in all) that
  // moves the logits by less than 32 * 2^-8 of their largest.
  const double scale = expected.abs().max().item<double>();
  CHECK((got.detach() - expected).abs().max().item<double>() <= scale * 32.0 / 256.0);
}

}  // namespace test_bfloat16_emulation
