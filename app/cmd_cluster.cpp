// `alexnet cluster`: k-means on fc7 features or pixels, scored against the labels (the
// paper's section 6.1: images whose fc7 vectors are close are similar to the network).
#include <cmath>
#include <iomanip>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli.h"
#include "experiments/binary_codes.h"
#include "experiments/clustering.h"
#include "experiments/feature_extraction.h"
#include "experiments/feature_index.h"
#include "runtime/runtime.h"
#if ALEXNET_WITH_OPENCV
#include "draw/drawing.h"
#endif

namespace alexnet::cli {
namespace {

struct SeedScores {
  std::vector<double> ari, nmi, inertia;
};

double mean_of(const std::vector<double>& values) {
  double total = 0;
  for (double v : values) total += v;
  return values.empty() ? 0 : total / static_cast<double>(values.size());
}

// Sample standard deviation (0 for fewer than two values).
double spread_of(const std::vector<double>& values) {
  if (values.size() < 2) return 0;
  const double mean = mean_of(values);
  double total = 0;
  for (double v : values) total += (v - mean) * (v - mean);
  return std::sqrt(total / static_cast<double>(values.size() - 1));
}

#if ALEXNET_WITH_OPENCV
// One row per cluster (largest first): the `per_cluster` images nearest its centroid, framed
// green when they have the cluster's most common label, red when not.
void draw_clusters(const experiments::FeatureIndex& index, const torch::Tensor& vectors,
                   const experiments::KMeansResult& clustering, int64_t per_cluster,
                   int64_t tile_size, const std::string& path) {
  const auto dataset = experiments::open_recorded_dataset(
      index.data_source, index.split, index.dataset_indices, index.descriptions);
  const int64_t k = clustering.centroids.size(0);
  const int64_t classes = static_cast<int64_t>(index.class_names.size());
  const auto sizes = torch::bincount(clustering.assignments, {}, k);
  const auto order = sizes.argsort(/*dim=*/0, /*descending=*/true);
  const draw::Rgb same{44, 160, 44}, other{214, 39, 40};
  std::vector<std::vector<draw::Tile>> rows;
  for (int64_t r = 0; r < k; ++r) {
    const int64_t c = order[r].item<int64_t>();
    const auto members = clustering.assignments.eq(c);
    const auto counts = torch::bincount(index.labels.masked_select(members), {}, classes);
    const int64_t majority = counts.argmax().item<int64_t>();
    const double purity =
        counts.max().item<double>() / std::max<double>(1, sizes[c].item<double>());
    std::vector<draw::Tile> row;
    for (int64_t position : experiments::nearest_members(vectors, clustering.assignments,
                                                         clustering.centroids[c], c, per_cluster)) {
      const int64_t label = index.labels[position].item<int64_t>();
      draw::Tile tile;
      tile.image =
          dataset->get(static_cast<size_t>(index.dataset_indices[static_cast<size_t>(position)]))
              .image;
      tile.lines = {index.class_names[static_cast<size_t>(label)]};
      if (row.empty()) {
        std::ostringstream text;
        text << "n=" << sizes[c].item<int64_t>() << " " << std::lround(100 * purity) << "%";
        tile.lines.push_back(text.str());
      }
      tile.frame = label == majority ? same : other;
      row.push_back(tile);
    }
    rows.push_back(std::move(row));
  }
  draw::TileGridOptions options;
  options.tile_size = tile_size;
  options.first_apart = false;
  draw::write_png(draw::tile_grid(rows, options), path);
}
#endif

int run_cluster(const std::vector<std::string>& args) {
  ArgParser parser(
      "alexnet cluster --index INDEX [--input fc7|pixels|both] [--k K] [--seeds S]",
      "Clusters the images of a feature index with k-means (k-means++ initialisation, seeded) "
      "on their fc7 features and/or raw-pixel vectors, and scores each clustering against the "
      "labels by adjusted Rand index (ARI) and normalised mutual information (NMI); with "
      "--out draws, for the first seed and first input, a row of the images nearest each "
      "cluster's centre.");
  parser.option("index", "feature index written by `alexnet features`")
      .option("input", "fc7, pixels or both", "both")
      .option("k", "clusters (0: the number of classes)", "0")
      .option("seed", "first seed of the k-means++ initialisation", "0")
      .option("seeds", "seeds to run (seed, seed + 1, ...)", "1")
      .option("iterations", "Lloyd iterations at most", "100")
      .option("out", "PNG picture: one row per cluster, its images nearest the centre")
      .option("per-cluster", "images per cluster in the picture", "8")
      .option("tile", "tile side in the picture, pixels", "80")
      .flag("json", "print JSON")
      .option("threads", "intra-op threads (0: all cores)", "0");
  if (!parser.parse(args)) return 0;
  runtime::tune_runtime({"cluster"}, args);
  runtime::set_threads(parser.get_int("threads"));
  if (!parser.has("index")) {
    throw std::invalid_argument("--index is required (see alexnet cluster --help)");
  }
  const std::string index_path = parser.get("index"), input = parser.get("input");
  if (input != "fc7" && input != "pixels" && input != "both") {
    throw UsageError("--input must be fc7, pixels or both, got '" + input + "'");
  }
  const int64_t seeds = parser.get_int("seeds");
  TORCH_CHECK(seeds >= 1, "--seeds must be positive, got ", seeds);
  const auto index = experiments::load_feature_index(index_path);
  experiments::KMeansOptions options;
  options.k = parser.get_int("k") > 0 ? parser.get_int("k")
                                      : static_cast<int64_t>(index.class_names.size());
  options.max_iterations = parser.get_int("iterations");
  const std::vector<std::string> inputs =
      input == "both" ? std::vector<std::string>{"fc7", "pixels"} : std::vector<std::string>{input};

  nlohmann::json out{{"index", index_path}, {"images", index.size()}, {"k", options.k}};
  for (size_t which = 0; which < inputs.size(); ++which) {
    const auto vectors = experiments::index_vectors(index, inputs[which], index_path);
    SeedScores scores;
    nlohmann::json runs = nlohmann::json::array();
    for (int64_t s = 0; s < seeds; ++s) {
      options.seed = static_cast<uint64_t>(parser.get_int("seed") + s);
      const auto clustering = experiments::kmeans(vectors, options);
      scores.ari.push_back(experiments::adjusted_rand_index(clustering.assignments, index.labels));
      scores.nmi.push_back(
          experiments::normalized_mutual_information(clustering.assignments, index.labels));
      scores.inertia.push_back(clustering.inertia);
      nlohmann::json clusters = nlohmann::json::array();
      const auto sizes = torch::bincount(clustering.assignments, {}, options.k);
      for (int64_t c = 0; c < options.k; ++c) {
        const auto counts =
            torch::bincount(index.labels.masked_select(clustering.assignments.eq(c)), {},
                            static_cast<int64_t>(index.class_names.size()));
        const int64_t size = sizes[c].item<int64_t>();
        clusters.push_back(
            {{"size", size},
             {"majority", index.class_names[static_cast<size_t>(counts.argmax().item<int64_t>())]},
             {"purity", size > 0 ? counts.max().item<double>() / static_cast<double>(size) : 0.0}});
      }
      runs.push_back({{"seed", options.seed},
                      {"clusters", clusters},
                      {"ari", scores.ari.back()},
                      {"nmi", scores.nmi.back()},
                      {"inertia", clustering.inertia},
                      {"iterations", clustering.iterations},
                      {"converged", clustering.converged}});
      if (which == 0 && s == 0 && parser.has("out")) {
#if ALEXNET_WITH_OPENCV
        draw_clusters(index, vectors, clustering, parser.get_int("per-cluster"),
                      parser.get_int("tile"), parser.get("out"));
#else
        throw std::runtime_error(
            "this build has no OpenCV (ALEXNET_WITH_OPENCV=OFF): cannot draw " + parser.get("out"));
#endif
      }
    }
    out[inputs[which]] = {{"dim", vectors.size(1)},           {"ari_mean", mean_of(scores.ari)},
                          {"ari_std", spread_of(scores.ari)}, {"nmi_mean", mean_of(scores.nmi)},
                          {"nmi_std", spread_of(scores.nmi)}, {"runs", runs}};
  }
  if (parser.has("out")) out["picture"] = parser.get("out");

  if (parser.get_flag("json")) {
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::cout << "k-means, k = " << options.k << ", on " << index.size() << " images, " << seeds
            << " seed(s); mean (sample std over seeds)\n"
            << std::fixed << std::setprecision(4);
  for (const auto& name : inputs) {
    const auto& r = out[name];
    std::cout << "  " << std::left << std::setw(7) << name << std::right << "ARI "
              << r["ari_mean"].get<double>() << " (" << r["ari_std"].get<double>() << ")  NMI "
              << r["nmi_mean"].get<double>() << " (" << r["nmi_std"].get<double>() << ")  ["
              << r["dim"].get<int64_t>() << "-d]\n";
  }
  if (parser.has("out")) std::cout << "wrote " << parser.get("out") << "\n";
  return 0;
}

const Registration kCluster{"cluster", "k-means on fc7 features or pixels, ARI/NMI (section 6.1)",
                            run_cluster};

}  // namespace
}  // namespace alexnet::cli
