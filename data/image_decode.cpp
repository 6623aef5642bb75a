#include "data/image_decode.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "data/dataset.h"

#if ALEXNET_WITH_OPENCV
// jpeglib.h needs <cstdio> first; jerror.h holds the message codes.
#include <jerror.h>
#include <jpeglib.h>
#include <opencv2/core.hpp>
#include <opencv2/core/utils/logger.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#endif

namespace alexnet::data {
namespace {

uint32_t big_endian_16(const uint8_t* p) { return (uint32_t{p[0]} << 8) | p[1]; }
uint32_t big_endian_32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}
uint32_t little_endian_16(const uint8_t* p) { return (uint32_t{p[1]} << 8) | p[0]; }
uint32_t little_endian_24(const uint8_t* p) {
  return (uint32_t{p[2]} << 16) | (uint32_t{p[1]} << 8) | p[0];
}
uint32_t little_endian_32(const uint8_t* p) {
  return (uint32_t{p[3]} << 24) | (uint32_t{p[2]} << 16) | (uint32_t{p[1]} << 8) | p[0];
}

bool starts_with(const uint8_t* data, size_t size, const char* prefix, size_t length) {
  return size >= length && std::memcmp(data, prefix, length) == 0;
}

// P1..P6: magic, then width and height as decimal tokens separated by whitespace and
// '#' comments.
ImageHeader pnm_header(const uint8_t* data, size_t size) {
  ImageHeader header{"PNM", 0, 0};
  size_t pos = 2;
  int64_t values[2] = {0, 0};
  for (int64_t& value : values) {
    while (pos < size && (std::isspace(data[pos]) || data[pos] == '#')) {
      if (data[pos] == '#') {
        while (pos < size && data[pos] != '\n') ++pos;
      } else {
        ++pos;
      }
    }
    const size_t start = pos;
    while (pos < size && std::isdigit(data[pos]) && pos - start < 10) {
      value = value * 10 + (data[pos] - '0');
      ++pos;
    }
    if (pos == start) return header;
  }
  header.width = values[0];
  header.height = values[1];
  return header;
}

// The ImageWidth (256) and ImageLength (257) entries of the first image file directory.
ImageHeader tiff_header(const uint8_t* data, size_t size) {
  ImageHeader header{"TIFF", 0, 0};
  const bool little = data[0] == 'I';
  auto u16 = [&](size_t at) {
    return little ? little_endian_16(data + at) : big_endian_16(data + at);
  };
  auto u32 = [&](size_t at) {
    return little ? little_endian_32(data + at) : big_endian_32(data + at);
  };
  const size_t directory = u32(4);
  if (directory > size || size - directory < 2) return header;
  const size_t entries = u16(directory);
  for (size_t k = 0; k < entries; ++k) {
    const size_t entry = directory + 2 + 12 * k;
    if (entry + 12 > size) break;
    const uint32_t tag = u16(entry), type = u16(entry + 2);
    if (tag != 256 && tag != 257) continue;
    const int64_t value = type == 3 ? u16(entry + 8) : type == 4 ? u32(entry + 8) : 0;
    (tag == 256 ? header.width : header.height) = value;
  }
  return header;
}

// The VP8 (lossy), VP8L (lossless) or VP8X (extended) chunk after "RIFF....WEBP".
ImageHeader webp_header(const uint8_t* data, size_t size) {
  ImageHeader header{"WebP", 0, 0};
  if (size < 30) return header;
  if (std::memcmp(data + 12, "VP8 ", 4) == 0 && data[23] == 0x9D && data[24] == 0x01 &&
      data[25] == 0x2A) {
    header.width = little_endian_16(data + 26) & 0x3FFF;
    header.height = little_endian_16(data + 28) & 0x3FFF;
  } else if (std::memcmp(data + 12, "VP8L", 4) == 0 && data[20] == 0x2F) {
    const uint32_t bits = little_endian_32(data + 21);
    header.width = (bits & 0x3FFF) + 1;
    header.height = ((bits >> 14) & 0x3FFF) + 1;
  } else if (std::memcmp(data + 12, "VP8X", 4) == 0) {
    header.width = int64_t{little_endian_24(data + 24)} + 1;
    header.height = int64_t{little_endian_24(data + 27)} + 1;
  }
  return header;
}

}  // namespace

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

