#include "draw/drawing.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <stdexcept>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "draw/text_fit.h"
#include "runtime/atomic_file.h"

namespace alexnet::draw {
namespace {

const cv::Scalar kBlack(30, 30, 30), kWhite(255, 255, 255), kGrid(225, 225, 225), kDark(90, 90, 90);
constexpr int kFont = cv::FONT_HERSHEY_SIMPLEX;
constexpr int64_t kLineHeight = 15;

cv::Scalar scalar(const Rgb& c) { return cv::Scalar(c[0], c[1], c[2]); }

// An RGB cv::Mat sharing nothing with the tensor.
cv::Mat to_mat(const torch::Tensor& picture) {
  TORCH_CHECK(picture.scalar_type() == torch::kUInt8 &&
                  (picture.dim() == 2 || (picture.dim() == 3 && picture.size(2) == 3)),
              "expected a picture [H, W, 3] or [H, W] uint8, got ", picture.sizes(), " ",
              picture.scalar_type());
  auto rgb = (picture.dim() == 2 ? picture.unsqueeze(2).expand({-1, -1, 3}) : picture)
                 .to(torch::kCPU)
                 .contiguous();
  cv::Mat view(static_cast<int>(rgb.size(0)), static_cast<int>(rgb.size(1)), CV_8UC3,
               rgb.data_ptr<uint8_t>());
  return view.clone();
}

torch::Tensor to_tensor(const cv::Mat& mat) {
  CV_Assert(mat.type() == CV_8UC3 && mat.isContinuous());
  return torch::from_blob(const_cast<uint8_t*>(mat.ptr<uint8_t>()), {mat.rows, mat.cols, 3},
                          torch::kUInt8)
      .clone();
}

// [C, H, W] uint8 (C = 1 or 3) -> RGB cv::Mat fitted into size x size.
cv::Mat fit_image(const torch::Tensor& image, int64_t size) {
  TORCH_CHECK(image.dim() == 3 && (image.size(0) == 1 || image.size(0) == 3),
              "tile image: expected [C, H, W] with C = 1 or 3, got ", image.sizes());
  auto hwc = image.to(torch::kCPU).clamp(0, 255).to(torch::kUInt8).permute({1, 2, 0});
  cv::Mat mat = to_mat(hwc.size(2) == 1 ? hwc.squeeze(2) : hwc);
  const double scale =
      static_cast<double>(size) / static_cast<double>(std::max(mat.rows, mat.cols));
  const int h = std::max(1, static_cast<int>(std::lround(mat.rows * scale)));
  const int w = std::max(1, static_cast<int>(std::lround(mat.cols * scale)));
  cv::Mat out;
  cv::resize(mat, out, cv::Size(w, h), 0, 0, scale >= 1 ? cv::INTER_NEAREST : cv::INTER_AREA);
  return out;
}

// Writes text fitted into `width` pixels (smaller font, then cut with "..").
void put_fitted(cv::Mat& canvas, std::string text, cv::Point origin, int width,
                const cv::Scalar& colour) {
  const auto [fitted, scale] = fit_text(std::move(text), width, 0.42, /*min_scale=*/0.32);
  int baseline = 0;
  const int fitted_width = cv::getTextSize(fitted, kFont, scale, 1, &baseline).width;
  const int left = origin.x + std::max(0, (width - fitted_width) / 2);
  cv::putText(canvas, fitted, cv::Point(left, origin.y), kFont, scale, colour, 1, cv::LINE_AA);
}

double nice_step(double range, int target_ticks) {
  const double raw = range / std::max(1, target_ticks);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0}) {
    if (raw <= m * magnitude) return m * magnitude;
  }
  return 10 * magnitude;
}

std::string tick_text(double value, double step) {
  char buffer[32];
  const int decimals =
      step >= 1 ? 0 : std::min(4, static_cast<int>(std::ceil(-std::log10(step) - 1e-9)));
  std::snprintf(buffer, sizeof(buffer), "%.*f", decimals, std::abs(value) < 1e-12 ? 0.0 : value);
  return buffer;
}

