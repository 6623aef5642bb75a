// The training run behind train() (train/trainer.h); internal to the train library.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "data/loader.h"
#include "distributed/communicator.h"
#include "train/metrics.h"
#include "train/optimizer.h"
#include "train/precision.h"
#include "train/schedule.h"
#include "train/trainer.h"

namespace alexnet::train {

/// One call of train(): the run's set-up (run_setup.cpp), then train_one_epoch() and
/// end_epoch() until more_to_do() is false, then finish() (trainer.cpp).
class Run {
 public:
  using Clock = std::chrono::steady_clock;

  /// Sets up threads, devices and ranks, the run folder, the data, the model and optimiser,
  /// and resumes from the folder's last checkpoint when options.resume says so.
  Run(TrainConfig config, const RunData& data, const RunOptions& options);
  /// Steps left, or an epoch end still to handle (a run stopped while validating resumes at
  /// its epoch's last batch).
  bool more_to_do() const {
    return epoch_ < config_.epochs && !stop_requested_ &&
           (step_ < total_steps_ || batch_in_epoch_ >= batches_per_epoch_);
  }
  /// Trains until the epoch ends (true) or the run stops inside it (false: max_steps or a stop
  /// request; the checkpoint then keeps the loader position).
  bool train_one_epoch();
  /// Validates, updates the schedule, logs and checkpoints; honours a stop request.
  void end_epoch();
  TrainSummary finish();

 private:
  // Set-up (run_setup.cpp).
  // Threads, devices, precision and, data-parallel, the communicator; rank 0 alone logs.
  void set_up_devices_and_ranks(const distributed::DistributedConfig& dist);
  // Fills in what the configuration left to the data (classes, statistics).
  void resolve_config(const RunData& data);
  void open_model_and_loaders(const RunData& data);
  void resume_from(const Checkpoint& checkpoint);
  // Logs model.freeze and optimizer.lr_mult; copies init_from's weights into a fresh run.
  void start_fine_tuning(bool resumed);
  void join_ranks();
  void announce(const RunData& data);

  // The loop (trainer.cpp).
  // One optimisation step on `batch`; returns whether the ranks agreed to stop.
  bool train_step(const data::Batch& batch);
  // The model's logits for `images` in config_.precision, returned as float32 (or as the
  // weights' type when that is float64).
  torch::Tensor forward(const torch::Tensor& images);
  // Backward of `loss` and the gradients' reduction over ranks; returns false when float16
  // gradients overflowed and the step must be skipped.
  bool backward(const torch::Tensor& loss);
  void log_step(double loss);
  EvalResult validate();
  void write_checkpoint(int64_t at_epoch, int64_t at_batch);
  void export_best();

  TrainConfig config_;
  const RunOptions& options_;
  const Clock::time_point start_ = Clock::now();
  std::unique_ptr<RunFolder> folder_;  // held by the writer
  std::vector<torch::Device> devices_;
  std::unique_ptr<distributed::Communicator> comm_;
  bool writer_ = true;  // rank 0 alone writes files and logs
  int64_t world_ = 1;
  std::ostream discard_{nullptr};
  std::ostream* log_ = nullptr;
  std::filesystem::path run_dir_;
  std::string last_path_, best_path_;

  alexnet::AlexNet model_{nullptr};
  std::unique_ptr<Sgd> optimizer_;
  std::unique_ptr<LrSchedule> schedule_;
  std::unique_ptr<data::Loader> train_loader_, val_loader_;
  std::unique_ptr<distributed::GradientReducer> reducer_;
  std::unique_ptr<LossScaler> scaler_;  // fp16 only
  std::unique_ptr<MetricsLog> metrics_;
  std::unique_ptr<ProgressLine> progress_;
  int64_t batches_per_epoch_ = 0, total_steps_ = 0;

  Checkpoint state_;  // what every checkpoint records besides the changing parts
  int64_t epoch_ = 0, batch_in_epoch_ = 0, step_ = 0;
  double elapsed_before_ = 0.0, best_val_ = 2.0;
  ErrorCounts epoch_counts_, interval_counts_;
  bool stop_requested_ = false;
  TrainSummary summary_;

  Clock::time_point run_start_, epoch_start_, interval_start_;
  int64_t images_this_run_ = 0, epoch_images_ = 0, interval_images_ = 0;
};

}  // namespace alexnet::train
