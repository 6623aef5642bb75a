#include "data/dataset.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <filesystem>
#include <map>
#include <numeric>
#include <thread>

#include "data/cifar10.h"
#include "data/idx.h"
#include "data/image_folder.h"
#include "data/loader.h"
#include "data/packed.h"
#include "data/shards.h"

namespace alexnet::data {
namespace {

namespace fs = std::filesystem;

bool is_val_split(const std::string& split) { return split == "val" || split == "test"; }

void check_split(const std::string& split) {
  TORCH_CHECK(split == "train" || is_val_split(split), "unknown split '", split,
              "' (expected train, val or test)");
}

bool holds_idx_files(const std::string& dir) {
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(dir, error)) {
    const std::string name = entry.path().filename().string();
    if (name.find("idx3-ubyte") != std::string::npos) return true;
  }
  return false;
}

DatasetPtr open_idx(const std::string& dir, const std::string& split, int64_t channels) {
  const auto [images, labels] = find_idx_files(dir, split);
  std::vector<std::string> names;
  if (ascii_lower(fs::absolute(dir).string()).find("fashion") != std::string::npos) {
    names = fashion_mnist_class_names();
  } else {
    for (int i = 0; i < 10; ++i) names.push_back(std::to_string(i));
  }
  return std::make_shared<IdxDataset>(images, labels, names, channels);
}

// root/train and root/val (or root/test) holding the ImageNet layout.
bool has_split_folders(const std::string& root) {
  std::error_code error;
  return fs::is_directory(root + "/train", error) &&
         (fs::is_directory(root + "/val", error) || fs::is_directory(root + "/test", error));
}

std::string split_folder(const std::string& root, const std::string& split) {
  if (split == "train") return root + "/train";
  std::error_code error;
  if (fs::is_directory(root + "/" + split, error)) return root + "/" + split;
  return root + (split == "val" ? "/test" : "/val");
}

std::shared_ptr<ImageFolder> with_names(std::shared_ptr<ImageFolder> set,
                                        const DatasetOptions& options) {
  if (!options.class_names_file.empty()) set->load_class_names(options.class_names_file);
  return set;
}

class Subset : public Dataset {
 public:
  Subset(DatasetPtr base, std::vector<size_t> indices)
      : base_(std::move(base)), indices_(std::move(indices)) {
    TORCH_CHECK(base_ != nullptr, "subset of a null data set");
    for (size_t i : indices_) {
      TORCH_CHECK(i < base_->size(), "subset: index ", i, " out of range (", base_->size(), ")");
    }
  }
  size_t size() const override { return indices_.size(); }
  Sample get(size_t index) const override { return base_->get(indices_.at(index)); }
  int64_t label(size_t index) const override { return base_->label(indices_.at(index)); }
  const std::vector<std::string>& class_names() const override { return base_->class_names(); }
  std::string sample_source(size_t index) const override {
    return base_->sample_source(indices_.at(index));
  }
  std::optional<DatasetStats> stats() const override { return base_->stats(); }

 private:
  DatasetPtr base_;
  std::vector<size_t> indices_;
};

// A data set's samples, labelled by a mapping from its labels to another list of classes.
class Relabelled : public Dataset {
 public:
  Relabelled(DatasetPtr base, std::vector<int64_t> mapping, std::vector<std::string> names)
      : base_(std::move(base)), mapping_(std::move(mapping)), names_(std::move(names)) {}
  size_t size() const override { return base_->size(); }
  Sample get(size_t index) const override {
    Sample sample = base_->get(index);
    sample.label = mapped(sample.label);
    return sample;
  }
  int64_t label(size_t index) const override { return mapped(base_->label(index)); }
  const std::vector<std::string>& class_names() const override { return names_; }
  std::string sample_source(size_t index) const override { return base_->sample_source(index); }
  std::optional<DatasetStats> stats() const override { return base_->stats(); }

