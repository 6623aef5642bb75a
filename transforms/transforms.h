#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace alexnet::transforms {

/// The random engine every transform draws from. The loader seeds one per sample from
/// (seed, epoch, index), so augmentations do not depend on the number of workers.
using Rng = std::mt19937_64;

/// An image transform: tensors in, tensors out. Images are [C, H, W], uint8 or float32 on
/// the 0..255 scale. Geometric transforms keep the dtype, so cropping and flipping can run on
/// uint8 before the conversion to float.
class Transform {
 public:
  virtual ~Transform() = default;
  /// image: [C, H, W] uint8 or float32 (0..255 scale). Returns [C, h, w] (or [10, C, h, w]
  /// for TenCrop, whose successors must accept that shape).
  virtual torch::Tensor apply(torch::Tensor image, Rng& rng) const = 0;
  /// A short description, e.g. "RandomCrop(224)".
  virtual std::string name() const = 0;
  /// For transforms that map every pixel x of channel c to x * scale[c] + shift[c] (ToFloat,
  /// PcaLighting, Normalize): draws the random numbers apply() would draw and composes this
  /// map after (scale, shift), so that Compose applies a run of them in one pass. Returns
  /// false (the default) for other transforms.
  virtual bool compose_channel_affine(int64_t channels, Rng& rng, std::vector<double>& scale,
                                      std::vector<double>& shift) const;
  /// apply() writing its result into `out` (same shape; the loader passes a batch slot).
  /// The default copies; Compose writes a final fused run directly. Throws on a shape
  /// mismatch, naming both shapes.
  virtual void apply_into(torch::Tensor image, Rng& rng, torch::Tensor out) const;
};

using TransformPtr = std::shared_ptr<const Transform>;

/// Applies transforms in order. Runs of per-channel affine transforms (ToFloat, PcaLighting,
/// Normalize) are fused into one pass from uint8 or float to float32, with the same random
/// draws and results equal up to float rounding.
class Compose : public Transform {
 public:
  explicit Compose(std::vector<TransformPtr> transforms);
  torch::Tensor apply(torch::Tensor image, Rng& rng) const override;
  void apply_into(torch::Tensor image, Rng& rng, torch::Tensor out) const override;
  std::string name() const override;
  const std::vector<TransformPtr>& transforms() const { return transforms_; }

 private:
  torch::Tensor run(torch::Tensor image, Rng& rng, torch::Tensor* out) const;

  std::vector<TransformPtr> transforms_;
};

/// The most elongated image ResizeShorter accepts: longer side / shorter side.
inline constexpr int64_t kMaxAspectRatio = 100;

/// Rescales so that the shorter side is `size`; the longer side becomes
/// floor(size * long / short), as torchvision's Resize(int). Area averaging when shrinking,
/// bilinear when enlarging. Returns the input unchanged when the shorter side is already
/// `size`. Keeps the dtype (uint8 results are rounded). Refuses an empty image and one whose
/// longer side is more than kMaxAspectRatio times its shorter side (a 1 x 16000 image would
/// become 64 x 1024000 at size 64).
class ResizeShorter : public Transform {
 public:
  explicit ResizeShorter(int64_t size);
  torch::Tensor apply(torch::Tensor image, Rng& rng) const override;
  std::string name() const override;

 private:
  int64_t size_;
};

/// Bilinear resize to exactly [h, w] (e.g. 28x28 Fashion-MNIST to 64x64). Keeps the dtype.
class Resize : public Transform {
 public:
  Resize(int64_t height, int64_t width);
  torch::Tensor apply(torch::Tensor image, Rng& rng) const override;
  std::string name() const override;

 private:
  int64_t height_, width_;
};

/// The central size x size crop; the offsets are rounded as torchvision rounds them
/// (round((H - size) / 2), ties to even). Errors when the image is smaller than `size`.
class CenterCrop : public Transform {
 public:
  explicit CenterCrop(int64_t size);
  torch::Tensor apply(torch::Tensor image, Rng& rng) const override;
  std::string name() const override;

 private:
  int64_t size_;
};

/// A size x size crop at a uniformly drawn position (the paper's random 224x224 patches).
class RandomCrop : public Transform {
 public:
  explicit RandomCrop(int64_t size);
  torch::Tensor apply(torch::Tensor image, Rng& rng) const override;
  std::string name() const override;

 private:
  int64_t size_;
};

/// Mirrors the image left-right with probability p.
class RandomHorizontalFlip : public Transform {
 public:
  explicit RandomHorizontalFlip(double p = 0.5);
  torch::Tensor apply(torch::Tensor image, Rng& rng) const override;
  std::string name() const override;

 private:
  double p_;
};

/// ITU-R 601 luma: the weights of R, G and B in the grey level MatchChannels makes.
inline constexpr std::array<double, 3> kLumaWeights{0.299, 0.587, 0.114};

/// Gives the image `channels` channels (1 or 3): RGB becomes grey by ITU-R 601 luma
/// (0.299 R + 0.587 G + 0.114 B, rounded to a whole level, as PIL's convert("L")), grey becomes
/// RGB by replication; an image that has them already is returned unchanged. Keeps the dtype.
class MatchChannels : public Transform {
 public:
  explicit MatchChannels(int64_t channels);
  torch::Tensor apply(torch::Tensor image, Rng& rng) const override;
  std::string name() const override;

