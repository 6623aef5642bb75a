#include "train/exported_model.h"

#include <filesystem>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "train/config.h"

namespace alexnet::train {

namespace {

// What a file given as an exported model is instead, in words; "" when it may be one.
std::string other_kind_of_file(const std::string& path) {
  if (std::filesystem::is_directory(path)) return "is a folder";
  const ArchiveKind kind = archive_kind(path);
  if (kind == ArchiveKind::kNotArchive && std::filesystem::path(path).extension() == ".onnx") {
    return "is an ONNX file (predict --model reads it; this command needs model.pt)";
  }
  if (kind == ArchiveKind::kPlainData) {
    return "holds plain data (a training checkpoint, or another torch.save file); give a "
           "checkpoint as --checkpoint, or export it with `alexnet export --checkpoint FILE`";
  }
  return "";  // torch::jit::load says what is wrong, if anything
}

// Reads the attributes of one module, naming its file in every error.
class AttributeReader {
 public:
  AttributeReader(const torch::jit::Module& module, std::string path)
      : module_(module), path_(std::move(path)) {}

  int64_t integer(const std::string& name) const {
    const auto value = get(name);
    if (!value.isInt()) fail(name, "is not an int");
    return value.toInt();
  }

  std::vector<double> numbers(const std::string& name) const {
    const auto value = get(name);
    if (!value.isList()) fail(name, "is not a list of floats");
    std::vector<double> out;
    for (const auto& item : value.toListRef()) {
      if (!item.isDouble() && !item.isInt()) fail(name, "is not a list of floats");
      out.push_back(item.isDouble() ? item.toDouble() : static_cast<double>(item.toInt()));
    }
    return out;
  }

  std::string text(const std::string& name) const {
    const auto value = get(name);
    if (!value.isString()) fail(name, "is not a string");
    return value.toStringRef();
  }

  std::vector<std::string> strings(const std::string& name) const {
    const auto value = get(name);
    if (!value.isList()) fail(name, "is not a list of strings");
    std::vector<std::string> out;
    for (const auto& item : value.toListRef()) {
      if (!item.isString()) fail(name, "is not a list of strings");
      out.push_back(item.toStringRef());
    }
    return out;
  }

  [[noreturn]] void fail(const std::string& name, const std::string& problem) const {
    throw std::runtime_error("exported model '" + path_ + "': attribute '" + name + "' " + problem);
  }

 private:
  c10::IValue get(const std::string& name) const {
    if (!module_.hasattr(name)) fail(name, "is missing (not a file written by alexnet export?)");
    return module_.attr(name);
  }

  const torch::jit::Module& module_;
  std::string path_;
};

}  // namespace

transforms::PipelineOptions export_pipeline_options(const ExportInfo& info, int64_t in_channels) {
  transforms::PipelineOptions options;
  options.resize = info.resize_size;
  options.crop = info.image_size;
  options.channels = in_channels;
  options.mean = info.mean;
  options.std = info.std;
  options.pca_lighting = false;
  options.flip = false;
  return options;
}

transforms::PipelineOptions ExportedModel::pipeline_options() const {
  return export_pipeline_options(info, in_channels);
}

ExportedModel read_exported_model(torch::jit::Module module, const std::string& path) {
  const AttributeReader reader(module, path);
  ExportedModel model;
  model.info.class_names = reader.strings("class_names");
  model.info.image_size = reader.integer("image_size");
  model.info.resize_size = reader.integer("resize_size");
  model.info.mean = reader.numbers("mean");
  model.info.std = reader.numbers("std");
  model.in_channels = reader.integer("in_channels");
  model.num_classes = reader.integer("num_classes");
  check_export_ranges(
      model.info, model.in_channels, model.num_classes,
      [&](const std::string& name, const std::string& problem) { reader.fail(name, problem); });
  model.module = std::move(module);
  model.module.eval();
  model.path = path;
  return model;
}

ExportedModel load_exported_model(const std::string& path, torch::Device device) {
  if (!std::filesystem::exists(path)) {
    throw std::runtime_error("exported model '" + path + "' does not exist");
  }
  if (const std::string other = other_kind_of_file(path); !other.empty()) {
    throw std::runtime_error("'" + path + "' is not an exported TorchScript model: it " + other);
  }
  torch::jit::Module module;
  try {
    module = torch::jit::load(path, device);
  } catch (const c10::Error& e) {
    throw std::runtime_error("cannot load TorchScript model '" + path +
                             "': " + e.what_without_backtrace());
  }
  return read_exported_model(std::move(module), path);
}

alexnet::AlexNet eager_model(const ExportedModel& exported, torch::Device device) {
  const AttributeReader reader(exported.module, exported.path);
  const std::string options_json = reader.text("model_options");
  alexnet::AlexNetOptions options;
  try {
    options = model_options_from_json(nlohmann::json::parse(options_json));
  } catch (const std::exception& e) {
    reader.fail("model_options", std::string("cannot be read: ") + e.what());
  }
  options.devices({device});
  alexnet::AlexNet model(options);
  torch::OrderedDict<std::string, torch::Tensor> state;
  for (const auto& parameter : exported.module.named_parameters(/*recurse=*/true)) {
    state.insert(parameter.name, parameter.value);
  }
  try {
    model->load_single_device_state(state);
  } catch (const c10::Error& e) {
    throw std::runtime_error(
        "exported model '" + exported.path +
        "': its weights do not fit its model_options: " + e.what_without_backtrace());
  }
  model->eval();
  return model;
}

ForwardFunction exported_forward(std::shared_ptr<const ExportedModel> exported, Precision precision,
                                 torch::Device device) {
  if (emulates_bf16(precision, device)) {
    auto model = std::make_shared<alexnet::AlexNet>(eager_model(*exported, device));
    return forward_in_precision([model](const torch::Tensor& x) { return (*model)->forward(x); },
                                device, precision);
  }
  return forward_in_precision(
      [exported](const torch::Tensor& x) {
        return exported->module.get_method("forward")({x}).toTensor();
      },
      device, precision);
}

}  // namespace alexnet::train
