#include "experiments/clustering.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

namespace alexnet::experiments {
namespace {

// Squared Euclidean distances between the rows of v [N, D] and c [K, D], [N, K] float32.
torch::Tensor centroid_distances(const torch::Tensor& v, const torch::Tensor& v_norms,
                                 const torch::Tensor& c) {
  return (v_norms.unsqueeze(1) + c.pow(2).sum(1).unsqueeze(0) - 2.0 * torch::mm(v, c.t()))
      .clamp_min(0);
}

// Labels renumbered 0..L-1 in order of first appearance.
std::vector<int64_t> compact(const torch::Tensor& labels, int64_t& count) {
  const auto l = labels.to(torch::kLong).contiguous();
  std::map<int64_t, int64_t> ids;
  std::vector<int64_t> out(static_cast<size_t>(l.numel()));
  const int64_t* p = l.data_ptr<int64_t>();
  for (int64_t i = 0; i < l.numel(); ++i) {
    out[static_cast<size_t>(i)] = ids.emplace(p[i], static_cast<int64_t>(ids.size())).first->second;
  }
  count = static_cast<int64_t>(ids.size());
  return out;
}

// The contingency table of two labelings: counts[i][j] = items with a = i and b = j.
struct Contingency {
  int64_t n = 0, rows = 0, columns = 0;
  std::vector<int64_t> counts, row_sums, column_sums;
};

Contingency contingency(const torch::Tensor& a, const torch::Tensor& b, const char* what) {
  TORCH_CHECK(a.defined() && b.defined() && a.dim() == 1 && b.dim() == 1 && a.numel() > 0 &&
                  a.numel() == b.numel(),
              what, ": expected two labelings [N] of the same non-zero length, got ",
              a.defined() ? a.sizes() : torch::IntArrayRef{}, " and ",
              b.defined() ? b.sizes() : torch::IntArrayRef{});
  Contingency t;
  const auto ca = compact(a, t.rows), cb = compact(b, t.columns);
  t.n = a.numel();
  t.counts.assign(static_cast<size_t>(t.rows * t.columns), 0);
  t.row_sums.assign(static_cast<size_t>(t.rows), 0);
  t.column_sums.assign(static_cast<size_t>(t.columns), 0);
  for (size_t i = 0; i < ca.size(); ++i) {
    ++t.counts[static_cast<size_t>(ca[i] * t.columns + cb[i])];
    ++t.row_sums[static_cast<size_t>(ca[i])];
    ++t.column_sums[static_cast<size_t>(cb[i])];
  }
  return t;
}

double pairs(int64_t n) { return 0.5 * static_cast<double>(n) * static_cast<double>(n - 1); }

double entropy(const std::vector<int64_t>& sums, int64_t n) {
  double h = 0;
  for (int64_t s : sums) {
    if (s > 0) {
      const double p = static_cast<double>(s) / static_cast<double>(n);
      h -= p * std::log(p);
    }
  }
  return h;
}

}  // namespace

KMeansResult kmeans(const torch::Tensor& vectors, const KMeansOptions& options) {
  TORCH_CHECK(vectors.defined() && vectors.dim() == 2 && vectors.size(0) > 0 && vectors.size(1) > 0,
              "kmeans: expected a non-empty [N, D] matrix, got ",
              vectors.defined() ? vectors.sizes() : torch::IntArrayRef{});
  const int64_t n = vectors.size(0), k = options.k;
  TORCH_CHECK(k >= 1 && k <= n, "kmeans: k must be in 1..", n, " for ", n, " vectors, got ", k);
  TORCH_CHECK(options.max_iterations >= 1, "kmeans: max_iterations must be positive, got ",
              options.max_iterations);
  torch::NoGradGuard no_grad;
  const auto v = vectors.to(torch::kCPU, torch::kFloat).contiguous();
  TORCH_CHECK(torch::isfinite(v).all().item<bool>(), "kmeans: the vectors hold NaN or infinity");
  const auto norms = v.pow(2).sum(1);

  // k-means++ initialisation.
  std::mt19937_64 rng(options.seed);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::vector<int64_t> chosen{static_cast<int64_t>(uniform(rng) * static_cast<double>(n)) % n};
  auto nearest = (v - v[chosen[0]]).pow(2).sum(1).to(torch::kDouble).contiguous();
  while (static_cast<int64_t>(chosen.size()) < k) {
    const double* d = nearest.data_ptr<double>();
    double total = 0;
    for (int64_t i = 0; i < n; ++i) total += d[i];
    int64_t pick = -1;
    if (total > 0) {
      const double target = uniform(rng) * total;
      double running = 0;
      for (int64_t i = 0; i < n && pick < 0; ++i) {
        running += d[i];
        if (running > target && d[i] > 0) pick = i;
      }
      for (int64_t i = n - 1; i >= 0 && pick < 0; --i) {
        if (d[i] > 0) pick = i;
      }
    } else {
      // Every vector coincides with a centre: take the first vector not chosen yet.
      for (int64_t i = 0; i < n && pick < 0; ++i) {
        if (std::find(chosen.begin(), chosen.end(), i) == chosen.end()) pick = i;
      }
    }
    chosen.push_back(pick);
    nearest = torch::minimum(nearest, (v - v[pick]).pow(2).sum(1).to(torch::kDouble)).contiguous();
  }
  auto centroids = v.index_select(0, torch::tensor(chosen, torch::kLong)).clone();

  KMeansResult result;
  torch::Tensor assignments;
  for (int64_t iteration = 0; iteration < options.max_iterations; ++iteration) {
    const auto d2 = centroid_distances(v, norms, centroids);
    auto next = d2.argmin(1);
    result.iterations = iteration + 1;
    if (assignments.defined() && next.equal(assignments)) {
      result.converged = true;
      break;
    }
    assignments = next;
    // New centroids; an emptied cluster takes the vector farthest from its own centroid.
    auto counts =
        torch::zeros({k}, torch::kLong).index_add_(0, assignments, torch::ones({n}, torch::kLong));
    const auto own = d2.gather(1, assignments.unsqueeze(1)).squeeze(1).clone();
    for (int64_t c = 0; c < k; ++c) {
      if (counts[c].item<int64_t>() > 0) continue;
      const int64_t far = own.argmax().item<int64_t>();
      const int64_t from = assignments[far].item<int64_t>();
      counts[from] -= 1;
      assignments[far] = c;
      counts[c] = 1;
      own[far] = -1;
    }
    centroids = torch::zeros_like(centroids)
                    .index_add_(0, assignments, v)
                    .div_(counts.to(torch::kFloat).unsqueeze(1));
  }
  result.assignments = assignments;
  result.centroids = centroids;
  result.inertia =
      (v - centroids.index_select(0, assignments)).pow(2).sum().to(torch::kDouble).item<double>();
  return result;
}

double adjusted_rand_index(const torch::Tensor& a, const torch::Tensor& b) {
  const auto t = contingency(a, b, "adjusted_rand_index");
  double index = 0, row_pairs = 0, column_pairs = 0;
  for (int64_t c : t.counts) index += pairs(c);
  for (int64_t s : t.row_sums) row_pairs += pairs(s);
  for (int64_t s : t.column_sums) column_pairs += pairs(s);
  const double all = pairs(t.n);
  const double expected = all > 0 ? row_pairs * column_pairs / all : 0;
  const double maximum = 0.5 * (row_pairs + column_pairs);
  // Zero only when both labelings are one cluster, or both put every item alone.
  if (maximum == expected) return 1.0;
  return (index - expected) / (maximum - expected);
}

double normalized_mutual_information(const torch::Tensor& a, const torch::Tensor& b) {
  const auto t = contingency(a, b, "normalized_mutual_information");
  const double n = static_cast<double>(t.n);
  double mutual = 0;
  for (int64_t i = 0; i < t.rows; ++i) {
    for (int64_t j = 0; j < t.columns; ++j) {
      const auto c = static_cast<double>(t.counts[static_cast<size_t>(i * t.columns + j)]);
      if (c == 0) continue;
      mutual += c / n *
                std::log(c * n /
                         (static_cast<double>(t.row_sums[static_cast<size_t>(i)]) *
                          static_cast<double>(t.column_sums[static_cast<size_t>(j)])));
    }
  }
  const double mean_entropy = 0.5 * (entropy(t.row_sums, t.n) + entropy(t.column_sums, t.n));
  if (mean_entropy <= 0) return 1.0;
  return std::clamp(mutual / mean_entropy, 0.0, 1.0);
}

std::vector<int64_t> nearest_members(const torch::Tensor& vectors, const torch::Tensor& assignments,
                                     const torch::Tensor& centroid, int64_t cluster,
                                     int64_t count) {
  TORCH_CHECK(vectors.dim() == 2 && assignments.dim() == 1 &&
                  assignments.size(0) == vectors.size(0) && centroid.dim() == 1 &&
                  centroid.size(0) == vectors.size(1),
              "nearest_members: vectors ", vectors.sizes(), ", assignments ", assignments.sizes(),
              " and centroid ", centroid.sizes(), " do not match");
  torch::NoGradGuard no_grad;
  const auto members = assignments.eq(cluster).nonzero().squeeze(1);
  if (members.numel() == 0 || count <= 0) return {};
  const auto d = (vectors.index_select(0, members).to(torch::kDouble) -
                  centroid.to(torch::kDouble).unsqueeze(0))
                     .pow(2)
                     .sum(1);
  const auto order = d.argsort();
  std::vector<int64_t> out;
  for (int64_t i = 0; i < std::min(count, members.numel()); ++i) {
    out.push_back(members[order[i].item<int64_t>()].item<int64_t>());
  }
  return out;
}

}  // namespace alexnet::experiments
