#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace alexnet::data {

/// One example: an RGB image [3, H, W] uint8 and its class index.
struct Sample {
  torch::Tensor image;
  int64_t label = 0;
};

/// Statistics of a training set, on the 0..255 pixel scale.
struct DatasetStats {
  /// Per-channel mean (R, G, B).
  std::vector<double> mean;
  /// Per-channel standard deviation.
  std::vector<double> std;
  /// Eigenvalues of the RGB covariance of pixels in [0, 1], times 255 (the scale
  /// transforms::PcaLighting expects), descending, [3] float64.
  torch::Tensor eigenvalues;
  /// The matching unit eigenvectors, one per column, [3, 3] float64.
  torch::Tensor eigenvectors;
  /// How many images the statistics were computed from.
  int64_t images = 0;
};

/// An image that could not be read or decoded; the message names the file.
class DecodeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A random-access image data set. Implementations are immutable after construction, so
/// get() may be called from several threads at once.
class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual size_t size() const = 0;
  /// The decoded image, [3, H, W] uint8 RGB, and its label. Thread-safe. Throws DecodeError
  /// naming the file when the image cannot be read or decoded.
  virtual Sample get(size_t index) const = 0;
  /// The label without decoding the image.
  virtual int64_t label(size_t index) const = 0;
  /// Class names, indexed by label.
  virtual const std::vector<std::string>& class_names() const = 0;
  /// Where sample `index` comes from: a path, or "file#index".
  virtual std::string sample_source(size_t index) const = 0;
  /// Statistics stored with the data (packed files); nullopt where none are stored.
  virtual std::optional<DatasetStats> stats() const { return std::nullopt; }
};

/// A data set that holds every sample's label and its class names in memory, which give
/// size(), label() and class_names(); subclasses fill labels_ and class_names_ when
/// constructed.
class LabelledDataset : public Dataset {
 public:
  size_t size() const override { return labels_.size(); }
  int64_t label(size_t index) const override { return labels_.at(index); }
  const std::vector<std::string>& class_names() const override { return class_names_; }

 protected:
  std::vector<int64_t> labels_;
  std::vector<std::string> class_names_;
};

using DatasetPtr = std::shared_ptr<const Dataset>;

/// The default limit on the pixels (width x height) of one image file: 100 megapixels, more
/// than any camera's photo, far less than what a small file can declare.
inline constexpr int64_t kDefaultMaxImagePixels = 100'000'000;

/// Where Debian's dataset-fashion-mnist installs its files.
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

/// The ten Fashion-MNIST class names, by label.
const std::vector<std::string>& fashion_mnist_class_names();

/// How open_dataset() reads a source.
struct DatasetOptions {
  /// "train", or "val" / "test" (synonyms).
  std::string split = "train";
  /// Image folders: the shorter side is rescaled to this and the central square kept, as the
  /// paper prepared ImageNet (256). 0 keeps the images as they are.
  int64_t image_size = 256;
  /// Image folders, split "val": a folder in the ImageNet layout or a list file of
  /// "relative/path label" lines. Empty: SOURCE/val when SOURCE holds train/ and val/.
  std::string val_source;
  /// Root that the paths of a val list file are relative to; empty: the list file's folder.
  std::string val_root;
  /// Optional file of class names: lines "n01440764 tench, Tinca tinca" (the WordNet synset
  /// words) that map each folder name to a name, every folder named; or, when no line names
  /// a folder, one name per line in label order.
  std::string class_names_file;
  /// IDX data: channels per image (1, or 3 with the grey value replicated).
  int64_t channels = 3;
  /// Image folders: an image whose header declares more pixels (width x height) is refused
  /// before it is decoded (DecodeError, so the loader skips it). 0: no limit.
  int64_t max_image_pixels = kDefaultMaxImagePixels;
};

