#include "data/packed.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>

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

// The largest image side a packed file may declare, and the largest JSON header it may have.
constexpr int64_t kMaxSide = 1 << 16;
constexpr uint64_t kMaxHeaderBytes = uint64_t{1} << 30;

// The fields of a packed file's JSON header, each checked for its type and range before it is
// used; errors name the file and the field.
class HeaderFields {
 public:
  HeaderFields(const nlohmann::json& header, const std::string& path)
      : header_(header), path_(path) {}

  bool has(const std::string& field) const { return header_.contains(field); }

  const nlohmann::json& at(const std::string& field) const {
    if (!header_.contains(field)) fail(field, "is missing");
    return header_.at(field);
  }

  int64_t integer(const std::string& field, int64_t min, int64_t max) const {
    return integer_value(at(field), field, std::nullopt, min, max);
  }

  std::vector<int64_t> integers(const std::string& field, int64_t min, int64_t max) const {
    const auto& value = at(field);
    if (!value.is_array()) fail(field, "must be an array of integers, got " + shown(value));
    std::vector<int64_t> out;
    out.reserve(value.size());
    for (size_t i = 0; i < value.size(); ++i) {
      out.push_back(integer_value(value[i], field, i, min, max));
    }
    return out;
  }

  std::vector<std::string> strings(const std::string& field) const {
    const auto& value = at(field);
    if (!value.is_array()) fail(field, "must be an array of strings, got " + shown(value));
    std::vector<std::string> out;
    for (size_t i = 0; i < value.size(); ++i) {
      if (!value[i].is_string()) {
        fail(field, "must be an array of strings, but element " + std::to_string(i) + " is " +
                        shown(value[i]));
      }
      out.push_back(value[i].get<std::string>());
    }
    return out;
  }

  // An array of `count` numbers, or of `count` arrays of `count` numbers when `square`.
  std::vector<double> numbers(const std::string& field, size_t count, bool square = false) const {
    const auto& value = at(field);
    const std::string expected =
        square ? std::to_string(count) + " arrays of " + std::to_string(count) + " numbers"
               : std::to_string(count) + " numbers";
    auto refuse = [&] { fail(field, "must be an array of " + expected + ", got " + shown(value)); };
    if (!value.is_array() || value.size() != count) refuse();
    std::vector<double> out;
    for (const auto& row : value) {
      if (square && (!row.is_array() || row.size() != count)) refuse();
      for (const auto& element : square ? row : nlohmann::json::array({row})) {
        if (!element.is_number()) refuse();
        out.push_back(element.get<double>());
      }
    }
    return out;
  }

  std::string string(const std::string& field, const std::string& fallback) const {
    if (!header_.contains(field)) return fallback;
    const auto& value = header_.at(field);
    if (!value.is_string()) fail(field, "must be a string, got " + shown(value));
    return value.get<std::string>();
  }

  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw std::runtime_error("packed file " + path_ + ": header field '" + field + "' " + what);
  }

 private:
  static std::string shown(const nlohmann::json& value) {
    std::string text = value.dump();
    if (text.size() > 40) text = text.substr(0, 37) + "...";
    return text;
  }

  // `element`: the index of `value` in the field's array, or nullopt for the field itself.
  int64_t integer_value(const nlohmann::json& value, const std::string& field,
                        std::optional<size_t> element, int64_t min, int64_t max) const {
    auto refuse = [&](const std::string& what) {
      fail(field, (element ? "element " + std::to_string(*element) + " " : std::string()) + what);
    };
    if (!value.is_number_integer()) refuse("must be an integer, got " + shown(value));
    // Non-negative numbers parse as unsigned, and may exceed int64_t.
    bool in_range;
    if (value.is_number_unsigned()) {
      const auto number = value.get<uint64_t>();
      in_range = number <= static_cast<uint64_t>(max) &&
                 (min <= 0 || number >= static_cast<uint64_t>(min));
    } else {
      const auto number = value.get<int64_t>();
      in_range = number >= min && number <= max;
    }
    if (!in_range) {
      refuse("is " + shown(value) + ", outside " + std::to_string(min) + ".." +
             std::to_string(max));
    }
    return value.get<int64_t>();
  }

  const nlohmann::json& header_;
  std::string path_;
};

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
  TORCH_CHECK(channels == 1 || channels == 3, "packed file ", path,
              ": images have 1 or 3 channels, got ", channels);
  TORCH_CHECK(height > 0 && width > 0 && height <= kMaxSide && width <= kMaxSide, "packed file ",
              path, ": image sides must be in 1..", kMaxSide, ", got ", height, " x ", width);
  file_ = std::fopen(partial_.c_str(), "wb");
  if (file_ == nullptr) throw std::runtime_error("cannot write " + partial_ + ": " + errno_text());
  const std::vector<char> zeros(kPackedDataOffset, 0);
  if (std::fwrite(zeros.data(), 1, zeros.size(), file_) != zeros.size()) {
    throw std::runtime_error("cannot write " + partial_ + ": " + errno_text());
  }
}

