// Tests of transforms/: shapes, value ranges, crop positions, flips, PCA lighting statistics.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include "transforms/transforms.h"

namespace test_transforms {

using namespace alexnet::transforms;

namespace {

// [C, H, W] float image whose every value is distinct.
torch::Tensor ramp(int64_t c, int64_t h, int64_t w) {
  return torch::arange(c * h * w, torch::kFloat).view({c, h, w});
}

torch::Tensor patch(const torch::Tensor& image, int64_t top, int64_t left, int64_t size) {
  return image.narrow(-2, top, size).narrow(-1, left, size);
}

}  // namespace

TEST_CASE("ResizeShorter scales the shorter side and keeps the dtype", "[transforms]") {
  Rng rng(0);
  auto image = torch::randint(0, 256, {3, 100, 50}, torch::kByte);
  auto out = ResizeShorter(25).apply(image, rng);
  CHECK(out.sizes() == c10::IntArrayRef({3, 50, 25}));
  CHECK(out.scalar_type() == torch::kByte);
  auto wide = ResizeShorter(64).apply(torch::rand({3, 28, 45}) * 255, rng);
  CHECK(wide.sizes() == c10::IntArrayRef({3, 64, 45 * 64 / 28}));  // floor, as torchvision
  CHECK(ResizeShorter(50).apply(image, rng).data_ptr() == image.data_ptr());  // no-op
  // A constant image stays constant, shrinking (area) and enlarging (bilinear).
  auto flat = torch::full({3, 40, 60}, 77, torch::kByte);
  CHECK((ResizeShorter(10).apply(flat, rng) == 77).all().item<bool>());
  CHECK((ResizeShorter(90).apply(flat, rng) == 77).all().item<bool>());
  // An empty image, and one so elongated that its resized form would be huge, are refused.
  CHECK_THROWS_WITH(ResizeShorter(64).apply(torch::zeros({3, 0, 0}, torch::kByte), rng),
                    Catch::Contains("empty"));
  const int64_t longest = alexnet::transforms::kMaxAspectRatio;
  CHECK(ResizeShorter(2).apply(torch::zeros({1, 1, longest}, torch::kByte), rng).size(2) ==
        2 * longest);
  CHECK_THROWS_WITH(ResizeShorter(2).apply(torch::zeros({1, longest + 1, 1}, torch::kByte), rng),
                    Catch::Contains("longer than wide"));
}

TEST_CASE("Resize gives the exact size for small-image demos", "[transforms]") {
  Rng rng(0);
  auto image = torch::randint(0, 256, {3, 28, 28}, torch::kByte);
  auto out = Resize(64, 64).apply(image, rng);
  CHECK(out.sizes() == c10::IntArrayRef({3, 64, 64}));
  CHECK(out.scalar_type() == torch::kByte);
  auto f = Resize(64, 32).apply(image.to(torch::kFloat), rng);
  CHECK(f.scalar_type() == torch::kFloat);
  CHECK(f.min().item<float>() >= 0);
  CHECK(f.max().item<float>() <= 255);
}

TEST_CASE("CenterCrop rounds its offsets as torchvision", "[transforms]") {
  Rng rng(0);
  auto image = ramp(3, 7, 10);
  // (7 - 2) / 2 = 2.5 -> 2 and (10 - 2) / 2 = 4 (Python's round: ties to even).
  CHECK(torch::equal(CenterCrop(2).apply(image, rng), patch(image, 2, 4, 2)));
  // (7 - 4) / 2 = 1.5 -> 2, (10 - 4) / 2 = 3.
  CHECK(torch::equal(CenterCrop(4).apply(image, rng), patch(image, 2, 3, 4)));
  CHECK_THROWS_WITH(CenterCrop(8).apply(image, rng), Catch::Contains("only 7x10"));
}

TEST_CASE("RandomCrop takes every position uniformly", "[transforms]") {
  Rng rng(1);
  auto image = ramp(1, 6, 5);
  const int64_t size = 4;
  std::map<std::pair<int64_t, int64_t>, int> seen;
  for (int i = 0; i < 600; ++i) {
    auto out = RandomCrop(size).apply(image, rng);
    REQUIRE(out.sizes() == c10::IntArrayRef({1, size, size}));
    const auto first = static_cast<int64_t>(out[0][0][0].item<float>());
    const int64_t top = first / 5, left = first % 5;
    REQUIRE(torch::equal(out, patch(image, top, left, size)));
    ++seen[{top, left}];
  }
  CHECK(seen.size() == 3 * 2);  // tops 0..2, lefts 0..1
  for (const auto& [position, count] : seen) CHECK(count > 60);
}

TEST_CASE("RandomHorizontalFlip mirrors columns", "[transforms]") {
  Rng rng(2);
  auto image = ramp(3, 4, 5);
  auto flipped = RandomHorizontalFlip(1.0).apply(image, rng);
  for (int64_t x = 0; x < 5; ++x) {
    CHECK(torch::equal(flipped.select(2, x), image.select(2, 4 - x)));
  }
  CHECK(torch::equal(RandomHorizontalFlip(0.0).apply(image, rng), image));
  int flips = 0;
  for (int i = 0; i < 1000; ++i) {
    flips += !torch::equal(RandomHorizontalFlip(0.5).apply(image, rng), image);
  }
  CHECK(flips > 430);
  CHECK(flips < 570);
}

TEST_CASE("MatchChannels takes the luma of RGB and replicates grey", "[transforms]") {
  Rng rng(0);
  auto rgb = torch::tensor({255, 0, 10, 0, 255, 20, 0, 0, 30}, torch::kByte).view({3, 1, 3});
  auto grey = MatchChannels(1).apply(rgb, rng);
  CHECK(grey.scalar_type() == torch::kByte);
  REQUIRE(grey.sizes() == c10::IntArrayRef({1, 1, 3}));
  // 0.299 * 255 = 76.2, 0.587 * 255 = 149.7, 0.299 * 10 + 0.587 * 20 + 0.114 * 30 = 18.15.
  CHECK(grey[0][0][0].item<int>() == 76);
  CHECK(grey[0][0][1].item<int>() == 150);
  CHECK(grey[0][0][2].item<int>() == 18);
  CHECK(torch::equal(MatchChannels(3).apply(rgb, rng), rgb));
  auto back = MatchChannels(3).apply(grey, rng);
  REQUIRE(back.sizes() == c10::IntArrayRef({3, 1, 3}));
  CHECK(torch::equal(back[2], grey[0]));
  CHECK_THROWS_WITH(MatchChannels(1).apply(torch::zeros({2, 4, 4}), rng),
                    Catch::Contains("2 channels"));
  // A pipeline with channels set converts before cropping.
  PipelineOptions options;
  options.resize = 0;
  options.crop = 1;
  options.channels = 1;
  CHECK(eval_pipeline(options, false)->apply(rgb, rng).sizes() == c10::IntArrayRef({1, 1, 1}));
}

TEST_CASE("ToFloat and Normalize", "[transforms]") {
  Rng rng(0);
  auto image = torch::randint(0, 256, {3, 8, 8}, torch::kByte);
  auto f = ToFloat().apply(image, rng);
  CHECK(f.scalar_type() == torch::kFloat);
  CHECK(torch::equal(f, image.to(torch::kFloat)));
  auto n = Normalize({10, 20, 30}, {2, 4, 5}).apply(image, rng);
  auto expected = (image.to(torch::kFloat) - torch::tensor({10.f, 20.f, 30.f}).view({3, 1, 1})) /
                  torch::tensor({2.f, 4.f, 5.f}).view({3, 1, 1});
  CHECK(torch::allclose(n, expected));
  auto mean_only = Normalize({100}).apply(image, rng);
  CHECK(torch::allclose(mean_only, image.to(torch::kFloat) - 100));
  CHECK_THROWS_WITH(Normalize({1, 2}).apply(image, rng), Catch::Contains("3 channels"));
  // Batched ten-crop input broadcasts per channel.
  auto ten = Normalize({1, 2, 3}).apply(torch::zeros({10, 3, 2, 2}), rng);
  CHECK(ten[7][2][1][1].item<float>() == -3);
}

TEST_CASE("PcaLighting adds one offset per image with the paper's covariance", "[transforms]") {
  const auto values = imagenet_eigenvalues();
  const auto vectors = imagenet_eigenvectors();
  const double alphastd = 0.1;
  PcaLighting lighting(values, vectors, alphastd);
  Rng rng(3);
  auto image = torch::randint(0, 256, {3, 5, 6}, torch::kByte);
  auto out = lighting.apply(image, rng);
  CHECK(out.scalar_type() == torch::kFloat);
  auto shift = out - image.to(torch::kFloat);
  for (int64_t c = 0; c < 3; ++c) {
    CHECK(torch::allclose(shift[c], shift[c][0][0].expand({5, 6}), 1e-4, 1e-4));
  }
  // Offsets over many draws: covariance V diag((alphastd * lambda)^2) V^T, mean 0.
  const int draws = 20000;
  auto pixel = torch::zeros({3, 1, 1});
  auto offsets = torch::empty({draws, 3}, torch::kDouble);
  for (int i = 0; i < draws; ++i)
    offsets[i] = lighting.apply(pixel, rng).view({3}).to(torch::kDouble);
  auto centred = offsets - offsets.mean(0);
  auto covariance = centred.t().mm(centred) / (draws - 1);
  auto expected = vectors.mm(torch::diag((values * alphastd).pow(2))).mm(vectors.t());
  INFO("covariance " << covariance << "\nexpected " << expected);
  CHECK(torch::allclose(covariance, expected, /*rtol=*/0.05,
                        /*atol=*/0.05 * expected.abs().max().item<double>()));
  CHECK(offsets.mean(0).abs().max().item<double>() <
        0.05 * std::sqrt(expected.max().item<double>()));
}

TEST_CASE("TenCrop returns the corners, the centre and their mirrors", "[transforms]") {
  Rng rng(0);
  auto image = ramp(3, 9, 12);
  const int64_t s = 4;
  auto out = TenCrop(s).apply(image, rng);
  REQUIRE(out.sizes() == c10::IntArrayRef({10, 3, s, s}));
  const std::vector<std::pair<int64_t, int64_t>> corners{{0, 0}, {0, 8}, {5, 0}, {5, 8}, {2, 4}};
  auto mirrored = image.flip({2});
  for (size_t k = 0; k < 5; ++k) {
    const auto [top, left] = corners[k];
    CHECK(torch::equal(out[k], patch(image, top, left, s)));
    CHECK(torch::equal(out[k + 5], patch(mirrored, top, left, s)));
  }
  // The mirrored set is the mirror of the opposite corner (the paper's "reflections").
  CHECK(torch::equal(out[5], patch(image, 0, 8, s).flip({2})));
  CHECK(torch::equal(out[9], patch(image, 2, 4, s).flip({2})));
}

TEST_CASE("The paper's pipelines give the right shapes and ranges", "[transforms]") {
  Rng rng(4);
  auto image = torch::randint(0, 256, {3, 300, 400}, torch::kByte);
  PipelineOptions options;
  options.mean = {120, 115, 100};
  auto train = training_pipeline(options);
  auto out = train->apply(image, rng);
  CHECK(out.sizes() == c10::IntArrayRef({3, 224, 224}));
  CHECK(out.scalar_type() == torch::kFloat);
  CHECK(out.min().item<float>() > -200);
  CHECK(out.max().item<float>() < 200);
  CHECK(train->name().find("PcaLighting") != std::string::npos);
  auto centre = eval_pipeline(options, false)->apply(image, rng);
  CHECK(centre.sizes() == c10::IntArrayRef({3, 224, 224}));
  auto ten = eval_pipeline(options, true)->apply(image, rng);
  CHECK(ten.sizes() == c10::IntArrayRef({10, 3, 224, 224}));
  // Evaluation is deterministic; without mean/std the values stay on the 0..255 scale.
  PipelineOptions plain;
  plain.resize = 64;
  plain.crop = 56;
  auto small = torch::randint(0, 256, {3, 28, 28}, torch::kByte);
  auto a = eval_pipeline(plain, false)->apply(small, rng);
  auto b = eval_pipeline(plain, false)->apply(small, rng);
  CHECK(a.sizes() == c10::IntArrayRef({3, 56, 56}));
  CHECK(torch::equal(a, b));
  CHECK(a.min().item<float>() >= 0);
  CHECK(a.max().item<float>() <= 255);
  plain.resize = 0;
  CHECK_THROWS_WITH(training_pipeline(plain)->apply(small, rng), Catch::Contains("RandomCrop(56)"));
}

TEST_CASE("Compose fuses ToFloat, PcaLighting and Normalize without changing results",
          "[transforms]") {
  std::vector<TransformPtr> steps{
      std::make_shared<RandomCrop>(20),
      std::make_shared<ToFloat>(),
      std::make_shared<PcaLighting>(imagenet_eigenvalues(), imagenet_eigenvectors(), 0.5),
      std::make_shared<Normalize>(std::vector<double>{120, 110, 100},
                                  std::vector<double>{60, 55, 50}),
      std::make_shared<RandomHorizontalFlip>(0.5),
      std::make_shared<Normalize>(std::vector<double>{1.5})};
  Compose fused(steps);
  for (auto dtype : {torch::kByte, torch::kFloat}) {
    for (uint64_t seed = 0; seed < 20; ++seed) {
      auto image = torch::randint(0, 256, {3, 31, 27}).to(dtype);
      Rng a(seed), b(seed);
      auto expected = image;
      for (const auto& step : steps) expected = step->apply(expected, b);
      auto got = fused.apply(image, a);
      CHECK(got.scalar_type() == torch::kFloat);
      CHECK(torch::allclose(got, expected, 1e-5, 1e-4));
      CHECK(a() == b());  // the same random draws
    }
  }
  // Ten-crop input [10, C, h, w].
  Compose ten({std::make_shared<TenCrop>(8), std::make_shared<ToFloat>(),
               std::make_shared<Normalize>(std::vector<double>{10, 20, 30})});
  Rng rng(0);
  auto image = torch::randint(0, 256, {3, 12, 12}, torch::kByte);
  auto out = ten.apply(image, rng);
  auto expected = TenCrop(8).apply(image, rng).to(torch::kFloat) -
                  torch::tensor({10.f, 20.f, 30.f}).view({3, 1, 1});
  CHECK(torch::allclose(out, expected));
  CHECK_THROWS_WITH(
      Compose({std::make_shared<Normalize>(std::vector<double>{1, 2})}).apply(image, rng),
      Catch::Contains("3 channels"));
}

}  // namespace test_transforms
