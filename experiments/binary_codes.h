#pragma once

// Short binary codes for retrieval (the paper's section 6.1): an autoencoder with a binary
// bottleneck compresses vectors (fc7 features or raw pixels) to a few bits, packed into uint64
// words and searched by Hamming distance.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "experiments/feature_index.h"

namespace alexnet::experiments {

struct BinaryAutoencoderOptions {
  BinaryAutoencoderOptions(int64_t input_dim, int64_t bits) : input_dim_(input_dim), bits_(bits) {}
  /// Length of the vectors to encode.
  TORCH_ARG(int64_t, input_dim);
  /// Bits of the code (the bottleneck's width).
  TORCH_ARG(int64_t, bits);
  /// Width of the hidden layer on each side of the bottleneck.
  TORCH_ARG(int64_t, hidden) = 512;
  /// Standard deviation of the Gaussian noise added to the bottleneck's logits while training
  /// (it pushes them away from 0, so that thresholding loses little).
  TORCH_ARG(double, noise) = 1.0;
};

/// input -> Linear(hidden) -> ReLU -> Linear(bits) -> sigmoid -> binary code -> Linear(hidden)
/// -> ReLU -> Linear(input). Inputs are standardised with the `mean` and `scale` buffers
/// (set by `set_standardisation`), and reconstructions are compared in that space. While
/// training, noise is added to the bottleneck's logits and the sigmoid's output is rounded to 0
/// or 1 with a straight-through gradient; in eval mode the code is `logits > 0`.
class BinaryAutoencoderImpl : public torch::nn::Module {
 public:
  explicit BinaryAutoencoderImpl(BinaryAutoencoderOptions options);

  /// Sets the standardisation from training vectors [N, input_dim]: the per-dimension mean
  /// and one scale, the root mean square of the centred values.
  void set_standardisation(const torch::Tensor& vectors);
  /// Standardised vectors, [N, input_dim] float32.
  torch::Tensor standardise(const torch::Tensor& vectors) const;
  /// Code in {0, 1} as float32, [N, bits]; binarised as the module's mode says.
  torch::Tensor code(const torch::Tensor& vectors);
  /// Reconstruction of the standardised input from a code [N, bits], [N, input_dim].
  torch::Tensor decode(const torch::Tensor& code);
  /// Reconstruction of the standardised input, [N, input_dim] float32.
  torch::Tensor forward(const torch::Tensor& vectors);
  /// Mean squared error between the reconstruction and the standardised input (no gradient).
  double reconstruction_loss(const torch::Tensor& vectors);

  const BinaryAutoencoderOptions& options() const { return options_; }

