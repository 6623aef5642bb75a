#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <torch/script.h>
#include <torch/torch.h>

#include "data/dataset.h"
#include "experiments/feature_index.h"
#include "train/exported_model.h"
#include "transforms/transforms.h"

namespace alexnet::experiments {

/// A parameter, buffer or tensor attribute of a TorchScript model by its dotted name, e.g.
/// "conv1.weight" (also found as "conv1_weight" or at any depth, "model.conv1.weight"). Throws
/// naming `what` (the model file) and the name when absent.
torch::Tensor model_tensor(const torch::jit::Module& model, const std::string& name,
                           const std::string& what);

/// The evaluation pipeline of an exported model (ResizeShorter(resize_size),
/// CenterCrop(resize_size), CenterCrop(image_size), mean/std) keeping the image's channels.
/// Returns [C, image_size, image_size] float32; match_channels adapts C to the model.
transforms::TransformPtr feature_pipeline(const train::ExportedModel& model);

/// Adapts a batch [B, C, h, w] float32 to the model's channels: 3 -> 1 averages the channels,
/// 1 -> 3 replicates; other mismatches throw.
torch::Tensor match_channels(const torch::Tensor& batch, int64_t in_channels);

/// Runs the model's `features` method (fc7 after ReLU) without gradients on the model's
/// device. input: [B, in_channels, image_size, image_size] float32. Returns [B, D] float32 on
/// the CPU.
torch::Tensor model_features(torch::jit::Module& model, const torch::Tensor& input);

/// The raw-pixel baseline vector of each model input: area-downsampled so that neither side
/// exceeds `pixel_size` (kept as is when already smaller), flattened. input: [B, C, h, w]
/// float32. Returns [B, C * h' * w'] float32.
torch::Tensor pixel_vectors(const torch::Tensor& input, int64_t pixel_size);

struct FeatureOptions {
  int64_t batch_size = 64;
  /// Loader threads (0: load on the calling thread).
  int64_t workers = 2;
  /// Side of the stored raw-pixel vectors; 0 stores none.
  int64_t pixel_size = 32;
};

/// Computes the features (and pixel vectors) of every image of `dataset` in order, with the
/// model's preprocessing. `data_source`, `split` and the model's file are recorded in the index.
/// Images that fail to decode are left out (and reported by the loader). `progress`, when
/// given, is called after every batch with (images done, images in the data set).
FeatureIndex extract_features(train::ExportedModel& model, const data::DatasetPtr& dataset,
                              const std::string& data_source, const std::string& split,
                              const FeatureOptions& options,
                              const std::function<void(int64_t, int64_t)>& progress = {});

/// Opens the data set that image records come from (`source` and `split` as
/// data::open_dataset takes them) and checks that its images at the first and last recorded
/// positions still have the recorded descriptions; throws naming the source when not.
data::DatasetPtr open_recorded_dataset(const std::string& source, const std::string& split,
                                       const std::vector<int64_t>& dataset_indices,
                                       const std::vector<std::string>& descriptions);

}  // namespace alexnet::experiments
