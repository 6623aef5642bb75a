#pragma once

// Pictures (PNG): tile grids, line charts and their composition. Compiled only when
// ALEXNET_WITH_OPENCV is 1; pictures are [H, W, 3] uint8 RGB tensors on the CPU until
// write_png encodes them.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace alexnet::draw {

/// Encodes a picture [H, W, 3] uint8 RGB (or [H, W] grey) as PNG at `path` (written to a
/// temporary file, then renamed). Throws naming the path when it cannot be written.
void write_png(const torch::Tensor& picture, const std::string& path);

/// Reads a PNG (or any image OpenCV decodes) back as [H, W, 3] uint8 RGB; throws naming the path.
torch::Tensor read_picture(const std::string& path);

using Rgb = std::array<uint8_t, 3>;

/// One tile of `tile_grid`: an image with text lines written under it.
struct Tile {
  /// [C, H, W] uint8, C = 1 or 3 (as data::Dataset::get returns).
  torch::Tensor image;
  std::vector<std::string> lines;
  /// Frame drawn around the image, if any.
  std::optional<Rgb> frame;
};

struct TileGridOptions {
  /// Images are scaled to fit tile_size x tile_size (nearest neighbour when enlarging, area
  /// averaging when shrinking).
  int64_t tile_size = 96;
  /// Text lines under each tile.
  int64_t lines = 2;
  /// Pixels between tiles; the first tile of each row (the query) is set apart by 3 gaps.
  int64_t gap = 8;
  /// Whether the first tile of each row is set apart (false: a plain grid).
  bool first_apart = true;
};

/// Draws rows of tiles, by default the first tile of each row set apart (the paper's Figure 4
/// layout: a query, then its neighbours). Rows may differ in length. Returns [H, W, 3] uint8 RGB of
/// size given by `tile_grid_size`.
torch::Tensor tile_grid(const std::vector<std::vector<Tile>>& rows,
                        const TileGridOptions& options = {});

/// Size (height, width) of the picture tile_grid draws for `rows` rows of at most `columns`
/// tiles.
std::pair<int64_t, int64_t> tile_grid_size(int64_t rows, int64_t columns,
                                           const TileGridOptions& options = {});

/// One curve of a line chart.
struct Series {
  std::string name;
  std::vector<double> x, y;
  /// Unset: series_colour(index of the series).
  std::optional<Rgb> colour = std::nullopt;
  bool dashed = false;
  /// Point markers (hollow on dashed series); unset: when the series has at most 40 points.
  std::optional<bool> markers = std::nullopt;
  /// Line width in pixels; 0 draws the markers only.
  int thickness = 2;
};

struct ChartOptions {
  std::string title, x_label, y_label;
  int64_t width = 640, height = 440;
  /// Axis ranges; unset: from the data (y padded by 5%, x from 0 when all x >= 0).
  std::optional<double> x_min, x_max, y_min, y_max;
  /// Dashed horizontal reference lines (e.g. the target training error), with labels.
  std::vector<std::pair<double, std::string>> reference_lines;
  /// Multiply y tick labels by this (100: show fractions as percent).
  double y_tick_scale = 1.0;
  /// Dotted vertical lines at these x (e.g. the epochs where the learning rate dropped), with
  /// labels written at their foot.
  std::vector<std::pair<double, std::string>> vertical_markers;
};

/// Draws the series as lines with point markers, axes with ticks, a grid and a legend of the
/// series that have points ("no data" in the plot when none has). Returns [height, width, 3]
/// uint8 RGB. Throws when a series' x and y differ in length.
torch::Tensor line_chart(const std::vector<Series>& series, const ChartOptions& options);

/// Places pictures side by side (top-aligned, white padding). Each [H, W, 3] uint8.
torch::Tensor side_by_side(const std::vector<torch::Tensor>& pictures, int64_t gap = 10);

/// Adds a white band `height` pixels tall above `picture` ([H, W, 3] uint8) with `title`
/// centred in it. Returns [H + height, W, 3] uint8.
torch::Tensor with_title(const torch::Tensor& picture, const std::string& title,
                         int64_t height = 60);

/// The colour of series i in line_chart.
Rgb series_colour(size_t i);

}  // namespace alexnet::draw
