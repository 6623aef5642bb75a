#include "data/packed.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>

#include "data/image_decode.h"
#include "data/jpeg_encode.h"
#include "data/json_fields.h"

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

constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ull;
constexpr uint64_t kFnvPrime = 0x100000001b3ull;

uint64_t fnv1a(uint64_t hash, const uint8_t* data, size_t size) {
  for (size_t i = 0; i < size; ++i) hash = (hash ^ data[i]) * kFnvPrime;
  return hash;
}

std::string hex16(uint64_t value) {
  char text[17];
  std::snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(value));
  return text;
}

}  // namespace

const char* packed_encoding_name(PackedEncoding encoding) {
  return encoding == PackedEncoding::kJpeg ? "jpeg" : "raw";
}

PackedEncoding parse_packed_encoding(const std::string& name) {
  if (name == "raw") return PackedEncoding::kRaw;
  if (name == "jpeg") return PackedEncoding::kJpeg;
  throw std::invalid_argument("unknown packed encoding '" + name + "' (expected raw or jpeg)");
}

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

PackedWriter::PackedWriter(const std::string& path, int64_t channels, int64_t height, int64_t width,
                           PackedWriterOptions options)
    : path_(path),
      partial_(path + ".partial"),
      channels_(channels),
      height_(height),
      width_(width),
      options_(options),
      offsets_{kPackedDataOffset},
      hash_(kFnvOffset) {
  TORCH_CHECK(options.version == kPackedVersion || options.version == kPackedRecordsVersion,
              "packed file ", path, ": format version ", options.version, ", expected ",
              kPackedVersion, " or ", kPackedRecordsVersion);
  const bool jpeg = options.encoding == PackedEncoding::kJpeg;
  TORCH_CHECK(!jpeg || options.version == kPackedRecordsVersion, "packed file ", path,
              ": JPEG records need format version ", kPackedRecordsVersion);
  TORCH_CHECK(!jpeg || channels == 3, "packed file ", path,
              ": JPEG records hold 3-channel images, got ", channels, " channels");
  TORCH_CHECK(!jpeg || (options.quality >= 1 && options.quality <= 100), "packed file ", path,
              ": JPEG quality must be in 1..100, got ", options.quality);
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
  if (options_.encoding == PackedEncoding::kJpeg) {
    add_record(encode_jpeg(image, options_.quality), label);
    return;
  }
  const auto pixels = image.contiguous();
  const auto* data = pixels.data_ptr<uint8_t>();
  add_record(std::vector<uint8_t>(data, data + pixels.numel()), label);
}

void PackedWriter::add_record(const std::vector<uint8_t>& bytes, int64_t label) {
  TORCH_CHECK(file_ != nullptr, "packed file ", path_, ": add_record() after finish()");
  TORCH_CHECK(options_.encoding == PackedEncoding::kJpeg ||
                  bytes.size() == static_cast<size_t>(channels_ * height_ * width_),
              "packed file ", path_, ": a raw record of ", bytes.size(), " bytes, expected ",
              channels_ * height_ * width_);
  if (std::fwrite(bytes.data(), 1, bytes.size(), file_) != bytes.size()) {
    throw std::runtime_error("cannot write " + partial_ + ": " + errno_text());
  }
  hash_ = fnv1a(hash_, bytes.data(), bytes.size());
  offsets_.push_back(offsets_.back() + bytes.size());
  labels_.push_back(label);
}

