// A small training configuration shared by the trainer and data-parallel tests.
#pragma once

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
  c.data.normalize = "mean_std";
  c.data.stats_images = 0;
  c.optimizer.lr = 0.01;
  c.schedule.kind = "constant";
  c.batch_size = 8;
  c.eval_batch_size = 8;
  c.devices = "cpu";
  c.seed = 3;
  return c;
}

}  // namespace alexnet::testing
