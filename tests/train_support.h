// A small training configuration, its run options and data, shared by the trainer, checkpoint,
// fine-tuning and data-parallel tests.
#pragma once

#include <filesystem>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "model/alexnet.h"
#include "tests/data_support.h"
#include "train/config.h"
#include "train/trainer.h"

namespace alexnet::testing {

/// A quarter of the paper's width on 64 x 64 crops, batch 8, constant learning rate 0.01,
/// mean/std normalisation without image statistics, flips but no PCA lighting, seed 3, ten
/// epochs on one CPU with two threads and one loader worker. The trainer's logic is the same
/// as at full width, and checkpoints are 14 MB instead of 230 MB. Tests change what they are
/// about.
inline train::TrainConfig small_train_config() {
  train::TrainConfig c;
  c.model.init(Init::kKaiming).width(0.25);
  c.data.resize = 0;
  c.data.crop = 64;
  c.data.flip = true;
  c.data.pca_lighting = false;
  c.data.normalize = alexnet::train::Normalize::kMeanStd;
  c.data.stats_images = 0;
  c.data.workers = 1;
  c.optimizer.lr = 0.01;
  c.schedule.kind = alexnet::train::ScheduleKind::kConstant;
  c.batch_size = 8;
  c.eval_batch_size = 8;
  c.epochs = 10;
  c.devices = "cpu";
  c.threads = 2;
  c.seed = 3;
  return c;
}

/// Options for a run into `dir` that logs into `log` and skips the end-of-run export and
/// plot; `resume` continues the run the folder holds.
inline train::RunOptions quiet_run(const std::filesystem::path& dir, std::ostream& log,
                                   bool resume = false) {
  train::RunOptions options;
  options.run_dir = dir.string();
  options.log = &log;
  options.finalize = false;
  options.resume = resume;
  return options;
}

/// Noisy 3 x 64 x 64 uint8 images whose class is a bright 32 x 32 square in one of four
/// corners (class c: row c / 2, column c % 2; classes beyond four repeat the corners). The
/// noise comes from LibTorch's global generator, the squares' brightness from `seed`.
class CornerSquaresDataset : public InMemoryDataset {
 public:
  CornerSquaresDataset(size_t n, int64_t classes, uint64_t seed)
      : InMemoryDataset("corner", numbered_classes(classes)) {
    std::mt19937_64 rng(seed);
    for (size_t i = 0; i < n; ++i) {
      const int64_t label = static_cast<int64_t>(i) % classes;
      auto image = torch::randint(0, 80, {3, 64, 64}, torch::TensorOptions().dtype(torch::kUInt8));
      const int64_t y = (label / 2 % 2) * 32, x = (label % 2) * 32;
      image.narrow(1, y, 32).narrow(2, x, 32).fill_(static_cast<int64_t>(180 + rng() % 60));
      add(image, label);
    }
  }

 private:
  static std::vector<std::string> numbered_classes(int64_t classes) {
    std::vector<std::string> names;
    for (int64_t c = 0; c < classes; ++c) names.push_back("class" + std::to_string(c));
    return names;
  }
};

}  // namespace alexnet::testing
