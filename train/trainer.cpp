#include "train/trainer.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <sstream>

#include "runtime/atomic_file.h"
#include "train/checkpoint_history.h"
#include "train/export.h"
#include "train/optimizer_state.h"
#include "train/rank_sums.h"
#include "train/run.h"
#if ALEXNET_WITH_OPENCV
#include "train/plot.h"
#endif

namespace alexnet::train {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = Run::Clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string fixed(double value, int digits) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(digits) << value;
  return out.str();
}

std::string lr_text(double lr) {
  std::ostringstream out;
  out << std::setprecision(3) << lr;
  return out.str();
}

// Thrown out of evaluate() when a stop is requested during validation.
struct ValidationStopped {};

}  // namespace

TrainSummary train(TrainConfig config, const RunData& data, const RunOptions& options) {
  Run run(std::move(config), data, options);
  while (run.more_to_do()) {
    if (!run.train_one_epoch()) break;
    run.end_epoch();
  }
  return run.finish();
}

bool Run::train_one_epoch() {
  model_->train();
  train_loader_->start_epoch(epoch_, batch_in_epoch_);
  epoch_start_ = Clock::now();
  epoch_images_ = 0;
  bool epoch_done = false;
  while (step_ < total_steps_) {
    auto batch = train_loader_->next();
    if (!batch) {
      epoch_done = true;
      break;
    }
    if (train_step(*batch)) {
      stop_requested_ = true;
      break;
    }
    if (config_.checkpoint_interval > 0 && step_ % config_.checkpoint_interval == 0) {
      write_checkpoint(epoch_, batch_in_epoch_);
    }
  }
  // max_steps reached exactly at the end of the epoch: still an epoch end.
  epoch_done = epoch_done || (!stop_requested_ && batch_in_epoch_ >= batches_per_epoch_);
  if (!epoch_done) {
    write_checkpoint(epoch_, batch_in_epoch_);
    progress_->print("stopped at epoch " + std::to_string(epoch_ + 1) + ", step " +
                     std::to_string(step_) + "; checkpoint " + last_path_);
    summary_.interrupted = stop_requested_;
  }
  return epoch_done;
}

bool Run::train_step(const data::Batch& batch) {
  const double position = static_cast<double>(epoch_) + static_cast<double>(batch_in_epoch_) /
                                                            static_cast<double>(batches_per_epoch_);
  optimizer_->set_lr(schedule_->lr(position));
  auto images = batch.images.to(devices_.front(), options_.dtype);
  auto labels = batch.labels.to(devices_.front());
  auto logits = forward(images);
  auto loss = torch::cross_entropy_loss(logits, labels);
  const double local_loss = loss.item<double>();
  double loss_value = local_loss;
  bool stop_now = options_.stop && options_.stop->load();
  if (comm_) {
    // The global batch's loss, and a stop every rank agrees on (a signal may reach the ranks
    // at different steps).
    const auto sums = comm_->sum({local_loss, stop_now ? 1.0 : 0.0});
    loss_value = sums[0] / static_cast<double>(world_);
    stop_now = sums[1] > 0;
  }
  if (!std::isfinite(loss_value)) {
    throw DivergedError(
        "the training loss is " + std::string(std::isnan(loss_value) ? "NaN" : "infinite") +
        " at epoch " + std::to_string(epoch_ + 1) + ", step " + std::to_string(step_ + 1) +
        " (lr " + lr_text(optimizer_->lr()) + "); stopped without updating the model. The " +
        "last good checkpoint is " + (fs::exists(last_path_) ? last_path_ : "(none yet)") +
        "; lower optimizer.lr or check the data");
  }
  optimizer_->zero_grad();
  if (backward(loss)) optimizer_->step();
  ++step_;
  ++batch_in_epoch_;
  const int64_t n = labels.size(0) * world_;
  epoch_counts_.add(logits, labels, local_loss);
  interval_counts_.add(logits, labels, local_loss);
  summary_.losses.push_back(loss_value);
  images_this_run_ += n;
  epoch_images_ += n;
  interval_images_ += n;
  log_step(loss_value);
  return stop_now;
}

torch::Tensor Run::forward(const torch::Tensor& images) {
  if (config_.precision == Precision::kFloat32) return model_->forward(images);
  PrecisionGuard precision(devices_.front(), config_.precision);
  return model_->forward(images).to(torch::kFloat);
}

