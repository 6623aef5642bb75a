#include "model/lrn.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "model/lrn_kernels.h"

namespace alexnet {
namespace detail {
namespace {

// Spatial positions handled by one task: the rows of the channel window (and, in the
// backward pass, its ring buffers) stay in L1 while the task walks over the channels.
constexpr int64_t kChunk = 256;

// s^-beta. beta = 0.75 (the paper's) and 0.5 avoid pow: they become square roots, which
// the compiler vectorises.
enum class PowKind { kThreeQuarters, kHalf, kOne, kGeneral };

PowKind pow_kind(double beta) {
  if (beta == 0.75) return PowKind::kThreeQuarters;
  if (beta == 0.5) return PowKind::kHalf;
  if (beta == 1.0) return PowKind::kOne;
  return PowKind::kGeneral;
}

// The inner loops run over distinct rows (input, output, ring buffers, scratch rows): tell
// the compiler so, or its run-time alias checks send them down the scalar path.
#if defined(__clang__)
#define ALEXNET_ALWAYS_INLINE inline __attribute__((always_inline))
#define ALEXNET_NO_ALIAS _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define ALEXNET_ALWAYS_INLINE inline __attribute__((always_inline))
#define ALEXNET_NO_ALIAS _Pragma("GCC ivdep")
#else
#define ALEXNET_ALWAYS_INLINE inline
#define ALEXNET_NO_ALIAS
#endif

// s^-beta, and s^-beta / s for the backward pass.
template <typename T, PowKind kind>
ALEXNET_ALWAYS_INLINE T pow_neg_beta(T s, T beta) {
  if constexpr (kind == PowKind::kThreeQuarters) {
    const T q = T(1) / std::sqrt(s);
    return q * std::sqrt(q);
  } else if constexpr (kind == PowKind::kHalf) {
    return T(1) / std::sqrt(s);
  } else if constexpr (kind == PowKind::kOne) {
    return T(1) / s;
  } else {
    return std::pow(s, -beta);
  }
}

template <typename T, PowKind kind>
ALEXNET_ALWAYS_INLINE void pow_neg_beta_and_over_s(T s, T beta, T& w, T& w_over_s) {
  if constexpr (kind == PowKind::kThreeQuarters) {
    const T q = T(1) / std::sqrt(s);
    w = q * std::sqrt(q);
    w_over_s = w * q * q;
  } else if constexpr (kind == PowKind::kHalf) {
    const T q = T(1) / std::sqrt(s);
    w = q;
    w_over_s = q * q * q;
  } else if constexpr (kind == PowKind::kOne) {
    w = T(1) / s;
    w_over_s = w * w;
  } else {
    w = std::pow(s, -beta);
    w_over_s = w / s;
  }
}

// One task: positions [p0, p0 + len) of image n, all channels. `plane` is the stride
// between channels; every pointer below points at (n, channel 0, p0).
template <typename T>
struct Chunk {
  const T* input;
  const T* grad_output;  // backward only
  T* output;             // forward: b; backward: grad_input
  int64_t channels;
  int64_t plane;
  int64_t len;
};

template <typename T>
struct Scratch {
  // The running sum of squares, the running sum of t (backward) and a row of zeros that
  // stands in for the channels outside [0, C).
  alignas(64) T square_sum[kChunk];
  alignas(64) T t_sum[kChunk];
  alignas(64) T zero[kChunk] = {};
  // Backward only: the last n + 1 rows of t and of w (see backward_chunk).
  std::vector<T> ring_t, ring_w;
};

// b[c] = a[c] * (k + alpha * sum of a[j]^2 over the window of c)^-beta, one pass over the
// channels with a running window sum: add the row entering the window, subtract the row
// leaving it, in the same loop that writes the output row.
template <typename T, PowKind kind>
ALEXNET_ALWAYS_INLINE void forward_chunk(const Chunk<T>& chunk, Scratch<T>& scratch,
                                         const LrnConstants& c) {
  const int64_t half = c.size / 2;
  const int64_t channels = chunk.channels;
  const int64_t len = chunk.len;
  const T alpha = static_cast<T>(c.alpha);
  const T beta = static_cast<T>(c.beta);
  const T k = static_cast<T>(c.k);
  T* __restrict sum = scratch.square_sum;
  auto row = [&](int64_t j) {
    return j >= 0 && j < channels ? chunk.input + j * chunk.plane : scratch.zero;
  };
  std::fill(sum, sum + len, T(0));
  for (int64_t j = 0; j < std::min(half, channels); ++j) {
    const T* __restrict in = row(j);
    ALEXNET_NO_ALIAS
    for (int64_t p = 0; p < len; ++p) sum[p] += in[p] * in[p];
  }
  for (int64_t ch = 0; ch < channels; ++ch) {
    const T* __restrict entering = row(ch + half);
    const T* __restrict leaving = row(ch - half - 1);
    const T* __restrict a = chunk.input + ch * chunk.plane;
    T* __restrict b = chunk.output + ch * chunk.plane;
    ALEXNET_NO_ALIAS
    for (int64_t p = 0; p < len; ++p) {
      const T s = sum[p] + (entering[p] * entering[p] - leaving[p] * leaving[p]);
      sum[p] = s;
      b[p] = a[p] * pow_neg_beta<T, kind>(k + alpha * s, beta);
    }
  }
}

// d a[i] = g[i] w[i] - 2 alpha beta a[i] sum_{j in window(i)} t[j], with s[j] the scale
// k + alpha * (window sum of squares), w[j] = s[j]^-beta and t[j] = g[j] a[j] w[j] / s[j].
// The scale is recomputed from the input (a running sum of squares, as in the forward
// pass) instead of being saved: that saves writing and reading a tensor of the input's
// size. Channel j enters the t window half a window ahead of the output channel
// c = j - half; a ring of the last n + 1 rows keeps t (to leave the window again) and w.
template <typename T, PowKind kind>
ALEXNET_ALWAYS_INLINE void backward_chunk(const Chunk<T>& chunk, Scratch<T>& scratch,
                                          const LrnConstants& c) {
  const int64_t half = c.size / 2;
  const int64_t ring = c.size + 1;
  const int64_t channels = chunk.channels;
  const int64_t len = chunk.len;
  const T alpha = static_cast<T>(c.alpha);
  const T beta = static_cast<T>(c.beta);
  const T k = static_cast<T>(c.k);
  const T coeff = static_cast<T>(2.0 * c.alpha * c.beta);
  T* __restrict square_sum = scratch.square_sum;
  T* __restrict t_sum = scratch.t_sum;
  T* ring_t = scratch.ring_t.data();
  T* ring_w = scratch.ring_w.data();
  auto row = [&](const T* base, int64_t j) {
    return j >= 0 && j < channels ? base + j * chunk.plane : scratch.zero;
  };
  std::fill(square_sum, square_sum + len, T(0));
  std::fill(t_sum, t_sum + len, T(0));
  for (int64_t j = 0; j < std::min(half, channels); ++j) {
    const T* __restrict in = row(chunk.input, j);
    ALEXNET_NO_ALIAS
    for (int64_t p = 0; p < len; ++p) square_sum[p] += in[p] * in[p];
  }
  for (int64_t j = 0; j < channels + half; ++j) {
    T* __restrict t_new = ring_t + (j % ring) * kChunk;
    const T* __restrict t_old = j >= ring - 1 ? ring_t + ((j + 1) % ring) * kChunk : scratch.zero;
    if (j < channels) {
      const T* __restrict entering = row(chunk.input, j + half);
      const T* __restrict leaving = row(chunk.input, j - half - 1);
      const T* __restrict a = chunk.input + j * chunk.plane;
      const T* __restrict g = chunk.grad_output + j * chunk.plane;
      T* __restrict w_new = ring_w + (j % ring) * kChunk;
      ALEXNET_NO_ALIAS
      for (int64_t p = 0; p < len; ++p) {
        const T sq = square_sum[p] + (entering[p] * entering[p] - leaving[p] * leaving[p]);
        square_sum[p] = sq;
        T w, w_over_s;
        pow_neg_beta_and_over_s<T, kind>(k + alpha * sq, beta, w, w_over_s);
        const T t = g[p] * a[p] * w_over_s;
        w_new[p] = w;
        t_sum[p] += t - t_old[p];
        t_new[p] = t;
      }
    } else {
      ALEXNET_NO_ALIAS
      for (int64_t p = 0; p < len; ++p) {
        t_sum[p] -= t_old[p];
        t_new[p] = T(0);
      }
    }
    const int64_t out = j - half;
    if (out < 0) continue;
    const T* __restrict w = ring_w + (out % ring) * kChunk;
    const T* __restrict a = chunk.input + out * chunk.plane;
    const T* __restrict g = chunk.grad_output + out * chunk.plane;
    T* __restrict dx = chunk.output + out * chunk.plane;
    ALEXNET_NO_ALIAS
    for (int64_t p = 0; p < len; ++p) dx[p] = g[p] * w[p] - coeff * a[p] * t_sum[p];
  }
}

// The chunk kernels compiled for AVX-512 and AVX2 as well as the baseline ISA, chosen at
// run time: LibTorch packages are built for the baseline, and these loops are where the
// fused op spends its time.
#if defined(__GNUC__) && defined(__x86_64__)
#define ALEXNET_LRN_MULTI_ISA 1
#define ALEXNET_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx2,fma")))
#define ALEXNET_TARGET_AVX2 __attribute__((target("avx2,fma")))
enum class Isa { kBaseline, kAvx2, kAvx512 };
Isa detect_isa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) {
    return Isa::kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
  return Isa::kBaseline;
}
const Isa kIsa = detect_isa();
#else
#define ALEXNET_LRN_MULTI_ISA 0
#endif

template <typename T, PowKind kind>
void forward_chunk_baseline(const Chunk<T>& chunk, Scratch<T>& scratch, const LrnConstants& c) {
  forward_chunk<T, kind>(chunk, scratch, c);
}
template <typename T, PowKind kind>
void backward_chunk_baseline(const Chunk<T>& chunk, Scratch<T>& scratch, const LrnConstants& c) {
  backward_chunk<T, kind>(chunk, scratch, c);
}
#if ALEXNET_LRN_MULTI_ISA
template <typename T, PowKind kind>
ALEXNET_TARGET_AVX2 void forward_chunk_avx2(const Chunk<T>& chunk, Scratch<T>& scratch,
                                            const LrnConstants& c) {
  forward_chunk<T, kind>(chunk, scratch, c);
}
template <typename T, PowKind kind>
ALEXNET_TARGET_AVX512 void forward_chunk_avx512(const Chunk<T>& chunk, Scratch<T>& scratch,
                                                const LrnConstants& c) {
  forward_chunk<T, kind>(chunk, scratch, c);
}
template <typename T, PowKind kind>
ALEXNET_TARGET_AVX2 void backward_chunk_avx2(const Chunk<T>& chunk, Scratch<T>& scratch,
                                             const LrnConstants& c) {
  backward_chunk<T, kind>(chunk, scratch, c);
}
template <typename T, PowKind kind>
ALEXNET_TARGET_AVX512 void backward_chunk_avx512(const Chunk<T>& chunk, Scratch<T>& scratch,
                                                 const LrnConstants& c) {
  backward_chunk<T, kind>(chunk, scratch, c);
}
#endif

// Runs fn(chunk, scratch) for every (image, span of positions), in parallel.
template <typename T, typename Fn>
void for_each_chunk(const T* input, const T* grad_output, T* output, int64_t batch,
                    int64_t channels, int64_t plane, int64_t ring_rows, Fn&& fn) {
  const int64_t chunks = (plane + kChunk - 1) / kChunk;
  at::parallel_for(0, batch * chunks, 1, [&](int64_t begin, int64_t end) {
    auto scratch = std::make_unique<Scratch<T>>();
    scratch->ring_t.resize(static_cast<size_t>(ring_rows * kChunk));
    scratch->ring_w.resize(static_cast<size_t>(ring_rows * kChunk));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / chunks;
      const int64_t p0 = (task % chunks) * kChunk;
      const int64_t offset = n * channels * plane + p0;
      const Chunk<T> chunk{input + offset,  grad_output == nullptr ? nullptr : grad_output + offset,
                           output + offset, channels,
                           plane,           std::min(kChunk, plane - p0)};
      fn(chunk, *scratch);
    }
  });
}

template <typename T, PowKind kind>
void forward_kernel(const T* input, T* output, int64_t batch, int64_t channels, int64_t plane,
                    const LrnConstants& c) {
  for_each_chunk(input, static_cast<const T*>(nullptr), output, batch, channels, plane,
                 /*ring_rows=*/0, [&](const Chunk<T>& chunk, Scratch<T>& scratch) {
#if ALEXNET_LRN_MULTI_ISA
                   if (kIsa == Isa::kAvx512)
                     return forward_chunk_avx512<T, kind>(chunk, scratch, c);
                   if (kIsa == Isa::kAvx2) return forward_chunk_avx2<T, kind>(chunk, scratch, c);
#endif
                   forward_chunk_baseline<T, kind>(chunk, scratch, c);
                 });
}

template <typename T, PowKind kind>
void backward_kernel(const T* input, const T* grad_output, T* grad_input, int64_t batch,
                     int64_t channels, int64_t plane, const LrnConstants& c) {
  for_each_chunk(input, grad_output, grad_input, batch, channels, plane,
                 /*ring_rows=*/c.size + 1, [&](const Chunk<T>& chunk, Scratch<T>& scratch) {
#if ALEXNET_LRN_MULTI_ISA
                   if (kIsa == Isa::kAvx512) {
                     return backward_chunk_avx512<T, kind>(chunk, scratch, c);
                   }
                   if (kIsa == Isa::kAvx2) return backward_chunk_avx2<T, kind>(chunk, scratch, c);
#endif
                   backward_chunk_baseline<T, kind>(chunk, scratch, c);
                 });
}

template <typename Fn>
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

void lrn_forward_cpu(const torch::Tensor& input, torch::Tensor& output, const LrnConstants& c) {
  const int64_t batch = input.size(0);
  const int64_t channels = input.size(1);
  const int64_t plane = input.size(2) * input.size(3);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "lrn_forward_cpu", [&] {
    dispatch_pow(c.beta, [&](auto kind) {
      forward_kernel<scalar_t, decltype(kind)::value>(
          input.data_ptr<scalar_t>(), output.data_ptr<scalar_t>(), batch, channels, plane, c);
    });
  });
}

