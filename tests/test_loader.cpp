// Tests of data/loader: determinism across worker counts, epochs, resuming, bad samples.
#include <catch2/catch.hpp>

#include <set>

#include <torch/torch.h>

#include "data/loader.h"
#include "transforms/transforms.h"

namespace test_loader {

using namespace alexnet;
using namespace alexnet::data;

namespace {

// Image i is [3, 12, 14] with values derived from i; label i % 4; the indices in `bad` throw
// DecodeError.
class SyntheticDataset : public Dataset {
 public:
  SyntheticDataset(size_t size, std::set<size_t> bad = {}) : size_(size), bad_(std::move(bad)) {}
  size_t size() const override { return size_; }
  Sample get(size_t index) const override {
    if (bad_.count(index)) throw DecodeError("cannot decode synthetic#" + std::to_string(index));
    auto image = (torch::arange(3 * 12 * 14, torch::kLong).view({3, 12, 14}) +
                  7 * static_cast<int64_t>(index)) %
                 256;
    return Sample{image.to(torch::kByte), label(index)};
  }
  int64_t label(size_t index) const override { return static_cast<int64_t>(index % 4); }
  const std::vector<std::string>& class_names() const override { return names_; }
  std::string sample_source(size_t index) const override {
    return "synthetic#" + std::to_string(index);
  }

 private:
  size_t size_;
  std::set<size_t> bad_;
  std::vector<std::string> names_{"a", "b", "c", "d"};
};

transforms::TransformPtr augmentation() {
  transforms::PipelineOptions options;
  options.resize = 0;
  options.crop = 8;
  options.mean = {100, 110, 120};
  return transforms::training_pipeline(options);
}

// Batches of `batch_size` read by `workers` threads, the other options at their defaults.
LoaderOptions batches_of(int64_t batch_size, int64_t workers) {
  LoaderOptions options;
  options.batch_size = batch_size;
  options.workers = workers;
  return options;
}

std::vector<Batch> epoch(Loader& loader, int64_t number, int64_t skip = 0) {
  loader.start_epoch(number, skip);
  std::vector<Batch> batches;
  while (auto batch = loader.next()) batches.push_back(std::move(*batch));
  return batches;
}

bool same(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].indices != b[i].indices || !torch::equal(a[i].images, b[i].images) ||
        !torch::equal(a[i].labels, b[i].labels)) {
      return false;
    }
  }
  return true;
}

}  // namespace

TEST_CASE("Batches and augmentations do not depend on the number of workers", "[loader]") {
  auto dataset = std::make_shared<SyntheticDataset>(37);
  LoaderOptions options;
  options.batch_size = 5;
  options.seed = 42;
  std::vector<std::vector<Batch>> runs;
  for (int64_t workers : {0, 1, 3}) {
    options.workers = workers;
    Loader loader(dataset, augmentation(), options);
    CHECK(loader.batches_per_epoch() == 8);
    auto first = epoch(loader, 0);
    auto second = epoch(loader, 1);
    REQUIRE(first.size() == 8);
    CHECK(first.back().images.size(0) == 2);
    CHECK(first[0].images.sizes() == c10::IntArrayRef({5, 3, 8, 8}));
    CHECK(first[0].images.scalar_type() == torch::kFloat);
    CHECK(first[0].labels.scalar_type() == torch::kLong);
    CHECK_FALSE(same(first, second));  // reshuffled and re-augmented
    first.insert(first.end(), second.begin(), second.end());
    runs.push_back(std::move(first));
  }
  CHECK(same(runs[0], runs[1]));
  CHECK(same(runs[1], runs[2]));
  // A different seed gives different batches.
  options.seed = 43;
  Loader other(dataset, augmentation(), options);
  CHECK_FALSE(same(epoch(other, 0), std::vector<Batch>(runs[0].begin(), runs[0].begin() + 8)));
}

TEST_CASE("Every sample comes once per epoch with its own label", "[loader]") {
  auto dataset = std::make_shared<SyntheticDataset>(23);
  LoaderOptions options = batches_of(4, /*workers=*/2);
  Loader loader(dataset, nullptr, options);
  for (int64_t e = 0; e < 3; ++e) {
    std::multiset<int64_t> seen;
    for (const auto& batch : epoch(loader, e)) {
      CHECK(batch.images.scalar_type() == torch::kByte);
      for (size_t k = 0; k < batch.indices.size(); ++k) {
        seen.insert(batch.indices[k]);
        CHECK(batch.labels[static_cast<int64_t>(k)].item<int64_t>() == batch.indices[k] % 4);
        CHECK(torch::equal(batch.images[static_cast<int64_t>(k)],
                           dataset->get(static_cast<size_t>(batch.indices[k])).image));
      }
    }
    CHECK(seen.size() == 23);
    CHECK(std::set<int64_t>(seen.begin(), seen.end()).size() == 23);
  }
  options.shuffle = false;
  options.drop_last = true;
  Loader ordered(dataset, nullptr, options);
  auto batches = epoch(ordered, 5);
  CHECK(ordered.batches_per_epoch() == 5);
  REQUIRE(batches.size() == 5);
  CHECK(batches[1].indices == std::vector<int64_t>{4, 5, 6, 7});
}

