#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <map>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "data/loader.h"
#include "distributed/communicator.h"
#include "runtime/runtime.h"
#include "train/checkpoint_history.h"
#include "train/init_from.h"
#include "train/layer_settings.h"
#include "train/metrics.h"
#include "train/optimizer.h"
#include "train/schedule.h"
#include "transforms/transforms.h"

#include "train/export.h"
#if ALEXNET_WITH_OPENCV
#include "train/plot.h"
#endif

namespace alexnet::train {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

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

std::string devices_text(const std::vector<torch::Device>& devices) {
  std::string text;
  for (const auto& device : devices) text += (text.empty() ? "" : ",") + device.str();
  return text;
}

using TensorDict = torch::OrderedDict<std::string, torch::Tensor>;

// Splits "<kind>.<parameter name>" entries (optimizer buffers) by kind; entries without a dot
// ("lr") go to `plain`.
std::map<std::string, TensorDict> buffers_by_kind(const TensorDict& state, TensorDict& plain) {
  std::map<std::string, TensorDict> kinds;
  for (const auto& item : state) {
    const auto dot = item.key().find('.');
    if (dot == std::string::npos) {
      plain.insert(item.key(), item.value());
    } else {
      kinds[item.key().substr(0, dot)].insert(item.key().substr(dot + 1), item.value());
    }
  }
  return kinds;
}

// The optimizer's state under single-device parameter names (how checkpoints hold it), so a
// run resumes on any device layout of the same model.
TensorDict single_device_optimizer_state(const alexnet::AlexNet& model, const Sgd& optimizer) {
  TensorDict state;
  for (const auto& [kind, buffers] : buffers_by_kind(optimizer.state(), state)) {
    for (const auto& item : model->to_single_device(buffers)) {
      state.insert(kind + "." + item.key(), item.value());
    }
  }
  return state;
}

// The inverse: a checkpoint's optimizer state under `model`'s parameter names.
TensorDict layout_optimizer_state(const alexnet::AlexNet& model, const TensorDict& saved,
                                  const std::string& path) {
  TensorDict state;
  for (const auto& [kind, buffers] : buffers_by_kind(saved, state)) {
    TensorDict rows;
    try {
      rows = model->from_single_device(buffers);
    } catch (const c10::Error& e) {
      throw std::runtime_error("checkpoint '" + path + "': optimizer entries '" + kind +
                               ".*': " + e.what_without_backtrace());
    }
    for (const auto& item : rows) state.insert(kind + "." + item.key(), item.value());
  }
  return state;
}

}  // namespace

alexnet::AlexNet model_from_checkpoint(const Checkpoint& checkpoint) {
  TORCH_CHECK(checkpoint.config.contains("model"), "checkpoint configuration has no 'model'");
  alexnet::AlexNet model(model_options_from_json(checkpoint.config.at("model")));
  model->load_single_device_state(checkpoint.model);
  model->eval();
  return model;
}

