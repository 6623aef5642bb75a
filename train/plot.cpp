#include "train/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <vector>

#include <nlohmann/json.hpp>

#include "draw/drawing.h"

namespace alexnet::train {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The band above the two charts that holds the title.
constexpr int64_t kTitleHeight = 60;

const draw::Rgb kTrain{31, 119, 180};  // blue
const draw::Rgb kTrainLight{150, 190, 222};
const draw::Rgb kVal{255, 127, 14};  // orange

struct Records {
  std::vector<json> steps, epochs;
};

std::optional<double> number(const json& record, const char* key) {
  const auto it = record.find(key);
  if (it == record.end() || !it->is_number()) return std::nullopt;
  const double value = it->get<double>();
  if (!std::isfinite(value)) return std::nullopt;
  return value;
}

draw::Series style(std::string name, const draw::Rgb& colour, bool dashed, bool markers,
                   int thickness = 2) {
  draw::Series series;
  series.name = std::move(name);
  series.colour = colour;
  series.dashed = dashed;
  series.markers = markers;
  series.thickness = thickness;
  return series;
}

Records read_metrics(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("metrics file '" + path + "' cannot be read");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  while (!lines.empty() && lines.back().find_first_not_of(" \t\r") == std::string::npos) {
    lines.pop_back();
  }
  Records records;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].find_first_not_of(" \t\r") == std::string::npos) continue;
    json record = json::parse(lines[i], nullptr, /*allow_exceptions=*/false);
    if (record.is_discarded() || !record.is_object()) {
      // A crash while a line was written leaves a truncated last line: ignore it.
      if (i + 1 == lines.size()) break;
      throw std::runtime_error("metrics file '" + path + "' line " + std::to_string(i + 1) +
                               " is not a JSON object");
    }
    if (!number(record, "epoch")) continue;
    const std::string kind = record.value("kind", std::string("epoch"));
    (kind == "step" ? records.steps : records.epochs).push_back(std::move(record));
  }
  return records;
}

draw::Series collect(const std::vector<json>& records, const char* key, draw::Series series) {
  for (const auto& record : records) {
    const auto x = number(record, "epoch");
    const auto y = number(record, key);
    if (x && y) {
      series.x.push_back(*x);
      series.y.push_back(*y);
    }
  }
  return series;
}

// Dotted lines at the epochs where the learning rate dropped, labelled with the new rate.
std::vector<std::pair<double, std::string>> lr_drops(const std::vector<json>& epochs) {
  std::vector<std::pair<double, std::string>> drops;
  for (const auto& record : epochs) {
    const auto dropped = number(record, "lr_dropped_to");
    const auto epoch = number(record, "epoch");
    if (!dropped || !epoch) continue;
    char text[32];
    std::snprintf(text, sizeof(text), "lr %g", *dropped);
    drops.emplace_back(*epoch, text);
  }
  return drops;
}

std::string format_percent(double fraction) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.2f%%", 100.0 * fraction);
  return text;
}

std::string title_for(const std::string& metrics_path, const Records& records) {
  std::string run = fs::path(metrics_path).parent_path().filename().string();
  std::string title = "AlexNet training" + (run.empty() ? std::string() : " (" + run + ")");
  std::optional<double> best;
  double best_epoch = 0.0;
  for (const auto& record : records.epochs) {
    const auto error = number(record, "val_top1_error");
    if (error && (!best || *error < *best)) {
      best = error;
      best_epoch = *number(record, "epoch");
    }
  }
  if (best) {
    char epoch[32];
    std::snprintf(epoch, sizeof(epoch), "%g", best_epoch);
    title += ": best validation top-1 error " + format_percent(*best) + " (epoch " + epoch + ")";
  }
  return title;
}

}  // namespace

void plot_training_curves(const std::string& metrics_jsonl, const std::string& png_path) {
  const Records records = read_metrics(metrics_jsonl);
  const bool train_from_steps = !records.steps.empty();
  const auto& train = train_from_steps ? records.steps : records.epochs;
  const std::string per = train_from_steps ? " (per log interval)" : "";

  std::vector<draw::Series> loss{
      collect(train, "loss", style("train" + per, kTrain, false, !train_from_steps)),
      collect(records.epochs, "val_loss", style("validation", kVal, false, true))};
  std::vector<draw::Series> error{
      collect(train, "train_top1_error",
              style("train top-1" + per, kTrain, false, !train_from_steps)),
      collect(train, "train_top5_error",
              style("train top-5" + per, kTrain, true, !train_from_steps)),
      collect(records.epochs, "val_top1_error", style("validation top-1", kVal, false, true)),
      collect(records.epochs, "val_top5_error", style("validation top-5", kVal, true, true))};
  if (train_from_steps) {
    // The epoch means of the training loss, as markers over the per-interval curve.
    loss.insert(loss.begin() + 1, collect(records.epochs, "loss",
                                          style("train (epoch mean)", kTrain, false, true, 0)));
    loss[0].colour = kTrainLight;
  }

  draw::ChartOptions options;
  options.width = kCurvesWidth / 2;
  options.height = kCurvesHeight - kTitleHeight;
  options.x_label = "epoch";
  options.y_min = 0.0;
  options.vertical_markers = lr_drops(records.epochs);
  options.title = "Loss (cross-entropy)";
  const torch::Tensor loss_chart = draw::line_chart(loss, options);
  options.title = "Error (%)";
  options.y_tick_scale = 100.0;
  double worst = 0.0;
  for (const auto& s : error) {
    for (double y : s.y) worst = std::max(worst, y);
  }
  if (worst * 1.05 > 1.0) options.y_max = 1.0;
  const torch::Tensor error_chart = draw::line_chart(error, options);
  const fs::path parent = fs::path(png_path).parent_path();
  if (!parent.empty()) fs::create_directories(parent);
  draw::write_png(draw::with_title(draw::side_by_side({loss_chart, error_chart}, /*gap=*/0),
                                   title_for(metrics_jsonl, records), kTitleHeight),
                  png_path);
}

}  // namespace alexnet::train