ImageHeader read_image_header(const uint8_t* data, size_t size) {
  if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) {
    const auto [height, width] = jpeg_dimensions(data, size);
    return {"JPEG", height, width};
  }
  if (starts_with(data, size, "\x89PNG\r\n\x1a\n", 8)) {
    if (size < 24 || std::memcmp(data + 12, "IHDR", 4) != 0) return {"PNG", 0, 0};
    return {"PNG", big_endian_32(data + 20), big_endian_32(data + 16)};
  }
  if (starts_with(data, size, "BM", 2)) {
    if (size < 26) return {"BMP", 0, 0};
    if (little_endian_32(data + 14) == 12) {  // OS/2 BITMAPCOREHEADER: 16-bit sides
      return {"BMP", little_endian_16(data + 20), little_endian_16(data + 18)};
    }
    // BITMAPINFOHEADER and later: signed 32-bit sides, a negative height for top-down rows.
    const auto width = static_cast<int32_t>(little_endian_32(data + 18));
    const auto height = static_cast<int32_t>(little_endian_32(data + 22));
    return {"BMP", std::abs(int64_t{height}), std::abs(int64_t{width})};
  }
  if (size >= 3 && data[0] == 'P' && data[1] >= '1' && data[1] <= '6' && std::isspace(data[2])) {
    return pnm_header(data, size);
  }
  if (starts_with(data, size, "II*\0", 4) || starts_with(data, size, "MM\0*", 4)) {
    return size >= 8 ? tiff_header(data, size) : ImageHeader{"TIFF", 0, 0};
  }
  if (size >= 16 && std::memcmp(data, "RIFF", 4) == 0 && std::memcmp(data + 8, "WEBP", 4) == 0) {
    return webp_header(data, size);
  }
  return {};
}

#if ALEXNET_WITH_OPENCV
namespace {

// The whole file. Opened without blocking and checked to be a regular file first: opening a
// FIFO for reading would wait for a writer forever.
std::vector<uint8_t> read_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) throw DecodeError("cannot read " + path + ": " + std::strerror(errno));
  struct FileCloser {
    int fd;
    ~FileCloser() { ::close(fd); }
  } closer{fd};
  struct stat info {};
  if (::fstat(fd, &info) != 0)
    throw DecodeError("cannot read " + path + ": " + std::strerror(errno));
  if (!S_ISREG(info.st_mode)) throw DecodeError("cannot read " + path + ": not a regular file");
  if (info.st_size == 0) throw DecodeError("cannot decode " + path + ": the file is empty");
  std::vector<uint8_t> bytes(static_cast<size_t>(info.st_size));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw DecodeError("cannot read " + path + ": " + std::strerror(errno));
    if (n == 0) throw DecodeError("cannot read " + path + ": the file shrank while it was read");
    done += static_cast<size_t>(n);
  }
  return bytes;
}

// Sides are below 2^32, so their product fits in 64 bits unsigned. `source` says where the
// sides come from ("its header declares", "it decodes to").
void check_pixels(const std::string& path, int64_t height, int64_t width, int64_t max_pixels,
                  const char* source = "its header declares") {
  if (max_pixels > 0 && width > 0 && height > max_pixels / width) {
    throw DecodeError("cannot decode " + path + ": " + source + " " + std::to_string(width) +
                      " x " + std::to_string(height) + " (width x height) = " +
                      std::to_string(static_cast<uint64_t>(height) * static_cast<uint64_t>(width)) +
                      " pixels, more than the limit of " + std::to_string(max_pixels) +
                      " (max_image_pixels)");
  }
}

