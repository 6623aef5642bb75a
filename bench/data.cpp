// `alexnet bench data`: images/s of decoding + augmentation + batching through the loader.
#include <algorithm>
#include <iomanip>
#include <iostream>
#include <thread>

#include <nlohmann/json.hpp>

#include "bench/bench.h"
#include "bench/options.h"
#include "bench/timing.h"
#include "data/dataset.h"
#include "data/idx.h"
#include "data/image_folder.h"
#include "data/loader.h"
#include "data/packed.h"
#include "data/shards.h"
#include "transforms/transforms.h"

namespace alexnet::bench {
namespace {

std::string kind_of(const data::Dataset& dataset) {
  if (dynamic_cast<const data::ImageFolder*>(&dataset)) return "image folder";
  if (const auto* packed = dynamic_cast<const data::PackedDataset*>(&dataset)) {
    return packed->encoding() == data::PackedEncoding::kJpeg ? "packed file (jpeg)" : "packed file";
  }
  if (const auto* shards = dynamic_cast<const data::ShardedDataset*>(&dataset)) {
    return std::string("shard folder (") + data::packed_encoding_name(shards->encoding()) + ", " +
           std::to_string(shards->shards()) + " shards)";
  }
  if (dynamic_cast<const data::IdxDataset*>(&dataset)) return "IDX";
  return "data set";
}

cli::ArgParser data_parser() {
  cli::ArgParser parser("alexnet bench data --data DIR|FILE|fashion-mnist [options]",
                        "Measures the loader: images/s of reading, decoding, the paper's "
                        "training augmentation (random crop, flip, PCA lighting, mean "
                        "subtraction) and batching. Median of several timed windows after a "
                        "warm-up.");
  parser
      .option("data", "image folder, packed file, shard folder, IDX folder or fashion-mnist",
              "fashion-mnist")
      .option("split", "train or val", "train")
      .option("workers", "loader threads", "2")
      .option("batch-size", "batch size", "128")
      .option("resize", "shorter side before cropping (default 256; 64 for 28x28 IDX data)")
      .option("crop", "crop size (default 224; 56 for 28x28 IDX data)")
      .option("batches", "batches per timed window (default: about 1024 images)")
      .option("repeats", "timed windows", "5")
      .option("seed", "shuffling and augmentation seed", "0")
      .flag("eval", "the evaluation pipeline (centre crop) instead of the training one")
      .flag("ten-crop", "the evaluation pipeline with ten crops");
  add_json_flag(parser);
  return parser;
}

// The pipeline sizes and statistics: the options', else the data set's, else the paper's.
transforms::PipelineOptions pipeline_options(const cli::ArgParser& parser,
                                             const data::Dataset& dataset) {
  const bool small = dynamic_cast<const data::IdxDataset*>(&dataset) != nullptr;
  transforms::PipelineOptions pipeline;
  pipeline.resize = parser.given("resize") ? parser.get_int("resize") : (small ? 64 : 256);
  pipeline.crop = parser.given("crop") ? parser.get_int("crop") : (small ? 56 : 224);
  if (auto stats = dataset.stats()) {
    pipeline.mean = stats->mean;
    pipeline.eigenvalues = stats->eigenvalues;
    pipeline.eigenvectors = stats->eigenvectors;
  } else {
    pipeline.mean = {123.68, 116.78, 103.94};  // ImageNet's; the values do not change the cost
  }
  return pipeline;
}

// Images/s of each of `repeats` windows of `window` batches, after a warm-up of two batches;
// `shape` receives the shape of a batch.
std::vector<double> time_windows(data::Loader& loader, int64_t window, int64_t repeats,
                                 std::vector<int64_t>& shape) {
  int64_t epoch = 0;
  loader.start_epoch(epoch);
  auto next_batch = [&]() -> data::Batch {
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (auto batch = loader.next()) return std::move(*batch);
      loader.start_epoch(++epoch);
    }
    throw std::runtime_error("the loader returned no batch (every image failed to decode?)");
  };
  for (int64_t i = 0; i < std::min<int64_t>(2, window); ++i) {
    shape = next_batch().images.sizes().vec();
  }
  std::vector<double> rates;
  for (int64_t r = 0; r < repeats; ++r) {
    int64_t images = 0;
    const auto start = Clock::now();
    for (int64_t b = 0; b < window; ++b) images += next_batch().images.size(0);
    rates.push_back(static_cast<double>(images) / seconds_since(start));
  }
  return rates;
}

}  // namespace

int run_data(const std::vector<std::string>& args) {
  cli::ArgParser parser = data_parser();
  if (!parser.parse(args)) return 0;
  const std::string source = parser.get("data");
  const int64_t batch_size = cli::int_option(parser, "batch-size", /*minimum=*/1);
  const int64_t repeats = cli::int_option(parser, "repeats", /*minimum=*/1);

  data::DatasetOptions dataset_options;
  dataset_options.split = parser.get("split");
  if (parser.given("resize")) dataset_options.image_size = parser.get_int("resize");
  const auto dataset = data::open_dataset(source, dataset_options);
  const auto pipeline = pipeline_options(parser, *dataset);
  const bool ten_crop = parser.get_flag("ten-crop");
  const auto transform = (parser.get_flag("eval") || ten_crop)
                             ? transforms::eval_pipeline(pipeline, ten_crop)
                             : transforms::training_pipeline(pipeline);

  data::LoaderOptions options;
  options.batch_size = batch_size;
  options.workers = parser.get_int("workers");
  options.seed = static_cast<uint64_t>(parser.get_int("seed"));
  options.prefetch_batches = std::max<int64_t>(4, 2 * options.workers);
  data::Loader loader(dataset, transform, options);
  const int64_t window = parser.given("batches")
                             ? cli::int_option(parser, "batches", /*minimum=*/1)
                             : std::max<int64_t>(2, (1024 + batch_size - 1) / batch_size);
  std::vector<int64_t> shape;
  const auto rates = time_windows(loader, window, repeats, shape);
  const double rate = median(rates);
  const auto [slowest, fastest] = std::minmax_element(rates.begin(), rates.end());

  if (parser.get_flag("json")) {
    nlohmann::json out{{"bench", "data"},
                       {"source", source},
                       {"kind", kind_of(*dataset)},
                       {"images", dataset->size()},
                       {"workers", options.workers},
                       {"batch", batch_size},
                       {"resize", pipeline.resize},
                       {"crop", pipeline.crop},
                       {"pipeline", transform->name()},
                       {"batch_shape", shape},
                       {"images_per_s", rate},
                       {"repeats", rates},
                       {"skipped", loader.skipped()},
                       {"hardware_threads", std::thread::hardware_concurrency()}};
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::cout << "data: " << source << " (" << kind_of(*dataset) << ", " << dataset->size()
            << " images)\n  " << transform->name() << "\n  workers " << options.workers
            << ", batch " << batch_size << " " << c10::IntArrayRef(shape) << ": " << std::fixed
            << std::setprecision(0) << rate << " images/s (median of " << repeats << "; min "
            << *slowest << ", max " << *fastest << ")";
  if (loader.skipped() > 0) std::cout << ", " << loader.skipped() << " skipped";
  std::cout << "\n";
  return 0;
}

}  // namespace alexnet::bench
