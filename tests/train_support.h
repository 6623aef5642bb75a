// A small training configuration shared by the trainer and data-parallel tests.
#pragma once

#include <random>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "data/dataset.h"
#include "model/alexnet.h"
#include "train/config.h"

namespace alexnet::testing {

/// A quarter of the paper's width on 64 x 64 crops, batch 8, constant learning rate 0.01,
/// mean/std normalisation without image statistics, flips but no PCA lighting, seed 3, one
/// CPU. The trainer's logic is the same as at full width, and checkpoints are 14 MB instead
/// of 230 MB. Tests change what they are about.
inline train::TrainConfig small_train_config() {
  train::TrainConfig c;
  c.model.init(Init::kKaiming).width(0.25);
  c.data.resize = 0;
  c.data.crop = 64;
  c.data.flip = true;
  c.data.pca_lighting = false;
  c.data.normalize = alexnet::train::Normalize::kMeanStd;
  c.data.stats_images = 0;
  c.optimizer.lr = 0.01;
  c.schedule.kind = alexnet::train::ScheduleKind::kConstant;
  c.batch_size = 8;
  c.eval_batch_size = 8;
  c.devices = "cpu";
  c.seed = 3;
  return c;
}

/// Noisy 3 x 64 x 64 uint8 images whose class is a bright 32 x 32 square in one of four
/// corners (class c: row c / 2, column c % 2; classes beyond four repeat the corners). The
/// noise comes from LibTorch's global generator, the squares' brightness from `seed`.
class CornerSquaresDataset : public data::Dataset {
 public:
  CornerSquaresDataset(size_t n, int64_t classes, uint64_t seed) {
    std::mt19937_64 rng(seed);
    for (size_t i = 0; i < n; ++i) {
      const int64_t label = static_cast<int64_t>(i) % classes;
      auto image = torch::randint(0, 80, {3, 64, 64}, torch::TensorOptions().dtype(torch::kUInt8));
      const int64_t y = (label / 2 % 2) * 32, x = (label % 2) * 32;
      image.narrow(1, y, 32).narrow(2, x, 32).fill_(static_cast<int64_t>(180 + rng() % 60));
      images_.push_back(image);
      labels_.push_back(label);
    }
    for (int64_t c = 0; c < classes; ++c) names_.push_back("class" + std::to_string(c));
  }
  size_t size() const override { return images_.size(); }
  data::Sample get(size_t i) const override { return {images_.at(i), labels_.at(i)}; }
  int64_t label(size_t i) const override { return labels_.at(i); }
  const std::vector<std::string>& class_names() const override { return names_; }
  std::string sample_source(size_t i) const override { return "corner#" + std::to_string(i); }

 private:
  std::vector<torch::Tensor> images_;
  std::vector<int64_t> labels_;
  std::vector<std::string> names_;
};

}  // namespace alexnet::testing