// libjpeg's error manager: a fatal error jumps back to the decoder's current call; a warning
// about the data (corrupt or missing entropy-coded data) does the same, as the image is
// refused anyway. Warnings about metadata only are ignored.
struct JpegErrors {
  jpeg_error_mgr manager;  // first: libjpeg hands &manager to the callbacks
  std::jmp_buf jump;
  bool warning = false;
  int code = 0;
  char message[JMSG_LENGTH_MAX] = {};
};

void jpeg_on_error(j_common_ptr info) {
  auto* errors = reinterpret_cast<JpegErrors*>(info->err);
  errors->code = info->err->msg_code;
  (*info->err->format_message)(info, errors->message);
  std::longjmp(errors->jump, 1);
}

void jpeg_on_message(j_common_ptr info, int level) {
  if (level >= 0) return;  // trace messages
  const int code = info->err->msg_code;
  if (code == JWRN_ADOBE_XFORM || code == JWRN_JFIF_MAJOR || code == JWRN_BOGUS_ICC ||
      code == JWRN_NOT_SEQUENTIAL) {
    return;
  }
  auto* errors = reinterpret_cast<JpegErrors*>(info->err);
  errors->warning = true;
  errors->code = code;
  (*info->err->format_message)(info, errors->message);
  std::longjmp(errors->jump, 1);
}

void jpeg_ignore_output(j_common_ptr) {}

// A JPEG in memory, decoded with libjpeg. Each method that calls libjpeg sets the jump
// point itself and holds no object with a destructor, so a jump skips only libjpeg's frames.
class JpegDecoder {
 public:
  JpegDecoder(const uint8_t* data, size_t size) {
    info_.err = jpeg_std_error(&errors_.manager);
    errors_.manager.error_exit = jpeg_on_error;
    errors_.manager.emit_message = jpeg_on_message;
    errors_.manager.output_message = jpeg_ignore_output;
    if (setjmp(errors_.jump)) return;  // created_ stays false
    jpeg_create_decompress(&info_);
    jpeg_mem_src(&info_, data, static_cast<unsigned long>(size));
    created_ = true;
  }
  ~JpegDecoder() { jpeg_destroy_decompress(&info_); }
  JpegDecoder(const JpegDecoder&) = delete;
  JpegDecoder& operator=(const JpegDecoder&) = delete;

  bool read_header() {
    if (!created_) return false;
    if (setjmp(errors_.jump)) return false;
    jpeg_read_header(&info_, TRUE);
    return true;
  }

  // RGB output (CMYK for CMYK and YCCK files, converted by the caller) at 1 / scale_denom.
  bool set_output(unsigned scale_denom) {
    if (setjmp(errors_.jump)) return false;
    cmyk_ = info_.jpeg_color_space == JCS_CMYK || info_.jpeg_color_space == JCS_YCCK;
    info_.out_color_space = cmyk_ ? JCS_CMYK : JCS_RGB;
    info_.scale_num = 1;
    info_.scale_denom = scale_denom;
    jpeg_calc_output_dimensions(&info_);
    return true;
  }

  // Decodes every row into `out`, rows `stride` bytes apart, and reads on to the end-of-image
  // marker, so that damage anywhere in the data is reported.
  bool decode(uint8_t* out, size_t stride) {
    if (setjmp(errors_.jump)) return false;
    jpeg_start_decompress(&info_);
    while (info_.output_scanline < info_.output_height) {
      JSAMPROW row = out + static_cast<size_t>(info_.output_scanline) * stride;
      jpeg_read_scanlines(&info_, &row, 1);
    }
    jpeg_finish_decompress(&info_);
    return true;
  }

  const jpeg_decompress_struct& info() const { return info_; }
  bool cmyk() const { return cmyk_; }

