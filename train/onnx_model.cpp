#include "train/onnx_model.h"

#include <filesystem>
#include <sstream>
#include <stdexcept>

#include <opencv2/core.hpp>
#include <opencv2/dnn.hpp>

#include "train/exported_model.h"

namespace alexnet::train {

struct OnnxModel::Network {
  cv::dnn::Net net;
};

OnnxModel::OnnxModel(const std::string& path) : path_(path) {
  if (!std::filesystem::exists(path)) {
    throw std::runtime_error("ONNX model '" + path + "' does not exist");
  }
  metadata_ = read_onnx_metadata(path);
  network_ = std::make_shared<Network>();
  try {
    network_->net = cv::dnn::readNetFromONNX(path);
  } catch (const cv::Exception& e) {
    throw std::runtime_error("OpenCV cannot read ONNX model '" + path + "': " + e.what());
  }
  if (network_->net.empty()) {
    throw std::runtime_error("OpenCV read no network from ONNX model '" + path + "'");
  }
  network_->net.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
  network_->net.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
}

torch::Tensor OnnxModel::forward(const torch::Tensor& x) {
  const int64_t side = metadata_.info.image_size;
  if (x.dim() != 4 || x.size(1) != metadata_.in_channels || x.size(2) != side ||
      x.size(3) != side) {
    std::ostringstream shape;
    shape << x.sizes();
    throw std::runtime_error("ONNX model '" + path_ + "' expects input [N, " +
                             std::to_string(metadata_.in_channels) + ", " + std::to_string(side) +
                             ", " + std::to_string(side) + "], got " + shape.str());
  }
  auto input = x.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  const int sizes[] = {static_cast<int>(input.size(0)), static_cast<int>(input.size(1)),
                       static_cast<int>(input.size(2)), static_cast<int>(input.size(3))};
  // A view of the tensor's memory; setInput copies it.
  const cv::Mat blob(4, sizes, CV_32F, input.data_ptr<float>());
  cv::Mat output;
  try {
    network_->net.setInput(blob);
    output = network_->net.forward();
  } catch (const cv::Exception& e) {
    throw std::runtime_error("OpenCV cannot run ONNX model '" + path_ + "': " + e.what());
  }
  if (output.type() != CV_32F ||
      output.total() != static_cast<size_t>(input.size(0) * metadata_.num_classes)) {
    throw std::runtime_error("ONNX model '" + path_ + "' gave " + std::to_string(output.total()) +
                             " outputs for " + std::to_string(input.size(0)) + " images of " +
                             std::to_string(metadata_.num_classes) + " classes");
  }
  cv::Mat dense = output.isContinuous() ? output : output.clone();
  return torch::from_blob(dense.ptr<float>(), {input.size(0), metadata_.num_classes},
                          torch::kFloat32)
      .clone();
}

transforms::PipelineOptions OnnxModel::pipeline_options() const {
  return export_pipeline_options(metadata_.info, metadata_.in_channels);
}

void set_onnx_threads(int64_t threads) {
  if (threads < 0) {
    throw std::invalid_argument("threads must be >= 0, got " + std::to_string(threads));
  }
  cv::setNumThreads(threads == 0 ? -1 : static_cast<int>(threads));
}

}  // namespace alexnet::train
