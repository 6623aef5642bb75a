// The data of a training run: its training and validation sets, their statistics, and the
// preprocessing the configuration asks for.
#pragma once

#include <cstdint>
#include <iostream>

#include "data/dataset.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "transforms/transforms.h"

namespace alexnet::train {

/// The training and validation sets of a run.
struct RunData {
  data::DatasetPtr train;
  data::DatasetPtr val;
};

/// Opens config.data: the source's "train" split, and as validation set `holdout` samples
/// held out of it, or the flat folder val_source labelled by val_labels (classes matched to
/// the training set's by name), or the source's "val" split (or val_source). Every selection
/// (holdout, train_limit, val_limit) keeps each class in proportion and is drawn with `seed` (the
/// run's seed), so a class-sorted source is represented whole and the same seed selects the same
/// samples. Errors name the source.
RunData open_run_data(const DataConfig& config, uint64_t seed);

/// Fills in the mean, std and PCA lighting data that `config` leaves open, from the
/// dataset's stored statistics or by computing them (config.stats_images samples, seeded by
/// `seed`); says so on `log` when it computes. With `channels` 1 (a model of one input
/// channel) the mean and std are those of the grey images transforms::MatchChannels makes
/// (grey_statistics).
void resolve_statistics(DataConfig& config, const data::Dataset& train, uint64_t seed,
                        int64_t channels, std::ostream& log);

/// The statistics of the grey level L = w . (R, G, B) (w: transforms::kLumaWeights) of the
/// pixels `rgb` describes: mean {w . mean} and std {sqrt(w' C w)}, where C is the RGB covariance
/// that the eigen-decomposition holds (C = 255 V diag(eigenvalues) V' on the 0..255 scale).
/// Without eigen data (PCA lighting needs three channels).
data::DatasetStats grey_statistics(const data::DatasetStats& rgb);

/// The transform pipeline's options for `config` (statistics resolved), making images of
/// `channels` channels (the model's input channels).
transforms::PipelineOptions pipeline_options(const DataConfig& config, int64_t channels);

/// Records in `checkpoint` what the exported model needs to prepare images: class names,
/// image and resize size, mean and std.
void record_inputs(Checkpoint& checkpoint, const TrainConfig& config, const data::Dataset& train);

}  // namespace alexnet::train
