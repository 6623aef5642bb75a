#include "train/trainer.h"

#include <dlfcn.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "data/loader.h"
#include "distributed/communicator.h"
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

data::DatasetPtr limit(data::DatasetPtr dataset, int64_t n) {
  return n > 0 ? data::subset(std::move(dataset), static_cast<size_t>(n)) : dataset;
}

// Generator states of the CPU and of each CUDA device in use.
void capture_rng(Checkpoint& checkpoint, const std::vector<torch::Device>& devices) {
  checkpoint.cpu_rng_state = at::detail::getDefaultCPUGenerator().get_state();
  checkpoint.cuda_rng_states.clear();
  for (const auto& device : devices) {
    if (device.is_cuda()) {
      checkpoint.cuda_rng_states.push_back(
          at::globalContext().defaultGenerator(device).get_state());
    }
  }
}

void restore_rng(const Checkpoint& checkpoint, const std::vector<torch::Device>& devices) {
  if (checkpoint.cpu_rng_state.defined()) {
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(checkpoint.cpu_rng_state);
  }
  size_t next = 0;
  for (const auto& device : devices) {
    if (device.is_cuda() && next < checkpoint.cuda_rng_states.size()) {
      at::Generator generator = at::globalContext().defaultGenerator(device);
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_state(checkpoint.cuda_rng_states[next++]);
    }
  }
}

void copy_file_atomically(const std::string& from, const std::string& to) {
  const std::string temp = to + ".tmp";
  fs::copy_file(from, temp, fs::copy_options::overwrite_existing);
  fs::rename(temp, to);
}

// Mean/std and PCA data of the training set, where the configuration leaves them open.
void resolve_statistics(DataConfig& config, const data::Dataset& train, uint64_t seed,
                        std::ostream& log) {
  const bool need_mean = config.normalize != "none" && config.mean.empty();
  const bool need_std = config.normalize == "mean_std" && config.std.empty();
  const bool need_pca = config.pca_lighting && config.eigenvalues.empty();
  if (!need_mean && !need_std && !need_pca) return;
  std::optional<data::DatasetStats> stats = train.stats();
  if (!stats) {
    log << "computing training set statistics from "
        << (config.stats_images ? std::min<size_t>(config.stats_images, train.size())
                                : train.size())
        << " images..." << std::endl;
    stats = data::compute_stats(train, static_cast<size_t>(config.stats_images), seed);
  }
  if (need_mean) config.mean = stats->mean;
  if (need_std) config.std = stats->std;
  if (need_pca) {
    auto values = stats->eigenvalues.to(torch::kFloat64).contiguous();
    auto vectors = stats->eigenvectors.to(torch::kFloat64).contiguous();
    config.eigenvalues.assign(values.data_ptr<double>(), values.data_ptr<double>() + 3);
    config.eigenvectors.assign(vectors.data_ptr<double>(), vectors.data_ptr<double>() + 9);
  }
}

transforms::PipelineOptions pipeline_options(const DataConfig& config) {
  transforms::PipelineOptions options;
  options.resize = config.resize;
  options.crop = config.crop;
  options.flip = config.flip;
  options.pca_lighting = config.pca_lighting;
  if (config.normalize != "none") options.mean = config.mean;
  if (config.normalize == "mean_std") options.std = config.std;
  if (!config.eigenvalues.empty()) {
    options.eigenvalues = torch::tensor(config.eigenvalues, torch::kFloat64);
    options.eigenvectors = torch::tensor(config.eigenvectors, torch::kFloat64).view({3, 3});
  }
  return options;
}

// What the checkpoints and the exported model record about preprocessing.
void describe_inputs(Checkpoint& checkpoint, const TrainConfig& config,
                     const data::Dataset& train) {
  checkpoint.class_names = train.class_names();
  checkpoint.image_size = config.data.crop;
  checkpoint.resize_size = config.data.resize > 0 ? config.data.resize : config.data.crop;
  checkpoint.mean = config.data.normalize != "none" ? config.data.mean : std::vector<double>{};
  checkpoint.std = config.data.normalize == "mean_std" ? config.data.std : std::vector<double>{};
}

}  // namespace

