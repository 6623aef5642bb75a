#include <sys/wait.h>

#include <cstdlib>
#include <limits>
#include <string>

#include <nlohmann/json.hpp>

#include <torch/torch.h>
#include <catch2/catch.hpp>

#include "experiments/clustering.h"
#include "experiments/feature_index.h"
#include "tests/support.h"

namespace test_cluster {

using namespace alexnet::experiments;
using namespace alexnet::testing;

torch::Tensor labeling(std::vector<int64_t> values) { return torch::tensor(values, torch::kLong); }

// `blobs` well-separated Gaussian blobs of `per_blob` points in `dim` dimensions, shuffled;
// returns the points and each one's blob.
std::pair<torch::Tensor, torch::Tensor> blobs(int64_t count, int64_t per_blob, int64_t dim) {
  const auto centres = 20.0 * torch::randn({count, dim});
  const auto blob = torch::arange(count, torch::kLong).repeat_interleave(per_blob);
  const auto order = torch::randperm(count * per_blob, torch::kLong);
  const auto points = centres.index_select(0, blob) + torch::randn({count * per_blob, dim});
  return {points.index_select(0, order), blob.index_select(0, order)};
}

TEST_CASE("Adjusted Rand index and NMI match hand-computed values", "[cluster]") {
  // a = {0,0,1,1}, b = {0,0,1,2}: pairs together in both: 1; in a: 2; in b: 1; of 6 pairs.
  // ARI = (1 - 2*1/6) / ((2+1)/2 - 2*1/6) = 4/7. MI = ln 2, H(a) = ln 2, H(b) = 1.5 ln 2,
  // NMI = ln 2 / (1.25 ln 2) = 0.8.
  CHECK(adjusted_rand_index(labeling({0, 0, 1, 1}), labeling({0, 0, 1, 2})) == Approx(4.0 / 7));
  CHECK(normalized_mutual_information(labeling({0, 0, 1, 1}), labeling({0, 0, 1, 2})) ==
        Approx(0.8));
  // a = {0,0,0,1,1,1}, b = {0,0,1,1,2,2}: index 2, row pairs 6, column pairs 3, of 15:
  // ARI = (2 - 18/15) / (4.5 - 18/15) = 8/33.
  CHECK(adjusted_rand_index(labeling({0, 0, 0, 1, 1, 1}), labeling({0, 0, 1, 1, 2, 2})) ==
        Approx(8.0 / 33));
  // Independent halves: ARI = (0 - 4/6) / (2 - 4/6) = -1/2, no mutual information.
  CHECK(adjusted_rand_index(labeling({0, 1, 0, 1}), labeling({0, 0, 1, 1})) == Approx(-0.5));
  CHECK(normalized_mutual_information(labeling({0, 1, 0, 1}), labeling({0, 0, 1, 1})) ==
        Approx(0.0).margin(1e-12));
  // The names of the clusters do not matter, nor their values.
  CHECK(adjusted_rand_index(labeling({2, 2, 0, 0, 7}), labeling({1, 1, 5, 5, 0})) == Approx(1.0));
  CHECK(normalized_mutual_information(labeling({2, 2, 0, 0, 7}), labeling({1, 1, 5, 5, 0})) ==
        Approx(1.0));
  // Symmetric.
  CHECK(adjusted_rand_index(labeling({0, 0, 1, 2}), labeling({0, 0, 1, 1})) == Approx(4.0 / 7));
  // Both trivial: one cluster each, or every item alone.
  CHECK(adjusted_rand_index(labeling({3, 3, 3}), labeling({1, 1, 1})) == 1.0);
  CHECK(adjusted_rand_index(labeling({0, 1, 2}), labeling({2, 0, 1})) == 1.0);
  CHECK(normalized_mutual_information(labeling({3, 3, 3}), labeling({1, 1, 1})) == 1.0);

  CHECK_THROWS_WITH(adjusted_rand_index(labeling({0, 1}), labeling({0, 1, 1})),
                    Catch::Contains("same non-zero length"));
  CHECK_THROWS_WITH(normalized_mutual_information(torch::zeros({0}, torch::kLong),
                                                  torch::zeros({0}, torch::kLong)),
                    Catch::Contains("same non-zero length"));
}

TEST_CASE("k-means++ recovers well-separated blobs, the same for the same seed", "[cluster]") {
  torch::manual_seed(0);
  auto [points, blob] = blobs(/*count=*/5, /*per_blob=*/40, /*dim=*/6);
  for (uint64_t seed : {0, 1, 2}) {
    KMeansOptions options;
    options.k = 5;
    options.seed = seed;
    const auto result = kmeans(points, options);
    CHECK(result.converged);
    CHECK(result.assignments.sizes() == torch::IntArrayRef({200}));
    CHECK(result.centroids.sizes() == torch::IntArrayRef({5, 6}));
    CHECK(adjusted_rand_index(result.assignments, blob) == Approx(1.0));
    CHECK(normalized_mutual_information(result.assignments, blob) == Approx(1.0));
    // Inertia of the true blobs: about 200 points x 6 dimensions x unit variance.
    CHECK(result.inertia < 2 * 200 * 6);
    const auto again = kmeans(points, options);
    CHECK(torch::equal(again.assignments, result.assignments));
    CHECK(torch::equal(again.centroids, result.centroids));
  }
  // Each point alone: no inertia; one cluster: the centroid is the mean.
  KMeansOptions all;
  all.k = 200;
  CHECK(kmeans(points, all).inertia == Approx(0.0).margin(1e-6));
  KMeansOptions one;
  one.k = 1;
  CHECK(torch::allclose(kmeans(points, one).centroids[0], points.mean(0), 1e-4, 1e-4));
  // Duplicated points: more clusters than distinct points still gives k non-empty clusters.
  KMeansOptions three;
  three.k = 3;
  const auto same = kmeans(torch::ones({6, 2}), three);
  CHECK(torch::bincount(same.assignments, {}, 3).gt(0).all().item<bool>());
}

TEST_CASE("k-means refuses bad input, naming the value", "[cluster]") {
  KMeansOptions options;
  options.k = 11;
  CHECK_THROWS_WITH(kmeans(torch::randn({10, 3}), options),
                    Catch::Contains("k must be in 1..10") && Catch::Contains("got 11"));
  options.k = 0;
  CHECK_THROWS_WITH(kmeans(torch::randn({10, 3}), options), Catch::Contains("got 0"));
  options.k = 2;
  CHECK_THROWS_WITH(kmeans(torch::randn({10}), options), Catch::Contains("[N, D]"));
  auto with_nan = torch::randn({10, 3});
  with_nan[4][1] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(kmeans(with_nan, options), Catch::Contains("NaN"));
  options.max_iterations = 0;
  CHECK_THROWS_WITH(kmeans(torch::randn({10, 3}), options), Catch::Contains("max_iterations"));
}

TEST_CASE("nearest_members lists a cluster's points nearest its centre first", "[cluster]") {
  const auto points = torch::tensor({0.0f, 5.0f, 1.0f, 9.0f, 2.0f}).unsqueeze(1);
  const auto assignments = labeling({0, 1, 0, 1, 0});
  CHECK(nearest_members(points, assignments, torch::tensor({0.9f}), 0, 2) ==
        std::vector<int64_t>{2, 0});
  CHECK(nearest_members(points, assignments, torch::tensor({9.0f}), 1, 5) ==
        std::vector<int64_t>{3, 1});
  CHECK(nearest_members(points, assignments, torch::tensor({0.0f}), 4, 3).empty());
}

TEST_CASE("alexnet cluster scores fc7 and pixel clusterings against the labels", "[cluster][cli]") {
  torch::manual_seed(1);
  TempDir dir;
  auto [points, blob] = blobs(4, 30, 8);
  FeatureIndex index;
  index.features = points;
  index.pixels = torch::randn({120, 5});  // no structure: about chance
  index.labels = blob;
  index.class_names = {"a", "b", "c", "d"};
  for (int64_t i = 0; i < 120; ++i) {
    index.descriptions.push_back("blob#" + std::to_string(i));
    index.dataset_indices.push_back(i);
  }
  index.data_source = "synthetic";
  index.split = "test";
  index.model_path = "none.pt";
  save_feature_index(index, dir / "blobs.index");
  const std::string log = dir / "out.txt";
  const std::string binary = ALEXNET_BINARY;
  int status = std::system(
      (binary + " cluster --index " + (dir / "blobs.index") + " --seeds 3 --json >" + log + " 2>&1")
          .c_str());
  const std::string text = read_text(log);
  INFO(text);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  const auto out = nlohmann::json::parse(text.substr(text.find('{')));
  CHECK(out["k"] == 4);
  CHECK(out["fc7"]["ari_mean"].get<double>() == Approx(1.0));
  CHECK(out["fc7"]["runs"].size() == 3);
  CHECK(out["pixels"]["ari_mean"].get<double>() < 0.2);
  CHECK(out["pixels"]["nmi_std"].get<double>() >= 0);

  status = std::system((binary + " cluster --index " + (dir / "blobs.index") +
                        " --input fc7 --k 500 >" + log + " 2>&1")
                           .c_str());
  CHECK(WEXITSTATUS(status) != 0);
  CHECK_THAT(read_text(log), Catch::Contains("got 500"));
  status = std::system(
      (binary + " cluster --index " + (dir / "blobs.index") + " --input fc6 >" + log + " 2>&1")
          .c_str());
  CHECK(WEXITSTATUS(status) != 0);
  CHECK_THAT(read_text(log), Catch::Contains("fc6"));
  status = std::system(
      (binary + " cluster --index " + (dir / "none.index") + " >" + log + " 2>&1").c_str());
  CHECK(WEXITSTATUS(status) != 0);
  CHECK_THAT(read_text(log), Catch::Contains("none.index"));
}

}  // namespace test_cluster
