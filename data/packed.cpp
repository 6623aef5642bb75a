#include "data/packed.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the packed format is little-endian");

namespace alexnet::data {
namespace {

struct Prefix {
  char magic[8];
  uint32_t version;
  uint32_t reserved;
  uint64_t json_offset;
  uint64_t json_size;
};
static_assert(sizeof(Prefix) == 32, "packed prefix layout");

std::string errno_text() { return std::strerror(errno); }

// pread until `size` bytes arrived; false on end of file or error.
bool read_at(int fd, void* buffer, size_t size, uint64_t offset) {
  auto* out = static_cast<char*>(buffer);
  while (size > 0) {
    const ssize_t n = ::pread(fd, out, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    out += n;
    size -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return true;
}

}  // namespace

bool is_packed_file(const std::string& path) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) return false;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char magic[8];
  const bool ok = read_at(fd, magic, sizeof(magic), 0) && std::memcmp(magic, kPackedMagic, 8) == 0;
  ::close(fd);
  return ok;
}

PackedWriter::PackedWriter(const std::string& path, int64_t channels, int64_t height, int64_t width)
    : path_(path),
      partial_(path + ".partial"),
      channels_(channels),
      height_(height),
      width_(width) {
  TORCH_CHECK(channels > 0 && height > 0 && width > 0, "packed file ", path,
              ": image dimensions must be positive");
  file_ = std::fopen(partial_.c_str(), "wb");
  if (file_ == nullptr) throw std::runtime_error("cannot write " + partial_ + ": " + errno_text());
  const std::vector<char> zeros(kPackedDataOffset, 0);
  if (std::fwrite(zeros.data(), 1, zeros.size(), file_) != zeros.size()) {
    throw std::runtime_error("cannot write " + partial_ + ": " + errno_text());
  }
}

PackedWriter::~PackedWriter() {
  if (file_ != nullptr) {
    std::fclose(file_);
    std::remove(partial_.c_str());
  }
}

void PackedWriter::add(const torch::Tensor& image, int64_t label) {
  TORCH_CHECK(file_ != nullptr, "packed file ", path_, ": add() after finish()");
  TORCH_CHECK(image.scalar_type() == torch::kByte &&
                  image.sizes() == c10::IntArrayRef({channels_, height_, width_}),
              "packed file ", path_, ": expected a uint8 image [", channels_, ", ", height_, ", ",
              width_, "], got ", image.scalar_type(), " ", image.sizes());
  const auto pixels = image.contiguous();
  const auto bytes = static_cast<size_t>(pixels.numel());
  if (std::fwrite(pixels.data_ptr<uint8_t>(), 1, bytes, file_) != bytes) {
    throw std::runtime_error("cannot write " + partial_ + ": " + errno_text());
  }
  labels_.push_back(label);
}

void PackedWriter::finish(const std::vector<std::string>& class_names,
                          const std::optional<DatasetStats>& stats, const nlohmann::json& extra) {
  TORCH_CHECK(file_ != nullptr, "packed file ", path_, ": finish() called twice");
  nlohmann::json header = extra.is_object() ? extra : nlohmann::json::object();
  header["format"] = "alexnet-cpp packed images";
  header["version"] = kPackedVersion;
  header["count"] = labels_.size();
  header["channels"] = channels_;
  header["height"] = height_;
  header["width"] = width_;
  header["layout"] = "CHW uint8 RGB";
  header["data_offset"] = kPackedDataOffset;
  header["class_names"] = class_names;
  header["labels"] = labels_;
  if (stats) {
    header["mean"] = stats->mean;
    header["std"] = stats->std;
    const auto values = stats->eigenvalues.to(torch::kDouble).contiguous();
    const auto vectors = stats->eigenvectors.to(torch::kDouble).contiguous();
    header["eigenvalues"] =
        std::vector<double>(values.data_ptr<double>(), values.data_ptr<double>() + 3);
    std::vector<std::vector<double>> rows;
    for (int r = 0; r < 3; ++r) {
      rows.emplace_back(vectors.data_ptr<double>() + 3 * r, vectors.data_ptr<double>() + 3 * r + 3);
    }
    header["eigenvectors"] = rows;
    header["stats_images"] = stats->images;
  }
  const std::string text = header.dump();
  Prefix prefix{};
  std::memcpy(prefix.magic, kPackedMagic, 8);
  prefix.version = kPackedVersion;
  prefix.json_offset = kPackedDataOffset + static_cast<uint64_t>(labels_.size()) *
                                               static_cast<uint64_t>(channels_ * height_ * width_);
  prefix.json_size = text.size();
  bool ok = std::fwrite(text.data(), 1, text.size(), file_) == text.size();
  ok = ok && std::fseek(file_, 0, SEEK_SET) == 0;
  ok = ok && std::fwrite(&prefix, sizeof(prefix), 1, file_) == 1;
  ok = std::fclose(file_) == 0 && ok;
  file_ = nullptr;
  if (!ok) {
    std::remove(partial_.c_str());
    throw std::runtime_error("cannot write " + partial_ + ": " + errno_text());
  }
  std::error_code error;
  std::filesystem::rename(partial_, path_, error);
  if (error)
    throw std::runtime_error("cannot rename " + partial_ + " to " + path_ + ": " + error.message());
}

PackedDataset::PackedDataset(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw std::runtime_error("cannot open packed file " + path + ": " + errno_text());
  auto fail = [&](const std::string& message) {
    ::close(fd_);
    fd_ = -1;
    throw std::runtime_error("packed file " + path + ": " + message);
  };
  struct stat info {};
  if (::fstat(fd_, &info) != 0) fail("cannot stat: " + errno_text());
  const auto file_size = static_cast<uint64_t>(info.st_size);
  Prefix prefix{};
  if (!read_at(fd_, &prefix, sizeof(prefix), 0)) fail("too short for its header");
  if (std::memcmp(prefix.magic, kPackedMagic, 8) != 0) fail("not a packed file (wrong magic)");
  if (prefix.version != kPackedVersion) {
    fail("format version " + std::to_string(prefix.version) + ", this build reads version " +
         std::to_string(kPackedVersion));
  }
  if (prefix.json_offset > file_size || prefix.json_size > file_size - prefix.json_offset) {
    fail("truncated (the header lies beyond the end of the file)");
  }
  std::string text(prefix.json_size, '\0');
  if (!read_at(fd_, text.data(), text.size(), prefix.json_offset)) fail("cannot read the header");
  try {
    header_ = nlohmann::json::parse(text);
    channels_ = header_.at("channels").get<int64_t>();
    height_ = header_.at("height").get<int64_t>();
    width_ = header_.at("width").get<int64_t>();
    data_offset_ = header_.at("data_offset").get<uint64_t>();
    labels_ = header_.at("labels").get<std::vector<int64_t>>();
    class_names_ = header_.at("class_names").get<std::vector<std::string>>();
    if (header_.contains("mean")) {
      DatasetStats stats;
      stats.mean = header_.at("mean").get<std::vector<double>>();
      stats.std = header_.at("std").get<std::vector<double>>();
      stats.eigenvalues =
          torch::tensor(header_.at("eigenvalues").get<std::vector<double>>(), torch::kDouble);
      std::vector<double> flat;
      for (const auto& row : header_.at("eigenvectors")) {
        for (double v : row.get<std::vector<double>>()) flat.push_back(v);
      }
      if (flat.size() != 9 || stats.eigenvalues.numel() != 3) fail("malformed eigen-data");
      stats.eigenvectors = torch::tensor(flat, torch::kDouble).view({3, 3});
      stats.images = header_.value("stats_images", int64_t{0});
      stats_ = stats;
    }
  } catch (const nlohmann::json::exception& e) {
    fail(std::string("malformed header: ") + e.what());
  }
  if (header_.value("count", uint64_t{0}) != labels_.size()) fail("count and labels disagree");
  if (channels_ <= 0 || height_ <= 0 || width_ <= 0) fail("bad image dimensions");
  for (size_t i = 0; i < labels_.size(); ++i) {
    if (labels_[i] < 0 || labels_[i] >= static_cast<int64_t>(class_names_.size())) {
      fail("label " + std::to_string(labels_[i]) + " of image " + std::to_string(i) +
           " is not a class index");
    }
  }
  const uint64_t image_bytes = static_cast<uint64_t>(channels_ * height_ * width_);
  if (data_offset_ + labels_.size() * image_bytes > prefix.json_offset) {
    fail("truncated (" + std::to_string(labels_.size()) + " images do not fit)");
  }
}

PackedDataset::~PackedDataset() {
  if (fd_ >= 0) ::close(fd_);
}

Sample PackedDataset::get(size_t index) const {
  TORCH_CHECK(index < labels_.size(), "packed file ", path_, ": index ", index, " out of range (",
              labels_.size(), " images)");
  auto image = torch::empty({channels_, height_, width_}, torch::kByte);
  const auto bytes = static_cast<size_t>(image.numel());
  if (!read_at(fd_, image.data_ptr<uint8_t>(), bytes, data_offset_ + index * bytes)) {
    throw DecodeError("cannot read image " + describe(index) + ": " + errno_text());
  }
  return Sample{image, labels_[index]};
}

std::string PackedDataset::describe(size_t index) const {
  return path_ + "#" + std::to_string(index);
}

}  // namespace alexnet::data
