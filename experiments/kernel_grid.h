#pragma once

#include <cstdint>
#include <utility>

#include <torch/torch.h>

namespace alexnet::experiments {

/// Layout of `kernel_grid`, the paper's Figure 3: the kernels of each column (block) in rows
/// of `tiles_per_row`, the first block above the second, a wider gap between blocks.
struct KernelGridOptions {
  /// Number of blocks the kernels are split into, in order (2: the paper's two columns, the
  /// first 48 kernels above the last 48). Must divide the number of kernels.
  TORCH_ARG(int64_t, blocks) = 2;
  TORCH_ARG(int64_t, tiles_per_row) = 16;
  /// Each kernel pixel becomes scale x scale image pixels (nearest neighbour).
  TORCH_ARG(int64_t, scale) = 4;
  /// Pixels between tiles, between blocks, and around the picture.
  TORCH_ARG(int64_t, gap) = 3;
  TORCH_ARG(int64_t, block_gap) = 18;
  TORCH_ARG(int64_t, margin) = 6;
  /// Grey level of the background (gaps and margins).
  TORCH_ARG(int64_t, background) = 255;
};

/// Draws first-layer kernels as tiles. weight: [K, C, kh, kw], any floating dtype, any device.
/// Each kernel is scaled to its own min..max range (0..255; a constant kernel is mid-grey);
/// C == 3 draws colour (RGB), any other C draws grey (the mean over channels; exact for C == 1).
/// Returns the picture, [H, W, 3] uint8 RGB on the CPU. Throws naming the bad shape or option.
torch::Tensor kernel_grid(const torch::Tensor& weight, const KernelGridOptions& options = {});

/// Top-left pixel (row, column) of kernel k's tile in the picture `kernel_grid` draws for
/// `kernels` kernels of kh x kw.
std::pair<int64_t, int64_t> kernel_tile_origin(int64_t k, int64_t kernels, int64_t kh, int64_t kw,
                                               const KernelGridOptions& options);

/// Size (height, width) of the picture `kernel_grid` draws.
std::pair<int64_t, int64_t> kernel_grid_size(int64_t kernels, int64_t kh, int64_t kw,
                                             const KernelGridOptions& options);

}  // namespace alexnet::experiments
