// Fine-tuning: a new model's starting weights taken from a trained one.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "model/alexnet.h"

namespace alexnet::train {

/// What copy_matching_parameters did, layer by layer (forward order).
struct InitFromReport {
  /// Where the weights came from (the file, in messages).
  std::string source;
  /// "checkpoint" or "exported model" (empty when the caller gave tensors).
  std::string kind;
  /// Layers whose weight and bias were copied.
  std::vector<std::string> copied;
  /// Layers that keep the values the model was initialised with, each with the reason
  /// ("fc8", "10 classes in the file, 5 here").
  std::vector<std::pair<std::string, std::string>> kept;
  /// Layers of the source that the model does not have (e.g. a removed conv4).
  std::vector<std::string> unused;
};

/// The parameters of a trained model under single-device names (conv1.weight ... fc8.bias),
/// on the CPU, from either file this project writes: a training checkpoint
/// (train/checkpoint.h, read without running code) or an exported TorchScript model.pt
/// (train/export.h). `kind`, when given, receives "checkpoint" or "exported model". Throws
/// std::runtime_error naming the file when it is missing or is neither.
torch::OrderedDict<std::string, torch::Tensor> read_trained_parameters(const std::string& path,
                                                                       std::string* kind = nullptr);

/// Copies into `model` (either device layout) each layer of `source` (single-device names)
/// whose weight and bias have the model's names and shapes. The model's last layer (the
/// classifier, fc8) may differ in its number of rows (classes): it then keeps its values. A
/// layer the source lacks keeps its values; a source layer the model lacks is reported as
/// unused. Throws std::runtime_error naming `source_name`, the parameter and both shapes when
/// any other shape differs (another architecture: width, columns, in_channels...), when the
/// source holds one of a layer's weight and bias without the other, and when no layer fits.
InitFromReport copy_matching_parameters(
    alexnet::AlexNet& model, const torch::OrderedDict<std::string, torch::Tensor>& source,
    const std::string& source_name);

/// read_trained_parameters(path), then copy_matching_parameters.
InitFromReport init_from(alexnet::AlexNet& model, const std::string& path);

/// The report in words, e.g. "init_from runs/a/model.pt (exported model): copied conv1,
/// conv2, conv3, conv4, conv5, fc6, fc7; fc8 left as initialised: 10 classes in the file, 5
/// here".
std::string report_text(const InitFromReport& report);

}  // namespace alexnet::train
