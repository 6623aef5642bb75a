#include <torch/torch.h>
#include <catch2/catch.hpp>

#include "train/optimizer.h"
#include "train/schedule.h"

namespace test_optimizer {

using alexnet::train::LrSchedule;
using alexnet::train::OptimizerConfig;
using alexnet::train::ScheduleConfig;
using alexnet::train::ScheduleKind;
using alexnet::train::Sgd;
using alexnet::train::SgdRule;

namespace {

torch::OrderedDict<std::string, torch::Tensor> one_parameter(const std::string& name,
                                                             double value) {
  torch::OrderedDict<std::string, torch::Tensor> parameters;
  parameters.insert(name, torch::tensor({value}, torch::kFloat64).requires_grad_());
  return parameters;
}

void set_grad(torch::Tensor& p, double g) {
  p.mutable_grad() = torch::tensor({g}, torch::kFloat64);
}

double value(const torch::Tensor& p) { return p.item<double>(); }

OptimizerConfig config(SgdRule rule) {
  OptimizerConfig c;
  c.rule = rule;
  c.lr = 0.1;
  c.momentum = 0.9;
  c.weight_decay = 0.01;
  return c;
}

// Runs gradients 0.5, -0.2 (lr 0.1) then 0.3 after dropping lr to 0.01; returns the weights.
std::vector<double> three_steps(SgdRule rule) {
  auto parameters = one_parameter("layer.weight", 1.0);
  auto p = parameters["layer.weight"];
  Sgd sgd(parameters, config(rule));
  std::vector<double> weights;
  const double grads[] = {0.5, -0.2, 0.3};
  for (int i = 0; i < 3; ++i) {
    if (i == 2) sgd.set_lr(0.01);
    set_grad(p, grads[i]);
    sgd.step();
    weights.push_back(value(p));
  }
  return weights;
}

}  // namespace

TEST_CASE("The paper's update rule matches a hand computation across an lr drop", "[optimizer]") {
  // v <- 0.9 v - 0.01 lr w - lr g; w <- w + v
  // v1 = -0.001 - 0.05 = -0.051; w1 = 0.949
  // v2 = -0.0459 - 0.000949 + 0.02 = -0.026849; w2 = 0.922151
  // lr 0.01: v3 = -0.0241641 - 0.0000922151 - 0.003 = -0.0272563151; w3 = 0.8948946849
  const auto w = three_steps(SgdRule::kPaper);
  CHECK(w[0] == Approx(0.949).epsilon(1e-12));
  CHECK(w[1] == Approx(0.922151).epsilon(1e-12));
  CHECK(w[2] == Approx(0.8948946849).epsilon(1e-12));
}

TEST_CASE("The pytorch rule equals the paper's at constant lr and differs after a drop",
          "[optimizer]") {
  // buf3 = 0.9 * 0.26849 + 0.3 + 0.01 * 0.922151 = 0.55086251; w3 = 0.922151 - 0.0055086251
  const auto paper = three_steps(SgdRule::kPaper);
  const auto pytorch = three_steps(SgdRule::kPytorch);
  CHECK(pytorch[0] == Approx(paper[0]).epsilon(1e-12));
  CHECK(pytorch[1] == Approx(paper[1]).epsilon(1e-12));
  CHECK(pytorch[2] == Approx(0.9166423749).epsilon(1e-12));
  CHECK(std::abs(pytorch[2] - paper[2]) > 0.02);
}

TEST_CASE("Biases get their own lr multiplier and weight decay", "[optimizer]") {
  for (const SgdRule rule : {SgdRule::kPaper, SgdRule::kPytorch}) {
    auto parameters = one_parameter("fc8.weight", 1.0);
    parameters.insert("fc8.bias", torch::tensor({1.0}, torch::kFloat64).requires_grad_());
    auto c = config(rule);
    c.bias_lr_multiplier = 2.0;
    c.bias_weight_decay = 0.0;
    Sgd sgd(parameters, c);
    auto w = parameters["fc8.weight"], b = parameters["fc8.bias"];
    set_grad(w, 0.5);
    set_grad(b, 0.5);
    sgd.step();
    CHECK(value(w) == Approx(0.949).epsilon(1e-12));
    CHECK(value(b) == Approx(1.0 - 2 * 0.1 * 0.5).epsilon(1e-12));
    // An lr change keeps the multiplier.
    sgd.set_lr(0.01);
    set_grad(b, 0.0);
    const double before = value(b);
    sgd.step();
    // paper: v = 0.9 * -0.1 (the old step size); pytorch: -0.02 * 0.9 * 0.5, a tenth of it.
    const double expected_velocity = 0.9 * (-0.1);
    CHECK(value(b) - before == Approx(expected_velocity * (rule == SgdRule::kPaper ? 1.0 : 0.1)));
  }
}

TEST_CASE("Optimiser state round-trips", "[optimizer]") {
  for (const SgdRule rule : {SgdRule::kPaper, SgdRule::kPytorch}) {
    auto params_a = one_parameter("conv1.weight", 1.0);
    auto params_b = one_parameter("conv1.weight", 1.0);
    Sgd a(params_a, config(rule));
    auto pa = params_a["conv1.weight"], pb = params_b["conv1.weight"];
    set_grad(pa, 0.5);
    a.step();
    a.set_lr(0.05);
    Sgd b(params_b, config(rule));
    {
      torch::NoGradGuard no_grad;
      pb.copy_(pa);
    }
    b.load_state(a.state());
    CHECK(b.lr() == 0.05);
    set_grad(pa, -0.3);
    set_grad(pb, -0.3);
    a.step();
    b.step();
    CHECK(value(pb) == value(pa));
  }
  auto params = one_parameter("x.weight", 1.0);
  Sgd paper(params, config(SgdRule::kPaper));
  Sgd pytorch(params, config(SgdRule::kPytorch));
  CHECK_THROWS_WITH(paper.load_state(pytorch.state()), Catch::Contains("velocity.x.weight"));
}

TEST_CASE("Step schedule drops at its milestones", "[schedule]") {
  ScheduleConfig c;
  c.kind = ScheduleKind::kStep;
  c.milestones = {2, 3.5};
  c.factor = 0.1;
  LrSchedule schedule(c, 0.01);
  CHECK(schedule.lr(0) == Approx(0.01));
  CHECK(schedule.lr(1.99) == Approx(0.01));
  CHECK(schedule.lr(2) == Approx(0.001));
  CHECK(schedule.lr(3.49) == Approx(0.001));
  CHECK(schedule.lr(3.5) == Approx(0.0001));
  CHECK(schedule.lr(80) == Approx(0.0001));
  CHECK_FALSE(schedule.observe(0.5));  // validation does not move a step schedule
  CHECK_FALSE(schedule.observe(0.6));
  CHECK(schedule.lr(0) == Approx(0.01));
}

TEST_CASE("Plateau schedule drops after patience epochs, at most max_drops times", "[schedule]") {
  ScheduleConfig c;
  c.kind = ScheduleKind::kPlateau;
  c.patience = 2;
  c.max_drops = 2;
  c.factor = 0.1;
  LrSchedule schedule(c, 0.01);
  CHECK_FALSE(schedule.observe(0.50));
  CHECK_FALSE(schedule.observe(0.40));  // improving
  CHECK_FALSE(schedule.observe(0.41));  // 1 bad epoch
  CHECK(schedule.lr(3) == Approx(0.01));
  CHECK(schedule.observe(0.40));  // 2 bad epochs (not better than the best): drop
  CHECK(schedule.lr(4) == Approx(0.001));
  CHECK_FALSE(schedule.observe(0.30));  // improving again resets the count
  CHECK_FALSE(schedule.observe(0.35));
  CHECK(schedule.observe(0.35));
  CHECK(schedule.lr(7) == Approx(0.0001));
  CHECK(schedule.drops() == 2);
  // max_drops reached: no more drops.
  for (int i = 0; i < 5; ++i) CHECK_FALSE(schedule.observe(0.9));
  CHECK(schedule.lr(12) == Approx(0.0001));

  LrSchedule resumed(c, 0.01);
  resumed.load_state(schedule.state());
  CHECK(resumed.lr(12) == Approx(0.0001));
  CHECK(resumed.best_error() == Approx(0.30));
  CHECK_THROWS_WITH(resumed.load_state({{"drops", 1}}), Catch::Contains("best"));
}

TEST_CASE("Plateau threshold: small improvements count as no improvement", "[schedule]") {
  ScheduleConfig c;
  c.patience = 1;
  c.threshold = 0.01;
  LrSchedule schedule(c, 1.0);
  CHECK_FALSE(schedule.observe(0.5));
  CHECK(schedule.observe(0.495));  // better by less than the threshold
  CHECK(schedule.lr(2) == Approx(0.1));
}

TEST_CASE("The fused float32 paper update equals the tensor formula", "[optimizer]") {
  torch::manual_seed(0);
  torch::OrderedDict<std::string, torch::Tensor> parameters;
  parameters.insert("fc6.weight", torch::randn({300, 700}).requires_grad_());
  parameters.insert("fc6.bias", torch::randn({300}).requires_grad_());
  auto c = config(SgdRule::kPaper);
  c.bias_lr_multiplier = 2.0;
  c.bias_weight_decay = 0.0;
  Sgd sgd(parameters, c);
  std::vector<torch::Tensor> w, v;
  for (const auto& item : parameters) {
    w.push_back(item.value().detach().to(torch::kFloat64));
    v.push_back(torch::zeros_like(w.back()));
  }
  for (int step = 0; step < 3; ++step) {
    if (step == 2) sgd.set_lr(0.01);
    const double lr = step == 2 ? 0.01 : 0.1;
    sgd.zero_grad();
    size_t i = 0;
    for (auto& item : parameters) {
      auto g = torch::randn(item.value().sizes());
      item.value().mutable_grad() = g.clone();
      const bool bias = i == 1;
      const double lr_i = lr * (bias ? 2.0 : 1.0), wd_i = bias ? 0.0 : 0.01;
      v[i] = 0.9 * v[i] - wd_i * lr_i * w[i] - lr_i * g.to(torch::kFloat64);
      w[i] = w[i] + v[i];
      ++i;
    }
    sgd.step();
  }
  size_t i = 0;
  for (const auto& item : parameters) {
    CHECK(torch::allclose(item.value().to(torch::kFloat64), w[i++], /*rtol=*/1e-5, /*atol=*/1e-6));
    // The fused step leaves zeroed gradients behind.
    CHECK(item.value().grad().abs().sum().item<double>() == 0.0);
  }
}

}  // namespace test_optimizer