bool Run::backward(const torch::Tensor& loss) {
  if (!scaler_) {
    loss.backward();
    if (reducer_) reducer_->synchronize();
    return true;
  }
  (loss * scaler_->scale()).backward();
  if (reducer_) reducer_->synchronize();
  // The reduced gradients are the same on every rank, so every rank skips the same steps.
  const bool finite = scaler_->unscale(model_->parameters());
  if (!finite) {
    *log_ << "step " << step_ + 1 << ": float16 gradients overflowed at loss scale "
          << scaler_->scale() << "; step skipped, scale halved" << std::endl;
  }
  scaler_->update(finite);
  return finite;
}

void Run::log_step(double loss) {
  const double run_seconds = seconds_since(run_start_);
  const double rate = static_cast<double>(images_this_run_) / std::max(run_seconds, 1e-9);
  const double eta = run_seconds / static_cast<double>(step_ - summary_.first_step) *
                     static_cast<double>(total_steps_ - step_);
  const bool log_now = step_ % config_.log_interval == 0;
  if (progress_->live() || log_now) {
    progress_->update("epoch " + std::to_string(epoch_ + 1) + "/" + std::to_string(config_.epochs) +
                      " batch " + std::to_string(batch_in_epoch_) + "/" +
                      std::to_string(batches_per_epoch_) + " step " + std::to_string(step_) +
                      " loss " + fixed(loss, 4) + " lr " + lr_text(optimizer_->lr()) + " " +
                      fixed(rate, 1) + " img/s ETA " + format_duration(eta));
  }
  if (!log_now) return;
  const double interval_seconds = seconds_since(interval_start_);
  interval_counts_ = sum_over_ranks(comm_.get(), interval_counts_);
  if (metrics_) {
    // The position after this step, as the step's start plus one batch.
    const double batches = static_cast<double>(batches_per_epoch_);
    const double position = static_cast<double>(epoch_) +
                            static_cast<double>(batch_in_epoch_ - 1) / batches + 1.0 / batches;
    metrics_->write(
        {{"kind", "step"},
         {"epoch", position},
         {"step", step_},
         {"loss", interval_counts_.loss()},
         {"lr", optimizer_->lr()},
         {"train_top1_error", interval_counts_.top1_error()},
         {"train_top5_error", interval_counts_.top5_error()},
         {"images_per_s", static_cast<double>(interval_images_) / std::max(interval_seconds, 1e-9)},
         {"elapsed_s", elapsed_before_ + seconds_since(start_)}});
  }
  interval_counts_ = ErrorCounts();
  interval_images_ = 0;
  interval_start_ = Clock::now();
}

EvalResult Run::validate() {
  model_->eval();
  auto result = evaluate(
      [&](const torch::Tensor& x) { return forward(x.to(options_.dtype)); }, *val_loader_,
      devices_.front(),
      [&](int64_t done, int64_t total) {
        // One process stops at once; ranks finish validating, since they must agree.
        if (!comm_ && options_.stop && options_.stop->load()) throw ValidationStopped{};
        if (progress_->live()) {
          progress_->update("validating " + std::to_string(done) + "/" + std::to_string(total));
        }
      });
  model_->train();
  return sum_over_ranks(comm_.get(), result);
}

