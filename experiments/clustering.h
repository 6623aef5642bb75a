#pragma once

// Clustering by content (the paper's section 6.1): k-means on fc7 features or pixels, and the
// agreement of a clustering with the labels.

#include <cstdint>
#include <vector>

#include <torch/torch.h>

namespace alexnet::experiments {

struct KMeansOptions {
  int64_t k = 10;
  /// Lloyd iterations at most; the loop also stops when no assignment changes.
  int64_t max_iterations = 100;
  /// Seeds the k-means++ initialisation; the same seed and vectors give the same clustering.
  uint64_t seed = 0;
};

struct KMeansResult {
  /// Cluster of each vector, [N] int64 in 0..k-1.
  torch::Tensor assignments;
  /// [k, D] float32.
  torch::Tensor centroids;
  /// Sum of squared distances of the vectors to their centroids.
  double inertia = 0;
  int64_t iterations = 0;
  bool converged = false;
};

/// k-means of `vectors` [N, D] (float32, or converted to it): k-means++ initialisation (each
/// next centre drawn with probability proportional to the squared distance to the nearest
/// centre so far), then Lloyd iterations. A cluster that empties is given the vector farthest
/// from its centroid. Throws when k is not in 1..N or the vectors are not a non-empty matrix.
KMeansResult kmeans(const torch::Tensor& vectors, const KMeansOptions& options);

/// Adjusted Rand index of two labelings [N] int64 (non-negative): 1 for identical partitions
/// (whatever the label names), about 0 for independent ones, negative below chance.
/// Defined as 1 when both put everything in one cluster (or every item alone).
double adjusted_rand_index(const torch::Tensor& a, const torch::Tensor& b);

/// Normalised mutual information of two labelings [N] int64 (non-negative): I(a; b) divided by
/// the arithmetic mean of H(a) and H(b), in 0..1 (natural logarithms; the ratio does not
/// depend on the base). Defined as 1 when both entropies are 0.
double normalized_mutual_information(const torch::Tensor& a, const torch::Tensor& b);

/// The `count` rows of `vectors` [N, D] nearest to `centroid` [D] among those with
/// assignments == cluster, nearest first (fewer when the cluster is smaller).
std::vector<int64_t> nearest_members(const torch::Tensor& vectors, const torch::Tensor& assignments,
                                     const torch::Tensor& centroid, int64_t cluster, int64_t count);

}  // namespace alexnet::experiments
