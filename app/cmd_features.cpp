// `alexnet features` and `alexnet neighbours`: retrieval by fc7 features or binary codes (the
// paper's Figure 4 and section 6.1).
#include <iomanip>
#include <iostream>
#include <optional>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli.h"
#include "cli/option_groups.h"
#include "data/dataset.h"
#include "data/image_decode.h"
#include "experiments/binary_codes.h"
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

ArgParser features_parser() {
  ArgParser parser("alexnet features --model FILE --data SRC --out INDEX",
                   "Runs the model's `features` method (fc7 after its activation) on every image of a data "
                   "set, with the model's own preprocessing, and writes a feature index with "
                   "labels, class names, each image's origin and its raw-pixel vector (the "
                   "baseline) for `alexnet neighbours`.");
  parser.option("model", "TorchScript model written by `alexnet export`")
      .option("data",
              "data source (image folder, packed file, IDX folder, CIFAR-10 folder, "
              "fashion-mnist)")
      .option("split", "train, val or test", "test");
  add_subset_options(parser);
  parser.option("out", "feature index to write")
      .option("batch-size", "images per forward pass", "64")
      .option("workers", "loader threads", "2")
      .option("pixel-size",
              "side of the stored raw-pixel vectors (area-downsampled model "
              "input); 0: none",
              "32");
  add_threads_option(parser);
  return parser;
}

int run_features(const std::vector<std::string>& args) {
  ArgParser parser = features_parser();
  if (!parser.parse(args)) return 0;
  runtime::tune_runtime({"features"}, args);
  apply_threads_option(parser);
  require_options(parser, {"model", "data", "out"}, "features");
  const std::string model_path = parser.get("model"), source = parser.get("data");
  const std::string split = parser.get("split");
  auto model = train::load_exported_model(model_path);
  const auto whole = data::open_dataset(source, split);
  const std::vector<size_t> chosen = subset_indices_option(parser, *whole);  // empty: all
  const auto dataset = chosen.empty() ? whole : data::subset(whole, chosen);
  experiments::FeatureOptions options;
  options.batch_size = parser.get_int("batch-size");
  options.workers = parser.get_int("workers");
  options.pixel_size = parser.get_int("pixel-size");
  int64_t reported = 0;
  auto index = experiments::extract_features(
      model, dataset, source, split, options, [&](int64_t done, int64_t total) {
        if (done - reported >= 2000 || done == total) {
          std::cerr << "features: " << done << " / " << total << "\n";
          reported = done;
        }
      });
  // Positions in the whole data set, which neighbours and cluster reopen to draw the images.
  if (!chosen.empty()) {
    for (auto& position : index.dataset_indices) {
      position = static_cast<int64_t>(chosen[static_cast<size_t>(position)]);
    }
  }
  experiments::save_feature_index(index, parser.get("out"));
  std::cout << "wrote " << parser.get("out") << ": " << index.size() << " images, "
            << index.features.size(1) << "-d features"
            << (index.pixels.defined()
                    ? ", " + std::to_string(index.pixels.size(1)) + "-d pixel vectors"
                    : std::string())
            << "\n";
  return 0;
}

// The images a search runs over: their labels and where they come from.
struct Catalogue {
  torch::Tensor labels;
  std::vector<std::string> class_names, descriptions;
  std::vector<int64_t> dataset_indices;
  std::string data_source, split;

  int64_t size() const { return labels.size(0); }
  int64_t label(int64_t position) const { return labels[position].item<int64_t>(); }
  std::string class_name(int64_t label) const {
    return label >= 0 && label < static_cast<int64_t>(class_names.size())
               ? class_names[static_cast<size_t>(label)]
               : std::to_string(label);
  }
};

template <typename Records>
Catalogue catalogue_of(const Records& records) {
  return {records.labels,          records.class_names, records.descriptions,
          records.dataset_indices, records.data_source, records.split};
}

// A query: a position in the index, or an image file run through the model.
struct Query {
  std::string text;
  int64_t position = -1;  // in the index, or -1
  torch::Tensor image;    // [C, H, W] uint8 for image files
  torch::Tensor vector;   // [D] float32 feature, or [W] int64 packed code
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
      query.vector = index.features[query.position];
    } else {
      if (!model) {
        model =
            train::load_exported_model(model_override.empty() ? index.model_path : model_override);
      }
      query.image = data::decode_image_file(text, 0);
      transforms::Rng rng(0);
      auto input = experiments::feature_pipeline(*model)->apply(query.image, rng);
      input = experiments::match_channels(input.unsqueeze(0), model->in_channels);
      query.vector = experiments::model_features(model->module, input)[0];
      TORCH_CHECK(query.vector.size(0) == index.features.size(1), "model ", model->path, " gives ",
                  query.vector.size(0), "-d features but the index holds ", index.features.size(1),
                  "-d ones");
    }
    queries.push_back(std::move(query));
  }
  return queries;
}

