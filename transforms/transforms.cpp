#include "transforms/transforms.h"

#include <cmath>
#include <sstream>

namespace alexnet::transforms {
namespace {

namespace F = torch::nn::functional;

// Portable draws (the standard distributions differ between library implementations).
int64_t uniform_int(Rng& rng, int64_t upper_inclusive) {
  const auto range = static_cast<unsigned __int128>(upper_inclusive + 1);
  return static_cast<int64_t>((static_cast<unsigned __int128>(rng()) * range) >> 64);
}

double uniform01(Rng& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

double standard_normal(Rng& rng) {
  const double u1 = 1.0 - uniform01(rng);  // (0, 1]
  const double u2 = uniform01(rng);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

void check_image(const torch::Tensor& image, const char* who) {
  TORCH_CHECK(image.defined() && (image.dim() == 3 || image.dim() == 4), who,
              ": expected an image [C, H, W] (or [N, C, H, W]), got ",
              image.defined() ? image.sizes() : c10::IntArrayRef{});
}

void check_crop(const torch::Tensor& image, int64_t size, const char* who) {
  check_image(image, who);
  TORCH_CHECK(image.size(-2) >= size && image.size(-1) >= size, who, "(", size,
              "): the image is only ", image.size(-2), "x", image.size(-1),
              " (resize it first, or choose a smaller crop)");
}

torch::Tensor crop(const torch::Tensor& image, int64_t top, int64_t left, int64_t size) {
  return image.narrow(-2, top, size).narrow(-1, left, size);
}

// Resizes a [C, H, W] or [N, C, H, W] image; uint8 stays uint8 (rounded).
torch::Tensor resize_to(const torch::Tensor& image, int64_t height, int64_t width) {
  if (image.size(-2) == height && image.size(-1) == width) return image;
  const bool batched = image.dim() == 4;
  auto x = image.to(torch::kFloat);
  if (!batched) x = x.unsqueeze(0);
  const bool shrink = height <= image.size(-2) && width <= image.size(-1);
  auto options = F::InterpolateFuncOptions().size(std::vector<int64_t>{height, width});
  if (shrink) {
    options.mode(torch::kArea);
  } else {
    options.mode(torch::kBilinear).align_corners(false);
  }
  x = F::interpolate(x, options);
  if (!batched) x = x.squeeze(0);
  if (image.scalar_type() == torch::kByte) x = x.round_().clamp_(0, 255).to(torch::kByte);
  return x;
}

torch::Tensor to_float(const torch::Tensor& image) {
  return image.scalar_type() == torch::kFloat ? image : image.to(torch::kFloat);
}

}  // namespace

Compose::Compose(std::vector<TransformPtr> transforms) : transforms_(std::move(transforms)) {
  for (const auto& t : transforms_) TORCH_CHECK(t != nullptr, "Compose: null transform");
}

torch::Tensor Compose::apply(torch::Tensor image, Rng& rng) const {
  for (const auto& t : transforms_) image = t->apply(std::move(image), rng);
  return image;
}

std::string Compose::name() const {
  std::ostringstream out;
  out << "Compose(";
  for (size_t i = 0; i < transforms_.size(); ++i) {
    out << (i ? ", " : "") << transforms_[i]->name();
  }
  out << ")";
  return out.str();
}

ResizeShorter::ResizeShorter(int64_t size) : size_(size) {
  TORCH_CHECK(size > 0, "ResizeShorter: size must be positive, got ", size);
}

torch::Tensor ResizeShorter::apply(torch::Tensor image, Rng&) const {
  check_image(image, "ResizeShorter");
  const int64_t h = image.size(-2), w = image.size(-1);
  if (std::min(h, w) == size_) return image;
  if (h <= w) return resize_to(image, size_, size_ * w / h);
  return resize_to(image, size_ * h / w, size_);
}

std::string ResizeShorter::name() const { return "ResizeShorter(" + std::to_string(size_) + ")"; }

Resize::Resize(int64_t height, int64_t width) : height_(height), width_(width) {
  TORCH_CHECK(height > 0 && width > 0, "Resize: sizes must be positive, got ", height, "x", width);
}

torch::Tensor Resize::apply(torch::Tensor image, Rng&) const {
  check_image(image, "Resize");
  if (image.size(-2) == height_ && image.size(-1) == width_) return image;
  const bool batched = image.dim() == 4;
  auto x = to_float(image);
  if (!batched) x = x.unsqueeze(0);
  x = F::interpolate(x, F::InterpolateFuncOptions()
                            .size(std::vector<int64_t>{height_, width_})
                            .mode(torch::kBilinear)
                            .align_corners(false));
  if (!batched) x = x.squeeze(0);
  if (image.scalar_type() == torch::kByte) x = x.round_().clamp_(0, 255).to(torch::kByte);
  return x;
}

std::string Resize::name() const {
  return "Resize(" + std::to_string(height_) + "x" + std::to_string(width_) + ")";
}

CenterCrop::CenterCrop(int64_t size) : size_(size) {
  TORCH_CHECK(size > 0, "CenterCrop: size must be positive, got ", size);
}

torch::Tensor CenterCrop::apply(torch::Tensor image, Rng&) const {
  check_crop(image, size_, "CenterCrop");
  const int64_t h = image.size(-2), w = image.size(-1);
  if (h == size_ && w == size_) return image;
  const auto top = static_cast<int64_t>(std::nearbyint((h - size_) / 2.0));
  const auto left = static_cast<int64_t>(std::nearbyint((w - size_) / 2.0));
  return crop(image, top, left, size_);
}

std::string CenterCrop::name() const { return "CenterCrop(" + std::to_string(size_) + ")"; }

RandomCrop::RandomCrop(int64_t size) : size_(size) {
  TORCH_CHECK(size > 0, "RandomCrop: size must be positive, got ", size);
}

torch::Tensor RandomCrop::apply(torch::Tensor image, Rng& rng) const {
  check_crop(image, size_, "RandomCrop");
  const int64_t top = uniform_int(rng, image.size(-2) - size_);
  const int64_t left = uniform_int(rng, image.size(-1) - size_);
  return crop(image, top, left, size_);
}

std::string RandomCrop::name() const { return "RandomCrop(" + std::to_string(size_) + ")"; }

RandomHorizontalFlip::RandomHorizontalFlip(double p) : p_(p) {
  TORCH_CHECK(p >= 0 && p <= 1, "RandomHorizontalFlip: p must be in [0, 1], got ", p);
}

torch::Tensor RandomHorizontalFlip::apply(torch::Tensor image, Rng& rng) const {
  check_image(image, "RandomHorizontalFlip");
  if (uniform01(rng) < p_) return image.flip({-1});
  return image;
}

std::string RandomHorizontalFlip::name() const {
  std::ostringstream out;
  out << "RandomHorizontalFlip(" << p_ << ")";
  return out.str();
}

torch::Tensor ToFloat::apply(torch::Tensor image, Rng&) const { return to_float(image); }

PcaLighting::PcaLighting(torch::Tensor eigenvalues, torch::Tensor eigenvectors, double alphastd)
    : alphastd_(alphastd) {
  TORCH_CHECK(eigenvalues.defined() && eigenvalues.numel() == 3,
              "PcaLighting: expected 3 eigenvalues, got ",
              eigenvalues.defined() ? eigenvalues.numel() : 0);
  TORCH_CHECK(eigenvectors.defined() && eigenvectors.sizes() == c10::IntArrayRef({3, 3}),
              "PcaLighting: expected eigenvectors [3, 3] (one per column)");
  TORCH_CHECK(alphastd >= 0, "PcaLighting: alphastd must be >= 0, got ", alphastd);
  eigenvalues_ = eigenvalues.to(torch::kCPU, torch::kDouble).reshape({3}).contiguous();
  eigenvectors_ = eigenvectors.to(torch::kCPU, torch::kDouble).contiguous();
}

torch::Tensor PcaLighting::offset(const std::array<double, 3>& alphas) const {
  auto a = torch::tensor({alphas[0], alphas[1], alphas[2]}, torch::kDouble);
  return torch::mv(eigenvectors_, a * eigenvalues_);
}

torch::Tensor PcaLighting::apply(torch::Tensor image, Rng& rng) const {
  check_image(image, "PcaLighting");
  TORCH_CHECK(image.size(-3) == 3, "PcaLighting: expects 3 (RGB) channels, got ", image.size(-3));
  std::array<double, 3> alphas{};
  for (auto& a : alphas) a = alphastd_ * standard_normal(rng);
  auto shift = offset(alphas).to(torch::kFloat).view({3, 1, 1});
  return to_float(image) + shift;
}

std::string PcaLighting::name() const {
  std::ostringstream out;
  out << "PcaLighting(alphastd=" << alphastd_ << ")";
  return out.str();
}

Normalize::Normalize(std::vector<double> mean, std::vector<double> std)
    : mean_(std::move(mean)), std_(std::move(std)) {
  TORCH_CHECK(!mean_.empty(), "Normalize: the mean is empty");
  for (double s : std_) TORCH_CHECK(s > 0, "Normalize: std values must be positive, got ", s);
}

torch::Tensor Normalize::apply(torch::Tensor image, Rng&) const {
  check_image(image, "Normalize");
  const int64_t channels = image.size(-3);
  auto per_channel = [&](const std::vector<double>& values, const char* what) {
    TORCH_CHECK(values.size() == 1 || static_cast<int64_t>(values.size()) == channels,
                "Normalize: ", values.size(), " ", what, " values for an image with ", channels,
                " channels");
    std::vector<float> v(channels);
    for (int64_t c = 0; c < channels; ++c)
      v[c] = static_cast<float>(values[values.size() == 1 ? 0 : c]);
    return torch::tensor(v).view({channels, 1, 1});
  };
  auto x = to_float(image) - per_channel(mean_, "mean");
  if (!std_.empty()) x.div_(per_channel(std_, "std"));
  return x;
}

std::string Normalize::name() const {
  std::ostringstream out;
  out << "Normalize(mean=[";
  for (size_t i = 0; i < mean_.size(); ++i) out << (i ? ", " : "") << mean_[i];
  out << "]";
  if (!std_.empty()) {
    out << ", std=[";
    for (size_t i = 0; i < std_.size(); ++i) out << (i ? ", " : "") << std_[i];
    out << "]";
  }
  out << ")";
  return out.str();
}

TenCrop::TenCrop(int64_t size) : size_(size) {
  TORCH_CHECK(size > 0, "TenCrop: size must be positive, got ", size);
}

torch::Tensor TenCrop::apply(torch::Tensor image, Rng&) const {
  check_crop(image, size_, "TenCrop");
  TORCH_CHECK(image.dim() == 3, "TenCrop: expected one image [C, H, W], got ", image.sizes());
  const int64_t h = image.size(1), w = image.size(2), s = size_;
  const auto ctop = static_cast<int64_t>(std::nearbyint((h - s) / 2.0));
  const auto cleft = static_cast<int64_t>(std::nearbyint((w - s) / 2.0));
  const std::array<std::pair<int64_t, int64_t>, 5> corners{
      {{0, 0}, {0, w - s}, {h - s, 0}, {h - s, w - s}, {ctop, cleft}}};
  std::vector<torch::Tensor> crops;
  crops.reserve(10);
  for (const auto& [top, left] : corners) crops.push_back(crop(image, top, left, s));
  auto mirrored = image.flip({-1});
  for (const auto& [top, left] : corners) crops.push_back(crop(mirrored, top, left, s));
  return torch::stack(crops);
}

std::string TenCrop::name() const { return "TenCrop(" + std::to_string(size_) + ")"; }

torch::Tensor imagenet_eigenvalues() {
  return torch::tensor({0.2175, 0.0188, 0.0045}, torch::kDouble) * 255.0;
}

torch::Tensor imagenet_eigenvectors() {
  return torch::tensor(
             {-0.5675, 0.7192, 0.4009, -0.5808, -0.0045, -0.8140, -0.5836, -0.6948, 0.4203},
             torch::kDouble)
      .view({3, 3});
}

namespace {

void add_resize(std::vector<TransformPtr>& steps, const PipelineOptions& options) {
  TORCH_CHECK(options.crop > 0, "pipeline: crop must be positive, got ", options.crop);
  TORCH_CHECK(options.resize == 0 || options.resize >= options.crop, "pipeline: resize (",
              options.resize, ") must be at least the crop (", options.crop, ")");
  if (options.resize > 0) {
    steps.push_back(std::make_shared<ResizeShorter>(options.resize));
    steps.push_back(std::make_shared<CenterCrop>(options.resize));
  }
}

void add_normalize(std::vector<TransformPtr>& steps, const PipelineOptions& options) {
  if (!options.mean.empty()) {
    steps.push_back(std::make_shared<Normalize>(options.mean, options.std));
  } else if (!options.std.empty()) {
    steps.push_back(std::make_shared<Normalize>(std::vector<double>{0.0}, options.std));
  }
}

}  // namespace

TransformPtr training_pipeline(const PipelineOptions& options) {
  std::vector<TransformPtr> steps;
  add_resize(steps, options);
  steps.push_back(std::make_shared<RandomCrop>(options.crop));
  if (options.flip) steps.push_back(std::make_shared<RandomHorizontalFlip>(0.5));
  steps.push_back(std::make_shared<ToFloat>());
  if (options.pca_lighting) {
    const bool given = options.eigenvalues.defined() && options.eigenvectors.defined();
    steps.push_back(std::make_shared<PcaLighting>(
        given ? options.eigenvalues : imagenet_eigenvalues(),
        given ? options.eigenvectors : imagenet_eigenvectors(), options.alphastd));
  }
  add_normalize(steps, options);
  return std::make_shared<Compose>(std::move(steps));
}

TransformPtr eval_pipeline(const PipelineOptions& options, bool ten_crop) {
  std::vector<TransformPtr> steps;
  add_resize(steps, options);
  if (ten_crop) {
    steps.push_back(std::make_shared<TenCrop>(options.crop));
  } else {
    steps.push_back(std::make_shared<CenterCrop>(options.crop));
  }
  steps.push_back(std::make_shared<ToFloat>());
  add_normalize(steps, options);
  return std::make_shared<Compose>(std::move(steps));
}

}  // namespace alexnet::transforms