  // Why the last call failed.
  std::string problem() const {
    if (errors_.code == JWRN_JPEG_EOF)
      return std::string("truncated JPEG (") + errors_.message + ")";
    if (errors_.warning) return std::string("corrupt JPEG data (") + errors_.message + ")";
    return std::string("not a decodable JPEG (") + errors_.message + ")";
  }

 private:
  jpeg_decompress_struct info_{};
  JpegErrors errors_;
  bool created_ = false;
  bool cmyk_ = false;
};

// Decodes a JPEG to RGB (channel order R, G, B), at a reduced scale when `size` allows.
// expected_height, expected_width > 0: a JPEG whose header declares other sides is refused
// before it is decoded.
cv::Mat decode_jpeg(const uint8_t* data, size_t data_size, const std::string& path, int64_t size,
                    int64_t max_pixels, int64_t expected_height = 0, int64_t expected_width = 0) {
  JpegDecoder decoder(data, data_size);
  auto fail = [&] { throw DecodeError("cannot decode " + path + ": " + decoder.problem()); };
  if (!decoder.read_header()) fail();
  const int64_t height = decoder.info().image_height, width = decoder.info().image_width;
  check_pixels(path, height, width, max_pixels);
  if (expected_height > 0 && (height != expected_height || width != expected_width)) {
    throw DecodeError("cannot decode " + path + ": the JPEG is " + std::to_string(width) + " x " +
                      std::to_string(height) + " (width x height), expected " +
                      std::to_string(expected_width) + " x " + std::to_string(expected_height));
  }
  // The decoder rounds reduced sizes up, so shorter / scale >= size keeps enough pixels.
  unsigned scale = 1;
  const int64_t shorter = std::min(height, width);
  while (size > 0 && scale < 8 && shorter >= 2 * scale * size) scale *= 2;
  if (!decoder.set_output(scale)) fail();
  const int rows = static_cast<int>(decoder.info().output_height);
  const int cols = static_cast<int>(decoder.info().output_width);
  cv::Mat decoded(rows, cols, decoder.cmyk() ? CV_8UC4 : CV_8UC3);
  if (!decoder.decode(decoded.data, decoded.step)) fail();
  if (!decoder.cmyk()) return decoded;
  // Adobe's CMYK JPEGs store inverted values: R = (255 - C') (255 - K') / 255 with C', K'
  // the ink amounts, that is R = C K / 255 in the stored values.
  cv::Mat rgb(rows, cols, CV_8UC3);
  for (int y = 0; y < rows; ++y) {
    const uint8_t* in = decoded.ptr<uint8_t>(y);
    uint8_t* out = rgb.ptr<uint8_t>(y);
    for (int x = 0; x < cols; ++x, in += 4, out += 3) {
      for (int c = 0; c < 3; ++c) out[c] = static_cast<uint8_t>((in[c] * in[3] + 127) / 255);
    }
  }
  return rgb;
}

// Decodes any other format with OpenCV, to BGR.
cv::Mat decode_with_opencv(const std::vector<uint8_t>& bytes, const std::string& path,
                           int64_t max_pixels) {
  const ImageHeader header = read_image_header(bytes.data(), bytes.size());
  check_pixels(path, header.height, header.width, max_pixels);
  cv::Mat bgr;
  try {
    const cv::Mat buffer(1, static_cast<int>(bytes.size()), CV_8UC1,
                         const_cast<uint8_t*>(bytes.data()));
    bgr = cv::imdecode(buffer, cv::IMREAD_COLOR | cv::IMREAD_IGNORE_ORIENTATION);
  } catch (const cv::Exception& e) {
    throw DecodeError("cannot decode " + path + ": " + e.what());
  }
  if (bgr.empty() || bgr.type() != CV_8UC3) {
    throw DecodeError("cannot decode " + path + ": not an image, or corrupt or truncated");
  }
  if (header.height == 0 || header.width == 0) {  // a header this file does not read
    check_pixels(path, bgr.rows, bgr.cols, max_pixels, "it decodes to");
  }
  return bgr;
}

