#pragma once

// Training curves drawn with draw::line_chart; compiled only when ALEXNET_WITH_OPENCV is on.

#include <string>

namespace alexnet::train {

/// Width and height in pixels of the PNG that plot_training_curves writes.
constexpr int kCurvesWidth = 1400;
constexpr int kCurvesHeight = 560;

/// Draws loss and top-1/top-5 error (train and validation) against epoch from a metrics.jsonl
/// file into a PNG of kCurvesWidth x kCurvesHeight pixels: a title and two panels (loss;
/// error in percent), each with ticked axes and a legend.
///
/// Reads the trainer's records, one JSON object per line: {"kind": "step" | "epoch", "epoch"
/// (fractional for steps), "step", "loss", "train_top1_error", "train_top5_error" and, for
/// epochs, "val_loss", "val_top1_error", "val_top5_error" (errors as fractions 0..1)};
/// missing or null fields are skipped. Train curves come from the step records when there are
/// any (else from the epoch records), validation curves from the epoch records; epochs where
/// the learning rate dropped ("lr_dropped_to") are marked.
///
/// Writes atomically (temporary file, rename). Throws std::runtime_error naming the file when
/// the metrics file is missing or holds a line that is not JSON (other than a truncated last
/// line), or when the PNG cannot be written.
void plot_training_curves(const std::string& metrics_jsonl, const std::string& png_path);

}  // namespace alexnet::train