void PackedWriter::finish(const std::vector<std::string>& class_names,
                          const std::optional<DatasetStats>& stats, const nlohmann::json& extra) {
  TORCH_CHECK(file_ != nullptr, "packed file ", path_, ": finish() called twice");
  nlohmann::json header = extra.is_object() ? extra : nlohmann::json::object();
  header["format"] = "alexnet-cpp packed images";
  header["version"] = options_.version;
  header["count"] = labels_.size();
  header["channels"] = channels_;
  header["height"] = height_;
  header["width"] = width_;
  header["layout"] = options_.encoding == PackedEncoding::kJpeg ? "JPEG RGB" : "CHW uint8 RGB";
  header["data_offset"] = kPackedDataOffset;
  if (options_.version == kPackedRecordsVersion) {
    header["encoding"] = packed_encoding_name(options_.encoding);
    if (options_.encoding == PackedEncoding::kJpeg) header["quality"] = options_.quality;
    header["record_offsets"] = offsets_;
    header["records_fnv1a64"] = hex16(hash_);
  }
  header["class_names"] = class_names;
  header["labels"] = labels_;
  if (stats) write_stats_fields(*stats, header);
  const std::string text = header.dump();
  Prefix prefix{};
  std::memcpy(prefix.magic, kPackedMagic, 8);
  prefix.version = options_.version;
  prefix.json_offset = offsets_.back();
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

void write_stats_fields(const DatasetStats& stats, nlohmann::json& object) {
  object["mean"] = stats.mean;
  object["std"] = stats.std;
  const auto values = stats.eigenvalues.to(torch::kDouble).contiguous();
  const auto vectors = stats.eigenvectors.to(torch::kDouble).contiguous();
  object["eigenvalues"] =
      std::vector<double>(values.data_ptr<double>(), values.data_ptr<double>() + 3);
  std::vector<std::vector<double>> rows;
  for (int r = 0; r < 3; ++r) {
    rows.emplace_back(vectors.data_ptr<double>() + 3 * r, vectors.data_ptr<double>() + 3 * r + 3);
  }
  object["eigenvectors"] = rows;
  object["stats_images"] = stats.images;
}

std::optional<DatasetStats> read_stats_fields(const JsonFields& fields, bool images_required) {
  if (!fields.has("mean")) return std::nullopt;
  DatasetStats stats;
  stats.mean = fields.numbers("mean", 3);
  stats.std = fields.numbers("std", 3);
  stats.eigenvalues = torch::tensor(fields.numbers("eigenvalues", 3), torch::kDouble);
  stats.eigenvectors =
      torch::tensor(fields.numbers("eigenvectors", 3, /*square=*/true), torch::kDouble)
          .view({3, 3});
  if (images_required || fields.has("stats_images")) {
    stats.images = fields.integer("stats_images", 0, std::numeric_limits<int64_t>::max());
  }
  // Statistics of 0..255 pixels: mean and std in [0, 255]; eigenvalues of the covariance of
  // [0, 1] values times 255 (DatasetStats) in [0, 255], as its trace is at most 3/4; unit
  // eigenvectors. The slack allows for rounding.
  auto check_range = [&](const std::string& field, const std::vector<double>& values, double low,
                         double high) {
    const double slack = 1e-9 * (high - low);
    for (double value : values) {
      if (!(value >= low - slack && value <= high + slack)) {
        fields.fail(field, "holds " + std::to_string(value) + ", outside [" + std::to_string(low) +
                               ", " + std::to_string(high) + "]");
      }
    }
  };
  check_range("mean", stats.mean, 0, 255);
  check_range("std", stats.std, 0, 255);
  check_range("eigenvalues", fields.numbers("eigenvalues", 3), 0, 255);
  check_range("eigenvectors", fields.numbers("eigenvectors", 3, /*square=*/true), -1, 1);
  return stats;
}

PackedDataset::PackedDataset(const std::string& path) : path_(path) {
  // O_NONBLOCK: opening a FIFO would otherwise wait for a writer (it has no effect on the
  // reads of a regular file).
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd_ < 0) throw std::runtime_error("cannot open packed file " + path + ": " + errno_text());
  struct stat status {};
  if (::fstat(fd_, &status) != 0 || !S_ISREG(status.st_mode)) {
    ::close(fd_);
    fd_ = -1;
    throw std::runtime_error("packed file " + path + " is not a regular file");
  }
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
  if (prefix.version != kPackedVersion && prefix.version != kPackedRecordsVersion) {
    fail("format version " + std::to_string(prefix.version) + ", this build reads versions " +
         std::to_string(kPackedVersion) + " and " + std::to_string(kPackedRecordsVersion));
  }
  version_ = prefix.version;
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

  const JsonFields fields(header_, "packed file " + path_, "header field");
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
  if (version_ == kPackedVersion) {
    if (labels_.size() > (prefix.json_offset - data_offset_) / image_bytes) {
      fail("truncated (" + std::to_string(labels_.size()) + " images of " +
           std::to_string(image_bytes) + " bytes do not fit between 'data_offset' " +
           std::to_string(data_offset_) + " and the header at " +
           std::to_string(prefix.json_offset) + ")");
    }
  } else {
    read_records_header(fields, prefix.json_offset, image_bytes);
  }
  split_ = fields.string("split", "train");
  if (split_ != "train" && split_ != "val" && split_ != "test") {
    fields.fail("split", "is \"" + split_ + "\", not train, val or test");
  }
  stats_ = read_stats_fields(fields, /*images_required=*/false);
}

