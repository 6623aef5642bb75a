#pragma once

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "data/loader.h"

namespace alexnet::data {

class JsonFields;

/// The packed format written by `alexnet prepare`, little-endian:
///   bytes 0..7    magic "ALEXPACK"
///   bytes 8..11   format version (uint32, 1 or 2)
///   bytes 12..15  reserved (0)
///   bytes 16..23  offset of the JSON header (uint64)
///   bytes 24..31  length of the JSON header (uint64)
///   from 4096     the images, one record each
///   then          the JSON header: count, channels, height, width, data_offset, labels,
///                 class_names, mean, std, eigenvalues, eigenvectors, stats_images, source.
/// Version 1 stores every image as channels x height x width uint8 (CHW, RGB), one after the
/// other. Version 2 stores records of any length: its header adds 'encoding' ("raw": CHW
/// uint8 as version 1; "jpeg": a JPEG of height x width, 'quality' recorded), 'record_offsets'
/// (count + 1 file offsets: record i is bytes [offsets[i], offsets[i + 1])) and
/// 'records_fnv1a64' (the FNV-1a hash of all record bytes, 16 hex digits). A version-1 reader
/// refuses version 2 by its version number.
/// The JSON follows the images so that `prepare` can stream them; readers read it first.
inline constexpr char kPackedMagic[9] = "ALEXPACK";
inline constexpr uint32_t kPackedVersion = 1;
inline constexpr uint32_t kPackedRecordsVersion = 2;
inline constexpr uint64_t kPackedDataOffset = 4096;

/// How a packed file stores its images.
enum class PackedEncoding { kRaw, kJpeg };
/// "raw" or "jpeg".
const char* packed_encoding_name(PackedEncoding encoding);
/// The encoding called `name` ("raw" or "jpeg"); throws std::invalid_argument naming it.
PackedEncoding parse_packed_encoding(const std::string& name);

/// The dataset statistics a packed file's header or a shard index holds (mean, std,
/// eigenvalues, eigenvectors, stats_images), when it has "mean"; every field checked for its
/// type and size. stats_images is 0 when absent, unless `images_required`.
std::optional<DatasetStats> read_stats_fields(const JsonFields& fields, bool images_required);
/// Writes `stats` into `object` as the fields read_stats_fields reads.
void write_stats_fields(const DatasetStats& stats, nlohmann::json& object);

/// How PackedWriter stores images.
struct PackedWriterOptions {
  PackedEncoding encoding = PackedEncoding::kRaw;
  /// JPEG quality, 1..100.
  int64_t quality = 95;
  /// kPackedVersion (raw only) or kPackedRecordsVersion; JPEG needs the latter.
  uint32_t version = kPackedVersion;
};

/// Whether `path` is a file starting with kPackedMagic.
bool is_packed_file(const std::string& path);

/// Writes a packed file: images streamed in order, the header at finish(). Writes to
/// `path`.partial and renames it at finish(), so a broken run leaves no valid-looking file.
class PackedWriter {
 public:
  /// channels: 1 or 3 (3 for JPEG); height and width: 1..65536.
  PackedWriter(const std::string& path, int64_t channels, int64_t height, int64_t width,
               PackedWriterOptions options = {});
  ~PackedWriter();
  PackedWriter(const PackedWriter&) = delete;
  PackedWriter& operator=(const PackedWriter&) = delete;

