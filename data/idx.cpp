#include "data/idx.h"

#include <zlib.h>

#include <filesystem>

namespace alexnet::data {
namespace {

// The whole file, inflated when gzip-compressed (zlib reads raw files unchanged).
std::vector<uint8_t> read_maybe_gzip(const std::string& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) throw std::runtime_error("cannot open IDX file " + path);
  std::vector<uint8_t> bytes;
  std::vector<uint8_t> chunk(1 << 20);
  while (true) {
    const int n = gzread(file, chunk.data(), static_cast<unsigned>(chunk.size()));
    if (n < 0) {
      int code = 0;
      const std::string message = gzerror(file, &code);
      gzclose(file);
      throw std::runtime_error("cannot read IDX file " + path + ": " + message);
    }
    if (n == 0) break;
    bytes.insert(bytes.end(), chunk.begin(), chunk.begin() + n);
  }
  gzclose(file);
  return bytes;
}

uint32_t big_endian(const std::vector<uint8_t>& bytes, size_t offset) {
  return (uint32_t{bytes[offset]} << 24) | (uint32_t{bytes[offset + 1]} << 16) |
         (uint32_t{bytes[offset + 2]} << 8) | uint32_t{bytes[offset + 3]};
}

std::string hex(uint32_t value) {
  char text[16];
  std::snprintf(text, sizeof(text), "0x%08x", value);
  return text;
}

// Checks the magic number and the size the header declares; returns the dimensions.
std::vector<int64_t> parse_header(const std::vector<uint8_t>& bytes, const std::string& path,
                                  uint32_t magic, int dims) {
  const size_t header = 4 + 4 * static_cast<size_t>(dims);
  if (bytes.size() < header) {
    throw std::runtime_error("IDX file " + path + " is too short for its header (" +
                             std::to_string(bytes.size()) + " bytes)");
  }
  if (big_endian(bytes, 0) != magic) {
    throw std::runtime_error("IDX file " + path + " has magic number " + hex(big_endian(bytes, 0)) +
                             ", expected " + hex(magic) +
                             (dims == 3 ? " (an idx3 image file)" : " (an idx1 label file)"));
  }
  std::vector<int64_t> sizes;
  size_t expected = header;
  size_t elements = 1;
  for (int d = 0; d < dims; ++d) {
    sizes.push_back(big_endian(bytes, 4 + 4 * d));
    elements *= static_cast<size_t>(sizes.back());
  }
  expected += elements;
  if (bytes.size() != expected) {
    throw std::runtime_error("IDX file " + path + " holds " + std::to_string(bytes.size()) +
                             " bytes but its header declares " + std::to_string(expected) +
                             " (truncated or not matching its header)");
  }
  return sizes;
}

}  // namespace

IdxDataset::IdxDataset(const std::string& images_file, const std::string& labels_file,
                       std::vector<std::string> class_names, int64_t channels)
    : images_file_(images_file), class_names_(std::move(class_names)), channels_(channels) {
  TORCH_CHECK(channels == 1 || channels == 3, "IDX data: channels must be 1 or 3, got ", channels);
  const auto image_bytes = read_maybe_gzip(images_file);
  const auto image_dims = parse_header(image_bytes, images_file, 0x00000803, 3);
  const auto label_bytes = read_maybe_gzip(labels_file);
  const auto label_dims = parse_header(label_bytes, labels_file, 0x00000801, 1);
  if (image_dims[0] != label_dims[0]) {
    throw std::runtime_error("IDX files disagree: " + images_file + " holds " +
                             std::to_string(image_dims[0]) + " images, " + labels_file + " holds " +
                             std::to_string(label_dims[0]) + " labels");
  }
  images_ = torch::empty({image_dims[0], 1, image_dims[1], image_dims[2]}, torch::kByte);
  std::memcpy(images_.data_ptr<uint8_t>(), image_bytes.data() + 16, image_bytes.size() - 16);
  labels_.assign(label_bytes.begin() + 8, label_bytes.end());
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

std::string IdxDataset::describe(size_t index) const {
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
