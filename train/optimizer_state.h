#pragma once

#include <string>

#include <torch/torch.h>

#include "model/alexnet.h"
#include "train/optimizer.h"

namespace alexnet::train {

/// The optimiser's state (Sgd::state()) with every per-parameter buffer re-keyed to the
/// single-device parameter names ("velocity.conv1.weight"), as checkpoints hold it, so that a
/// run resumes on any device layout of the same model. Entries without a kind ("lr") are kept.
torch::OrderedDict<std::string, torch::Tensor> single_device_optimizer_state(
    const alexnet::AlexNet& model, const Sgd& optimizer);

/// The inverse: a checkpoint's optimiser state under `model`'s parameter names, for
/// Sgd::load_state. Throws std::runtime_error naming `path` and the entries that do not fit.
torch::OrderedDict<std::string, torch::Tensor> layout_optimizer_state(
    const alexnet::AlexNet& model, const torch::OrderedDict<std::string, torch::Tensor>& saved,
    const std::string& path);

}  // namespace alexnet::train
