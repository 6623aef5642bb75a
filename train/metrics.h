#pragma once

#include <cstdint>
#include <fstream>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

namespace alexnet::data {
class Loader;
}  // namespace alexnet::data

namespace alexnet::train {

/// Running loss and top-1 / top-5 error counts over batches.
struct ErrorCounts {
  int64_t samples = 0;
  int64_t top1_wrong = 0;
  int64_t top5_wrong = 0;
  double loss_sum = 0.0;  ///< sum of per-sample losses

  /// scores: [B, classes] logits or probabilities (any device); labels: [B] int64.
  /// mean_loss: the batch's mean loss.
  void add(const torch::Tensor& scores, const torch::Tensor& labels, double mean_loss);
  double loss() const { return samples ? loss_sum / static_cast<double>(samples) : 0.0; }
  double top1_error() const;
  double top5_error() const;
  nlohmann::json to_json() const;
  static ErrorCounts from_json(const nlohmann::json& json);
};

/// Counts of (true class, top-1 predicted class) pairs: [classes, classes] int64 on the CPU,
/// rows = true class, columns = predicted class. `labels` [B] int64 in [0, classes),
/// `scores` [B, classes] logits or probabilities (any device).
torch::Tensor confusion_counts(const torch::Tensor& scores, const torch::Tensor& labels);

/// Result of evaluate().
struct EvalResult {
  int64_t samples = 0;
  /// Mean cross-entropy (of the averaged softmax with ten crops), top-1 and top-5 error (0..1).
  double loss = 0.0, top1_error = 0.0, top5_error = 0.0;
  double seconds = 0.0;
  /// [classes, classes] int64 on the CPU (see confusion_counts); undefined when no batch was
  /// evaluated.
  torch::Tensor confusion;

  /// Top-1 accuracy of each true class, [classes] float64: the confusion matrix's diagonal
  /// over its row sums, NaN for a class without samples. Empty when `confusion` is undefined.
  torch::Tensor per_class_accuracy() const;
  /// samples, loss, errors, accuracies and seconds (not the per-class breakdown).
  nlohmann::json to_json() const;
  /// {"per_class": [{"class", "samples", "top1_accuracy" (null without samples)}...],
  /// "confusion": [[counts of row 0]...]}. Throws when `class_names` does not match the
  /// confusion matrix.
  nlohmann::json breakdown_json(const std::vector<std::string>& class_names) const;
};

/// One wrong top-1 prediction.
struct Mistake {
  /// The sample's index in the data set (data::Batch::indices).
  int64_t index = 0;
  int64_t label = 0, predicted = 0;
  /// The probability given to `predicted`.
  double probability = 0.0;
};

/// Keeps the `capacity` most confident wrong predictions seen.
class ConfidentMistakes {
 public:
  explicit ConfidentMistakes(size_t capacity);
  /// probabilities: [B, classes] (rows sum to 1, any device); labels: [B] int64;
  /// indices: B data set indices.
  void add(const torch::Tensor& probabilities, const torch::Tensor& labels,
           const std::vector<int64_t>& indices);
  /// The mistakes kept, most confident first.
  const std::vector<Mistake>& mistakes() const { return mistakes_; }

 private:
  size_t capacity_;
  std::vector<Mistake> mistakes_;
};

/// Runs `forward` ([N, C, h, w] float on `device` -> logits [N, classes]) over every batch of
/// `loader` (one epoch, without gradients). Batches of ten crops, [B, 10, C, h, w], are
/// scored by the softmax averaged over the ten. `progress(done, total)` is called per batch;
/// `mistakes`, when given, collects the most confident wrong predictions.
EvalResult evaluate(const std::function<torch::Tensor(const torch::Tensor&)>& forward,
                    data::Loader& loader, torch::Device device,
                    const std::function<void(int64_t, int64_t)>& progress = {},
                    ConfidentMistakes* mistakes = nullptr);

/// The columns of metrics.csv, in order: the fields step and epoch records of metrics.jsonl
/// may hold.
const std::vector<std::string>& metrics_csv_columns();

/// metrics.csv's header line (without newline).
std::string metrics_csv_header();

/// One JSON record as a CSV row (without newline): numbers in full precision, strings as
/// they are, absent fields empty.
std::string metrics_csv_row(const nlohmann::json& record);

/// Rewrites `csv` (atomically) from the records of `jsonl`: the table a resumed run continues.
void write_metrics_csv(const std::string& jsonl, const std::string& csv);

/// Appends one JSON object per line to RUN_DIR/metrics.jsonl, and the same record as a row
/// of RUN_DIR/metrics.csv (columns metrics_csv_columns(), which pandas and spreadsheets read
/// directly); both flushed after each record.
class MetricsLog {
 public:
  /// `jsonl`: the metrics.jsonl path; the CSV file is the same path ending in ".csv".
  /// append: keep the records already there (a resumed run); the CSV file is then rewritten
  /// from the JSON lines first, so the two always hold the same records.
  MetricsLog(const std::string& jsonl, bool append);
  void write(const nlohmann::json& record);

 private:
  std::string path_, csv_path_;
  std::ofstream out_, csv_;
};

/// Progress output: on a terminal, one live line rewritten with '\r'; otherwise plain lines,
/// one per update().
class ProgressLine {
 public:
  explicit ProgressLine(std::ostream& out);
  /// Shows `text` (without newline).
  void update(const std::string& text);
  /// Ends the live line (if any) and prints `text` on a line of its own.
  void print(const std::string& text);
  bool live() const { return live_; }

 private:
  std::ostream& out_;
  bool live_;
  size_t last_width_ = 0;
};

/// "1:02:03" or "4:05" for a duration in seconds.
std::string format_duration(double seconds);

}  // namespace alexnet::train