TEST_CASE("start_epoch can skip batches to resume mid-epoch", "[loader]") {
  auto dataset = std::make_shared<SyntheticDataset>(30);
  LoaderOptions options = batches_of(4, /*workers=*/2);
  options.seed = 7;
  Loader loader(dataset, augmentation(), options);
  auto full = epoch(loader, 3);
  auto resumed = epoch(loader, 3, 5);
  REQUIRE(resumed.size() == full.size() - 5);
  CHECK(same(resumed, std::vector<Batch>(full.begin() + 5, full.end())));
  CHECK(epoch(loader, 3, 100).empty());
  // Abandoning an epoch halfway and starting another neither hangs nor leaks batches.
  loader.start_epoch(4);
  loader.next();
  CHECK(same(epoch(loader, 3), full));
}

TEST_CASE("Undecodable samples are skipped and counted, or thrown in strict mode", "[loader]") {
  auto dataset = std::make_shared<SyntheticDataset>(12, std::set<size_t>{3, 4, 5, 6, 11});
  LoaderOptions options = batches_of(4, /*workers=*/3);
  options.shuffle = false;
  Loader loader(dataset, augmentation(), options);
  auto batches = epoch(loader, 0);
  REQUIRE(batches.size() == 3);
  CHECK(batches[0].indices == std::vector<int64_t>{0, 1, 2});
  CHECK(batches[1].indices == std::vector<int64_t>{7});
  CHECK(batches[2].indices == std::vector<int64_t>{8, 9, 10});
  CHECK(loader.skipped() == 5);
  // A batch whose every sample fails is left out.
  auto all_bad = std::make_shared<SyntheticDataset>(8, std::set<size_t>{4, 5, 6, 7});
  Loader partial(all_bad, nullptr, options);
  CHECK(epoch(partial, 0).size() == 1);

  options.strict = true;
  Loader strict(dataset, augmentation(), options);
  strict.start_epoch(0);
  CHECK_THROWS_WITH(strict.next(), Catch::Contains("synthetic#3"));
}

TEST_CASE("one_line keeps a file name on one line of a tab-separated log", "[loader]") {
  using alexnet::data::one_line;
  CHECK(one_line("a b/c.jpg") == "a b/c.jpg");
  CHECK(one_line("x\ty\nz\r\\") == "x\\ty\\nz\\r\\\\");
  CHECK(one_line(std::string("\x01\x7f\xc3\xa9", 4)) == "\\x01\\x7f\xc3\xa9");  // UTF-8 kept
}

TEST_CASE("Errors in transforms reach the consumer instead of hanging", "[loader]") {
  auto dataset = std::make_shared<SyntheticDataset>(10);
  LoaderOptions options = batches_of(4, /*workers=*/2);
  transforms::PipelineOptions too_big;
  too_big.resize = 0;
  too_big.crop = 50;
  Loader loader(dataset, transforms::training_pipeline(too_big), options);
  loader.start_epoch(0);
  CHECK_THROWS_WITH(loader.next(), Catch::Contains("RandomCrop(50)"));
  LoaderOptions empty_batches;
  empty_batches.batch_size = 0;
  CHECK_THROWS_WITH(Loader(dataset, nullptr, empty_batches), Catch::Contains("batch size"));
}

TEST_CASE("Whatever a worker throws reaches the consumer", "[loader]") {
  // Not even an std::exception: caught in the worker thread, rethrown by next().
  class Throwing : public SyntheticDataset {
   public:
    using SyntheticDataset::SyntheticDataset;
    Sample get(size_t index) const override {
      if (index == 5) throw 42;
      return SyntheticDataset::get(index);
    }
  };
  auto dataset = std::make_shared<Throwing>(12);
  LoaderOptions options = batches_of(4, /*workers=*/2);
  options.shuffle = false;
  Loader loader(dataset, nullptr, options);
  loader.start_epoch(0);
  CHECK(loader.next().has_value());
  CHECK_THROWS_AS(loader.next(), int);
}

TEST_CASE("Batch memory is reused only when no batch or view uses it any more", "[loader]") {
  auto dataset = std::make_shared<SyntheticDataset>(40);
  LoaderOptions options = batches_of(4, /*workers=*/2);
  options.prefetch_batches = 2;
  Loader loader(dataset, augmentation(), options);
  loader.start_epoch(0);
  torch::Tensor view, copy;
  const void* first_memory = nullptr;
  {
    auto batch = loader.next();
    first_memory = batch->images.data_ptr();
    view = batch->images[1];  // a view keeps the storage alive
    copy = view.clone();
  }
  std::set<const void*> memories;
  while (auto batch = loader.next()) memories.insert(batch->images.data_ptr());
  CHECK(torch::equal(view, copy));
  CHECK(memories.count(first_memory) == 0);
  CHECK(memories.size() < 9);  // buffers were recycled
}

}  // namespace test_loader
