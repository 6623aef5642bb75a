#include "model/alexnet.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>

#include "model/bfloat16_emulation.h"

namespace alexnet {
namespace {

std::vector<int64_t> without_batch(const torch::Tensor& t) {
  return std::vector<int64_t>(t.sizes().begin() + 1, t.sizes().end());
}

int64_t count_params(torch::nn::Module& module) {
  int64_t total = 0;
  for (const auto& p : module.parameters()) total += p.numel();
  return total;
}

// The shape of one layer in a module that computes `held` columns' units (the single-device
// form holds options.columns(), a column of the two-device form 1) and whose fc8 has
// `classes` outputs.
struct LayerShape {
  int64_t in = 0, out = 0, groups = 1;
};

std::vector<LayerShape> layer_shapes(const AlexNetOptions& o, const std::vector<LayerSpec>& table,
                                     int64_t held, int64_t classes) {
  std::vector<LayerShape> shapes;
  int64_t per_column_in = 0;  // the previous layer's outputs per column
  for (size_t i = 0; i < table.size(); ++i) {
    const LayerSpec& spec = table[i];
    LayerShape shape;
    if (i == 0) {
      shape.in = o.in_channels();  // every column sees the whole image
    } else {
      shape.in = (spec.crosses ? o.columns() : held) * per_column_in;
      shape.groups = spec.crosses ? 1 : held;
    }
    shape.out = spec.width > 0 ? held * spec.width : classes;
    shapes.push_back(shape);
    per_column_in = spec.width * (flattens_after(table, i) ? kPooledSide * kPooledSide : 1);
  }
  return shapes;
}

// Registers the layers of `table` under their names in `owner`.
std::vector<torch::nn::AnyModule> register_layers(torch::nn::Module& owner,
                                                  const std::vector<LayerSpec>& table,
                                                  const std::vector<LayerShape>& shapes) {
  std::vector<torch::nn::AnyModule> layers;
  for (size_t i = 0; i < table.size(); ++i) {
    const LayerSpec& spec = table[i];
    const LayerShape& shape = shapes[i];
    if (spec.conv) {
      layers.emplace_back(owner.register_module(
          spec.name, torch::nn::Conv2d(torch::nn::Conv2dOptions(shape.in, shape.out, spec.kernel)
                                           .stride(spec.stride)
                                           .padding(spec.padding)
                                           .groups(shape.groups))));
    } else {
      layers.emplace_back(owner.register_module(spec.name, torch::nn::Linear(shape.in, shape.out)));
    }
  }
  return layers;
}

// `layer` (a Conv2d or Linear of `spec`) applied to x; under Bfloat16Emulation with its
// operands and result rounded to bfloat16, as bfloat16 autocast computes it.
torch::Tensor apply_layer(const LayerSpec& spec, torch::nn::AnyModule& layer,
                          const torch::Tensor& x) {
  if (!bfloat16_emulated()) return layer.forward(x);
  if (spec.conv) {
    const auto& conv = *layer.get<torch::nn::Conv2d>();
    return round_to_bfloat16(torch::conv2d(
        round_to_bfloat16(x), round_to_bfloat16(conv.weight), round_to_bfloat16(conv.bias),
        /*stride=*/spec.stride, /*padding=*/spec.padding, /*dilation=*/1, conv.options.groups()));
  }
  const auto& linear = *layer.get<torch::nn::Linear>();
  return round_to_bfloat16(torch::linear(round_to_bfloat16(x), round_to_bfloat16(linear.weight),
                                         round_to_bfloat16(linear.bias)));
}

bool is_variable_conv(const std::string& name) {
  const auto& names = variable_convs();
  return std::find(names.begin(), names.end(), name) != names.end();
}

// Throws naming the first option outside its range.
void check_options(const AlexNetOptions& o) {
  if (const auto problem = find_option_problem(o))
    TORCH_CHECK(false, "AlexNet: ", problem->message());
}

// The paper's layer with its per-column width multiplied by `width` (fc8 keeps 0).
LayerSpec scaled(LayerSpec spec, double width) {
  if (spec.width > 0) spec.width = std::max<int64_t>(1, std::llround(width * spec.width));
  return spec;
}

// Moves the LRN and pooling after `from` to `to`.
void move_reductions(LayerSpec& from, LayerSpec& to) {
  to.lrn_after = to.lrn_after || from.lrn_after;
  to.pool_after = to.pool_after || from.pool_after;
  from.lrn_after = from.pool_after = false;
}

}  // namespace

const std::vector<std::string>& variable_convs() {
  static const std::vector<std::string> names{"conv3", "conv4", "conv5"};
  return names;
}

std::string extra_conv_name(const std::string& layer) { return layer + "_extra"; }

std::vector<LayerSpec> layer_table(const AlexNetOptions& o) {
  check_options(o);
  std::vector<LayerSpec> table;
  for (const LayerSpec& paper : kPaperLayers) {
    LayerSpec spec = scaled(paper, o.width());
    if (spec.name == o.remove_conv()) {
      move_reductions(spec, table.back());
      continue;
    }
    table.push_back(spec);
    if (spec.name == o.extra_conv()) {
      LayerSpec extra = spec;
      extra.name = extra_conv_name(spec.name);
      move_reductions(table.back(), extra);
      table.push_back(extra);
    }
  }
  return table;
}

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
    throw std::invalid_argument(
        "devices must name one or two devices (e.g. cpu, cuda:0,cuda:1),"
        " got '" +
        text + "'");
  }
  for (const auto& device : devices) {
    if (device.is_cuda() && !torch::cuda::is_available()) {
      throw std::invalid_argument("device " + device.str() +
                                  " requested but this LibTorch has no usable CUDA device");
    }
    if (device.is_cuda() && device.has_index() &&
        device.index() >= static_cast<int64_t>(torch::cuda::device_count())) {
      throw std::invalid_argument("device " + device.str() + " does not exist (" +
                                  std::to_string(torch::cuda::device_count()) + " CUDA devices)");
    }
  }
  return devices;
}

