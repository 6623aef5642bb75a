#include "model/alexnet.h"

#include <sstream>
#include <stdexcept>

namespace alexnet {
namespace {

// Per-column widths of the paper's layers.
constexpr int64_t kConv1 = 48, kConv2 = 128, kConv3 = 192, kConv4 = 192, kConv5 = 128;
constexpr int64_t kFc = 2048;
constexpr int64_t kPooled = 6;

// Layers with bias 1 in the paper's initialisation.
bool paper_bias_one(const std::string& layer) {
  return layer == "conv2" || layer == "conv4" || layer == "conv5" || layer == "fc6" ||
         layer == "fc7";
}

std::vector<int64_t> without_batch(const torch::Tensor& t) {
  return std::vector<int64_t>(t.sizes().begin() + 1, t.sizes().end());
}

int64_t count_params(torch::nn::Module& module) {
  int64_t total = 0;
  for (const auto& p : module.parameters()) total += p.numel();
  return total;
}

torch::nn::Conv2d make_conv(int64_t in, int64_t out, int64_t kernel, int64_t stride,
                            int64_t padding, int64_t groups) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel)
                               .stride(stride)
                               .padding(padding)
                               .groups(groups));
}

}  // namespace

Activation parse_activation(const std::string& name) {
  if (name == "relu") return Activation::kReLU;
  if (name == "tanh") return Activation::kTanh;
  throw std::invalid_argument("activation must be one of relu, tanh; got '" + name + "'");
}

Init parse_init(const std::string& name) {
  if (name == "paper") return Init::kPaper;
  if (name == "kaiming") return Init::kKaiming;
  throw std::invalid_argument("init must be one of paper, kaiming; got '" + name + "'");
}

std::string to_string(Activation activation) {
  return activation == Activation::kReLU ? "relu" : "tanh";
}

std::string to_string(Init init) { return init == Init::kPaper ? "paper" : "kaiming"; }

std::vector<torch::Device> parse_devices(const std::string& text) {
  std::vector<torch::Device> devices;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    try {
      devices.emplace_back(item);
    } catch (const std::exception&) {
      throw std::invalid_argument("device '" + item + "' in '" + text +
                                  "' is not a device (expected cpu, cuda or cuda:N)");
    }
  }
  if (devices.empty() || devices.size() > 2) {
    throw std::invalid_argument("devices must name one or two devices (e.g. cpu, cuda:0,cuda:1),"
                                " got '" + text + "'");
  }
  for (const auto& device : devices) {
    if (device.is_cuda() && !torch::cuda::is_available()) {
      throw std::invalid_argument("device " + device.str() +
                                  " requested but this LibTorch has no usable CUDA device");
    }
    if (device.is_cuda() && device.has_index() &&
        device.index() >= static_cast<int64_t>(torch::cuda::device_count())) {
      throw std::invalid_argument("device " + device.str() + " does not exist (" +
                                  std::to_string(torch::cuda::device_count()) +
                                  " CUDA devices)");
    }
  }
  return devices;
}

void validate(const AlexNetOptions& o) {
  TORCH_CHECK(o.num_classes() >= 1, "AlexNet: num_classes must be >= 1, got ", o.num_classes());
  TORCH_CHECK(o.in_channels() >= 1, "AlexNet: in_channels must be >= 1, got ", o.in_channels());
  TORCH_CHECK(o.dropout() >= 0 && o.dropout() < 1, "AlexNet: dropout must be in [0, 1), got ",
              o.dropout());
  TORCH_CHECK(o.pool_kernel() >= 1 && o.pool_stride() >= 1,
              "AlexNet: pool kernel and stride must be >= 1, got ", o.pool_kernel(), "/",
              o.pool_stride());
  TORCH_CHECK(o.columns() == 1 || o.columns() == 2, "AlexNet: columns must be 1 or 2, got ",
              o.columns());
  TORCH_CHECK(o.devices().size() == 1 || o.devices().size() == 2,
              "AlexNet: devices must hold one or two devices, got ", o.devices().size());
  TORCH_CHECK(o.devices().size() == 1 || o.columns() == 2,
              "AlexNet: two devices need the paper's two columns (columns = 2)");
  TORCH_CHECK(o.devices().size() == 1 || o.num_classes() >= 2,
              "AlexNet: the two-device form splits fc8 and needs num_classes >= 2");
  validate(o.lrn_options());
}

