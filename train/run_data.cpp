#include "train/run_data.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "data/labels_file.h"

namespace alexnet::train {
namespace {

data::DatasetPtr limit(data::DatasetPtr dataset, int64_t n, uint64_t seed) {
  return n > 0 ? data::stratified_subset(std::move(dataset), static_cast<size_t>(n), seed)
               : dataset;
}

}  // namespace

data::DatasetStats grey_statistics(const data::DatasetStats& rgb) {
  TORCH_CHECK(rgb.mean.size() == 3 && rgb.eigenvalues.numel() == 3 && rgb.eigenvectors.numel() == 9,
              "grey_statistics: expects RGB statistics with their eigen-decomposition");
  const auto& w = transforms::kLumaWeights;
  const auto weights = torch::tensor({w[0], w[1], w[2]}, torch::kFloat64);
  const auto projections = torch::matmul(weights, rgb.eigenvectors.to(torch::kFloat64));
  const double variance =
      255.0 *
      (rgb.eigenvalues.to(torch::kFloat64) * projections * projections).sum().item<double>();
  data::DatasetStats grey;
  grey.images = rgb.images;
  grey.mean = {w[0] * rgb.mean[0] + w[1] * rgb.mean[1] + w[2] * rgb.mean[2]};
  grey.std = {std::sqrt(std::max(0.0, variance))};
  return grey;
}

void resolve_statistics(DataConfig& config, const data::Dataset& train, uint64_t seed,
                        int64_t channels, std::ostream& log) {
  const bool need_mean = config.normalize != Normalize::kNone && config.mean.empty();
  const bool need_std = config.normalize == Normalize::kMeanStd && config.std.empty();
  const bool need_pca = config.pca_lighting && config.eigenvalues.empty();
  if (!need_mean && !need_std && !need_pca) return;
  std::optional<data::DatasetStats> stats = train.stats();
  if (!stats) {
    log << "computing training set statistics from "
        << (config.stats_images ? std::min<size_t>(config.stats_images, train.size())
                                : train.size())
        << " images..." << std::endl;
    stats = data::compute_stats(train, static_cast<size_t>(config.stats_images), seed);
  }
  if (channels == 1) stats = grey_statistics(*stats);
  if (need_mean) config.mean = stats->mean;
  if (need_std) {
    for (size_t c = 0; c < stats->std.size(); ++c) {
      TORCH_CHECK(stats->std[c] > 0, "the training images' std is 0 in channel ", c,
                  " (every pixel of the images read is the same there): set data.normalize to "
                  "\"mean\", or give data.std");
    }
    config.std = stats->std;
  }
  if (need_pca) {
    auto values = stats->eigenvalues.to(torch::kFloat64).contiguous();
    auto vectors = stats->eigenvectors.to(torch::kFloat64).contiguous();
    config.eigenvalues.assign(values.data_ptr<double>(), values.data_ptr<double>() + 3);
    config.eigenvectors.assign(vectors.data_ptr<double>(), vectors.data_ptr<double>() + 9);
  }
}

transforms::PipelineOptions pipeline_options(const DataConfig& config, int64_t channels) {
  transforms::PipelineOptions options;
  options.channels = channels;
  options.resize = config.resize;
  options.crop = config.crop;
  options.flip = config.flip;
  options.pca_lighting = config.pca_lighting;
  if (config.normalize != Normalize::kNone) options.mean = config.mean;
  if (config.normalize == Normalize::kMeanStd) options.std = config.std;
  if (!config.eigenvalues.empty()) {
    options.eigenvalues = torch::tensor(config.eigenvalues, torch::kFloat64);
    options.eigenvectors = torch::tensor(config.eigenvectors, torch::kFloat64).view({3, 3});
  }
  return options;
}

void record_inputs(Checkpoint& checkpoint, const TrainConfig& config, const data::Dataset& train) {
  checkpoint.class_names = train.class_names();
  checkpoint.image_size = config.data.crop;
  checkpoint.resize_size = config.data.resize > 0 ? config.data.resize : config.data.crop;
  checkpoint.mean =
      config.data.normalize != Normalize::kNone ? config.data.mean : std::vector<double>{};
  checkpoint.std =
      config.data.normalize == Normalize::kMeanStd ? config.data.std : std::vector<double>{};
}

RunData open_run_data(const DataConfig& config, uint64_t seed) {
  data::DatasetOptions options;
  options.split = "train";
  options.image_size = config.decode_size;
  RunData run;
  run.train = data::open_dataset(config.source, options);
  if (config.holdout > 0) {
    const auto n = run.train->size();
    TORCH_CHECK(static_cast<size_t>(config.holdout) < n, "data.holdout (", config.holdout,
                ") must be smaller than the training set of '", config.source, "' (", n,
                " samples)");
    auto split = data::stratified_split(run.train, static_cast<size_t>(config.holdout), seed);
    run.val = std::move(split.selected);
    run.train = std::move(split.rest);
  } else if (!config.val_labels.empty()) {
    data::LabelledFolderOptions labelled;
    labelled.format = data::parse_labels_format(config.val_labels_format);
    labelled.synsets_file = config.val_synsets;
    labelled.image_size = config.decode_size;
    run.val = data::open_labelled_folder(config.val_source, config.val_labels,
                                         run.train->class_names(), labelled);
  } else {
    options.split = "val";
    options.val_source = config.val_source;
    try {
      run.val = data::open_dataset(config.source, options);
    } catch (const std::exception& e) {
      throw std::runtime_error(std::string(e.what()) +
                               "\n(no validation set: set data.val_source, or data.holdout to "
                               "hold out training samples)");
    }
  }
  run.train = limit(run.train, config.train_limit, seed);
  run.val = limit(run.val, config.val_limit, seed);
  TORCH_CHECK(run.train->size() > 0, "the training set of '", config.source, "' is empty");
  return run;
}

}  // namespace alexnet::train
