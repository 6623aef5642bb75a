#include "model/lrn.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "model/lrn_kernels.h"

namespace alexnet {
namespace detail {
namespace {

// Spatial positions handled by one task: rows of this many elements for the window of
// channels stay in L1 while the task walks over the channels.
constexpr int64_t kChunk = 512;

// s^-beta. beta = 0.75 (the paper's) and 0.5 avoid pow: they become square roots, which
// the compiler vectorises.
enum class PowKind { kThreeQuarters, kHalf, kOne, kGeneral };

PowKind pow_kind(double beta) {
  if (beta == 0.75) return PowKind::kThreeQuarters;
  if (beta == 0.5) return PowKind::kHalf;
  if (beta == 1.0) return PowKind::kOne;
  return PowKind::kGeneral;
}

template <typename T, PowKind kind>
inline T pow_neg_beta(T s, T beta) {
  if constexpr (kind == PowKind::kThreeQuarters) {
    const T r = std::sqrt(s);
    return T(1) / (r * std::sqrt(r));
  } else if constexpr (kind == PowKind::kHalf) {
    return T(1) / std::sqrt(s);
  } else if constexpr (kind == PowKind::kOne) {
    return T(1) / s;
  } else {
    return std::pow(s, -beta);
  }
}

template <typename T, PowKind kind>
void forward_kernel(const T* input, T* output, T* scale, int64_t batch, int64_t channels,
                    int64_t plane, const LrnConstants& c) {
  const int64_t half = c.size / 2;
  const int64_t chunks = (plane + kChunk - 1) / kChunk;
  const T alpha = static_cast<T>(c.alpha);
  const T beta = static_cast<T>(c.beta);
  const T k = static_cast<T>(c.k);
  at::parallel_for(0, batch * chunks, 1, [&](int64_t begin, int64_t end) {
    T sum[kChunk];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / chunks;
      const int64_t p0 = (task % chunks) * kChunk;
      const int64_t len = std::min(kChunk, plane - p0);
      const int64_t base = n * channels * plane + p0;
      const T* __restrict in = input + base;
      T* __restrict out = output + base;
      T* __restrict sc = scale == nullptr ? nullptr : scale + base;
      std::fill(sum, sum + len, T(0));
      for (int64_t j = 0; j < std::min(half, channels); ++j) {
        const T* __restrict row = in + j * plane;
        for (int64_t p = 0; p < len; ++p) sum[p] += row[p] * row[p];
      }
      for (int64_t ch = 0; ch < channels; ++ch) {
        if (ch + half < channels) {
          const T* __restrict row = in + (ch + half) * plane;
          for (int64_t p = 0; p < len; ++p) sum[p] += row[p] * row[p];
        }
        if (ch - half - 1 >= 0) {
          const T* __restrict row = in + (ch - half - 1) * plane;
          for (int64_t p = 0; p < len; ++p) sum[p] -= row[p] * row[p];
        }
        const T* __restrict a = in + ch * plane;
        T* __restrict b = out + ch * plane;
        if (sc != nullptr) {
          T* __restrict s_row = sc + ch * plane;
          for (int64_t p = 0; p < len; ++p) {
            const T s = k + alpha * sum[p];
            s_row[p] = s;
            b[p] = a[p] * pow_neg_beta<T, kind>(s, beta);
          }
        } else {
          for (int64_t p = 0; p < len; ++p) {
            b[p] = a[p] * pow_neg_beta<T, kind>(k + alpha * sum[p], beta);
          }
        }
      }
    }
  });
}

// d a[i] = g[i] s[i]^-beta - 2 alpha beta a[i] sum_{j in window(i)} g[j] a[j] s[j]^(-beta-1).
// The terms t[j] = g[j] a[j] s[j]^-beta / s[j] enter a running window sum as channel j comes
// into the window; a ring of the last n + 1 rows keeps t (to leave the window again) and
// s^-beta (for the first term) so each power is computed once.
template <typename T, PowKind kind>
void backward_kernel(const T* input, const T* scale, const T* grad_output, T* grad_input,
                     int64_t batch, int64_t channels, int64_t plane, const LrnConstants& c) {
  const int64_t half = c.size / 2;
  const int64_t ring = c.size + 1;
  const int64_t chunks = (plane + kChunk - 1) / kChunk;
  const T beta = static_cast<T>(c.beta);
  const T coeff = static_cast<T>(2.0 * c.alpha * c.beta);
  at::parallel_for(0, batch * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> t_ring(static_cast<size_t>(ring * kChunk));
    std::vector<T> p_ring(static_cast<size_t>(ring * kChunk));
    T sum[kChunk];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / chunks;
      const int64_t p0 = (task % chunks) * kChunk;
      const int64_t len = std::min(kChunk, plane - p0);
      const int64_t base = n * channels * plane + p0;
      const T* __restrict a = input + base;
      const T* __restrict s = scale + base;
      const T* __restrict g = grad_output + base;
      T* __restrict dx = grad_input + base;
      auto enter = [&](int64_t j) {
        T* __restrict t = t_ring.data() + (j % ring) * kChunk;
        T* __restrict pw = p_ring.data() + (j % ring) * kChunk;
        const T* __restrict aj = a + j * plane;
        const T* __restrict sj = s + j * plane;
        const T* __restrict gj = g + j * plane;
        for (int64_t p = 0; p < len; ++p) {
          const T w = pow_neg_beta<T, kind>(sj[p], beta);
          pw[p] = w;
          t[p] = gj[p] * aj[p] * w / sj[p];
          sum[p] += t[p];
        }
      };
      std::fill(sum, sum + len, T(0));
      for (int64_t j = 0; j < std::min(half, channels); ++j) enter(j);
      for (int64_t ch = 0; ch < channels; ++ch) {
        if (ch + half < channels) enter(ch + half);
        if (ch - half - 1 >= 0) {
          const T* __restrict t = t_ring.data() + ((ch - half - 1) % ring) * kChunk;
          for (int64_t p = 0; p < len; ++p) sum[p] -= t[p];
        }
        const T* __restrict pw = p_ring.data() + (ch % ring) * kChunk;
        const T* __restrict ac = a + ch * plane;
        const T* __restrict gc = g + ch * plane;
        T* __restrict out = dx + ch * plane;
        for (int64_t p = 0; p < len; ++p) {
          out[p] = gc[p] * pw[p] - coeff * ac[p] * sum[p];
        }
      }
    }
  });
}

