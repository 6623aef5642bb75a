#include "data/jpeg_encode.h"

#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>

#if ALEXNET_WITH_OPENCV
// jpeglib.h needs <cstdio> first.
#include <jpeglib.h>
#endif

namespace alexnet::data {

#if ALEXNET_WITH_OPENCV
namespace {

struct EncoderErrors {
  jpeg_error_mgr manager;  // first: libjpeg hands &manager to the callbacks
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = {};
};

void encoder_on_error(j_common_ptr info) {
  auto* errors = reinterpret_cast<EncoderErrors*>(info->err);
  (*info->err->format_message)(info, errors->message);
  std::longjmp(errors->jump, 1);
}

// Compresses interleaved RGB rows into `*out` (malloc'ed by libjpeg). Holds no object with a
// destructor, so the jump on an error skips only libjpeg's frames. False on error.
bool compress(const uint8_t* rgb, int height, int width, int quality, unsigned char** out,
              unsigned long* out_size, EncoderErrors& errors) {
  jpeg_compress_struct info{};
  info.err = jpeg_std_error(&errors.manager);
  errors.manager.error_exit = encoder_on_error;
  if (setjmp(errors.jump)) {
    jpeg_destroy_compress(&info);
    return false;
  }
  jpeg_create_compress(&info);
  jpeg_mem_dest(&info, out, out_size);
  info.image_width = static_cast<JDIMENSION>(width);
  info.image_height = static_cast<JDIMENSION>(height);
  info.input_components = 3;
  info.in_color_space = JCS_RGB;
  jpeg_set_defaults(&info);
  jpeg_set_quality(&info, quality, /*force_baseline=*/TRUE);
  info.optimize_coding = TRUE;
  jpeg_start_compress(&info, TRUE);
  while (info.next_scanline < info.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(rgb) + static_cast<size_t>(info.next_scanline) * 3 * width;
    jpeg_write_scanlines(&info, &row, 1);
  }
  jpeg_finish_compress(&info);
  jpeg_destroy_compress(&info);
  return true;
}

}  // namespace

bool can_encode_jpeg() { return true; }

std::vector<uint8_t> encode_jpeg(const torch::Tensor& image, int64_t quality) {
  if (quality < 1 || quality > 100) {
    throw std::invalid_argument("JPEG quality must be in 1..100, got " + std::to_string(quality));
  }
  if (image.dim() != 3 || image.size(0) != 3 || image.scalar_type() != torch::kByte ||
      image.size(1) < 1 || image.size(2) < 1 || image.size(1) > 65500 || image.size(2) > 65500) {
    std::ostringstream what;
    what << "encode_jpeg needs a [3, H, W] uint8 image with sides in 1..65500, got "
         << image.scalar_type() << " " << image.sizes();
    throw std::invalid_argument(what.str());
  }
  const auto interleaved = image.permute({1, 2, 0}).contiguous();  // [H, W, 3]
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  EncoderErrors errors;
  const bool ok =
      compress(interleaved.data_ptr<uint8_t>(), static_cast<int>(image.size(1)),
               static_cast<int>(image.size(2)), static_cast<int>(quality), &buffer, &size, errors);
  std::vector<uint8_t> bytes;
  if (ok) bytes.assign(buffer, buffer + size);
  std::free(buffer);
  if (!ok) throw std::runtime_error(std::string("JPEG encoding failed: ") + errors.message);
  return bytes;
}

#else

bool can_encode_jpeg() { return false; }

std::vector<uint8_t> encode_jpeg(const torch::Tensor& /*image*/, int64_t /*quality*/) {
  throw std::runtime_error(
      "this build has no libjpeg to write JPEG packs (configure with -DALEXNET_WITH_OPENCV=ON, "
      "or prepare --format raw)");
}

#endif

}  // namespace alexnet::data