 private:
  int64_t mapped(int64_t label) const { return mapping_.at(static_cast<size_t>(label)); }
  DatasetPtr base_;
  std::vector<int64_t> mapping_;
  std::vector<std::string> names_;
};

// The names of `names` that `others` lacks, quoted and comma-separated.
std::string names_missing_from(const std::vector<std::string>& names,
                               const std::vector<std::string>& others) {
  std::string out;
  for (const auto& name : names) {
    if (std::find(others.begin(), others.end(), name) != others.end()) continue;
    out += (out.empty() ? "'" : ", '") + name + "'";
  }
  return out;
}

}  // namespace

const std::vector<std::string>& fashion_mnist_class_names() {
  static const std::vector<std::string> names{"T-shirt/top", "Trouser",   "Pullover", "Dress",
                                              "Coat",        "Sandal",    "Shirt",    "Sneaker",
                                              "Bag",         "Ankle boot"};
  return names;
}

namespace {

DatasetPtr open_fashion_mnist(const DatasetOptions& options) {
  std::error_code error;
  if (!fs::is_directory(kFashionMnistDir, error)) {
    throw std::runtime_error(std::string("Fashion-MNIST is not installed in ") + kFashionMnistDir +
                             " (sudo apt-get install dataset-fashion-mnist)");
  }
  return open_idx(kFashionMnistDir, options.split, options.channels);
}

// options.val_source, the validation data given apart from `source` (the training data).
DatasetPtr open_val_source(const std::string& source, const DatasetOptions& options) {
  std::error_code error;
  const std::string& v = options.val_source;
  if (!fs::exists(v, error)) throw std::runtime_error("validation data " + v + " does not exist");
  if (is_packed_file(v)) return std::make_shared<PackedDataset>(v);
  if (is_shard_source(v)) return std::make_shared<ShardedDataset>(v);
  if (fs::is_directory(v, error) && holds_idx_files(v))
    return open_idx(v, "test", options.channels);
  // An image folder or a list file: labels are indices of the training classes.
  const std::string train_root = has_split_folders(source) ? source + "/train" : source;
  TORCH_CHECK(fs::is_directory(train_root, error), "validation data ", v,
              " needs the training image folder for its classes, but ", source, " is not a folder");
  auto classes = find_classes(train_root);
  if (fs::is_directory(v, error)) {
    return with_names(
        std::make_shared<ImageFolder>(v, options.image_size, classes, options.max_image_pixels),
        options);
  }
  const std::string root =
      options.val_root.empty() ? fs::path(v).parent_path().string() : options.val_root;
  return with_names(ImageFolder::from_list(v, root.empty() ? "." : root, classes,
                                           options.image_size, options.max_image_pixels),
                    options);
}

// A packed file or shard folder written by `alexnet prepare`, which must hold options.split.
DatasetPtr open_prepared(const std::string& source, const DatasetOptions& options) {
  const bool val = is_val_split(options.split);
  if (is_packed_file(source)) {
    auto set = std::make_shared<PackedDataset>(source);
    const std::string& stored = set->split();
    if (is_val_split(stored) != val) {
      throw std::runtime_error("packed file " + source + " holds the " + stored + " split, not " +
                               options.split +
                               " (give the other split's packed file as the validation source)");
    }
    return set;
  }
  auto set = std::make_shared<ShardedDataset>(source);
  if (is_val_split(set->split()) != val) {
    throw std::runtime_error("shard folder " + source + " holds the " + set->split() +
                             " split, not " + options.split +
                             " (give the other split's shard folder as the validation source)");
  }
  return set;
}

// A folder of IDX files, of train/ and val/ image folders, or of class folders.
DatasetPtr open_folder(const std::string& source, const DatasetOptions& options) {
  std::error_code error;
  const bool val = is_val_split(options.split);
  if (!fs::is_directory(source, error)) {
    throw std::runtime_error("data source " + source +
                             " is neither a folder nor a packed file written by `alexnet prepare`");
  }
  if (holds_idx_files(source)) return open_idx(source, options.split, options.channels);
  if (has_split_folders(source)) {
    const std::string folder = split_folder(source, options.split);
    std::vector<std::string> classes;
    if (val) classes = find_classes(source + "/train");
    return with_names(std::make_shared<ImageFolder>(folder, options.image_size, classes,
                                                    options.max_image_pixels),
                      options);
  }
  if (val) {
    throw std::runtime_error("image folder " + source +
                             " has no val/ folder: give the validation data as a folder or a "
                             "list file of \"relative/path label\" lines");
  }
  return with_names(
      std::make_shared<ImageFolder>(source, options.image_size, std::vector<std::string>{},
                                    options.max_image_pixels),
      options);
}

}  // namespace