std::optional<OptionProblem> find_option_problem(const AlexNetOptions& o) {
  auto problem = [](const char* option, const char* allowed, const auto& value) {
    return OptionProblem{option, allowed, option_value_text(value)};
  };
  if (o.num_classes() < 1) return problem("num_classes", "an integer >= 1", o.num_classes());
  if (o.in_channels() < 1) return problem("in_channels", "an integer >= 1", o.in_channels());
  if (!(o.dropout() >= 0 && o.dropout() < 1)) {
    return problem("dropout", "a number in [0, 1)", o.dropout());
  }
  if (auto lrn = find_option_problem(o.lrn_options())) {
    lrn->option = "lrn_" + lrn->option;
    return lrn;
  }
  if (o.pool_kernel() != 2 && o.pool_kernel() != 3) {
    return problem("pool_kernel", "2 or 3", o.pool_kernel());
  }
  if (o.pool_stride() != 2) return problem("pool_stride", "2", o.pool_stride());
  if (o.columns() != 1 && o.columns() != 2) return problem("columns", "1 or 2", o.columns());
  if (!(o.width() >= kMinWidth && o.width() <= kMaxWidth)) {
    return problem("width", "a number in [1/64, 16]", o.width());
  }
  for (const auto& [option, value] : {std::make_pair("remove_conv", o.remove_conv()),
                                      std::make_pair("extra_conv", o.extra_conv())}) {
    if (!value.empty() && !is_variable_conv(value)) {
      return problem(option, "\"\" (none) or one of conv3, conv4, conv5", value);
    }
  }
  if (!o.extra_conv().empty() && o.extra_conv() == o.remove_conv()) {
    return problem("extra_conv", "a layer other than remove_conv", o.extra_conv());
  }
  return std::nullopt;
}

void validate(const AlexNetOptions& o) {
  check_options(o);
  TORCH_CHECK(o.devices().size() == 1 || o.devices().size() == 2,
              "AlexNet: devices must hold one or two devices, got ", o.devices().size());
  TORCH_CHECK(o.devices().size() == 1 || o.columns() == 2,
              "AlexNet: two devices need the paper's two columns (columns = 2)");
  TORCH_CHECK(o.devices().size() == 1 || o.num_classes() >= 2,
              "AlexNet: the two-device form splits fc8 and needs num_classes >= 2");
}

AlexNetColumnImpl::AlexNetColumnImpl(const AlexNetOptions& o, int64_t column) {
  const int64_t classes = column == 0 ? (o.num_classes() + 1) / 2 : o.num_classes() / 2;
  const auto table = layer_table(o);
  layers = register_layers(*this, table, layer_shapes(o, table, /*held=*/1, classes));
  to(o.devices()[column]);
}

AlexNetImpl::AlexNetImpl(AlexNetOptions options_) : options(std::move(options_)) {
  validate(options);
  table = layer_table(options);
  if (two_device()) {
    column0 = register_module("column0", AlexNetColumn(options, 0));
    column1 = register_module("column1", AlexNetColumn(options, 1));
  } else {
    layers = register_layers(
        *this, table, layer_shapes(options, table, options.columns(), options.num_classes()));
    to(options.devices()[0]);
  }
  reset_parameters();
}

