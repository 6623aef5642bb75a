#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "data/dataset.h"
#include "transforms/transforms.h"

namespace alexnet::data {

struct LoaderOptions {
  int64_t batch_size = 128;
  /// Worker threads; 0 loads on the calling thread inside next().
  int64_t workers = 2;
  /// Reshuffle every epoch (from seed and epoch); false keeps the data set's order.
  bool shuffle = true;
  uint64_t seed = 0;
  /// Leave out the last, smaller batch.
  bool drop_last = false;
  /// Batches loaded ahead of the consumer.
  int64_t prefetch_batches = 4;
  /// Rethrow the first DecodeError from next() instead of skipping the sample.
  bool strict = false;
  /// Appends "path<TAB>message" for every skipped sample; empty: no log.
  std::string skipped_log;
  /// Data-parallel sharding. With world_size > 1 the loader yields only this rank's share of
  /// every batch: of batch k's positions [k * B, (k + 1) * B) in the epoch's permutation
  /// (the same on every rank), those in [k * B + rank * B / world_size, k * B + (rank + 1) *
  /// B / world_size). batch_size is the global batch: a multiple of world_size, with
  /// drop_last, so every rank gets the same number of equal batches.
  int64_t rank = 0;
  int64_t world_size = 1;
};

/// A sample the loader left out because it could not be decoded.
struct SkippedSample {
  int64_t index = 0;
  /// Dataset::sample_source(index): the file, or "file#index".
  std::string source;
  /// The DecodeError's message.
  std::string message;
};

/// `text` on one line of a tab-separated log: backslash, tab, newline, carriage return and
/// other control characters written as \\, \t, \n, \r and \xHH (a file name may hold any).
std::string one_line(const std::string& text);

/// A batch in epoch order.
struct Batch {
  /// [B, C, h, w] or [B, 10, C, h, w]; float32 from the paper's pipelines (the transform's
  /// dtype; uint8 images when the loader has no transform).
  torch::Tensor images;
  /// [B] int64.
  torch::Tensor labels;
  /// The data set indices of the samples.
  std::vector<int64_t> indices;
};

/// Loads batches with worker threads and a bounded prefetch queue. Batch k of an epoch holds
/// the samples at positions [k * B, (k + 1) * B) of the epoch's permutation, and sample i is
/// transformed with an Rng seeded from (seed, epoch, i): the same seed gives the same batches
/// whatever the number of workers. Undecodable samples are dropped from their batch (a
/// batch may come out smaller), counted, logged, and reported on stderr once per file;
/// with strict, next() throws the DecodeError instead. Any other exception thrown while
/// loading, in whichever thread, is rethrown by next(). The memory of a batch's images is
/// reused for a later batch once every tensor sharing it (views included) is gone.
class Loader {
 public:
  /// transform may be null: images are batched as the data set returns them (uint8).
  Loader(DatasetPtr dataset, transforms::TransformPtr transform, LoaderOptions options);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  /// Starts (or restarts) an epoch, skipping its first `skip_batches` batches (to resume in
  /// the middle of an epoch). Stops the previous epoch's workers first.
  void start_epoch(int64_t epoch, int64_t skip_batches = 0);
  /// The next batch of the epoch; nullopt at its end. Calls start_epoch(0) if none was
  /// started.
  std::optional<Batch> next();

  int64_t batches_per_epoch() const;
  /// Samples skipped because they could not be decoded, over the loader's lifetime.
  int64_t skipped() const;
  /// Each skipped sample once (the first time it failed), in the order they failed.
  std::vector<SkippedSample> skipped_samples() const;
  const LoaderOptions& options() const { return options_; }
  const DatasetPtr& dataset() const { return dataset_; }

  /// The epoch's order of data set indices (seeded Fisher-Yates; identity without shuffle).
  static std::vector<int64_t> permutation(size_t size, uint64_t seed, int64_t epoch, bool shuffle);
  /// The Rng seed of one sample: a hash of (seed, epoch, index).
  static uint64_t sample_seed(uint64_t seed, int64_t epoch, int64_t index);

 private:
  struct Result {
    std::optional<Batch> batch;  // empty when every sample failed
    std::exception_ptr error;
  };

  void stop_workers();
  void worker_loop();
  Result load_batch(int64_t batch_index);
  void record_skip(int64_t index, const std::string& message);
  torch::Tensor batch_buffer(c10::IntArrayRef sizes, c10::ScalarType dtype);

  DatasetPtr dataset_;
  transforms::TransformPtr transform_;
  LoaderOptions options_;

  std::vector<std::thread> workers_;
  mutable std::mutex mutex_;
  std::condition_variable work_cv_, ready_cv_;
  std::map<int64_t, Result> ready_;
  std::vector<int64_t> order_;
  int64_t epoch_ = -1;
  int64_t next_claim_ = 0;    // next batch a worker takes
  int64_t next_consume_ = 0;  // next batch next() returns
  int64_t end_batch_ = 0;
  bool stopping_ = false;
  int64_t skipped_ = 0;
  std::set<int64_t> reported_;
  std::vector<SkippedSample> skipped_samples_;
  std::exception_ptr failure_;  // thrown in a worker outside load_batch()
  // Batch tensors reused once no one else holds them: a fresh 77 MB tensor per batch costs
  // more in page faults than the whole augmentation.
  std::mutex pool_mutex_;
  std::vector<torch::Tensor> pool_;
};

/// What `prepare` decodes: `source` in order, batches of 32, every image rescaled (shorter
/// side) and centre-cropped to an image_size square, whatever size the data set decoded it at;
/// `workers` decoding threads (at least 1); with `strict`, the first DecodeError is thrown.
std::unique_ptr<Loader> square_image_loader(DatasetPtr source, int64_t image_size, int64_t workers,
                                            bool strict);

}  // namespace alexnet::data
