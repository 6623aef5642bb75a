// `alexnet features` and `alexnet neighbours`: fc7 feature retrieval (the paper's Figure 4).
#include <iomanip>
#include <iostream>
#include <set>

#include <nlohmann/json.hpp>

#include "cli.h"
#include "data/dataset.h"
#include "data/image_decode.h"
#include "experiments/feature_extraction.h"
#include "experiments/feature_index.h"
#include "runtime/runtime.h"
#include "train/exported_model.h"
#if ALEXNET_WITH_OPENCV
#include "draw/drawing.h"
#endif

namespace alexnet::cli {
namespace {

using experiments::FeatureIndex;

int run_features(const std::vector<std::string>& args) {
  ArgParser parser("alexnet features --model FILE --data SRC --out INDEX",
                   "Runs the model's `features` method (fc7 after ReLU) on every image of a data "
                   "set, with the model's own preprocessing, and writes a feature index with "
                   "labels, class names, each image's origin and its raw-pixel vector (the "
                   "baseline) for `alexnet neighbours`.");
  parser.option("model", "TorchScript model written by `alexnet export`")
      .option("data",
              "data source (image folder, packed file, IDX folder, CIFAR-10 folder, "
              "fashion-mnist)")
      .option("split", "train, val or test", "test")
      .option("limit", "only N images, every class in proportion, drawn with --seed (0: all)", "0")
      .option("seed", "seed of the images --limit keeps", "0")
      .option("out", "feature index to write")
      .option("batch-size", "images per forward pass", "64")
      .option("workers", "loader threads", "2")
      .option("pixel-size",
              "side of the stored raw-pixel vectors (area-downsampled model "
              "input); 0: none",
              "32")
      .option("threads", "intra-op threads (0: all cores)", "0");
  if (!parser.parse(args)) return 0;
  runtime::tune_runtime({"features"}, args);
  runtime::set_threads(parser.get_int("threads"));
  for (const char* required : {"model", "data", "out"}) {
    if (!parser.has(required)) {
      throw std::invalid_argument(std::string("--") + required +
                                  " is required (see alexnet features --help)");
    }
  }
  const std::string model_path = parser.get("model"), source = parser.get("data");
  const std::string split = parser.get("split");
  auto model = train::load_exported_model(model_path);
  auto dataset = data::open_dataset(source, split);
  if (parser.get_int("limit") > 0) {
    dataset = data::stratified_subset(dataset, static_cast<size_t>(parser.get_int("limit")),
                                      static_cast<uint64_t>(parser.get_int("seed")));
  }
  experiments::FeatureOptions options;
  options.batch_size = parser.get_int("batch-size");
  options.workers = parser.get_int("workers");
  options.pixel_size = parser.get_int("pixel-size");
  int64_t reported = 0;
  const auto index = experiments::extract_features(
      model, dataset, source, split, options, [&](int64_t done, int64_t total) {
        if (done - reported >= 2000 || done == total) {
          std::cerr << "features: " << done << " / " << total << "\n";
          reported = done;
        }
      });
  experiments::save_feature_index(index, parser.get("out"));
  std::cout << "wrote " << parser.get("out") << ": " << index.size() << " images, "
            << index.features.size(1) << "-d features"
            << (index.pixels.defined()
                    ? ", " + std::to_string(index.pixels.size(1)) + "-d pixel vectors"
                    : std::string())
            << "\n";
  return 0;
}

// A query: a position in the index, or an image file run through the model.
struct Query {
  std::string text;
  int64_t position = -1;  // in the index, or -1
  torch::Tensor image;    // [C, H, W] uint8 for image files
  torch::Tensor feature;  // [D]
};

int64_t parse_position(const std::string& text, int64_t size) {
  const std::string digits = text.substr(1);
  TORCH_CHECK(!digits.empty() && digits.find_first_not_of("0123456789") == std::string::npos,
              "query '", text, "': expected #N, a position in the index");
  const int64_t position = std::stoll(digits);
  TORCH_CHECK(position < size, "query '", text, "': the index has ", size, " images");
  return position;
}

std::vector<Query> make_queries(const FeatureIndex& index, const std::vector<std::string>& texts,
                                const std::string& model_override) {
  std::vector<Query> queries;
  std::optional<train::ExportedModel> model;
  for (const auto& text : texts) {
    Query query;
    query.text = text;
    if (!text.empty() && text[0] == '#') {
      query.position = parse_position(text, index.size());
      query.feature = index.features[query.position];
    } else {
      if (!model) {
        model =
            train::load_exported_model(model_override.empty() ? index.model_path : model_override);
      }
      query.image = data::decode_image_file(text, 0);
      transforms::Rng rng(0);
      auto input = experiments::feature_pipeline(*model)->apply(query.image, rng);
      input = experiments::match_channels(input.unsqueeze(0), model->in_channels);
      query.feature = experiments::model_features(model->module, input)[0];
      TORCH_CHECK(query.feature.size(0) == index.features.size(1), "model ", model->path, " gives ",
                  query.feature.size(0), "-d features but the index holds ", index.features.size(1),
                  "-d ones");
    }
    queries.push_back(std::move(query));
  }
  return queries;
}

std::string class_name(const FeatureIndex& index, int64_t label) {
  return label >= 0 && label < static_cast<int64_t>(index.class_names.size())
             ? index.class_names[static_cast<size_t>(label)]
             : std::to_string(label);
}

#if ALEXNET_WITH_OPENCV
// The data set recorded in the index, checked against the index's descriptions.
data::DatasetPtr open_index_data(const FeatureIndex& index) {
  auto dataset = data::open_dataset(index.data_source, index.split);
  for (int64_t p : {int64_t{0}, index.size() - 1}) {
    const auto i = static_cast<size_t>(index.dataset_indices[static_cast<size_t>(p)]);
    TORCH_CHECK(
        i < dataset->size() && dataset->describe(i) == index.descriptions[static_cast<size_t>(p)],
        "the data source ", index.data_source, " (", index.split,
        ") no longer matches the index: image ", p, " was ",
        index.descriptions[static_cast<size_t>(p)]);
  }
  return dataset;
}

void draw_neighbours(const FeatureIndex& index, const std::vector<Query>& queries,
                     const std::vector<std::vector<experiments::Neighbour>>& results,
                     int64_t tile_size, const std::string& path) {
  const auto dataset = open_index_data(index);
  auto image_at = [&](int64_t position) {
    return dataset->get(static_cast<size_t>(index.dataset_indices[static_cast<size_t>(position)]))
        .image;
  };
  const draw::Rgb query_frame{31, 119, 180}, same{44, 160, 44}, other{214, 39, 40};
  std::vector<std::vector<draw::Tile>> rows;
  for (size_t q = 0; q < queries.size(); ++q) {
    std::vector<draw::Tile> row;
    const auto& query = queries[q];
    const int64_t query_label =
        query.position >= 0 ? index.labels[query.position].item<int64_t>() : -1;
    draw::Tile first;
    first.image = query.position >= 0 ? image_at(query.position) : query.image;
    first.lines = {query.position >= 0 ? class_name(index, query_label) : "query",
                   query.position >= 0 ? "query #" + std::to_string(query.position) : query.text};
    first.frame = query_frame;
    row.push_back(first);
    for (const auto& n : results[q]) {
      const int64_t label = index.labels[n.index].item<int64_t>();
      std::ostringstream distance;
      distance << "d=" << std::fixed << std::setprecision(n.distance < 10 ? 2 : 1) << n.distance;
      draw::Tile tile;
      tile.image = image_at(n.index);
      tile.lines = {class_name(index, label), distance.str()};
      if (query_label >= 0) tile.frame = label == query_label ? same : other;
      row.push_back(tile);
    }
    rows.push_back(std::move(row));
  }
  draw::TileGridOptions options;
  options.tile_size = tile_size;
  draw::write_png(draw::tile_grid(rows, options), path);
}
#endif

int run_neighbours(const std::vector<std::string>& args) {
  ArgParser parser("alexnet neighbours --index INDEX [QUERY...]",
                   "Lists each query's nearest images by Euclidean distance between fc7 features "
                   "and draws them (the paper's Figure 4), or scores retrieval with "
                   "--precision-at K: the mean share of each image's K nearest other images that "
                   "have its label, for fc7 features and, with --pixels, for raw pixels.");
  parser.option("index", "feature index written by `alexnet features`")
      .option("query", "comma-separated queries (also accepted as positional arguments)")
      .option("k", "neighbours per query", "6")
      .option("out", "PNG grid to draw: each row a query, then its neighbours")
      .option("tile", "tile side in the grid, pixels", "96")
      .option("model", "model for image-file queries (default: the one the index records)")
      .option("precision-at", "score retrieval: mean precision@K over the whole index")
      .flag("pixels", "with --precision-at: also score raw-pixel vectors (the baseline)")
      .flag("json", "print JSON")
      .option("threads", "intra-op threads (0: all cores)", "0")
      .positionals("QUERY", "an image file, or #N for the N-th image of the index");
  if (!parser.parse(args)) return 0;
  runtime::tune_runtime({"neighbours"}, args);
  runtime::set_threads(parser.get_int("threads"));
  if (!parser.has("index")) {
    throw std::invalid_argument("--index is required (see alexnet neighbours --help)");
  }
  const auto index = experiments::load_feature_index(parser.get("index"));

  if (parser.has("precision-at")) {
    const int64_t k = parser.get_int("precision-at");
    nlohmann::json out{{"index", parser.get("index")}, {"images", index.size()}, {"k", k}};
    out["fc7"] = experiments::precision_at_k(index.features, index.labels, k);
    if (parser.get_flag("pixels")) {
      TORCH_CHECK(index.pixels.defined(), "index ", parser.get("index"),
                  " holds no pixel vectors (written with --pixel-size 0)");
      out["pixels"] = experiments::precision_at_k(index.pixels, index.labels, k);
      out["pixel_dim"] = index.pixels.size(1);
    }
    if (parser.get_flag("json")) {
      std::cout << out.dump(2) << "\n";
    } else {
      std::cout << std::fixed << std::setprecision(4) << "precision@" << k << " over "
                << index.size() << " images\n  fc7 features (" << index.features.size(1)
                << "-d): " << out["fc7"].get<double>() << "\n";
      if (out.contains("pixels")) {
        std::cout << "  raw pixels (" << index.pixels.size(1)
                  << "-d): " << out["pixels"].get<double>() << "\n";
      }
    }
    return 0;
  }

  std::vector<std::string> texts = parser.positional();
  for (const auto& item : split(parser.get("query"))) texts.push_back(item);
  if (texts.empty()) {
    throw std::invalid_argument(
        "give queries (#N or image files) or --precision-at K (see "
        "alexnet neighbours --help)");
  }
  const int64_t k = parser.get_int("k");
  TORCH_CHECK(k >= 1, "--k must be positive, got ", k);
  const auto queries = make_queries(index, texts, parser.get("model"));
  std::vector<torch::Tensor> features;
  std::vector<int64_t> self;
  for (const auto& q : queries) {
    features.push_back(q.feature);
    self.push_back(q.position);
  }
  // A query from the index is its own nearest neighbour: it is listed first, then k others.
  auto results =
      experiments::nearest_neighbours(index.features, torch::stack(features), k + 1, self);
  std::vector<std::vector<experiments::Neighbour>> shown;
  for (size_t q = 0; q < queries.size(); ++q) {
    if (queries[q].position < 0 && static_cast<int64_t>(results[q].size()) > k) {
      results[q].resize(static_cast<size_t>(k));
    }
    std::vector<experiments::Neighbour> list;
    for (const auto& n : results[q]) {
      if (n.index == queries[q].position) continue;
      if (static_cast<int64_t>(list.size()) < k) list.push_back(n);
    }
    shown.push_back(list);
  }

  if (parser.get_flag("json")) {
    nlohmann::json out = nlohmann::json::array();
    for (size_t q = 0; q < queries.size(); ++q) {
      nlohmann::json item{{"query", queries[q].text}};
      if (queries[q].position >= 0) {
        const auto p = queries[q].position;
        item["position"] = p;
        item["label"] = class_name(index, index.labels[p].item<int64_t>());
        item["description"] = index.descriptions[static_cast<size_t>(p)];
      }
      item["neighbours"] = nlohmann::json::array();
      for (const auto& n : results[q]) {
        const int64_t label = index.labels[n.index].item<int64_t>();
        item["neighbours"].push_back(
            {{"position", n.index},
             {"distance", n.distance},
             {"label", class_name(index, label)},
             {"description", index.descriptions[static_cast<size_t>(n.index)]}});
      }
      out.push_back(item);
    }
    std::cout << out.dump(2) << "\n";
  } else {
    for (size_t q = 0; q < queries.size(); ++q) {
      std::cout << "query " << queries[q].text;
      if (queries[q].position >= 0) {
        std::cout << " (" << class_name(index, index.labels[queries[q].position].item<int64_t>())
                  << ", " << index.descriptions[static_cast<size_t>(queries[q].position)] << ")";
      }
      std::cout << "\n";
      for (const auto& n : results[q]) {
        std::cout << "  #" << std::left << std::setw(7) << n.index << std::right << std::fixed
                  << std::setprecision(3) << std::setw(10) << n.distance << "  " << std::left
                  << std::setw(14) << class_name(index, index.labels[n.index].item<int64_t>())
                  << std::right << index.descriptions[static_cast<size_t>(n.index)] << "\n";
      }
    }
  }
  if (parser.has("out")) {
#if ALEXNET_WITH_OPENCV
    draw_neighbours(index, queries, shown, parser.get_int("tile"), parser.get("out"));
    if (!parser.get_flag("json")) std::cout << "wrote " << parser.get("out") << "\n";
#else
    throw std::runtime_error("this build has no OpenCV (ALEXNET_WITH_OPENCV=OFF): cannot draw " +
                             parser.get("out"));
#endif
  }
  return 0;
}

const Registration kFeatures{"features", "compute fc7 features of a data set (Figure 4)",
                             run_features};
const Registration kNeighbours{
    "neighbours", "nearest images by fc7 features; precision@k (Figure 4)", run_neighbours};

}  // namespace
}  // namespace alexnet::cli
