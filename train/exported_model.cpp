#include "train/exported_model.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <stdexcept>

#include <ATen/CPUGeneratorImpl.h>
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
    return "holds plain data (a training checkpoint, or another torch.save file); export a "
           "checkpoint with `alexnet export --checkpoint FILE` (`alexnet eval` also takes one "
           "as --checkpoint)";
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

// Elements of `t`'s storage its view reaches (0 when empty).
int64_t reach(const torch::Tensor& t) {
  if (t.numel() == 0) return 0;
  int64_t last = t.storage_offset();
  for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
  return last + 1;
}

// Refuses parameters a damaged or altered file holds: data shorter than the shape (LibTorch
// would read past it), another type than float32, NaN or infinity, and a first or last layer
// that does not fit in_channels or num_classes. Each error names the file and the parameter.
void check_parameters(const torch::jit::Module& module, const std::string& path,
                      int64_t in_channels, int64_t num_classes) {
  auto fail = [&](const std::string& name, const std::string& problem) {
    throw std::runtime_error("exported model '" + path + "': parameter '" + name + "' " + problem);
  };
  torch::NoGradGuard no_grad;
  std::map<std::string, torch::Tensor> parameters;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    const torch::Tensor& t = item.value;
    const auto needed = static_cast<size_t>(reach(t)) * t.element_size();
    if (t.storage().nbytes() < needed) {
      fail(item.name, "holds " + std::to_string(t.storage().nbytes()) + " bytes where its shape " +
                          c10::str(t.sizes()) + " needs " + std::to_string(needed) +
                          " (a damaged file)");
    }
    if (t.scalar_type() != torch::kFloat) {
      fail(item.name, std::string("is ") + c10::toString(t.scalar_type()) + ", not float32");
    }
    if (!torch::isfinite(t).all().item<bool>()) fail(item.name, "holds NaN or infinite values");
    parameters[item.name] = t;
  }
  const auto conv1 = parameters.find("conv1.weight");
  if (conv1 == parameters.end() || conv1->second.dim() != 4) {
    fail("conv1.weight", "is missing or not a convolution's weight");
  }
  if (conv1->second.size(1) != in_channels) {
    fail("conv1.weight", "takes " + std::to_string(conv1->second.size(1)) +
                             " input channels, but attribute in_channels is " +
                             std::to_string(in_channels));
  }
  for (const char* name : {"fc8.weight", "fc8.bias"}) {
    const auto fc8 = parameters.find(name);
    if (fc8 == parameters.end() || fc8->second.dim() < 1) fail(name, "is missing");
    if (fc8->second.size(0) != num_classes) {
      fail(name, "gives " + std::to_string(fc8->second.size(0)) +
                     " outputs, but attribute num_classes is " + std::to_string(num_classes));
    }
  }
}

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
  check_parameters(module, path, model.in_channels, model.num_classes);
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
  std::vector<torch::Tensor> tensors;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) tensors.push_back(item.value);
  for (const auto& item : module.named_buffers(/*recurse=*/true)) tensors.push_back(item.value);
  check_tensor_records(path, "exported model", tensors);
  return read_exported_model(std::move(module), path);
}

alexnet::AlexNet eager_model(const ExportedModel& exported, torch::Device device) {
  const AttributeReader reader(exported.module, exported.path);
  if (!exported.module.hasattr("model_options")) {
    reader.fail("model_options",
                "is missing, and it is what rebuilds the model for bf16 on this CPU; export it "
                "again from its checkpoint, or use --precision fp32");
  }
  alexnet::AlexNetOptions options;
  try {
    options = model_options_from_json(nlohmann::json::parse(reader.text("model_options")));
  } catch (const std::exception& e) {
    reader.fail("model_options", std::string("cannot be read: ") + e.what());
  }
  options.devices({device});
  // The layers model_options describes must be the file's, row for row, before anything of
  // that size is allocated.
  torch::OrderedDict<std::string, torch::Tensor> state;
  for (const auto& parameter : exported.module.named_parameters(/*recurse=*/true)) {
    state.insert(parameter.name, parameter.value);
  }
  size_t described = 0;
  for (const auto& spec : alexnet::layer_table(options)) {
    const int64_t rows = spec.width > 0 ? options.columns() * spec.width : options.num_classes();
    for (const std::string kind : {".weight", ".bias"}) {
      const torch::Tensor* held = state.find(spec.name + kind);
      if (held == nullptr || held->dim() < 1 || held->size(0) != rows) {
        reader.fail("model_options", "describes a layer " + spec.name + " with " +
                                         std::to_string(rows) + " outputs, which parameter '" +
                                         spec.name + kind + "' " +
                                         (held ? "does not have" : "is not in the file"));
      }
      ++described;
    }
  }
  if (described != state.size()) {
    reader.fail("model_options", "describes " + std::to_string(described) +
                                     " parameters, but the file holds " +
                                     std::to_string(state.size()));
  }
  alexnet::AlexNet model(options);
  try {
    model->load_single_device_state(state);
  } catch (const c10::Error& e) {
    throw std::runtime_error(
        "exported model '" + exported.path +
        "': its weights do not fit its model_options: " + e.what_without_backtrace());
  }
  model->eval();
  // And it must compute what the file's code computes (activation, LRN, pooling): compared
  // on a probe batch as `alexnet export` compares the file with the checkpoint's model.
  torch::NoGradGuard no_grad;
  const int64_t side = exported.info.image_size;
  const auto probe = torch::randn({2, options.in_channels(), side, side},
                                  at::detail::createCPUGenerator(/*seed_val=*/0), torch::kFloat)
                         .to(device);
  const auto scripted = exported.module.get_method("forward")({probe}).toTensor();
  const double scale = std::max(1.0, scripted.abs().max().item<double>());
  const double difference = (model->forward(probe) - scripted).abs().max().item<double>() / scale;
  if (!(difference <= 1e-5)) {
    reader.fail("model_options",
                "does not describe the file's network: rebuilt from it, the "
                "model differs from the file's code by " +
                    std::to_string(difference) + " of the logits' scale");
  }
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
