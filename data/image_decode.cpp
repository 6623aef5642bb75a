#include "data/image_decode.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <mutex>
#include <vector>

#include "data/dataset.h"

#if ALEXNET_WITH_OPENCV
#include <opencv2/core.hpp>
#include <opencv2/core/utils/logger.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#endif

namespace alexnet::data {

#if ALEXNET_WITH_OPENCV
namespace {

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw DecodeError("cannot read " + path + ": " + std::strerror(errno));
  const auto size = static_cast<std::streamoff>(in.tellg());
  if (size < 0) throw DecodeError("cannot read " + path + " (not a regular file?)");
  if (size == 0) throw DecodeError("cannot decode " + path + ": the file is empty");
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  in.seekg(0);
  if (!in.read(reinterpret_cast<char*>(bytes.data()), size)) {
    throw DecodeError("cannot read " + path + ": read error");
  }
  return bytes;
}

bool is_jpeg(const std::vector<uint8_t>& bytes) {
  return bytes.size() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF;
}

// A JPEG cut short loses its end-of-image marker; libjpeg then pads the image with grey and
// only warns. Trailing bytes after the marker are common, so look at the last 4 KiB.
bool jpeg_has_end_marker(const std::vector<uint8_t>& bytes) {
  const size_t from = bytes.size() > 4096 ? bytes.size() - 4096 : 2;
  for (size_t i = bytes.size() - 1; i > from; --i) {
    if (bytes[i] == 0xD9 && bytes[i - 1] == 0xFF) return true;
  }
  return false;
}

}  // namespace
#endif

std::pair<int64_t, int64_t> jpeg_dimensions(const uint8_t* data, size_t size) {
  if (size < 4 || data[0] != 0xFF || data[1] != 0xD8) return {0, 0};
  size_t pos = 2;
  while (pos + 4 <= size) {
    if (data[pos] != 0xFF) return {0, 0};
    uint8_t marker = data[pos + 1];
    if (marker == 0xFF) {  // fill byte
      ++pos;
      continue;
    }
    if (marker == 0xD8 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) {
      pos += 2;
      continue;
    }
    const size_t length = (size_t{data[pos + 2]} << 8) | data[pos + 3];
    const bool frame =
        marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
    if (frame) {
      if (pos + 9 > size) return {0, 0};
      const int64_t height = (int64_t{data[pos + 5]} << 8) | data[pos + 6];
      const int64_t width = (int64_t{data[pos + 7]} << 8) | data[pos + 8];
      return {height, width};
    }
    if (marker == 0xDA || marker == 0xD9 || length < 2) return {0, 0};
    pos += 2 + length;
  }
  return {0, 0};
}

#if ALEXNET_WITH_OPENCV

bool can_decode_images() { return true; }

torch::Tensor decode_image_file(const std::string& path, int64_t size) {
  static std::once_flag configure;
  std::call_once(configure, [] {
    cv::setNumThreads(0);  // the loader's workers are the parallelism
    cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_ERROR);
  });
  const std::vector<uint8_t> bytes = read_file(path);
  int flags = cv::IMREAD_COLOR | cv::IMREAD_IGNORE_ORIENTATION;
  if (is_jpeg(bytes)) {
    if (!jpeg_has_end_marker(bytes)) {
      throw DecodeError("cannot decode " + path + ": truncated JPEG (no end-of-image marker)");
    }
    const auto [h, w] = jpeg_dimensions(bytes.data(), bytes.size());
    const int64_t shorter = std::min(h, w);
    if (size > 0 && shorter > 0) {
      // The decoder rounds reduced sizes up, so shorter / scale >= size keeps enough pixels.
      if (shorter >= 8 * size) {
        flags = cv::IMREAD_REDUCED_COLOR_8 | cv::IMREAD_IGNORE_ORIENTATION;
      } else if (shorter >= 4 * size) {
        flags = cv::IMREAD_REDUCED_COLOR_4 | cv::IMREAD_IGNORE_ORIENTATION;
      } else if (shorter >= 2 * size) {
        flags = cv::IMREAD_REDUCED_COLOR_2 | cv::IMREAD_IGNORE_ORIENTATION;
      }
    }
  }
  cv::Mat bgr;
  try {
    const cv::Mat buffer(1, static_cast<int>(bytes.size()), CV_8UC1,
                         const_cast<uint8_t*>(bytes.data()));
    bgr = cv::imdecode(buffer, flags);
  } catch (const cv::Exception& e) {
    throw DecodeError("cannot decode " + path + ": " + e.what());
  }
  if (bgr.empty() || bgr.type() != CV_8UC3) {
    throw DecodeError("cannot decode " + path + ": not an image, or corrupt or truncated");
  }
  if (size > 0) {
    // The paper's preparation: shorter side to `size`, central size x size square. Resizing
    // only the central square of the source gives that square directly.
    const int shorter = std::min(bgr.rows, bgr.cols);
    const int top = static_cast<int>(std::nearbyint((bgr.rows - shorter) / 2.0));
    const int left = static_cast<int>(std::nearbyint((bgr.cols - shorter) / 2.0));
    cv::Mat square = bgr(cv::Rect(left, top, shorter, shorter));
    if (shorter != size) {
      cv::Mat resized;
      cv::resize(square, resized, cv::Size(static_cast<int>(size), static_cast<int>(size)), 0, 0,
                 shorter > size ? cv::INTER_AREA : cv::INTER_LINEAR);
      bgr = resized;
    } else {
      bgr = square;
    }
  }
  const int64_t height = bgr.rows, width = bgr.cols;
  auto image = torch::empty({3, height, width}, torch::kByte);
  uint8_t* r = image.data_ptr<uint8_t>();
  uint8_t* g = r + height * width;
  uint8_t* b = g + height * width;
  for (int64_t y = 0; y < height; ++y) {
    const uint8_t* row = bgr.ptr<uint8_t>(static_cast<int>(y));
    const int64_t base = y * width;
    for (int64_t x = 0; x < width; ++x) {
      b[base + x] = row[3 * x];
      g[base + x] = row[3 * x + 1];
      r[base + x] = row[3 * x + 2];
    }
  }
  return image;
}

#else

bool can_decode_images() { return false; }

torch::Tensor decode_image_file(const std::string& path, int64_t /*size*/) {
  throw DecodeError("cannot decode " + path +
                    ": this build has no OpenCV (configure with -DALEXNET_WITH_OPENCV=ON, or "
                    "use a packed file written by `alexnet prepare`)");
}

#endif

}  // namespace alexnet::data
