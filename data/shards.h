#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "data/loader.h"
#include "data/packed.h"

namespace alexnet::data {

/// A shard folder, written by `alexnet prepare --shard-size N`:
///   FOLDER/shard-00000.alexpack, ...  packed files of format version 2 (data/packed.h), raw or
///       JPEG records; shard k holds the source's images [k N, (k + 1) N) in order, less those
///       that could not be decoded. Each is written as NAME.partial and renamed when complete.
///       Its header adds 'shard' (k), 'shards' (how many), 'source_begin', 'source_end',
///       'settings' (what prepare was asked: compared when a run resumes), 'stats_sums'
///       (StatsAccumulator::sums() of its images) and 'skipped' ([source index, file, message]
///       of each image left out).
///   FOLDER/index.json  written last: format ("alexnet-cpp shards"), version (1), encoding,
///       quality (JPEG), channels, height, width, count, shard_size, split, class_names, shards
///       ([{file, count, bytes}] in order), mean, std, eigenvalues, eigenvectors (the
///       statistics of every image, from the shards' sums merged in shard order),
///       stats_images, skipped (how many) and settings.
inline constexpr const char* kShardIndexName = "index.json";
inline constexpr const char* kShardIndexFormat = "alexnet-cpp shards";
inline constexpr int64_t kShardIndexVersion = 1;

/// "shard-00042.alexpack" for shard 42.
std::string shard_file_name(int64_t shard);

/// Whether `path` is a shard folder (one holding index.json, or shard files a stopped
/// `prepare` left without one) or a file named index.json.
bool is_shard_source(const std::string& path);

/// The images of a shard folder, in shard order, through one Dataset. get() reads and (JPEG)
/// decodes one record, and is thread-safe: the loader's workers decode in parallel.
class ShardedDataset : public LabelledDataset {
 public:
  /// `path`: the folder or its index.json. Checks every index field (type, range) and that
  /// each shard's header agrees with the index (count, encoding, sides, classes, split).
  /// Throws std::runtime_error naming the file and the field; a folder without index.json
  /// is refused with the advice to run its `prepare` again.
  explicit ShardedDataset(const std::string& path);

  Sample get(size_t index) const override;
  /// "FOLDER/shard-00003.alexpack#17".
  std::string sample_source(size_t index) const override;
  std::optional<DatasetStats> stats() const override { return stats_; }

  /// "train" or "val".
  const std::string& split() const { return split_; }
  PackedEncoding encoding() const { return encoding_; }
  size_t shards() const { return shards_.size(); }
  /// The index as stored.
  const nlohmann::json& index() const { return index_; }

 private:
  // The shard holding sample `index`, and the sample's place in it.
  std::pair<size_t, size_t> locate(size_t index) const;

  std::string folder_;
  nlohmann::json index_;
  std::vector<std::shared_ptr<PackedDataset>> shards_;
  std::vector<size_t> starts_;  // first sample of each shard
  std::string split_ = "train";
  PackedEncoding encoding_ = PackedEncoding::kJpeg;
  std::optional<DatasetStats> stats_;
};

/// What write_shards() writes.
struct ShardWriteOptions {
  /// The shard folder (created when missing).
  std::string folder;
  PackedEncoding encoding = PackedEncoding::kJpeg;
  /// JPEG quality, 1..100.
  int64_t quality = 95;
  /// Images per shard.
  int64_t shard_size = 1024;
  /// Side of the stored squares: shorter side rescaled to it, central square kept.
  int64_t image_size = 256;
  /// "train" or "val", recorded in the index.
  std::string split = "train";
  /// How the source was opened (its path, --limit, ...). With the fields above and the
  /// source's files and labels, what a run must repeat to resume a folder.
  nlohmann::json source = nlohmann::json::object();
  /// Decoding threads.
  int64_t workers = 2;
  /// Rethrow the first DecodeError instead of skipping the image.
  bool strict = false;
  /// Polled between batches: when it becomes true the shard being written is removed and
  /// write_shards() returns with `stopped` (complete shards stay for a later run).
  const std::atomic<bool>* stop = nullptr;
  /// Called now and then with the images done (kept shards included), the total and the
  /// images skipped so far, and once with done == total when every shard is written.
  std::function<void(int64_t done, int64_t total, int64_t skipped)> progress;
  /// Called when shard k is complete (renamed into place).
  std::function<void(int64_t shard)> shard_done;
};

/// What write_shards() did.
struct ShardWriteResult {
  /// A stop was requested: some shards are missing and there is no index yet.
  bool stopped = false;
  int64_t shards = 0;
  /// Complete shards of an earlier run with the same settings, validated and kept.
  int64_t kept = 0;
  /// Shards written by this run.
  int64_t written = 0;
  /// Images stored.
  int64_t images = 0;
  /// Images left out (index: the source index), in source order.
  std::vector<SkippedSample> skipped;
  /// The statistics written into the index (absent when stopped).
  std::optional<DatasetStats> stats;
};

/// Writes `source` into options.folder as shards and index.json (see kShardIndexName).
/// Resumes: complete shards of an earlier run with the same settings are validated (header,
/// record hash) and kept, damaged ones and NAME.partial files are written again, and the
/// result (shard bytes, index, statistics) equals an uninterrupted run's. A folder holding
/// another run's shards or index is refused, naming the setting that differs. Throws
/// std::invalid_argument for bad options, std::runtime_error for I/O errors and refusals.
ShardWriteResult write_shards(DatasetPtr source, const ShardWriteOptions& options);

}  // namespace alexnet::data
