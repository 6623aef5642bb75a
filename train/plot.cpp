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
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "train/checkpoint.h"

namespace alexnet::train {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const cv::Scalar kWhite(255, 255, 255);
const cv::Scalar kBlack(30, 30, 30);
const cv::Scalar kGrid(228, 228, 228);
const cv::Scalar kAxis(90, 90, 90);
const cv::Scalar kTrain(180, 119, 31);  // blue
const cv::Scalar kTrainLight(222, 190, 150);
const cv::Scalar kVal(14, 127, 255);  // orange
const cv::Scalar kLrDrop(150, 150, 150);
constexpr int kFont = cv::FONT_HERSHEY_SIMPLEX;

struct Series {
  std::string label;
  cv::Scalar color;
  bool dashed = false;
  bool markers = false;
  int thickness = 2;
  std::vector<cv::Point2d> points;  // (epoch, value)
};

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

Series style(std::string label, const cv::Scalar& color, bool dashed, bool markers,
             int thickness = 2) {
  Series series;
  series.label = std::move(label);
  series.color = color;
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

Series collect(const std::vector<json>& records, const char* key, double scale, Series series) {
  for (const auto& record : records) {
    const auto x = number(record, "epoch");
    const auto y = number(record, key);
    if (x && y) series.points.emplace_back(*x, *y * scale);
  }
  return series;
}

// Tick spacing of 1, 2, 2.5 or 5 times a power of ten giving about `target` intervals.
double nice_step(double range, int target) {
  const double raw = range / target;
  const double power = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0}) {
    if (m * power >= raw) return m * power;
  }
  return 10.0 * power;
}

std::string tick_label(double value, double step) {
  int decimals = 0;
  while (decimals < 6 && std::abs(step * std::pow(10.0, decimals) -
                                  std::round(step * std::pow(10.0, decimals))) > 1e-6) {
    ++decimals;
  }
  char text[32];
  std::snprintf(text, sizeof(text), "%.*f", decimals, std::abs(value) < 1e-12 ? 0.0 : value);
  return text;
}

void put_text(cv::Mat& image, const std::string& text, cv::Point at, double scale,
              const cv::Scalar& color, int thickness = 1, double align_x = 0.0,
              double align_y = 0.0) {
  int baseline = 0;
  const cv::Size size = cv::getTextSize(text, kFont, scale, thickness, &baseline);
  at.x -= static_cast<int>(align_x * size.width);
  at.y += static_cast<int>(align_y * size.height);
  cv::putText(image, text, at, kFont, scale, color, thickness, cv::LINE_AA);
}

void dashed_line(cv::Mat& image, cv::Point2d a, cv::Point2d b, const cv::Scalar& color,
                 int thickness, double& phase) {
  constexpr double kOn = 10.0, kOff = 6.0;
  const double length = std::hypot(b.x - a.x, b.y - a.y);
  double t = 0.0;
  while (t < length) {
    const bool on = phase < kOn;
    const double left = on ? kOn - phase : kOn + kOff - phase;
    const double step = std::min(left, length - t);
    if (on) {
      const cv::Point2d p = a + (b - a) * (t / length);
      const cv::Point2d q = a + (b - a) * ((t + step) / length);
      cv::line(image, p, q, color, thickness, cv::LINE_AA);
    }
    t += step;
    phase = std::fmod(phase + step, kOn + kOff);
  }
}

struct Panel {
  cv::Rect area;  // the plotting area inside the axes
  std::string title;
  double x_max = 1.0, y_min = 0.0, y_max = 1.0;
  double x_step = 1.0, y_step = 1.0;

  cv::Point2d to_pixel(const cv::Point2d& p) const {
    return {area.x + (p.x / x_max) * area.width,
            area.y + area.height - (p.y - y_min) / (y_max - y_min) * area.height};
  }
};

Panel make_panel(cv::Rect area, std::string title, double x_max, const std::vector<Series>& series,
                 double y_cap) {
  Panel panel{area, std::move(title)};
  double y_max = 0.0;
  for (const auto& s : series) {
    for (const auto& p : s.points) y_max = std::max(y_max, p.y);
  }
  if (y_max <= 0.0) y_max = 1.0;
  y_max = std::min(y_max * 1.05, y_cap);
  panel.y_step = nice_step(y_max, 6);
  panel.y_max = std::ceil(y_max / panel.y_step - 1e-9) * panel.y_step;
  panel.x_step = std::max(nice_step(x_max, 8), x_max >= 2.0 ? 1.0 : 0.0);
  panel.x_max = std::ceil(x_max / panel.x_step - 1e-9) * panel.x_step;
  return panel;
}