 private:
  BinaryAutoencoderOptions options_;
  torch::nn::Linear encode1_{nullptr}, encode2_{nullptr}, decode1_{nullptr}, decode2_{nullptr};
  torch::Tensor mean_, scale_;
};
TORCH_MODULE(BinaryAutoencoder);

struct CodeTrainingOptions {
  int64_t epochs = 30;
  int64_t batch_size = 128;
  /// Adam's learning rate.
  double lr = 1e-3;
  uint64_t seed = 0;
};

/// Trains `model` on `vectors` [N, input_dim] (shuffled each epoch with `seed`), after setting
/// its standardisation from them. Returns the mean training loss of each epoch; `progress`,
/// when given, is called after each epoch with (epoch, loss). Leaves the model in eval mode.
std::vector<double> train_binary_autoencoder(
    BinaryAutoencoder& model, const torch::Tensor& vectors, const CodeTrainingOptions& options,
    const std::function<void(int64_t, double)>& progress = {});

/// Packs bits [N, B] (bool, or any dtype where nonzero means 1) into [N, ceil(B / 64)] int64
/// words holding uint64 bit patterns: bit j of a row is bit (j % 64) of word j / 64.
torch::Tensor pack_bits(const torch::Tensor& bits);

/// The first `bits` bits of packed rows [N, W] int64, as [N, bits] bool.
torch::Tensor unpack_bits(const torch::Tensor& packed, int64_t bits);

/// Hamming distances between packed rows a [A, W] and b [B, W] int64, [A, B] int64.
torch::Tensor hamming_distances(const torch::Tensor& a, const torch::Tensor& b);

/// The k nearest rows of `codes` [N, W] to each row of `queries` [Q, W] by Hamming distance
/// (popcount of XOR), nearest first; ties by row index, except that a query's own row, given
/// in `self` [Q] or empty, comes first among equals (`exclude_self`: left out instead).
/// Returns Q lists of min(k, N) neighbours (N - 1 when a query's own row is left out).
std::vector<std::vector<Neighbour>> hamming_neighbours(const torch::Tensor& codes,
                                                       const torch::Tensor& queries, int64_t k,
                                                       const std::vector<int64_t>& self = {},
                                                       bool exclude_self = false);

/// Mean precision@k by Hamming distance: for every row i of `codes` [N, W], the share of its
/// k nearest other rows (ties by row index) whose label equals labels[i] ([N] int64), averaged
/// over i. Needs N > k.
double hamming_precision_at_k(const torch::Tensor& codes, const torch::Tensor& labels, int64_t k);

/// Binary codes of the images of a feature index, as written by `alexnet codes`.
struct BinaryCodes {
  /// [N, ceil(bits / 64)] int64 holding uint64 words (see pack_bits).
  torch::Tensor codes;
  int64_t bits = 0;
  /// [N] int64, and the image records copied from the feature index.
  torch::Tensor labels;
  std::vector<std::string> class_names;
  std::vector<std::string> descriptions;
  std::vector<int64_t> dataset_indices;
  std::string data_source, split;
  /// What was encoded: "fc7" or "pixels", the index it came from, and the autoencoder's
  /// training (free-form JSON text: options, losses, seed).
  std::string input, index_path, training;

  int64_t size() const { return codes.defined() ? codes.size(0) : 0; }
  /// Throws naming the inconsistency.
  void validate() const;
};

/// Writes `codes` atomically. Format: the 8 bytes "ALXCODE1", a uint64 header length, a JSON
/// header, then codes [N, W] (uint64 words) and labels int64 [N], little-endian.
void save_binary_codes(const BinaryCodes& codes, const std::string& path);

/// Reads a file written by save_binary_codes; throws std::runtime_error naming the file when
/// it is missing, not a code file, or truncated.
BinaryCodes load_binary_codes(const std::string& path);

/// The vectors of `index` that `input` names: "fc7" (the features) or "pixels" (the raw-pixel
/// vectors), [N, D] float32. Throws naming `path` (the index file) when the index has no pixel
/// vectors, and the value when `input` is neither.
torch::Tensor index_vectors(const FeatureIndex& index, const std::string& input,
                            const std::string& path);

/// The codes of `vectors` [N, input_dim] by a model in eval mode, packed: [N, W] int64.
torch::Tensor encode_packed(BinaryAutoencoder& model, const torch::Tensor& vectors);

/// The packed codes [N, W] of the images of `index` with their labels and image records.
BinaryCodes codes_of_index(const FeatureIndex& index, const torch::Tensor& packed, int64_t bits);

/// Queries per second of the two searches over the same N items, all N rows as queries, each
/// search finding its k nearest others (the work of precision@k).
struct SearchSpeed {
  double float_queries_per_second = 0;
  double hamming_queries_per_second = 0;
  int64_t items = 0, float_dim = 0, bits = 0, threads = 0;
};

/// Times precision_at_k on `vectors` [N, D] float32 against hamming_precision_at_k on `codes`
/// [N, W], once each, with the current intra-op threads.
SearchSpeed measure_search_speed(const torch::Tensor& vectors, const torch::Tensor& codes,
                                 int64_t bits, const torch::Tensor& labels, int64_t k);

}  // namespace alexnet::experiments
