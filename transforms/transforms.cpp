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

// x * scale[c] + shift[c] in one pass; image [C, H, W] or [N, C, H, W], uint8 or float32,
// any strides. Returns a contiguous float32 tensor.
template <typename T>
void affine_loop(const torch::Tensor& x, torch::Tensor& out, const std::vector<double>& scale,
                 const std::vector<double>& shift) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const auto s = x.strides();
  const T* in = x.data_ptr<T>();
  float* o = out.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t k = 0; k < c; ++k) {
      const auto a = static_cast<float>(scale[k]);
      const auto b = static_cast<float>(shift[k]);
      for (int64_t y = 0; y < h; ++y) {
        const T* row = in + i * s[0] + k * s[1] + y * s[2];
        float* dst = o + ((i * c + k) * h + y) * w;
        if (s[3] == 1) {
          for (int64_t j = 0; j < w; ++j) dst[j] = static_cast<float>(row[j]) * a + b;
        } else {
          for (int64_t j = 0; j < w; ++j) dst[j] = static_cast<float>(row[j * s[3]]) * a + b;
        }
      }
    }
  }
}

void check_output(const torch::Tensor& result_shape_of, const torch::Tensor& out) {
  TORCH_CHECK(out.sizes() == result_shape_of.sizes(), "transform output has shape ",
              result_shape_of.sizes(), ", the destination ", out.sizes());
}

// `into`: a contiguous float32 destination of the image's shape, or undefined.
torch::Tensor apply_channel_affine(const torch::Tensor& image, const std::vector<double>& scale,
                                   const std::vector<double>& shift, torch::Tensor into = {}) {
  auto x = image.dim() == 3 ? image.unsqueeze(0) : image;
  if (x.scalar_type() != torch::kByte && x.scalar_type() != torch::kFloat) {
    x = x.to(torch::kFloat);
  }
  torch::Tensor out;
  if (into.defined()) {
    check_output(image, into);
    out = into.dim() == 3 ? into.unsqueeze(0) : into;
  } else {
    out = torch::empty(x.sizes(), x.options().dtype(torch::kFloat));
  }
  if (x.scalar_type() == torch::kByte) {
    affine_loop<uint8_t>(x, out, scale, shift);
  } else {
    affine_loop<float>(x, out, scale, shift);
  }
  return image.dim() == 3 ? out.squeeze(0) : out;
}

}  // namespace

bool Transform::compose_channel_affine(int64_t, Rng&, std::vector<double>&,
                                       std::vector<double>&) const {
  return false;
}

void Transform::apply_into(torch::Tensor image, Rng& rng, torch::Tensor out) const {
  auto result = apply(std::move(image), rng);
  check_output(result, out);
  out.copy_(result);
}

Compose::Compose(std::vector<TransformPtr> transforms) : transforms_(std::move(transforms)) {
  for (const auto& t : transforms_) TORCH_CHECK(t != nullptr, "Compose: null transform");
}

torch::Tensor Compose::apply(torch::Tensor image, Rng& rng) const {
  return run(std::move(image), rng, nullptr);
}

void Compose::apply_into(torch::Tensor image, Rng& rng, torch::Tensor out) const {
  auto result = run(std::move(image), rng, &out);
  if (!result.is_same(out)) {
    check_output(result, out);
    out.copy_(result);
  }
}

