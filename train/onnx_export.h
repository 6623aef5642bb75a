// AlexNet as an ONNX file, written without ONNX's or protobuf's libraries, and the reader of
// the metadata such a file carries.
#pragma once

#include <cstdint>
#include <string>

#include <torch/torch.h>

#include "model/alexnet.h"
#include "train/export.h"

namespace alexnet::train {

/// The ONNX operator set of the exported graph: 11 (ONNX 1.6), which OpenCV 4.6's DNN module,
/// ONNX Runtime and OpenVINO read. The file's IR version is 6, that of ONNX 1.6.
inline constexpr int64_t kOnnxOpset = 11;

/// The model in eval mode (no dropout) as a serialised ONNX ModelProto, float32, whatever the
/// model's form (a two-device model is written through `single_device_state()`).
///
/// Graph: input "input" [N, in_channels, image_size, image_size] float32 (N free: "N"),
/// output "logits" [N, num_classes] float32. The image size is fixed by info.image_size.
/// Nodes, in the order of layer_table(model->options), named after the layer:
///   conv1 .. conv5: Conv with the layer's kernel, stride and padding; group = columns where
///     a layer sees only its own column (the paper's two-column layout), else 1;
///   <layer>_relu or <layer>_tanh after every layer but the last;
///   <layer>_lrn after conv1 and conv2 when the model has LRN: ONNX's LRN, which divides its
///     alpha by its size, so it holds the model's effective alpha times n (either LRN
///     convention); with two columns a Split into <layer>_lrn_column0/1, an LRN on each and a
///     Concat, so that the channel window stays inside its column;
///   <layer>_pool: MaxPool (options.pool_kernel / pool_stride, no padding, floor);
///   <last conv>_flatten: Flatten; the model's adaptive average pooling to 6 x 6 before it is
///     nothing when the maps are 6 x 6 already (224-pixel input), an AveragePool
///     (<last conv>_avgpool) when its windows are uniform, and otherwise folded into fc6's
///     weight, which then has columns for the unpooled maps;
///   fc6 .. fc8: Gemm (transB = 1).
/// Initializers "<layer>.weight" and "<layer>.bias" (the single-device names), raw
/// little-endian float32.
/// Metadata properties (values are JSON text): class_names (list of strings), image_size,
/// resize_size, in_channels, num_classes (integers), mean, std (lists of numbers, 0..255
/// scale; std may be empty), model_options (the object of train::model_options_to_json).
/// Preprocessing is the caller's, as for save_torchscript's module.
///
/// Throws c10::Error when `info` does not fit the model (see check_export_info).
std::string onnx_model_bytes(alexnet::AlexNet& model, const ExportInfo& info);

/// onnx_model_bytes, written to `path` atomically (temporary file, flush, rename); creates
/// the folder. Throws std::runtime_error naming the file when it cannot be written.
void save_onnx(alexnet::AlexNet& model, const ExportInfo& info, const std::string& path);

/// What an ONNX file written by save_onnx says besides its graph.
struct OnnxMetadata {
  /// class_names (empty or num_classes of them), image_size, resize_size, mean and std.
  ExportInfo info;
  /// Channels of the input, 1 or 3.
  int64_t in_channels = 3;
  /// Outputs of the graph.
  int64_t num_classes = 0;
};

/// Reads the metadata properties of the ONNX file at `path`: all those save_onnx writes but
/// model_options, with 63 <= image_size <= resize_size, in_channels 1 or 3, num_classes > 0,
/// mean and std empty or one per input channel, std > 0. Throws std::runtime_error naming the
/// file, and the property where one is missing, malformed or out of range.
OnnxMetadata read_onnx_metadata(const std::string& path);

}  // namespace alexnet::train