namespace {

// Error counts summed over the ranks of a data-parallel job (unchanged with one process).
ErrorCounts sum_over_ranks(distributed::Communicator* comm, const ErrorCounts& local) {
  if (comm == nullptr) return local;
  const auto sums =
      comm->sum({static_cast<double>(local.samples), static_cast<double>(local.top1_wrong),
                 static_cast<double>(local.top5_wrong), local.loss_sum});
  ErrorCounts total;
  total.samples = static_cast<int64_t>(std::llround(sums[0]));
  total.top1_wrong = static_cast<int64_t>(std::llround(sums[1]));
  total.top5_wrong = static_cast<int64_t>(std::llround(sums[2]));
  total.loss_sum = sums[3];
  return total;
}

// A validation result over every rank's shard (unchanged with one process). A rank whose
// shard was empty has no confusion matrix; the others' give the number of classes.
EvalResult sum_over_ranks(distributed::Communicator* comm, EvalResult result) {
  if (comm == nullptr) return result;
  const auto n_local = static_cast<double>(result.samples);
  const bool has_confusion = result.confusion.defined();
  const auto sums = comm->sum({n_local, result.loss * n_local, result.top1_error * n_local,
                               result.top5_error * n_local,
                               has_confusion ? static_cast<double>(result.confusion.size(0)) : 0.0,
                               has_confusion ? 1.0 : 0.0});
  result.samples = static_cast<int64_t>(std::llround(sums[0]));
  const double total = std::max(sums[0], 1.0);
  result.loss = sums[1] / total;
  result.top1_error = sums[2] / total;
  result.top5_error = sums[3] / total;
  if (sums[5] > 0) {
    const auto classes = static_cast<int64_t>(std::llround(sums[4] / sums[5]));
    const auto local = has_confusion ? result.confusion.to(torch::kFloat64).contiguous()
                                     : torch::zeros({classes, classes}, torch::kFloat64);
    TORCH_CHECK(local.size(0) == classes, "validation: this rank's confusion matrix has ",
                local.size(0), " classes, the job's ", classes);
    const auto summed = comm->sum(std::vector<double>(
        local.data_ptr<double>(), local.data_ptr<double>() + local.numel()));
    result.confusion = torch::tensor(summed, torch::kFloat64)
                           .round()
                           .to(torch::kInt64)
                           .view({classes, classes});
  }
  return result;
}

// Thrown out of evaluate() when a stop is requested during validation.
struct ValidationStopped {};

// Whether any rank says yes (the local answer with one process).
bool any_rank(distributed::Communicator* comm, bool local) {
  return comm ? comm->sum({local ? 1.0 : 0.0})[0] > 0 : local;
}

// One call of train(): the run's set-up, then train_one_epoch() and end_epoch() until
// more_to_do() is false, then finish().
class Run {
 public:
  Run(TrainConfig config, const RunData& data, const RunOptions& options);
  // Steps left, or an epoch end still to handle (a run stopped while validating resumes at
  // its epoch's last batch).
  bool more_to_do() const {
    return epoch_ < config_.epochs && !stop_requested_ &&
           (step_ < total_steps_ || batch_in_epoch_ >= batches_per_epoch_);
  }
  // Trains until the epoch ends (true) or the run stops inside it (false: max_steps or a stop
  // request; the checkpoint then keeps the loader position).
  bool train_one_epoch();
  // Validates, updates the schedule, logs and checkpoints; honours a stop request.
  void end_epoch();
  TrainSummary finish();

