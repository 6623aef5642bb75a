#include "train/init_from.h"

#include <algorithm>
#include <filesystem>
#include <sstream>
#include <stdexcept>

#include <caffe2/serialize/inline_container.h>

#include "train/checkpoint.h"
#include "train/exported_model.h"
#include "train/layer_settings.h"

namespace alexnet::train {
namespace {

using ParameterDict = torch::OrderedDict<std::string, torch::Tensor>;

// A TorchScript archive holds compiled code; a checkpoint holds only data.pkl and tensors.
bool holds_torchscript(const std::string& path) {
  try {
    for (const auto& record : caffe2::serialize::PyTorchStreamReader(path).getAllRecords()) {
      if (record == "constants.pkl" || record.rfind("code/", 0) == 0) return true;
    }
  } catch (const c10::Error&) {
    // Not a zip archive: load_checkpoint refuses it, naming the file.
  }
  return false;
}

std::string shape_of(const torch::Tensor& tensor) {
  std::ostringstream out;
  out << tensor.sizes();
  return out.str();
}

std::string joined(const std::vector<std::string>& items) {
  std::string text;
  for (const auto& item : items) text += (text.empty() ? "" : ", ") + item;
  return text;
}

}  // namespace

ParameterDict read_trained_parameters(const std::string& path, std::string* kind) {
  if (!std::filesystem::exists(path)) {
    throw std::runtime_error("init_from: '" + path +
                             "' does not exist (give a checkpoint or an exported model.pt)");
  }
  if (holds_torchscript(path)) {
    const ExportedModel exported = load_exported_model(path);
    ParameterDict parameters;
    for (const auto& item : exported.module.named_parameters(/*recurse=*/true)) {
      parameters.insert(item.name, item.value.detach().clone());
    }
    if (kind != nullptr) *kind = "exported model";
    return parameters;
  }
  Checkpoint checkpoint = load_checkpoint(path);
  if (kind != nullptr) *kind = "checkpoint";
  return std::move(checkpoint.model);
}

InitFromReport copy_matching_parameters(alexnet::AlexNet& model, const ParameterDict& source,
                                        const std::string& source_name) {
  const auto fail = [&](const std::string& problem) {
    throw std::runtime_error("init_from '" + source_name + "': " + problem);
  };
  InitFromReport report;
  report.source = source_name;
  const ParameterDict own = model->single_device_state();
  const auto layers = model->layer_names();
  const std::string& classifier = layers.back();
  ParameterDict merged;
  for (const auto& layer : layers) {
    const std::string weight_key = layer + ".weight", bias_key = layer + ".bias";
    const torch::Tensor* weight = source.find(weight_key);
    const torch::Tensor* bias = source.find(bias_key);
    const torch::Tensor& own_weight = own[weight_key];
    const torch::Tensor& own_bias = own[bias_key];
    if (weight == nullptr || bias == nullptr) {
      if (weight != nullptr || bias != nullptr) {
        fail("the file holds '" + (weight ? weight_key : bias_key) + "' but not '" +
             (weight ? bias_key : weight_key) + "'");
      }
      report.kept.emplace_back(layer, "not in the file");
      merged.insert(weight_key, own_weight);
      merged.insert(bias_key, own_bias);
      continue;
    }
    if (weight->sizes() == own_weight.sizes() && bias->sizes() == own_bias.sizes()) {
      report.copied.push_back(layer);
      merged.insert(weight_key, *weight);
      merged.insert(bias_key, *bias);
      continue;
    }
    const bool other_classes = layer == classifier && weight->dim() == own_weight.dim() &&
                               weight->dim() >= 1 &&
                               weight->sizes().slice(1) == own_weight.sizes().slice(1) &&
                               bias->dim() == 1 && bias->size(0) == weight->size(0);
    if (other_classes) {
      report.kept.emplace_back(layer, std::to_string(weight->size(0)) + " classes in the file, " +
                                          std::to_string(own_weight.size(0)) + " here");
      merged.insert(weight_key, own_weight);
      merged.insert(bias_key, own_bias);
      continue;
    }
    const bool weight_differs = weight->sizes() != own_weight.sizes();
    fail("parameter '" + (weight_differs ? weight_key : bias_key) + "' has shape " +
         shape_of(weight_differs ? *weight : *bias) + " in the file and " +
         shape_of(weight_differs ? own_weight : own_bias) +
         " in this model: another architecture (model.width, columns, in_channels, remove_conv "
         "or extra_conv differ); "
         "only the number of classes, in " +
         classifier + ", may differ");
  }
  for (const auto& item : source) {
    const std::string layer = layer_of_parameter(item.key());
    const bool known = std::find(layers.begin(), layers.end(), layer) != layers.end();
    const bool listed =
        std::find(report.unused.begin(), report.unused.end(), layer) != report.unused.end();
    if (!known && !listed) report.unused.push_back(layer);
  }
  if (report.copied.empty()) {
    fail("none of its layers (" + joined(report.unused) + ") is a layer of this model (" +
         joined(layers) + ")");
  }
  model->load_single_device_state(merged);
  return report;
}

InitFromReport init_from(alexnet::AlexNet& model, const std::string& path) {
  std::string kind;
  const ParameterDict parameters = read_trained_parameters(path, &kind);
  InitFromReport report = copy_matching_parameters(model, parameters, path);
  report.kind = kind;
  return report;
}

std::string report_text(const InitFromReport& report) {
  std::string text = "init_from " + report.source;
  if (!report.kind.empty()) text += " (" + report.kind + ")";
  text += ": copied " + joined(report.copied);
  for (const auto& [layer, reason] : report.kept) {
    text += "; " + layer + " left as initialised: " + reason;
  }
  if (!report.unused.empty()) text += "; not used from the file: " + joined(report.unused);
  return text;
}

}  // namespace alexnet::train
