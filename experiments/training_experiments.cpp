#include "experiments/training_experiments.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <limits>
#include <map>
#include <sstream>
#include <stdexcept>

#include "data/dataset.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace alexnet::experiments {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::vector<json> read_jsonl(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read metrics file " + path);
  std::vector<json> records;
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      records.push_back(json::parse(line));
    } catch (const json::exception& e) {
      throw std::runtime_error("metrics file " + path + " line " + std::to_string(number) +
                               " is not JSON: " + e.what());
    }
  }
  return records;
}

double mean(const std::vector<double>& values) {
  double sum = 0;
  for (double v : values) sum += v;
  return values.empty() ? 0 : sum / static_cast<double>(values.size());
}

double sample_std(const std::vector<double>& values) {
  if (values.size() < 2) return 0;
  const double m = mean(values);
  double sum = 0;
  for (double v : values) sum += (v - m) * (v - m);
  return std::sqrt(sum / static_cast<double>(values.size() - 1));
}

std::string percent(double fraction, int decimals = 2) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(decimals) << 100 * fraction;
  return out.str();
}

}  // namespace

std::vector<CurvePoint> read_training_curve(const std::string& metrics_jsonl) {
  std::vector<CurvePoint> curve;
  for (const auto& record : read_jsonl(metrics_jsonl)) {
    if (record.value("kind", "") != "step") continue;
    try {
      CurvePoint p;
      p.step = record.at("step").get<int64_t>();
      p.epoch = record.at("epoch").get<double>();
      p.elapsed_s = record.at("elapsed_s").get<double>();
      p.train_top1_error = record.at("train_top1_error").get<double>();
      p.loss = record.at("loss").get<double>();
      curve.push_back(p);
    } catch (const json::exception& e) {
      throw std::runtime_error("metrics file " + metrics_jsonl + ": step record " + record.dump() +
                               " lacks a field: " + e.what());
    }
  }
  return curve;
}

json read_last_validation(const std::string& metrics_jsonl) {
  std::optional<json> last;
  for (const auto& record : read_jsonl(metrics_jsonl)) {
    if (record.value("kind", "") == "epoch" && record.contains("val_top1_error") &&
        record.contains("val_top5_error")) {
      last = record;
    }
  }
  if (!last) {
    throw std::runtime_error("metrics file " + metrics_jsonl +
                             " holds no epoch record with validation errors");
  }
  return *last;
}

std::optional<CurvePoint> first_reaching(const std::vector<CurvePoint>& curve, double target,
                                         int64_t window) {
  TORCH_CHECK(window >= 1, "first_reaching: window must be positive, got ", window);
  double sum = 0;
  for (size_t i = 0; i < curve.size(); ++i) {
    sum += curve[i].train_top1_error;
    if (i >= static_cast<size_t>(window)) sum -= curve[i - window].train_top1_error;
    const auto n = std::min<size_t>(i + 1, static_cast<size_t>(window));
    if (sum / static_cast<double>(n) <= target + 1e-12) return curve[i];
  }
  return std::nullopt;
}

void resolve_shared_statistics(train::TrainConfig& config, const train::RunData& data,
                               std::ostream& log) {
  auto& d = config.data;
  if (!d.mean.empty() && !d.std.empty() && !d.eigenvalues.empty()) return;
  std::optional<data::DatasetStats> stats = data.train->stats();
  if (!stats) {
    log << "computing training set statistics once for all runs..." << std::endl;
    stats = data::compute_stats(*data.train, static_cast<size_t>(d.stats_images), config.seed);
  }
  if (d.mean.empty()) d.mean = stats->mean;
  if (d.std.empty()) d.std = stats->std;
  if (d.eigenvalues.empty()) {
    const auto values = stats->eigenvalues.to(torch::kFloat64).contiguous();
    const auto vectors = stats->eigenvectors.to(torch::kFloat64).contiguous();
    d.eigenvalues.assign(values.data_ptr<double>(), values.data_ptr<double>() + 3);
    d.eigenvectors.assign(vectors.data_ptr<double>(), vectors.data_ptr<double>() + 9);
  }
}

json RunResult::to_json() const {
  return {{"group", group},
          {"name", name},
          {"seed", seed},
          {"run_dir", run_dir},
          {"val_top1_error", val_top1_error},
          {"val_top5_error", val_top5_error},
          {"final_train_top1_error", final_train_top1_error},
          {"seconds", seconds},
          {"steps", steps},
          {"diverged", diverged}};
}

