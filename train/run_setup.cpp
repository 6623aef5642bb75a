#include "train/run.h"

#include <algorithm>
#include <limits>
#include <thread>

#include "runtime/atomic_file.h"
#include "runtime/runtime.h"
#include "train/checkpoint_history.h"
#include "train/init_from.h"
#include "train/layer_settings.h"
#include "train/optimizer_state.h"
#include "transforms/transforms.h"

namespace alexnet::train {
namespace {

namespace fs = std::filesystem;

std::string devices_text(const std::vector<torch::Device>& devices) {
  std::string text;
  for (const auto& device : devices) text += (text.empty() ? "" : ",") + device.str();
  return text;
}

}  // namespace

Run::Run(TrainConfig config, const RunData& data, const RunOptions& options)
    : config_(std::move(config)), options_(options) {
  TORCH_CHECK(!options.run_dir.empty(), "train: no run folder given");
  TORCH_CHECK(data.train && data.train->size() > 0, "train: empty training set");
  set_up_devices_and_ranks(options.distributed);
  run_dir_ = options.run_dir;
  last_path_ = (run_dir_ / "checkpoints" / "last.pt").string();
  best_path_ = (run_dir_ / "checkpoints" / "best.pt").string();
  if (writer_) {
    folder_ = std::make_unique<RunFolder>(run_dir_, options.resume      ? FolderPolicy::kResume
                                                    : options.overwrite ? FolderPolicy::kOverwrite
                                                                        : FolderPolicy::kNew);
  }
  std::optional<Checkpoint> resumed;
  if (options.resume) resumed = load_checkpoint(last_path_);

  resolve_config(data);
  const nlohmann::json effective = to_json(config_);
  // Refused before anything in the folder is written.
  // The saved configuration read and written again, so that keys added since it was written
  // compare as their defaults.
  if (resumed) check_resume_config(to_json(config_from_json(resumed->config)), effective);
  open_model_and_loaders(data);
  start_fine_tuning(resumed.has_value());  // a bad init_from is refused here too
  if (writer_) {
    folder_->clear_for_overwrite();
    fs::create_directories(run_dir_ / "checkpoints");
    runtime::write_file_atomically((run_dir_ / "config.json").string(), effective.dump(2) + "\n");
  }

  state_.config = effective;
  state_.resolved_devices = devices_text(devices_);
  record_inputs(state_, config_, *data.train);
  if (resumed) resume_from(*resumed);
  if (comm_) join_ranks();
  if (writer_) {
    if (options.resume) trim_metrics(run_dir_ / "metrics.jsonl", step_, epoch_, *log_);
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

void Run::set_up_devices_and_ranks(const distributed::DistributedConfig& dist) {
  // Data-parallel: the processes on a machine share its cores.
  const auto cores = static_cast<int64_t>(std::thread::hardware_concurrency());
  runtime::set_threads(config_.threads > 0 || !dist.enabled()
                           ? config_.threads
                           : std::max<int64_t>(1, cores / dist.local_world_size));
  devices_ = dist.enabled()
                 ? distributed::devices_for_rank(resolve_devices(config_.devices), dist.local_rank)
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
  log_ = writer_ ? options_.log : &discard_;
  if (const auto advice = runtime::blas_advice(); !advice.empty()) *log_ << advice << std::endl;
  if (const auto advice = precision_advice(config_.precision, devices_.front()); !advice.empty()) {
    *log_ << advice << std::endl;
  }
}

void Run::resolve_config(const RunData& data) {
  const auto data_classes = static_cast<int64_t>(data.train->class_names().size());
  if (config_.num_classes_auto) {
    config_.model.num_classes(data_classes);
    config_.num_classes_auto = false;
  }
  TORCH_CHECK(config_.model.num_classes() == data_classes, "model.num_classes is ",
              config_.model.num_classes(), " but the training data have ", data_classes,
              " classes; set model.num_classes to ", data_classes, " or \"auto\"");
  resolve_statistics(config_.data, *data.train, config_.seed, config_.model.in_channels(), *log_);
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
  train_options.drop_last = comm_ || data.train->size() > static_cast<size_t>(config_.batch_size);
  train_options.rank = comm_ ? comm_->rank() : 0;
  train_options.world_size = world_;
  train_options.prefetch_batches = std::max<int64_t>(2, 2 * config_.data.workers);
  const auto pipeline = pipeline_options(config_.data, config_.model.in_channels());
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
  TORCH_CHECK(batches_per_epoch_ > 0, "the training set of ", data.train->size(),
              " images has no full batch of batch_size ", config_.batch_size);
  TORCH_CHECK(config_.epochs <= std::numeric_limits<int64_t>::max() / batches_per_epoch_,
              "epochs (", config_.epochs, ") times ", batches_per_epoch_,
              " batches per epoch is more steps than can be counted");
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
      *log_ << report_text(init_from(model_, config_.init_from)) << std::endl;
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
  reducer_ = std::make_unique<distributed::GradientReducer>(
      *comm_, distributed::parameters_in_backward_order(*model_), options_.reducer);
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
        << precision_label(config_.precision, devices_.front()) << "; "
        << (total_steps_ > step_
                ? std::to_string(total_steps_ - step_) + " steps to go"
                : "nothing to train: step " + std::to_string(step_) +
                      " is already at or past the last step (" + std::to_string(total_steps_) + ")")
        << std::endl;
  if (config_.model.num_classes() < 2) {
    *log_ << "warning: the training data hold one class: every prediction is right, and the "
             "model learns nothing"
          << std::endl;
  }
  if (comm_) {
    *log_ << "data-parallel: " << world_ << " processes (" << comm_->backend() << "), "
          << config_.batch_size / world_ << " images each per step, gradients in "
          << reducer_->bucket_count() << " all-reduce buckets" << std::endl;
  }
}

}  // namespace alexnet::train
