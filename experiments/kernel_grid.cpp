#include "experiments/kernel_grid.h"

namespace alexnet::experiments {
namespace {

void check_layout(int64_t kernels, int64_t kh, int64_t kw, const KernelGridOptions& options) {
  TORCH_CHECK(kernels > 0 && kh > 0 && kw > 0, "kernel grid: no kernels to draw (", kernels,
              " kernels of ", kh, " x ", kw, ")");
  TORCH_CHECK(options.blocks() >= 1 && kernels % options.blocks() == 0,
              "kernel grid: blocks=", options.blocks(), " does not divide the ", kernels,
              " kernels");
  TORCH_CHECK(options.tiles_per_row() >= 1, "kernel grid: tiles_per_row must be positive, got ",
              options.tiles_per_row());
  TORCH_CHECK(options.scale() >= 1, "kernel grid: scale must be positive, got ", options.scale());
  TORCH_CHECK(options.gap() >= 0 && options.block_gap() >= 0 && options.margin() >= 0,
              "kernel grid: gaps and margin must not be negative");
  TORCH_CHECK(options.background() >= 0 && options.background() <= 255,
              "kernel grid: background must be a grey level 0..255, got ", options.background());
}

int64_t rows_per_block(int64_t kernels, const KernelGridOptions& options) {
  const int64_t per_block = kernels / options.blocks();
  return (per_block + options.tiles_per_row() - 1) / options.tiles_per_row();
}

}  // namespace

std::pair<int64_t, int64_t> kernel_grid_size(int64_t kernels, int64_t kh, int64_t kw,
                                             const KernelGridOptions& options) {
  check_layout(kernels, kh, kw, options);
  const int64_t per_block = kernels / options.blocks();
  const int64_t columns = std::min(per_block, options.tiles_per_row());
  const int64_t rows = rows_per_block(kernels, options);
  const int64_t tile_h = kh * options.scale(), tile_w = kw * options.scale();
  const int64_t block_h = rows * tile_h + (rows - 1) * options.gap();
  const int64_t height = 2 * options.margin() + options.blocks() * block_h +
                         (options.blocks() - 1) * options.block_gap();
  const int64_t width = 2 * options.margin() + columns * tile_w + (columns - 1) * options.gap();
  return {height, width};
}

std::pair<int64_t, int64_t> kernel_tile_origin(int64_t k, int64_t kernels, int64_t kh, int64_t kw,
                                               const KernelGridOptions& options) {
  check_layout(kernels, kh, kw, options);
  TORCH_CHECK(k >= 0 && k < kernels, "kernel grid: kernel ", k, " out of range (", kernels, ")");
  const int64_t per_block = kernels / options.blocks();
  const int64_t rows = rows_per_block(kernels, options);
  const int64_t tile_h = kh * options.scale(), tile_w = kw * options.scale();
  const int64_t block = k / per_block, within = k % per_block;
  const int64_t row = within / options.tiles_per_row(), column = within % options.tiles_per_row();
  const int64_t block_top =
      options.margin() + block * (rows * tile_h + (rows - 1) * options.gap() + options.block_gap());
  return {block_top + row * (tile_h + options.gap()),
          options.margin() + column * (tile_w + options.gap())};
}

torch::Tensor kernel_grid(const torch::Tensor& weight, const KernelGridOptions& options) {
  TORCH_CHECK(weight.defined() && weight.dim() == 4,
              "kernel grid: expected a conv weight [K, C, kh, kw], got ",
              weight.defined() ? weight.sizes() : torch::IntArrayRef{});
  TORCH_CHECK(weight.is_floating_point(), "kernel grid: expected a floating weight, got ",
              weight.scalar_type());
  const int64_t kernels = weight.size(0), channels = weight.size(1);
  const int64_t kh = weight.size(2), kw = weight.size(3);
  const auto [height, width] = kernel_grid_size(kernels, kh, kw, options);

  auto w = weight.detach().to(torch::kCPU, torch::kFloat);
  w = channels == 3 ? w : w.mean(1, /*keepdim=*/true).expand({kernels, 3, kh, kw});
  const auto flat = w.reshape({kernels, -1});
  const auto low = std::get<0>(flat.min(1)).view({kernels, 1, 1, 1});
  const auto high = std::get<0>(flat.max(1)).view({kernels, 1, 1, 1});
  const auto range = high - low;
  auto scaled = torch::where(range > 0, (w - low) / range.clamp_min(1e-30) * 255.0,
                             torch::full_like(w, 127.5));
  // [K, 3, kh, kw] -> [K, kh * scale, kw * scale, 3] uint8.
  auto tiles = scaled.round()
                   .clamp(0, 255)
                   .to(torch::kUInt8)
                   .repeat_interleave(options.scale(), /*dim=*/2)
                   .repeat_interleave(options.scale(), /*dim=*/3)
                   .permute({0, 2, 3, 1});

  auto picture = torch::full({height, width, 3}, options.background(), torch::kUInt8);
  const int64_t tile_h = kh * options.scale(), tile_w = kw * options.scale();
  for (int64_t k = 0; k < kernels; ++k) {
    const auto [top, left] = kernel_tile_origin(k, kernels, kh, kw, options);
    picture.slice(0, top, top + tile_h).slice(1, left, left + tile_w).copy_(tiles[k]);
  }
  return picture;
}

}  // namespace alexnet::experiments