 private:
  int64_t channels_;
};

/// Converts to float32, keeping the 0..255 scale.
class ToFloat : public Transform {
 public:
  torch::Tensor apply(torch::Tensor image, Rng& rng) const override;
  std::string name() const override { return "ToFloat"; }
  bool compose_channel_affine(int64_t channels, Rng& rng, std::vector<double>& scale,
                              std::vector<double>& shift) const override;
};

/// The paper's PCA colour augmentation: draws alpha_i ~ N(0, alphastd) once per image and
/// adds sum_i alpha_i * eigenvalues[i] * eigenvectors[:, i] to every pixel. `eigenvalues`
/// [3] and `eigenvectors` [3, 3] (one eigenvector per column) are on the 0..255 pixel scale:
/// the eigenvalues of the RGB covariance of pixels in [0, 1], times 255 (the convention of
/// the widely used ImageNet values, see imagenet_eigenvalues()). Input [3, H, W] or
/// [N, 3, H, W]; uint8 input is converted to float32.
class PcaLighting : public Transform {
 public:
  PcaLighting(torch::Tensor eigenvalues, torch::Tensor eigenvectors, double alphastd = 0.1);
  torch::Tensor apply(torch::Tensor image, Rng& rng) const override;
  std::string name() const override;
  bool compose_channel_affine(int64_t channels, Rng& rng, std::vector<double>& scale,
                              std::vector<double>& shift) const override;
  /// The per-channel offset for given alphas; apply() draws alphas ~ N(0, alphastd).
  std::array<double, 3> offset(const std::array<double, 3>& alphas) const;

 private:
  std::array<double, 3> draw_offset(Rng& rng) const;

  std::array<double, 3> eigenvalues_{};
  std::array<double, 9> eigenvectors_{};  // row-major, eigenvector k in column k
  double alphastd_;
};

/// (x - mean[c]) / std[c] per channel; `std` empty means 1 (the paper subtracts the mean
/// only). A one-element vector applies to every channel. Accepts [C, H, W] or [N, C, H, W];
/// uint8 input is converted to float32.
class Normalize : public Transform {
 public:
  Normalize(std::vector<double> mean, std::vector<double> std = {});
  torch::Tensor apply(torch::Tensor image, Rng& rng) const override;
  std::string name() const override;
  bool compose_channel_affine(int64_t channels, Rng& rng, std::vector<double>& scale,
                              std::vector<double>& shift) const override;

 private:
  std::vector<double> mean_, std_;
};

/// The paper's ten test patches: the four corner crops and the centre crop, then the same
/// five crops of the mirrored image (torchvision's TenCrop order: top-left, top-right,
/// bottom-left, bottom-right, centre; then those of the flipped image). Returns
/// [10, C, size, size].
class TenCrop : public Transform {
 public:
  explicit TenCrop(int64_t size);
  torch::Tensor apply(torch::Tensor image, Rng& rng) const override;
  std::string name() const override;

 private:
  int64_t size_;
};

/// The widely used ImageNet PCA eigenvalues (0.2175, 0.0188, 0.0045) scaled by 255, [3]
/// float64.
torch::Tensor imagenet_eigenvalues();
/// The matching eigenvectors, one per column, [3, 3] float64.
torch::Tensor imagenet_eigenvectors();

/// Sizes and statistics of the paper's pipelines.
struct PipelineOptions {
  /// Shorter side before cropping, and the side of the central square (the paper's 256);
  /// 0 skips the resize and the central square.
  int64_t resize = 256;
  /// Side of the random (training) or centre/ten (evaluation) crops.
  int64_t crop = 224;
  bool pca_lighting = true;
  bool flip = true;
  /// Per-channel mean on the 0..255 scale (subtracted); empty: no mean subtraction.
  std::vector<double> mean;
  /// Per-channel std on the 0..255 scale (divided by); empty: 1.
  std::vector<double> std;
  /// Channels of the output, 1 or 3, made by MatchChannels after the resize; 0 keeps the
  /// image's own.
  int64_t channels = 0;
  /// PCA lighting data (see PcaLighting); undefined: the ImageNet values.
  torch::Tensor eigenvalues, eigenvectors;
  double alphastd = 0.1;
};

/// The paper's training pipeline: ResizeShorter(resize), CenterCrop(resize),
/// MatchChannels(channels) when set, RandomCrop(crop), RandomHorizontalFlip, ToFloat, PcaLighting,
/// Normalize(mean, std). Returns [3, crop, crop] float32.
TransformPtr training_pipeline(const PipelineOptions& options);
/// The evaluation pipeline: ResizeShorter(resize), CenterCrop(resize), MatchChannels(channels)
/// when set, then CenterCrop(crop)
/// (returns [3, crop, crop]) or TenCrop(crop) (returns [10, 3, crop, crop]), ToFloat,
/// Normalize(mean, std). Float32.
TransformPtr eval_pipeline(const PipelineOptions& options, bool ten_crop);

}  // namespace alexnet::transforms