// [3, H, W] uint8 RGB from an interleaved 3-channel image in RGB or BGR order.
torch::Tensor to_tensor(const cv::Mat& image, bool bgr) {
  const int64_t height = image.rows, width = image.cols;
  auto tensor = torch::empty({3, height, width}, torch::kByte);
  uint8_t* planes[3];
  planes[0] = tensor.data_ptr<uint8_t>();
  planes[1] = planes[0] + height * width;
  planes[2] = planes[1] + height * width;
  if (bgr) std::swap(planes[0], planes[2]);
  for (int64_t y = 0; y < height; ++y) {
    const uint8_t* row = image.ptr<uint8_t>(static_cast<int>(y));
    const int64_t base = y * width;
    for (int64_t x = 0; x < width; ++x) {
      planes[0][base + x] = row[3 * x];
      planes[1][base + x] = row[3 * x + 1];
      planes[2][base + x] = row[3 * x + 2];
    }
  }
  return tensor;
}

}  // namespace

bool can_decode_images() { return true; }

torch::Tensor decode_image_file(const std::string& path, int64_t size, int64_t max_pixels) {
  static std::once_flag configure;
  std::call_once(configure, [] {
    cv::setNumThreads(0);  // the loader's workers are the parallelism
    cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_ERROR);
  });
  const std::vector<uint8_t> bytes = read_file(path);
  const bool jpeg = bytes.size() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF;
  cv::Mat image = jpeg ? decode_jpeg(bytes.data(), bytes.size(), path, size, max_pixels)
                       : decode_with_opencv(bytes, path, max_pixels);
  if (size > 0) {
    // The paper's preparation: shorter side to `size`, central square. Resizing only the
    // central square of the source gives that square directly.
    const int shorter = std::min(image.rows, image.cols);
    const int top = static_cast<int>(std::nearbyint((image.rows - shorter) / 2.0));
    const int left = static_cast<int>(std::nearbyint((image.cols - shorter) / 2.0));
    cv::Mat square = image(cv::Rect(left, top, shorter, shorter));
    if (shorter != size) {
      cv::Mat resized;
      cv::resize(square, resized, cv::Size(static_cast<int>(size), static_cast<int>(size)), 0, 0,
                 shorter > size ? cv::INTER_AREA : cv::INTER_LINEAR);
      image = resized;
    } else {
      image = square;
    }
  }
  return to_tensor(image, /*bgr=*/!jpeg);
}

torch::Tensor decode_jpeg_bytes(const uint8_t* data, size_t size, const std::string& name,
                                int64_t height, int64_t width) {
  if (size < 3 || data[0] != 0xFF || data[1] != 0xD8 || data[2] != 0xFF) {
    throw DecodeError("cannot decode " + name + ": not a JPEG (no start-of-image marker)");
  }
  return to_tensor(decode_jpeg(data, size, name, /*size=*/0, /*max_pixels=*/0, height, width),
                   /*bgr=*/false);
}

#else

bool can_decode_images() { return false; }

torch::Tensor decode_jpeg_bytes(const uint8_t* /*data*/, size_t /*size*/, const std::string& name,
                                int64_t /*height*/, int64_t /*width*/) {
  throw DecodeError("cannot decode " + name +
                    ": this build has no libjpeg (configure with -DALEXNET_WITH_OPENCV=ON, or "
                    "prepare a raw pack)");
}

torch::Tensor decode_image_file(const std::string& path, int64_t /*size*/, int64_t /*max_pixels*/) {
  throw DecodeError("cannot decode " + path +
                    ": this build has no OpenCV (configure with -DALEXNET_WITH_OPENCV=ON, or "
                    "use a packed file written by `alexnet prepare`)");
}

#endif

}  // namespace alexnet::data