RunResult RunResult::from_json(const json& j) {
  RunResult r;
  r.group = j.at("group").get<std::string>();
  r.name = j.at("name").get<std::string>();
  r.seed = j.at("seed").get<uint64_t>();
  r.run_dir = j.at("run_dir").get<std::string>();
  // NaN (a diverged run's errors) is written as null.
  const auto number = [&](const char* key) {
    const auto& v = j.at(key);
    return v.is_null() ? std::numeric_limits<double>::quiet_NaN() : v.get<double>();
  };
  r.val_top1_error = number("val_top1_error");
  r.val_top5_error = number("val_top5_error");
  r.final_train_top1_error = number("final_train_top1_error");
  r.diverged = j.value("diverged", std::string());
  r.seconds = j.at("seconds").get<double>();
  r.steps = j.at("steps").get<int64_t>();
  return r;
}

namespace {

// result.json: the result and the configuration it was trained with.
void write_result(const RunResult& result, const json& config, const fs::path& path) {
  json out = result.to_json();
  out["config"] = config;
  runtime::write_file_atomically(path.string(), out.dump(2) + "\n");
}

}  // namespace

RunResult run_training(const train::TrainConfig& config, const train::RunData& data,
                       const std::string& group, const std::string& name,
                       const ExperimentSettings& settings) {
  std::ostream& log = settings.log ? *settings.log : std::cerr;
  const fs::path run_dir = fs::path(settings.out_dir) / name;
  const fs::path result_path = run_dir / "result.json";
  const json requested = train::to_json(config);
  if (settings.reuse && fs::exists(result_path)) {
    const json stored = train::read_json_file(result_path.string());
    const json recorded = stored.value("config", json());
    const auto differences = train::config_differences(recorded, requested);
    if (!recorded.is_object() || !differences.empty()) {
      const std::string difference = !recorded.is_object()
                                         ? "config: not recorded"
                                         : differences.begin()->first + ": " +
                                               differences.begin()->second.first.dump() + ", not " +
                                               differences.begin()->second.second.dump();
      throw std::runtime_error(result_path.string() + " was trained with another configuration (" +
                               difference +
                               "); leave out --reuse to train it again, or choose another --out");
    }
    log << "reusing " << result_path.string() << std::endl;
    return RunResult::from_json(stored);
  }
  std::error_code error;
  if (!settings.reuse && !settings.overwrite && fs::exists(run_dir) &&
      !fs::is_empty(run_dir, error)) {
    throw std::runtime_error("experiment run folder " + run_dir.string() +
                             " already holds files (an earlier experiment?); add --reuse to keep "
                             "its finished runs, --overwrite to replace them, or choose another "
                             "--out");
  }
  fs::remove_all(run_dir, error);
  log << "== run " << name << " (seed " << config.seed << ") -> " << run_dir.string() << std::endl;

  train::RunOptions options;
  options.run_dir = run_dir.string();
  options.log = &log;
  options.finalize = false;
  options.stop = settings.stop;
  RunResult result;
  result.group = group;
  result.name = name;
  result.seed = config.seed;
  result.run_dir = run_dir.string();
  train::TrainSummary summary;
  try {
    summary = train::train(config, data, options);
  } catch (const train::DivergedError& e) {
    log << "run " << name << " diverged: " << e.what() << std::endl;
    result.diverged = e.what();
    result.val_top1_error = result.val_top5_error = result.final_train_top1_error =
        std::numeric_limits<double>::quiet_NaN();
    if (!settings.keep_checkpoints) fs::remove_all(run_dir / "checkpoints", error);
    write_result(result, requested, result_path);
    return result;
  }
  if (summary.interrupted) {
    throw ExperimentStopped("stopped during run " + name + " at step " +
                            std::to_string(summary.steps) + " (" + run_dir.string() +
                            "); finished runs keep their result.json, and the same command "
                            "with --reuse trains the others");
  }
  result.seconds = summary.seconds;
  result.steps = summary.steps;
  const std::string metrics = (run_dir / "metrics.jsonl").string();
  if (data.val && data.val->size() > 0) {
    const auto last = read_last_validation(metrics);
    result.val_top1_error = last.at("val_top1_error").get<double>();
    result.val_top5_error = last.at("val_top5_error").get<double>();
    result.final_train_top1_error = last.at("train_top1_error").get<double>();
  } else {
    const auto curve = read_training_curve(metrics);
    if (!curve.empty()) result.final_train_top1_error = curve.back().train_top1_error;
  }
  if (!settings.keep_checkpoints) fs::remove_all(run_dir / "checkpoints", error);
  write_result(result, requested, result_path);
  return result;
}

