#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "distributed/environment.h"
#include "distributed/gradient_reducer.h"
#include "model/alexnet.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/run_data.h"
#include "train/run_folder.h"

namespace alexnet::train {

/// How one call of train() runs.
struct RunOptions {
  /// Output folder: config.json, metrics.jsonl, checkpoints/, curves.png, model.pt.
  std::string run_dir;
  /// Continue from RUN_DIR/checkpoints/last.pt instead of starting afresh. The settings that
  /// shape the computation must equal the checkpoint's (see check_resume_config).
  bool resume = false;
  /// Start afresh in a folder that holds an earlier run, removing its files. Without it (and
  /// without resume) such a folder is refused.
  bool overwrite = false;
  /// Progress output (a live line when it is a terminal).
  std::ostream* log = &std::cerr;
  /// Polled after every step; when it becomes true the run writes a checkpoint and returns.
  const std::atomic<bool>* stop = nullptr;
  /// At the end, export RUN_DIR/model.pt from the best checkpoint and draw curves.png.
  bool finalize = true;
  /// The data-parallel job this process is a rank of (world_size 1: none). With several
  /// ranks, config.batch_size is the global batch, split evenly over them; the gradients are
  /// averaged, so the run computes what one process would on the same global batches. Rank 0
  /// alone writes files and logs; all ranks must see the same run folder (to resume).
  distributed::DistributedConfig distributed;
  distributed::GradientReducerOptions reducer;
  /// The floating type of the weights, optimiser state and computation. Float64 makes runs
  /// that sum in different orders (several ranks against one) comparable to about 1e-12, so
  /// tests can tell a real difference from rounding; training itself uses float32.
  torch::ScalarType dtype = torch::kFloat32;
};

/// Thrown by train() when the loss becomes NaN or infinite (the run diverged).
class DivergedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// What a call of train() did.
struct TrainSummary {
  /// The global step number of losses[0] (0 for a fresh run).
  int64_t first_step = 0;
  /// The training loss of every step this call ran.
  std::vector<double> losses;
  /// Steps done in total (including those before a resume).
  int64_t steps = 0;
  int64_t epochs_completed = 0;
  /// Stopped by RunOptions::stop.
  bool interrupted = false;
  double best_val_top1_error = 1.0;
  double last_val_top1_error = 1.0;
  /// Training images per second over this call's steps (data loading included).
  double images_per_s = 0.0;
  double seconds = 0.0;
  /// Data-parallel runs: seconds spent waiting for the gradient all-reduce (not overlapped).
  double allreduce_wait_s = 0.0;
  std::string last_checkpoint, best_checkpoint, model_path;
};

/// Trains AlexNet as `config` says, writing RUN_DIR/config.json (the effective
/// configuration: "auto" values, mean/std resolved), metrics.jsonl, checkpoints/last.pt
/// (each epoch, every checkpoint_interval steps and when stopping), checkpoints/best.pt
/// (lowest validation top-1 error) and, with finalize, model.pt and curves.png.
/// Deterministic on the CPU: a run resumed from any checkpoint computes the same losses as
/// an uninterrupted one. Throws DivergedError when the loss becomes NaN or infinite (without
/// writing a checkpoint, so the last one stays good).
TrainSummary train(TrainConfig config, const RunData& data, const RunOptions& options);

}  // namespace alexnet::train