// With `out`, a final fused run writes into *out when it is contiguous float32.
torch::Tensor Compose::run(torch::Tensor image, Rng& rng, torch::Tensor* out) const {
  size_t i = 0;
  while (i < transforms_.size()) {
    size_t j = i;
    if (image.defined() && (image.dim() == 3 || image.dim() == 4) && image.device().is_cpu()) {
      const int64_t channels = image.size(-3);
      std::vector<double> scale(channels, 1.0), shift(channels, 0.0);
      while (j < transforms_.size() &&
             transforms_[j]->compose_channel_affine(channels, rng, scale, shift)) {
        ++j;
      }
      if (j > i) {
        const bool last = j == transforms_.size();
        if (last && out != nullptr && out->scalar_type() == torch::kFloat && out->is_contiguous() &&
            out->device().is_cpu()) {
          apply_channel_affine(image, scale, shift, *out);
          return *out;
        }
        image = apply_channel_affine(image, scale, shift);
      }
    }
    if (j == i) image = transforms_[j++]->apply(std::move(image), rng);
    i = j;
  }
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
  TORCH_CHECK(h > 0 && w > 0, name(), ": the image is empty (", h, "x", w, ")");
  TORCH_CHECK(std::max(h, w) <= kMaxAspectRatio * std::min(h, w), name(), ": the image is ", h, "x",
              w, ", more than ", kMaxAspectRatio, " times longer than wide");
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

MatchChannels::MatchChannels(int64_t channels) : channels_(channels) {
  TORCH_CHECK(channels == 1 || channels == 3, "MatchChannels: channels must be 1 or 3, got ",
              channels);
}

torch::Tensor MatchChannels::apply(torch::Tensor image, Rng&) const {
  check_image(image, "MatchChannels");
  const int64_t channels = image.size(-3);
  if (channels == channels_) return image;
  TORCH_CHECK(channels == 1 || channels == 3, name(), ": the image has ", channels,
              " channels (expected 1 or 3)");
  if (channels == 1) {
    auto sizes = image.sizes().vec();
    sizes[sizes.size() - 3] = channels_;
    return image.expand(sizes).contiguous();
  }
  const auto x = image.to(torch::kFloat);
  const auto grey = (x.select(-3, 0) * kLumaWeights[0] + x.select(-3, 1) * kLumaWeights[1] +
                     x.select(-3, 2) * kLumaWeights[2])
                        .round()
                        .unsqueeze(-3);
  return grey.to(image.scalar_type());
}

std::string MatchChannels::name() const {
  return "MatchChannels(" + std::to_string(channels_) + ")";
}

torch::Tensor ToFloat::apply(torch::Tensor image, Rng&) const { return to_float(image); }

bool ToFloat::compose_channel_affine(int64_t, Rng&, std::vector<double>&,
                                     std::vector<double>&) const {
  return true;
}

PcaLighting::PcaLighting(torch::Tensor eigenvalues, torch::Tensor eigenvectors, double alphastd)
    : alphastd_(alphastd) {
  TORCH_CHECK(eigenvalues.defined() && eigenvalues.numel() == 3,
              "PcaLighting: expected 3 eigenvalues, got ",
              eigenvalues.defined() ? eigenvalues.numel() : 0);
  TORCH_CHECK(eigenvectors.defined() && eigenvectors.sizes() == c10::IntArrayRef({3, 3}),
              "PcaLighting: expected eigenvectors [3, 3] (one per column)");
  TORCH_CHECK(alphastd >= 0, "PcaLighting: alphastd must be >= 0, got ", alphastd);
  const auto values = eigenvalues.to(torch::kCPU, torch::kDouble).reshape({3}).contiguous();
  const auto vectors = eigenvectors.to(torch::kCPU, torch::kDouble).contiguous();
  std::copy_n(values.data_ptr<double>(), 3, eigenvalues_.begin());
  std::copy_n(vectors.data_ptr<double>(), 9, eigenvectors_.begin());
}

std::array<double, 3> PcaLighting::offset(const std::array<double, 3>& alphas) const {
  std::array<double, 3> result{};
  for (int c = 0; c < 3; ++c) {
    for (int k = 0; k < 3; ++k) result[c] += eigenvectors_[3 * c + k] * alphas[k] * eigenvalues_[k];
  }
  return result;
}

std::array<double, 3> PcaLighting::draw_offset(Rng& rng) const {
  std::array<double, 3> alphas{};
  for (auto& a : alphas) a = alphastd_ * standard_normal(rng);
  return offset(alphas);
}

torch::Tensor PcaLighting::apply(torch::Tensor image, Rng& rng) const {
  check_image(image, "PcaLighting");
  TORCH_CHECK(image.size(-3) == 3, "PcaLighting: expects 3 (RGB) channels, got ", image.size(-3));
  const auto shift = draw_offset(rng);
  const auto add = torch::tensor({static_cast<float>(shift[0]), static_cast<float>(shift[1]),
                                  static_cast<float>(shift[2])})
                       .view({3, 1, 1});
  return to_float(image) + add;
}

bool PcaLighting::compose_channel_affine(int64_t channels, Rng& rng, std::vector<double>&,
                                         std::vector<double>& shift) const {
  TORCH_CHECK(channels == 3, "PcaLighting: expects 3 (RGB) channels, got ", channels);
  const auto offset = draw_offset(rng);
  for (int c = 0; c < 3; ++c) shift[c] += offset[c];
  return true;
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

bool Normalize::compose_channel_affine(int64_t channels, Rng&, std::vector<double>& scale,
                                       std::vector<double>& shift) const {
  for (const auto* values : {&mean_, &std_}) {
    TORCH_CHECK(
        values->empty() || values->size() == 1 || static_cast<int64_t>(values->size()) == channels,
        "Normalize: ", values->size(), values == &mean_ ? " mean" : " std",
        " values for an image with ", channels, " channels");
  }
  for (int64_t c = 0; c < channels; ++c) {
    const double m = mean_[mean_.size() == 1 ? 0 : c];
    const double d = std_.empty() ? 1.0 : std_[std_.size() == 1 ? 0 : c];
    scale[c] /= d;
    shift[c] = (shift[c] - m) / d;
  }
  return true;
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

void add_match_channels(std::vector<TransformPtr>& steps, const PipelineOptions& options) {
  if (options.channels != 0) steps.push_back(std::make_shared<MatchChannels>(options.channels));
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
  add_match_channels(steps, options);
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
  add_match_channels(steps, options);
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