AlexNetColumnImpl::AlexNetColumnImpl(const AlexNetOptions& o, int64_t column) {
  const int64_t classes = column == 0 ? (o.num_classes() + 1) / 2 : o.num_classes() / 2;
  conv1 = register_module("conv1", make_conv(o.in_channels(), kConv1, 11, 4, 2, 1));
  conv2 = register_module("conv2", make_conv(kConv1, kConv2, 5, 1, 2, 1));
  conv3 = register_module("conv3", make_conv(2 * kConv2, kConv3, 3, 1, 1, 1));
  conv4 = register_module("conv4", make_conv(kConv3, kConv4, 3, 1, 1, 1));
  conv5 = register_module("conv5", make_conv(kConv4, kConv5, 3, 1, 1, 1));
  fc6 = register_module("fc6", torch::nn::Linear(2 * kConv5 * kPooled * kPooled, kFc));
  fc7 = register_module("fc7", torch::nn::Linear(2 * kFc, kFc));
  fc8 = register_module("fc8", torch::nn::Linear(2 * kFc, classes));
  to(o.devices()[column]);
}

AlexNetImpl::AlexNetImpl(AlexNetOptions options_) : options(std::move(options_)) {
  validate(options);
  if (two_device()) {
    column0 = register_module("column0", AlexNetColumn(options, 0));
    column1 = register_module("column1", AlexNetColumn(options, 1));
  } else {
    const int64_t g = options.columns();
    conv1 = register_module("conv1", make_conv(options.in_channels(), g * kConv1, 11, 4, 2, 1));
    conv2 = register_module("conv2", make_conv(g * kConv1, g * kConv2, 5, 1, 2, g));
    conv3 = register_module("conv3", make_conv(g * kConv2, g * kConv3, 3, 1, 1, 1));
    conv4 = register_module("conv4", make_conv(g * kConv3, g * kConv4, 3, 1, 1, g));
    conv5 = register_module("conv5", make_conv(g * kConv4, g * kConv5, 3, 1, 1, g));
    fc6 = register_module("fc6", torch::nn::Linear(g * kConv5 * kPooled * kPooled, g * kFc));
    fc7 = register_module("fc7", torch::nn::Linear(g * kFc, g * kFc));
    fc8 = register_module("fc8", torch::nn::Linear(g * kFc, options.num_classes()));
    to(options.devices()[0]);
  }
  reset_parameters();
}

const std::vector<std::string>& AlexNetImpl::layer_names() {
  static const std::vector<std::string> names{"conv1", "conv2", "conv3", "conv4",
                                              "conv5", "fc6",   "fc7",   "fc8"};
  return names;
}

int64_t AlexNetImpl::layer_width(const std::string& layer) const {
  const int64_t g = options.columns();
  if (layer == "conv1") return g * kConv1;
  if (layer == "conv2") return g * kConv2;
  if (layer == "conv3") return g * kConv3;
  if (layer == "conv4") return g * kConv4;
  if (layer == "conv5") return g * kConv5;
  if (layer == "fc6" || layer == "fc7") return g * kFc;
  if (layer == "fc8") return options.num_classes();
  throw std::invalid_argument("AlexNet has no layer '" + layer + "'");
}

std::pair<int64_t, int64_t> AlexNetImpl::column_slice(const std::string& layer,
                                                      int64_t column) const {
  const int64_t width = layer_width(layer);
  const int64_t first = (width + 1) / 2;
  return column == 0 ? std::make_pair(int64_t{0}, first) : std::make_pair(first, width);
}

torch::nn::Module& AlexNetImpl::layer(const std::string& name, int64_t column) const {
  if (two_device()) {
    const auto& col = column == 0 ? column0 : column1;
    return *col->named_children()[name];
  }
  return *named_children()[name];
}

void AlexNetImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  torch::OrderedDict<std::string, torch::Tensor> state;
  const int64_t g = options.columns();
  const int64_t in_per_layer[] = {options.in_channels(), kConv1, g * kConv2, kConv3, kConv4,
                                  g * kConv5 * kPooled * kPooled, g * kFc, g * kFc};
  const int64_t kernel[] = {11, 5, 3, 3, 3, 1, 1, 1};
  for (size_t i = 0; i < layer_names().size(); ++i) {
    const std::string& name = layer_names()[i];
    const int64_t out = layer_width(name);
    std::vector<int64_t> shape{out, in_per_layer[i]};
    if (kernel[i] > 1) {
      shape.push_back(kernel[i]);
      shape.push_back(kernel[i]);
    }
    // Drawn on the CPU so that both forms and every device get the same numbers.
    auto weight = torch::empty(shape);
    auto bias = torch::zeros({out});
    if (options.init() == Init::kPaper) {
      weight.normal_(0.0, 0.01);
      if (paper_bias_one(name)) bias.fill_(1.0);
    } else {
      torch::nn::init::kaiming_normal_(weight, /*a=*/0.0, torch::kFanIn, torch::kReLU);
    }
    state.insert(name + ".weight", weight);
    state.insert(name + ".bias", bias);
  }
  load_single_device_state(state);
}