 private:
  void open_model_and_loaders(const RunData& data);
  void resume_from(const Checkpoint& checkpoint);
  // Logs model.freeze and optimizer.lr_mult; copies init_from's weights into a fresh run.
  void start_fine_tuning(bool resumed);
  void join_ranks();
  void announce(const RunData& data);
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
  fs::path run_dir_;
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

Run::Run(TrainConfig config, const RunData& data, const RunOptions& options)
    : config_(std::move(config)), options_(options) {
  TORCH_CHECK(!options.run_dir.empty(), "train: no run folder given");
  TORCH_CHECK(data.train && data.train->size() > 0, "train: empty training set");
  // Data-parallel: the processes on a machine share its cores.
  const distributed::DistributedConfig& dist = options.distributed;
  const auto cores = static_cast<int64_t>(std::thread::hardware_concurrency());
  runtime::set_threads(config_.threads > 0 || !dist.enabled()
                  ? config_.threads
                  : std::max<int64_t>(1, cores / dist.local_world_size));
  devices_ = dist.enabled() ? distributed::devices_for_rank(resolve_devices(config_.devices), dist.local_rank)
                            : resolve_devices(config_.devices);
  check_precision(config_.precision, devices_.front());
  TORCH_CHECK(config_.precision == Precision::kFloat32 || options_.dtype == torch::kFloat,
              "precision ", precision_name(config_.precision), " needs float32 weights, not ",
              options_.dtype);
  if (config_.precision == Precision::kFloat16) scaler_ = std::make_unique<LossScaler>();
  if (dist.enabled()) {
    TORCH_CHECK(config_.batch_size % dist.world_size == 0, "batch_size ", config_.batch_size,
                " (the global batch) must be a multiple of the ", dist.world_size, " processes");
    comm_ = std::make_unique<distributed::Communicator>(dist, devices_.front());
    world_ = dist.world_size;
  }
  writer_ = !comm_ || comm_->rank() == 0;
  log_ = writer_ ? options.log : &discard_;
  if (const auto advice = runtime::blas_advice(); !advice.empty()) *log_ << advice << std::endl;
  if (const auto advice = precision_advice(config_.precision, devices_.front()); !advice.empty()) {
    *log_ << advice << std::endl;
  }

  run_dir_ = options.run_dir;
  last_path_ = (run_dir_ / "checkpoints" / "last.pt").string();
  best_path_ = (run_dir_ / "checkpoints" / "best.pt").string();
  if (writer_) {
    folder_ = std::make_unique<RunFolder>(
        run_dir_, options.resume      ? FolderPolicy::kResume
                  : options.overwrite ? FolderPolicy::kOverwrite
                                      : FolderPolicy::kNew);
  }
  std::optional<Checkpoint> resumed;
  if (options.resume) resumed = load_checkpoint(last_path_);

  // Resolve what the configuration left to the data, then record the effective configuration.
  const auto data_classes = static_cast<int64_t>(data.train->class_names().size());
  if (config_.num_classes_auto) {
    config_.model.num_classes(data_classes);
    config_.num_classes_auto = false;
  }
  TORCH_CHECK(config_.model.num_classes() == data_classes, "model.num_classes is ",
              config_.model.num_classes(), " but the training data have ", data_classes,
              " classes; set model.num_classes to ", data_classes, " or \"auto\"");
  resolve_statistics(config_.data, *data.train, config_.seed, *log_);
  const json effective = to_json(config_);
  // Refused before anything in the folder is written.
  // The saved configuration read and written again, so that keys added since it was written
  // compare as their defaults.
  if (resumed) check_resume_config(to_json(config_from_json(resumed->config)), effective);
  open_model_and_loaders(data);
  start_fine_tuning(resumed.has_value());  // a bad init_from is refused here too
  if (writer_) {
    fs::create_directories(run_dir_ / "checkpoints");
    write_file_atomically((run_dir_ / "config.json").string(), effective.dump(2) + "\n");
  }

  state_.config = effective;
  state_.resolved_devices = devices_text(devices_);
  describe_inputs(state_, config_, *data.train);
  if (resumed) resume_from(*resumed);
  if (comm_) join_ranks();
  if (writer_) {
    if (options.resume) trim_metrics(run_dir_ / "metrics.jsonl", step_, *log_);
    metrics_ = std::make_unique<MetricsLog>((run_dir_ / "metrics.jsonl").string(),
                                            /*append=*/options.resume);
  }
  progress_ = std::make_unique<ProgressLine>(*log_);
  summary_.first_step = step_;
  summary_.last_checkpoint = last_path_;
  summary_.best_checkpoint = best_path_;
  announce(data);
  run_start_ = interval_start_ = Clock::now();
}

void Run::open_model_and_loaders(const RunData& data) {
  torch::manual_seed(config_.seed);
  model_ = alexnet::AlexNet(alexnet::AlexNetOptions(config_.model).devices(devices_));
  model_->to(options_.dtype);
  freeze_layers(model_, config_.freeze);
  optimizer_ = std::make_unique<Sgd>(model_->named_parameters(), config_.optimizer);
  schedule_ = std::make_unique<LrSchedule>(config_.schedule, config_.optimizer.lr);

  data::LoaderOptions train_options;
  train_options.batch_size = config_.batch_size;
  train_options.workers = config_.data.workers;
  train_options.shuffle = true;
  train_options.seed = config_.seed;
  train_options.drop_last =
      comm_ || data.train->size() > static_cast<size_t>(config_.batch_size);
  train_options.rank = comm_ ? comm_->rank() : 0;
  train_options.world_size = world_;
  train_options.prefetch_batches = std::max<int64_t>(2, 2 * config_.data.workers);
  const auto pipeline = pipeline_options(config_.data);
  train_loader_ = std::make_unique<data::Loader>(
      data.train, transforms::training_pipeline(pipeline), train_options);
  if (data.val && data.val->size() > 0) {
    data::LoaderOptions val_options = train_options;
    val_options.batch_size = config_.eval_batch_size;
    val_options.shuffle = false;
    val_options.drop_last = false;
    val_options.rank = 0;
    val_options.world_size = 1;
    // Data-parallel: every rank evaluates its shard; validate() sums the results.
    val_loader_ = std::make_unique<data::Loader>(
        comm_ ? distributed::shard_for_rank(data.val, comm_->rank(), world_) : data.val,
        transforms::eval_pipeline(pipeline, config_.val_ten_crop), val_options);
  }
  batches_per_epoch_ = train_loader_->batches_per_epoch();
  TORCH_CHECK(batches_per_epoch_ > 0, "the training set has no full batch");
  total_steps_ = config_.epochs * batches_per_epoch_;
  if (config_.max_steps > 0) total_steps_ = std::min(total_steps_, config_.max_steps);
}

void Run::resume_from(const Checkpoint& checkpoint) {
  model_->load_single_device_state(checkpoint.model);
  optimizer_->load_state(layout_optimizer_state(model_, checkpoint.optimizer, last_path_));
  schedule_->load_state(checkpoint.schedule);
  epoch_ = checkpoint.epoch;
  batch_in_epoch_ = checkpoint.batch_in_epoch;
  step_ = checkpoint.step;
  *log_ << "resuming " << last_path_ << " at epoch " << checkpoint.epoch + 1 << ", step "
        << checkpoint.step << std::endl;
  if (checkpoint.resolved_devices != state_.resolved_devices) {
    *log_ << "the checkpoint was trained on devices " << checkpoint.resolved_devices
          << "; continuing on " << state_.resolved_devices << std::endl;
  }
  restore_rng_states(checkpoint, devices_, *log_);
  elapsed_before_ = checkpoint.progress.value("elapsed_s", 0.0);
  best_val_ = checkpoint.progress.value("best_val_top1_error", 2.0);
  if (checkpoint.progress.contains("epoch_counts")) {
    epoch_counts_ = ErrorCounts::from_json(checkpoint.progress.at("epoch_counts"));
  }
}

void Run::start_fine_tuning(bool resumed) {
  if (!config_.init_from.empty()) {
    if (resumed) {
      *log_ << "init_from " << config_.init_from
            << " not read: the resumed checkpoint holds the weights" << std::endl;
    } else {
      *log_ << describe(init_from(model_, config_.init_from)) << std::endl;
    }
  }
  if (!config_.freeze.empty()) {
    std::string layers;
    for (const auto& layer : config_.freeze) layers += (layers.empty() ? "" : ", ") + layer;
    *log_ << "frozen (no gradients, weight decay or momentum): " << layers << std::endl;
  }
  for (const auto& [layer, multiplier] : config_.optimizer.lr_mult) {
    *log_ << "lr_mult: " << layer << " learns at " << multiplier << " x lr" << std::endl;
  }
}

void Run::join_ranks() {
  distributed::broadcast_module(*comm_, *model_);  // identical weights, whatever each rank loaded
  reducer_ = std::make_unique<distributed::GradientReducer>(*comm_, distributed::parameters_in_backward_order(*model_),
                                               options_.reducer);
  // Rank 0 keeps the single-process random stream (and checkpoints it); the others draw
  // their own dropout masks.
  if (comm_->rank() > 0) {
    epoch_counts_ = ErrorCounts();  // rank 0 resumed the sum over ranks
    torch::manual_seed(config_.seed + 1000003 * static_cast<uint64_t>(comm_->rank()) +
                       static_cast<uint64_t>(step_));
  }
}

void Run::announce(const RunData& data) {
  *log_ << "training AlexNet (" << config_.model.num_classes() << " classes) on "
        << data.train->size() << " images (" << batches_per_epoch_ << " batches of "
        << config_.batch_size << " per epoch), validating on "
        << (val_loader_ ? data.val->size() : 0) << "; devices " << config_.devices << " -> "
        << devices_.front() << (devices_.size() > 1 ? "," + devices_.back().str() : "")
        << ", threads " << torch::get_num_threads() << ", precision "
        << precision_name(config_.precision) << "; " << total_steps_ - step_
        << " steps to go" << std::endl;
  if (comm_) {
    *log_ << "data-parallel: " << world_ << " processes (" << comm_->backend() << "), "
          << config_.batch_size / world_ << " images each per step, gradients in "
          << reducer_->bucket_count() << " all-reduce buckets" << std::endl;
  }
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
  AutocastGuard autocast(devices_.front(), config_.precision);
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
    progress_->update("epoch " + std::to_string(epoch_ + 1) + "/" +
                      std::to_string(config_.epochs) + " batch " +
                      std::to_string(batch_in_epoch_) + "/" + std::to_string(batches_per_epoch_) +
                      " step " + std::to_string(step_) + " loss " + fixed(loss, 4) + " lr " +
                      lr_text(optimizer_->lr()) + " " + fixed(rate, 1) + " img/s ETA " +
                      format_duration(eta));
  }
  if (!log_now) return;
  const double interval_seconds = seconds_since(interval_start_);
  interval_counts_ = sum_over_ranks(comm_.get(), interval_counts_);
  if (metrics_) {
    // The position after this step, as the step's start plus one batch.
    const double batches = static_cast<double>(batches_per_epoch_);
    const double position = static_cast<double>(epoch_) +
                            static_cast<double>(batch_in_epoch_ - 1) / batches + 1.0 / batches;
    metrics_->write({{"kind", "step"},
                     {"epoch", position},
                     {"step", step_},
                     {"loss", interval_counts_.loss()},
                     {"lr", optimizer_->lr()},
                     {"train_top1_error", interval_counts_.top1_error()},
                     {"train_top5_error", interval_counts_.top5_error()},
                     {"images_per_s",
                      static_cast<double>(interval_images_) / std::max(interval_seconds, 1e-9)},
                     {"elapsed_s", elapsed_before_ + seconds_since(start_)}});
  }
  interval_counts_ = ErrorCounts();
  interval_images_ = 0;
  interval_start_ = Clock::now();
}

EvalResult Run::validate() {
  model_->eval();
  auto result = evaluate(
      [&](const torch::Tensor& x) { return forward(x.to(options_.dtype)); },
      *val_loader_, devices_.front(), [&](int64_t done, int64_t total) {
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
  json record{
      {"kind", "epoch"},
      {"epoch", epoch_ + 1},
      {"step", step_},
      {"loss", epoch_counts_.loss()},
      {"lr", optimizer_->lr()},
      {"train_top1_error", epoch_counts_.top1_error()},
      {"train_top5_error", epoch_counts_.top5_error()},
      {"images_per_s", static_cast<double>(epoch_images_) / std::max(epoch_seconds, 1e-9)}};
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
  line << ", " << fixed(record["images_per_s"].get<double>(), 1) << " img/s, "
       << format_duration(epoch_seconds);
  progress_->print(line.str());

  batch_in_epoch_ = 0;
  epoch_counts_ = ErrorCounts();
  write_checkpoint(epoch_ + 1, 0);
  if (improved && writer_) copy_file_atomically(last_path_, best_path_);
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
                          std::to_string(step_) + "; no checkpoint written, the last good checkpoint is " +
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
  summary_.images_per_s =
      static_cast<double>(images_this_run_) / std::max(summary_.seconds, 1e-9);
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
    ExportInfo info;
    info.class_names = best.class_names;
    info.image_size = best.image_size;
    info.resize_size = best.resize_size;
    info.mean = best.mean;
    info.std = best.std;
    summary_.model_path = (run_dir_ / "model.pt").string();
    save_torchscript(best_model, info, summary_.model_path);
    *log_ << "exported " << source << " to " << summary_.model_path << std::endl;
  }
#if ALEXNET_WITH_OPENCV
  plot_training_curves((run_dir_ / "metrics.jsonl").string(), (run_dir_ / "curves.png").string());
  *log_ << "training curves: " << (run_dir_ / "curves.png").string() << std::endl;
#endif
}

}  // namespace

TrainSummary train(TrainConfig config, const RunData& data, const RunOptions& options) {
  Run run(std::move(config), data, options);
  while (run.more_to_do()) {
    if (!run.train_one_epoch()) break;
    run.end_epoch();
  }
  return run.finish();
}

}  // namespace alexnet::train