// A line of `on`-pixel dashes `on + off` apart; `phase` carries the pattern across segments.
void dashed_line(cv::Mat& canvas, cv::Point2d a, cv::Point2d b, const cv::Scalar& colour,
                 int thickness = 1, double on = 6, double off = 6, double* phase = nullptr) {
  double local_phase = 0.0;
  double& at = phase ? *phase : local_phase;
  const double length = std::hypot(b.x - a.x, b.y - a.y);
  double t = 0.0;
  while (t < length) {
    const bool drawing = at < on;
    const double step = std::min(drawing ? on - at : on + off - at, length - t);
    if (drawing) {
      cv::line(canvas, a + (b - a) * (t / length), a + (b - a) * ((t + step) / length), colour,
               thickness, cv::LINE_AA);
    }
    t += step;
    at = std::fmod(at + step, on + off);
  }
}

void draw_marker(cv::Mat& canvas, cv::Point2d centre, const cv::Scalar& colour, bool hollow) {
  cv::circle(canvas, centre, 4, hollow ? kWhite : colour, cv::FILLED, cv::LINE_AA);
  if (hollow) cv::circle(canvas, centre, 4, colour, 2, cv::LINE_AA);
}

}  // namespace

std::pair<std::string, double> fit_text(std::string text, int width, double scale,
                                        double min_scale) {
  int baseline = 0;
  auto width_of = [&](const std::string& t, double s) {
    return cv::getTextSize(t, kFont, s, 1, &baseline).width;
  };
  while (scale > min_scale && width_of(text, scale) > width) scale -= 0.02;
  while (text.size() > 2 && width_of(text, scale) > width) {
    text = text.substr(0, text.size() - 3) + "..";
  }
  return {text, scale};
}

