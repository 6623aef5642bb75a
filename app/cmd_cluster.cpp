// `alexnet cluster`: k-means on fc7 features or pixels, scored against the labels (the
// paper's section 6.1: images whose fc7 vectors are close are similar to the network).
#include <cmath>
#include <iomanip>
#include <iostream>
#include <numeric>
#include <sstream>
#include <utility>

#include <nlohmann/json.hpp>

#include "cli.h"
#include "cli/option_groups.h"
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

// Mean and sample standard deviation (0 for fewer than two values) of one score over seeds.
std::pair<double, double> mean_and_spread(const std::vector<double>& values) {
  if (values.empty()) return {0.0, 0.0};
  const double n = static_cast<double>(values.size());
  const double mean = std::accumulate(values.begin(), values.end(), 0.0) / n;
  if (values.size() < 2) return {mean, 0.0};
  const double squares =
      std::accumulate(values.begin(), values.end(), 0.0,
                      [mean](double total, double v) { return total + (v - mean) * (v - mean); });
  return {mean, std::sqrt(squares / (n - 1))};
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

ArgParser cluster_parser() {
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
      .option("iterations", "Lloyd iterations at most", "100");
  // The picture and the report.
  parser.option("out", "PNG picture: one row per cluster, its images nearest the centre")
      .option("per-cluster", "images per cluster in the picture", "8")
      .option("tile", "tile side in the picture, pixels", "80")
      .flag("json", "print JSON");
  add_threads_option(parser);
  return parser;
}

// What `alexnet cluster` runs: k-means on each input with each seed.
struct ClusterSettings {
  std::string index_path;
  std::vector<std::string> inputs;  // fc7 and/or pixels
  experiments::KMeansOptions kmeans;
  int64_t first_seed = 0, seeds = 1;
};

ClusterSettings cluster_settings(const ArgParser& parser, const experiments::FeatureIndex& index) {
  ClusterSettings settings;
  settings.index_path = parser.get("index");
  const std::string input = parser.get("input");
  settings.inputs =
      input == "both" ? std::vector<std::string>{"fc7", "pixels"} : std::vector<std::string>{input};
  settings.kmeans.k = parser.get_int("k") > 0 ? parser.get_int("k")
                                              : static_cast<int64_t>(index.class_names.size());
  settings.kmeans.max_iterations = parser.get_int("iterations");
  settings.first_seed = parser.get_int("seed");
  settings.seeds = parser.get_int("seeds");
  return settings;
}

// {size, majority, purity} of each of the k clusters.
nlohmann::json cluster_composition(const experiments::FeatureIndex& index,
                                   const experiments::KMeansResult& clustering, int64_t k) {
  nlohmann::json clusters = nlohmann::json::array();
  const auto sizes = torch::bincount(clustering.assignments, {}, k);
  for (int64_t c = 0; c < k; ++c) {
    const auto counts = torch::bincount(index.labels.masked_select(clustering.assignments.eq(c)),
                                        {}, static_cast<int64_t>(index.class_names.size()));
    const int64_t size = sizes[c].item<int64_t>();
    clusters.push_back(
        {{"size", size},
         {"majority", index.class_names[static_cast<size_t>(counts.argmax().item<int64_t>())]},
         {"purity", size > 0 ? counts.max().item<double>() / static_cast<double>(size) : 0.0}});
  }
  return clusters;
}

// Every seed's clustering of `vectors`, scored, with the scores' mean and spread; draws the
// first seed's clustering into --out when `draw` is set.
nlohmann::json cluster_input(const ArgParser& parser, const experiments::FeatureIndex& index,
                             const torch::Tensor& vectors, ClusterSettings settings, bool draw) {
  std::vector<double> ari, nmi;
  nlohmann::json runs = nlohmann::json::array();
  for (int64_t s = 0; s < settings.seeds; ++s) {
    settings.kmeans.seed = static_cast<uint64_t>(settings.first_seed + s);
    const auto clustering = experiments::kmeans(vectors, settings.kmeans);
    ari.push_back(experiments::adjusted_rand_index(clustering.assignments, index.labels));
    nmi.push_back(experiments::normalized_mutual_information(clustering.assignments, index.labels));
    runs.push_back({{"seed", settings.kmeans.seed},
                    {"clusters", cluster_composition(index, clustering, settings.kmeans.k)},
                    {"ari", ari.back()},
                    {"nmi", nmi.back()},
                    {"inertia", clustering.inertia},
                    {"iterations", clustering.iterations},
                    {"converged", clustering.converged}});
    if (draw && s == 0) {
#if ALEXNET_WITH_OPENCV
      draw_clusters(index, vectors, clustering, parser.get_int("per-cluster"),
                    parser.get_int("tile"), parser.get("out"));
#else
      throw std::runtime_error("this build has no OpenCV (ALEXNET_WITH_OPENCV=OFF): cannot draw " +
                               parser.get("out"));
#endif
    }
  }
  const auto [ari_mean, ari_std] = mean_and_spread(ari);
  const auto [nmi_mean, nmi_std] = mean_and_spread(nmi);
  return {{"dim", vectors.size(1)}, {"ari_mean", ari_mean}, {"ari_std", ari_std},
          {"nmi_mean", nmi_mean},   {"nmi_std", nmi_std},   {"runs", runs}};
}

void print_cluster_scores(const nlohmann::json& out, const ClusterSettings& settings) {
  std::cout << "k-means, k = " << settings.kmeans.k << ", on " << out["images"].get<int64_t>()
            << " images, " << settings.seeds << " seed(s); mean (sample std over seeds)\n"
            << std::fixed << std::setprecision(4);
  for (const auto& name : settings.inputs) {
    const auto& r = out[name];
    std::cout << "  " << std::left << std::setw(7) << name << std::right << "ARI "
              << r["ari_mean"].get<double>() << " (" << r["ari_std"].get<double>() << ")  NMI "
              << r["nmi_mean"].get<double>() << " (" << r["nmi_std"].get<double>() << ")  ["
              << r["dim"].get<int64_t>() << "-d]\n";
  }
  if (out.contains("picture")) std::cout << "wrote " << out["picture"].get<std::string>() << "\n";
}

int run_cluster(const std::vector<std::string>& args) {
  ArgParser parser = cluster_parser();
  if (!parser.parse(args)) return 0;
  runtime::tune_runtime({"cluster"}, args);
  apply_threads_option(parser);
  require_options(parser, {"index"}, "cluster");
  const std::string input = parser.get("input");
  if (input != "fc7" && input != "pixels" && input != "both") {
    throw UsageError("--input must be fc7, pixels or both, got '" + input + "'");
  }
  TORCH_CHECK(parser.get_int("seeds") >= 1, "--seeds must be positive, got ",
              parser.get_int("seeds"));
  const auto index = experiments::load_feature_index(parser.get("index"));
  const ClusterSettings settings = cluster_settings(parser, index);

  nlohmann::json out{
      {"index", settings.index_path}, {"images", index.size()}, {"k", settings.kmeans.k}};
  for (size_t which = 0; which < settings.inputs.size(); ++which) {
    const auto& name = settings.inputs[which];
    const auto vectors = experiments::index_vectors(index, name, settings.index_path);
    out[name] = cluster_input(parser, index, vectors, settings,
                              /*draw=*/which == 0 && parser.has("out"));
  }
  if (parser.has("out")) out["picture"] = parser.get("out");
  if (parser.get_flag("json")) {
    std::cout << out.dump(2) << "\n";
  } else {
    print_cluster_scores(out, settings);
  }
  return 0;
}

const Registration kCluster{"cluster", "k-means on fc7 features or pixels, ARI/NMI (section 6.1)",
                            run_cluster};

}  // namespace
}  // namespace alexnet::cli