void draw_axes(cv::Mat& image, const Panel& panel) {
  const cv::Rect& a = panel.area;
  for (double y = panel.y_min; y <= panel.y_max + 1e-9; y += panel.y_step) {
    const int py = static_cast<int>(std::lround(panel.to_pixel({0, y}).y));
    cv::line(image, {a.x, py}, {a.x + a.width, py}, kGrid, 1);
    cv::line(image, {a.x - 5, py}, {a.x, py}, kAxis, 1);
    put_text(image, tick_label(y, panel.y_step), {a.x - 9, py}, 0.45, kBlack, 1, 1.0, 0.5);
  }
  for (double x = 0.0; x <= panel.x_max + 1e-9; x += panel.x_step) {
    const int px = static_cast<int>(std::lround(panel.to_pixel({x, 0}).x));
    cv::line(image, {px, a.y}, {px, a.y + a.height}, kGrid, 1);
    cv::line(image, {px, a.y + a.height}, {px, a.y + a.height + 5}, kAxis, 1);
    put_text(image, tick_label(x, panel.x_step), {px, a.y + a.height + 22}, 0.45, kBlack, 1, 0.5);
  }
  cv::rectangle(image, a, kAxis, 1);
  put_text(image, "epoch", {a.x + a.width / 2, a.y + a.height + 48}, 0.55, kBlack, 1, 0.5);
  put_text(image, panel.title, {a.x + a.width / 2, a.y - 14}, 0.65, kBlack, 2, 0.5);
}

void draw_series(cv::Mat& image, const Panel& panel, const Series& series) {
  cv::Mat layer = image(panel.area);
  const cv::Point2d origin(panel.area.x, panel.area.y);
  double phase = 0.0;
  for (size_t i = 1; series.thickness > 0 && i < series.points.size(); ++i) {
    const cv::Point2d a = panel.to_pixel(series.points[i - 1]) - origin;
    const cv::Point2d b = panel.to_pixel(series.points[i]) - origin;
    if (series.dashed) {
      dashed_line(layer, a, b, series.color, series.thickness, phase);
    } else {
      cv::line(layer, a, b, series.color, series.thickness, cv::LINE_AA);
    }
  }
  if (series.markers || series.points.size() == 1) {
    for (const auto& p : series.points) {
      const cv::Point2d c = panel.to_pixel(p) - origin;
      if (series.dashed) {
        cv::circle(layer, c, 4, kWhite, cv::FILLED, cv::LINE_AA);
        cv::circle(layer, c, 4, series.color, 2, cv::LINE_AA);
      } else {
        cv::circle(layer, c, 4, series.color, cv::FILLED, cv::LINE_AA);
      }
    }
  }
}

void draw_legend(cv::Mat& image, const Panel& panel, const std::vector<Series>& series) {
  std::vector<const Series*> shown;
  int text_width = 0;
  for (const auto& s : series) {
    if (s.points.empty()) continue;
    shown.push_back(&s);
    int baseline = 0;
    text_width = std::max(text_width, cv::getTextSize(s.label, kFont, 0.45, 1, &baseline).width);
  }
  if (shown.empty()) {
    put_text(image, "no data",
             {panel.area.x + panel.area.width / 2, panel.area.y + panel.area.height / 2}, 0.7,
             kAxis, 1, 0.5, 0.5);
    return;
  }
  constexpr int kRow = 22, kSample = 36, kPad = 10;
  const cv::Size box(kPad * 3 + kSample + text_width,
                     kPad * 2 + kRow * static_cast<int>(shown.size()) - 6);
  const cv::Point top_left(panel.area.x + panel.area.width - box.width - 10, panel.area.y + 10);
  cv::rectangle(image, cv::Rect(top_left, box), kWhite, cv::FILLED);
  cv::rectangle(image, cv::Rect(top_left, box), kGrid, 1);
  for (size_t i = 0; i < shown.size(); ++i) {
    const Series& s = *shown[i];
    const int y = top_left.y + kPad + 8 + kRow * static_cast<int>(i);
    const cv::Point2d a(top_left.x + kPad, y), b(top_left.x + kPad + kSample, y);
    double phase = 0.0;
    if (s.thickness > 0 && s.dashed) {
      dashed_line(image, a, b, s.color, s.thickness, phase);
    } else if (s.thickness > 0) {
      cv::line(image, a, b, s.color, s.thickness, cv::LINE_AA);
    }
    if (s.markers) {
      const cv::Point2d c = (a + b) * 0.5;
      cv::circle(image, c, 4, s.dashed ? kWhite : s.color, cv::FILLED, cv::LINE_AA);
      if (s.dashed) cv::circle(image, c, 4, s.color, 2, cv::LINE_AA);
    }
    put_text(image, s.label, {top_left.x + 2 * kPad + kSample, y}, 0.45, kBlack, 1, 0.0, 0.4);
  }
}

