#include <cmath>

#include <torch/torch.h>
#include <catch2/catch.hpp>

#include "data/dataset.h"
#include "data/loader.h"
#include "train/metrics.h"
#include "transforms/transforms.h"

namespace test_metrics {

using namespace alexnet::train;

namespace {

// Five samples of three classes: true labels and the class the hand-made logits pick.
const std::vector<int64_t> kLabels{0, 0, 1, 2, 2};
const std::vector<int64_t> kPicked{0, 1, 1, 2, 0};

torch::Tensor hand_logits() {
  return torch::tensor({{3.0, 1.0, 0.0},    // 0 -> 0
                        {0.5, 2.0, -1.0},   // 0 -> 1
                        {-1.0, 4.0, 1.0},   // 1 -> 1
                        {0.0, 0.1, 0.2},    // 2 -> 2
                        {9.0, 0.0, 1.0}});  // 2 -> 0
}

// Sample i is a 1 x 2 x 2 image filled with the class the model below will predict for it.
class PickedDataset : public alexnet::data::Dataset {
 public:
  size_t size() const override { return kLabels.size(); }
  alexnet::data::Sample get(size_t i) const override {
    return {torch::full({1, 2, 2}, kPicked[i], torch::kUInt8), kLabels[i]};
  }
  int64_t label(size_t i) const override { return kLabels[i]; }
  const std::vector<std::string>& class_names() const override { return names_; }
  std::string sample_source(size_t i) const override { return "picked#" + std::to_string(i); }

 private:
  std::vector<std::string> names_{"zero", "one", "two"};
};

// Ten copies of the image, [10, C, H, W], as TenCrop's output is shaped.
class TenCopies : public alexnet::transforms::Transform {
 public:
  torch::Tensor apply(torch::Tensor image, alexnet::transforms::Rng&) const override {
    return image.unsqueeze(0).expand({10, -1, -1, -1}).contiguous();
  }
  std::string name() const override { return "TenCopies"; }
};

}  // namespace

TEST_CASE("confusion_counts counts (true, predicted) pairs of hand-made logits", "[metrics]") {
  const auto confusion = confusion_counts(hand_logits(), torch::tensor(kLabels));
  CHECK(confusion.sizes() == torch::IntArrayRef({3, 3}));
  CHECK(confusion.scalar_type() == torch::kInt64);
  const auto expected = torch::tensor({{1, 1, 0}, {0, 1, 0}, {1, 0, 1}}, torch::kInt64);
  CHECK(torch::equal(confusion, expected));
  CHECK_THROWS_WITH(confusion_counts(hand_logits(), torch::tensor({0, 0, 1, 2, 3}, torch::kInt64)),
                    Catch::Contains("[0, 3)"));
}

TEST_CASE("per-class accuracy is the diagonal over the row sums; NaN for an absent class",
          "[metrics]") {
  EvalResult result;
  result.confusion =
      torch::tensor({{1, 1, 0, 0}, {0, 1, 0, 0}, {1, 0, 1, 2}, {0, 0, 0, 0}}, torch::kInt64);
  const auto accuracy = result.per_class_accuracy();
  REQUIRE(accuracy.sizes() == torch::IntArrayRef({4}));
  CHECK(accuracy[0].item<double>() == Approx(0.5));
  CHECK(accuracy[1].item<double>() == Approx(1.0));
  CHECK(accuracy[2].item<double>() == Approx(0.25));
  CHECK(std::isnan(accuracy[3].item<double>()));

  const auto json = result.breakdown_json({"a", "b", "c", "d"});
  CHECK(json.at("per_class").size() == 4);
  CHECK(json.at("per_class")[2].at("class") == "c");
  CHECK(json.at("per_class")[2].at("samples") == 4);
  CHECK(json.at("per_class")[3].at("top1_accuracy").is_null());
  CHECK(json.at("confusion")[2] == nlohmann::json({1, 0, 1, 2}));
  CHECK_THROWS_WITH(result.breakdown_json({"a", "b"}), Catch::Contains("2 class names"));
}

TEST_CASE("ConfidentMistakes keeps the most confident wrong predictions, best first", "[metrics]") {
  ConfidentMistakes mistakes(2);
  const auto probabilities = torch::softmax(hand_logits(), /*dim=*/1);
  mistakes.add(probabilities.slice(0, 0, 2), torch::tensor({0, 0}, torch::kInt64), {10, 11});
  mistakes.add(probabilities.slice(0, 2), torch::tensor({1, 2, 2}, torch::kInt64), {12, 13, 14});
  REQUIRE(mistakes.mistakes().size() == 2);
  // Sample 14 (2 -> 0 with logit 9) is the surest mistake, then sample 11 (0 -> 1).
  CHECK(mistakes.mistakes()[0].index == 14);
  CHECK(mistakes.mistakes()[0].label == 2);
  CHECK(mistakes.mistakes()[0].predicted == 0);
  CHECK(mistakes.mistakes()[0].probability == Approx(probabilities[4][0].item<double>()));
  CHECK(mistakes.mistakes()[1].index == 11);
  CHECK(mistakes.mistakes()[1].predicted == 1);
}

TEST_CASE("evaluate gives the confusion matrix over every batch, with ten crops too", "[metrics]") {
  auto dataset = std::make_shared<PickedDataset>();
  alexnet::data::LoaderOptions options;
  options.batch_size = 2;
  options.workers = 0;
  options.shuffle = false;
  // The logits pick the class each image is filled with.
  auto forward = [](const torch::Tensor& x) {
    return 5.0 * torch::one_hot(x.select(1, 0).select(1, 0).select(1, 0).to(torch::kLong), 3)
                     .to(torch::kFloat32);
  };
  const auto expected = torch::tensor({{1, 1, 0}, {0, 1, 0}, {1, 0, 1}}, torch::kInt64);

  alexnet::data::Loader loader(dataset, nullptr, options);
  ConfidentMistakes mistakes(10);
  const auto result = evaluate(forward, loader, torch::kCPU, {}, &mistakes);
  CHECK(result.samples == 5);
  CHECK(result.top1_error == Approx(0.4));
  REQUIRE(result.confusion.defined());
  CHECK(torch::equal(result.confusion, expected));
  REQUIRE(mistakes.mistakes().size() == 2);
  CHECK(mistakes.mistakes()[0].index == 1);
  CHECK(mistakes.mistakes()[1].index == 4);

  // Ten identical crops score as one.
  alexnet::data::Loader crops(dataset, std::make_shared<TenCopies>(), options);
  const auto averaged = evaluate(forward, crops, torch::kCPU);
  CHECK(torch::equal(averaged.confusion, expected));
}

}  // namespace test_metrics