  /// image: [channels, height, width] uint8; stored raw or JPEG-encoded.
  void add(const torch::Tensor& image, int64_t label);
  /// Adds a record already encoded (JPEG bytes of height x width, or raw CHW bytes).
  void add_record(const std::vector<uint8_t>& bytes, int64_t label);
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
  PackedWriterOptions options_;
  std::vector<int64_t> labels_;
  std::vector<uint64_t> offsets_;  // version 2: where each record starts, and the end
  uint64_t hash_;                  // FNV-1a of the record bytes
};

/// Reads a packed file with pread; get() is thread-safe. Raw images need no decoding (and no
/// OpenCV); JPEG records are decoded in get(), that is in the loader's worker threads.
class PackedDataset : public LabelledDataset {
 public:
  /// Checks every header field for its type and range before anything is allocated: 1 or 3
  /// channels, sides in 1..65536, data_offset at least kPackedDataOffset, labels below the
  /// number of class names, count equal to the number of labels, the images within the file;
  /// version 2: the encoding, and record offsets that start at data_offset, never decrease,
  /// end before the header, and (raw) are one image apart.
  /// Throws std::runtime_error naming the file and the field.
  explicit PackedDataset(const std::string& path);
  ~PackedDataset() override;

  Sample get(size_t index) const override;
  std::string sample_source(size_t index) const override;
  std::optional<DatasetStats> stats() const override { return stats_; }
  /// The JSON header as stored.
  const nlohmann::json& header() const { return header_; }
  /// The split the file holds ("train", "val" or "test"; "train" when the header has none).
  const std::string& split() const { return split_; }
  PackedEncoding encoding() const { return encoding_; }
  uint32_t version() const { return version_; }
  int64_t height() const { return height_; }
  int64_t width() const { return width_; }
  /// The stored bytes of record `index` (raw pixels or a JPEG).
  std::vector<uint8_t> record(size_t index) const;
  /// Reads every record and compares their hash with 'records_fnv1a64' (version 2; version 1
  /// has no hash). Throws std::runtime_error naming the file when they differ.
  void verify() const;

 private:
  void read_header();
  void read_records_header(const JsonFields& fields, uint64_t json_offset, uint64_t image_bytes);

  std::string path_;
  std::string split_ = "train";
  uint32_t version_ = kPackedVersion;
  PackedEncoding encoding_ = PackedEncoding::kRaw;
  std::vector<uint64_t> offsets_;  // version 2
  int fd_ = -1;
  int64_t channels_ = 3, height_ = 0, width_ = 0;
  uint64_t data_offset_ = kPackedDataOffset;
  std::optional<DatasetStats> stats_;
  nlohmann::json header_;
};

/// What write_packed() writes.
struct PackedWriteOptions {
  /// The packed file (written as PATH.partial, renamed when complete).
  std::string path;
  PackedEncoding encoding = PackedEncoding::kRaw;
  /// JPEG quality, 1..100.
  int64_t quality = 95;
  /// Side of the stored squares: shorter side rescaled to it, central square kept.
  int64_t image_size = 256;
  /// Merged into the JSON header (e.g. the source path and split).
  nlohmann::json extra = nlohmann::json::object();
  /// Decoding threads.
  int64_t workers = 2;
  /// Rethrow the first DecodeError instead of skipping the image.
  bool strict = false;
  /// Polled between batches: when it becomes true the partial file is removed and
  /// write_packed() returns with `stopped`.
  const std::atomic<bool>* stop = nullptr;
  /// Called now and then with the images done, the total and the images skipped so far, and
  /// once with done == total when every image is read.
  std::function<void(int64_t done, int64_t total, int64_t skipped)> progress;
};

/// What write_packed() did.
struct PackedWriteResult {
  /// A stop was requested: nothing was written.
  bool stopped = false;
  /// Images stored (at a stop: decoded so far).
  int64_t images = 0;
  /// Images left out (index: the source index), in source order.
  std::vector<SkippedSample> skipped;
  /// The statistics written into the header (absent when stopped).
  std::optional<DatasetStats> stats;
};

/// Writes `source` as one packed file of image_size x image_size RGB squares (grey images
/// replicated), in source order, with its class names and statistics; "skipped" (the count of
/// images that failed to decode) joins options.extra in the header. An earlier packed file at
/// options.path is replaced; anything else there (a folder, another file) is refused before
/// any image is read. Throws std::runtime_error for that, when no image could be decoded, and
/// for I/O errors.
PackedWriteResult write_packed(DatasetPtr source, const PackedWriteOptions& options);

}  // namespace alexnet::data