json ActivationComparison::to_json() const {
  auto reached = [](const std::optional<CurvePoint>& p) -> json {
    if (!p) return nullptr;
    return {{"step", p->step},
            {"epoch", p->epoch},
            {"elapsed_s", p->elapsed_s},
            {"train_top1_error", p->train_top1_error}};
  };
  auto curve = [](const std::vector<CurvePoint>& points) {
    json out = json::array();
    for (const auto& p : points) {
      out.push_back({{"step", p.step},
                     {"epoch", p.epoch},
                     {"elapsed_s", p.elapsed_s},
                     {"train_top1_error", p.train_top1_error},
                     {"loss", p.loss}});
    }
    return out;
  };
  json out{{"target_train_error", target},
           {"window", window},
           {"relu", relu.to_json()},
           {"tanh", tanh.to_json()},
           {"relu_reached", reached(relu_reached)},
           {"tanh_reached", reached(tanh_reached)},
           {"speedup_epochs", speedup_epochs ? json(*speedup_epochs) : json(nullptr)},
           {"speedup_seconds", speedup_seconds ? json(*speedup_seconds) : json(nullptr)},
           {"relu_curve", curve(relu_curve)},
           {"tanh_curve", curve(tanh_curve)}};
  return out;
}

ActivationComparison compare_activations(const ExperimentSettings& settings,
                                         const train::RunData& data, double target,
                                         int64_t window) {
  TORCH_CHECK(target > 0 && target < 1, "target training error must be in (0, 1), got ", target);
  ActivationComparison result;
  result.target = target;
  result.window = window;
  auto config = settings.base;
  config.model.activation(Activation::kReLU);
  result.relu = run_training(config, data, "relu", "relu", settings);
  config.model.activation(Activation::kTanh);
  result.tanh = run_training(config, data, "tanh", "tanh", settings);
  result.relu_curve = read_training_curve(result.relu.run_dir + "/metrics.jsonl");
  result.tanh_curve = read_training_curve(result.tanh.run_dir + "/metrics.jsonl");
  result.relu_reached = first_reaching(result.relu_curve, target, window);
  result.tanh_reached = first_reaching(result.tanh_curve, target, window);
  if (result.relu_reached && result.tanh_reached) {
    result.speedup_epochs = result.tanh_reached->epoch / result.relu_reached->epoch;
    result.speedup_seconds = result.tanh_reached->elapsed_s / result.relu_reached->elapsed_s;
  }
  return result;
}

std::vector<AblationVariant> ablation_variants() {
  return {
      {"full", "LRN, 3/2 pooling, two columns, PCA lighting, dropout 0.5",
       [](train::TrainConfig&) {}},
      {"no-lrn", "without local response normalisation",
       [](train::TrainConfig& c) { c.model.lrn(false); }},
      {"pool-2x2", "non-overlapping 2/2 max-pooling instead of 3/2",
       [](train::TrainConfig& c) { c.model.pool_kernel(2).pool_stride(2); }},
      {"one-column", "one column of half width instead of two",
       [](train::TrainConfig& c) { c.model.columns(1); }},
      {"no-pca", "without PCA lighting",
       [](train::TrainConfig& c) { c.data.pca_lighting = false; }},
      {"no-dropout", "without dropout", [](train::TrainConfig& c) { c.model.dropout(0.0); }},
      {"no-conv3", "without conv3 (conv4 takes conv2's maps)",
       [](train::TrainConfig& c) { c.model.remove_conv("conv3"); }},
      {"no-conv4", "without conv4", [](train::TrainConfig& c) { c.model.remove_conv("conv4"); }},
      {"no-conv5", "without conv5 (its pooling follows conv4)",
       [](train::TrainConfig& c) { c.model.remove_conv("conv5"); }},
      {"extra-conv", "a second conv4 (conv4_extra) after conv4",
       [](train::TrainConfig& c) { c.model.extra_conv("conv4"); }},
      {"width-0.5", "every layer but fc8 half as wide",
       [](train::TrainConfig& c) { c.model.width(0.5 * c.model.width()); }},
      {"width-2", "every layer but fc8 twice as wide",
       [](train::TrainConfig& c) { c.model.width(2 * c.model.width()); }},
  };
}