template <typename T, typename Fn>
void dispatch_pow(double beta, Fn&& fn) {
  switch (pow_kind(beta)) {
    case PowKind::kThreeQuarters:
      return fn(std::integral_constant<PowKind, PowKind::kThreeQuarters>{});
    case PowKind::kHalf:
      return fn(std::integral_constant<PowKind, PowKind::kHalf>{});
    case PowKind::kOne:
      return fn(std::integral_constant<PowKind, PowKind::kOne>{});
    case PowKind::kGeneral:
      return fn(std::integral_constant<PowKind, PowKind::kGeneral>{});
  }
}

}  // namespace

void lrn_forward_cpu(const torch::Tensor& input, torch::Tensor& output, torch::Tensor* scale,
                     const LrnConstants& c) {
  const int64_t batch = input.size(0);
  const int64_t channels = input.size(1);
  const int64_t plane = input.size(2) * input.size(3);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "lrn_forward_cpu", [&] {
    dispatch_pow<scalar_t>(c.beta, [&](auto kind) {
      forward_kernel<scalar_t, decltype(kind)::value>(
          input.data_ptr<scalar_t>(), output.data_ptr<scalar_t>(),
          scale == nullptr ? nullptr : scale->data_ptr<scalar_t>(), batch, channels, plane, c);
    });
  });
}

torch::Tensor lrn_backward_cpu(const torch::Tensor& input, const torch::Tensor& scale,
                               const torch::Tensor& grad_output, const LrnConstants& c) {
  auto grad_input = torch::empty_like(input);
  const int64_t batch = input.size(0);
  const int64_t channels = input.size(1);
  const int64_t plane = input.size(2) * input.size(3);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "lrn_backward_cpu", [&] {
    dispatch_pow<scalar_t>(c.beta, [&](auto kind) {
      backward_kernel<scalar_t, decltype(kind)::value>(
          input.data_ptr<scalar_t>(), scale.data_ptr<scalar_t>(),
          grad_output.data_ptr<scalar_t>(), grad_input.data_ptr<scalar_t>(), batch, channels,
          plane, c);
    });
  });
  return grad_input;
}

}  // namespace detail

