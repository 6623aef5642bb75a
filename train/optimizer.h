#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "train/config.h"

namespace alexnet::train {

/// SGD with momentum and weight decay, with two update rules:
///  - paper: v <- m v - wd lr w - lr g; w <- w + v. The velocity keeps the step size it was
///    built with, so an lr drop fades in over ~1 / (1 - m) steps.
///  - pytorch: torch::optim::SGD (buf <- m buf + g + wd w; w <- w - lr buf), whose step
///    shrinks at once when lr drops. With a constant lr both rules give the same weights.
/// Parameters whose name ends in "bias" use lr * bias_lr_multiplier and
/// weight_decay * bias_weight_decay. The parameters of a layer that options.lr_mult names
/// (the layer of "column0.fc8.weight" is fc8, see layer_of_parameter) use their learning
/// rate times its multiplier. Parameters without a gradient (e.g. frozen ones) are left as
/// they are, momentum and weight decay included.
class Sgd {
 public:
  /// `parameters`: (name, tensor) pairs, e.g. model->named_parameters(). Throws c10::Error
  /// when options.lr_mult names a layer that holds none of them.
  Sgd(const torch::OrderedDict<std::string, torch::Tensor>& parameters,
      const OptimizerConfig& options);

  /// Zeroes the gradients (a no-op right after a paper-rule step(), which zeroes them).
  void zero_grad();
  /// One update from the gradients in the parameters' .grad().
  void step();
  /// Sets the base learning rate (biases get it times bias_lr_multiplier, the layers of
  /// lr_mult times their multiplier).
  void set_lr(double lr);
  /// The factor parameter `index` (in the order given) multiplies the base lr by.
  double lr_multiplier(size_t index) const { return lr_multiplier_.at(index); }
  double lr() const { return lr_; }

  /// The optimiser's state as tensors on the CPU: "lr" (a float64 scalar) and one buffer per
  /// parameter, shaped like it, named "<kind>.<parameter name>". The kind is "velocity" for
  /// the paper rule and "momentum_buffer" for the pytorch rule (torch::optim::SGD's buffers,
  /// absent before the first step and with momentum 0; after it, zeros for a parameter that
  /// has had no gradient, such as a frozen one).
  torch::OrderedDict<std::string, torch::Tensor> state() const;
  /// Restores what state() returned (same rule, same parameters); throws naming a missing or
  /// mismatched entry.
  void load_state(const torch::OrderedDict<std::string, torch::Tensor>& state);
  /// The kind of buffer state() holds per parameter: "velocity" or "momentum_buffer".
  std::string buffer_kind() const { return pytorch_ ? "momentum_buffer" : "velocity"; }

 private:
  bool is_bias(size_t index) const;
  // torch::optim::SGD's state entry for parameter `index` (null before its first step).
  torch::optim::SGDParamState* pytorch_state(size_t index) const;
  void load_buffer(size_t index, const torch::Tensor& buffer);

  OptimizerConfig options_;
  double lr_;
  std::vector<std::pair<std::string, torch::Tensor>> parameters_;
  std::vector<double> lr_multiplier_;           // per parameter: bias and layer factors
  std::vector<double> group_lr_multiplier_;     // pytorch rule: per parameter group
  std::vector<torch::Tensor> velocity_;         // paper rule
  std::unique_ptr<torch::optim::SGD> pytorch_;  // pytorch rule
  bool grads_zeroed_ = false;                   // the last step() zeroed every gradient
};

}  // namespace alexnet::train