DatasetPtr open_dataset(const std::string& source, const DatasetOptions& options) {
  check_split(options.split);
  if (source == "fashion-mnist") return open_fashion_mnist(options);
  std::error_code error;
  if (!fs::exists(source, error)) {
    throw std::runtime_error("data source " + source +
                             " does not exist (expected an image folder, a packed file from "
                             "`alexnet prepare`, a folder of IDX files, or fashion-mnist)");
  }
  if (is_val_split(options.split) && !options.val_source.empty()) {
    return open_val_source(source, options);
  }
  if (is_cifar10_folder(source)) return open_cifar10(source, options.split);
  if (is_packed_file(source) || is_shard_source(source)) return open_prepared(source, options);
  return open_folder(source, options);
}

DatasetPtr open_dataset(const std::string& source, const std::string& split) {
  DatasetOptions options;
  options.split = split;
  return open_dataset(source, options);
}

DatasetPtr subset(DatasetPtr dataset, size_t n) {
  TORCH_CHECK(dataset != nullptr, "subset of a null data set");
  std::vector<size_t> indices(std::min(n, dataset->size()));
  for (size_t i = 0; i < indices.size(); ++i) indices[i] = i;
  return std::make_shared<Subset>(std::move(dataset), std::move(indices));
}

DatasetPtr subset(DatasetPtr dataset, std::vector<size_t> indices) {
  return std::make_shared<Subset>(std::move(dataset), std::move(indices));
}

std::string describe_class_difference(const std::vector<std::string>& data_classes,
                                      const std::vector<std::string>& model_classes) {
  if (data_classes == model_classes) return "";
  const std::string missing = names_missing_from(model_classes, data_classes);
  const std::string extra = names_missing_from(data_classes, model_classes);
  std::string out;
  if (!missing.empty()) out = "the model's classes " + missing + " are missing from the data";
  if (!extra.empty()) {
    out += (out.empty() ? "" : "; ") + std::string("the data's classes ") + extra +
           " are not among the model's";
  }
  return out.empty() ? "the data holds the model's classes in another order" : out;
}

DatasetPtr relabel_by_name(DatasetPtr dataset, const std::vector<std::string>& model_classes) {
  TORCH_CHECK(dataset != nullptr, "relabel_by_name of a null data set");
  const std::string extra = names_missing_from(dataset->class_names(), model_classes);
  if (!extra.empty()) {
    throw std::invalid_argument("the data's classes " + extra +
                                " are not among the model's, so their images cannot be scored");
  }
  std::vector<int64_t> mapping;
  for (const auto& name : dataset->class_names()) {
    const auto found = std::find(model_classes.begin(), model_classes.end(), name);
    mapping.push_back(static_cast<int64_t>(found - model_classes.begin()));
  }
  return std::make_shared<Relabelled>(std::move(dataset), std::move(mapping), model_classes);
}

void StatsAccumulator::add(const torch::Tensor& image) {
  TORCH_CHECK(image.dim() == 3 && image.size(0) == 3, "statistics need [3, H, W] images, got ",
              image.sizes());
  const auto x = image.reshape({3, -1}).to(torch::kDouble);
  const auto sums = x.sum(1).contiguous();
  const auto products = torch::mm(x, x.t()).contiguous();
  for (int c = 0; c < 3; ++c) sum_[c] += sums.data_ptr<double>()[c];
  for (int k = 0; k < 9; ++k) products_[k] += products.data_ptr<double>()[k];
  pixels_ += static_cast<double>(x.size(1));
  ++images_;
}

