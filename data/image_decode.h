#pragma once

#include <cstdint>
#include <string>

#include <torch/torch.h>

#include "data/dataset.h"

namespace alexnet::data {

/// Whether this build decodes image files (CMake option ALEXNET_WITH_OPENCV).
bool can_decode_images();

/// Reads and decodes an image file into [3, H, W] uint8 RGB. Grey images are replicated to
/// three channels, alpha is dropped (as PIL's convert("RGB")), 16-bit samples are scaled to
/// 8 bits, CMYK JPEGs are converted; EXIF orientation is ignored, as torchvision ignores it.
/// size > 0: the shorter side is rescaled to `size` and the central size x size square kept
/// (the paper's preparation); large JPEGs are then decoded at 1/2, 1/4 or 1/8 scale by the
/// JPEG decoder itself, never below `size`. size == 0: the image as stored.
/// max_pixels > 0: an image whose header declares more pixels (width x height) is refused
/// before it is decoded (JPEG, PNG, BMP, PNM, TIFF and WebP headers are read here; other
/// formats OpenCV decodes are refused after decoding, within OpenCV's own limit of 2^30
/// pixels, see OPENCV_IO_MAX_IMAGE_PIXELS).
/// JPEGs are decoded with libjpeg, and any warning it reports about the data (corrupt
/// entropy-coded data, extraneous bytes, premature end of file) makes the file undecodable;
/// bytes after the end-of-image marker are ignored. Other formats are decoded by OpenCV.
/// Throws DecodeError naming the file when it cannot be read, is not a regular file (a FIFO
/// is never opened for reading), is empty, truncated, corrupt, larger than max_pixels or not
/// a decodable image, or when the build has no OpenCV.
torch::Tensor decode_image_file(const std::string& path, int64_t size,
                                int64_t max_pixels = kDefaultMaxImagePixels);

/// Decodes a JPEG held in memory (a record of a JPEG pack) into [3, H, W] uint8 RGB at its full
/// size, with the checks of decode_image_file (any warning about the data refuses it). `name`
/// names the record in errors. height, width > 0: a JPEG whose header declares other sides is
/// refused before it is decoded. Throws DecodeError, also when the build has no libjpeg.
torch::Tensor decode_jpeg_bytes(const uint8_t* data, size_t size, const std::string& name,
                                int64_t height = 0, int64_t width = 0);

/// What an image file's first bytes declare, read without decoding.
struct ImageHeader {
  /// "JPEG", "PNG", "BMP", "PNM", "TIFF" or "WebP"; empty when not recognised.
  std::string format;
  /// 0 when not recognised or not found.
  int64_t height = 0;
  int64_t width = 0;
};

/// Reads the format and dimensions of a JPEG, PNG, BMP, PNM (P1-P6), TIFF or WebP file from
/// its bytes (the whole file, or at least its header).
ImageHeader read_image_header(const uint8_t* data, size_t size);

/// The dimensions (height, width) that a JPEG's frame header declares, or {0, 0} when
/// `data` is not a JPEG or has no frame header.
std::pair<int64_t, int64_t> jpeg_dimensions(const uint8_t* data, size_t size);

}  // namespace alexnet::data
