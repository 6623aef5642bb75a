#include "experiments/feature_extraction.h"

#include <algorithm>
#include <stdexcept>

#include "data/loader.h"

namespace alexnet::experiments {
namespace {

torch::Device model_device(const torch::jit::Module& model) {
  for (const auto& p : model.parameters()) return p.device();
  return torch::kCPU;
}

}  // namespace

torch::Tensor model_tensor(const torch::jit::Module& model, const std::string& name,
                           const std::string& what) {
  std::string underscored = name;
  std::replace(underscored.begin(), underscored.end(), '.', '_');
  auto matches = [&](const std::string& key) {
    for (const auto& candidate : {name, underscored}) {
      if (key == candidate) return true;
      if (key.size() > candidate.size() &&
          key.compare(key.size() - candidate.size(), candidate.size(), candidate) == 0 &&
          key[key.size() - candidate.size() - 1] == '.') {
        return true;
      }
    }
    return false;
  };
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    if (matches(item.name)) return item.value;
  }
  for (const auto& item : model.named_buffers(/*recurse=*/true)) {
    if (matches(item.name)) return item.value;
  }
  for (const auto& item : model.named_attributes(/*recurse=*/true)) {
    if (matches(item.name) && item.value.isTensor()) return item.value.toTensor();
  }
  throw std::runtime_error("model " + what + " has no tensor named '" + name + "' (nor '" +
                           underscored + "')");
}

transforms::TransformPtr feature_pipeline(const train::ExportedModel& model) {
  auto options = model.pipeline_options();
  options.channels = 0;  // match_channels adapts the channels after normalisation
  return transforms::eval_pipeline(options, /*ten_crop=*/false);
}

torch::Tensor match_channels(const torch::Tensor& batch, int64_t in_channels) {
  TORCH_CHECK(batch.dim() == 4, "expected a batch [B, C, H, W], got ", batch.sizes());
  const int64_t c = batch.size(1);
  if (c == in_channels) return batch;
  if (c == 3 && in_channels == 1) return batch.mean(1, /*keepdim=*/true);
  if (c == 1 && in_channels == 3) return batch.expand({-1, 3, -1, -1}).contiguous();
  TORCH_CHECK(false, "images have ", c, " channels but the model takes ", in_channels);
}

torch::Tensor model_features(torch::jit::Module& model, const torch::Tensor& input) {
  TORCH_CHECK(input.dim() == 4, "features: expected [B, C, H, W] input, got ", input.sizes());
  torch::NoGradGuard no_grad;
  const auto device = model_device(model);
  auto output = model.run_method("features", input.to(device, torch::kFloat));
  TORCH_CHECK(output.isTensor(), "the model's features method did not return a tensor");
  auto features = output.toTensor();
  TORCH_CHECK(features.dim() == 2 && features.size(0) == input.size(0),
              "the model's features method returned ", features.sizes(), " for ", input.size(0),
              " images (expected [B, D])");
  return features.to(torch::kCPU, torch::kFloat).contiguous();
}

torch::Tensor pixel_vectors(const torch::Tensor& input, int64_t pixel_size) {
  TORCH_CHECK(input.dim() == 4, "pixel vectors: expected [B, C, H, W], got ", input.sizes());
  TORCH_CHECK(pixel_size > 0, "pixel vectors: pixel_size must be positive, got ", pixel_size);
  auto x = input.to(torch::kCPU, torch::kFloat);
  const int64_t h = std::min(x.size(2), pixel_size), w = std::min(x.size(3), pixel_size);
  if (h != x.size(2) || w != x.size(3)) x = torch::adaptive_avg_pool2d(x, {h, w});
  return x.flatten(1).contiguous();
}

FeatureIndex extract_features(train::ExportedModel& model, const data::DatasetPtr& dataset,
                              const std::string& data_source, const std::string& split,
                              const FeatureOptions& options,
                              const std::function<void(int64_t, int64_t)>& progress) {
  TORCH_CHECK(dataset != nullptr && dataset->size() > 0, "features: the data set ", data_source,
              " (", split, ") is empty");
  TORCH_CHECK(options.batch_size > 0, "features: batch size must be positive");
  TORCH_CHECK(options.pixel_size >= 0, "features: pixel size must not be negative");

  data::LoaderOptions loader_options;
  loader_options.batch_size = options.batch_size;
  loader_options.workers = options.workers;
  loader_options.shuffle = false;
  data::Loader loader(dataset, feature_pipeline(model), loader_options);
  loader.start_epoch(0);

  std::vector<torch::Tensor> features, pixels, labels;
  FeatureIndex index;
  int64_t done = 0;
  while (auto batch = loader.next()) {
    const auto input = match_channels(batch->images, model.in_channels);
    features.push_back(model_features(model.module, input));
    if (options.pixel_size > 0) pixels.push_back(pixel_vectors(input, options.pixel_size));
    labels.push_back(batch->labels.to(torch::kLong));
    for (int64_t i : batch->indices) {
      index.dataset_indices.push_back(i);
      index.descriptions.push_back(dataset->sample_source(static_cast<size_t>(i)));
    }
    done += static_cast<int64_t>(batch->indices.size());
    if (progress) progress(done, static_cast<int64_t>(dataset->size()));
  }
  TORCH_CHECK(!features.empty(), "features: no image of ", data_source, " could be read");
  index.features = torch::cat(features);
  index.labels = torch::cat(labels);
  if (!pixels.empty()) index.pixels = torch::cat(pixels);
  index.class_names = dataset->class_names();
  index.data_source = data_source;
  index.split = split;
  index.model_path = model.path;
  index.validate();
  return index;
}

data::DatasetPtr open_recorded_dataset(const std::string& source, const std::string& split,
                                       const std::vector<int64_t>& dataset_indices,
                                       const std::vector<std::string>& descriptions) {
  TORCH_CHECK(!dataset_indices.empty() && dataset_indices.size() == descriptions.size(),
              "records of ", source, " (", split, "): ", dataset_indices.size(), " positions and ",
              descriptions.size(), " descriptions");
  auto dataset = data::open_dataset(source, split);
  for (size_t p : {size_t{0}, dataset_indices.size() - 1}) {
    const auto i = static_cast<size_t>(dataset_indices[p]);
    TORCH_CHECK(i < dataset->size() && dataset->sample_source(i) == descriptions[p],
                "the data source ", source, " (", split, ") no longer matches the records: image ",
                p, " was ", descriptions[p]);
  }
  return dataset;
}

}  // namespace alexnet::experiments