void StatsAccumulator::merge(const StatsAccumulator& other) {
  for (int c = 0; c < 3; ++c) sum_[c] += other.sum_[c];
  for (int k = 0; k < 9; ++k) products_[k] += other.products_[k];
  pixels_ += other.pixels_;
  images_ += other.images_;
}

std::array<double, 14> StatsAccumulator::sums() const {
  std::array<double, 14> out{static_cast<double>(images_), pixels_};
  std::copy(sum_.begin(), sum_.end(), out.begin() + 2);
  std::copy(products_.begin(), products_.end(), out.begin() + 5);
  return out;
}

StatsAccumulator StatsAccumulator::from_sums(const std::array<double, 14>& sums) {
  StatsAccumulator out;
  out.images_ = static_cast<int64_t>(sums[0]);
  out.pixels_ = sums[1];
  std::copy(sums.begin() + 2, sums.begin() + 5, out.sum_.begin());
  std::copy(sums.begin() + 5, sums.end(), out.products_.begin());
  return out;
}

DatasetStats StatsAccumulator::finish() const {
  TORCH_CHECK(images_ > 0, "statistics of zero images");
  DatasetStats stats;
  stats.images = images_;
  auto covariance = torch::empty({3, 3}, torch::kDouble);
  for (int c = 0; c < 3; ++c) stats.mean.push_back(sum_[c] / pixels_);
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) {
      covariance[i][j] = products_[3 * i + j] / pixels_ - stats.mean[i] * stats.mean[j];
    }
  }
  for (int c = 0; c < 3; ++c) {
    stats.std.push_back(std::sqrt(std::max(0.0, covariance[c][c].item<double>())));
  }
  // Eigen-decomposition of the covariance of pixels in [0, 1], eigenvalues scaled by 255
  // (see DatasetStats), in descending order.
  auto [values, vectors] = torch::linalg_eigh(covariance / (255.0 * 255.0), "L");
  values = values.flip({0}).clamp_min(0) * 255.0;
  vectors = vectors.flip({1}).contiguous();
  for (int k = 0; k < 3; ++k) {  // a deterministic sign: the largest component positive
    auto column = vectors.select(1, k);
    if (column[column.abs().argmax()].item<double>() < 0) column.neg_();
  }
  stats.eigenvalues = values.contiguous();
  stats.eigenvectors = vectors;
  return stats;
}

DatasetStats compute_stats(const Dataset& dataset, size_t max_images, uint64_t seed) {
  const size_t n = dataset.size();
  const size_t count = (max_images == 0 || max_images > n) ? n : max_images;
  const auto order = Loader::permutation(n, seed, /*epoch=*/0, /*shuffle=*/count < n);
  const size_t threads =
      std::max<size_t>(1, std::min<size_t>(std::thread::hardware_concurrency(), count / 16 + 1));
  std::vector<StatsAccumulator> partial(threads);
  // The first image each thread could not decode: named when none could be.
  std::vector<std::string> undecodable(threads);
  // Whatever a thread throws is kept here and rethrown by the caller, never left to escape
  // the thread (which would end the process).
  std::vector<std::exception_ptr> errors(threads);
  std::atomic<bool> failed{false};
  std::vector<std::thread> pool;
  for (size_t t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      try {
        for (size_t i = t; i < count && !failed; i += threads) {
          const auto index = static_cast<size_t>(order[i]);
          try {
            auto image = dataset.get(index).image;
            if (image.dim() == 3 && image.size(0) == 1) {
              image = image.expand({3, image.size(1), image.size(2)});
            }
            partial[t].add(image);
          } catch (const DecodeError& e) {
            if (undecodable[t].empty()) undecodable[t] = e.what();
          } catch (const c10::Error& e) {
            throw std::runtime_error("statistics of " + dataset.sample_source(index) + ": " +
                                     e.what_without_backtrace());
          }
        }
      } catch (...) {
        errors[t] = std::current_exception();
        failed = true;
      }
    });
  }
  for (auto& thread : pool) thread.join();
  for (const auto& error : errors) {
    if (error) std::rethrow_exception(error);
  }
  for (size_t t = 1; t < threads; ++t) partial[0].merge(partial[t]);
  if (partial[0].images() == 0 && count > 0) {
    throw std::runtime_error("statistics: none of the " + std::to_string(count) +
                             " images read could be decoded; the first: " + undecodable[0]);
  }
  return partial[0].finish();
}

