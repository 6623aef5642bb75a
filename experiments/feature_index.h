#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace alexnet::experiments {

/// Features of every image of a data set (the paper's Figure 4 retrieval), as written by
/// `alexnet features` and read by `alexnet neighbours`.
struct FeatureIndex {
  /// One feature vector per image (fc7 after ReLU), [N, D] float32.
  torch::Tensor features;
  /// Class index of each image, [N] int64.
  torch::Tensor labels;
  /// The preprocessed model input of each image, area-downsampled and flattened, [N, P]
  /// float32 (the raw-pixel baseline); undefined when not stored.
  torch::Tensor pixels;
  /// Class names, by label.
  std::vector<std::string> class_names;
  /// Where each image comes from (data::Dataset::sample_source), [N].
  std::vector<std::string> descriptions;
  /// Position of each image in the data set it was read from, [N].
  std::vector<int64_t> dataset_indices;
  /// The data source and split the images were read from (data::open_dataset arguments).
  std::string data_source;
  std::string split;
  /// The TorchScript model the features were computed with.
  std::string model_path;

  int64_t size() const { return features.defined() ? features.size(0) : 0; }
  /// Throws naming the inconsistency (row counts, dtypes, labels out of range).
  void validate() const;
};

/// Writes `index` atomically (temporary file, then rename). Format: the 8 bytes "ALXFIDX1", a
/// uint64 header length, a JSON header (names, descriptions, sizes), then features float32
/// [N, D], labels int64 [N] and pixels float32 [N, P] in the host's (little-endian) byte order.
void save_feature_index(const FeatureIndex& index, const std::string& path);

/// Reads a file written by save_feature_index; throws std::runtime_error naming the file when
/// it is missing, not an index, or truncated.
FeatureIndex load_feature_index(const std::string& path);

/// One retrieved item.
struct Neighbour {
  int64_t index = 0;
  double distance = 0;
};

/// The k nearest rows of `vectors` [N, D] to each row of `queries` [Q, D] by Euclidean
/// distance, nearest first (ties by row index, except that a query's own row, given in
/// `self` [Q] or empty, comes first among equals). Distances are recomputed exactly (float64)
/// for the returned rows. Returns Q lists of min(k, N) neighbours.
std::vector<std::vector<Neighbour>> nearest_neighbours(const torch::Tensor& vectors,
                                                       const torch::Tensor& queries, int64_t k,
                                                       const std::vector<int64_t>& self = {});

/// Mean precision@k over the set: for every row i of `vectors` [N, D], the share of its k
/// nearest other rows (Euclidean; row i itself left out) whose label equals labels[i], averaged
/// over i. labels: [N] int64. Needs N > k. Distances are computed in blocks of `chunk` rows.
double precision_at_k(const torch::Tensor& vectors, const torch::Tensor& labels, int64_t k,
                      int64_t chunk = 512);

}  // namespace alexnet::experiments
