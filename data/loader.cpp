#include "data/loader.h"

#include <fstream>
#include <iostream>

#if ALEXNET_HAVE_OPENMP
#include <omp.h>
#endif

namespace alexnet::data {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

uint64_t Loader::sample_seed(uint64_t seed, int64_t epoch, int64_t index) {
  return splitmix64(splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(epoch)) ^
                    static_cast<uint64_t>(index));
}

std::vector<int64_t> Loader::permutation(size_t size, uint64_t seed, int64_t epoch, bool shuffle) {
  std::vector<int64_t> order(size);
  for (size_t i = 0; i < size; ++i) order[i] = static_cast<int64_t>(i);
  if (!shuffle) return order;
  transforms::Rng rng(sample_seed(seed, epoch, /*index=*/-1));
  for (size_t i = size; i > 1; --i) {
    const auto j = static_cast<size_t>((static_cast<unsigned __int128>(rng()) * i) >> 64);
    std::swap(order[i - 1], order[j]);
  }
  return order;
}

Loader::Loader(DatasetPtr dataset, transforms::TransformPtr transform, LoaderOptions options)
    : dataset_(std::move(dataset)), transform_(std::move(transform)), options_(std::move(options)) {
  TORCH_CHECK(dataset_ != nullptr, "Loader: null data set");
  TORCH_CHECK(dataset_->size() > 0, "Loader: the data set is empty");
  TORCH_CHECK(options_.batch_size > 0, "Loader: batch size must be positive, got ",
              options_.batch_size);
  TORCH_CHECK(options_.workers >= 0, "Loader: workers must be >= 0, got ", options_.workers);
  TORCH_CHECK(options_.prefetch_batches > 0, "Loader: prefetch_batches must be positive, got ",
              options_.prefetch_batches);
  TORCH_CHECK(!options_.drop_last || dataset_->size() >= static_cast<size_t>(options_.batch_size),
              "Loader: drop_last with ", dataset_->size(), " samples and batch size ",
              options_.batch_size, " leaves no batch");
  TORCH_CHECK(options_.world_size >= 1 && options_.rank >= 0 && options_.rank < options_.world_size,
              "Loader: rank ", options_.rank, " outside 0..world_size-1 (world_size ",
              options_.world_size, ")");
  TORCH_CHECK(options_.world_size == 1 ||
                  (options_.drop_last && options_.batch_size % options_.world_size == 0),
              "Loader: sharding over ", options_.world_size,
              " ranks needs drop_last and a batch size that is a multiple of it, got batch size ",
              options_.batch_size, options_.drop_last ? "" : " without drop_last");
}

Loader::~Loader() { stop_workers(); }

int64_t Loader::batches_per_epoch() const {
  const auto n = static_cast<int64_t>(dataset_->size());
  const int64_t b = options_.batch_size;
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

int64_t Loader::skipped() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return skipped_;
}

std::vector<SkippedSample> Loader::skipped_samples() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return skipped_samples_;
}

void Loader::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  for (auto& worker : workers_) worker.join();
  workers_.clear();
}

void Loader::start_epoch(int64_t epoch, int64_t skip_batches) {
  TORCH_CHECK(skip_batches >= 0, "Loader: skip_batches must be >= 0, got ", skip_batches);
  stop_workers();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    order_ = permutation(dataset_->size(), options_.seed, epoch, options_.shuffle);
    epoch_ = epoch;
    end_batch_ = batches_per_epoch();
    next_claim_ = next_consume_ = std::min(skip_batches, end_batch_);
    ready_.clear();
    failure_ = nullptr;
    stopping_ = false;
  }
  for (int64_t w = 0; w < options_.workers; ++w) workers_.emplace_back([this] { worker_loop(); });
}

void Loader::worker_loop() {
  // load_batch() keeps a batch's errors in its Result; anything thrown outside it (memory
  // for the ready queue, say) is kept in failure_ for next() to rethrow: no exception may
  // leave a worker thread, which would end the process.
  try {
#if ALEXNET_HAVE_OPENMP
    omp_set_num_threads(1);  // per-thread: the workers are the parallelism
#endif
    while (true) {
      int64_t batch_index;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        work_cv_.wait(lock, [this] {
          return stopping_ || next_claim_ >= end_batch_ ||
                 next_claim_ < next_consume_ + options_.prefetch_batches;
        });
        if (stopping_ || next_claim_ >= end_batch_) return;
        batch_index = next_claim_++;
      }
      Result result = load_batch(batch_index);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        ready_[batch_index] = std::move(result);
      }
      ready_cv_.notify_all();
    }
  } catch (...) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!failure_) failure_ = std::current_exception();
    }
    ready_cv_.notify_all();
  }
}