torch::OrderedDict<std::string, torch::Tensor> AlexNetImpl::single_device_state() const {
  torch::OrderedDict<std::string, torch::Tensor> state;
  for (const auto& name : layer_names()) {
    for (const std::string kind : {"weight", "bias"}) {
      if (two_device()) {
        const auto a = *layer(name, 0).named_parameters().find(kind);
        const auto b = *layer(name, 1).named_parameters().find(kind);
        state.insert(name + "." + kind, torch::cat({a.cpu(), b.cpu()}, 0));
      } else {
        state.insert(name + "." + kind, *layer(name, 0).named_parameters().find(kind));
      }
    }
  }
  return state;
}

void AlexNetImpl::load_single_device_state(
    const torch::OrderedDict<std::string, torch::Tensor>& state) {
  torch::NoGradGuard no_grad;
  for (const auto& name : layer_names()) {
    for (const std::string kind : {"weight", "bias"}) {
      const std::string key = name + "." + kind;
      const torch::Tensor* source = state.find(key);
      TORCH_CHECK(source != nullptr, "AlexNet state has no entry '", key, "'");
      for (int64_t column = 0; column < (two_device() ? 2 : 1); ++column) {
        torch::Tensor target = *layer(name, column).named_parameters().find(kind);
        torch::Tensor rows = *source;
        if (two_device()) {
          const auto [begin, end] = column_slice(name, column);
          TORCH_CHECK(source->dim() >= 1 && source->size(0) == layer_width(name),
                      "AlexNet state '", key, "' has shape ", source->sizes(), ", expected ",
                      layer_width(name), " rows");
          rows = source->narrow(0, begin, end - begin);
        }
        TORCH_CHECK(rows.sizes() == target.sizes(), "AlexNet state '", key, "' has shape ",
                    source->sizes(), " but the model expects ",
                    two_device() ? "a slice of shape " : "", target.sizes());
        target.copy_(rows);
      }
    }
  }
}

torch::Tensor AlexNetImpl::activate(torch::Tensor x) const {
  return options.activation() == Activation::kReLU ? torch::relu_(x) : torch::tanh_(x);
}

torch::Tensor AlexNetImpl::normalise(torch::Tensor x, int64_t groups) const {
  if (!options.lrn()) return x;
  if (groups == 1) return local_response_norm(x, options.lrn_options());
  // Per column: the channel window never crosses from one column's maps into the other's.
  const auto sizes = x.sizes().vec();
  auto grouped = x.reshape({sizes[0] * groups, sizes[1] / groups, sizes[2], sizes[3]});
  return local_response_norm(grouped, options.lrn_options()).view(sizes);
}

torch::Tensor AlexNetImpl::pool(torch::Tensor x) const {
  return torch::max_pool2d(x, options.pool_kernel(), options.pool_stride());
}

torch::Tensor AlexNetImpl::forward(torch::Tensor x) { return run(x, false, nullptr); }

torch::Tensor AlexNetImpl::features(torch::Tensor x) { return run(x, true, nullptr); }

std::vector<LayerInfo> AlexNetImpl::describe(int64_t image_size) {
  torch::NoGradGuard no_grad;
  const bool was_training = is_training();
  eval();
  Recorder recorder;
  run(torch::zeros({1, options.in_channels(), image_size, image_size},
                   torch::TensorOptions().device(options.devices()[0])),
      false, &recorder);
  train(was_training);
  return recorder;
}

torch::Tensor AlexNetImpl::run(torch::Tensor x, bool stop_at_fc7, Recorder* recorder) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == options.in_channels(),
              "AlexNet expects input [N, ", options.in_channels(), ", H, W], got ", x.sizes());
  TORCH_CHECK(x.size(2) >= 63 && x.size(3) >= 63,
              "AlexNet needs images of at least 63x63 pixels, got ", x.size(2), "x", x.size(3));
  return two_device() ? run_two_device(x, stop_at_fc7, recorder)
                      : run_single(x, stop_at_fc7, recorder);
}