void PackedDataset::read_records_header(const JsonFields& fields, uint64_t json_offset,
                                        uint64_t image_bytes) {
  try {
    encoding_ = parse_packed_encoding(fields.string("encoding"));
  } catch (const std::invalid_argument&) {
    fields.fail("encoding",
                "is " + JsonFields::shown(fields.at("encoding")) + ", not \"raw\" or \"jpeg\"");
  }
  if (encoding_ == PackedEncoding::kJpeg && channels_ != 3) {
    fields.fail("channels", "is " + std::to_string(channels_) + ", but JPEG records hold 3");
  }
  const auto offsets = fields.integers("record_offsets", static_cast<int64_t>(data_offset_),
                                       static_cast<int64_t>(json_offset));
  if (offsets.size() != labels_.size() + 1) {
    fields.fail("record_offsets",
                "holds " + std::to_string(offsets.size()) +
                    " offsets, expected count + 1 = " + std::to_string(labels_.size() + 1));
  }
  if (static_cast<uint64_t>(offsets.front()) != data_offset_) {
    fields.fail("record_offsets", "starts at " + std::to_string(offsets.front()) +
                                      ", not at 'data_offset' " + std::to_string(data_offset_));
  }
  offsets_.reserve(offsets.size());
  for (size_t i = 0; i < offsets.size(); ++i) {
    if (i > 0) {
      if (offsets[i] < offsets[i - 1]) {
        fields.fail("record_offsets", "element " + std::to_string(i) + " (" +
                                          std::to_string(offsets[i]) + ") is below element " +
                                          std::to_string(i - 1) + " (" +
                                          std::to_string(offsets[i - 1]) + ")");
      }
      const auto length = static_cast<uint64_t>(offsets[i] - offsets[i - 1]);
      if (encoding_ == PackedEncoding::kRaw && length != image_bytes) {
        fields.fail("record_offsets", "gives raw record " + std::to_string(i - 1) + " " +
                                          std::to_string(length) + " bytes, expected " +
                                          std::to_string(image_bytes));
      }
    }
    offsets_.push_back(static_cast<uint64_t>(offsets[i]));
  }
  const std::string hash = fields.string("records_fnv1a64");
  if (hash.size() != 16 || hash.find_first_not_of("0123456789abcdef") != std::string::npos) {
    fields.fail("records_fnv1a64", "is \"" + hash + "\", not 16 lower-case hex digits");
  }
}

std::vector<uint8_t> PackedDataset::record(size_t index) const {
  TORCH_CHECK(index < labels_.size(), "packed file ", path_, ": index ", index, " out of range (",
              labels_.size(), " images)");
  const auto image_bytes = static_cast<uint64_t>(channels_ * height_ * width_);
  const uint64_t begin = offsets_.empty() ? data_offset_ + index * image_bytes : offsets_[index];
  const uint64_t end = offsets_.empty() ? begin + image_bytes : offsets_[index + 1];
  std::vector<uint8_t> bytes(end - begin);
  errno = 0;
  if (!read_at(fd_, bytes.data(), bytes.size(), begin)) {
    throw DecodeError("cannot read image " + sample_source(index) + ": " +
                      (errno ? errno_text() : "the file ends early"));
  }
  return bytes;
}

void PackedDataset::verify() const {
  if (version_ == kPackedVersion) return;
  uint64_t hash = kFnvOffset;
  std::vector<uint8_t> buffer(1 << 20);
  for (uint64_t at = offsets_.front(); at < offsets_.back();) {
    const auto n = static_cast<size_t>(std::min<uint64_t>(buffer.size(), offsets_.back() - at));
    if (!read_at(fd_, buffer.data(), n, at)) {
      throw std::runtime_error("packed file " + path_ + ": cannot read its records at byte " +
                               std::to_string(at));
    }
    hash = fnv1a(hash, buffer.data(), n);
    at += n;
  }
  const std::string stored = header_.at("records_fnv1a64").get<std::string>();
  if (hex16(hash) != stored) {
    throw std::runtime_error("packed file " + path_ + ": its records hash to " + hex16(hash) +
                             ", but header field 'records_fnv1a64' says " + stored +
                             " (the file was changed or damaged)");
  }
}

PackedDataset::~PackedDataset() {
  if (fd_ >= 0) ::close(fd_);
}

Sample PackedDataset::get(size_t index) const {
  TORCH_CHECK(index < labels_.size(), "packed file ", path_, ": index ", index, " out of range (",
              labels_.size(), " images)");
  if (encoding_ == PackedEncoding::kJpeg) {
    const auto bytes = record(index);
    return Sample{
        decode_jpeg_bytes(bytes.data(), bytes.size(), sample_source(index), height_, width_),
        labels_[index]};
  }
  auto image = torch::empty({channels_, height_, width_}, torch::kByte);
  const auto bytes = static_cast<size_t>(image.numel());
  const uint64_t begin = offsets_.empty() ? data_offset_ + index * bytes : offsets_[index];
  if (!read_at(fd_, image.data_ptr<uint8_t>(), bytes, begin)) {
    throw DecodeError("cannot read image " + sample_source(index) + ": " + errno_text());
  }
  return Sample{image, labels_[index]};
}

std::string PackedDataset::sample_source(size_t index) const {
  return path_ + "#" + std::to_string(index);
}

}  // namespace alexnet::data
