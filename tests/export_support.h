// Models and preprocessing information shared by the export, ONNX and evaluation tests.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "model/alexnet.h"
#include "train/export.h"

namespace alexnet::testing {

/// An AlexNet of `options` with 10 classes, Kaiming-initialised from seed 0, in eval mode.
inline AlexNet ten_class_model(AlexNetOptions options) {
  torch::manual_seed(0);
  AlexNet model(options.num_classes(10).init(Init::kKaiming));
  model->eval();
  return model;
}

/// The export information of ten_class_model: classes "class 0" .. "class 9", crops of
/// `image_size` from images resized to image_size + 8, mean 100 and std 50 per channel.
inline train::ExportInfo ten_class_info(int64_t channels, int64_t image_size = 64) {
  train::ExportInfo info;
  for (int i = 0; i < 10; ++i) info.class_names.push_back("class " + std::to_string(i));
  info.image_size = image_size;
  info.resize_size = image_size + 8;
  info.mean.assign(static_cast<size_t>(channels), 100.0);
  info.std.assign(static_cast<size_t>(channels), 50.0);
  return info;
}

/// Writes to `path` a TorchScript model of `class_names` (a quarter of the paper's width,
/// 64 x 64 crops of images resized to 72) that predicts the last class for every image: fc8's
/// weights are zero and its bias is 10 for the last class, 0 for the others.
inline void save_constant_model(const std::string& path,
                                const std::vector<std::string>& class_names) {
  torch::manual_seed(0);
  const auto classes = static_cast<int64_t>(class_names.size());
  AlexNet model(AlexNetOptions().num_classes(classes).width(0.25).init(Init::kKaiming));
  model->eval();
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->named_parameters()) {
      if (p.key().find("fc8") == std::string::npos) continue;
      p.value().zero_();
      if (p.key().find("bias") != std::string::npos) p.value()[classes - 1] = 10.0;
    }
  }
  train::ExportInfo info = ten_class_info(/*channels=*/3);
  info.class_names = class_names;
  train::save_torchscript(model, info, path);
}

}  // namespace alexnet::testing
