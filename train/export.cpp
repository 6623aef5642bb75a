#include "train/export.h"

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>

#include "model/layers.h"
#include "train/checkpoint.h"
#include "train/config.h"

namespace alexnet::train {
namespace {

// A double as a TorchScript literal that parses back to the same value.
std::string literal(double value) {
  char text[64];
  std::snprintf(text, sizeof(text), "%.17g", value);
  std::string out = text;
  if (out.find_first_of(".e") == std::string::npos) out += ".0";
  return out;
}

std::string list_literal(std::initializer_list<int64_t> values) {
  std::string out = "[";
  for (auto it = values.begin(); it != values.end(); ++it) {
    out += (it == values.begin() ? "" : ", ") + std::to_string(*it);
  }
  return out + "]";
}

// `s` holds k + alpha * (window sum of squares) of `y`; multiplies y by s^-beta in place
// (s is overwritten). rsqrt and sqrt are far cheaper than a general pow.
std::string apply_scale_in_place(double beta) {
  if (beta == 0.75) return "    s.rsqrt_()\n    y.mul_(s)\n    s.sqrt_()\n    y.mul_(s)\n";
  if (beta == 0.5) return "    s.rsqrt_()\n    y.mul_(s)\n";
  if (beta == 1.0) return "    y.div_(s)\n";
  return "    s.pow_(" + literal(-beta) + ")\n    y.mul_(s)\n";
}

// def _lrn(self, x) -> x normalised across channels, per column: k + alpha * (window sum of
// squares) built by in-place sums of shifted channel slices, then x * s^-beta in place. x is
// an activation the caller owns.
std::string lrn_source(const AlexNetOptions& options) {
  const auto& o = options.lrn_options();
  const int64_t groups = options.columns();
  const std::string alpha = literal(o.effective_alpha());
  std::ostringstream s;
  s << "def _lrn(self, x: Tensor) -> Tensor:\n"
    << "    n = x.size(0)\n    c = x.size(1)\n    h = x.size(2)\n    w = x.size(3)\n"
    << "    cg = c // " << groups << "\n"
    << "    y = x.reshape([n * " << groups << ", cg, h, w])\n"
    << "    s = torch.addcmul(torch.full([1], " << literal(o.k())
    << ", dtype=y.dtype, device=y.device), y, y, value=" << alpha << ")\n";
  for (int64_t d = 1; d <= o.size() / 2; ++d) {
    s << "    if cg > " << d << ":\n"
      << "        below = y.narrow(1, 0, cg - " << d << ")\n"
      << "        above = y.narrow(1, " << d << ", cg - " << d << ")\n"
      << "        s.narrow(1, " << d << ", cg - " << d << ").addcmul_(below, below, value=" << alpha
      << ")\n"
      << "        s.narrow(1, 0, cg - " << d << ").addcmul_(above, above, value=" << alpha << ")\n";
  }
  s << apply_scale_in_place(o.beta()) << "    return y.view([n, c, h, w])\n";
  return s.str();
}

template <typename T>
c10::List<T> to_list(const std::vector<T>& values) {
  c10::List<T> list;
  for (const auto& value : values) list.push_back(value);
  return list;
}

}  // namespace

void check_export_info(const AlexNetOptions& options, const ExportInfo& info) {
  check_export_ranges(info, options.in_channels(), options.num_classes(),
                      [](const std::string& attribute, const std::string& problem) {
                        TORCH_CHECK(false, "export: ", attribute, " ", problem);
                      });
}

ExportInfo export_info(const Checkpoint& checkpoint) {
  ExportInfo info;
  info.class_names = checkpoint.class_names;
  info.image_size = checkpoint.image_size;
  info.resize_size = checkpoint.resize_size;
  info.mean = checkpoint.mean;
  info.std = checkpoint.std;
  return info;
}

void check_export_ranges(const ExportInfo& info, int64_t in_channels, int64_t num_classes,
                         const ExportRangeFailure& fail) {
  if (info.image_size < kMinImageSide) {
    return fail("image_size", "must be at least " + std::to_string(kMinImageSide) + ", is " +
                                  std::to_string(info.image_size));
  }
  if (info.resize_size < info.image_size) {
    return fail("resize_size", "(" + std::to_string(info.resize_size) +
                                   ") must be at least image_size (" +
                                   std::to_string(info.image_size) + ")");
  }
  if (in_channels != 1 && in_channels != 3) {
    return fail("in_channels", "must be 1 or 3, is " + std::to_string(in_channels));
  }
  if (num_classes <= 0) {
    return fail("num_classes", "must be positive, is " + std::to_string(num_classes));
  }
  if (!info.class_names.empty() && static_cast<int64_t>(info.class_names.size()) != num_classes) {
    return fail("class_names", "holds " + std::to_string(info.class_names.size()) + " names for " +
                                   std::to_string(num_classes) + " classes");
  }
  const auto channels = static_cast<size_t>(in_channels);
  for (const auto& [name, values] :
       {std::make_pair("mean", &info.mean), std::make_pair("std", &info.std)}) {
    if (!values->empty() && values->size() != channels) {
      return fail(name, "holds " + std::to_string(values->size()) + " values for " +
                            std::to_string(channels) + " input channels");
    }
  }
  for (double value : info.std) {
    if (!(value > 0)) return fail("std", "holds " + std::to_string(value) + " (must be > 0)");
  }
}

namespace {

// The TorchScript source of the methods export_torchscript defines.
std::string torchscript_source(const AlexNetOptions& options) {
  const int64_t groups = options.columns();
  const std::string activation =
      options.activation() == Activation::kReLU ? "torch.relu_" : "torch.tanh_";
  const std::string pool =
      "torch.max_pool2d(x, " + list_literal({options.pool_kernel(), options.pool_kernel()}) + ", " +
      list_literal({options.pool_stride(), options.pool_stride()}) + ", [0, 0], [1, 1], False)";
  std::ostringstream s;
  s << "def _fc7(self, x: Tensor) -> Tensor:\n"
    << "    assert x.dim() == 4 and x.size(1) == " << options.in_channels()
    << ", \"AlexNet expects input [N, " << options.in_channels()
    << ", H, W], got \" + str(x.shape)\n"
    << "    assert x.size(2) >= " << kMinImageSide << " and x.size(3) >= " << kMinImageSide
    << ", \"AlexNet needs images of at least " << kMinImageSide << "x" << kMinImageSide
    << " pixels, got \" + str(x.shape)\n";
  // Every layer of the table but the last (fc8, in forward), as AlexNetImpl::run_single.
  const std::vector<LayerSpec> table = layer_table(options);
  for (size_t i = 0; i + 1 < table.size(); ++i) {
    const LayerSpec& spec = table[i];
    const std::string self = "self." + spec.name;
    if (spec.conv) {
      const int64_t g = i == 0 || spec.crosses ? 1 : groups;
      s << "    x = " << activation << "(torch.conv2d(x, " << self << ".weight, " << self
        << ".bias, " << list_literal({spec.stride, spec.stride}) << ", "
        << list_literal({spec.padding, spec.padding}) << ", [1, 1], " << g << "))\n";
    } else {
      s << "    x = " << activation << "(torch.linear(x, " << self << ".weight, " << self
        << ".bias))\n";
    }
    if (spec.lrn_after && options.lrn()) s << "    x = self._lrn(x)\n";
    if (spec.pool_after) s << "    x = " << pool << "\n";
    if (flattens_after(table, i)) {
      s << "    x = torch.adaptive_avg_pool2d(x, [" << kPooledSide << ", " << kPooledSide
        << "]).flatten(1)\n";
    }
  }
  const std::string last = "self." + table.back().name;
  s << "    return x\n\n"
    << "def features(self, x: Tensor) -> Tensor:\n"
    << "    return self._fc7(x)\n\n"
    << "def forward(self, x: Tensor) -> Tensor:\n"
    << "    return torch.linear(self._fc7(x), " << last << ".weight, " << last << ".bias)\n";
  if (options.lrn()) s << "\n" << lrn_source(options);
  return s.str();
}

}  // namespace

torch::jit::Module export_torchscript(AlexNet& model, const ExportInfo& info) {
  const AlexNetOptions& options = model->options;
  check_export_info(options, info);
  torch::NoGradGuard no_grad;
  const auto state = model->single_device_state();

  auto unit = std::make_shared<torch::jit::CompilationUnit>();
  torch::jit::Module module(c10::QualifiedName("__torch__.alexnet.AlexNet"), unit);
  for (const auto& layer : model->layer_names()) {
    std::string type_name = layer;
    type_name[0] = static_cast<char>(std::toupper(type_name[0]));
    torch::jit::Module sub(c10::QualifiedName("__torch__.alexnet." + type_name), unit);
    for (const std::string kind : {"weight", "bias"}) {
      const torch::Tensor* value = state.find(layer + "." + kind);
      TORCH_CHECK(value != nullptr, "export: the model has no parameter ", layer, ".", kind);
      // In the model's floating type: float32 for every model the trainer makes.
      auto tensor = value->detach().to(torch::kCPU).contiguous().clone();
      tensor.set_requires_grad(false);
      sub.register_parameter(kind, tensor, /*is_buffer=*/false);
    }
    // torch::jit::Module has no "training" attribute of its own (is_training() then reports
    // true and train(false) leaves it so); PyTorch's scripted modules all carry one.
    sub.register_attribute("training", c10::BoolType::get(), false);
    module.register_module(layer, sub);
  }
  module.register_attribute("class_names", c10::ListType::ofStrings(), to_list(info.class_names));
  module.register_attribute("image_size", c10::IntType::get(), info.image_size);
  module.register_attribute("resize_size", c10::IntType::get(), info.resize_size);
  module.register_attribute("in_channels", c10::IntType::get(), options.in_channels());
  module.register_attribute("num_classes", c10::IntType::get(), options.num_classes());
  module.register_attribute("mean", c10::ListType::ofFloats(), to_list(info.mean));
  module.register_attribute("std", c10::ListType::ofFloats(), to_list(info.std));
  module.register_attribute("model_options", c10::StringType::get(),
                            model_options_to_json(options).dump());
  module.register_attribute("training", c10::BoolType::get(), false);
  module.define(torchscript_source(options));
  module.eval();
  return module;
}

std::string torchscript_bytes(AlexNet& model, const ExportInfo& info) {
  auto module = export_torchscript(model, info);
  std::ostringstream bytes;
  try {
    module.save(bytes);
  } catch (const c10::Error& e) {
    throw std::runtime_error(std::string("cannot serialise the TorchScript model: ") +
                             e.what_without_backtrace());
  }
  return bytes.str();
}

void save_torchscript(AlexNet& model, const ExportInfo& info, const std::string& path) {
  std::string bytes;
  try {
    bytes = torchscript_bytes(model, info);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(e.what() + std::string(" (for '") + path + "')");
  }
  runtime::write_file_atomically(path, bytes);
}

}  // namespace alexnet::train
