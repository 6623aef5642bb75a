#include "train/metrics.h"

#include "data/loader.h"
#include "runtime/atomic_file.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <sstream>
#include <stdexcept>

namespace alexnet::train {

void ErrorCounts::add(const torch::Tensor& scores, const torch::Tensor& labels, double mean_loss) {
  TORCH_CHECK(scores.dim() == 2 && labels.dim() == 1 && scores.size(0) == labels.size(0),
              "scores [B, classes] and labels [B] expected, got ", scores.sizes(), " and ",
              labels.sizes());
  const auto k = std::min<int64_t>(5, scores.size(1));
  const auto top = std::get<1>(scores.detach().topk(k, /*dim=*/1)).cpu();
  const auto hits = top.eq(labels.cpu().view({-1, 1}));
  const int64_t n = labels.size(0);
  top1_wrong += n - hits.select(1, 0).sum().item<int64_t>();
  top5_wrong += n - hits.any(1).sum().item<int64_t>();
  samples += n;
  loss_sum += mean_loss * static_cast<double>(n);
}

double ErrorCounts::top1_error() const {
  return samples ? static_cast<double>(top1_wrong) / static_cast<double>(samples) : 0.0;
}

double ErrorCounts::top5_error() const {
  return samples ? static_cast<double>(top5_wrong) / static_cast<double>(samples) : 0.0;
}

nlohmann::json ErrorCounts::to_json() const {
  return {{"samples", samples},
          {"top1_wrong", top1_wrong},
          {"top5_wrong", top5_wrong},
          {"loss_sum", loss_sum}};
}

ErrorCounts ErrorCounts::from_json(const nlohmann::json& json) {
  ErrorCounts counts;
  counts.samples = json.at("samples").get<int64_t>();
  counts.top1_wrong = json.at("top1_wrong").get<int64_t>();
  counts.top5_wrong = json.at("top5_wrong").get<int64_t>();
  counts.loss_sum = json.at("loss_sum").get<double>();
  return counts;
}

torch::Tensor confusion_counts(const torch::Tensor& scores, const torch::Tensor& labels) {
  TORCH_CHECK(scores.dim() == 2 && labels.dim() == 1 && scores.size(0) == labels.size(0),
              "scores [B, classes] and labels [B] expected, got ", scores.sizes(), " and ",
              labels.sizes());
  const int64_t classes = scores.size(1);
  const auto truth = labels.to(torch::kCPU, torch::kInt64);
  if (truth.numel() > 0) {
    TORCH_CHECK(truth.min().item<int64_t>() >= 0 && truth.max().item<int64_t>() < classes,
                "labels must lie in [0, ", classes, "), got ", truth.min().item<int64_t>(), " to ",
                truth.max().item<int64_t>());
  }
  const auto predicted = std::get<1>(scores.detach().topk(1, /*dim=*/1)).squeeze(1).cpu();
  return torch::bincount(truth * classes + predicted, /*weights=*/{}, classes * classes)
      .view({classes, classes});
}

torch::Tensor EvalResult::per_class_accuracy() const {
  if (!confusion.defined()) return torch::empty({0}, torch::kFloat64);
  const auto counts = confusion.to(torch::kFloat64);
  return counts.diagonal() / counts.sum(1);
}

nlohmann::json EvalResult::breakdown_json(const std::vector<std::string>& class_names) const {
  const int64_t classes = confusion.defined() ? confusion.size(0) : 0;
  TORCH_CHECK(static_cast<int64_t>(class_names.size()) == classes,
              "evaluation: ", class_names.size(), " class names for a confusion matrix of ",
              classes, " classes");
  const auto accuracy = per_class_accuracy();
  const auto counts = confusion.defined() ? confusion.to(torch::kInt64).contiguous() : confusion;
  auto per_class = nlohmann::json::array();
  auto matrix = nlohmann::json::array();
  for (int64_t c = 0; c < classes; ++c) {
    const double a = accuracy[c].item<double>();
    const nlohmann::json top1 = std::isnan(a) ? nlohmann::json(nullptr) : nlohmann::json(a);
    per_class.push_back({{"class", class_names[static_cast<size_t>(c)]},
                         {"samples", counts[c].sum().item<int64_t>()},
                         {"top1_accuracy", top1}});
    const auto* row = counts[c].data_ptr<int64_t>();
    matrix.push_back(std::vector<int64_t>(row, row + classes));
  }
  return {{"per_class", per_class}, {"confusion", matrix}};
}

ConfidentMistakes::ConfidentMistakes(size_t capacity) : capacity_(capacity) {}

void ConfidentMistakes::add(const torch::Tensor& probabilities, const torch::Tensor& labels,
                            const std::vector<int64_t>& indices) {
  TORCH_CHECK(probabilities.dim() == 2 && labels.dim() == 1 &&
                  probabilities.size(0) == labels.size(0) &&
                  static_cast<size_t>(labels.size(0)) == indices.size(),
              "probabilities [B, classes], labels [B] and B indices expected, got ",
              probabilities.sizes(), ", ", labels.sizes(), " and ", indices.size());
  if (capacity_ == 0) return;
  const auto [top, predicted] = probabilities.detach().to(torch::kCPU, torch::kFloat64).max(1);
  const auto truth = labels.to(torch::kCPU, torch::kInt64);
  for (int64_t i = 0; i < truth.size(0); ++i) {
    const int64_t p = predicted[i].item<int64_t>(), t = truth[i].item<int64_t>();
    if (p == t) continue;
    mistakes_.push_back({indices[static_cast<size_t>(i)], t, p, top[i].item<double>()});
  }
  std::stable_sort(mistakes_.begin(), mistakes_.end(), [](const Mistake& a, const Mistake& b) {
    return a.probability > b.probability;
  });
  if (mistakes_.size() > capacity_) mistakes_.resize(capacity_);
}

nlohmann::json EvalResult::to_json() const {
  return {{"samples", samples},
          {"loss", loss},
          {"top1_error", top1_error},
          {"top5_error", top5_error},
          {"top1_accuracy", 1.0 - top1_error},
          {"top5_accuracy", 1.0 - top5_error},
          {"seconds", seconds}};
}

EvalResult evaluate(const std::function<torch::Tensor(const torch::Tensor&)>& forward,
                    data::Loader& loader, torch::Device device,
                    const std::function<void(int64_t, int64_t)>& progress,
                    ConfidentMistakes* mistakes) {
  torch::NoGradGuard no_grad;
  const auto start = std::chrono::steady_clock::now();
  ErrorCounts counts;
  torch::Tensor confusion;
  loader.start_epoch(0);
  const int64_t total = loader.batches_per_epoch();
  int64_t done = 0;
  while (auto batch = loader.next()) {
    auto images = batch->images.to(device, torch::kFloat32);
    auto labels = batch->labels.to(device);
    torch::Tensor scores, loss;
    if (images.dim() == 5) {
      const auto b = images.size(0), crops = images.size(1);
      auto flat = images.flatten(0, 1);
      auto probs = torch::softmax(forward(flat), /*dim=*/1).view({b, crops, -1}).mean(1);
      scores = probs;
      loss = torch::nll_loss(torch::log(probs.clamp_min(1e-12)), labels);
    } else {
      scores = forward(images);
      loss = torch::cross_entropy_loss(scores, labels);
    }
    counts.add(scores, labels, loss.item<double>());
    const auto batch_confusion = confusion_counts(scores, labels);
    confusion = confusion.defined() ? confusion + batch_confusion : batch_confusion;
    if (mistakes) {
      mistakes->add(images.dim() == 5 ? scores : torch::softmax(scores, /*dim=*/1), labels,
                    batch->indices);
    }
    if (progress) progress(++done, total);
  }
  EvalResult result;
  result.samples = counts.samples;
  result.loss = counts.loss();
  result.top1_error = counts.top1_error();
  result.top5_error = counts.top5_error();
  result.confusion = confusion;
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

const std::vector<std::string>& metrics_csv_columns() {
  static const std::vector<std::string> columns{"kind",
                                                "step",
                                                "epoch",
                                                "loss",
                                                "lr",
                                                "train_top1_error",
                                                "train_top5_error",
                                                "val_loss",
                                                "val_top1_error",
                                                "val_top5_error",
                                                "lr_dropped_to",
                                                "images_per_s",
                                                "elapsed_s"};
  return columns;
}

std::string metrics_csv_header() {
  std::string line;
  for (const auto& column : metrics_csv_columns()) line += (line.empty() ? "" : ",") + column;
  return line;
}

std::string metrics_csv_row(const nlohmann::json& record) {
  std::string line;
  bool first = true;
  for (const auto& column : metrics_csv_columns()) {
    if (!first) line += ",";
    first = false;
    if (!record.contains(column)) continue;
    const auto& value = record[column];
    line += value.is_string() ? value.get<std::string>() : value.dump();
  }
  return line;
}

void write_metrics_csv(const std::string& jsonl, const std::string& csv) {
  std::ifstream in(jsonl);
  std::string text = metrics_csv_header() + "\n", line;
  while (std::getline(in, line)) {
    const auto record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (record.is_object()) text += metrics_csv_row(record) + "\n";
  }
  runtime::write_file_atomically(csv, text);
}

namespace {

std::string csv_path_of(const std::string& jsonl) {
  const std::string suffix = ".jsonl";
  const bool has_suffix = jsonl.size() > suffix.size() &&
                          jsonl.compare(jsonl.size() - suffix.size(), suffix.size(), suffix) == 0;
  return (has_suffix ? jsonl.substr(0, jsonl.size() - suffix.size()) : jsonl) + ".csv";
}

}  // namespace

MetricsLog::MetricsLog(const std::string& jsonl, bool append)
    : path_(jsonl), csv_path_(csv_path_of(jsonl)) {
  if (append) write_metrics_csv(path_, csv_path_);
  out_.open(path_, append ? std::ios::app : std::ios::trunc);
  if (!out_) throw std::runtime_error("cannot write metrics file '" + path_ + "'");
  csv_.open(csv_path_, append ? std::ios::app : std::ios::trunc);
  if (!csv_) throw std::runtime_error("cannot write metrics file '" + csv_path_ + "'");
  if (!append) csv_ << metrics_csv_header() << "\n";
}

void MetricsLog::write(const nlohmann::json& record) {
  out_ << record.dump() << "\n";
  out_.flush();
  if (!out_) {
    throw std::runtime_error("writing metrics file '" + path_ +
                             "' failed: " + std::strerror(errno));
  }
  csv_ << metrics_csv_row(record) << "\n";
  csv_.flush();
  if (!csv_) {
    throw std::runtime_error("writing metrics file '" + csv_path_ +
                             "' failed: " + std::strerror(errno));
  }
}

ProgressLine::ProgressLine(std::ostream& out)
    : out_(out),
      live_(&out == &std::cerr ? isatty(fileno(stderr)) != 0
                               : (&out == &std::cout && isatty(fileno(stdout)) != 0)) {}

void ProgressLine::update(const std::string& text) {
  if (!live_) {
    out_ << text << std::endl;
    return;
  }
  out_ << "\r" << text;
  if (text.size() < last_width_) out_ << std::string(last_width_ - text.size(), ' ');
  out_.flush();
  last_width_ = text.size();
}

void ProgressLine::print(const std::string& text) {
  if (live_ && last_width_ > 0) {
    out_ << "\r" << std::string(last_width_, ' ') << "\r";
    last_width_ = 0;
  }
  out_ << text << std::endl;
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto total = static_cast<int64_t>(std::llround(seconds));
  char text[32];
  if (total >= 3600) {
    std::snprintf(text, sizeof(text), "%lld:%02lld:%02lld", static_cast<long long>(total / 3600),
                  static_cast<long long>(total / 60 % 60), static_cast<long long>(total % 60));
  } else {
    std::snprintf(text, sizeof(text), "%lld:%02lld", static_cast<long long>(total / 60),
                  static_cast<long long>(total % 60));
  }
  return text;
}

}  // namespace alexnet::train
