#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "model/lrn.h"

namespace test_lrn {

using alexnet::LocalResponseNorm;
using alexnet::LocalResponseNormOptions;

namespace {

// The paper's formula written as plain loops, in double.
torch::Tensor naive_lrn(const torch::Tensor& input, const LocalResponseNormOptions& o) {
  auto x = input.to(torch::kDouble).contiguous();
  auto out = torch::empty_like(x);
  auto a = x.accessor<double, 4>();
  auto b = out.accessor<double, 4>();
  const int64_t half = o.size() / 2;
  const double alpha = o.divide_alpha_by_size() ? o.alpha() / o.size() : o.alpha();
  for (int64_t n = 0; n < x.size(0); ++n)
    for (int64_t c = 0; c < x.size(1); ++c)
      for (int64_t h = 0; h < x.size(2); ++h)
        for (int64_t w = 0; w < x.size(3); ++w) {
          double sum = 0;
          for (int64_t j = std::max<int64_t>(0, c - half);
               j <= std::min<int64_t>(x.size(1) - 1, c + half); ++j) {
            sum += a[n][j][h][w] * a[n][j][h][w];
          }
          b[n][c][h][w] = a[n][c][h][w] / std::pow(o.k() + alpha * sum, o.beta());
        }
  return out;
}

// Large activations so that the normalisation is far from the identity.
torch::Tensor activations(std::vector<int64_t> shape, torch::Dtype dtype = torch::kFloat) {
  return torch::randn(shape, torch::TensorOptions().dtype(dtype)) * 20.0;
}

}  // namespace

TEST_CASE("LRN matches a naive loop of the paper's formula", "[lrn]") {
  torch::manual_seed(0);
  for (int64_t size : {1, 3, 5, 7}) {
    for (bool divide : {false, true}) {
      for (int64_t channels : {2, 5, 13}) {
        auto o = LocalResponseNormOptions(size).alpha(1e-3).beta(0.75).k(2.0)
                     .divide_alpha_by_size(divide);
        auto x = activations({2, channels, 5, 7}, torch::kDouble);
        INFO("size " << size << " divide " << divide << " channels " << channels);
        CHECK(torch::allclose(alexnet::local_response_norm(x, o), naive_lrn(x, o), 1e-12, 1e-12));
      }
    }
  }
}

TEST_CASE("LRN handles general beta and float input", "[lrn]") {
  torch::manual_seed(1);
  for (double beta : {0.5, 0.75, 1.0, 0.6}) {
    auto o = LocalResponseNormOptions(5).alpha(1e-3).beta(beta).k(1.0);
    auto x = activations({3, 9, 4, 600});  // more than one spatial chunk per plane
    auto expected = naive_lrn(x, o).to(torch::kFloat);
    INFO("beta " << beta);
    CHECK(torch::allclose(alexnet::local_response_norm(x, o), expected, 1e-5, 1e-5));
  }
}

TEST_CASE("LRN with alpha * n equals torch's local_response_norm", "[lrn]") {
  torch::manual_seed(2);
  auto x = activations({2, 96, 11, 11});
  namespace F = torch::nn::functional;
  // Paper convention: alpha not divided by n, so torch needs alpha * n.
  auto paper = LocalResponseNormOptions(5).alpha(1e-4).beta(0.75).k(2.0);
  auto torch_paper = F::local_response_norm(
      x, F::LocalResponseNormFuncOptions(5).alpha(5e-4).beta(0.75).k(2.0));
  CHECK(torch::allclose(alexnet::local_response_norm(x, paper), torch_paper, 1e-5, 1e-6));
  // Reference-code convention: identical constants.
  auto divided = paper.divide_alpha_by_size(true);
  auto torch_divided = F::local_response_norm(
      x, F::LocalResponseNormFuncOptions(5).alpha(1e-4).beta(0.75).k(2.0));
  CHECK(torch::allclose(alexnet::local_response_norm(x, divided), torch_divided, 1e-5, 1e-6));
  // The two conventions really differ on these activations.
  CHECK_FALSE(torch::allclose(torch_paper, torch_divided, 1e-3, 1e-3));
}

TEST_CASE("LRN tensor-op formulation equals the fused kernel", "[lrn]") {
  torch::manual_seed(3);
  auto x = activations({2, 48, 6, 6}, torch::kDouble);
  auto o = LocalResponseNormOptions(5).alpha(1e-3);
  CHECK(torch::allclose(alexnet::local_response_norm_reference(x, o),
                        alexnet::local_response_norm(x, o), 1e-12, 1e-12));
}

TEST_CASE("LRN backward matches finite differences in double", "[lrn]") {
  torch::manual_seed(4);
  for (int64_t size : {1, 3, 5}) {
    for (double beta : {0.75, 0.6}) {
      auto o = LocalResponseNormOptions(size).alpha(2e-2).beta(beta).k(1.5);
      auto x = torch::randn({2, 7, 3, 4}, torch::kDouble) * 3.0;
      auto weights = torch::randn_like(x);
      auto xg = x.clone().requires_grad_(true);
      (alexnet::local_response_norm(xg, o) * weights).sum().backward();
      auto analytic = xg.grad();

      auto numeric = torch::empty_like(x);
      auto flat = x.view(-1);
      auto numeric_flat = numeric.view(-1);
      const double eps = 1e-6;
      for (int64_t i = 0; i < flat.numel(); ++i) {
        const double saved = flat[i].item<double>();
        flat[i] = saved + eps;
        const double plus = (naive_lrn(x, o) * weights).sum().item<double>();
        flat[i] = saved - eps;
        const double minus = (naive_lrn(x, o) * weights).sum().item<double>();
        flat[i] = saved;
        numeric_flat[i] = (plus - minus) / (2 * eps);
      }
      INFO("size " << size << " beta " << beta);
      CHECK(torch::allclose(analytic, numeric, 1e-6, 1e-7));
    }
  }
}

TEST_CASE("LRN backward equals autograd through torch's op", "[lrn]") {
  torch::manual_seed(5);
  auto x = activations({4, 96, 13, 13});
  auto g = torch::randn_like(x);
  auto a = x.clone().requires_grad_(true);
  alexnet::local_response_norm(a, LocalResponseNormOptions(5)).backward(g);
  auto b = x.clone().requires_grad_(true);
  namespace F = torch::nn::functional;
  F::local_response_norm(b, F::LocalResponseNormFuncOptions(5).alpha(5e-4).beta(0.75).k(2.0))
      .backward(g);
  CHECK(torch::allclose(a.grad(), b.grad(), 1e-4, 1e-6));
}

TEST_CASE("LRN accepts non-contiguous input", "[lrn]") {
  torch::manual_seed(6);
  auto o = LocalResponseNormOptions(5).alpha(1e-3);
  auto base = activations({2, 10, 8, 8});
  auto channels_last = base.contiguous(torch::MemoryFormat::ChannelsLast);
  auto transposed = base.transpose(2, 3);
  auto sliced = activations({2, 20, 8, 8}).slice(1, 0, 20, 2);
  for (const auto& x : {channels_last, transposed, sliced}) {
    REQUIRE_FALSE(x.is_contiguous());
    CHECK(torch::allclose(alexnet::local_response_norm(x, o), naive_lrn(x, o).to(torch::kFloat),
                          1e-5, 1e-5));
    auto xg = x.detach().requires_grad_(true);
    alexnet::local_response_norm(xg, o).sum().backward();
    CHECK(xg.grad().sizes() == x.sizes());
    CHECK(torch::isfinite(xg.grad()).all().item<bool>());
  }
}

TEST_CASE("LRN module applies its options", "[lrn]") {
  LocalResponseNorm lrn(LocalResponseNormOptions(3).alpha(0.5).k(1.0));
  auto x = torch::full({1, 3, 1, 1}, 2.0);
  // Middle channel: window of all three channels, sum 12.
  auto y = lrn(x);
  CHECK(y[0][1][0][0].item<float>() == Approx(2.0 / std::pow(1.0 + 0.5 * 12.0, 0.75)));
  // Edge channel: window of two channels, sum 8.
  CHECK(y[0][0][0][0].item<float>() == Approx(2.0 / std::pow(1.0 + 0.5 * 8.0, 0.75)));
}

TEST_CASE("LRN refuses bad options and inputs with clear errors", "[lrn]") {
  using Catch::Matchers::Contains;
  CHECK_THROWS_WITH(LocalResponseNorm(LocalResponseNormOptions(4)), Contains("odd"));
  CHECK_THROWS_WITH(LocalResponseNorm(LocalResponseNormOptions(0)), Contains("size"));
  CHECK_THROWS_WITH(LocalResponseNorm(LocalResponseNormOptions(5).k(0)), Contains("k must"));
  CHECK_THROWS_WITH(LocalResponseNorm(LocalResponseNormOptions(5).alpha(-1)),
                    Contains("alpha"));
  LocalResponseNorm lrn;
  CHECK_THROWS_WITH(lrn(torch::zeros({3, 4, 5})), Contains("[N, C, H, W]"));
  CHECK_THROWS_WITH(lrn(torch::zeros({1, 3, 4, 5}, torch::kInt)), Contains("float and double"));
}

}  // namespace test_lrn
