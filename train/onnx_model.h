// An ONNX file written by save_onnx (train/onnx_export.h), run by OpenCV's DNN module.
// Compiled only when ALEXNET_WITH_OPENCV_DNN is 1.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <torch/torch.h>

#include "train/onnx_export.h"
#include "transforms/transforms.h"

namespace alexnet::train {

/// An ONNX model loaded into OpenCV's DNN module (CPU, OpenCV's own backend and threads),
/// with the metadata of its file.
class OnnxModel {
 public:
  /// Reads the file's metadata (read_onnx_metadata) and its graph with
  /// cv::dnn::readNetFromONNX. Throws std::runtime_error naming the file when it does not
  /// exist, its metadata is wrong or OpenCV cannot read the graph.
  explicit OnnxModel(const std::string& path);

  /// x: [N, in_channels, image_size, image_size] float32 (any device; contiguous or not),
  /// pixels prepared as pipeline_options() says. Returns logits [N, num_classes] float32 on
  /// the CPU. Throws std::runtime_error naming the file on a wrong shape or an OpenCV error.
  torch::Tensor forward(const torch::Tensor& x);

  /// The preprocessing of the file's metadata, for transforms::eval_pipeline (as
  /// ExportedModel::pipeline_options).
  transforms::PipelineOptions pipeline_options() const;

  const std::string& path() const { return path_; }
  const OnnxMetadata& metadata() const { return metadata_; }

 private:
  struct Network;

  std::string path_;
  OnnxMetadata metadata_;
  std::shared_ptr<Network> network_;
};

/// Sets the threads OpenCV's DNN module runs on (process-wide): `threads`, or OpenCV's default
/// (every hardware thread) when 0. Throws std::invalid_argument when `threads` is negative.
void set_onnx_threads(int64_t threads);

}  // namespace alexnet::train