std::vector<std::string> AlexNetImpl::layer_names() const {
  std::vector<std::string> names;
  for (const auto& spec : table) names.push_back(spec.name);
  return names;
}

int64_t AlexNetImpl::layer_width(const std::string& layer) const {
  for (const auto& spec : table) {
    if (layer == spec.name) {
      return spec.width > 0 ? options.columns() * spec.width : options.num_classes();
    }
  }
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
  const auto shapes = layer_shapes(options, table, options.columns(), options.num_classes());
  for (size_t i = 0; i < table.size(); ++i) {
    const LayerSpec& spec = table[i];
    const LayerShape& shape = shapes[i];
    std::vector<int64_t> weight_shape{shape.out, shape.in / shape.groups};
    if (spec.conv) weight_shape.insert(weight_shape.end(), {spec.kernel, spec.kernel});
    // Drawn on the CPU in the single-device shapes, so that both forms and every device get
    // the same numbers.
    auto weight = torch::empty(weight_shape);
    auto bias = torch::zeros({shape.out});
    if (options.init() == Init::kPaper) {
      weight.normal_(0.0, 0.01);
      bias.fill_(spec.paper_bias);
    } else {
      torch::nn::init::kaiming_normal_(weight, /*a=*/0.0, torch::kFanIn, torch::kReLU);
    }
    state.insert(spec.name + ".weight", weight);
    state.insert(spec.name + ".bias", bias);
  }
  load_single_device_state(state);
}

torch::OrderedDict<std::string, torch::Tensor> AlexNetImpl::single_device_state() const {
  return to_single_device(named_parameters());
}

void AlexNetImpl::load_single_device_state(
    const torch::OrderedDict<std::string, torch::Tensor>& state) {
  torch::NoGradGuard no_grad;
  const auto rows = from_single_device(state);
  for (auto& item : named_parameters()) item.value().copy_(rows[item.key()]);
}

std::vector<std::pair<std::string, std::string>> AlexNetImpl::single_device_parameters() const {
  std::vector<std::pair<std::string, std::string>> parameters;
  for (const auto& name : layer_names()) {
    for (const std::string kind : {"weight", "bias"}) parameters.emplace_back(name, kind);
  }
  return parameters;
}

std::string AlexNetImpl::parameter_name(const std::string& key, int64_t column) const {
  return two_device() ? "column" + std::to_string(column) + "." + key : key;
}

torch::OrderedDict<std::string, torch::Tensor> AlexNetImpl::to_single_device(
    const torch::OrderedDict<std::string, torch::Tensor>& per_parameter) const {
  torch::OrderedDict<std::string, torch::Tensor> single;
  for (const auto& [layer, kind] : single_device_parameters()) {
    const std::string key = layer + "." + kind;
    std::vector<torch::Tensor> parts;
    for (int64_t column = 0; column < held_columns(); ++column) {
      const torch::Tensor* part = per_parameter.find(parameter_name(key, column));
      TORCH_CHECK(part != nullptr, "AlexNet state has no entry '", parameter_name(key, column),
                  "'");
      parts.push_back(*part);
    }
    single.insert(key, two_device() ? torch::cat({parts[0].cpu(), parts[1].cpu()}, 0) : parts[0]);
  }
  return single;
}

torch::OrderedDict<std::string, torch::Tensor> AlexNetImpl::from_single_device(
    const torch::OrderedDict<std::string, torch::Tensor>& single) const {
  torch::OrderedDict<std::string, torch::Tensor> per_parameter;
  for (const auto& [name, kind] : single_device_parameters()) {
    const std::string key = name + "." + kind;
    const torch::Tensor* source = single.find(key);
    TORCH_CHECK(source != nullptr, "AlexNet state has no entry '", key, "'");
    for (int64_t column = 0; column < held_columns(); ++column) {
      const torch::Tensor target = *layer(name, column).named_parameters().find(kind);
      torch::Tensor rows = *source;
      if (two_device()) {
        const auto [begin, end] = column_slice(name, column);
        TORCH_CHECK(source->dim() >= 1 && source->size(0) == layer_width(name), "AlexNet state '",
                    key, "' has shape ", source->sizes(), ", expected ", layer_width(name),
                    " rows");
        rows = source->narrow(0, begin, end - begin);
      }
      TORCH_CHECK(rows.sizes() == target.sizes(), "AlexNet state '", key, "' has shape ",
                  source->sizes(), " but the model expects ",
                  two_device() ? "a slice of shape " : "", target.sizes());
      per_parameter.insert(parameter_name(key, column), rows);
    }
  }
  return per_parameter;
}

torch::Tensor AlexNetImpl::activate(torch::Tensor x) const {
  return options.activation() == Activation::kReLU ? torch::relu_(x) : torch::tanh_(x);
}