std::vector<size_t> stratified_indices(const Dataset& dataset, size_t n, uint64_t seed) {
  const size_t total = dataset.size();
  if (n >= total) {
    std::vector<size_t> all(total);
    std::iota(all.begin(), all.end(), size_t{0});
    return all;
  }
  std::map<int64_t, std::vector<size_t>> by_class;
  for (size_t i = 0; i < total; ++i) by_class[dataset.label(i)].push_back(i);
  // Largest remainder: every class gets the floor of its share n * size / total, and the
  // samples left over go to the classes with the largest fractional parts (ties: lower label).
  struct Share {
    int64_t label;
    size_t count;
    size_t remainder;  // numerator of the fractional part, over `total`
  };
  std::vector<Share> shares;
  size_t given = 0;
  for (const auto& [label, members] : by_class) {
    const auto exact = static_cast<unsigned __int128>(n) * members.size();
    shares.push_back(
        {label, static_cast<size_t>(exact / total), static_cast<size_t>(exact % total)});
    given += shares.back().count;
  }
  std::vector<size_t> order(shares.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return shares[a].remainder > shares[b].remainder; });
  for (size_t k = 0; given < n; ++k, ++given) ++shares[order[k]].count;
  // Within a class, a seeded partial Fisher-Yates shuffle picks the samples: the choice
  // depends on the seed, the class and its members only.
  std::vector<size_t> selected;
  selected.reserve(n);
  for (const auto& share : shares) {
    auto& members = by_class[share.label];
    transforms::Rng rng(Loader::sample_seed(seed, /*epoch=*/share.label, /*index=*/-2));
    for (size_t k = 0; k < share.count; ++k) {
      const size_t remaining = members.size() - k;
      const auto j =
          k + static_cast<size_t>((static_cast<unsigned __int128>(rng()) * remaining) >> 64);
      std::swap(members[k], members[j]);
      selected.push_back(members[k]);
    }
  }
  std::sort(selected.begin(), selected.end());
  return selected;
}

StratifiedSplit stratified_split(DatasetPtr dataset, size_t n, uint64_t seed) {
  TORCH_CHECK(dataset != nullptr, "stratified_split of a null data set");
  TORCH_CHECK(n < dataset->size(), "stratified_split: cannot hold out ", n, " of ", dataset->size(),
              " samples and keep any");
  auto selected = stratified_indices(*dataset, n, seed);
  std::vector<size_t> rest;
  rest.reserve(dataset->size() - n);
  auto next = selected.begin();
  for (size_t i = 0; i < dataset->size(); ++i) {
    if (next != selected.end() && *next == i) {
      ++next;
    } else {
      rest.push_back(i);
    }
  }
  StratifiedSplit split;
  split.rest = std::make_shared<Subset>(dataset, std::move(rest));
  split.selected = std::make_shared<Subset>(std::move(dataset), std::move(selected));
  return split;
}

DatasetPtr stratified_subset(DatasetPtr dataset, size_t n, uint64_t seed) {
  TORCH_CHECK(dataset != nullptr, "stratified_subset of a null data set");
  auto indices = stratified_indices(*dataset, n, seed);
  return std::make_shared<Subset>(std::move(dataset), std::move(indices));
}

}  // namespace alexnet::data
