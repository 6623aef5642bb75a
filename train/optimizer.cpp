#include "train/optimizer.h"

#include <algorithm>
#include <stdexcept>

#include <c10/util/string_utils.h>

#include "train/layer_settings.h"

namespace alexnet::train {
namespace {

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// One pass of the paper's rule over contiguous float32 CPU tensors: v <- m v + a w + b g;
// w <- w + v; g <- 0 (so zero_grad() can skip it). Four separate tensor operations would
// read and write the 60 M parameters about three times as often.
void fused_paper_update(torch::Tensor& weight, torch::Tensor& velocity, torch::Tensor& grad,
                        float momentum, float a, float b) {
  float* w = weight.data_ptr<float>();
  float* v = velocity.data_ptr<float>();
  float* g = grad.data_ptr<float>();
  at::parallel_for(0, weight.numel(), /*grain_size=*/1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float vi = momentum * v[i] + a * w[i] + b * g[i];
      v[i] = vi;
      w[i] += vi;
      g[i] = 0.0f;
    }
  });
}

bool fusable(const torch::Tensor& p, const torch::Tensor& v, const torch::Tensor& g) {
  for (const auto* t : {&p, &v, &g}) {
    if (!t->is_cpu() || t->scalar_type() != torch::kFloat32 || !t->is_contiguous()) return false;
  }
  return p.sizes() == g.sizes();
}

}  // namespace

Sgd::Sgd(const torch::OrderedDict<std::string, torch::Tensor>& parameters,
         const OptimizerConfig& options)
    : options_(options), lr_(options.lr) {
  for (const auto& item : parameters) parameters_.emplace_back(item.key(), item.value());
  for (const auto& [layer, multiplier] : options.lr_mult) {
    const bool held = std::any_of(parameters_.begin(), parameters_.end(), [&](const auto& item) {
      return layer_of_parameter(item.first) == layer;
    });
    TORCH_CHECK(held, "optimizer.lr_mult names '", layer, "', which holds none of the parameters");
  }
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const auto found = options.lr_mult.find(layer_of_parameter(parameters_[i].first));
    lr_multiplier_.push_back((is_bias(i) ? options.bias_lr_multiplier : 1.0) *
                             (found == options.lr_mult.end() ? 1.0 : found->second));
  }
  if (options.rule == SgdRule::kPaper) {
    for (const auto& [name, p] : parameters_) velocity_.push_back(torch::zeros_like(p));
    return;
  }
  // One group per (lr multiplier, weight decay) pair, in the order the parameters first use
  // them: weights and biases when lr_mult is empty.
  std::vector<std::pair<double, double>> group_keys;
  std::vector<std::vector<torch::Tensor>> group_parameters;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const std::pair<double, double> key{
        lr_multiplier_[i], options.weight_decay * (is_bias(i) ? options.bias_weight_decay : 1.0)};
    const auto group = static_cast<size_t>(std::find(group_keys.begin(), group_keys.end(), key) -
                                           group_keys.begin());
    if (group == group_keys.size()) {
      group_keys.push_back(key);
      group_parameters.emplace_back();
    }
    group_parameters[group].push_back(parameters_[i].second);
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  for (size_t g = 0; g < group_keys.size(); ++g) {
    const auto [lr_multiplier, weight_decay] = group_keys[g];
    groups.emplace_back(group_parameters[g],
                        std::make_unique<torch::optim::SGDOptions>(
                            torch::optim::SGDOptions(options.lr * lr_multiplier)
                                .momentum(options.momentum)
                                .weight_decay(weight_decay)));
    group_lr_multiplier_.push_back(lr_multiplier);
  }
  pytorch_ = std::make_unique<torch::optim::SGD>(groups, torch::optim::SGDOptions(options.lr));
}

bool Sgd::is_bias(size_t index) const { return ends_with(parameters_[index].first, "bias"); }

void Sgd::zero_grad() {
  if (grads_zeroed_) {
    grads_zeroed_ = false;
    return;
  }
  for (auto& [name, p] : parameters_) {
    if (p.grad().defined()) {
      p.mutable_grad().detach_();
      p.mutable_grad().zero_();
    }
  }
}

