#include "experiments/feature_index.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "experiments/tensor_file.h"

namespace alexnet::experiments {
namespace {

constexpr char kIndexMagic[8] = {'A', 'L', 'X', 'F', 'I', 'D', 'X', '1'};
const TensorFileKind kIndexFile{kIndexMagic, "feature index", "alexnet features"};

// Squared Euclidean distances between rows of a [A, D] and b [B, D], float32, >= 0.
torch::Tensor squared_distances(const torch::Tensor& a, const torch::Tensor& b,
                                const torch::Tensor& b_norms) {
  auto d = a.pow(2).sum(1, /*keepdim=*/true) + b_norms.unsqueeze(0) - 2.0 * torch::mm(a, b.t());
  return d.clamp_min(0);
}

void check_vectors(const torch::Tensor& vectors, const char* what) {
  TORCH_CHECK(vectors.defined() && vectors.dim() == 2 && vectors.size(0) > 0 && vectors.size(1) > 0,
              what, ": expected a non-empty [N, D] matrix, got ",
              vectors.defined() ? vectors.sizes() : torch::IntArrayRef{});
  TORCH_CHECK(!vectors.is_floating_point() || torch::isfinite(vectors).all().item<bool>(), what,
              ": holds NaN or infinite values");
}

}  // namespace

void FeatureIndex::validate() const {
  check_vectors(features, "feature index features");
  const int64_t n = features.size(0);
  TORCH_CHECK(features.scalar_type() == torch::kFloat, "feature index: features must be float32");
  TORCH_CHECK(labels.defined() && labels.dim() == 1 && labels.size(0) == n &&
                  labels.scalar_type() == torch::kLong,
              "feature index: labels must be [", n, "] int64");
  TORCH_CHECK(static_cast<int64_t>(descriptions.size()) == n,
              "feature index: ", descriptions.size(), " descriptions for ", n, " images");
  TORCH_CHECK(static_cast<int64_t>(dataset_indices.size()) == n,
              "feature index: ", dataset_indices.size(), " data set indices for ", n, " images");
  if (pixels.defined()) {
    TORCH_CHECK(pixels.dim() == 2 && pixels.size(0) == n && pixels.scalar_type() == torch::kFloat,
                "feature index: pixels must be [", n, ", P] float32, got ", pixels.sizes());
  }
  if (n > 0) {
    const int64_t low = labels.min().item<int64_t>(), high = labels.max().item<int64_t>();
    TORCH_CHECK(low >= 0 && high < static_cast<int64_t>(class_names.size()),
                "feature index: labels span ", low, "..", high, " but there are ",
                class_names.size(), " class names");
  }
}

void save_feature_index(const FeatureIndex& index, const std::string& path) {
  index.validate();
  nlohmann::json header;
  header["count"] = index.size();
  header["feature_dim"] = index.features.size(1);
  header["pixel_dim"] = index.pixels.defined() ? index.pixels.size(1) : 0;
  header["class_names"] = index.class_names;
  header["descriptions"] = index.descriptions;
  header["dataset_indices"] = index.dataset_indices;
  header["data_source"] = index.data_source;
  header["split"] = index.split;
  header["model_path"] = index.model_path;
  write_tensor_file(path, kIndexFile, header, {index.features, index.labels, index.pixels});
}

FeatureIndex load_feature_index(const std::string& path) {
  TensorFileReader file(path, kIndexFile);
  FeatureIndex index;
  try {
    const auto header = nlohmann::json::parse(file.header_text());
    const int64_t n = header.at("count").get<int64_t>();
    const int64_t d = header.at("feature_dim").get<int64_t>();
    const int64_t p = header.at("pixel_dim").get<int64_t>();
    index.class_names = header.at("class_names").get<std::vector<std::string>>();
    index.descriptions = header.at("descriptions").get<std::vector<std::string>>();
    index.dataset_indices = header.at("dataset_indices").get<std::vector<int64_t>>();
    index.data_source = header.at("data_source").get<std::string>();
    index.split = header.at("split").get<std::string>();
    index.model_path = header.at("model_path").get<std::string>();
    std::vector<TensorFileReader::TensorShape> shapes{{{n, d}, torch::kFloat},
                                                      {{n}, torch::kLong}};
    if (p != 0) shapes.push_back({{n, p}, torch::kFloat});
    file.expect(shapes);
    index.features = torch::empty({n, d}, torch::kFloat);
    index.labels = torch::empty({n}, torch::kLong);
    if (p > 0) index.pixels = torch::empty({n, p}, torch::kFloat);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("feature index " + path + " has a bad header: " + e.what());
  }
  file.read(index.features, "features");
  file.read(index.labels, "labels");
  if (index.pixels.defined()) file.read(index.pixels, "pixels");
  try {
    index.validate();
  } catch (const c10::Error& e) {
    throw std::runtime_error("feature index " + path +
                             " is inconsistent: " + e.what_without_backtrace());
  }
  return index;
}

std::vector<std::vector<Neighbour>> nearest_neighbours(const torch::Tensor& vectors,
                                                       const torch::Tensor& queries, int64_t k,
                                                       const std::vector<int64_t>& self) {
  check_vectors(vectors, "nearest_neighbours vectors");
  check_vectors(queries, "nearest_neighbours queries");
  TORCH_CHECK(queries.size(1) == vectors.size(1), "nearest_neighbours: queries have ",
              queries.size(1), " dimensions, the index has ", vectors.size(1));
  TORCH_CHECK(k >= 1, "nearest_neighbours: k must be positive, got ", k);
  TORCH_CHECK(self.empty() || static_cast<int64_t>(self.size()) == queries.size(0),
              "nearest_neighbours: ", self.size(), " self indices for ", queries.size(0),
              " queries");
  const auto v = vectors.to(torch::kFloat).contiguous();
  const auto q = queries.to(v.device(), torch::kFloat).contiguous();
  const int64_t n = v.size(0);
  const int64_t keep = std::min(n, k);
  // Candidates from float32 distances, then exact float64 distances for them.
  const int64_t candidates = std::min(n, k + 16);
  const auto d2 = squared_distances(q, v, v.pow(2).sum(1));
  const auto top = std::get<1>(d2.topk(candidates, /*dim=*/1, /*largest=*/false)).to(torch::kCPU);
  const auto v64 = v.to(torch::kCPU, torch::kDouble);
  const auto q64 = q.to(torch::kCPU, torch::kDouble);

  std::vector<std::vector<Neighbour>> result(static_cast<size_t>(q.size(0)));
  for (int64_t i = 0; i < q.size(0); ++i) {
    const auto rows = top[i];
    const auto exact = (v64.index_select(0, rows) - q64[i].unsqueeze(0)).pow(2).sum(1).sqrt();
    const auto* row_ptr = rows.data_ptr<int64_t>();
    const auto* dist_ptr = exact.data_ptr<double>();
    auto& list = result[static_cast<size_t>(i)];
    for (int64_t c = 0; c < candidates; ++c) list.push_back({row_ptr[c], dist_ptr[c]});
    const int64_t me = self.empty() ? -1 : self[static_cast<size_t>(i)];
    std::sort(list.begin(), list.end(), [me](const Neighbour& a, const Neighbour& b) {
      if (a.distance != b.distance) return a.distance < b.distance;
      if ((a.index == me) != (b.index == me)) return a.index == me;
      return a.index < b.index;
    });
    list.resize(static_cast<size_t>(keep));
  }
  return result;
}

double precision_at_k(const torch::Tensor& vectors, const torch::Tensor& labels, int64_t k,
                      int64_t chunk) {
  check_vectors(vectors, "precision_at_k vectors");
  const int64_t n = vectors.size(0);
  TORCH_CHECK(labels.defined() && labels.dim() == 1 && labels.size(0) == n,
              "precision_at_k: expected [", n, "] labels, got ",
              labels.defined() ? labels.sizes() : torch::IntArrayRef{});
  TORCH_CHECK(k >= 1 && k < n, "precision_at_k: k must be in 1..", n - 1, " for ", n,
              " vectors, got ", k);
  TORCH_CHECK(chunk >= 1, "precision_at_k: chunk must be positive");
  torch::NoGradGuard no_grad;
  const auto v = vectors.to(torch::kFloat).contiguous();
  const auto norms = v.pow(2).sum(1);
  const auto l = labels.to(v.device(), torch::kLong);
  double hits = 0;
  for (int64_t begin = 0; begin < n; begin += chunk) {
    const int64_t end = std::min(n, begin + chunk);
    auto d2 = squared_distances(v.slice(0, begin, end), v, norms);
    // Leave each row itself out.
    const auto rows = torch::arange(end - begin, torch::TensorOptions().device(v.device()));
    d2.index_put_({rows, rows + begin}, std::numeric_limits<float>::infinity());
    const auto nearest = std::get<1>(d2.topk(k, /*dim=*/1, /*largest=*/false));
    const auto same = l.index_select(0, nearest.flatten())
                          .view_as(nearest)
                          .eq(l.slice(0, begin, end).unsqueeze(1));
    hits += same.sum().item<double>();
  }
  return hits / static_cast<double>(n * k);
}

}  // namespace alexnet::experiments