std::string blas_advice() {
  using CoreName = char* (*)();
  auto core_name = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  if (core_name == nullptr || core_name() == nullptr) return "";
  std::string core = core_name();
  std::transform(core.begin(), core.end(), core.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  const bool generic = core == "prescott" || core == "core2" || core == "nehalem" ||
                       core == "katmai" || core == "unknown";
  if (!generic || std::getenv("OPENBLAS_CORETYPE") != nullptr) return "";
  const char* better = nullptr;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
    better = "SKYLAKEX";
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    better = "HASWELL";
  }
  if (better == nullptr) return "";
  return std::string("warning: OpenBLAS runs its generic '") + core_name() +
         "' kernels although this CPU has " +
         (std::string(better) == "SKYLAKEX" ? "AVX-512" : "AVX2") +
         " (its CPU model is hidden, e.g. in a VM); matrix products run about 5x faster with "
         "OPENBLAS_CORETYPE=" +
         better + " in the environment (the alexnet command sets it and restarts itself)";
}

void set_threads(int64_t threads) {
  const auto cores = static_cast<int64_t>(std::thread::hardware_concurrency());
  torch::set_num_threads(static_cast<int>(threads > 0 ? threads : std::max<int64_t>(1, cores)));
}

RunData open_run_data(const DataConfig& config) {
  data::DatasetOptions options;
  options.split = "train";
  options.image_size = config.decode_size;
  RunData run;
  run.train = data::open_dataset(config.source, options);
  if (config.holdout > 0) {
    const auto n = run.train->size();
    TORCH_CHECK(static_cast<size_t>(config.holdout) < n, "data.holdout (", config.holdout,
                ") must be smaller than the training set of '", config.source, "' (", n,
                " samples)");
    std::vector<size_t> train_indices(n - config.holdout), val_indices(config.holdout);
    std::iota(train_indices.begin(), train_indices.end(), size_t{0});
    std::iota(val_indices.begin(), val_indices.end(), n - config.holdout);
    run.val = data::subset(run.train, std::move(val_indices));
    run.train = data::subset(run.train, std::move(train_indices));
  } else {
    options.split = "val";
    options.val_source = config.val_source;
    try {
      run.val = data::open_dataset(config.source, options);
    } catch (const std::exception& e) {
      throw std::runtime_error(std::string(e.what()) +
                               "\n(no validation set: set data.val_source, or data.holdout to "
                               "hold out training samples)");
    }
  }
  run.train = limit(run.train, config.train_limit);
  run.val = limit(run.val, config.val_limit);
  TORCH_CHECK(run.train->size() > 0, "the training set of '", config.source, "' is empty");
  return run;
}

alexnet::AlexNet model_from_checkpoint(const Checkpoint& checkpoint) {
  TORCH_CHECK(checkpoint.config.contains("model"), "checkpoint configuration has no 'model'");
  alexnet::AlexNet model(model_options_from_json(checkpoint.config.at("model")));
  model->load_single_device_state(checkpoint.model);
  model->eval();
  return model;
}

