#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "model/layers.h"
#include "model/lrn.h"

namespace alexnet {

enum class Activation { kReLU, kTanh };
enum class Init {
  /// The paper: weights N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7, else 0.
  kPaper,
  /// Kaiming-normal weights (fan_in), zero biases: trains from scratch on small data.
  kKaiming,
};

/// Parses "relu"/"tanh" and "paper"/"kaiming"; throws std::invalid_argument naming the
/// allowed values.
Activation parse_activation(const std::string& name);
Init parse_init(const std::string& name);
std::string to_string(Activation activation);
std::string to_string(Init init);

/// Options for `AlexNet`. The layers are the paper's (kPaperLayers in model/layers.h) with
/// the variations below; `layer_table` turns them into the model's list of layers.
struct AlexNetOptions {
  TORCH_ARG(int64_t, num_classes) = 1000;
  TORCH_ARG(int64_t, in_channels) = 3;
  /// Dropout probability on the outputs of fc6 and fc7 (as the original code).
  TORCH_ARG(double, dropout) = 0.5;
  /// Local response normalisation after conv1 and conv2.
  TORCH_ARG(bool, lrn) = true;
  TORCH_ARG(LocalResponseNormOptions, lrn_options) = LocalResponseNormOptions(5);
  /// Max-pooling kernel and stride: 3/2 (overlapping, the paper) or 2/2 (its ablation).
  TORCH_ARG(int64_t, pool_kernel) = 3;
  TORCH_ARG(int64_t, pool_stride) = 2;
  TORCH_ARG(Activation, activation) = Activation::kReLU;
  TORCH_ARG(Init, init) = Init::kPaper;
  /// 2: the paper's two columns; 1: a single column of half width (the paper's ablation).
  TORCH_ARG(int64_t, columns) = 2;
  /// One device: both columns on it (grouped convolutions). Two devices (may be equal, e.g.
  /// cpu,cpu): column i lives on devices[i], activations cross only where the paper does.
  TORCH_ARG(std::vector<torch::Device>, devices) = std::vector<torch::Device>{torch::kCPU};
  /// Multiplies the width of every layer but fc8 (the paper's "breadth", section 1): each
  /// column's share of a layer is round(width * the paper's), at least 1. In
  /// [kMinWidth, kMaxWidth].
  TORCH_ARG(double, width) = 1.0;
  /// "" or one of conv3, conv4, conv5: that layer is left out (the paper's section 7), the
  /// next layer takes its input, and a max-pooling after it moves to the layer before.
  TORCH_ARG(std::string, remove_conv) = "";
  /// "" or one of conv3, conv4, conv5: a copy of that layer (width, kernel, stride, padding,
  /// connectivity, bias init) is added after it, named e.g. conv4_extra; a max-pooling after
  /// the copied layer moves to the copy.
  TORCH_ARG(std::string, extra_conv) = "";
};

/// The convolutions that `remove_conv` and `extra_conv` may name: conv3, conv4, conv5.
const std::vector<std::string>& variable_convs();

/// The name of the layer that `extra_conv = layer` adds: layer + "_extra".
std::string extra_conv_name(const std::string& layer);

/// The model's layers in forward order: kPaperLayers with options.width(), remove_conv() and
/// extra_conv() applied (widths per column, fc8's still 0). Throws c10::Error naming a bad
/// option.
std::vector<LayerSpec> layer_table(const AlexNetOptions& options);

/// The range of AlexNetOptions::width: 1/64 (one unit in conv1's column) to 16 times the paper's.
inline constexpr double kMinWidth = 1.0 / 64, kMaxWidth = 16.0;

/// The first option outside its range (devices aside), or nothing: num_classes and
/// in_channels >= 1, dropout in [0, 1), the LRN's options (named lrn_size, lrn_alpha, lrn_beta,
/// lrn_k; see LocalResponseNormOptions), pool_kernel 2 or 3 with pool_stride 2, columns 1 or
/// 2, width in [kMinWidth, kMaxWidth], remove_conv and extra_conv "" or one of
/// variable_convs(), and not the same layer. The one statement of these ranges: validate()
/// and the configuration reader (train::model_options_from_json) both refuse with it.
std::optional<OptionProblem> find_option_problem(const AlexNetOptions& options);

/// Throws c10::Error naming the bad option (see find_option_problem) or a device list that
/// does not fit: one or two devices, two only with two columns and num_classes >= 2.
void validate(const AlexNetOptions& options);

/// Parses "cpu", "cuda:0", "cuda:0,cuda:1", "cpu,cpu"; throws naming the bad item.
std::vector<torch::Device> parse_devices(const std::string& text);

/// One row of `AlexNetImpl::layer_summary`.
struct LayerInfo {
  std::string name;
  std::vector<int64_t> output_shape;  ///< without the batch dimension
  int64_t params = 0;                 ///< parameters owned by this layer
  std::string device;
};

/// One column's layers in the two-device form, registered as conv1 .. fc8 (the names of
/// `layer_table`): every layer holds
/// the rows of the single-device layer of the same name that belong to this column (see
/// `AlexNetImpl::column_slice`).
class AlexNetColumnImpl : public torch::nn::Module {
 public:
  AlexNetColumnImpl(const AlexNetOptions& options, int64_t column);