torch::Tensor lrn_backward_cpu(const torch::Tensor& input, const torch::Tensor& grad_output,
                               const LrnConstants& c) {
  auto grad_input = torch::empty_like(input);
  const int64_t batch = input.size(0);
  const int64_t channels = input.size(1);
  const int64_t plane = input.size(2) * input.size(3);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "lrn_backward_cpu", [&] {
    dispatch_pow(c.beta, [&](auto kind) {
      backward_kernel<scalar_t, decltype(kind)::value>(
          input.data_ptr<scalar_t>(), grad_output.data_ptr<scalar_t>(),
          grad_input.data_ptr<scalar_t>(), batch, channels, plane, c);
    });
  });
  return grad_input;
}

}  // namespace detail

namespace {

using detail::LrnConstants;

torch::Tensor run_forward(const torch::Tensor& x, const LrnConstants& c) {
  auto output = torch::empty_like(x);
  if (x.is_cuda()) {
#if ALEXNET_WITH_CUDA
    detail::lrn_forward_cuda(x, output, c);
    return output;
#else
    TORCH_CHECK(false, "LocalResponseNorm: this build has no CUDA kernel");
#endif
  }
  TORCH_CHECK(x.device().is_cpu(), "LocalResponseNorm: unsupported device ", x.device());
  detail::lrn_forward_cpu(x, output, c);
  return output;
}

class LrnFunction : public torch::autograd::Function<LrnFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input,
                               int64_t size, double alpha, double beta, double k) {
    const LrnConstants c{size, alpha, beta, k};
    auto output = run_forward(input, c);
    // The backward pass recomputes the scale from the input: nothing else is saved.
    ctx->save_for_backward({input});
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
      grad_input = detail::lrn_backward_cuda(saved[0], grad_output, c);
#endif
    } else {
      grad_input = detail::lrn_backward_cpu(saved[0], grad_output, c);
    }
    return {grad_input, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

void check_input(const torch::Tensor& input) {
  TORCH_CHECK(input.dim() == 4, "LocalResponseNorm expects an [N, C, H, W] input, got ",
              input.dim(), " dimensions ", input.sizes());
  TORCH_CHECK(c10::isFloatingType(input.scalar_type()),
              "LocalResponseNorm supports float and double (half and bfloat16 are computed in "
              "float), got ",
              input.scalar_type());
}

}  // namespace