void write_png(const torch::Tensor& picture, const std::string& path) {
  cv::Mat bgr;
  cv::cvtColor(to_mat(picture), bgr, cv::COLOR_RGB2BGR);
  std::vector<uchar> bytes;
  try {
    if (!cv::imencode(".png", bgr, bytes)) throw std::runtime_error("the PNG encoder failed");
  } catch (const cv::Exception& e) {
    throw std::runtime_error("cannot write PNG " + path + ": " + e.what());
  }
  runtime::write_file_atomically(
      path, std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

torch::Tensor read_picture(const std::string& path) {
  cv::Mat bgr = cv::imread(path, cv::IMREAD_COLOR);
  if (bgr.empty()) throw std::runtime_error("cannot read picture " + path);
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return to_tensor(rgb);
}

Rgb series_colour(size_t i) {
  static const std::vector<Rgb> colours{{31, 119, 180},  {214, 39, 40},   {44, 160, 44},
                                        {255, 127, 14},  {148, 103, 189}, {140, 86, 75},
                                        {227, 119, 194}, {23, 190, 207}};
  return colours[i % colours.size()];
}

std::pair<int64_t, int64_t> tile_grid_size(int64_t rows, int64_t columns,
                                           const TileGridOptions& options) {
  TORCH_CHECK(rows >= 1 && columns >= 1, "tile grid: nothing to draw (", rows, " rows, ", columns,
              " columns)");
  TORCH_CHECK(options.tile_size >= 8 && options.gap >= 0 && options.lines >= 0,
              "tile grid: tile_size must be >= 8, gap and lines >= 0");
  const int64_t caption = options.lines * kLineHeight + (options.lines ? 4 : 0);
  const int64_t height =
      2 * options.gap + rows * (options.tile_size + caption) + (rows - 1) * options.gap;
  const int64_t width = 2 * options.gap + columns * options.tile_size +
                        (columns - 1) * options.gap +
                        (columns > 1 && options.first_apart ? 2 * options.gap : 0);
  return {height, width};
}

torch::Tensor tile_grid(const std::vector<std::vector<Tile>>& rows,
                        const TileGridOptions& options) {
  size_t columns = 0;
  for (const auto& row : rows) columns = std::max(columns, row.size());
  const auto [height, width] =
      tile_grid_size(static_cast<int64_t>(rows.size()), static_cast<int64_t>(columns), options);
  cv::Mat canvas(static_cast<int>(height), static_cast<int>(width), CV_8UC3, kWhite);
  const int tile = static_cast<int>(options.tile_size), gap = static_cast<int>(options.gap);
  const int caption = static_cast<int>(options.lines * kLineHeight + (options.lines ? 4 : 0));
  for (size_t r = 0; r < rows.size(); ++r) {
    const int top = gap + static_cast<int>(r) * (tile + caption + gap);
    for (size_t c = 0; c < rows[r].size(); ++c) {
      const auto& item = rows[r][c];
      const int apart = c > 0 && options.first_apart ? 2 * gap : 0;
      const int left = gap + static_cast<int>(c) * (tile + gap) + apart;
      cv::rectangle(canvas, cv::Rect(left, top, tile, tile), cv::Scalar(240, 240, 240), cv::FILLED);
      if (item.image.defined()) {
        const cv::Mat image = fit_image(item.image, options.tile_size);
        const int x = left + (tile - image.cols) / 2, y = top + (tile - image.rows) / 2;
        image.copyTo(canvas(cv::Rect(x, y, image.cols, image.rows)));
      }
      if (item.frame) {
        cv::rectangle(canvas, cv::Rect(left - 3, top - 3, tile + 6, tile + 6), scalar(*item.frame),
                      3);
      }
      for (size_t l = 0; l < item.lines.size() && l < static_cast<size_t>(options.lines); ++l) {
        put_fitted(canvas, item.lines[l],
                   cv::Point(left, top + tile + 4 + static_cast<int>((l + 1) * kLineHeight) - 3),
                   tile, l == 0 ? kBlack : kDark);
      }
    }
    if (rows[r].size() > 1 && options.first_apart) {
      const int x = gap + tile + (3 * gap) / 2;
      cv::line(canvas, cv::Point(x, top), cv::Point(x, top + tile + caption - 2), kDark, 1);
    }
  }
  return to_tensor(canvas);
}

namespace {

// The value ranges of a chart and the plot rectangle they map onto, in canvas pixels.
struct ChartFrame {
  double x_low = 0, x_high = 1, y_low = 0, y_high = 1;
  int left = 0, right = 0, top = 0, bottom = 0;

  int px(double x) const {
    return left + static_cast<int>(std::lround((x - x_low) / (x_high - x_low) * (right - left)));
  }
  int py(double y) const {
    return bottom - static_cast<int>(std::lround((y - y_low) / (y_high - y_low) * (bottom - top)));
  }
};

// Ranges from the data, the markers and reference lines, then the options' fixed limits.
ChartFrame chart_frame(const std::vector<Series>& series, const ChartOptions& options) {
  double x_low = std::numeric_limits<double>::infinity(), x_high = -x_low;
  double y_low = x_low, y_high = -x_low;
  for (const auto& s : series) {
    TORCH_CHECK(s.x.size() == s.y.size(), "line chart: series '", s.name, "' has ", s.x.size(),
                " x values and ", s.y.size(), " y values");
    for (size_t i = 0; i < s.x.size(); ++i) {
      x_low = std::min(x_low, s.x[i]);
      x_high = std::max(x_high, s.x[i]);
      y_low = std::min(y_low, s.y[i]);
      y_high = std::max(y_high, s.y[i]);
    }
  }
  if (!std::isfinite(x_low)) x_low = x_high = y_low = y_high = 0;
  for (const auto& [x, label] : options.vertical_markers) x_high = std::max(x_high, x);
  for (const auto& [y, label] : options.reference_lines) {
    y_low = std::min(y_low, y);
    y_high = std::max(y_high, y);
  }
  if (x_low >= 0) x_low = 0;
  const double y_pad = 0.05 * std::max(1e-9, y_high - y_low);
  ChartFrame frame;
  frame.y_low = options.y_min.value_or(y_low - y_pad);
  frame.y_high = options.y_max.value_or(y_high + y_pad);
  frame.x_low = options.x_min.value_or(x_low);
  frame.x_high = options.x_max.value_or(x_high);
  if (frame.x_high <= frame.x_low) frame.x_high = frame.x_low + 1;
  if (frame.y_high <= frame.y_low) frame.y_high = frame.y_low + 1;
  frame.left = 64;
  frame.right = static_cast<int>(options.width) - 16;
  frame.top = 36;
  frame.bottom = static_cast<int>(options.height) - 48;
  return frame;
}

// Grid lines with tick labels, and the plot's border.
void draw_axes(cv::Mat& canvas, const ChartFrame& f, const ChartOptions& options) {
  const double x_step = nice_step(f.x_high - f.x_low, 6), y_step = nice_step(f.y_high - f.y_low, 6);
  int baseline = 0;
  for (double x = std::ceil(f.x_low / x_step) * x_step; x <= f.x_high + 1e-9 * x_step;
       x += x_step) {
    cv::line(canvas, cv::Point(f.px(x), f.top), cv::Point(f.px(x), f.bottom), kGrid, 1);
    const std::string text = tick_text(x, x_step);
    const auto size = cv::getTextSize(text, kFont, 0.4, 1, &baseline);
    cv::putText(canvas, text, cv::Point(f.px(x) - size.width / 2, f.bottom + 16), kFont, 0.4,
                kBlack, 1, cv::LINE_AA);
  }
  for (double y = std::ceil(f.y_low / y_step) * y_step; y <= f.y_high + 1e-9 * y_step;
       y += y_step) {
    cv::line(canvas, cv::Point(f.left, f.py(y)), cv::Point(f.right, f.py(y)), kGrid, 1);
    const std::string text = tick_text(y * options.y_tick_scale, y_step * options.y_tick_scale);
    const auto size = cv::getTextSize(text, kFont, 0.4, 1, &baseline);
    cv::putText(canvas, text, cv::Point(f.left - 6 - size.width, f.py(y) + 4), kFont, 0.4, kBlack,
                1, cv::LINE_AA);
  }
  cv::rectangle(canvas, cv::Point(f.left, f.top), cv::Point(f.right, f.bottom), kBlack, 1);
}

// Dashed horizontal reference lines and dotted vertical markers, each with its label.
void draw_guides(cv::Mat& canvas, const ChartFrame& f, const ChartOptions& options) {
  int baseline = 0;
  for (const auto& [y, label] : options.reference_lines) {
    if (y < f.y_low || y > f.y_high) continue;
    dashed_line(canvas, cv::Point(f.left, f.py(y)), cv::Point(f.right, f.py(y)), kDark);
    cv::putText(canvas, label, cv::Point(f.left + 6, f.py(y) - 5), kFont, 0.4, kDark, 1,
                cv::LINE_AA);
  }
  const cv::Scalar marker_grey(150, 150, 150);
  for (const auto& [x, label] : options.vertical_markers) {
    if (x < f.x_low || x > f.x_high) continue;
    dashed_line(canvas, cv::Point(f.px(x), f.top), cv::Point(f.px(x), f.bottom), marker_grey, 1, 3,
                5);
    const auto size = cv::getTextSize(label, kFont, 0.4, 1, &baseline);
    cv::putText(canvas, label, cv::Point(f.px(x) - 4 - size.width, f.bottom - 8), kFont, 0.4,
                marker_grey, 1, cv::LINE_AA);
  }
}

cv::Scalar colour_of(const std::vector<Series>& series, size_t s) {
  return scalar(series[s].colour.value_or(series_colour(s)));
}

bool has_markers(const Series& s) {
  return s.markers.value_or(s.x.size() <= 40) || s.x.size() == 1;
}

// The series' lines and point markers, clipped to the plot rectangle.
void draw_series(cv::Mat& canvas, const ChartFrame& f, const std::vector<Series>& series) {
  cv::Mat plot = canvas(cv::Rect(f.left, f.top, f.right - f.left + 1, f.bottom - f.top + 1));
  for (size_t s = 0; s < series.size(); ++s) {
    const cv::Scalar colour = colour_of(series, s);
    std::vector<cv::Point2d> points;
    for (size_t i = 0; i < series[s].x.size(); ++i) {
      points.emplace_back(f.px(series[s].x[i]) - f.left, f.py(series[s].y[i]) - f.top);
    }
    double phase = 0.0;
    for (size_t i = 1; series[s].thickness > 0 && i < points.size(); ++i) {
      if (series[s].dashed) {
        dashed_line(plot, points[i - 1], points[i], colour, series[s].thickness, 10, 6, &phase);
      } else {
        cv::line(plot, points[i - 1], points[i], colour, series[s].thickness, cv::LINE_AA);
      }
    }
    if (has_markers(series[s])) {
      for (const auto& p : points) draw_marker(plot, p, colour, series[s].dashed);
    }
  }
}

// The legend of the series with points, top right inside the plot; "no data" when none has.
void draw_legend(cv::Mat& canvas, const ChartFrame& f, const std::vector<Series>& series) {
  int baseline = 0;
  std::vector<size_t> shown;
  int legend_width = 0;
  for (size_t s = 0; s < series.size(); ++s) {
    if (series[s].x.empty()) continue;
    shown.push_back(s);
    legend_width =
        std::max(legend_width, cv::getTextSize(series[s].name, kFont, 0.45, 1, &baseline).width);
  }
  if (shown.empty()) {
    const auto size = cv::getTextSize("no data", kFont, 0.7, 1, &baseline);
    cv::putText(
        canvas, "no data",
        cv::Point((f.left + f.right - size.width) / 2, (f.top + f.bottom + size.height) / 2), kFont,
        0.7, kDark, 1, cv::LINE_AA);
    return;
  }
  const int legend_left = f.right - legend_width - 52, legend_top = f.top + 8;
  const cv::Rect box(legend_left - 6, legend_top - 4, legend_width + 52,
                     static_cast<int>(shown.size()) * 18 + 6);
  cv::rectangle(canvas, box, kWhite, cv::FILLED);
  cv::rectangle(canvas, box, kDark, 1);
  for (size_t row = 0; row < shown.size(); ++row) {
    const Series& s = series[shown[row]];
    const cv::Scalar colour = colour_of(series, shown[row]);
    const int y = legend_top + 10 + static_cast<int>(row) * 18;
    const cv::Point2d a(legend_left, y), b(legend_left + 32, y);
    if (s.thickness > 0 && s.dashed) {
      dashed_line(canvas, a, b, colour, s.thickness, 10, 6);
    } else if (s.thickness > 0) {
      cv::line(canvas, a, b, colour, s.thickness, cv::LINE_AA);
    }
    if (has_markers(s)) draw_marker(canvas, (a + b) * 0.5, colour, s.dashed);
    cv::putText(canvas, s.name, cv::Point(legend_left + 38, y + 5), kFont, 0.45, kBlack, 1,
                cv::LINE_AA);
  }
}

// The title above the plot, the x label below it and the y label rotated to its left.
void draw_titles(cv::Mat& canvas, const ChartFrame& f, const ChartOptions& options) {
  int baseline = 0;
  const auto title_size = cv::getTextSize(options.title, kFont, 0.55, 1, &baseline);
  cv::putText(canvas, options.title, cv::Point((canvas.cols - title_size.width) / 2, 22), kFont,
              0.55, kBlack, 1, cv::LINE_AA);
  const auto x_size = cv::getTextSize(options.x_label, kFont, 0.45, 1, &baseline);
  cv::putText(canvas, options.x_label,
              cv::Point((f.left + f.right - x_size.width) / 2, canvas.rows - 12), kFont, 0.45,
              kBlack, 1, cv::LINE_AA);
  const auto y_size = cv::getTextSize(options.y_label, kFont, 0.45, 1, &baseline);
  cv::Mat label(y_size.height + 8, y_size.width + 4, CV_8UC3, kWhite);
  cv::putText(label, options.y_label, cv::Point(2, y_size.height + 2), kFont, 0.45, kBlack, 1,
              cv::LINE_AA);
  cv::Mat rotated;
  cv::rotate(label, rotated, cv::ROTATE_90_COUNTERCLOCKWISE);
  const int label_top = std::max(0, (f.top + f.bottom - rotated.rows) / 2);
  if (rotated.rows + label_top <= canvas.rows) {
    rotated.copyTo(canvas(cv::Rect(2, label_top, rotated.cols, rotated.rows)));
  }
}

}  // namespace

torch::Tensor line_chart(const std::vector<Series>& series, const ChartOptions& options) {
  TORCH_CHECK(options.width >= 200 && options.height >= 150, "line chart: ", options.width, " x ",
              options.height, " is too small (at least 200 x 150)");
  const ChartFrame frame = chart_frame(series, options);
  cv::Mat canvas(static_cast<int>(options.height), static_cast<int>(options.width), CV_8UC3,
                 kWhite);
  draw_axes(canvas, frame, options);
  draw_guides(canvas, frame, options);
  draw_series(canvas, frame, series);
  draw_legend(canvas, frame, series);
  draw_titles(canvas, frame, options);
  return to_tensor(canvas);
}

torch::Tensor with_title(const torch::Tensor& picture, const std::string& title, int64_t height) {
  TORCH_CHECK(picture.dim() == 3 && picture.size(2) == 3 && picture.scalar_type() == torch::kUInt8,
              "with_title: expected [H, W, 3] uint8, got ", picture.sizes());
  TORCH_CHECK(height >= 20, "with_title: a band of ", height, " pixels is too low (at least 20)");
  cv::Mat band(static_cast<int>(height), static_cast<int>(picture.size(1)), CV_8UC3, kWhite);
  double scale = 0.8;
  int baseline = 0;
  while (scale > 0.4 && cv::getTextSize(title, kFont, scale, 2, &baseline).width > band.cols - 20) {
    scale -= 0.05;
  }
  const auto size = cv::getTextSize(title, kFont, scale, 2, &baseline);
  cv::putText(band, title, cv::Point((band.cols - size.width) / 2, (band.rows + size.height) / 2),
              kFont, scale, kBlack, 2, cv::LINE_AA);
  return torch::cat({to_tensor(band), picture.to(torch::kCPU)}, /*dim=*/0);
}

torch::Tensor side_by_side(const std::vector<torch::Tensor>& pictures, int64_t gap) {
  TORCH_CHECK(!pictures.empty(), "side_by_side: no pictures");
  int64_t height = 0, width = 0;
  for (const auto& p : pictures) {
    TORCH_CHECK(p.dim() == 3 && p.size(2) == 3 && p.scalar_type() == torch::kUInt8,
                "side_by_side: expected [H, W, 3] uint8, got ", p.sizes());
    height = std::max(height, p.size(0));
    width += p.size(1);
  }
  width += gap * static_cast<int64_t>(pictures.size() - 1);
  auto out = torch::full({height, width, 3}, 255, torch::kUInt8);
  int64_t left = 0;
  for (const auto& p : pictures) {
    out.slice(0, 0, p.size(0)).slice(1, left, left + p.size(1)).copy_(p);
    left += p.size(1) + gap;
  }
  return out;
}

}  // namespace alexnet::draw