TrainSummary train(TrainConfig config, const RunData& run_data, const RunOptions& options) {
  TORCH_CHECK(!options.run_dir.empty(), "train: no run folder given");
  TORCH_CHECK(run_data.train && run_data.train->size() > 0, "train: empty training set");
  const auto start = Clock::now();
  // Data-parallel: the processes on a machine share its cores; rank 0 alone writes and logs.
  const distributed::DistributedConfig& dist = options.distributed;
  const auto cores = static_cast<int64_t>(std::thread::hardware_concurrency());
  set_threads(config.threads > 0 || !dist.enabled()
                  ? config.threads
                  : std::max<int64_t>(1, cores / dist.local_world_size));
  const auto devices = dist.enabled() ? distributed::devices_for_rank(
                                            resolve_devices(config.devices), dist.local_rank)
                                      : resolve_devices(config.devices);
  const torch::Device device = devices.front();
  std::unique_ptr<distributed::Communicator> comm;
  if (dist.enabled()) {
    TORCH_CHECK(config.batch_size % dist.world_size == 0, "batch_size ", config.batch_size,
                " (the global batch) must be a multiple of the ", dist.world_size, " processes");
    comm = std::make_unique<distributed::Communicator>(dist, device);
  }
  const bool writer = !comm || comm->rank() == 0;
  const auto world = static_cast<int64_t>(dist.enabled() ? dist.world_size : 1);
  std::ostream discard(nullptr);
  std::ostream& log = writer ? *options.log : discard;
  if (const auto advice = blas_advice(); !advice.empty()) log << advice << std::endl;

  const fs::path run_dir(options.run_dir);
  const std::string last_path = (run_dir / "checkpoints" / "last.pt").string();
  const std::string best_path = (run_dir / "checkpoints" / "best.pt").string();
  fs::create_directories(run_dir / "checkpoints");

  std::optional<Checkpoint> resumed;
  if (options.resume) resumed = load_checkpoint(last_path);

  // Resolve what the configuration left to the data, then record the effective configuration.
  if (config.num_classes_auto) {
    config.model.num_classes(static_cast<int64_t>(run_data.train->class_names().size()));
    config.num_classes_auto = false;
  }
  resolve_statistics(config.data, *run_data.train, config.seed, log);
  json effective = to_json(config);
  if (writer) write_file_atomically((run_dir / "config.json").string(), effective.dump(2) + "\n");

  torch::manual_seed(config.seed);
  alexnet::AlexNet model(alexnet::AlexNetOptions(config.model).devices(devices));
  model->to(options.dtype);
  Sgd optimizer(model->named_parameters(), config.optimizer);
  LrSchedule schedule(config.schedule, config.optimizer.lr);

  data::LoaderOptions train_options;
  train_options.batch_size = config.batch_size;
  train_options.workers = config.data.workers;
  train_options.shuffle = true;
  train_options.seed = config.seed;
  train_options.drop_last = comm || run_data.train->size() > static_cast<size_t>(config.batch_size);
  train_options.rank = comm ? comm->rank() : 0;
  train_options.world_size = world;
  train_options.prefetch_batches = std::max<int64_t>(2, 2 * config.data.workers);
  const auto pipeline = pipeline_options(config.data);
  data::Loader train_loader(run_data.train, transforms::training_pipeline(pipeline), train_options);
  std::unique_ptr<data::Loader> val_loader;
  if (run_data.val && run_data.val->size() > 0) {
    data::LoaderOptions val_options = train_options;
    val_options.batch_size = config.eval_batch_size;
    val_options.shuffle = false;
    val_options.drop_last = false;
    val_options.rank = 0;
    val_options.world_size = 1;
    // Data-parallel: every rank evaluates its shard; the results are summed below.
    val_loader = std::make_unique<data::Loader>(
        comm ? distributed::shard_for_rank(run_data.val, comm->rank(), world) : run_data.val,
        transforms::eval_pipeline(pipeline, config.val_ten_crop), val_options);
  }
  const int64_t batches_per_epoch = train_loader.batches_per_epoch();
  TORCH_CHECK(batches_per_epoch > 0, "the training set has no full batch");
  int64_t total_steps = config.epochs * batches_per_epoch;
  if (config.max_steps > 0) total_steps = std::min(total_steps, config.max_steps);

  Checkpoint state;
  state.config = effective;
  describe_inputs(state, config, *run_data.train);

  int64_t epoch = 0, batch_in_epoch = 0, step = 0;
  double elapsed_before = 0.0;
  ErrorCounts epoch_counts;
  double best_val = 2.0;
  if (resumed) {
    model->load_single_device_state(resumed->model);
    optimizer.load_state(resumed->optimizer);
    schedule.load_state(resumed->schedule);
    epoch = resumed->epoch;
    batch_in_epoch = resumed->batch_in_epoch;
    step = resumed->step;
    restore_rng(*resumed, devices);
    elapsed_before = resumed->progress.value("elapsed_s", 0.0);
    best_val = resumed->progress.value("best_val_top1_error", 2.0);
    if (resumed->progress.contains("epoch_counts")) {
      epoch_counts = ErrorCounts::from_json(resumed->progress.at("epoch_counts"));
    }
    log << "resuming " << last_path << " at epoch " << epoch + 1 << ", step " << step << std::endl;
  }
  std::unique_ptr<distributed::GradientReducer> reducer;
  if (comm) {
    distributed::broadcast_module(*comm, *model);  // identical weights, whatever each rank loaded
    reducer = std::make_unique<distributed::GradientReducer>(
        *comm, distributed::parameters_in_backward_order(*model), options.reducer);
    // Rank 0 keeps the single-process random stream (and checkpoints it); the others draw
    // their own dropout masks.
    if (comm->rank() > 0) {
      epoch_counts = ErrorCounts();  // rank 0 resumed the sum over ranks
      torch::manual_seed(config.seed + 1000003 * static_cast<uint64_t>(comm->rank()) +
                         static_cast<uint64_t>(step));
    }
  }
  // Data-parallel: error counts summed over ranks.
  auto global_counts = [&](const ErrorCounts& local) {
    if (!comm) return local;
    const auto sums =
        comm->sum({static_cast<double>(local.samples), static_cast<double>(local.top1_wrong),
                   static_cast<double>(local.top5_wrong), local.loss_sum});
    ErrorCounts total;
    total.samples = static_cast<int64_t>(std::llround(sums[0]));
    total.top1_wrong = static_cast<int64_t>(std::llround(sums[1]));
    total.top5_wrong = static_cast<int64_t>(std::llround(sums[2]));
    total.loss_sum = sums[3];
    return total;
  };

  std::unique_ptr<MetricsLog> metrics;
  if (writer) {
    metrics = std::make_unique<MetricsLog>((run_dir / "metrics.jsonl").string(),
                                           /*append=*/options.resume);
  }
  ProgressLine progress(log);
  TrainSummary summary;
  summary.first_step = step;
  summary.last_checkpoint = last_path;
  summary.best_checkpoint = best_path;

  // at_epoch/at_batch: the loader position a resumed run starts from.
  auto write_checkpoint = [&](const std::string& path, int64_t at_epoch, int64_t at_batch) {
    const ErrorCounts counts = global_counts(epoch_counts);  // every rank calls this
    if (!writer) return;
    state.model = model->single_device_state();
    state.optimizer = optimizer.state();
    state.schedule = schedule.state();
    state.epoch = at_epoch;
    state.batch_in_epoch = at_batch;
    state.step = step;
    capture_rng(state, devices);
    state.progress = {{"elapsed_s", elapsed_before + seconds_since(start)},
                      {"best_val_top1_error", best_val},
                      {"epoch_counts", counts.to_json()}};
    save_checkpoint(state, path);
  };

  log << "training AlexNet (" << config.model.num_classes() << " classes) on "
      << run_data.train->size() << " images (" << batches_per_epoch << " batches of "
      << config.batch_size << " per epoch), validating on "
      << (val_loader ? run_data.val->size() : 0) << "; devices " << config.devices << " -> "
      << devices.front() << (devices.size() > 1 ? "," + devices.back().str() : "") << ", threads "
      << torch::get_num_threads() << "; " << total_steps - step << " steps to go" << std::endl;
  if (comm) {
    log << "data-parallel: " << world << " processes (" << comm->backend() << "), "
        << config.batch_size / world << " images each per step, gradients in "
        << reducer->bucket_count() << " all-reduce buckets" << std::endl;
  }

  const auto run_start = Clock::now();
  int64_t images_this_run = 0;
  ErrorCounts interval_counts;
  auto interval_start = Clock::now();
  int64_t interval_images = 0;
  bool stop_requested = false;

  for (; epoch < config.epochs && step < total_steps && !stop_requested; ++epoch) {
    model->train();
    train_loader.start_epoch(epoch, batch_in_epoch);
    const auto epoch_start = Clock::now();
    int64_t epoch_images = 0;
    bool epoch_done = false;
    while (step < total_steps) {
      auto batch = train_loader.next();
      if (!batch) {
        epoch_done = true;
        break;
      }
      const double position =
          static_cast<double>(epoch) +
          static_cast<double>(batch_in_epoch) / static_cast<double>(batches_per_epoch);
      optimizer.set_lr(schedule.lr(position));
      auto images = batch->images.to(device, options.dtype);
      auto labels = batch->labels.to(device);
      auto logits = model->forward(images);
      auto loss = torch::cross_entropy_loss(logits, labels);
      const double local_loss = loss.item<double>();
      double loss_value = local_loss;
      bool stop_now = options.stop && options.stop->load();
      if (comm) {
        // The global batch's loss, and a stop every rank agrees on (a signal may reach the
        // ranks at different steps).
        const auto sums = comm->sum({local_loss, stop_now ? 1.0 : 0.0});
        loss_value = sums[0] / static_cast<double>(world);
        stop_now = sums[1] > 0;
      }
      if (!std::isfinite(loss_value)) {
        throw DivergedError(
            "the training loss is " + std::string(std::isnan(loss_value) ? "NaN" : "infinite") +
            " at epoch " + std::to_string(epoch + 1) + ", step " + std::to_string(step + 1) +
            " (lr " + lr_text(optimizer.lr()) + "); stopped without updating the model. The " +
            "last good checkpoint is " + (fs::exists(last_path) ? last_path : "(none yet)") +
            "; lower optimizer.lr or check the data");
      }
      optimizer.zero_grad();
      loss.backward();
      if (reducer) reducer->synchronize();
      optimizer.step();
      ++step;
      ++batch_in_epoch;
      const int64_t n = labels.size(0) * world;
      epoch_counts.add(logits, labels, local_loss);
      interval_counts.add(logits, labels, local_loss);
      summary.losses.push_back(loss_value);
      images_this_run += n;
      epoch_images += n;
      interval_images += n;

      const double run_seconds = seconds_since(run_start);
      const double rate = static_cast<double>(images_this_run) / std::max(run_seconds, 1e-9);
      const double eta = run_seconds / static_cast<double>(step - summary.first_step) *
                         static_cast<double>(total_steps - step);
      const bool log_now = step % config.log_interval == 0;
      if (progress.live() || log_now) {
        progress.update("epoch " + std::to_string(epoch + 1) + "/" + std::to_string(config.epochs) +
                        " batch " + std::to_string(batch_in_epoch) + "/" +
                        std::to_string(batches_per_epoch) + " step " + std::to_string(step) +
                        " loss " + fixed(loss_value, 4) + " lr " + lr_text(optimizer.lr()) + " " +
                        fixed(rate, 1) + " img/s ETA " + format_duration(eta));
      }
      if (log_now) {
        const double interval_seconds = seconds_since(interval_start);
        interval_counts = global_counts(interval_counts);
        if (metrics) {
          metrics->write({{"kind", "step"},
                          {"epoch", position + 1.0 / static_cast<double>(batches_per_epoch)},
                          {"step", step},
                          {"loss", interval_counts.loss()},
                          {"lr", optimizer.lr()},
                          {"train_top1_error", interval_counts.top1_error()},
                          {"train_top5_error", interval_counts.top5_error()},
                          {"images_per_s",
                           static_cast<double>(interval_images) / std::max(interval_seconds, 1e-9)},
                          {"elapsed_s", elapsed_before + seconds_since(start)}});
        }
        interval_counts = ErrorCounts();
        interval_images = 0;
        interval_start = Clock::now();
      }
      if (stop_now) {
        stop_requested = true;
        break;
      }
      if (config.checkpoint_interval > 0 && step % config.checkpoint_interval == 0) {
        write_checkpoint(last_path, epoch, batch_in_epoch);
      }
    }
    // max_steps reached exactly at the end of the epoch: still an epoch end.
    epoch_done = epoch_done || (!stop_requested && batch_in_epoch >= batches_per_epoch);
    if (!epoch_done) {
      // Stopped inside the epoch (max_steps or a signal): keep the loader position.
      write_checkpoint(last_path, epoch, batch_in_epoch);
      progress.print("stopped at epoch " + std::to_string(epoch + 1) + ", step " +
                     std::to_string(step) + "; checkpoint " + last_path);
      summary.interrupted = stop_requested;
      break;
    }

    // Epoch end: validate, update the schedule, log, checkpoint.
    const double epoch_seconds = seconds_since(epoch_start);
    epoch_counts = global_counts(epoch_counts);
    json record{
        {"kind", "epoch"},
        {"epoch", epoch + 1},
        {"step", step},
        {"loss", epoch_counts.loss()},
        {"lr", optimizer.lr()},
        {"train_top1_error", epoch_counts.top1_error()},
        {"train_top5_error", epoch_counts.top5_error()},
        {"images_per_s", static_cast<double>(epoch_images) / std::max(epoch_seconds, 1e-9)}};
    bool improved = true;
    if (val_loader) {
      model->eval();
      auto result = evaluate(
          [&](const torch::Tensor& x) { return model->forward(x.to(options.dtype)); },
          *val_loader, device,
          [&](int64_t done, int64_t total) {
            if (progress.live()) {
              progress.update("validating " + std::to_string(done) + "/" + std::to_string(total));
            }
          });
      model->train();
      if (comm) {
        const auto n_local = static_cast<double>(result.samples);
        const auto sums = comm->sum({n_local, result.loss * n_local, result.top1_error * n_local,
                                     result.top5_error * n_local});
        result.samples = static_cast<int64_t>(std::llround(sums[0]));
        const double total = std::max(sums[0], 1.0);
        result.loss = sums[1] / total;
        result.top1_error = sums[2] / total;
        result.top5_error = sums[3] / total;
      }
      record["val_loss"] = result.loss;
      record["val_top1_error"] = result.top1_error;
      record["val_top5_error"] = result.top5_error;
      summary.last_val_top1_error = result.top1_error;
      improved = result.top1_error < best_val;
      best_val = std::min(best_val, result.top1_error);
      if (schedule.observe(result.top1_error)) {
        record["lr_dropped_to"] = schedule.lr(static_cast<double>(epoch + 1));
      }
    }
    record["elapsed_s"] = elapsed_before + seconds_since(start);
    if (metrics) metrics->write(record);
    std::ostringstream line;
    line << "epoch " << epoch + 1 << " done: loss " << fixed(epoch_counts.loss(), 4)
         << ", train top-1 error " << fixed(100 * epoch_counts.top1_error(), 2) << "%";
    if (record.contains("val_top1_error")) {
      line << ", val top-1/top-5 error " << fixed(100 * record["val_top1_error"].get<double>(), 2)
           << "% / " << fixed(100 * record["val_top5_error"].get<double>(), 2) << "%";
    }
    line << ", " << fixed(record["images_per_s"].get<double>(), 1) << " img/s, "
         << format_duration(epoch_seconds);
    progress.print(line.str());

    batch_in_epoch = 0;
    epoch_counts = ErrorCounts();
    write_checkpoint(last_path, epoch + 1, 0);
    if (improved && writer) copy_file_atomically(last_path, best_path);
    ++summary.epochs_completed;
    bool stop_after_epoch = options.stop && options.stop->load();
    if (comm) stop_after_epoch = comm->sum({stop_after_epoch ? 1.0 : 0.0})[0] > 0;
    if (stop_after_epoch) {
      stop_requested = true;
      summary.interrupted = true;
      progress.print("stopping; checkpoint " + last_path);
    }
  }

  summary.steps = step;
  summary.best_val_top1_error = best_val;
  summary.seconds = seconds_since(run_start);
  summary.images_per_s = static_cast<double>(images_this_run) / std::max(summary.seconds, 1e-9);
  if (reducer) summary.allreduce_wait_s = reducer->wait_seconds();

  const bool finished = !summary.interrupted && (step >= total_steps || epoch >= config.epochs);
  if (options.finalize && finished && writer) {
    const std::string source = fs::exists(best_path) ? best_path : last_path;
    if (fs::exists(source)) {
      const Checkpoint best = load_checkpoint(source);
      alexnet::AlexNet best_model = model_from_checkpoint(best);
      ExportInfo info;
      info.class_names = best.class_names;
      info.image_size = best.image_size;
      info.resize_size = best.resize_size;
      info.mean = best.mean;
      info.std = best.std;
      summary.model_path = (run_dir / "model.pt").string();
      save_torchscript(best_model, info, summary.model_path);
      log << "exported " << source << " to " << summary.model_path << std::endl;
    }
#if ALEXNET_WITH_OPENCV
    plot_training_curves((run_dir / "metrics.jsonl").string(), (run_dir / "curves.png").string());
    log << "training curves: " << (run_dir / "curves.png").string() << std::endl;
#endif
  }
  return summary;
}

}  // namespace alexnet::train