// Vertical dotted lines where the learning rate dropped.
void draw_lr_drops(cv::Mat& image, const Panel& panel, const std::vector<json>& epochs) {
  for (const auto& record : epochs) {
    const auto dropped = number(record, "lr_dropped_to");
    const auto epoch = number(record, "epoch");
    if (!dropped || !epoch) continue;
    const int px = static_cast<int>(std::lround(panel.to_pixel({*epoch, 0}).x));
    for (int y = panel.area.y; y < panel.area.y + panel.area.height; y += 8) {
      cv::line(image, {px, y}, {px, std::min(y + 3, panel.area.y + panel.area.height)}, kLrDrop, 1);
    }
    char text[32];
    std::snprintf(text, sizeof(text), "lr %g", *dropped);
    put_text(image, text, {px - 4, panel.area.y + panel.area.height - 8}, 0.4, kLrDrop, 1, 1.0);
  }
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

  std::vector<Series> loss{
      collect(train, "loss", 1.0, style("train" + per, kTrain, false, !train_from_steps)),
      collect(records.epochs, "val_loss", 1.0, style("validation", kVal, false, true))};
  std::vector<Series> error{collect(train, "train_top1_error", 100.0,
                                    style("train top-1" + per, kTrain, false, !train_from_steps)),
                            collect(train, "train_top5_error", 100.0,
                                    style("train top-5" + per, kTrain, true, !train_from_steps)),
                            collect(records.epochs, "val_top1_error", 100.0,
                                    style("validation top-1", kVal, false, true)),
                            collect(records.epochs, "val_top5_error", 100.0,
                                    style("validation top-5", kVal, true, true))};
  if (train_from_steps) {
    // The epoch means of the training loss, as markers over the per-interval curve.
    loss.insert(loss.begin() + 1, collect(records.epochs, "loss", 1.0,
                                          style("train (epoch mean)", kTrain, false, true, 0)));
    loss[0].color = kTrainLight;
  }

  double x_max = 0.0;
  for (const auto* group : {&loss, &error}) {
    for (const auto& s : *group) {
      for (const auto& p : s.points) x_max = std::max(x_max, p.x);
    }
  }
  if (x_max <= 0.0) x_max = 1.0;

  cv::Mat image(kCurvesHeight, kCurvesWidth, CV_8UC3, kWhite);
  constexpr int kTop = 100, kBottom = 70, kLeft = 80, kGap = 110, kRight = 30;
  const int panel_width = (kCurvesWidth - kLeft - kGap - kRight) / 2;
  const int panel_height = kCurvesHeight - kTop - kBottom;
  const Panel loss_panel = make_panel({kLeft, kTop, panel_width, panel_height},
                                      "Loss (cross-entropy)", x_max, loss, 1e30);
  const Panel error_panel =
      make_panel({kLeft + panel_width + kGap, kTop, panel_width, panel_height}, "Error (%)", x_max,
                 error, 100.0);
  put_text(image, title_for(metrics_jsonl, records), {kCurvesWidth / 2, 42}, 0.8, kBlack, 2, 0.5);
  for (const auto& [panel, series] :
       {std::pair{&loss_panel, &loss}, std::pair{&error_panel, &error}}) {
    draw_axes(image, *panel);
    draw_lr_drops(image, *panel, records.epochs);
    for (const auto& s : *series) draw_series(image, *panel, s);
    draw_legend(image, *panel, *series);
  }

  std::vector<uchar> png;
  if (!cv::imencode(".png", image, png)) {
    throw std::runtime_error("cannot encode the training curves for '" + png_path + "'");
  }
  write_file_atomically(png_path, std::string(png.begin(), png.end()));
}

}  // namespace alexnet::train
