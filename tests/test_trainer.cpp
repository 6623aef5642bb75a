#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "train/checkpoint.h"
#include "train/config.h"
#include "train/trainer.h"
#include "tests/support.h"

#if ALEXNET_WITH_OPENCV
#include <opencv2/imgcodecs.hpp>
#endif

namespace fs = std::filesystem;
using alexnet::train::RunData;
using alexnet::train::RunOptions;
using alexnet::train::TrainConfig;

namespace {

using alexnet::testing::fresh_dir;

// Tiny RGB images whose class is a bright square at a class-dependent corner, over noise.
class PatternDataset : public alexnet::data::Dataset {
 public:
  PatternDataset(size_t n, int64_t classes, uint64_t seed) : classes_(classes) {
    std::mt19937_64 rng(seed);
    for (size_t i = 0; i < n; ++i) {
      const int64_t label = static_cast<int64_t>(i) % classes;
      auto image = torch::randint(0, 80, {3, 64, 64}, torch::TensorOptions().dtype(torch::kUInt8));
      const int64_t y = (label / 2) * 32, x = (label % 2) * 32;
      image.narrow(1, y, 32).narrow(2, x, 32).fill_(static_cast<int64_t>(180 + rng() % 60));
      images_.push_back(image);
      labels_.push_back(label);
    }
    for (int64_t c = 0; c < classes; ++c) names_.push_back("class" + std::to_string(c));
  }
  size_t size() const override { return images_.size(); }
  alexnet::data::Sample get(size_t i) const override { return {images_.at(i), labels_.at(i)}; }
  int64_t label(size_t i) const override { return labels_.at(i); }
  const std::vector<std::string>& class_names() const override { return names_; }
  std::string describe(size_t i) const override { return "pattern#" + std::to_string(i); }

 private:
  int64_t classes_;
  std::vector<torch::Tensor> images_;
  std::vector<int64_t> labels_;
  std::vector<std::string> names_;
};

RunData pattern_data(size_t train, size_t val) {
  torch::manual_seed(5);
  return {std::make_shared<PatternDataset>(train, 4, 1),
          std::make_shared<PatternDataset>(val, 4, 2)};
}

TrainConfig tiny_config() {
  TrainConfig c;
  c.model.init(alexnet::Init::kKaiming);
  c.data.resize = 0;
  c.data.crop = 64;
  c.data.flip = true;
  c.data.pca_lighting = false;
  c.data.normalize = "mean_std";
  c.data.stats_images = 0;
  c.data.workers = 1;
  c.optimizer.lr = 0.01;
  c.schedule.kind = "constant";
  c.epochs = 10;
  c.batch_size = 8;
  c.eval_batch_size = 8;
  c.devices = "cpu";
  c.threads = 2;
  c.log_interval = 2;
  c.seed = 3;
  return c;
}


RunOptions quiet(const fs::path& dir, std::ostringstream& log) {
  RunOptions options;
  options.run_dir = dir.string();
  options.log = &log;
  options.finalize = false;
  return options;
}

double mean(const std::vector<double>& v, size_t begin, size_t end) {
  double sum = 0;
  for (size_t i = begin; i < end; ++i) sum += v[i];
  return sum / static_cast<double>(end - begin);
}

}  // namespace

TEST_CASE("Training lowers the loss on tiny data and writes the run folder", "[trainer]") {
  const auto dir = fresh_dir("loss");
  auto config = tiny_config();
  config.max_steps = 12;
  config.epochs = 6;
  std::ostringstream log;
  const auto summary = alexnet::train::train(config, pattern_data(16, 8), quiet(dir, log));
  INFO(log.str());
  REQUIRE(summary.losses.size() == 12);
  CHECK(summary.steps == 12);
  CHECK(summary.epochs_completed == 6);
  CHECK(mean(summary.losses, 8, 12) < 0.7 * mean(summary.losses, 0, 4));

  // The effective configuration resolves "auto" and the statistics.
  const auto effective = alexnet::train::read_json_file((dir / "config.json").string());
  CHECK(effective["model"]["num_classes"] == 4);
  CHECK(effective["data"]["mean"].size() == 3);
  CHECK(effective["data"]["std"].size() == 3);
  CHECK_NOTHROW(alexnet::train::config_from_json(effective));

  std::ifstream metrics(dir / "metrics.jsonl");
  int steps = 0, epochs = 0;
  for (std::string line; std::getline(metrics, line);) {
    const auto record = nlohmann::json::parse(line);
    for (const char* key : {"epoch", "step", "loss", "lr", "train_top1_error", "train_top5_error",
                            "images_per_s", "elapsed_s"}) {
      CHECK(record.contains(key));
    }
    if (record["kind"] == "epoch") {
      ++epochs;
      CHECK(record.contains("val_top1_error"));
      CHECK(record.contains("val_top5_error"));
    } else {
      ++steps;
    }
  }
  CHECK(steps == 6);
  CHECK(epochs == 6);
  CHECK(fs::exists(dir / "checkpoints" / "last.pt"));
  CHECK(fs::exists(dir / "checkpoints" / "best.pt"));
  const auto last = alexnet::train::load_checkpoint((dir / "checkpoints" / "last.pt").string());
  CHECK(last.step == 12);
  CHECK(last.epoch == 6);
  CHECK(last.class_names.size() == 4);
  CHECK(last.image_size == 64);
  auto model = alexnet::train::model_from_checkpoint(last);
  CHECK(model->forward(torch::zeros({1, 3, 64, 64})).sizes() == torch::IntArrayRef({1, 4}));
}

