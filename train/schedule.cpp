#include "train/schedule.h"

#include <cmath>
#include <stdexcept>

namespace alexnet::train {

LrSchedule::LrSchedule(const ScheduleConfig& options, double base_lr)
    : options_(options), base_lr_(base_lr) {}

double LrSchedule::lr(double epoch_position) const {
  if (options_.kind == ScheduleKind::kStep) {
    int64_t passed = 0;
    // A small tolerance so that a milestone at epoch 2 applies from the first step of epoch 2.
    for (double milestone : options_.milestones) passed += epoch_position + 1e-9 >= milestone;
    return base_lr_ * std::pow(options_.factor, static_cast<double>(passed));
  }
  if (options_.kind == ScheduleKind::kPlateau) {
    return base_lr_ * std::pow(options_.factor, static_cast<double>(drops_));
  }
  return base_lr_;
}

bool LrSchedule::observe(double val_error) {
  TORCH_CHECK(std::isfinite(val_error), "validation error is not finite: ", val_error);
  if (val_error < best_ - options_.threshold) {
    best_ = val_error;
    bad_epochs_ = 0;
    return false;
  }
  best_ = std::min(best_, val_error);
  if (options_.kind != ScheduleKind::kPlateau) return false;
  ++bad_epochs_;
  if (bad_epochs_ >= options_.patience && drops_ < options_.max_drops) {
    ++drops_;
    bad_epochs_ = 0;
    return true;
  }
  return false;
}

nlohmann::json LrSchedule::state() const {
  return {{"drops", drops_}, {"best", best_}, {"bad_epochs", bad_epochs_}};
}

void LrSchedule::load_state(const nlohmann::json& state) {
  for (const char* key : {"drops", "best", "bad_epochs"}) {
    if (!state.contains(key)) {
      throw std::runtime_error(std::string("schedule state has no key '") + key +
                               "': " + state.dump());
    }
  }
  drops_ = state.at("drops").get<int64_t>();
  best_ = state.at("best").get<double>();
  bad_epochs_ = state.at("bad_epochs").get<int64_t>();
}

}  // namespace alexnet::train
