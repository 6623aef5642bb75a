#pragma once

#include <nlohmann/json.hpp>

#include "train/config.h"

namespace alexnet::train {

/// The learning rate over a run: constant, step drops at given epochs, or drops when the
/// validation error reaches a plateau (the paper).
class LrSchedule {
 public:
  LrSchedule(const ScheduleConfig& options, double base_lr);

  /// The learning rate at a position in training, in epochs (fractions allowed: step
  /// `s` of an epoch of `n` steps in epoch `e` is e + s / n).
  double lr(double epoch_position) const;

  /// Records one validation error (top-1, 0..1) at an epoch end. Plateau schedules drop the
  /// rate by `factor` when the error has not improved on the best by more than `threshold`
  /// for `patience` epochs, at most `max_drops` times. Returns true when the rate dropped.
  bool observe(double val_error);

  /// How many times the rate has dropped (plateau) or milestones passed at `epoch_position`.
  int64_t drops() const { return drops_; }
  double best_error() const { return best_; }

  /// {"drops", "best", "bad_epochs"}: all a resumed run needs.
  nlohmann::json state() const;
  /// Restores what state() returned; throws naming a missing key.
  void load_state(const nlohmann::json& state);

 private:
  ScheduleConfig options_;
  double base_lr_;
  int64_t drops_ = 0;
  double best_ = 2.0;  // above any error
  int64_t bad_epochs_ = 0;
};

}  // namespace alexnet::train
