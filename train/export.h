#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <torch/script.h>
#include <torch/torch.h>

#include "model/alexnet.h"
#include "train/checkpoint.h"

namespace alexnet::train {

/// What a user of an exported model needs besides the weights.
struct ExportInfo {
  /// Class names by label (may be empty; then predictions print label numbers).
  std::vector<std::string> class_names;
  /// The crop the model was trained on (height = width).
  int64_t image_size = 224;
  /// The shorter side is rescaled to this before the central image_size crop.
  int64_t resize_size = 256;
  /// Per-channel mean subtracted from the pixels, 0..255 scale (empty: nothing subtracted).
  std::vector<double> mean;
  /// Empty, or per-channel divisor applied after the mean (0..255 scale).
  std::vector<double> std;
};

/// What a checkpoint says about its model's inputs and classes.
ExportInfo export_info(const Checkpoint& checkpoint);

/// Checks that `info` fits a model with `options` (the ranges of check_export_ranges). Throws
/// c10::Error naming the attribute, e.g. "export: class_names holds 9 names for 10 classes".
void check_export_info(const alexnet::AlexNetOptions& options, const ExportInfo& info);

/// Called with the name of an exported model's attribute and what is wrong with it, e.g.
/// ("mean", "holds 3 values for 1 input channels"); must throw.
using ExportRangeFailure =
    std::function<void(const std::string& attribute, const std::string& problem)>;

/// The ranges of the attributes an exported model's file holds, as its readers
/// (read_exported_model, read_onnx_metadata) find them: image_size >= kMinImageSide (63),
/// resize_size >= image_size, in_channels 1 or 3, num_classes > 0, class_names empty or
/// num_classes of them, mean and std empty or one value per input channel, std > 0. Calls
/// `fail` for the first attribute out of range.
void check_export_ranges(const ExportInfo& info, int64_t in_channels, int64_t num_classes,
                         const ExportRangeFailure& fail);

/// A self-contained single-device TorchScript module (inference mode) that computes
/// `model->forward` in eval mode (no dropout), whatever the model's form (a two-device model
/// is converted through `single_device_state()`). Every tensor is on the CPU, float32, with
/// requires_grad false; move the module with `to(device)` after loading.
///
/// Layout (parameter names are the model's single-device names): submodules conv1 .. conv5,
/// fc6 .. fc8 (the model's `layer_names()`: less a removed layer, plus an added one such as
/// conv4_extra), each holding parameters `weight` and `bias`, and nothing else: the LRN's
/// constants are written into its code (see below).
/// Attributes: class_names (List[str]), image_size, resize_size, in_channels, num_classes
/// (int), mean, std (List[float], 0..255 scale; std may be empty), model_options (str: the
/// JSON of train::model_options_to_json).
/// Methods:
///   forward(x: [N, in_channels, H, W] float32, H, W >= 63) -> logits [N, num_classes];
///   features(x) -> the output of fc7 after its activation, [N, 4096] (2048 with one column;
///   scaled by the model's width).
/// Preprocessing is the caller's: pixels on the 0..255 scale, minus mean, divided by std.
///
/// The local response normalisation is written in TorchScript (plain torch operations, so the
/// file loads with stock PyTorch): k + alpha * (window sum of squares) summed in place from
/// shifted channel slices, then x * s^-beta applied in place (rsqrt and sqrt for beta = 0.75).
/// BENCHMARKS.md compares its speed with the eager model's fused LRN and with other
/// formulations.
torch::jit::Module export_torchscript(alexnet::AlexNet& model, const ExportInfo& info);

/// The bytes of the file save_torchscript writes (export_torchscript, serialised).
std::string torchscript_bytes(alexnet::AlexNet& model, const ExportInfo& info);

/// export_torchscript, written to `path` atomically (temporary file, flush, rename); creates
/// the folder. Throws std::runtime_error naming the file when it cannot be written.
void save_torchscript(alexnet::AlexNet& model, const ExportInfo& info, const std::string& path);

}  // namespace alexnet::train