std::optional<OptionProblem> find_option_problem(const LocalResponseNormOptions& options) {
  if (options.size() < 1 || options.size() % 2 == 0) {
    return OptionProblem{"size", "an odd integer >= 1", option_value_text(options.size())};
  }
  for (const auto& [name, value] : {std::make_pair("alpha", options.alpha()),
                                    std::make_pair("beta", options.beta())}) {
    if (!(std::isfinite(value) && value >= 0)) {
      return OptionProblem{name, "a finite number >= 0", option_value_text(value)};
    }
  }
  if (!(std::isfinite(options.k()) && options.k() > 0)) {
    return OptionProblem{"k", "a finite number > 0", option_value_text(options.k())};
  }
  return std::nullopt;
}

void validate(const LocalResponseNormOptions& options) {
  if (const auto problem = find_option_problem(options)) {
    TORCH_CHECK(false, "LocalResponseNorm: ", problem->message());
  }
}

torch::Tensor local_response_norm(const torch::Tensor& input,
                                  const LocalResponseNormOptions& options) {
  check_input(input);
  if (input.scalar_type() != torch::kFloat && input.scalar_type() != torch::kDouble) {
    // Half and bfloat16 (e.g. under autocast): the window sum needs float's range.
    return local_response_norm(input.to(torch::kFloat), options).to(input.scalar_type());
  }
#if !ALEXNET_WITH_CUDA
  // LibTorch with CUDA but built without a CUDA compiler: plain tensor operations.
  if (input.is_cuda()) return local_response_norm_reference(input, options);
#endif
  const auto x = input.contiguous();
  const double alpha = options.effective_alpha();
  if (torch::GradMode::is_enabled() && x.requires_grad()) {
    return LrnFunction::apply(x, options.size(), alpha, options.beta(), options.k());
  }
  return run_forward(x, LrnConstants{options.size(), alpha, options.beta(), options.k()});
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
