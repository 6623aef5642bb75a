#include "data/idx.h"

#include <unistd.h>
#if ALEXNET_WITH_ZLIB
#include <zlib.h>
#endif

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

namespace alexnet::data {
namespace {

#if !ALEXNET_WITH_ZLIB
// Without zlib, the five calls IdxFile makes read the file as it is; a gzip-compressed file
// is refused when opened.
using gzFile = std::FILE*;

gzFile gzopen(const char* path, const char* mode) {
  std::FILE* file = std::fopen(path, mode);
  if (file == nullptr) return nullptr;
  unsigned char magic[2] = {0, 0};
  const size_t n = std::fread(magic, 1, 2, file);
  if (n == 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
    std::fclose(file);
    throw std::runtime_error(std::string("IDX file ") + path +
                             " is gzip-compressed, but this build has no zlib (configured "
                             "without zlib1g-dev): decompress it with gunzip first");
  }
  std::rewind(file);
  return file;
}
int gzread(gzFile file, void* out, unsigned bytes) {
  const size_t n = std::fread(out, 1, bytes, file);
  return std::ferror(file) ? -1 : static_cast<int>(n);
}
int gzclose(gzFile file) { return std::fclose(file); }
const char* gzerror(gzFile, int* code) {
  *code = errno;
  return std::strerror(errno);
}
int gzdirect(gzFile) { return 1; }
#endif

// Deflate inflates at most 1032 bytes out of one: a gzip file of N bytes cannot hold more
// than 1032 N bytes of data.
constexpr uint64_t kMaxDeflateRatio = 1032;

std::string hex(uint32_t value) {
  char text[16];
  std::snprintf(text, sizeof(text), "0x%08x", value);
  return text;
}

// One IDX file, raw or gzip-compressed: the header is read and checked when it is opened,
// the data only as far as the header declares.
class IdxFile {
 public:
  // `fields` names the dimensions in the header's order (e.g. count, rows, columns).
  IdxFile(const std::string& path, uint32_t magic, std::vector<std::string> fields)
      : path_(path), fields_(std::move(fields)) {
    std::error_code error;
    if (!std::filesystem::exists(path, error)) {
      throw std::runtime_error("IDX file " + path + " does not exist");
    }
    if (!std::filesystem::is_regular_file(path, error)) {
      throw std::runtime_error("IDX file " + path + " is not a regular file");
    }
    const uint64_t file_bytes = std::filesystem::file_size(path, error);
    if (error) throw std::runtime_error("cannot read IDX file " + path + ": " + error.message());
    file_ = gzopen(path.c_str(), "rb");
    if (file_ == nullptr) throw std::runtime_error("cannot open IDX file " + path);
    try {
      read_header(magic, file_bytes);
    } catch (...) {
      gzclose(file_);
      throw;
    }
  }
  ~IdxFile() { gzclose(file_); }
  IdxFile(const IdxFile&) = delete;
  IdxFile& operator=(const IdxFile&) = delete;

  const std::vector<int64_t>& dims() const { return dims_; }
  uint64_t data_bytes() const { return data_bytes_; }

  // Inflates the data_bytes() bytes the header declares into `out`; throws when the file
  // holds fewer, or more (found by reading one byte past them, never the rest).
  void read_data(uint8_t* out) {
    uint64_t done = 0;
    while (done < data_bytes_) {
      const auto want = static_cast<unsigned>(std::min<uint64_t>(data_bytes_ - done, 1u << 30));
      const int n = gzread(file_, out + done, want);
      if (n < 0) fail_read();
      if (n == 0) {
        throw std::runtime_error(
            "IDX file " + path_ + " holds " + std::to_string(header_bytes() + done) +
            " bytes but its header declares " + std::to_string(header_bytes() + data_bytes_) +
            " (truncated or not matching its header)");
      }
      done += static_cast<uint64_t>(n);
    }
    uint8_t extra = 0;
    const int n = gzread(file_, &extra, 1);
    if (n < 0) fail_read();
    if (n > 0) {
      throw std::runtime_error("IDX file " + path_ +
                               " holds more bytes than its header declares (" +
                               std::to_string(header_bytes() + data_bytes_) + ")");
    }
  }

 private:
  uint64_t header_bytes() const { return 4 + 4 * static_cast<uint64_t>(fields_.size()); }

  [[noreturn]] void fail_read() {
    int code = 0;
    const std::string message = gzerror(file_, &code);
    throw std::runtime_error("cannot read IDX file " + path_ + ": " + message);
  }