std::vector<Query> make_code_queries(const experiments::BinaryCodes& codes,
                                     const std::vector<std::string>& texts,
                                     const std::string& codes_path) {
  std::vector<Query> queries;
  for (const auto& text : texts) {
    TORCH_CHECK(!text.empty() && text[0] == '#', "query '", text, "': with --codes ", codes_path,
                " queries are #N positions (the code file holds no model to encode images)");
    Query query;
    query.text = text;
    query.position = parse_position(text, codes.size());
    query.vector = codes.codes[query.position];
    queries.push_back(std::move(query));
  }
  return queries;
}

#if ALEXNET_WITH_OPENCV
void draw_neighbours(const Catalogue& catalogue, const std::vector<Query>& queries,
                     const std::vector<std::vector<experiments::Neighbour>>& results,
                     int64_t tile_size, bool hamming, const std::string& path) {
  const auto dataset = experiments::open_recorded_dataset(
      catalogue.data_source, catalogue.split, catalogue.dataset_indices, catalogue.descriptions);
  auto image_at = [&](int64_t position) {
    return dataset
        ->get(static_cast<size_t>(catalogue.dataset_indices[static_cast<size_t>(position)]))
        .image;
  };
  const draw::Rgb query_frame{31, 119, 180}, same{44, 160, 44}, other{214, 39, 40};
  std::vector<std::vector<draw::Tile>> rows;
  for (size_t q = 0; q < queries.size(); ++q) {
    std::vector<draw::Tile> row;
    const auto& query = queries[q];
    const int64_t query_label = query.position >= 0 ? catalogue.label(query.position) : -1;
    draw::Tile first;
    first.image = query.position >= 0 ? image_at(query.position) : query.image;
    first.lines = {query.position >= 0 ? catalogue.class_name(query_label) : "query",
                   query.position >= 0 ? "query #" + std::to_string(query.position) : query.text};
    first.frame = query_frame;
    row.push_back(first);
    for (const auto& n : results[q]) {
      const int64_t label = catalogue.label(n.index);
      std::ostringstream distance;
      distance << "d=" << std::fixed
               << std::setprecision(hamming           ? 0
                                    : n.distance < 10 ? 2
                                                      : 1)
               << n.distance;
      draw::Tile tile;
      tile.image = image_at(n.index);
      tile.lines = {catalogue.class_name(label), distance.str()};
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

// `neighbours --precision-at K`: precision@K of the index's vectors and/or the codes, and with
// --speed the search speed of Hamming codes against fc7 vectors.
int report_precision(const ArgParser& parser, const std::optional<FeatureIndex>& index,
                     const std::optional<experiments::BinaryCodes>& codes) {
  const int64_t k = parser.get_int("precision-at");
  nlohmann::json out{{"k", k}};
  if (index) {
    out["index"] = parser.get("index");
    out["images"] = index->size();
    out["fc7"] = experiments::precision_at_k(index->features, index->labels, k);
    out["fc7_dim"] = index->features.size(1);
    if (parser.get_flag("pixels")) {
      TORCH_CHECK(index->pixels.defined(), "index ", parser.get("index"),
                  " holds no pixel vectors (written with --pixel-size 0)");
      out["pixels"] = experiments::precision_at_k(index->pixels, index->labels, k);
      out["pixel_dim"] = index->pixels.size(1);
    }
  } else if (parser.get_flag("pixels")) {
    throw std::invalid_argument("--pixels needs --index (the pixel vectors are in the index)");
  }
  if (codes) {
    out["images"] = codes->size();
    out["codes"] = {
        {"file", parser.get("codes")},
        {"input", codes->input},
        {"bits", codes->bits},
        {"precision", experiments::hamming_precision_at_k(codes->codes, codes->labels, k)}};
  }
  if (parser.get_flag("speed")) {
    if (!index || !codes) {
      throw std::invalid_argument("--speed needs both --index and --codes (of the same images)");
    }
    TORCH_CHECK(index->size() == codes->size() && index->labels.equal(codes->labels), "--codes ",
                parser.get("codes"), " (", codes->size(),
                " images) does not hold the images of --index ", parser.get("index"), " (",
                index->size(), ")");
    const auto speed = experiments::measure_search_speed(index->features, codes->codes, codes->bits,
                                                         index->labels, k);
    out["search_speed"] = {{"items", speed.items},
                           {"threads", speed.threads},
                           {"float_dim", speed.float_dim},
                           {"bits", speed.bits},
                           {"float_queries_per_second", speed.float_queries_per_second},
                           {"hamming_queries_per_second", speed.hamming_queries_per_second}};
  }
  if (parser.get_flag("json")) {
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::cout << std::fixed << std::setprecision(4) << "precision@" << k << " over "
            << out["images"].get<int64_t>() << " images\n";
  if (out.contains("fc7")) {
    std::cout << "  fc7 features (" << index->features.size(1)
              << "-d): " << out["fc7"].get<double>() << "\n";
  }
  if (out.contains("pixels")) {
    std::cout << "  raw pixels (" << index->pixels.size(1) << "-d): " << out["pixels"].get<double>()
              << "\n";
  }
  if (codes) {
    std::cout << "  " << codes->bits << "-bit codes of " << codes->input
              << " (Hamming): " << out["codes"]["precision"].get<double>() << "\n";
  }
  if (out.contains("search_speed")) {
    const auto& s = out["search_speed"];
    std::cout << std::setprecision(0) << "search over " << s["items"].get<int64_t>() << " images, "
              << s["threads"].get<int64_t>()
              << " threads: " << s["float_queries_per_second"].get<double>() << " queries/s with "
              << s["float_dim"].get<int64_t>() << "-d float vectors, "
              << s["hamming_queries_per_second"].get<double>() << " with "
              << s["bits"].get<int64_t>() << "-bit codes\n";
  }
  return 0;
}

ArgParser neighbours_parser() {
  ArgParser parser(
      "alexnet neighbours (--index INDEX | --codes CODES) [QUERY...]",
      "Lists each query's nearest images by Euclidean distance between fc7 features (or, with "
      "--codes, by Hamming distance between binary codes written by `alexnet codes`) and draws "
      "them (the paper's Figure 4), or scores retrieval with --precision-at K: the mean share "
      "of each image's K nearest other images that have its label, for fc7 features, with "
      "--pixels for raw pixels, with --codes for the codes. Ties in Hamming distance go to the "
      "lower position.");
  parser.option("index", "feature index written by `alexnet features`")
      .option("codes", "binary codes written by `alexnet codes`: search by Hamming distance")
      .option("query", "comma-separated queries (also accepted as positional arguments)")
      .option("k", "neighbours per query", "6");
  // The picture.
  parser.option("out", "PNG grid to draw: each row a query, then its neighbours")
      .option("tile", "tile side in the grid, pixels", "96")
      .option("model", "model for image-file queries (default: the one the index records)");
  // Scoring instead of listing.
  parser.option("precision-at", "score retrieval: mean precision@K over the whole index")
      .flag("pixels", "with --precision-at: also score raw-pixel vectors (the baseline)")
      .flag("speed",
            "with --precision-at, --index and --codes: time the search of every image's K "
            "nearest by fc7 vectors and by codes (queries per second)")
      .flag("json", "print JSON");
  add_threads_option(parser);
  parser.positionals("QUERY", "an image file, or #N for the N-th image of the index");
  return parser;
}

// The queries: the positional arguments, then the items of --query.
std::vector<std::string> query_texts(const ArgParser& parser) {
  std::vector<std::string> texts = parser.positional();
  for (const auto& item : split(parser.get("query"))) texts.push_back(item);
  if (texts.empty()) {
    throw std::invalid_argument(
        "give queries (#N or image files) or --precision-at K (see "
        "alexnet neighbours --help)");
  }
  return texts;
}

// Cuts an image file's list to its k nearest; a query from the index keeps k + 1, itself first.
void keep_listed_neighbours(const std::vector<Query>& queries,
                            std::vector<std::vector<experiments::Neighbour>>& results, int64_t k) {
  for (size_t q = 0; q < queries.size(); ++q) {
    if (queries[q].position < 0 && static_cast<int64_t>(results[q].size()) > k) {
      results[q].resize(static_cast<size_t>(k));
    }
  }
}

#if ALEXNET_WITH_OPENCV
// Each query's k nearest images other than itself: what the picture draws.
std::vector<std::vector<experiments::Neighbour>> drawn_neighbours(
    const std::vector<Query>& queries,
    const std::vector<std::vector<experiments::Neighbour>>& results, int64_t k) {
  std::vector<std::vector<experiments::Neighbour>> shown;
  for (size_t q = 0; q < queries.size(); ++q) {
    std::vector<experiments::Neighbour> list;
    for (const auto& n : results[q]) {
      if (n.index == queries[q].position) continue;
      if (static_cast<int64_t>(list.size()) < k) list.push_back(n);
    }
    shown.push_back(list);
  }
  return shown;
}
#endif

void print_neighbours_json(const Catalogue& catalogue, const std::vector<Query>& queries,
                           const std::vector<std::vector<experiments::Neighbour>>& results) {
  nlohmann::json out = nlohmann::json::array();
  for (size_t q = 0; q < queries.size(); ++q) {
    nlohmann::json item{{"query", queries[q].text}};
    if (queries[q].position >= 0) {
      const auto p = queries[q].position;
      item["position"] = p;
      item["label"] = catalogue.class_name(catalogue.label(p));
      item["description"] = catalogue.descriptions[static_cast<size_t>(p)];
    }
    item["neighbours"] = nlohmann::json::array();
    for (const auto& n : results[q]) {
      item["neighbours"].push_back(
          {{"position", n.index},
           {"distance", n.distance},
           {"label", catalogue.class_name(catalogue.label(n.index))},
           {"description", catalogue.descriptions[static_cast<size_t>(n.index)]}});
    }
    out.push_back(item);
  }
  std::cout << out.dump(2) << "\n";
}

void print_neighbours_text(const Catalogue& catalogue, const std::vector<Query>& queries,
                           const std::vector<std::vector<experiments::Neighbour>>& results,
                           bool hamming) {
  for (size_t q = 0; q < queries.size(); ++q) {
    std::cout << "query " << queries[q].text;
    if (queries[q].position >= 0) {
      std::cout << " (" << catalogue.class_name(catalogue.label(queries[q].position)) << ", "
                << catalogue.descriptions[static_cast<size_t>(queries[q].position)] << ")";
    }
    std::cout << "\n";
    for (const auto& n : results[q]) {
      std::cout << "  #" << std::left << std::setw(7) << n.index << std::right << std::fixed
                << std::setprecision(hamming ? 0 : 3) << std::setw(10) << n.distance << "  "
                << std::left << std::setw(14) << catalogue.class_name(catalogue.label(n.index))
                << std::right << catalogue.descriptions[static_cast<size_t>(n.index)] << "\n";
    }
  }
}

int run_neighbours(const std::vector<std::string>& args) {
  ArgParser parser = neighbours_parser();
  if (!parser.parse(args)) return 0;
  runtime::tune_runtime({"neighbours"}, args);
  apply_threads_option(parser);
  if (!parser.has("index") && !parser.has("codes")) {
    throw std::invalid_argument("--index or --codes is required (see alexnet neighbours --help)");
  }
  std::optional<FeatureIndex> index;
  std::optional<experiments::BinaryCodes> codes;
  if (parser.has("index")) index = experiments::load_feature_index(parser.get("index"));
  if (parser.has("codes")) codes = experiments::load_binary_codes(parser.get("codes"));

  if (parser.has("precision-at")) return report_precision(parser, index, codes);

  const std::vector<std::string> texts = query_texts(parser);
  const int64_t k = parser.get_int("k");
  TORCH_CHECK(k >= 1, "--k must be positive, got ", k);
  const bool hamming = codes.has_value();
  const auto queries = hamming ? make_code_queries(*codes, texts, parser.get("codes"))
                               : make_queries(*index, texts, parser.get("model"));
  const Catalogue catalogue = hamming ? catalogue_of(*codes) : catalogue_of(*index);
  std::vector<torch::Tensor> vectors;
  std::vector<int64_t> self;
  for (const auto& q : queries) {
    vectors.push_back(q.vector);
    self.push_back(q.position);
  }
  // A query from the index is its own nearest neighbour: it is listed first, then k others.
  auto results =
      hamming
          ? experiments::hamming_neighbours(codes->codes, torch::stack(vectors), k + 1, self)
          : experiments::nearest_neighbours(index->features, torch::stack(vectors), k + 1, self);
  keep_listed_neighbours(queries, results, k);
  if (parser.get_flag("json")) {
    print_neighbours_json(catalogue, queries, results);
  } else {
    print_neighbours_text(catalogue, queries, results, hamming);
  }
  if (parser.has("out")) {
#if ALEXNET_WITH_OPENCV
    draw_neighbours(catalogue, queries, drawn_neighbours(queries, results, k),
                    parser.get_int("tile"), hamming, parser.get("out"));
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
    "neighbours", "nearest images by fc7 features or binary codes; precision@k (Figure 4)",
    run_neighbours};

}  // namespace
}  // namespace alexnet::cli
