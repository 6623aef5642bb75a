#include "draw/confusion_matrix.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "draw/text_fit.h"

namespace alexnet::draw {
namespace {

constexpr int kMatrixFont = cv::FONT_HERSHEY_SIMPLEX;
constexpr int64_t kTitleBand = 30, kMatrixMargin = 10;
const cv::Scalar kMatrixText(30, 30, 30), kMatrixBackground(255, 255, 255);
// The colour of a cell holding the whole row (RGB).
constexpr double kFull[3] = {8, 69, 148};


// `text` right-aligned in a box `width` x `height`, vertically centred.
cv::Mat label_box(const std::string& name, int width, int height) {
  cv::Mat box(height, width, CV_8UC3, kMatrixBackground);
  const auto [text, scale] = fit_text(name, width - 8, 0.45, /*min_scale=*/0.3);
  int baseline = 0;
  const auto size = cv::getTextSize(text, kMatrixFont, scale, 1, &baseline);
  cv::putText(box, text, cv::Point(width - 6 - size.width, (height + size.height) / 2), kMatrixFont,
              scale, kMatrixText, 1, cv::LINE_AA);
  return box;
}

void put_centred(cv::Mat& canvas, const std::string& text, cv::Point centre, int width,
                 const cv::Scalar& colour, double scale) {
  const auto [fitted, fitted_scale] = fit_text(text, width, scale, /*min_scale=*/0.3);
  int baseline = 0;
  const auto size = cv::getTextSize(fitted, kMatrixFont, fitted_scale, 1, &baseline);
  cv::putText(canvas, fitted, cv::Point(centre.x - size.width / 2, centre.y + size.height / 2),
              kMatrixFont, fitted_scale, colour, 1, cv::LINE_AA);
}

}  // namespace

std::pair<int64_t, int64_t> confusion_matrix_size(int64_t classes,
                                                  const ConfusionMatrixOptions& options) {
  TORCH_CHECK(classes >= 1 && classes <= 200, "confusion matrix: ", classes,
              " classes (1 to 200 can be drawn)");
  TORCH_CHECK(options.cell_size >= 16 && options.label_size >= 40,
              "confusion matrix: cell_size must be >= 16 and label_size >= 40, got ",
              options.cell_size, " and ", options.label_size);
  const int64_t side = classes * options.cell_size;
  return {kTitleBand + options.label_size + side + kMatrixMargin,
          options.label_size + side + kMatrixMargin};
}

torch::Tensor confusion_matrix_picture(const torch::Tensor& confusion,
                                       const std::vector<std::string>& class_names,
                                       const ConfusionMatrixOptions& options) {
  TORCH_CHECK(confusion.defined(), "confusion matrix: nothing was evaluated");
  TORCH_CHECK(confusion.dim() == 2 && confusion.size(0) == confusion.size(1),
              "confusion matrix: expected [classes, classes], got ", confusion.sizes());
  const int64_t classes = confusion.size(0);
  TORCH_CHECK(static_cast<int64_t>(class_names.size()) == classes,
              "confusion matrix: ", class_names.size(), " class names for ", classes, " classes");
  const auto [height, width] = confusion_matrix_size(classes, options);
  const auto counts = confusion.to(torch::kCPU, torch::kFloat64).contiguous();
  const auto rows = counts.sum(1);
  const auto share = counts / rows.clamp_min(1).unsqueeze(1);
  const auto count_at = counts.accessor<double, 2>();
  const auto share_at = share.accessor<double, 2>();

  cv::Mat canvas(static_cast<int>(height), static_cast<int>(width), CV_8UC3, kMatrixBackground);
  const int cell = static_cast<int>(options.cell_size),
            label = static_cast<int>(options.label_size);
  const int left = label, top = static_cast<int>(kTitleBand) + label;
  put_centred(canvas, options.title, cv::Point(static_cast<int>(width) / 2, 15),
              static_cast<int>(width) - 10, kMatrixText, 0.5);
  cv::putText(canvas, "true \\ predicted", cv::Point(6, top - 8), kMatrixFont, 0.4, kMatrixText, 1,
              cv::LINE_AA);
  for (int64_t i = 0; i < classes; ++i) {
    const int offset = static_cast<int>(i) * cell;
    const auto name = class_names[static_cast<size_t>(i)];
    label_box(name, label, cell).copyTo(canvas(cv::Rect(0, top + offset, label, cell)));
    cv::Mat rotated;
    cv::rotate(label_box(name, label, cell), rotated, cv::ROTATE_90_COUNTERCLOCKWISE);
    rotated.copyTo(canvas(cv::Rect(left + offset, top - label, cell, label)));
  }
  const bool two_lines = cell >= 44;
  for (int64_t r = 0; r < classes; ++r) {
    for (int64_t c = 0; c < classes; ++c) {
      const double v = share_at[r][c];
      // The canvas holds RGB, as the pictures of drawing.h do.
      cv::Scalar colour;
      for (int k = 0; k < 3; ++k) colour[k] = 255.0 - v * (255.0 - kFull[k]);
      const cv::Rect box(left + static_cast<int>(c) * cell, top + static_cast<int>(r) * cell, cell,
                         cell);
      cv::rectangle(canvas, box, colour, cv::FILLED);
      cv::rectangle(canvas, box, cv::Scalar(200, 200, 200), 1);
      const cv::Scalar ink = v > 0.5 ? kMatrixBackground : kMatrixText;
      char count[32], percent[32];
      std::snprintf(count, sizeof(count), "%.0f", count_at[r][c]);
      std::snprintf(percent, sizeof(percent), "%.0f%%", 100.0 * v);
      const cv::Point centre(box.x + cell / 2, box.y + cell / 2);
      if (two_lines) {
        put_centred(canvas, count, centre - cv::Point(0, cell / 6), cell - 6, ink, 0.45);
        put_centred(canvas, percent, centre + cv::Point(0, cell / 5), cell - 6, ink, 0.35);
      } else {
        put_centred(canvas, count, centre, cell - 4, ink, 0.4);
      }
    }
  }
  cv::rectangle(
      canvas,
      cv::Rect(left, top, static_cast<int>(classes) * cell, static_cast<int>(classes) * cell),
      kMatrixText, 1);
  return torch::from_blob(canvas.data, {height, width, 3}, torch::kUInt8).clone();
}

}  // namespace alexnet::draw