torch::Tensor AlexNetImpl::run_single(torch::Tensor x, bool stop_at_fc7, Recorder* recorder) {
  const int64_t g = options.columns();
  const std::string device = options.devices()[0].str();
  auto record = [&](const std::string& name, const torch::Tensor& t, torch::nn::Module* owner) {
    if (recorder != nullptr) {
      recorder->push_back({name, without_batch(t), owner ? count_params(*owner) : 0, device});
    }
  };
  x = x.to(options.devices()[0]);
  x = conv1(x);
  record("conv1", x, conv1.get());
  x = activate(x);
  x = normalise(x, g);
  if (options.lrn()) record("lrn1", x, nullptr);
  x = pool(x);
  record("pool1", x, nullptr);
  x = activate(conv2(x));
  record("conv2", x, conv2.get());
  x = normalise(x, g);
  if (options.lrn()) record("lrn2", x, nullptr);
  x = pool(x);
  record("pool2", x, nullptr);
  x = activate(conv3(x));
  record("conv3", x, conv3.get());
  x = activate(conv4(x));
  record("conv4", x, conv4.get());
  x = activate(conv5(x));
  record("conv5", x, conv5.get());
  x = pool(x);
  record("pool5", x, nullptr);
  x = torch::adaptive_avg_pool2d(x, {kPooled, kPooled}).flatten(1);
  x = activate(fc6(x));
  x = torch::dropout(x, options.dropout(), is_training());
  record("fc6", x, fc6.get());
  x = activate(fc7(x));
  x = torch::dropout(x, options.dropout(), is_training());
  record("fc7", x, fc7.get());
  if (stop_at_fc7) return x;
  x = fc8(x);
  record("fc8", x, fc8.get());
  return x;
}

torch::Tensor AlexNetImpl::run_two_device(torch::Tensor x, bool stop_at_fc7, Recorder* recorder) {
  const auto& devices = options.devices();
  AlexNetColumn columns[2] = {column0, column1};
  torch::Tensor h[2];
  auto record = [&](const std::string& name, torch::nn::Module* owner0,
                    torch::nn::Module* owner1) {
    if (recorder == nullptr) return;
    torch::nn::Module* owners[2] = {owner0, owner1};
    for (int c = 0; c < 2; ++c) {
      recorder->push_back({"column" + std::to_string(c) + "." + name, without_batch(h[c]),
                           owners[c] ? count_params(*owners[c]) : 0, devices[c].str()});
    }
  };
  // Both columns read the image; each then works on its own device.
  auto each = [&](auto&& fn) {
    for (int c = 0; c < 2; ++c) h[c] = fn(c, h[c]);
  };
  // The paper's cross-column connections: each column gets both columns' maps, its own
  // first, so that channel order equals the single-device form's.
  auto cross = [&](int64_t dim) {
    torch::Tensor joined[2];
    for (int c = 0; c < 2; ++c) {
      joined[c] = torch::cat({h[0].to(devices[c]), h[1].to(devices[c])}, dim);
    }
    h[0] = joined[0];
    h[1] = joined[1];
  };
  each([&](int c, const torch::Tensor&) { return columns[c]->conv1(x.to(devices[c])); });
  record("conv1", columns[0]->conv1.get(), columns[1]->conv1.get());
  each([&](int, torch::Tensor t) { return normalise(activate(t), 1); });
  if (options.lrn()) record("lrn1", nullptr, nullptr);
  each([&](int, torch::Tensor t) { return pool(t); });
  record("pool1", nullptr, nullptr);
  each([&](int c, torch::Tensor t) { return activate(columns[c]->conv2(t)); });
  record("conv2", columns[0]->conv2.get(), columns[1]->conv2.get());
  each([&](int, torch::Tensor t) { return normalise(t, 1); });
  if (options.lrn()) record("lrn2", nullptr, nullptr);
  each([&](int, torch::Tensor t) { return pool(t); });
  record("pool2", nullptr, nullptr);
  cross(1);
  each([&](int c, torch::Tensor t) { return activate(columns[c]->conv3(t)); });
  record("conv3", columns[0]->conv3.get(), columns[1]->conv3.get());
  each([&](int c, torch::Tensor t) { return activate(columns[c]->conv4(t)); });
  record("conv4", columns[0]->conv4.get(), columns[1]->conv4.get());
  each([&](int c, torch::Tensor t) { return activate(columns[c]->conv5(t)); });
  record("conv5", columns[0]->conv5.get(), columns[1]->conv5.get());
  each([&](int, torch::Tensor t) { return pool(t); });
  record("pool5", nullptr, nullptr);
  each([&](int, torch::Tensor t) {
    return torch::adaptive_avg_pool2d(t, {kPooled, kPooled}).flatten(1);
  });
  cross(1);
  each([&](int c, torch::Tensor t) {
    return torch::dropout(activate(columns[c]->fc6(t)), options.dropout(), is_training());
  });
  record("fc6", columns[0]->fc6.get(), columns[1]->fc6.get());
  cross(1);
  each([&](int c, torch::Tensor t) {
    return torch::dropout(activate(columns[c]->fc7(t)), options.dropout(), is_training());
  });
  record("fc7", columns[0]->fc7.get(), columns[1]->fc7.get());
  if (stop_at_fc7) return torch::cat({h[0], h[1].to(devices[0])}, 1);
  cross(1);
  each([&](int c, torch::Tensor t) { return columns[c]->fc8(t); });
  record("fc8", columns[0]->fc8.get(), columns[1]->fc8.get());
  return torch::cat({h[0], h[1].to(devices[0])}, 1);
}

}  // namespace alexnet