  /// The layers of layer_table(options), in its order (Conv2d or Linear).
  std::vector<torch::nn::AnyModule> layers;
};
TORCH_MODULE(AlexNetColumn);

/// AlexNet as in the paper: five convolutional and three fully connected layers, ReLU,
/// LRN after conv1 and conv2, overlapping max-pooling, dropout in fc6 and fc7, two columns.
/// Options may scale its width, remove conv3, conv4 or conv5, or add a copy of one of them.
///
/// Registered names (checkpoint keys and TorchScript attribute names; a public contract):
/// single-device form: conv1 .. conv5, fc6 .. fc8 (each with .weight and .bias), less a
/// removed layer, plus an added one (e.g. conv4_extra, after conv4);
/// two-device form: column0.conv1 .. column0.fc8 and column1.*.
///
/// Mapping between the forms: each parameter of columnI.L is the slice of the single-device
/// parameter L along dim 0 (output units) that belongs to column I: rows [0, out/2) for
/// column 0 and [out/2, out) for column 1, and for fc8 rows [0, ceil(classes/2)) and the
/// rest. `single_device_state()` and `load_single_device_state()` convert.
class AlexNetImpl : public torch::nn::Module {
 public:
  explicit AlexNetImpl(AlexNetOptions options = {});

  /// x: [N, in_channels, H, W] float (H, W >= 63; 224 gives the paper's shapes) on the first
  /// device. Returns logits [N, num_classes], float, on the first device.
  torch::Tensor forward(torch::Tensor x);

  /// The output of fc7 after ReLU, [N, 4096] (the paper's Figure 4 feature; columns x the
  /// per-column width of fc7 in general).
  torch::Tensor features(torch::Tensor x);

  /// Re-initialises every parameter as `options.init()` says. The single-device and the
  /// two-device form draw the same numbers for the same seed.
  void reset_parameters();

  /// Each layer's output shape, parameters and device for one [in_channels, size, size]
  /// input (runs a forward pass in eval mode without gradients).
  std::vector<LayerInfo> layer_summary(int64_t image_size = 224);

  /// The parameters under their single-device names (conv1.weight, ...), whatever the form.
  torch::OrderedDict<std::string, torch::Tensor> single_device_state() const;
  /// Copies parameters given under single-device names into this model (either form).
  /// Throws naming a missing key or a shape mismatch.
  void load_single_device_state(const torch::OrderedDict<std::string, torch::Tensor>& state);

  /// Re-keys tensors given one per parameter of this model (under named_parameters() names,
  /// e.g. momentum buffers) to the single-device names: the two-device form's column halves
  /// are concatenated on the CPU. Throws naming a missing key.
  torch::OrderedDict<std::string, torch::Tensor> to_single_device(
      const torch::OrderedDict<std::string, torch::Tensor>& per_parameter) const;
  /// The inverse of to_single_device: tensors under single-device names, each sliced into
  /// the rows every parameter of this model holds (views, not copies). Throws naming a
  /// missing key or a shape mismatch.
  torch::OrderedDict<std::string, torch::Tensor> from_single_device(
      const torch::OrderedDict<std::string, torch::Tensor>& single) const;

  /// The rows [begin, end) of single-device layer `layer` that column `column` holds.
  std::pair<int64_t, int64_t> column_slice(const std::string& layer, int64_t column) const;

  bool two_device() const { return options.devices().size() == 2; }
  /// Names of the parameterised layers in forward order: conv1 .. fc8 for the paper's model.
  std::vector<std::string> layer_names() const;
  /// Output units of one layer in the single-device form.
  int64_t layer_width(const std::string& layer) const;

  AlexNetOptions options;
  /// layer_table(options): what each layer is.
  std::vector<LayerSpec> table;

  // Single-device form: the layers of `table` in its order, registered under their names
  // (empty in the two-device form).
  std::vector<torch::nn::AnyModule> layers;
  // Two-device form (null in the single-device form).
  AlexNetColumn column0{nullptr}, column1{nullptr};

 private:
  using Recorder = std::vector<LayerInfo>;
  torch::Tensor run(torch::Tensor x, bool stop_at_fc7, Recorder* recorder);
  torch::Tensor run_single(torch::Tensor x, bool stop_at_fc7, Recorder* recorder);
  torch::Tensor run_two_device(torch::Tensor x, bool stop_at_fc7, Recorder* recorder);
  torch::Tensor activate(torch::Tensor x) const;
  torch::Tensor normalise(torch::Tensor x, int64_t groups) const;
  torch::Tensor normalise_columns(torch::Tensor x, int64_t groups) const;
  torch::Tensor pool(torch::Tensor x) const;
  torch::nn::Module& layer(const std::string& name, int64_t column) const;
  // The name of parameter `key` (e.g. "conv1.weight") of column `column` in this form.
  std::string parameter_name(const std::string& key, int64_t column) const;
  // The single-device parameters as (layer, "weight" or "bias"), in forward order.
  std::vector<std::pair<std::string, std::string>> single_device_parameters() const;
  // Modules each parameter is spread over: 2 in the two-device form, else 1.
  int64_t held_columns() const { return two_device() ? 2 : 1; }
};

TORCH_MODULE(AlexNet);

}  // namespace alexnet