std::optional<Batch> Loader::next() {
  if (epoch_ < 0) start_epoch(0);
  while (true) {
    Result result;
    if (workers_.empty()) {
      int64_t batch_index;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (next_consume_ >= end_batch_) return std::nullopt;
        batch_index = next_consume_++;
      }
      result = load_batch(batch_index);
    } else {
      std::unique_lock<std::mutex> lock(mutex_);
      if (next_consume_ >= end_batch_) return std::nullopt;
      ready_cv_.wait(lock, [this] { return failure_ || ready_.count(next_consume_) > 0; });
      if (failure_) std::rethrow_exception(failure_);
      auto it = ready_.find(next_consume_);
      result = std::move(it->second);
      ready_.erase(it);
      ++next_consume_;
      lock.unlock();
      work_cv_.notify_all();
    }
    if (result.error) std::rethrow_exception(result.error);
    if (result.batch) return result.batch;
  }
}

std::string one_line(const std::string& text) {
  std::string out;
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (byte < 0x20 || byte == 0x7f) {
      const char* digits = "0123456789abcdef";
      out += "\\x";
      out += digits[byte >> 4];
      out += digits[byte & 15];
    } else {
      out += c;
    }
  }
  return out;
}

void Loader::record_skip(int64_t index, const std::string& message) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++skipped_;
  if (!reported_.insert(index).second) return;
  skipped_samples_.push_back({index, dataset_->sample_source(static_cast<size_t>(index)), message});
  std::cerr << "warning: skipped " << one_line(message) << "\n";
  if (!options_.skipped_log.empty()) {
    std::ofstream log(options_.skipped_log, std::ios::app);
    log << one_line(dataset_->sample_source(static_cast<size_t>(index))) << "\t"
        << one_line(message) << "\n";
  }
}

torch::Tensor Loader::batch_buffer(c10::IntArrayRef sizes, c10::ScalarType dtype) {
  std::lock_guard<std::mutex> lock(pool_mutex_);
  for (const auto& buffer : pool_) {
    // Only the pool holds the tensor and its storage: no batch or view handed out uses it.
    if (buffer.use_count() == 1 && buffer.storage().use_count() == 1 &&
        buffer.scalar_type() == dtype && buffer.sizes() == sizes) {
      return buffer;
    }
  }
  auto buffer = torch::empty(sizes, torch::dtype(dtype));
  const auto limit = static_cast<size_t>(options_.workers + options_.prefetch_batches + 4);
  if (pool_.size() >= limit) pool_.erase(pool_.begin());
  pool_.push_back(buffer);
  return buffer;
}

Loader::Result Loader::load_batch(int64_t batch_index) {
  Result result;
  try {
    const auto size = static_cast<int64_t>(order_.size());
    int64_t begin = batch_index * options_.batch_size;
    int64_t end = std::min(begin + options_.batch_size, size);
    if (options_.world_size > 1) {
      const int64_t share = (end - begin) / options_.world_size;
      begin += options_.rank * share;
      end = begin + share;
    }
    torch::Tensor batch;  // from the pool, filled slot by slot
    int64_t filled = 0;
    std::vector<int64_t> labels, indices;
    for (int64_t position = begin; position < end; ++position) {
      const int64_t index = order_[static_cast<size_t>(position)];
      try {
        Sample sample = dataset_->get(static_cast<size_t>(index));
        transforms::Rng rng(sample_seed(options_.seed, epoch_, index));
        try {
          if (!batch.defined()) {
            auto image = transform_ ? transform_->apply(sample.image, rng) : sample.image;
            std::vector<int64_t> sizes{end - begin};
            for (int64_t d : image.sizes()) sizes.push_back(d);
            batch = batch_buffer(sizes, image.scalar_type());
            batch[0].copy_(image);
          } else if (transform_) {
            transform_->apply_into(sample.image, rng, batch[filled]);
          } else {
            TORCH_CHECK(sample.image.sizes() == batch[filled].sizes(), "image shape ",
                        sample.image.sizes(), ", the batch's ", batch[filled].sizes());
            batch[filled].copy_(sample.image);
          }
        } catch (const c10::Error& e) {
          throw std::runtime_error("sample " + dataset_->sample_source(static_cast<size_t>(index)) +
                                   ": " + e.what_without_backtrace() +
                                   " (images of different sizes need a resize or crop)");
        }
        labels.push_back(sample.label);
        indices.push_back(index);
        ++filled;
      } catch (const DecodeError& e) {
        if (options_.strict) throw;
        record_skip(index, e.what());
      }
    }
    if (filled > 0) {
      if (filled < batch.size(0)) batch = batch.narrow(0, 0, filled);
      result.batch = Batch{batch, torch::tensor(labels, torch::kLong), std::move(indices)};
    }
  } catch (...) {
    result.error = std::current_exception();
  }
  return result;
}

std::unique_ptr<Loader> square_image_loader(DatasetPtr source, int64_t image_size, int64_t workers,
                                            bool strict) {
  LoaderOptions options;
  options.batch_size = 32;
  options.workers = std::max<int64_t>(1, workers);
  options.shuffle = false;
  options.prefetch_batches = 2 * options.workers + 2;
  options.strict = strict;
  auto prepare = std::make_shared<transforms::Compose>(
      std::vector<transforms::TransformPtr>{std::make_shared<transforms::ResizeShorter>(image_size),
                                            std::make_shared<transforms::CenterCrop>(image_size)});
  return std::make_unique<Loader>(std::move(source), prepare, options);
}

}  // namespace alexnet::data
