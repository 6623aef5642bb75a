#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>

#include "model/alexnet.h"
#include "tests/support.h"
#include "tests/train_support.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/export.h"
#include "train/init_from.h"
#include "train/layer_settings.h"
#include "train/optimizer.h"
#include "train/trainer.h"

namespace test_finetune {

namespace fs = std::filesystem;
using alexnet::AlexNet;
using alexnet::AlexNetOptions;
using alexnet::train::RunData;
using alexnet::train::TrainConfig;
using TensorDict = torch::OrderedDict<std::string, torch::Tensor>;
using namespace alexnet::testing;

const std::vector<std::string> kConvs{"conv1", "conv2", "conv3", "conv4", "conv5"};

// A quarter of the paper's width (checkpoints of 14 MB), Kaiming init.
AlexNetOptions small_options(int64_t classes) {
  return AlexNetOptions().width(0.25).init(alexnet::Init::kKaiming).num_classes(classes);
}

AlexNet seeded_model(const AlexNetOptions& options, uint64_t seed) {
  torch::manual_seed(seed);
  return AlexNet(options);
}

// The parameters as they are now, copied (single-device names).
TensorDict snapshot(const AlexNet& model) {
  TensorDict copy;
  for (const auto& item : model->single_device_state()) {
    copy.insert(item.key(), item.value().detach().clone());
  }
  return copy;
}

bool same_layer(const TensorDict& a, const TensorDict& b, const std::string& layer) {
  return torch::equal(a[layer + ".weight"], b[layer + ".weight"]) &&
         torch::equal(a[layer + ".bias"], b[layer + ".bias"]);
}

// A checkpoint holding `model`'s parameters, as the trainer writes one.
void write_checkpoint(const AlexNet& model, const std::string& path) {
  alexnet::train::Checkpoint checkpoint;
  checkpoint.config = {{"model", alexnet::train::model_options_to_json(model->options)}};
  checkpoint.model = snapshot(model);
  checkpoint.resolved_devices = "cpu";
  alexnet::train::save_checkpoint(checkpoint, path);
}

std::string message_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

TEST_CASE("init_from copies a checkpoint's weights; a new class count leaves fc8 as it was",
          "[finetune]") {
  const TempDir dir;
  const AlexNet source = seeded_model(small_options(10), 1);
  write_checkpoint(source, dir / "source.pt");
  const auto source_state = snapshot(source);

  AlexNet target = seeded_model(small_options(5), 2);
  const auto initial = snapshot(target);
  const auto report = alexnet::train::init_from(target, dir / "source.pt");
  const auto after = snapshot(target);

  CHECK(report.kind == "checkpoint");
  CHECK(report.copied ==
        std::vector<std::string>{"conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"});
  REQUIRE(report.kept.size() == 1);
  CHECK(report.kept[0].first == "fc8");
  CHECK(report.kept[0].second == "10 classes in the file, 5 here");
  CHECK(report.unused.empty());
  for (const auto& layer : report.copied) {
    INFO(layer);
    CHECK(same_layer(after, source_state, layer));
    CHECK_FALSE(same_layer(after, initial, layer));
  }
  CHECK(same_layer(after, initial, "fc8"));
  CHECK(after["fc8.weight"].size(0) == 5);
  CHECK_THAT(alexnet::train::report_text(report),
             Catch::Contains("copied conv1, conv2, conv3, conv4, conv5, fc6, fc7") &&
                 Catch::Contains("fc8 left as initialised: 10 classes in the file, 5 here") &&
                 Catch::Contains("(checkpoint)"));
}

TEST_CASE("init_from reads an exported model into the two-column layout", "[finetune]") {
  const TempDir dir;
  AlexNet source = seeded_model(small_options(6), 1);
  alexnet::train::save_torchscript(source, alexnet::train::ExportInfo(), dir / "model.pt");
  const auto source_state = snapshot(source);

  // Same classes: every layer, fc8 included, is copied into the columns' halves.
  const std::vector<torch::Device> two{torch::kCPU, torch::kCPU};
  AlexNet same = seeded_model(small_options(6).devices(two), 2);
  REQUIRE(same->two_device());
  const auto report = alexnet::train::init_from(same, dir / "model.pt");
  CHECK(report.kind == "exported model");
  CHECK(report.copied.size() == 8);
  CHECK(report.kept.empty());
  const auto after = snapshot(same);
  for (const auto& item : source_state) {
    INFO(item.key());
    CHECK(torch::equal(after[item.key()], item.value()));
  }
  // Column 1 holds the second half of fc7's rows.
  const auto column1_fc7 = *same->column1->named_parameters().find("fc7.weight");
  const auto half = source_state["fc7.weight"].size(0) / 2;
  CHECK(torch::equal(column1_fc7, source_state["fc7.weight"].narrow(0, half, half)));

  // Another class count: fc8's halves keep their values in both columns.
  AlexNet other = seeded_model(small_options(3).devices(two), 3);
  const auto initial = snapshot(other);
  const auto changed = alexnet::train::init_from(other, dir / "model.pt");
  REQUIRE(changed.kept.size() == 1);
  CHECK(changed.kept[0].second == "6 classes in the file, 3 here");
  const auto other_after = snapshot(other);
  CHECK(same_layer(other_after, initial, "fc8"));
  CHECK(same_layer(other_after, source_state, "fc7"));
}

TEST_CASE("init_from names a missing layer, and an unused one, without failing", "[finetune]") {
  // conv4 removed in the source; the target has it and keeps its own values.
  const TempDir dir;
  const AlexNet source = seeded_model(small_options(4).remove_conv("conv4"), 1);
  write_checkpoint(source, dir / "no_conv4.pt");
  AlexNet target = seeded_model(small_options(4), 2);
  const auto initial = snapshot(target);
  const auto report = alexnet::train::init_from(target, dir / "no_conv4.pt");
  REQUIRE(report.kept.size() == 1);
  CHECK(report.kept[0] == std::make_pair(std::string("conv4"), std::string("not in the file")));
  CHECK(same_layer(snapshot(target), initial, "conv4"));

  // The other way round: the file's conv4 is not used.
  write_checkpoint(target, dir / "with_conv4.pt");
  AlexNet without = seeded_model(small_options(4).remove_conv("conv4"), 3);
  const auto unused = alexnet::train::init_from(without, dir / "with_conv4.pt");
  CHECK(unused.unused == std::vector<std::string>{"conv4"});
  CHECK(unused.kept.empty());
}

TEST_CASE("init_from refuses a missing file, another architecture and a foreign file",
          "[finetune]") {
  const TempDir dir;
  AlexNet target = seeded_model(small_options(5), 1);

  const std::string missing = dir / "missing.pt";
  CHECK_THAT(message_of([&] { alexnet::train::init_from(target, missing); }),
             Catch::Contains("'" + missing + "' does not exist"));

  // Half width: conv1 has twice the kernels.
  write_checkpoint(seeded_model(small_options(5).width(0.5), 2), dir / "wide.pt");
  const auto wide = message_of([&] { alexnet::train::init_from(target, dir / "wide.pt"); });
  CHECK_THAT(wide, Catch::Contains("init_from '" + (dir / "wide.pt") + "'") &&
                       Catch::Contains("'conv1.weight' has shape [48, 3, 11, 11] in the file "
                                       "and [24, 3, 11, 11] in this model"));

  // One column: conv2 sees all of conv1's maps, not its column's half; fc8's rows match.
  write_checkpoint(seeded_model(small_options(5).columns(1), 3), dir / "one_column.pt");
  CHECK_THAT(message_of([&] { alexnet::train::init_from(target, dir / "one_column.pt"); }),
             Catch::Contains("'conv1.weight' has shape [12, 3, 11, 11] in the file"));

  // Grey input (one channel): only conv1 differs, and that is not the classifier.
  write_checkpoint(seeded_model(small_options(5).in_channels(1), 4), dir / "grey.pt");
  CHECK_THAT(message_of([&] { alexnet::train::init_from(target, dir / "grey.pt"); }),
             Catch::Contains("[24, 1, 11, 11] in the file and [24, 3, 11, 11] in this model"));

  { std::ofstream(dir / "notes.txt") << "not a model\n"; }
  CHECK_THAT(message_of([&] { alexnet::train::init_from(target, dir / "notes.txt"); }),
             Catch::Contains(dir / "notes.txt"));

  // Nothing the model can use.
  TensorDict foreign;
  foreign.insert("encoder.weight", torch::zeros({2, 2}));
  foreign.insert("encoder.bias", torch::zeros({2}));
  CHECK_THAT(message_of([&] { alexnet::train::copy_matching_parameters(target, foreign, "x.pt"); }),
             Catch::Contains("init_from 'x.pt': none of its layers (encoder)"));
  TensorDict half_layer;
  half_layer.insert("conv1.weight", torch::zeros({24, 3, 11, 11}));
  CHECK_THAT(
      message_of([&] { alexnet::train::copy_matching_parameters(target, half_layer, "y.pt"); }),
      Catch::Contains("holds 'conv1.weight' but not 'conv1.bias'"));
}

TEST_CASE("freeze_layers stops gradients in both layouts and names an unknown layer",
          "[finetune]") {
  const std::vector<std::vector<torch::Device>> layouts{{torch::kCPU}, {torch::kCPU, torch::kCPU}};
  for (const auto& devices : layouts) {
    INFO(devices.size() << " device(s)");
    AlexNet model = seeded_model(small_options(4).devices(devices), 1);
    const int64_t frozen = alexnet::train::freeze_layers(model, kConvs);
    CHECK(frozen == (devices.size() == 2 ? 20 : 10));
    model->forward(torch::randn({2, 3, 64, 64})).sum().backward();
    for (const auto& item : model->named_parameters()) {
      const std::string layer = alexnet::train::layer_of_parameter(item.key());
      const bool is_conv = layer.rfind("conv", 0) == 0;
      INFO(item.key());
      CHECK(item.value().requires_grad() == !is_conv);
      CHECK(item.value().grad().defined() == !is_conv);
    }
  }
  AlexNet model = seeded_model(small_options(4), 1);
  CHECK_THAT(message_of([&] { alexnet::train::freeze_layers(model, {"conv9"}); }),
             Catch::Contains("cannot freeze 'conv9'") &&
                 Catch::Contains("conv1, conv2, conv3, conv4, conv5, fc6, fc7, fc8"));
  CHECK(alexnet::train::layer_of_parameter("column1.fc8.weight") == "fc8");
  CHECK(alexnet::train::layer_of_parameter("conv4_extra.bias") == "conv4_extra");
  CHECK(alexnet::train::layer_of_parameter("lr").empty());
}

// Parameters named as in the two-column layout, with gradients, float64.
struct ThreeLayers {
  TensorDict parameters;
  ThreeLayers() {
    for (const char* name : {"column0.fc7.weight", "column0.fc8.weight", "column0.fc8.bias"}) {
      parameters.insert(name, torch::tensor({1.0, -2.0}, torch::kFloat64).requires_grad_());
    }
    set_grads(0.5);
  }
  void set_grads(double g) {
    for (auto& item : parameters) {
      item.value().mutable_grad() = torch::full({2}, g, torch::kFloat64);
    }
  }
  TensorDict copy() const {
    TensorDict out;
    for (const auto& item : parameters) out.insert(item.key(), item.value().detach().clone());
    return out;
  }
};

TEST_CASE("lr_mult scales a layer's update as SGD's arithmetic says, across lr changes",
          "[finetune]") {
  const auto rule =
      GENERATE(alexnet::train::SgdRule::kPaper, alexnet::train::SgdRule::kPytorch);
  INFO("rule " << alexnet::train::to_string(rule));
  alexnet::train::OptimizerConfig options;
  options.rule = rule;
  options.lr = 0.1;
  options.momentum = 0.9;
  options.weight_decay = 0.01;
  options.bias_lr_multiplier = 2.0;
  options.lr_mult = {{"fc8", 10.0}};
  ThreeLayers net;
  alexnet::train::Sgd sgd(net.parameters, options);
  CHECK(sgd.lr_multiplier(0) == 1.0);
  CHECK(sgd.lr_multiplier(1) == 10.0);
  CHECK(sgd.lr_multiplier(2) == 20.0);

  // First step from zero momentum, both rules: w1 = w0 - lr * mult * (g + wd w0).
  const auto w0 = net.copy();
  sgd.step();
  const double multipliers[] = {1.0, 10.0, 20.0};
  size_t i = 0;
  for (const auto& item : net.parameters) {
    INFO(item.key());
    const auto expected = w0[item.key()] - 0.1 * multipliers[i++] * (0.5 + 0.01 * w0[item.key()]);
    CHECK(torch::allclose(item.value(), expected, /*rtol=*/1e-12, /*atol=*/1e-15));
  }
  // An lr change (as the schedule makes) keeps the ratio. Second step, lr 0.01, gradient 0.2:
  //   paper:   v2 = 0.9 v1 - 0.01 mult (0.2 + wd w1), v1 = w1 - w0
  //   pytorch: w2 = w1 - 0.01 mult (0.9 buf1 + 0.2 + wd w1), buf1 = 0.5 + wd w0
  sgd.set_lr(0.01);
  const auto w1 = net.copy();
  net.set_grads(0.2);
  sgd.step();
  i = 0;
  for (const auto& item : net.parameters) {
    INFO(item.key());
    const double mult = multipliers[i++];
    const auto& a = w0[item.key()];
    const auto& b = w1[item.key()];
    const auto expected = rule == alexnet::train::SgdRule::kPaper
                              ? b + 0.9 * (b - a) - 0.01 * mult * (0.2 + 0.01 * b)
                              : b - 0.01 * mult * (0.9 * (0.5 + 0.01 * a) + 0.2 + 0.01 * b);
    CHECK(torch::allclose(item.value(), expected, /*rtol=*/1e-12, /*atol=*/1e-15));
  }

  // The saved state restores the same steps in a new optimiser with the same lr_mult.
  ThreeLayers resumed;
  {
    torch::NoGradGuard no_grad;
    for (auto& item : resumed.parameters) item.value().copy_(net.parameters[item.key()]);
  }
  alexnet::train::Sgd again(resumed.parameters, options);
  again.load_state(sgd.state());
  net.set_grads(-0.3);
  resumed.set_grads(-0.3);
  sgd.step();
  again.step();
  for (const auto& item : net.parameters) {
    CHECK(torch::equal(item.value(), resumed.parameters[item.key()]));
  }

  options.lr_mult = {{"fc9", 2.0}};
  CHECK_THAT(message_of([&] { alexnet::train::Sgd bad(net.parameters, options); }),
             Catch::Contains("optimizer.lr_mult names 'fc9'"));
}

TEST_CASE("model.freeze, optimizer.lr_mult and init_from round-trip and are validated",
          "[finetune]") {
  TrainConfig config;
  config.model = small_options(5).remove_conv("conv4");
  config.num_classes_auto = false;
  config.freeze = {"conv1", "conv2"};
  config.optimizer.lr_mult = {{"fc8", 10.0}, {"fc7", 0.5}};
  config.init_from = "runs/source/model.pt";
  const auto json = alexnet::train::to_json(config);
  CHECK(json["model"]["freeze"] == nlohmann::json({"conv1", "conv2"}));
  CHECK(json["optimizer"]["lr_mult"]["fc8"] == 10.0);
  const auto back = alexnet::train::config_from_json(json);
  CHECK(back.freeze == config.freeze);
  CHECK(back.optimizer.lr_mult == config.optimizer.lr_mult);
  CHECK(back.init_from == config.init_from);
  // Readers of a checkpoint's "model" object take the architecture and leave freeze.
  CHECK(alexnet::train::model_options_from_json(json["model"]).remove_conv() == "conv4");

  const auto error_for = [&](const std::string& key, const nlohmann::json& value) {
    auto bad = json;
    bad[nlohmann::json::json_pointer(key)] = value;
    return message_of([&] { alexnet::train::config_from_json(bad); });
  };
  CHECK_THAT(error_for("/model/freeze", {"conv1", "conv4"}),
             Catch::Contains("'model.freeze' names 'conv4', which is not a layer of this model") &&
                 Catch::Contains("its layers: conv1, conv2, conv3, conv5, fc6, fc7, fc8"));
  CHECK_THAT(error_for("/model/freeze", "conv1"), Catch::Contains("'model.freeze' must be a list"));
  CHECK_THAT(error_for("/model/freeze", {"conv1", "conv1"}), Catch::Contains("'conv1' twice"));
  CHECK_THAT(error_for("/model/freeze", {"conv1", "conv2", "conv3", "conv5", "fc6", "fc7", "fc8"}),
             Catch::Contains("holds every layer"));
  CHECK_THAT(error_for("/optimizer/lr_mult", {{"fc9", 2}}),
             Catch::Contains("'optimizer.lr_mult' names 'fc9'"));
  CHECK_THAT(error_for("/optimizer/lr_mult", {{"fc8", -1}}),
             Catch::Contains("'optimizer.lr_mult.fc8' must be a number in [0, 1e6], got -1"));
  CHECK_THAT(error_for("/optimizer/lr_mult", {1, 2}), Catch::Contains("must be an object"));
  CHECK_THAT(error_for("/init_from", 3), Catch::Contains("'init_from' must be a string"));
}

// Training images from seed 1, validation images from seed 2 (noise and squares alike).
RunData corner_data(int64_t classes, size_t train, size_t val) {
  torch::manual_seed(1);
  auto train_set = std::make_shared<CornerSquaresDataset>(train, classes, 1);
  torch::manual_seed(2);
  return {train_set, std::make_shared<CornerSquaresDataset>(val, classes, 2)};
}

// A quarter-width run of a few batches of 8 at 64 x 64 on the CPU, logging every step.
TrainConfig small_run() {
  TrainConfig c = small_train_config();
  c.log_interval = 1;
  return c;
}

alexnet::train::Checkpoint last_checkpoint(const fs::path& run) {
  return alexnet::train::load_checkpoint((run / "checkpoints" / "last.pt").string());
}

TEST_CASE("A fine-tuning run keeps frozen layers bit-identical and trains the rest",
          "[finetune][trainer]") {
  const auto rule =
      GENERATE(alexnet::train::SgdRule::kPaper, alexnet::train::SgdRule::kPytorch);
  INFO("rule " << alexnet::train::to_string(rule));
  const TempDir dir;
  std::ostringstream log;
  auto source_config = small_run();
  source_config.max_steps = 2;
  alexnet::train::train(source_config, corner_data(4, 16, 8), quiet_run(dir.path / "source", log));
  const auto source = last_checkpoint(dir.path / "source");

  auto config = small_run();
  config.optimizer.rule = rule;
  config.init_from = (dir.path / "source" / "checkpoints" / "last.pt").string();
  config.freeze = kConvs;
  config.optimizer.lr_mult = {{"fc8", 10.0}};
  config.max_steps = 3;
  const auto summary =
      alexnet::train::train(config, corner_data(2, 16, 8), quiet_run(dir.path / "target", log));
  INFO(log.str());
  CHECK(summary.steps == 3);
  CHECK_THAT(log.str(), Catch::Contains("fc8 left as initialised: 4 classes in the file, 2 here") &&
                            Catch::Contains("frozen (no gradients, weight decay or momentum): "
                                            "conv1, conv2, conv3, conv4, conv5") &&
                            Catch::Contains("lr_mult: fc8 learns at 10 x lr"));
  const auto target = last_checkpoint(dir.path / "target");
  for (const auto& layer : kConvs) {
    INFO(layer);
    CHECK(same_layer(target.model, source.model, layer));
    const auto kind =
        rule == alexnet::train::SgdRule::kPaper ? "velocity." : "momentum_buffer.";
    CHECK(target.optimizer[kind + layer + ".weight"].abs().max().item<double>() == 0.0);
  }
  CHECK_FALSE(same_layer(target.model, source.model, "fc6"));
  CHECK_FALSE(same_layer(target.model, source.model, "fc7"));
  CHECK(target.model["fc8.weight"].size(0) == 2);
  CHECK(target.config["init_from"] == config.init_from);
  CHECK(target.config["model"]["freeze"].size() == 5);
}

TEST_CASE("A stopped fine-tuning run resumes exactly, without reading init_from again",
          "[finetune][trainer]") {
  const auto rule =
      GENERATE(alexnet::train::SgdRule::kPaper, alexnet::train::SgdRule::kPytorch);
  INFO("rule " << alexnet::train::to_string(rule));
  const TempDir dir;
  std::ostringstream log;
  AlexNet source = seeded_model(small_options(4), 7);
  const std::string source_path = dir / "source.pt";
  alexnet::train::save_torchscript(source, alexnet::train::ExportInfo(), source_path);

  auto config = small_run();
  config.devices = "cpu,cpu";  // the two-column layout
  config.optimizer.rule = rule;
  config.init_from = source_path;
  config.freeze = {"conv1", "conv2"};
  config.optimizer.lr_mult = {{"fc8", 10.0}, {"conv3", 0.1}};
  config.max_steps = 4;  // two epochs of two batches: crosses a validation
  const RunData data = corner_data(2, 16, 8);
  const auto whole = alexnet::train::train(config, data, quiet_run(dir.path / "whole", log));
  REQUIRE(whole.losses.size() == 4);

  std::atomic<bool> stop{true};
  auto options = quiet_run(dir.path / "parts", log);
  options.stop = &stop;
  auto part = alexnet::train::train(config, data, options);
  REQUIRE(part.losses.size() == 1);
  std::vector<double> losses = part.losses;
  // Resume wins: the weights come from the run's checkpoint, the source is not read.
  fs::remove(source_path);
  options.stop = nullptr;
  options.resume = true;
  part = alexnet::train::train(config, data, options);
  losses.insert(losses.end(), part.losses.begin(), part.losses.end());
  INFO(log.str());
  CHECK_THAT(log.str(), Catch::Contains("not read: the resumed checkpoint holds the weights"));
  REQUIRE(losses.size() == whole.losses.size());
  for (size_t i = 0; i < losses.size(); ++i) {
    INFO("step " << i + 1);
    CHECK(losses[i] == whole.losses[i]);
  }
  const auto a = last_checkpoint(dir.path / "whole");
  const auto b = last_checkpoint(dir.path / "parts");
  for (const auto& item : a.model) CHECK(torch::equal(item.value(), b.model[item.key()]));

  // A resume may not change what fine-tuning does.
  auto changed = config;
  changed.optimizer.lr_mult["fc8"] = 5.0;
  CHECK_THAT(message_of([&] { alexnet::train::train(changed, data, options); }),
             Catch::Contains("'optimizer.lr_mult.fc8' was 10.0"));
}

TEST_CASE("A bad init_from is refused before the run folder is written", "[finetune][trainer]") {
  const TempDir dir;
  std::ostringstream log;
  write_checkpoint(seeded_model(small_options(2).width(0.5), 1), dir / "wide.pt");
  auto config = small_run();
  config.init_from = dir / "wide.pt";
  const auto run = dir.path / "run";
  CHECK_THAT(message_of([&] {
               alexnet::train::train(config, corner_data(2, 16, 8), quiet_run(run, log));
             }),
             Catch::Contains("'conv1.weight' has shape [48, 3, 11, 11] in the file"));
  CHECK_FALSE(fs::exists(run / "config.json"));
}

TEST_CASE("train --init-from together with --resume is a usage error", "[finetune][cli]") {
  const TempDir dir;
  const std::string command = std::string(ALEXNET_BINARY) + " train --resume '" + (dir / "run") +
                              "' --init-from '" + (dir / "model.pt") + "' > '" + (dir / "out.txt") +
                              "' 2>&1";
  CHECK(run_command(command) == 2);
  CHECK_THAT(read_text(dir.path / "out.txt"), Catch::Contains("leave out --init-from"));
}

}  // namespace test_finetune
