#pragma once

#include <cstdint>
#include <vector>

#include <torch/torch.h>

namespace alexnet::data {

/// Whether this build encodes JPEGs (libjpeg comes with the OpenCV option).
bool can_encode_jpeg();

/// Encodes an image, [3, H, W] uint8 RGB, as a baseline JPEG of `quality` (1..100) with
/// libjpeg's defaults (YCbCr, 4:2:0 chroma subsampling, integer DCT) and optimised Huffman
/// tables. The same image and quality give the same bytes. Throws std::invalid_argument for
/// another shape or dtype or a quality outside 1..100, std::runtime_error when the build has
/// no libjpeg.
std::vector<uint8_t> encode_jpeg(const torch::Tensor& image, int64_t quality);

}  // namespace alexnet::data