TEST_CASE("A stopped and resumed run computes the same losses as an uninterrupted one",
          "[trainer]") {
  // 24 images, batches of 8: 3 steps per epoch; 5 steps cross an epoch end and a validation.
  const RunData data = pattern_data(24, 8);
  auto config = tiny_config();
  config.max_steps = 5;
  config.optimizer.rule = GENERATE(std::string("paper"), std::string("pytorch"));
  std::ostringstream log;

  const auto whole_dir = fresh_dir("whole");
  const auto whole = alexnet::train::train(config, data, quiet(whole_dir, log));
  REQUIRE(whole.losses.size() == 5);

  const auto dir = fresh_dir("resumed");
  std::vector<double> losses;
  // A stop request (what SIGINT does) after the first step.
  std::atomic<bool> stop{true};
  auto options = quiet(dir, log);
  options.stop = &stop;
  auto part = alexnet::train::train(config, data, options);
  CHECK(part.interrupted);
  REQUIRE(part.losses.size() == 1);
  losses = part.losses;
  // Then up to step 2 (inside the first epoch), then to the end.
  options.stop = nullptr;
  options.resume = true;
  auto shorter = config;
  shorter.max_steps = 2;
  part = alexnet::train::train(shorter, data, options);
  CHECK(part.first_step == 1);
  losses.insert(losses.end(), part.losses.begin(), part.losses.end());
  part = alexnet::train::train(config, data, options);
  CHECK(part.first_step == 2);
  losses.insert(losses.end(), part.losses.begin(), part.losses.end());

  // Exact equality: one process, the same thread count and the same sequence of operations on
  // the same values give the same bits, so any difference is a resume that lost something (the
  // momentum buffers, the random stream, the loader position), never rounding.
  INFO(log.str());
  REQUIRE(losses.size() == whole.losses.size());
  for (size_t i = 0; i < losses.size(); ++i) {
    INFO("step " << i + 1);
    CHECK(losses[i] == whole.losses[i]);
  }
  const auto a = alexnet::train::load_checkpoint((whole_dir / "checkpoints/last.pt").string());
  const auto b = alexnet::train::load_checkpoint((dir / "checkpoints/last.pt").string());
  CHECK(torch::equal(a.model["fc8.weight"], b.model["fc8.weight"]));
}

TEST_CASE("A NaN or infinite loss stops the run and leaves the last good checkpoint", "[trainer]") {
  const auto dir = fresh_dir("nan");
  auto config = tiny_config();
  config.optimizer.lr = 1e8;
  config.max_steps = 20;
  config.checkpoint_interval = 1;
  std::ostringstream log;
  std::string message;
  try {
    alexnet::train::train(config, pattern_data(16, 8), quiet(dir, log));
  } catch (const alexnet::train::DivergedError& e) {  // a std::runtime_error of its own kind
    message = e.what();
  }
  INFO(log.str());
  CHECK_THAT(message, Catch::Contains("loss is") && Catch::Contains("last good checkpoint"));
  const auto last = (dir / "checkpoints" / "last.pt").string();
  if (fs::exists(last)) {
    const auto checkpoint = alexnet::train::load_checkpoint(last);
    for (const auto& item : checkpoint.model) {
      INFO(item.key());
      CHECK(torch::isfinite(item.value()).all().item<bool>());
    }
  }
}

#if ALEXNET_WITH_OPENCV
TEST_CASE("configs/imagenet.json starts training on an ImageNet-layout folder", "[trainer]") {
  const auto root = fresh_dir("imagenet_folder");
  torch::manual_seed(0);
  for (const std::string split : {"train", "val"}) {
    for (const std::string cls : {"n01440764", "n01443537"}) {
      fs::create_directories(root / split / cls);
      for (int i = 0; i < (split == "train" ? 3 : 1); ++i) {
        auto pixels = torch::randint(0, 255, {90, 120, 3}, torch::kUInt8);
        cv::Mat image(90, 120, CV_8UC3, pixels.data_ptr<uint8_t>());
        cv::imwrite((root / split / cls / (std::to_string(i) + ".JPEG")).string(), image);
      }
    }
  }
  auto json =
      alexnet::train::read_json_file(std::string(ALEXNET_SOURCE_DIR) + "/configs/imagenet.json");
  alexnet::train::set_config_value(json, "data.source", root.string());
  alexnet::train::set_config_value(json, "max_steps", "1");
  alexnet::train::set_config_value(json, "batch_size", "2");
  alexnet::train::set_config_value(json, "data.workers", "1");
  auto config = alexnet::train::config_from_json(json);
  const auto data = alexnet::train::open_run_data(config.data);
  CHECK(data.train->size() == 6);
  CHECK(data.val->size() == 2);
  const auto dir = fresh_dir("imagenet_run");
  std::ostringstream log;
  const auto summary = alexnet::train::train(config, data, quiet(dir, log));
  INFO(log.str());
  CHECK(summary.steps == 1);
  REQUIRE(summary.losses.size() == 1);
  CHECK(std::isfinite(summary.losses[0]));
  const auto effective = alexnet::train::read_json_file((dir / "config.json").string());
  CHECK(effective["model"]["num_classes"] == 2);
  CHECK(effective["model"]["init"] == "paper");
  CHECK(effective["data"]["eigenvalues"].size() == 3);
}
#endif