void Run::end_epoch() {
  const double epoch_seconds = seconds_since(epoch_start_);
  epoch_counts_ = sum_over_ranks(comm_.get(), epoch_counts_);
  json record{{"kind", "epoch"},
              {"epoch", epoch_ + 1},
              {"step", step_},
              {"loss", epoch_counts_.loss()},
              {"lr", optimizer_->lr()},
              {"train_top1_error", epoch_counts_.top1_error()},
              {"train_top5_error", epoch_counts_.top5_error()}};
  // A run resumed at the epoch's very end trained none of its images: no rate to give.
  const double rate = static_cast<double>(epoch_images_) / std::max(epoch_seconds, 1e-9);
  if (epoch_images_ > 0) record["images_per_s"] = rate;
  bool improved = true;
  if (val_loader_) {
    EvalResult result;
    try {
      result = validate();
    } catch (const ValidationStopped&) {
      // The checkpoint's position is the epoch's end, so the resumed run validates again.
      model_->train();
      write_checkpoint(epoch_, batch_in_epoch_);
      progress_->print("stopped while validating epoch " + std::to_string(epoch_ + 1) +
                       "; checkpoint " + last_path_);
      stop_requested_ = summary_.interrupted = true;
      return;
    }
    record["val_loss"] = result.loss;
    record["val_top1_error"] = result.top1_error;
    record["val_top5_error"] = result.top5_error;
    summary_.last_val_top1_error = result.top1_error;
    improved = result.top1_error < best_val_;
    best_val_ = std::min(best_val_, result.top1_error);
    if (schedule_->observe(result.top1_error)) {
      record["lr_dropped_to"] = schedule_->lr(static_cast<double>(epoch_ + 1));
    }
  }
  record["elapsed_s"] = elapsed_before_ + seconds_since(start_);
  if (metrics_) metrics_->write(record);
  std::ostringstream line;
  line << "epoch " << epoch_ + 1 << " done: loss " << fixed(epoch_counts_.loss(), 4)
       << ", train top-1 error " << fixed(100 * epoch_counts_.top1_error(), 2) << "%";
  if (record.contains("val_top1_error")) {
    line << ", val top-1/top-5 error " << fixed(100 * record["val_top1_error"].get<double>(), 2)
         << "% / " << fixed(100 * record["val_top5_error"].get<double>(), 2) << "%";
  }
  line << ", " << (epoch_images_ > 0 ? fixed(rate, 1) + " img/s, " : "")
       << format_duration(epoch_seconds);
  progress_->print(line.str());

  batch_in_epoch_ = 0;
  epoch_counts_ = ErrorCounts();
  write_checkpoint(epoch_ + 1, 0);
  if (improved && writer_) runtime::copy_file_atomically(last_path_, best_path_);
  if (writer_) {
    keep_epoch_checkpoint(run_dir_ / "checkpoints", last_path_, epoch_ + 1,
                          config_.checkpoint.keep_last);
  }
  ++summary_.epochs_completed;
  ++epoch_;
  if (any_rank(comm_.get(), options_.stop && options_.stop->load())) {
    stop_requested_ = true;
    summary_.interrupted = true;
    progress_->print("stopping; checkpoint " + last_path_);
  }
}

// at_epoch/at_batch: the loader position a resumed run starts from.
void Run::write_checkpoint(int64_t at_epoch, int64_t at_batch) {
  const ErrorCounts counts = sum_over_ranks(comm_.get(), epoch_counts_);  // every rank calls this
  if (!writer_) return;
  state_.model = model_->single_device_state();
  for (const auto& item : state_.model) {
    if (!torch::isfinite(item.value()).all().item<bool>()) {
      throw DivergedError("parameter " + item.key() + " holds NaN or infinite values at step " +
                          std::to_string(step_) +
                          "; no checkpoint written, the last good checkpoint is " +
                          (fs::exists(last_path_) ? last_path_ : "(none yet)") +
                          "; lower optimizer.lr or check the data");
    }
  }
  state_.optimizer = single_device_optimizer_state(model_, *optimizer_);
  state_.schedule = schedule_->state();
  state_.epoch = at_epoch;
  state_.batch_in_epoch = at_batch;
  state_.step = step_;
  capture_rng_states(state_, devices_);
  state_.progress = {{"elapsed_s", elapsed_before_ + seconds_since(start_)},
                     {"best_val_top1_error", best_val_},
                     {"epoch_counts", counts.to_json()}};
  save_checkpoint(state_, last_path_);
}

TrainSummary Run::finish() {
  summary_.steps = step_;
  summary_.best_val_top1_error = best_val_;
  summary_.seconds = seconds_since(run_start_);
  summary_.images_per_s = static_cast<double>(images_this_run_) / std::max(summary_.seconds, 1e-9);
  if (reducer_) summary_.allreduce_wait_s = reducer_->wait_seconds();
  const bool finished =
      !summary_.interrupted && (step_ >= total_steps_ || epoch_ >= config_.epochs);
  if (options_.finalize && finished && writer_) export_best();
  return summary_;
}

// RUN_DIR/model.pt from the best checkpoint (the last without validation), and curves.png.
void Run::export_best() {
  const std::string source = fs::exists(best_path_) ? best_path_ : last_path_;
  if (fs::exists(source)) {
    const Checkpoint best = load_checkpoint(source);
    alexnet::AlexNet best_model = model_from_checkpoint(best);
    const ExportInfo info = export_info(best);
    summary_.model_path = (run_dir_ / "model.pt").string();
    save_torchscript(best_model, info, summary_.model_path);
    *log_ << "exported " << source << " to " << summary_.model_path << std::endl;
  }
#if ALEXNET_WITH_OPENCV
  plot_training_curves((run_dir_ / "metrics.jsonl").string(), (run_dir_ / "curves.png").string());
  *log_ << "training curves: " << (run_dir_ / "curves.png").string() << std::endl;
#endif
}

}  // namespace alexnet::train