std::vector<AblationRow> summarise_ablation(const std::vector<AblationVariant>& variants,
                                            const std::vector<RunResult>& runs) {
  std::vector<AblationRow> rows;
  for (const auto& v : variants) {
    AblationRow row;
    row.name = v.name;
    row.description = v.description;
    std::vector<double> top1, top5;
    for (const auto& r : runs) {
      if (r.group != v.name) continue;
      row.runs.push_back(r);
      if (!r.diverged.empty()) {
        ++row.diverged;
        continue;
      }
      top1.push_back(r.val_top1_error);
      top5.push_back(r.val_top5_error);
    }
    if (row.runs.empty()) continue;
    if (top1.empty()) {  // every run diverged
      row.top1_mean = row.top1_std = row.top5_mean = row.top5_std =
          std::numeric_limits<double>::quiet_NaN();
      rows.push_back(row);
      continue;
    }
    row.top1_mean = mean(top1);
    row.top1_std = sample_std(top1);
    row.top5_mean = mean(top5);
    row.top5_std = sample_std(top5);
    rows.push_back(row);
  }
  return rows;
}

std::string ablation_markdown(const std::vector<AblationRow>& rows) {
  std::ostringstream out;
  out << "| variant | change | runs | val top-1 error (%) | val top-5 error (%) | top-1 vs full "
         "| top-5 vs full |\n"
      << "|---|---|---|---|---|---|---|\n";
  for (const auto& row : rows) {
    auto delta = [&](double value, double base) {
      std::ostringstream d;
      d << std::showpos << std::fixed << std::setprecision(2) << 100 * (value - base);
      return d.str();
    };
    const int64_t finished = static_cast<int64_t>(row.runs.size()) - row.diverged;
    out << "| " << row.name << " | " << row.description << " | " << finished;
    if (row.diverged > 0) out << " (+" << row.diverged << " diverged)";
    out << " | ";
    if (finished == 0) {
      out << "diverged | diverged | | |\n";
      continue;
    }
    // No difference for the first row itself, nor when all of its runs diverged.
    const auto& first = rows.front();
    const bool base = &row == &first || first.diverged == static_cast<int64_t>(first.runs.size());
    // A spread needs two runs: one finished run is shown alone.
    const auto spread = [&](double std) { return finished > 1 ? " ± " + percent(std) : ""; };
    out << percent(row.top1_mean) << spread(row.top1_std) << " | " << percent(row.top5_mean)
        << spread(row.top5_std) << " | " << (base ? "" : delta(row.top1_mean, first.top1_mean))
        << " | " << (base ? "" : delta(row.top5_mean, first.top5_mean)) << " |\n";
  }
  return out.str();
}

json ablation_json(const std::vector<AblationRow>& rows) {
  json out = json::array();
  for (const auto& row : rows) {
    json runs = json::array();
    for (const auto& r : row.runs) runs.push_back(r.to_json());
    out.push_back({{"variant", row.name},
                   {"change", row.description},
                   {"val_top1_error_mean", row.top1_mean},
                   {"val_top1_error_std", row.top1_std},
                   {"val_top5_error_mean", row.top5_mean},
                   {"val_top5_error_std", row.top5_std},
                   {"diverged_runs", row.diverged},
                   {"runs", runs}});
  }
  return out;
}

std::vector<RunResult> run_ablation(const ExperimentSettings& settings, const train::RunData& data,
                                    const std::vector<AblationVariant>& variants, int64_t seeds) {
  TORCH_CHECK(seeds >= 1, "ablation: seeds must be positive, got ", seeds);
  TORCH_CHECK(data.val && data.val->size() > 0,
              "ablation: needs a validation set (data.holdout or the source's val split)");
  std::vector<RunResult> runs;
  for (int64_t s = 0; s < seeds; ++s) {
    for (const auto& v : variants) {
      auto config = settings.base;
      config.seed = settings.base.seed + static_cast<uint64_t>(s);
      v.apply(config);
      runs.push_back(run_training(config, data, v.name, v.name + "-s" + std::to_string(config.seed),
                                  settings));
    }
  }
  return runs;
}

}  // namespace alexnet::experiments
