#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "model/alexnet.h"
#include "tests/support.h"
#include "tests/train_support.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/exported_model.h"
#include "train/metrics.h"
#include "train/precision.h"
#include "train/run_data.h"
#include "train/trainer.h"
#include "transforms/transforms.h"

#if ALEXNET_WITH_OPENCV
#include <opencv2/imgcodecs.hpp>
#endif

namespace test_trainer {

namespace fs = std::filesystem;
using alexnet::train::RunData;
using alexnet::train::TrainConfig;
using namespace alexnet::testing;

namespace {

RunData pattern_data(size_t train, size_t val) {
  torch::manual_seed(5);
  return {std::make_shared<CornerSquaresDataset>(train, 4, 1),
          std::make_shared<CornerSquaresDataset>(val, 4, 2)};
}

// small_train_config() stopping after `max_steps` steps (0: after its epochs), with a metrics
// record every two steps.
TrainConfig tiny_config(int64_t max_steps = 0) {
  TrainConfig c = small_train_config();
  c.max_steps = max_steps;
  c.log_interval = 2;
  return c;
}

// tiny_config(max_steps) with a metrics record for each step.
TrainConfig logging_every_step(int64_t max_steps) {
  TrainConfig c = tiny_config(max_steps);
  c.log_interval = 1;
  return c;
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
  // The paper's width: on these noisy images a quarter-width net's loss is too noisy over 12
  // steps for the comparison below. Two epochs of six steps: every epoch end writes the
  // paper-sized checkpoint (most of this test's time).
  config.model.width(1.0);
  config.max_steps = 12;
  config.epochs = 2;
  std::ostringstream log;
  const auto summary = alexnet::train::train(config, pattern_data(48, 8), quiet_run(dir, log));
  INFO(log.str());
  REQUIRE(summary.losses.size() == 12);
  CHECK(summary.steps == 12);
  CHECK(summary.epochs_completed == 2);
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
  CHECK(epochs == 2);
  // The same records as a table: a header, then one row each, absent fields empty.
  std::ifstream csv(dir / "metrics.csv");
  std::string header, row;
  std::getline(csv, header);
  CHECK(header == alexnet::train::metrics_csv_header());
  int rows = 0;
  for (; std::getline(csv, row); ++rows) {
    CHECK(std::count(row.begin(), row.end(), ',') ==
          static_cast<long>(alexnet::train::metrics_csv_columns().size()) - 1);
  }
  CHECK(rows == 8);
  CHECK(fs::exists(dir / "checkpoints" / "last.pt"));
  CHECK(fs::exists(dir / "checkpoints" / "best.pt"));
  const auto last = alexnet::train::load_checkpoint((dir / "checkpoints" / "last.pt").string());
  CHECK(last.step == 12);
  CHECK(last.epoch == 2);
  CHECK(last.class_names.size() == 4);
  CHECK(last.image_size == 64);
  auto model = alexnet::train::model_from_checkpoint(last);
  CHECK(model->forward(torch::zeros({1, 3, 64, 64})).sizes() == torch::IntArrayRef({1, 4}));
}

TEST_CASE("A stopped and resumed run computes the same losses as an uninterrupted one",
          "[trainer]") {
  // 24 images, batches of 8: 3 steps per epoch; 5 steps cross an epoch end and a validation.
  const RunData data = pattern_data(24, 8);
  auto config = tiny_config(/*max_steps=*/5);
  config.optimizer.rule =
      GENERATE(alexnet::train::SgdRule::kPaper, alexnet::train::SgdRule::kPytorch);
  std::ostringstream log;

  const auto whole_dir = fresh_dir("whole");
  const auto whole = alexnet::train::train(config, data, quiet_run(whole_dir, log));
  REQUIRE(whole.losses.size() == 5);

  const auto dir = fresh_dir("resumed");
  std::vector<double> losses;
  // A stop request (what SIGINT does) after the first step.
  std::atomic<bool> stop{true};
  auto options = quiet_run(dir, log);
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

// How a run resumed on another device layout is compared with an uninterrupted one.
//
// The two-device form (columns on cpu,cpu) and the one-device form (grouped convolutions)
// compute the same function with sums split differently, so in float64 (unit roundoff 1.1e-16)
// each gradient is off by at most n * u < 1.1e-11 of its terms' magnitudes (n < 10^5: fc6's
// 9216 inputs, conv1's weight gradient over 8 images of 15 x 15 positions). Three SGD steps
// with momentum 0.9 add at most ten times that per step, and cancellation between terms of
// opposite sign can make it a hundred times larger relative to the result: about 1e-8 of the
// distance the weights travelled, at worst (the argument of kTwoDeviceTolerance in
// test_alexnet.cpp and kMovementTolerance in test_distributed.cpp). A resume that lost the
// momentum buffers, or put them on the wrong rows, changes the third update by a large
// fraction of itself: a difference of the order of the distance travelled.
constexpr double kLayoutTolerance = 1e-8;

TEST_CASE("A run trained on two devices resumes on one", "[trainer]") {
  const RunData data = pattern_data(24, 8);
  auto config = tiny_config();
  config.model.columns(2).dropout(0.0);  // no random masks, which the layouts draw differently
  config.data.flip = false;
  config.optimizer.rule =
      GENERATE(alexnet::train::SgdRule::kPaper, alexnet::train::SgdRule::kPytorch);
  config.max_steps = 3;
  std::ostringstream log;
  auto options_for = [&](const fs::path& dir) {
    auto options = quiet_run(dir, log);
    options.dtype = torch::kFloat64;
    return options;
  };

  const auto whole_dir = fresh_dir("layout_whole");
  const auto whole = alexnet::train::train(config, data, options_for(whole_dir));
  REQUIRE(whole.losses.size() == 3);

  const auto dir = fresh_dir("layout_resumed");
  auto two = config;
  two.devices = "cpu,cpu";
  two.max_steps = 2;
  auto options = options_for(dir);
  auto part = alexnet::train::train(two, data, options);
  REQUIRE(part.losses.size() == 2);
  std::vector<double> losses = part.losses;
  CHECK(alexnet::train::load_checkpoint((dir / "checkpoints/last.pt").string()).resolved_devices ==
        "cpu,cpu");
  options.resume = true;
  part = alexnet::train::train(config, data, options);
  INFO(log.str());
  CHECK_THAT(log.str(), Catch::Contains("trained on devices cpu,cpu; continuing on cpu"));
  REQUIRE(part.first_step == 2);
  losses.insert(losses.end(), part.losses.begin(), part.losses.end());
  REQUIRE(losses.size() == 3);
  for (size_t i = 0; i < losses.size(); ++i) {
    INFO("step " << i + 1 << ": " << losses[i] << " against " << whole.losses[i]);
    CHECK(std::abs(losses[i] - whole.losses[i]) <= kLayoutTolerance * whole.losses[i]);
  }

  // The weights, against the distance they travelled from the seed's initial values.
  torch::manual_seed(config.seed);
  const auto initial =
      alexnet::AlexNet(alexnet::AlexNetOptions(config.model).num_classes(4))->single_device_state();
  const auto a = alexnet::train::load_checkpoint((whole_dir / "checkpoints/last.pt").string());
  const auto b = alexnet::train::load_checkpoint((dir / "checkpoints/last.pt").string());
  double worst = 0.0;
  for (const auto& item : a.model) {
    const auto start = initial[item.key()].to(torch::kFloat64);
    const double moved = (item.value() - start).abs().max().item<double>();
    REQUIRE(moved > 0.0);
    worst =
        std::max(worst, (b.model[item.key()] - item.value()).abs().max().item<double>() / moved);
  }
  INFO("largest weight difference: " << worst << " of the distance travelled");
  CHECK(worst < kLayoutTolerance);
  // The momentum buffers, under single-device names, against their own size.
  REQUIRE(b.optimizer.keys() == a.optimizer.keys());
  double worst_buffer = 0.0;
  for (const auto& item : a.optimizer) {
    const double scale = item.value().abs().max().item<double>();
    if (scale == 0.0) continue;
    worst_buffer = std::max(
        worst_buffer, (b.optimizer[item.key()] - item.value()).abs().max().item<double>() / scale);
  }
  INFO("largest momentum difference: " << worst_buffer << " of the buffer's size");
  CHECK(worst_buffer < kLayoutTolerance);
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
    alexnet::train::train(config, pattern_data(16, 8), quiet_run(dir, log));
  } catch (const alexnet::train::DivergedError& e) {  // a std::runtime_error of its own kind
    message = e.what();
  }
  INFO(log.str());
  // The loss, or the weights before a checkpoint, are found non-finite first.
  CHECK_THAT(message, (Catch::Contains("loss is") || Catch::Contains("holds NaN")) &&
                          Catch::Contains("last good checkpoint"));
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
TEST_CASE("precision bf16 trains in bfloat16 with float32 weights; fp16 needs CUDA",
          "[trainer][precision]") {
  auto config = tiny_config(/*max_steps=*/2);
  config.precision = alexnet::train::Precision::kBFloat16;
  std::ostringstream log;
  const auto dir = fresh_dir("bf16");
  const auto summary = alexnet::train::train(config, pattern_data(16, 8), quiet_run(dir, log));
  INFO(log.str());
  REQUIRE(summary.losses.size() == 2);
  for (double loss : summary.losses) CHECK(std::isfinite(loss));
  CHECK_THAT(log.str(), Catch::Contains("precision bf16"));
  // Emulated exactly where the CPU has no bfloat16 arithmetic, and the log says which.
  CHECK_THAT(log.str(), Catch::Contains(alexnet::train::cpu_has_native_bf16()
                                            ? "precision bf16 autocast"
                                            : "precision bf16 emulated in fp32"));
  const auto checkpoint = alexnet::train::load_checkpoint((dir / "checkpoints/last.pt").string());
  CHECK(checkpoint.model["conv1.weight"].scalar_type() == torch::kFloat);
  std::ifstream saved(dir / "config.json");
  CHECK(nlohmann::json::parse(saved)["precision"] == "bf16");

  config.precision = alexnet::train::Precision::kFloat16;
  CHECK_THROWS_WITH(
      alexnet::train::train(config, pattern_data(16, 8), quiet_run(fresh_dir("fp16"), log)),
      Catch::Contains("fp16") && Catch::Contains("CUDA"));
}

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
  const auto data = alexnet::train::open_run_data(config.data, config.seed);
  CHECK(data.train->size() == 6);
  CHECK(data.val->size() == 2);
  const auto dir = fresh_dir("imagenet_run");
  std::ostringstream log;
  const auto summary = alexnet::train::train(config, data, quiet_run(dir, log));
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

namespace {

// The steps of metrics.jsonl's step records, in file order.
std::vector<int64_t> logged_steps(const fs::path& path) {
  std::vector<int64_t> steps;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    const auto record = nlohmann::json::parse(line);
    if (record["kind"] == "step") steps.push_back(record["step"].get<int64_t>());
  }
  return steps;
}

// The steps of metrics.csv's step rows, after checking its header.
std::vector<int64_t> csv_steps(const fs::path& path) {
  std::vector<int64_t> steps;
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  CHECK(line == alexnet::train::metrics_csv_header());
  while (std::getline(in, line)) {
    // Columns kind, step, ...
    if (line.rfind("step,", 0) == 0) steps.push_back(std::stoll(line.substr(5)));
  }
  return steps;
}

}  // namespace

TEST_CASE("grey_statistics are the statistics of the grey images MatchChannels makes",
          "[trainer]") {
  // Channels of very different levels, correlated through a shared base: wrong luma weights
  // move the mean, and a wrong covariance scale the std, far beyond the tolerance below.
  torch::manual_seed(11);
  InMemoryDataset rgb("rgb", {"a"}), grey("grey", {"a"});
  const alexnet::transforms::MatchChannels to_grey(1);
  alexnet::transforms::Rng rng(0);
  const auto u8 = torch::TensorOptions().dtype(torch::kInt32);
  for (int i = 0; i < 8; ++i) {
    const auto base = torch::randint(0, 60, {1, 16, 16}, u8);
    const auto image = torch::cat({base * 3 + 70, base / 2 + torch::randint(0, 20, {1, 16, 16}, u8),
                                   torch::randint(100, 140, {1, 16, 16}, u8)})
                           .to(torch::kUInt8);
    rgb.add(image, 0);
    grey.add(to_grey.apply(image, rng), 0);
  }
  const auto expected = alexnet::data::compute_stats(grey, 0, 0);
  const auto actual = alexnet::train::grey_statistics(alexnet::data::compute_stats(rgb, 0, 0));
  REQUIRE(actual.mean.size() == 1);
  REQUIRE(actual.std.size() == 1);
  CHECK_FALSE(actual.eigenvalues.defined());
  // MatchChannels rounds every grey level to a whole one: that moves the mean, and the RMS
  // deviation from it, by at most 0.5.
  CHECK(std::abs(actual.mean[0] - expected.mean[0]) <= 0.5);
  CHECK(std::abs(actual.std[0] - expected.std[0]) <= 0.5);
}

TEST_CASE("A model of one input channel trains on grey images and exports their statistics",
          "[trainer]") {
  const auto dir = fresh_dir("grey");
  auto config = tiny_config(2);
  config.model.in_channels(1);
  std::ostringstream log;
  auto options = quiet_run(dir, log);
  options.finalize = true;
  const auto data = pattern_data(16, 8);
  const auto summary = alexnet::train::train(config, data, options);
  INFO(log.str());
  CHECK(summary.steps == 2);
  const auto last = alexnet::train::load_checkpoint((dir / "checkpoints" / "last.pt").string());
  const auto rgb = alexnet::data::compute_stats(*data.train, 0, config.seed);
  const auto grey = alexnet::train::grey_statistics(rgb);
  CHECK(last.mean == grey.mean);
  CHECK(last.std == grey.std);
  auto model = alexnet::train::model_from_checkpoint(last);
  CHECK(model->forward(torch::zeros({2, 1, 64, 64})).sizes() == torch::IntArrayRef({2, 4}));
  const auto exported = alexnet::train::load_exported_model((dir / "model.pt").string());
  CHECK(exported.in_channels == 1);
  CHECK(exported.info.mean == grey.mean);
  CHECK(exported.pipeline_options().channels == 1);

  // PCA lighting shifts colours: refused for a grey model, naming the key.
  nlohmann::json json = alexnet::train::to_json(config);
  json["data"]["pca_lighting"] = true;
  CHECK_THROWS_WITH(alexnet::train::config_from_json(json),
                    Catch::Contains("data.pca_lighting") && Catch::Contains("in_channels is 1"));
  json["data"]["pca_lighting"] = false;
  json["data"]["mean"] = {1.0, 2.0, 3.0};
  CHECK_THROWS_WITH(alexnet::train::config_from_json(json),
                    Catch::Contains("data.mean") && Catch::Contains("in_channels is 1"));
}

TEST_CASE("A folder holding a run is refused; --overwrite starts afresh", "[trainer]") {
  const auto dir = fresh_dir("reuse");
  auto config = logging_every_step(1);
  std::ostringstream log;
  alexnet::train::train(config, pattern_data(16, 8), quiet_run(dir, log));
  const std::string before = read_text(dir / "metrics.jsonl");
  REQUIRE_FALSE(before.empty());
  CHECK_THROWS_WITH(alexnet::train::train(config, pattern_data(16, 8), quiet_run(dir, log)),
                    Catch::Contains("already holds a run") && Catch::Contains("--overwrite"));
  CHECK(read_text(dir / "metrics.jsonl") == before);
  auto options = quiet_run(dir, log);
  options.overwrite = true;
  // An --overwrite whose settings are refused leaves the earlier run as it was.
  auto refused = config;
  refused.model.num_classes(5);
  refused.num_classes_auto = false;
  CHECK_THROWS_WITH(alexnet::train::train(refused, pattern_data(16, 8), options),
                    Catch::Contains("num_classes"));
  CHECK(read_text(dir / "metrics.jsonl") == before);
  CHECK(fs::exists(dir / "checkpoints" / "last.pt"));
  config.max_steps = 2;
  const auto summary = alexnet::train::train(config, pattern_data(16, 8), options);
  CHECK(summary.steps == 2);
  CHECK(logged_steps(dir / "metrics.jsonl") == std::vector<int64_t>{1, 2});
}

TEST_CASE("A resume with a changed computation is refused before anything is written",
          "[trainer]") {
  const auto dir = fresh_dir("changed");
  auto config = tiny_config(/*max_steps=*/2);
  std::ostringstream log;
  alexnet::train::train(config, pattern_data(16, 8), quiet_run(dir, log));
  const std::string config_before = read_text(dir / "config.json");
  const std::string metrics_before = read_text(dir / "metrics.jsonl");
  auto options = quiet_run(dir, log, /*resume=*/true);
  // As `alexnet train --resume` does: the run's config.json with a flag on top.
  auto resumed = alexnet::train::config_from_json(nlohmann::json::parse(config_before));
  resumed.max_steps = 4;
  resumed.batch_size = 4;
  CHECK_THROWS_WITH(alexnet::train::train(resumed, pattern_data(16, 8), options),
                    Catch::Contains("'batch_size' was 8") && Catch::Contains("is 4"));
  resumed.batch_size = 8;
  resumed.model.lrn(false);
  CHECK_THROWS_WITH(alexnet::train::train(resumed, pattern_data(16, 8), options),
                    Catch::Contains("'model.lrn' was true"));
  CHECK(read_text(dir / "config.json") == config_before);
  CHECK(read_text(dir / "metrics.jsonl") == metrics_before);
  resumed.model.lrn(true);
  resumed.epochs = 20;  // may change
  CHECK(alexnet::train::train(resumed, pattern_data(16, 8), options).steps == 4);
}

TEST_CASE("A model with another number of classes than the data is refused before step 1",
          "[trainer]") {
  const auto dir = fresh_dir("classes");
  auto config = tiny_config(/*max_steps=*/1);
  std::ostringstream log;
  for (int64_t classes : {3, 10}) {
    config.model.num_classes(classes);
    config.num_classes_auto = false;
    CHECK_THROWS_WITH(alexnet::train::train(config, pattern_data(16, 8), quiet_run(dir, log)),
                      Catch::Contains("model.num_classes is " + std::to_string(classes)) &&
                          Catch::Contains("have 4 classes"));
  }
  CHECK_FALSE(fs::exists(dir / "checkpoints" / "last.pt"));
}

TEST_CASE("After a crash, a resumed run logs every step once and removes stale files",
          "[trainer]") {
  const auto dir = fresh_dir("crash");
  auto config = logging_every_step(2);
  std::ostringstream log;
  alexnet::train::train(config, pattern_data(16, 8), quiet_run(dir, log));
  // What kill -9 during step 3's checkpoint leaves: step 3 logged, a half-written
  // temporary checkpoint, and a torn metrics line.
  std::ofstream(dir / "metrics.jsonl", std::ios::app) << "{\"kind\":\"step\",\"step\":3}\n{\"ki";
  std::ofstream(dir / "metrics.csv", std::ios::app) << "step,3,0.5\nst";
  std::ofstream(dir / "checkpoints" / "last.pt.x1y2z3.tmp") << "half";
  auto options = quiet_run(dir, log, /*resume=*/true);
  config.max_steps = 4;
  alexnet::train::train(config, pattern_data(16, 8), options);
  CHECK(logged_steps(dir / "metrics.jsonl") == std::vector<int64_t>{1, 2, 3, 4});
  // metrics.csv holds the same records as the JSON lines.
  CHECK(csv_steps(dir / "metrics.csv") == std::vector<int64_t>{1, 2, 3, 4});
  CHECK_FALSE(fs::exists(dir / "checkpoints" / "last.pt.x1y2z3.tmp"));
  CHECK_THAT(log.str(), Catch::Contains("not a whole JSON record"));
}

namespace {

// A validation set that requests a stop when it is read (as Ctrl-C during validation).
class StoppingDataset : public alexnet::data::Dataset {
 public:
  StoppingDataset(alexnet::data::DatasetPtr inner, std::atomic<bool>& stop)
      : inner_(std::move(inner)), stop_(stop) {}
  size_t size() const override { return inner_->size(); }
  alexnet::data::Sample get(size_t i) const override {
    stop_ = true;
    return inner_->get(i);
  }
  int64_t label(size_t i) const override { return inner_->label(i); }
  const std::vector<std::string>& class_names() const override { return inner_->class_names(); }
  std::string sample_source(size_t i) const override { return inner_->sample_source(i); }

