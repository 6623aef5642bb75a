#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <torch/script.h>
#include <torch/torch.h>

#include "model/alexnet.h"
#include "train/export.h"
#include "train/precision.h"
#include "transforms/transforms.h"

namespace alexnet::train {

/// A model file written by save_torchscript (train/export.h), read back with its attributes.
struct ExportedModel {
  /// The TorchScript module, in eval mode: forward(x) -> logits, features(x) -> fc7.
  torch::jit::Module module;
  /// The file it was read from (errors name it).
  std::string path;
  /// class_names (empty or num_classes of them), image_size, resize_size, mean and std.
  ExportInfo info;
  /// Channels of the input, 1 or 3.
  int64_t in_channels = 3;
  /// Outputs of forward.
  int64_t num_classes = 0;

  /// The preprocessing the model was trained with, for transforms::eval_pipeline: shorter side
  /// to resize_size, central image_size crop, converted to in_channels channels, minus mean,
  /// divided by std. No augmentation.
  transforms::PipelineOptions pipeline_options() const;
};

/// The preprocessing an exported model was trained with, for transforms::eval_pipeline: shorter
/// side to info.resize_size, central info.image_size crop, converted to `in_channels`
/// channels, minus info.mean, divided by info.std. No augmentation.
transforms::PipelineOptions export_pipeline_options(const ExportInfo& info, int64_t in_channels);

/// Loads the model at `path` onto `device` and checks its attributes (see
/// read_exported_model). Throws std::runtime_error naming the file when it does not exist or
/// is no TorchScript module.
ExportedModel load_exported_model(const std::string& path, torch::Device device = torch::kCPU);

/// Reads the attributes of a loaded module: class_names (List[str]), image_size, resize_size,
/// in_channels, num_classes (int), mean and std (List[float], empty or one value per input
/// channel, std > 0), with 63 <= image_size <= resize_size, in_channels 1 or 3 and
/// num_classes > 0. Throws std::runtime_error naming `path` and the attribute that is missing,
/// of the wrong type or out of range. Puts the module in eval mode.
ExportedModel read_exported_model(torch::jit::Module module, const std::string& path);

/// An eager AlexNet on `device`, in eval mode, holding the exported model's weights, built from
/// its model_options attribute (single-device form): it computes what the module computes.
/// Throws std::runtime_error naming the file when the attribute is missing or unreadable or
/// does not fit the weights.
alexnet::AlexNet eager_model(const ExportedModel& exported, torch::Device device);

/// The exported model's forward in `precision` on `device` (check_precision refuses what the
/// device cannot run), logits [N, num_classes] float32: the TorchScript module's, under
/// autocast for bf16 or fp16; where emulates_bf16, an eager_model copy's under
/// Bfloat16Emulation, which a TorchScript module cannot honour.
ForwardFunction exported_forward(std::shared_ptr<const ExportedModel> exported, Precision precision,
                                 torch::Device device);

}  // namespace alexnet::train
