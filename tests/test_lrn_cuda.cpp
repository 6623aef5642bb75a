// CUDA tests: the CUDA LRN kernels against the CPU ones, and the two-column model with a
// column on the GPU against the single-device form on the CPU. Every test skips itself (and
// says so) where LibTorch has no usable CUDA device, so this file builds and runs anywhere.
#include <torch/torch.h>
#include <catch2/catch.hpp>

#include "model/alexnet.h"
#include "model/lrn.h"

namespace test_lrn_cuda {

using alexnet::AlexNet;
using alexnet::AlexNetOptions;
using alexnet::LocalResponseNormOptions;

namespace {

bool skip_without_cuda() {
  if (!torch::cuda::is_available()) {
    WARN("skipped: this LibTorch has no usable CUDA device");
    return true;
  }
  // Full float32 convolutions and matrix products, so that GPU and CPU agree closely.
  at::globalContext().setAllowTF32CuDNN(false);
  at::globalContext().setAllowTF32CuBLAS(false);
  return false;
}

}  // namespace

TEST_CASE("CUDA LRN forward and backward equal the CPU kernels", "[lrn][cuda]") {
  if (skip_without_cuda()) return;
  torch::manual_seed(0);
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    for (int64_t size : {1, 3, 5, 7}) {
      for (double beta : {0.75, 0.6}) {
        const auto o = LocalResponseNormOptions(size).alpha(1e-3).beta(beta).k(2.0);
        const auto x = torch::relu(torch::randn({3, 13, 9, 11}, dtype) * 20.0);
        const auto g = torch::randn_like(x);
        auto cpu = x.clone().requires_grad_(true);
        auto gpu = x.to(torch::kCUDA).requires_grad_(true);
        const auto y_cpu = alexnet::local_response_norm(cpu, o);
        const auto y_gpu = alexnet::local_response_norm(gpu, o);
        y_cpu.backward(g);
        y_gpu.backward(g.to(torch::kCUDA));
        const double tol = dtype == torch::kFloat ? 1e-5 : 1e-12;
        INFO("dtype " << dtype << " size " << size << " beta " << beta);
        REQUIRE(y_gpu.is_cuda());
        CHECK(torch::allclose(y_gpu.cpu(), y_cpu, tol, tol));
        CHECK(torch::allclose(gpu.grad().cpu(), cpu.grad(), tol, tol));
      }
    }
  }
}

TEST_CASE("CUDA LRN at the conv1 shape equals torch's op", "[lrn][cuda]") {
  if (skip_without_cuda()) return;
  torch::manual_seed(1);
  const auto x = (torch::relu(torch::randn({8, 48, 55, 55})) * 20.0).to(torch::kCUDA);
  namespace F = torch::nn::functional;
  const auto expected =
      F::local_response_norm(x, F::LocalResponseNormFuncOptions(5).alpha(5e-4).beta(0.75).k(2.0));
  const auto actual = alexnet::local_response_norm(x, LocalResponseNormOptions(5));
  CHECK(torch::allclose(actual, expected, 1e-5, 1e-6));
}

TEST_CASE("CUDA LRN computes half and bfloat16 input in float", "[lrn][cuda]") {
  if (skip_without_cuda()) return;
  torch::manual_seed(2);
  const auto x = torch::relu(torch::randn({2, 16, 7, 7}, torch::kCUDA)) * 20.0;
  const auto o = LocalResponseNormOptions(5);
  const auto expected = alexnet::local_response_norm(x, o);
  for (auto dtype : {torch::kHalf, torch::kBFloat16}) {
    const auto y = alexnet::local_response_norm(x.to(dtype), o);
    CHECK(y.scalar_type() == dtype);
    CHECK(torch::allclose(y.to(torch::kFloat), expected, 2e-2, 2e-2));
  }
}

TEST_CASE("Two-column model on cuda:0,cuda:0 and cuda:0,cpu equals the single-device form",
          "[alexnet][cuda]") {
  if (skip_without_cuda()) return;
  torch::manual_seed(3);
  const auto options = AlexNetOptions().num_classes(10).dropout(0.0).init(alexnet::Init::kKaiming);
  AlexNet single(options);
  const auto x = torch::randn({2, 3, 224, 224});
  const auto target = torch::randint(10, {2}, torch::kLong);
  const auto out_single = single->forward(x);
  torch::nn::functional::cross_entropy(out_single, target).backward();

  const std::vector<std::vector<torch::Device>> layouts{
      {torch::Device("cuda:0"), torch::Device("cuda:0")}, {torch::Device("cuda:0"), torch::kCPU}};
  for (const auto& devices : layouts) {
    INFO("devices " << devices[0] << "," << devices[1]);
    AlexNet two(AlexNetOptions(options).devices(devices));
    two->load_single_device_state(single->single_device_state());
    const auto out_two = two->forward(x.to(devices[0]));
    REQUIRE(out_two.device() == devices[0]);
    CHECK(torch::allclose(out_two.cpu(), out_single, 1e-4, 1e-4));
    torch::nn::functional::cross_entropy(out_two, target.to(devices[0])).backward();
    for (const auto& layer : single->layer_names()) {
      for (const std::string kind : {"weight", "bias"}) {
        const auto g_single = single->named_parameters()[layer + "." + kind].grad();
        const auto g_two =
            torch::cat({two->named_parameters()["column0." + layer + "." + kind].grad().cpu(),
                        two->named_parameters()["column1." + layer + "." + kind].grad().cpu()});
        INFO(layer << "." << kind);
        CHECK(torch::allclose(g_two, g_single, 1e-3, 1e-4));
      }
    }
  }
}

TEST_CASE("Single-device model on cuda:0 equals the CPU model", "[alexnet][cuda]") {
  if (skip_without_cuda()) return;
  torch::manual_seed(4);
  const auto options = AlexNetOptions().num_classes(10).dropout(0.0).init(alexnet::Init::kKaiming);
  AlexNet cpu(options);
  AlexNet gpu(AlexNetOptions(options).devices({torch::Device("cuda:0")}));
  gpu->load_single_device_state(cpu->single_device_state());
  const auto x = torch::randn({2, 3, 224, 224});
  CHECK(torch::allclose(gpu->forward(x.to(torch::kCUDA)).cpu(), cpu->forward(x), 1e-4, 1e-4));
}

}  // namespace test_lrn_cuda