 private:
  alexnet::data::DatasetPtr inner_;
  std::atomic<bool>& stop_;
};

}  // namespace

TEST_CASE("A stop during validation is honoured at once and the resumed run validates",
          "[trainer]") {
  const auto dir = fresh_dir("validation_stop");
  auto config = tiny_config();
  config.epochs = 1;
  config.data.workers = 0;
  std::ostringstream log;
  std::atomic<bool> stop{false};
  RunData data = pattern_data(16, 16);
  data.val = std::make_shared<StoppingDataset>(data.val, stop);
  auto options = quiet_run(dir, log);
  options.stop = &stop;
  const auto stopped = alexnet::train::train(config, data, options);
  INFO(log.str());
  CHECK(stopped.interrupted);
  CHECK(stopped.epochs_completed == 0);
  CHECK_THAT(log.str(), Catch::Contains("stopped while validating epoch 1"));

  stop = false;
  options.stop = nullptr;
  options.resume = true;
  const auto resumed = alexnet::train::train(config, pattern_data(16, 16), options);
  CHECK(resumed.epochs_completed == 1);
  CHECK(resumed.losses.empty());  // the epoch's steps were done before the stop
  CHECK(resumed.last_val_top1_error <= 1.0);
  // One record of the epoch; no images/s, as the resumed run trained none of its images.
  std::vector<nlohmann::json> epoch_records;
  std::ifstream metrics(dir / "metrics.jsonl");
  for (std::string line; std::getline(metrics, line);) {
    const auto record = nlohmann::json::parse(line);
    if (record["kind"] == "epoch") epoch_records.push_back(record);
  }
  REQUIRE(epoch_records.size() == 1);
  CHECK_FALSE(epoch_records[0].contains("images_per_s"));
  CHECK(epoch_records[0].contains("val_top1_error"));
}

#if ALEXNET_WITH_OPENCV
namespace {

// Where each sample of `dataset` comes from, in its order.
std::vector<std::string> origins(const alexnet::data::Dataset& dataset) {
  std::vector<std::string> out;
  for (size_t i = 0; i < dataset.size(); ++i) out.push_back(dataset.sample_source(i));
  return out;
}

std::vector<size_t> class_counts(const alexnet::data::Dataset& dataset) {
  std::vector<size_t> counts(dataset.class_names().size(), 0);
  for (size_t i = 0; i < dataset.size(); ++i) ++counts[static_cast<size_t>(dataset.label(i))];
  return counts;
}

}  // namespace

TEST_CASE("data.holdout and the limits draw every class in proportion with the run's seed",
          "[trainer][stratified]") {
  // An image folder, sorted by class as image folders are: 12 a, 6 b, 2 c.
  const auto root = fresh_dir("class_sorted");
  torch::manual_seed(0);
  for (const auto& [name, count] :
       std::vector<std::pair<std::string, int>>{{"a", 12}, {"b", 6}, {"c", 2}}) {
    fs::create_directories(root / name);
    for (int i = 0; i < count; ++i) {
      auto pixels = torch::randint(0, 255, {8, 8, 3}, torch::kUInt8);
      cv::imwrite((root / name / (std::to_string(i) + ".png")).string(),
                  cv::Mat(8, 8, CV_8UC3, pixels.data_ptr<uint8_t>()));
    }
  }
  alexnet::train::DataConfig config;
  config.source = root.string();
  config.decode_size = 0;
  config.holdout = 10;
  const auto run = alexnet::train::open_run_data(config, /*seed=*/0);
  CHECK(class_counts(*run.val) == std::vector<size_t>{6, 3, 1});
  CHECK(class_counts(*run.train) == std::vector<size_t>{6, 3, 1});
  auto all = origins(*run.train);
  const auto held_out = origins(*run.val);
  all.insert(all.end(), held_out.begin(), held_out.end());
  std::sort(all.begin(), all.end());
  CHECK(std::adjacent_find(all.begin(), all.end()) == all.end());  // disjoint
  CHECK(all.size() == 20);

  // The same seed selects the same samples, another seed others.
  CHECK(origins(*alexnet::train::open_run_data(config, 0).val) == held_out);
  CHECK(origins(*alexnet::train::open_run_data(config, 1).val) != held_out);

  // The limits keep every class too, taken from the split above.
  config.train_limit = 5;
  config.val_limit = 5;
  const auto limited = alexnet::train::open_run_data(config, 0);
  CHECK(class_counts(*limited.train) == std::vector<size_t>{3, 2, 0});
  CHECK(class_counts(*limited.val) == std::vector<size_t>{3, 2, 0});
  for (const auto& origin : origins(*limited.val)) {
    CHECK(std::find(held_out.begin(), held_out.end(), origin) != held_out.end());
  }
  fs::remove_all(root);
}
#endif

}  // namespace test_trainer