PackedWriter::~PackedWriter() { discard(); }

void PackedWriter::discard() {
  if (file_ == nullptr) return;
  std::fclose(file_);
  file_ = nullptr;
  std::remove(partial_.c_str());
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
  try {
    read_header();
  } catch (...) {
    ::close(fd_);
    fd_ = -1;
    throw;
  }
}

void PackedDataset::read_header() {
  auto fail = [&](const std::string& message) {
    throw std::runtime_error("packed file " + path_ + ": " + message);
  };
  struct stat info {};
  if (::fstat(fd_, &info) != 0) fail("cannot stat: " + errno_text());
  if (!S_ISREG(info.st_mode)) fail("not a regular file");
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
  if (prefix.json_offset < kPackedDataOffset) {
    fail("the header offset (bytes 16..23) is " + std::to_string(prefix.json_offset) +
         ", inside the first " + std::to_string(kPackedDataOffset) + " bytes");
  }
  if (prefix.json_size > kMaxHeaderBytes) {
    fail("the header length (bytes 24..31) is " + std::to_string(prefix.json_size) +
         " bytes, more than " + std::to_string(kMaxHeaderBytes));
  }
  std::string text(prefix.json_size, '\0');
  if (!read_at(fd_, text.data(), text.size(), prefix.json_offset)) fail("cannot read the header");
  try {
    header_ = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(std::string("the header is not valid JSON: ") + e.what());
  }
  if (!header_.is_object()) fail("the header is not a JSON object");

  const HeaderFields fields(header_, path_);
  channels_ = fields.integer("channels", 0, std::numeric_limits<int64_t>::max());
  if (channels_ != 1 && channels_ != 3) {
    fields.fail("channels",
                "is " + std::to_string(channels_) + ": images have 1 (grey) or 3 (RGB) channels");
  }
  height_ = fields.integer("height", 1, kMaxSide);
  width_ = fields.integer("width", 1, kMaxSide);
  data_offset_ =
      static_cast<uint64_t>(fields.integer("data_offset", static_cast<int64_t>(kPackedDataOffset),
                                           static_cast<int64_t>(prefix.json_offset)));
  class_names_ = fields.strings("class_names");
  if (class_names_.empty()) fields.fail("class_names", "is empty");
  labels_ = fields.integers("labels", 0, static_cast<int64_t>(class_names_.size()) - 1);
  const int64_t count = fields.integer("count", 0, std::numeric_limits<int64_t>::max());
  if (static_cast<uint64_t>(count) != labels_.size()) {
    fields.fail("count", "is " + std::to_string(count) + ", but 'labels' holds " +
                             std::to_string(labels_.size()) + " labels");
  }
  // At most 3 x 2^16 x 2^16 bytes per image: no product below wraps around.
  const auto image_bytes = static_cast<uint64_t>(channels_ * height_ * width_);
  if (labels_.size() > (prefix.json_offset - data_offset_) / image_bytes) {
    fail("truncated (" + std::to_string(labels_.size()) + " images of " +
         std::to_string(image_bytes) + " bytes do not fit between 'data_offset' " +
         std::to_string(data_offset_) + " and the header at " + std::to_string(prefix.json_offset) +
         ")");
  }
  split_ = fields.string("split", "train");
  if (split_ != "train" && split_ != "val" && split_ != "test") {
    fields.fail("split", "is \"" + split_ + "\", not train, val or test");
  }
  if (fields.has("mean")) {
    DatasetStats stats;
    stats.mean = fields.numbers("mean", 3);
    stats.std = fields.numbers("std", 3);
    stats.eigenvalues = torch::tensor(fields.numbers("eigenvalues", 3), torch::kDouble);
    stats.eigenvectors =
        torch::tensor(fields.numbers("eigenvectors", 3, /*square=*/true), torch::kDouble)
            .view({3, 3});
    stats.images = fields.has("stats_images")
                       ? fields.integer("stats_images", 0, std::numeric_limits<int64_t>::max())
                       : 0;
    stats_ = stats;
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
