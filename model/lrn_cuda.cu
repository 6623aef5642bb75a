// CUDA kernels of the fused LRN (see model/lrn_kernels.h and the CPU version in lrn.cpp).
// One thread per (image, spatial position) walks over the channels with a running window
// sum; consecutive threads handle consecutive positions, so every load and store of a warp
// is coalesced. Compiled only where LibTorch has CUDA (ALEXNET_WITH_CUDA).
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "model/lrn_kernels.h"

namespace alexnet::detail {
namespace {

constexpr int kThreads = 256;

// s^-beta; the paper's beta = 0.75 and beta = 0.5 avoid pow.
template <typename acc_t>
__device__ __forceinline__ acc_t pow_neg_beta(acc_t s, acc_t beta) {
  if (beta == acc_t(0.75)) {
    const acc_t q = acc_t(1) / sqrt(s);
    return q * sqrt(q);
  }
  if (beta == acc_t(0.5)) return acc_t(1) / sqrt(s);
  return pow(s, -beta);
}

template <typename scalar_t, typename acc_t>
__global__ void lrn_forward_kernel(const scalar_t* __restrict__ input,
                                   scalar_t* __restrict__ output, int64_t batch, int64_t channels,
                                   int64_t plane, int64_t half, acc_t alpha, acc_t beta, acc_t k) {
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= batch * plane) return;
  const int64_t n = index / plane;
  const int64_t offset = n * channels * plane + index % plane;
  const scalar_t* a = input + offset;
  scalar_t* b = output + offset;
  acc_t sum = 0;
  for (int64_t j = 0; j < half && j < channels; ++j) {
    const acc_t v = a[j * plane];
    sum += v * v;
  }
  for (int64_t c = 0; c < channels; ++c) {
    if (c + half < channels) {
      const acc_t v = a[(c + half) * plane];
      sum += v * v;
    }
    if (c - half - 1 >= 0) {
      const acc_t v = a[(c - half - 1) * plane];
      sum -= v * v;
    }
    const acc_t x = a[c * plane];
    b[c * plane] = static_cast<scalar_t>(x * pow_neg_beta(k + alpha * sum, beta));
  }
}

// d a[c] = g[c] w[c] - 2 alpha beta a[c] sum_{j in window(c)} t[j], with s the scale,
// w = s^-beta and t = g a w / s. Pass 1 recomputes s with a running sum of squares and
// writes t (into `t_buffer`) and w (into grad_input, overwritten in pass 2 by the same
// thread); pass 2 runs a window sum over t.
template <typename scalar_t, typename acc_t>
__global__ void lrn_backward_kernel(const scalar_t* __restrict__ input,
                                    const scalar_t* __restrict__ grad_output,
                                    scalar_t* __restrict__ grad_input, acc_t* __restrict__ t_buffer,
                                    int64_t batch, int64_t channels, int64_t plane, int64_t half,
                                    acc_t alpha, acc_t beta, acc_t k) {
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= batch * plane) return;
  const int64_t n = index / plane;
  const int64_t offset = n * channels * plane + index % plane;
  const scalar_t* a = input + offset;
  const scalar_t* g = grad_output + offset;
  scalar_t* dx = grad_input + offset;
  acc_t* t = t_buffer + offset;
  const acc_t coeff = acc_t(2) * alpha * beta;

  acc_t square_sum = 0;
  for (int64_t j = 0; j < half && j < channels; ++j) {
    const acc_t v = a[j * plane];
    square_sum += v * v;
  }
  for (int64_t c = 0; c < channels; ++c) {
    if (c + half < channels) {
      const acc_t v = a[(c + half) * plane];
      square_sum += v * v;
    }
    if (c - half - 1 >= 0) {
      const acc_t v = a[(c - half - 1) * plane];
      square_sum -= v * v;
    }
    const acc_t s = k + alpha * square_sum;
    const acc_t w = pow_neg_beta(s, beta);
    t[c * plane] = static_cast<acc_t>(g[c * plane]) * static_cast<acc_t>(a[c * plane]) * w / s;
    dx[c * plane] = static_cast<scalar_t>(w);
  }

  acc_t t_sum = 0;
  for (int64_t j = 0; j < half && j < channels; ++j) t_sum += t[j * plane];
  for (int64_t c = 0; c < channels; ++c) {
    if (c + half < channels) t_sum += t[(c + half) * plane];
    if (c - half - 1 >= 0) t_sum -= t[(c - half - 1) * plane];
    const acc_t w = dx[c * plane];
    dx[c * plane] = static_cast<scalar_t>(static_cast<acc_t>(g[c * plane]) * w -
                                          coeff * static_cast<acc_t>(a[c * plane]) * t_sum);
  }
}

void check_cuda_input(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda() && t.dim() == 4 && t.is_contiguous(), "lrn (CUDA): ", name,
              " must be a contiguous 4-d CUDA tensor, got ", t.sizes(), " on ", t.device());
}

unsigned int blocks_for(int64_t threads) {
  return static_cast<unsigned int>((threads + kThreads - 1) / kThreads);
}

}  // namespace

void lrn_forward_cuda(const at::Tensor& input, at::Tensor& output, const LrnConstants& c) {
  check_cuda_input(input, "input");
  check_cuda_input(output, "output");
  const c10::cuda::CUDAGuard guard(input.device());
  const int64_t batch = input.size(0);
  const int64_t channels = input.size(1);
  const int64_t plane = input.size(2) * input.size(3);
  if (batch * plane == 0 || channels == 0) return;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "lrn_forward_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;
    lrn_forward_kernel<scalar_t, acc_t><<<blocks_for(batch * plane), kThreads, 0, stream>>>(
        input.data_ptr<scalar_t>(), output.data_ptr<scalar_t>(), batch, channels, plane, c.size / 2,
        static_cast<acc_t>(c.alpha), static_cast<acc_t>(c.beta), static_cast<acc_t>(c.k));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor lrn_backward_cuda(const at::Tensor& input, const at::Tensor& grad_output,
                             const LrnConstants& c) {
  check_cuda_input(input, "input");
  check_cuda_input(grad_output, "grad_output");
  TORCH_CHECK(input.sizes() == grad_output.sizes(), "lrn (CUDA): grad_output has shape ",
              grad_output.sizes(), ", input ", input.sizes());
  const c10::cuda::CUDAGuard guard(input.device());
  auto grad_input = at::empty_like(input);
  const int64_t batch = input.size(0);
  const int64_t channels = input.size(1);
  const int64_t plane = input.size(2) * input.size(3);
  if (batch * plane == 0 || channels == 0) return grad_input;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "lrn_backward_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;
    auto t_buffer =
        at::empty(input.sizes(), input.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    lrn_backward_kernel<scalar_t, acc_t><<<blocks_for(batch * plane), kThreads, 0, stream>>>(
        input.data_ptr<scalar_t>(), grad_output.data_ptr<scalar_t>(),
        grad_input.data_ptr<scalar_t>(), t_buffer.data_ptr<acc_t>(), batch, channels, plane,
        c.size / 2, static_cast<acc_t>(c.alpha), static_cast<acc_t>(c.beta),
        static_cast<acc_t>(c.k));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_input;
}

}  // namespace alexnet::detail