void Sgd::step() {
  if (pytorch_) {
    pytorch_->step();
    return;
  }
  torch::NoGradGuard no_grad;
  bool all_zeroed = true;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    auto& p = parameters_[i].second;
    if (!p.grad().defined()) continue;
    const double lr = lr_ * lr_multiplier_[i];
    const double wd = options_.weight_decay * (is_bias(i) ? options_.bias_weight_decay : 1.0);
    // v <- m v - wd lr w - lr g; w <- w + v
    auto& v = velocity_[i];
    auto g = p.mutable_grad();
    if (fusable(p, v, g)) {
      fused_paper_update(p, v, g, static_cast<float>(options_.momentum),
                         static_cast<float>(-wd * lr), static_cast<float>(-lr));
      continue;
    }
    all_zeroed = false;
    v.mul_(options_.momentum);
    if (wd != 0.0) v.add_(p, -wd * lr);
    v.add_(p.grad(), -lr);
    p.add_(v);
  }
  grads_zeroed_ = all_zeroed;
}

void Sgd::set_lr(double lr) {
  lr_ = lr;
  if (!pytorch_) return;
  auto& groups = pytorch_->param_groups();
  for (size_t g = 0; g < groups.size(); ++g) {
    auto& options = static_cast<torch::optim::SGDOptions&>(groups[g].options());
    options.lr(lr * group_lr_multiplier_[g]);
  }
}

torch::optim::SGDParamState* Sgd::pytorch_state(size_t index) const {
  // torch::optim::SGD keys its state by the address of the parameter's TensorImpl.
  const auto& states = pytorch_->state();
  const auto found =
      states.find(c10::guts::to_string(parameters_[index].second.unsafeGetTensorImpl()));
  return found == states.end() ? nullptr
                               : static_cast<torch::optim::SGDParamState*>(found->second.get());
}

torch::OrderedDict<std::string, torch::Tensor> Sgd::state() const {
  torch::OrderedDict<std::string, torch::Tensor> state;
  state.insert("lr", torch::tensor(lr_, torch::kFloat64));
  // torch::optim::SGD has no buffer for a parameter that never had a gradient (a frozen
  // one); once any buffer exists, such a parameter's is saved as the zeros it stands for.
  bool any_buffer = false;
  for (size_t i = 0; pytorch_ && i < parameters_.size(); ++i) {
    any_buffer = any_buffer || pytorch_state(i) != nullptr;
  }
  for (size_t i = 0; i < parameters_.size(); ++i) {
    torch::Tensor buffer = velocity_.empty() ? torch::Tensor() : velocity_[i];
    if (pytorch_ && pytorch_state(i) != nullptr) buffer = pytorch_state(i)->momentum_buffer();
    if (!buffer.defined() && any_buffer) buffer = torch::zeros_like(parameters_[i].second);
    if (buffer.defined()) {
      state.insert(buffer_kind() + "." + parameters_[i].first, buffer.detach().cpu().clone());
    }
  }
  return state;
}

void Sgd::load_buffer(size_t index, const torch::Tensor& buffer) {
  const torch::Tensor& p = parameters_[index].second;
  const std::string key = buffer_kind() + "." + parameters_[index].first;
  TORCH_CHECK(buffer.sizes() == p.sizes(), "optimizer state '", key, "' has shape ", buffer.sizes(),
              ", the parameter has ", p.sizes());
  if (!pytorch_) {
    velocity_[index].copy_(buffer);
    return;
  }
  auto state = std::make_unique<torch::optim::SGDParamState>();
  state->momentum_buffer(buffer.to(p.options()).clone());
  pytorch_->state()[c10::guts::to_string(p.unsafeGetTensorImpl())] = std::move(state);
}

void Sgd::load_state(const torch::OrderedDict<std::string, torch::Tensor>& state) {
  const torch::Tensor* lr = state.find("lr");
  TORCH_CHECK(lr != nullptr, "optimizer state has no entry 'lr'");
  const std::string other = pytorch_ ? "velocity" : "momentum_buffer";
  TORCH_CHECK(parameters_.empty() || state.find(other + "." + parameters_.front().first) == nullptr,
              "optimizer state holds '", other, ".", parameters_.front().first,
              "': it was saved with optimizer.rule \"",
              to_string(pytorch_ ? SgdRule::kPaper : SgdRule::kPytorch), "\", this run uses \"",
              to_string(options_.rule), "\"");
  torch::NoGradGuard no_grad;
  size_t found = 0;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const std::string key = buffer_kind() + "." + parameters_[i].first;
    const torch::Tensor* buffer = state.find(key);
    // torch::optim::SGD creates its buffers at the first step: all of them or none.
    TORCH_CHECK(buffer != nullptr || (pytorch_ && found == 0), "optimizer state has no entry '",
                key, "'");
    if (buffer == nullptr) continue;
    load_buffer(i, *buffer);
    ++found;
  }
  TORCH_CHECK(found == 0 || found == parameters_.size(), "optimizer state holds ", found,
              " of the ", parameters_.size(), " momentum buffers");
  set_lr(lr->item<double>());
}

}  // namespace alexnet::train
