#pragma once

// The paper's training experiments on top of the trainer (train/trainer.h): ReLU against
// tanh (the paper's Figure 1) and the ablations of section 3 and 4.

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "train/config.h"
#include "train/run_data.h"

namespace alexnet::experiments {

/// One "step" record of a run's metrics.jsonl: training error over the last log interval.
struct CurvePoint {
  int64_t step = 0;
  /// Fractional epoch at the end of the interval.
  double epoch = 0;
  /// Seconds since the run started (training only; see ExperimentSettings::shared_statistics).
  double elapsed_s = 0;
  double train_top1_error = 1;
  double loss = 0;
};

/// Reads the "step" records of a metrics.jsonl file in order. Throws naming the file and line
/// when a line is not JSON or lacks a field.
std::vector<CurvePoint> read_training_curve(const std::string& metrics_jsonl);

/// The last "epoch" record of a metrics.jsonl file that holds validation errors
/// (val_top1_error, val_top5_error); throws naming the file when there is none.
nlohmann::json read_last_validation(const std::string& metrics_jsonl);

/// The first point at which the mean training error of the last `window` points (itself and
/// the window - 1 before it; fewer at the start) is at or below `target`, or nullopt. A window
/// above 1 keeps one lucky log interval from counting as reaching the target.
std::optional<CurvePoint> first_reaching(const std::vector<CurvePoint>& curve, double target,
                                         int64_t window = 1);

/// How the runs of an experiment are made.
struct ExperimentSettings {
  /// The configuration every run starts from (e.g. configs/fashion-mnist.json); each run
  /// changes one thing.
  train::TrainConfig base;
  /// Output folder: one sub-folder per run, plus the experiment's table/plot.
  std::string out_dir;
  /// Reuse the result of a run whose folder already holds result.json of the same
  /// configuration (another configuration is refused, naming the key); other runs are trained
  /// again.
  bool reuse = false;
  /// Replace run folders that already hold files. Without it (and without `reuse`) such a
  /// folder is refused: it may hold an earlier experiment's runs.
  bool overwrite = false;
  /// Keep each run's checkpoints (hundreds of MB each); by default they are deleted once the
  /// run's metrics are read.
  bool keep_checkpoints = false;
  /// Progress output.
  std::ostream* log = nullptr;
  /// Polled after every training step (e.g. set by SIGINT): when it becomes true the run in
  /// progress writes its checkpoint and the experiment throws ExperimentStopped. That run's
  /// folder then holds no result.json, so `reuse` trains it again from the start (its wall
  /// time stays comparable); finished runs keep theirs.
  const std::atomic<bool>* stop = nullptr;
};

/// Thrown when ExperimentSettings::stop ends an experiment; the message names the run.
class ExperimentStopped : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Computes the training set's mean, std and PCA data once and writes them into `config.data`
/// (where it leaves them to the trainer), so that every run of an experiment starts training at
/// once and wall times compare.
void resolve_shared_statistics(train::TrainConfig& config, const train::RunData& data,
                               std::ostream& log);

/// One training run of an experiment.
struct RunResult {
  /// The arm the run belongs to ("relu", "no-lrn", ...) and the run's own name (its folder).
  std::string group;
  std::string name;
  uint64_t seed = 0;
  std::string run_dir;
  /// Final validation top-1 / top-5 error (0..1), or -1 without a validation set.
  double val_top1_error = -1, val_top5_error = -1;
  /// Training error of the last log interval and of the last epoch.
  double final_train_top1_error = 1;
  double seconds = 0;
  int64_t steps = 0;
  /// Empty for a finished run; the trainer's message when the run diverged (NaN or infinite
  /// loss), in which case the errors above are meaningless and the run counts as diverged.
  std::string diverged;
  nlohmann::json to_json() const;
  static RunResult from_json(const nlohmann::json& json);
};

/// Trains `config` into settings.out_dir/name (unless reused), writes result.json there and
/// returns it; a run whose loss becomes NaN or infinite is returned (and written) with
/// `diverged` set instead of stopping the experiment. Other errors are thrown.
RunResult run_training(const train::TrainConfig& config, const train::RunData& data,
                       const std::string& group, const std::string& name,
                       const ExperimentSettings& settings);

/// Result of the ReLU-vs-tanh experiment.
struct ActivationComparison {
  RunResult relu, tanh;
  std::vector<CurvePoint> relu_curve, tanh_curve;
  double target = 0.25;
  /// Points averaged when testing the target (see first_reaching).
  int64_t window = 1;
  std::optional<CurvePoint> relu_reached, tanh_reached;
  /// tanh's epochs (and seconds) to the target divided by ReLU's; nullopt unless both reached
  /// it.
  std::optional<double> speedup_epochs, speedup_seconds;
  nlohmann::json to_json() const;
};

/// Trains the base configuration twice, with ReLU and with tanh (nothing else differs: same
/// data, seed, budget), into OUT/relu and OUT/tanh, and compares when each reaches `target`
/// training error (the mean over `window` log intervals).
ActivationComparison compare_activations(const ExperimentSettings& settings,
                                         const train::RunData& data, double target,
                                         int64_t window = 3);

/// One arm of the ablation: a name, what it changes, and the change.
struct AblationVariant {
  std::string name;
  std::string description;
  std::function<void(train::TrainConfig&)> apply;
};

/// The full model (LRN, overlapping 3/2 pooling, two columns, PCA lighting, dropout 0.5) and
/// one change at a time: no-lrn, pool-2x2, one-column, no-pca, no-dropout; depth (section 7):
/// no-conv3, no-conv4, no-conv5, extra-conv (conv4_extra after conv4); breadth (section 1):
/// width-0.5, width-2 (relative to the base configuration's model.width).
std::vector<AblationVariant> ablation_variants();

/// Mean and spread of one variant's runs.
struct AblationRow {
  std::string name, description;
  /// Every run of the variant, diverged ones included; the statistics are over the others.
  std::vector<RunResult> runs;
  int64_t diverged = 0;
  double top1_mean = 0, top1_std = 0, top5_mean = 0, top5_std = 0;
  /// Sample standard deviation (n - 1); 0 for one run.
};

/// Groups runs by their group, the variant's name (in the order of `variants`) and computes mean
/// and sample standard deviation of the validation errors.
std::vector<AblationRow> summarise_ablation(const std::vector<AblationVariant>& variants,
                                            const std::vector<RunResult>& runs);

/// The table as markdown: variant, change, runs, top-1 and top-5 error mean +- std (percent),
/// and the difference to the first row.
std::string ablation_markdown(const std::vector<AblationRow>& rows);
nlohmann::json ablation_json(const std::vector<AblationRow>& rows);

/// Runs every variant with every seed (base seed + 0, 1, ...) into OUT/<variant>-s<seed>.
std::vector<RunResult> run_ablation(const ExperimentSettings& settings, const train::RunData& data,
                                    const std::vector<AblationVariant>& variants, int64_t seeds);

}  // namespace alexnet::experiments