  void read_header(uint32_t magic, uint64_t file_bytes) {
    std::vector<uint8_t> bytes(header_bytes());
    const int n = gzread(file_, bytes.data(), static_cast<unsigned>(bytes.size()));
    if (n < 0) fail_read();
    auto word = [&](size_t offset) {
      return (uint32_t{bytes[offset]} << 24) | (uint32_t{bytes[offset + 1]} << 16) |
             (uint32_t{bytes[offset + 2]} << 8) | uint32_t{bytes[offset + 3]};
    };
    if (n >= 4 && word(0) != magic) {
      throw std::runtime_error(
          "IDX file " + path_ + " has magic number " + hex(word(0)) + ", expected " + hex(magic) +
          (fields_.size() == 3 ? " (an idx3 image file)" : " (an idx1 label file)"));
    }
    if (static_cast<size_t>(n) < bytes.size()) {
      throw std::runtime_error("IDX file " + path_ + " is too short for its header (" +
                               std::to_string(n) + " bytes)");
    }
    // The product of at most three 32-bit fields fits in 128 bits.
    unsigned __int128 product = 1;
    std::string declared, names;
    for (size_t d = 0; d < fields_.size(); ++d) {
      dims_.push_back(word(4 + 4 * d));
      product *= static_cast<uint64_t>(dims_.back());
      declared += (d ? " x " : "") + std::to_string(dims_.back());
      names += (d ? " x " : "") + fields_[d];
    }
    const bool compressed = gzdirect(file_) == 0;
    const unsigned __int128 limit =
        compressed ? static_cast<unsigned __int128>(file_bytes) * kMaxDeflateRatio
                   : static_cast<unsigned __int128>(file_bytes);
    const unsigned __int128 total = product + header_bytes();
    if (compressed ? total > limit : total != limit) {
      const std::string what = "IDX file " + path_ + ": its header declares " + declared +
                               " bytes of data (" + names + ")";
      if (compressed) {
        throw std::runtime_error(what + ", more bytes than a gzip file of " +
                                 std::to_string(file_bytes) + " bytes can inflate to");
      }
      throw std::runtime_error(what + ", but the file holds " + std::to_string(file_bytes) +
                               " bytes (truncated or not matching its header)");
    }
    // The data is read into memory: more than the machine has cannot be meant.
    const long pages = sysconf(_SC_PHYS_PAGES), page_bytes = sysconf(_SC_PAGESIZE);
    const auto memory = static_cast<unsigned __int128>(std::max(0L, pages)) *
                        static_cast<unsigned __int128>(std::max(0L, page_bytes));
    if (memory > 0 && product > memory) {
      throw std::runtime_error("IDX file " + path_ + ": its header declares " + declared +
                               " bytes of data (" + names + "), more than this machine's " +
                               std::to_string(static_cast<uint64_t>(memory)) + " bytes of memory");
    }
    data_bytes_ = static_cast<uint64_t>(product);
  }

  std::string path_;
  std::vector<std::string> fields_;
  gzFile file_ = nullptr;
  std::vector<int64_t> dims_;
  uint64_t data_bytes_ = 0;
};

}  // namespace

IdxDataset::IdxDataset(const std::string& images_file, const std::string& labels_file,
                       std::vector<std::string> class_names, int64_t channels)
    : images_file_(images_file), channels_(channels) {
  class_names_ = std::move(class_names);
  TORCH_CHECK(channels == 1 || channels == 3, "IDX data: channels must be 1 or 3, got ", channels);
  // Both headers are checked before anything as large as the data is allocated.
  IdxFile images(images_file, 0x00000803, {"count", "rows", "columns"});
  IdxFile labels(labels_file, 0x00000801, {"count"});
  const auto& image_dims = images.dims();
  if (image_dims[1] < 1 || image_dims[2] < 1) {
    throw std::runtime_error("IDX file " + images_file + ": its images are " +
                             std::to_string(image_dims[1]) + " x " + std::to_string(image_dims[2]) +
                             " pixels (rows x columns; each must be at least 1)");
  }
  if (image_dims[0] != labels.dims()[0]) {
    throw std::runtime_error("IDX files disagree: " + images_file + " holds " +
                             std::to_string(image_dims[0]) + " images, " + labels_file + " holds " +
                             std::to_string(labels.dims()[0]) + " labels");
  }
  images_ = torch::empty({image_dims[0], 1, image_dims[1], image_dims[2]}, torch::kByte);
  images.read_data(images_.data_ptr<uint8_t>());
  std::vector<uint8_t> label_bytes(labels.data_bytes());
  labels.read_data(label_bytes.data());
  labels_.assign(label_bytes.begin(), label_bytes.end());
  for (size_t i = 0; i < labels_.size(); ++i) {
    if (labels_[i] >= static_cast<int64_t>(class_names_.size())) {
      throw std::runtime_error("IDX file " + labels_file + ": label " + std::to_string(labels_[i]) +
                               " at index " + std::to_string(i) + " is not below " +
                               std::to_string(class_names_.size()) + " classes");
    }
  }
}

Sample IdxDataset::get(size_t index) const {
  TORCH_CHECK(index < labels_.size(), "IDX data: index ", index, " out of range (", labels_.size(),
              " images)");
  auto image = images_[static_cast<int64_t>(index)];
  if (channels_ == 3) image = image.expand({3, image.size(1), image.size(2)});
  return Sample{image.contiguous(), labels_[index]};
}

std::string IdxDataset::sample_source(size_t index) const {
  return images_file_ + "#" + std::to_string(index);
}

std::pair<std::string, std::string> find_idx_files(const std::string& dir,
                                                   const std::string& split) {
  const std::string prefix = split == "train" ? "train" : "t10k";
  TORCH_CHECK(split == "train" || split == "val" || split == "test", "unknown split '", split,
              "' (expected train, val or test)");
  auto find = [&](const std::vector<std::string>& names) -> std::string {
    for (const auto& name : names) {
      for (const char* suffix : {"", ".gz"}) {
        const std::string path = dir + "/" + name + suffix;
        if (std::filesystem::exists(path)) return path;
      }
    }
    throw std::runtime_error("folder " + dir + " has no " + names.front() + "[.gz] (IDX " + split +
                             " data)");
  };
  return {find({prefix + "-images-idx3-ubyte", prefix + "-images.idx3-ubyte"}),
          find({prefix + "-labels-idx1-ubyte", prefix + "-labels.idx1-ubyte"})};
}

}  // namespace alexnet::data