namespace {

using detail::LrnConstants;

torch::Tensor run_forward(const torch::Tensor& x, torch::Tensor* scale, const LrnConstants& c) {
  auto output = torch::empty_like(x);
  if (scale != nullptr) *scale = torch::empty_like(x);
  if (x.is_cuda()) {
#if ALEXNET_WITH_CUDA
    detail::lrn_forward_cuda(x, output, scale, c);
    return output;
#else
    TORCH_CHECK(false, "LocalResponseNorm: this build has no CUDA kernel");
#endif
  }
  TORCH_CHECK(x.device().is_cpu(), "LocalResponseNorm: unsupported device ", x.device());
  detail::lrn_forward_cpu(x, output, scale, c);
  return output;
}

class LrnFunction : public torch::autograd::Function<LrnFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input,
                               int64_t size, double alpha, double beta, double k) {
    const LrnConstants c{size, alpha, beta, k};
    torch::Tensor scale;
    auto output = run_forward(input, &scale, c);
    ctx->save_for_backward({input, scale});
    ctx->saved_data["size"] = size;
    ctx->saved_data["alpha"] = alpha;
    ctx->saved_data["beta"] = beta;
    ctx->saved_data["k"] = k;
    return output;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const LrnConstants c{ctx->saved_data["size"].toInt(), ctx->saved_data["alpha"].toDouble(),
                         ctx->saved_data["beta"].toDouble(), ctx->saved_data["k"].toDouble()};
    const auto grad_output = grad_outputs[0].contiguous();
    torch::Tensor grad_input;
    if (saved[0].is_cuda()) {
#if ALEXNET_WITH_CUDA
      grad_input = detail::lrn_backward_cuda(saved[0], saved[1], grad_output, c);
#endif
    } else {
      grad_input = detail::lrn_backward_cpu(saved[0], saved[1], grad_output, c);
    }
    return {grad_input, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

void check_input(const torch::Tensor& input) {
  TORCH_CHECK(input.dim() == 4, "LocalResponseNorm expects an [N, C, H, W] input, got ",
              input.dim(), " dimensions ", input.sizes());
  TORCH_CHECK(input.scalar_type() == torch::kFloat || input.scalar_type() == torch::kDouble,
              "LocalResponseNorm supports float and double, got ", input.scalar_type());
}

}  // namespace

void validate(const LocalResponseNormOptions& options) {
  TORCH_CHECK(options.size() >= 1 && options.size() % 2 == 1,
              "LocalResponseNorm: size must be odd and >= 1, got ", options.size());
  TORCH_CHECK(std::isfinite(options.alpha()) && options.alpha() >= 0,
              "LocalResponseNorm: alpha must be finite and >= 0, got ", options.alpha());
  TORCH_CHECK(std::isfinite(options.beta()) && options.beta() >= 0,
              "LocalResponseNorm: beta must be finite and >= 0, got ", options.beta());
  TORCH_CHECK(std::isfinite(options.k()) && options.k() > 0,
              "LocalResponseNorm: k must be finite and > 0, got ", options.k());
}

torch::Tensor local_response_norm(const torch::Tensor& input,
                                  const LocalResponseNormOptions& options) {
  check_input(input);
  const auto x = input.contiguous();
  const double alpha = options.effective_alpha();
  if (torch::GradMode::is_enabled() && x.requires_grad()) {
    return LrnFunction::apply(x, options.size(), alpha, options.beta(), options.k());
  }
  return run_forward(x, /*scale=*/nullptr, LrnConstants{options.size(), alpha, options.beta(),
                                                        options.k()});
}

torch::Tensor local_response_norm_reference(const torch::Tensor& input,
                                            const LocalResponseNormOptions& options) {
  check_input(input);
  const int64_t size = options.size();
  const int64_t half = size / 2;
  const int64_t channels = input.size(1);
  const auto squares = input * input;
  // Pad one extra zero channel in front so that cumsum[c + size] - cumsum[c] is the sum over
  // channels [c - n/2, c + n/2].
  const auto padded = torch::constant_pad_nd(squares, {0, 0, 0, 0, half + 1, half});
  const auto cumulative = padded.cumsum(1);
  const auto window = cumulative.narrow(1, size, channels) - cumulative.narrow(1, 0, channels);
  return input * (options.k() + options.effective_alpha() * window).pow(-options.beta());
}

LocalResponseNormImpl::LocalResponseNormImpl(LocalResponseNormOptions options_)
    : options(std::move(options_)) {
  reset();
}

void LocalResponseNormImpl::reset() { validate(options); }

void LocalResponseNormImpl::pretty_print(std::ostream& stream) const {
  stream << "alexnet::LocalResponseNorm(size=" << options.size() << ", alpha=" << options.alpha()
         << ", beta=" << options.beta() << ", k=" << options.k()
         << ", alpha_divided_by_size=" << (options.divide_alpha_by_size() ? "true" : "false")
         << ")";
}

torch::Tensor LocalResponseNormImpl::forward(const torch::Tensor& input) {
  return local_response_norm(input, options);
}

}  // namespace alexnet