torch::Tensor AlexNetImpl::normalise(torch::Tensor x, int64_t groups) const {
  if (!options.lrn()) return x;
  if (bfloat16_emulated()) {
    // Rounding the input too (its values are bfloat16 already) rounds the gradient there.
    return round_to_bfloat16(normalise_columns(round_to_bfloat16(x), groups));
  }
  return normalise_columns(x, groups);
}

torch::Tensor AlexNetImpl::normalise_columns(torch::Tensor x, int64_t groups) const {
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

std::vector<LayerInfo> AlexNetImpl::layer_summary(int64_t image_size) {
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
  TORCH_CHECK(x.dim() == 4 && x.size(1) == options.in_channels(), "AlexNet expects input [N, ",
              options.in_channels(), ", H, W], got ", x.sizes());
  TORCH_CHECK(x.size(2) >= kMinImageSide && x.size(3) >= kMinImageSide,
              "AlexNet needs images of at least ", kMinImageSide, "x", kMinImageSide,
              " pixels, got ", x.size(2), "x", x.size(3));
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
  for (size_t i = 0; i < table.size(); ++i) {
    const LayerSpec& spec = table[i];
    x = apply_layer(spec, layers[i], x);
    record(spec.name, x, layers[i].ptr().get());
    if (i + 1 == table.size()) break;  // fc8: the logits
    x = activate(x);
    if (spec.lrn_after && options.lrn()) {
      x = normalise(x, g);
      record("lrn" + layer_number(spec), x, nullptr);
    }
    if (spec.pool_after) {
      x = pool(x);
      record("pool" + layer_number(spec), x, nullptr);
    }
    if (spec.dropout_after) x = torch::dropout(x, options.dropout(), is_training());
    if (flattens_after(table, i)) {
      x = torch::adaptive_avg_pool2d(x, {kPooledSide, kPooledSide}).flatten(1);
    }
    if (stop_at_fc7 && i + 2 == table.size()) break;
  }
  return x;
}

torch::Tensor AlexNetImpl::run_two_device(torch::Tensor x, bool stop_at_fc7, Recorder* recorder) {
  const auto& devices = options.devices();
  AlexNetColumn columns[2] = {column0, column1};
  torch::Tensor h[2];
  auto record = [&](const std::string& name, size_t layer) {
    if (recorder == nullptr) return;
    for (int c = 0; c < 2; ++c) {
      const int64_t params =
          layer < table.size() ? count_params(*columns[c]->layers[layer].ptr()) : 0;
      recorder->push_back({"column" + std::to_string(c) + "." + name, without_batch(h[c]), params,
                           devices[c].str()});
    }
  };
  auto each = [&](auto&& fn) {
    for (int c = 0; c < 2; ++c) h[c] = fn(c, h[c]);
  };
  // The paper's cross-column connections: each column gets both columns' maps, its own
  // first, so that channel order equals the single-device form's.
  auto cross = [&] {
    torch::Tensor joined[2];
    for (int c = 0; c < 2; ++c)
      joined[c] = torch::cat({h[0].to(devices[c]), h[1].to(devices[c])}, 1);
    h[0] = joined[0];
    h[1] = joined[1];
  };
  for (size_t i = 0; i < table.size(); ++i) {
    const LayerSpec& spec = table[i];
    if (i == 0) {
      each([&](int c, const torch::Tensor&) {
        return apply_layer(spec, columns[c]->layers[0], x.to(devices[c]));
      });
    } else {
      if (spec.crosses) cross();
      each([&](int c, torch::Tensor t) { return apply_layer(spec, columns[c]->layers[i], t); });
    }
    record(spec.name, i);
    if (i + 1 == table.size()) break;  // fc8: the logits
    each([&](int, torch::Tensor t) { return activate(t); });
    if (spec.lrn_after && options.lrn()) {
      each([&](int, torch::Tensor t) { return normalise(t, 1); });
      record("lrn" + layer_number(spec), table.size());
    }
    if (spec.pool_after) {
      each([&](int, torch::Tensor t) { return pool(t); });
      record("pool" + layer_number(spec), table.size());
    }
    if (spec.dropout_after) {
      each([&](int, torch::Tensor t) {
        return torch::dropout(t, options.dropout(), is_training());
      });
    }
    if (flattens_after(table, i)) {
      each([&](int, torch::Tensor t) {
        return torch::adaptive_avg_pool2d(t, {kPooledSide, kPooledSide}).flatten(1);
      });
    }
    if (stop_at_fc7 && i + 2 == table.size()) break;
  }
  return torch::cat({h[0], h[1].to(devices[0])}, 1);
}

}  // namespace alexnet
