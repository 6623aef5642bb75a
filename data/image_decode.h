#pragma once

#include <cstdint>
#include <string>

#include <torch/torch.h>

namespace alexnet::data {

/// Whether this build decodes image files (CMake option ALEXNET_WITH_OPENCV).
bool can_decode_images();

/// Reads and decodes an image file into [3, H, W] uint8 RGB. Grey images are replicated to
/// three channels, alpha is dropped (as PIL's convert("RGB")), 16-bit samples are scaled to
/// 8 bits, CMYK JPEGs are converted; EXIF orientation is ignored, as torchvision ignores it.
/// size > 0: the shorter side is rescaled to `size` and the central size x size square kept
/// (the paper's preparation); large JPEGs are then decoded at 1/2, 1/4 or 1/8 scale by the
/// JPEG decoder itself, never below `size`. size == 0: the image as stored.
/// Throws DecodeError naming the file when it cannot be read, is empty, truncated (a JPEG
/// without its end marker) or not a decodable image, or when the build has no OpenCV.
torch::Tensor decode_image_file(const std::string& path, int64_t size);

/// The dimensions (height, width) that a JPEG's frame header declares, or {0, 0} when
/// `data` is not a JPEG or has no frame header.
std::pair<int64_t, int64_t> jpeg_dimensions(const uint8_t* data, size_t size);

}  // namespace alexnet::data
