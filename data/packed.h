#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/dataset.h"

namespace alexnet::data {

/// The packed format written by `alexnet prepare`, little-endian:
///   bytes 0..7    magic "ALEXPACK"
///   bytes 8..11   format version (uint32, 1)
///   bytes 12..15  reserved (0)
///   bytes 16..23  offset of the JSON header (uint64)
///   bytes 24..31  length of the JSON header (uint64)
///   from 4096     the images, each channels x height x width uint8 (CHW, RGB)
///   then          the JSON header: count, channels, height, width, data_offset, labels,
///                 class_names, mean, std, eigenvalues, eigenvectors, stats_images, source.
/// The JSON follows the pixels so that `prepare` can stream them; readers read it first.
inline constexpr char kPackedMagic[9] = "ALEXPACK";
inline constexpr uint32_t kPackedVersion = 1;
inline constexpr uint64_t kPackedDataOffset = 4096;

/// Whether `path` is a file starting with kPackedMagic.
bool is_packed_file(const std::string& path);

/// Writes a packed file: images streamed in order, the header at finish(). Writes to
/// `path`.partial and renames it at finish(), so a broken run leaves no valid-looking file.
class PackedWriter {
 public:
  /// channels: 1 or 3; height and width: 1..65536.
  PackedWriter(const std::string& path, int64_t channels, int64_t height, int64_t width);
  ~PackedWriter();
  PackedWriter(const PackedWriter&) = delete;
  PackedWriter& operator=(const PackedWriter&) = delete;

  /// image: [channels, height, width] uint8.
  void add(const torch::Tensor& image, int64_t label);
  /// Writes the header and closes the file. `extra` is merged into the JSON header.
  void finish(const std::vector<std::string>& class_names, const std::optional<DatasetStats>& stats,
              const nlohmann::json& extra = nlohmann::json::object());
  /// Closes and removes the partial file now (an interrupted run), as the destructor does
  /// when finish() was not called.
  void discard();
  int64_t count() const { return static_cast<int64_t>(labels_.size()); }

 private:
  std::string path_, partial_;
  std::FILE* file_ = nullptr;
  int64_t channels_, height_, width_;
  std::vector<int64_t> labels_;
};

/// Reads a packed file with pread (no OpenCV, no decoding); get() is thread-safe.
class PackedDataset : public Dataset {
 public:
  /// Checks every header field for its type and range before anything is allocated: 1 or 3
  /// channels, sides in 1..65536, data_offset at least kPackedDataOffset, labels below the
  /// number of class names, count equal to the number of labels, the images within the file.
  /// Throws std::runtime_error naming the file and the field.
  explicit PackedDataset(const std::string& path);
  ~PackedDataset() override;

  size_t size() const override { return labels_.size(); }
  Sample get(size_t index) const override;
  int64_t label(size_t index) const override { return labels_.at(index); }
  const std::vector<std::string>& class_names() const override { return class_names_; }
  std::string describe(size_t index) const override;
  std::optional<DatasetStats> stats() const override { return stats_; }
  /// The JSON header as stored.
  const nlohmann::json& header() const { return header_; }
  /// The split the file holds ("train", "val" or "test"; "train" when the header has none).
  const std::string& split() const { return split_; }

 private:
  void read_header();

  std::string path_;
  std::string split_ = "train";
  int fd_ = -1;
  int64_t channels_ = 3, height_ = 0, width_ = 0;
  uint64_t data_offset_ = kPackedDataOffset;
  std::vector<int64_t> labels_;
  std::vector<std::string> class_names_;
  std::optional<DatasetStats> stats_;
  nlohmann::json header_;
};

}  // namespace alexnet::data