/// Opens a data source:
///  - a folder in the ImageNet layout, root/<class>/<image> (or root/train, root/val holding
///    that layout), read like torchvision's ImageFolder;
///  - a packed file written by `alexnet prepare` (raw images need no OpenCV);
///  - a shard folder written by `alexnet prepare --shard-size N`, or its index.json;
///  - a folder holding IDX files with MNIST / Fashion-MNIST names
///    ({train,t10k}-images-idx3-ubyte[.gz], ...);
///  - the word "fashion-mnist": Debian's copy in kFashionMnistDir.
/// Throws std::runtime_error naming the path when the source is missing or malformed.
DatasetPtr open_dataset(const std::string& source, const DatasetOptions& options);
/// open_dataset with default options for `split` ("train", "val" or "test").
DatasetPtr open_dataset(const std::string& source, const std::string& split);

/// The first min(n, size) samples of `dataset` (for quick runs and tests). Image folders and
/// packed files are sorted by class, so this may hold few classes: stratified_subset() keeps
/// them all.
DatasetPtr subset(DatasetPtr dataset, size_t n);
/// The samples of `dataset` at `indices`, in that order.
DatasetPtr subset(DatasetPtr dataset, std::vector<size_t> indices);

/// min(n, size) indices of `dataset`, ascending, drawn per class: class c with n_c of the N
/// samples gets floor(n n_c / N) of them, or one more (the samples left over go to the classes
/// with the largest fractional parts of n n_c / N, ties to the lower label), drawn uniformly
/// at random within the class. The result depends on the labels and the seed only. Reads
/// labels, never images.
std::vector<size_t> stratified_indices(const Dataset& dataset, size_t n, uint64_t seed);

/// Two disjoint views of one data set, each in the data set's order.
struct StratifiedSplit {
  /// Every sample not selected.
  DatasetPtr rest;
  /// The n samples of stratified_indices(dataset, n, seed).
  DatasetPtr selected;
};

/// Holds out n samples with every class in proportion (a validation set that represents
/// every class), leaving the rest. Throws when n >= size (nothing would be left).
StratifiedSplit stratified_split(DatasetPtr dataset, size_t n, uint64_t seed);
/// The samples of stratified_indices(dataset, n, seed): a smaller data set with every class
/// in proportion; equal to stratified_split(dataset, n, seed).selected for n < size.
DatasetPtr stratified_subset(DatasetPtr dataset, size_t n, uint64_t seed);

/// How the class names of a data set differ from a model's, in words: the model's classes
/// missing from the data, the data's classes the model lacks, or "the same classes in another
/// order". Empty when the names are equal, index for index.
std::string describe_class_difference(const std::vector<std::string>& data_classes,
                                      const std::vector<std::string>& model_classes);

/// `dataset` with its labels as indices into `model_classes`, matched by class name, and
/// model_classes as its class names (a model's classes missing from the data are fine).
/// Throws std::invalid_argument naming every class of the data that model_classes lacks.
DatasetPtr relabel_by_name(DatasetPtr dataset, const std::vector<std::string>& model_classes);

/// Per-channel mean/std and the RGB covariance eigen-decomposition over up to `max_images`
/// images drawn without replacement (seeded); all images when max_images is 0 or larger than
/// the set. Images that fail to decode are left out; any other error (an image that is not
/// [1 or 3, H, W], say) is rethrown here, naming the sample.
DatasetStats compute_stats(const Dataset& dataset, size_t max_images, uint64_t seed);

/// Accumulates pixel sums for DatasetStats (used by compute_stats and `alexnet prepare`).
class StatsAccumulator {
 public:
  /// image: [3, H, W] uint8 or float (0..255 scale).
  void add(const torch::Tensor& image);
  void merge(const StatsAccumulator& other);
  /// Mean, std and eigen-decomposition of what was added; throws if nothing was.
  DatasetStats finish() const;
  /// The sums: images, pixels, the three channel sums, the nine channel products (row-major);
  /// from_sums() restores them exactly (packed shards store them, so that a resumed `prepare`
  /// merges the same numbers as an uninterrupted one).
  std::array<double, 14> sums() const;
  static StatsAccumulator from_sums(const std::array<double, 14>& sums);
  int64_t images() const { return images_; }

 private:
  double pixels_ = 0;
  int64_t images_ = 0;
  std::array<double, 3> sum_{};
  std::array<double, 9> products_{};
};

}  // namespace alexnet::data
