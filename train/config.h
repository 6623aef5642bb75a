#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/alexnet.h"
#include "train/precision.h"

namespace alexnet::train {

/// The "model" object of a configuration: num_classes, in_channels, dropout, lrn, lrn_size,
/// lrn_alpha, lrn_beta, lrn_k, lrn_divide_alpha_by_size, pool_kernel, pool_stride,
/// activation ("relu"|"tanh"), init ("paper"|"kaiming"), columns (1|2), width (a number in
/// [1/64, 16]), remove_conv and extra_conv (""|"conv3"|"conv4"|"conv5"). Devices are not part
/// of it (they are the run's "devices"); checkpoints hold single-device parameter names.
nlohmann::json model_options_to_json(const alexnet::AlexNetOptions& options);
/// Reads the object written by model_options_to_json; missing keys keep their defaults, and
/// "freeze" (a training setting, TrainConfig::freeze) is left to config_from_json.
/// Unknown keys and invalid values throw std::invalid_argument naming the key ("model.init")
/// and the allowed values; the ranges are the model's own (alexnet::find_option_problem).
alexnet::AlexNetOptions model_options_from_json(const nlohmann::json& json);

/// How pixels are normalised (data.normalize): "mean" (the paper: subtract the per-channel
/// mean), "mean_std" (then divide by the per-channel std) or "none".
enum class Normalize { kMean, kMeanStd, kNone };
/// The SGD update rule (optimizer.rule): "paper" or "pytorch" (see OptimizerConfig::rule).
enum class SgdRule { kPaper, kPytorch };
/// The learning-rate schedule (schedule.kind): "plateau", "step" or "constant" (see
/// ScheduleConfig::kind).
enum class ScheduleKind { kPlateau, kStep, kConstant };

/// The configuration's names of the values above (config_from_json reads them, refusing
/// others with the key, the value and the allowed names).
std::string to_string(Normalize normalize);
std::string to_string(SgdRule rule);
std::string to_string(ScheduleKind kind);

/// Where the data come from and how images are prepared ("data" object).
struct DataConfig {
  /// An image folder, a packed file, an IDX folder or "fashion-mnist" (see data::open_dataset).
  std::string source = "fashion-mnist";
  /// Validation source; empty: the source's "val" split (or the held-out samples).
  std::string val_source;
  /// A labels file for val_source as one flat folder of images (the official ImageNet
  /// validation layout; see data/labels_file.h): "FILENAME CLASS" lines, Kaggle's
  /// LOC_val_solution.csv or the devkit's ILSVRC2012_validation_ground_truth.txt. Its classes
  /// are matched to the training set's by name. Empty: val_source is read as usual.
  std::string val_labels;
  /// The form of val_labels: "auto" (from its content), "list", "kaggle" or "devkit".
  std::string val_labels_format = "auto";
  /// The devkit form: the synsets in ILSVRC ID order, one per line (first word of each).
  std::string val_synsets;
  /// > 0: `holdout` training samples, every class in proportion, drawn with the run's seed,
  /// are the validation set instead (and are left out of training).
  int64_t holdout = 0;
  /// Use only N training / validation samples, every class in proportion, drawn with the
  /// run's seed (0: all).
  int64_t train_limit = 0;
  int64_t val_limit = 0;
  /// Image folders: shorter side rescaled to this when decoded, central square kept (0: as is).
  int64_t decode_size = 256;
  /// Pipeline: shorter side rescaled to `resize`, central square, then `crop` x `crop` crops.
  int64_t resize = 256;
  int64_t crop = 224;
  bool flip = true;
  bool pca_lighting = true;
  /// kMean (the paper: subtract the per-channel mean), kMeanStd or kNone.
  Normalize normalize = Normalize::kMean;
  /// Per-channel mean/std (0..255 scale); empty: computed from the training set (or taken
  /// from a packed file) at the start and recorded in the effective configuration.
  std::vector<double> mean;
  std::vector<double> std;
  /// PCA lighting: eigenvalues [3] and eigenvectors [3x3, row-major, one per column] on the
  /// 0..255 scale (see transforms::PcaLighting); empty: from the training set statistics
  /// when they are computed, else the widely used ImageNet values.
  std::vector<double> eigenvalues;
  std::vector<double> eigenvectors;
  /// Images the statistics are computed from (0: all).
  int64_t stats_images = 10000;
  /// Loader worker threads, 0 .. 256.
  int64_t workers = 2;
};

/// Stochastic gradient descent ("optimizer" object).
struct OptimizerConfig {
  /// kPaper: v <- m v - wd lr w - lr g, w <- w + v; kPytorch: torch::optim::SGD.
  SgdRule rule = SgdRule::kPaper;
  double lr = 0.01;
  double momentum = 0.9;
  double weight_decay = 5e-4;
  /// Biases use lr * bias_lr_multiplier and weight_decay * bias_weight_decay (the original
  /// code: 2 and 0).
  double bias_lr_multiplier = 1.0;
  double bias_weight_decay = 1.0;
  /// Per-layer learning-rate multipliers, like Caffe's lr_mult ({"fc8": 10}): the parameters
  /// of a named layer use lr * multiplier (a bias also times bias_lr_multiplier), and so does
  /// their weight-decay step (wd lr w). Layers not named use 1; 0 keeps a layer's weights
  /// (but model.freeze also saves computing its gradients).
  std::map<std::string, double> lr_mult;
};

/// Learning-rate schedule ("schedule" object).
struct ScheduleConfig {
  /// kPlateau (drop by `factor` when the validation top-1 error has not improved by more
  /// than `threshold` for `patience` epochs, at most `max_drops` times), kStep (drop by
  /// `factor` at each of `milestones`, in epochs, fractions allowed) or kConstant.
  ScheduleKind kind = ScheduleKind::kPlateau;
  std::vector<double> milestones;
  double factor = 0.1;
  int64_t patience = 1;
  int64_t max_drops = 3;
  double threshold = 0.0;
};

/// What the run keeps of its checkpoints ("checkpoint" object).
struct CheckpointConfig {
  /// Besides last.pt and best.pt, keep the checkpoints of the N most recent epoch ends as
  /// checkpoints/epoch_NNNN.pt (the epoch number, from 1), deleting older ones. 0 writes
  /// none and deletes none.
  int64_t keep_last = 0;
};

/// Everything `alexnet train` reads from its configuration. The JSON form (see to_json) is
/// what --config files hold and what RUN_DIR/config.json records.
struct TrainConfig {
  alexnet::AlexNetOptions model = alexnet::AlexNetOptions();
  /// num_classes in the JSON may be "auto": taken from the training set.
  bool num_classes_auto = true;
  DataConfig data;
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
  int64_t epochs = 90;
  /// Stop after this many optimisation steps in total (0: no limit).
  int64_t max_steps = 0;
  int64_t batch_size = 128;
  int64_t eval_batch_size = 128;
  uint64_t seed = 0;
  /// "auto" (cuda:0,cuda:1 with two GPUs, cuda:0 with one, else cpu), "cpu", "cuda:0",
  /// "cuda:0,cuda:1".
  std::string devices = "auto";
  /// Intra-op threads (0: all cores), at most 1024.
  int64_t threads = 0;
  /// Steps between progress lines and metrics.jsonl entries.
  int64_t log_interval = 50;
  /// Steps between checkpoints inside an epoch (0: only at epoch ends and when stopping).
  int64_t checkpoint_interval = 0;
  /// Validate with ten crops (softmax averaged) instead of the centre crop.
  bool val_ten_crop = false;
  /// The forward pass's type: "fp32", "bf16" (autocast; CPU or CUDA) or "fp16" (autocast with
  /// dynamic loss scaling; CUDA only). Weights and optimiser state stay float32.
  Precision precision = Precision::kFloat32;
  CheckpointConfig checkpoint;
  /// Fine-tuning: a checkpoint or an exported model.pt whose parameters are copied, where
  /// name and shape match, into the new model before its first step (see train/init_from.h);
  /// "" starts from model.init. A resumed run does not read it (its checkpoint holds the
  /// weights), and may not change it.
  std::string init_from;
  /// Layers that do not train (JSON "model.freeze", e.g. ["conv1", ..., "conv5"]): no
  /// gradients, no weight decay, no momentum; their weights stay bit-identical.
  std::vector<std::string> freeze;
};

/// The JSON form of a configuration (every key).
nlohmann::json to_json(const TrainConfig& config);
/// Reads a configuration; missing keys keep their defaults; keys starting with "_" are
/// comments. Unknown keys and invalid values throw std::invalid_argument naming the key
/// (e.g. "optimizer.rule") and the allowed values.
TrainConfig config_from_json(const nlohmann::json& json);
/// Reads a JSON configuration file; errors name the file.
nlohmann::json read_json_file(const std::string& path);
/// Sets a dotted key ("optimizer.lr") to `value`, parsed as JSON when it parses (numbers,
/// true/false, lists) and as a string otherwise. Throws naming an unknown key.
void set_config_value(nlohmann::json& json, const std::string& key, const std::string& value);
/// set_config_value for each "key=value" item of `overrides`, in order; items are separated
/// by ';' (e.g. "optimizer.lr=0.02;schedule.milestones=[30,60]"), empty ones skipped, white
/// space around a key ignored. Throws naming an item without '=' or without a key.
void apply_config_overrides(nlohmann::json& json, const std::string& overrides);
/// Where two configurations differ: each dotted key ("optimizer.lr") whose value differs, with
/// its value in `before` and in `after` (null where the key is absent). Objects are compared
/// key by key; arrays and scalars as wholes.
std::map<std::string, std::pair<nlohmann::json, nlohmann::json>> config_differences(
    const nlohmann::json& before, const nlohmann::json& after);
/// `base` with the keys of `overrides` replaced (objects merged recursively).
nlohmann::json merge_json(nlohmann::json base, const nlohmann::json& overrides);

/// The devices "auto" stands for on this machine, or the parsed list.
std::vector<torch::Device> resolve_devices(const std::string& devices);

}  // namespace alexnet::train
