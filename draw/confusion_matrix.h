#pragma once

// A confusion matrix drawn as a picture a person reads at a glance. Compiled only when
// ALEXNET_WITH_OPENCV is 1.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

namespace alexnet::draw {

struct ConfusionMatrixOptions {
  /// Side of one cell in pixels; cells of at least 44 pixels show the count and the row
  /// percentage, smaller ones the count only.
  int64_t cell_size = 48;
  /// Pixels kept for the class names left of the rows and above the columns.
  int64_t label_size = 120;
  /// Written above the matrix; the top-left corner names the axes (true, predicted).
  std::string title = "confusion matrix";
};

/// Draws `confusion` ([classes, classes] counts of any integer or floating dtype, rows = true
/// class, columns = predicted class) with the class names on both axes and each cell shaded by
/// its share of the row (white 0%, dark blue 100%) with its count written in. Returns
/// [H, W, 3] uint8 RGB of the size confusion_matrix_size gives. Throws when the matrix is not
/// square, the names do not match its size, or it has more than 200 classes.
torch::Tensor confusion_matrix_picture(const torch::Tensor& confusion,
                                       const std::vector<std::string>& class_names,
                                       const ConfusionMatrixOptions& options = {});

/// Size (height, width) of the picture confusion_matrix_picture draws for `classes` classes.
std::pair<int64_t, int64_t> confusion_matrix_size(int64_t classes,
                                                  const ConfusionMatrixOptions& options = {});

}  // namespace alexnet::draw
