#include <catch2/catch.hpp>

#include <functional>
#include <string>
#include <vector>

#include "tests/support.h"
#include "train/config.h"

namespace test_config {

using alexnet::train::config_from_json;
using alexnet::train::TrainConfig;
using nlohmann::json;
using namespace alexnet::testing;

namespace {

// The message of the std::invalid_argument that config_from_json throws for `j`.
std::string error_of(const json& j) {
  try {
    config_from_json(j);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("Configuration round-trips through JSON", "[config]") {
  TrainConfig config;
  config.optimizer.rule = alexnet::train::SgdRule::kPytorch;
  config.optimizer.lr = 0.05;
  config.schedule.kind = alexnet::train::ScheduleKind::kStep;
  config.schedule.milestones = {2.5, 4};
  config.data.mean = {1, 2, 3};
  config.model.num_classes(10).init(alexnet::Init::kKaiming).lrn(false);
  config.num_classes_auto = false;
  config.precision = alexnet::train::Precision::kBFloat16;
  const json j = alexnet::train::to_json(config);
  CHECK(alexnet::train::to_json(config_from_json(j)) == j);
  CHECK(j["precision"] == "bf16");
  CHECK(j["model"]["num_classes"] == 10);
  CHECK(j["model"]["init"] == "kaiming");

  const TrainConfig defaults = config_from_json(json::object());
  CHECK(defaults.num_classes_auto);
  CHECK(defaults.optimizer.rule == alexnet::train::SgdRule::kPaper);
  CHECK(alexnet::train::to_json(defaults)["model"]["num_classes"] == "auto");
}

TEST_CASE("Unknown keys are errors naming the key and the allowed ones", "[config]") {
  const auto message = error_of({{"optimizer", {{"lrr", 0.1}}}});
  CHECK_THAT(message, Catch::Contains("optimizer.lrr") && Catch::Contains("momentum"));
  CHECK_THAT(error_of({{"epoch", 3}}), Catch::Contains("'epoch'") && Catch::Contains("epochs"));
  CHECK_THAT(error_of({{"model", {{"lrn_sise", 5}}}}), Catch::Contains("model.lrn_sise"));
  // Keys starting with '_' are comments.
  CHECK_NOTHROW(config_from_json({{"_about", "text"}, {"data", {{"_note", 1}}}}));
}

TEST_CASE("Invalid values are errors naming the key and the allowed values", "[config]") {
  CHECK_THAT(error_of({{"optimizer", {{"rule", "adam"}}}}), Catch::Contains("optimizer.rule") &&
                                                                Catch::Contains("paper, pytorch") &&
                                                                Catch::Contains("adam"));
  CHECK_THAT(error_of({{"model", {{"init", "xavier"}}}}),
             Catch::Contains("model.init") && Catch::Contains("paper, kaiming"));
  CHECK_THAT(error_of({{"schedule", {{"kind", "cosine"}}}}),
             Catch::Contains("schedule.kind") && Catch::Contains("plateau, step, constant"));
  CHECK_THAT(error_of({{"batch_size", 0}}),
             Catch::Contains("batch_size") && Catch::Contains("integer >= 1"));
  CHECK_THAT(error_of({{"batch_size", "big"}}), Catch::Contains("batch_size"));
  CHECK_THAT(error_of({{"data", {{"normalize", "zscore"}}}}),
             Catch::Contains("data.normalize") && Catch::Contains("mean, mean_std, none"));
  CHECK_THAT(error_of({{"data", {{"crop", 32}}}}), Catch::Contains("data.crop"));
  CHECK_THAT(error_of({{"data", {{"resize", 100}, {"crop", 224}}}}),
             Catch::Contains("data.resize"));
  CHECK_THAT(error_of({{"schedule", {{"kind", "step"}, {"milestones", {3, 2}}}}}),
             Catch::Contains("schedule.milestones"));
  CHECK_THAT(error_of({{"schedule", {{"kind", "step"}}}}), Catch::Contains("schedule.milestones"));
  CHECK_THAT(error_of({{"devices", "gpu0"}}),
             Catch::Contains("devices") && Catch::Contains("cuda:0,cuda:1"));
  CHECK_THAT(error_of({{"model", {{"columns", 3}}}}),
             Catch::Contains("model.columns") && Catch::Contains("1 or 2"));
  CHECK_THAT(error_of({{"model", "big"}}), Catch::Contains("model"));
  CHECK_THAT(error_of({{"threads", 100000}}),
             Catch::Contains("'threads'") && Catch::Contains("1024"));
  CHECK(error_of({{"threads", 1024}}) == "(no error)");
  CHECK_THAT(error_of({{"data", {{"workers", 257}}}}),
             Catch::Contains("data.workers") && Catch::Contains("256"));
  CHECK_THAT(error_of({{"precision", "half"}}), Catch::Contains("'precision'") &&
                                                    Catch::Contains("fp32, bf16 or fp16") &&
                                                    Catch::Contains("half"));
}

TEST_CASE("The configuration refuses exactly the model options the model refuses", "[config]") {
  using alexnet::AlexNetOptions;
  using alexnet::LocalResponseNormOptions;
  struct Case {
    std::string key;
    json value;
    std::function<void(AlexNetOptions&)> set;
    bool refused;
  };
  const std::vector<Case> cases{
      {"lrn_k", 0, [](auto& o) { o.lrn_options(LocalResponseNormOptions(5).k(0)); }, true},
      {"lrn_k", 1e-9, [](auto& o) { o.lrn_options(LocalResponseNormOptions(5).k(1e-9)); }, false},
      {"lrn_alpha", -1, [](auto& o) { o.lrn_options(LocalResponseNormOptions(5).alpha(-1)); },
       true},
      {"lrn_size", 4, [](auto& o) { o.lrn_options(LocalResponseNormOptions(4)); }, true},
      {"dropout", 1.0, [](auto& o) { o.dropout(1.0); }, true},
      {"dropout", 0.9995, [](auto& o) { o.dropout(0.9995); }, false},
      {"pool_kernel", 4, [](auto& o) { o.pool_kernel(4); }, true},
      {"pool_kernel", 2, [](auto& o) { o.pool_kernel(2); }, false},
      {"pool_stride", 1, [](auto& o) { o.pool_stride(1); }, true},
      {"num_classes", 0, [](auto& o) { o.num_classes(0); }, true},
      {"in_channels", 0, [](auto& o) { o.in_channels(0); }, true},
      {"columns", 3, [](auto& o) { o.columns(3); }, true},
      {"width", 32, [](auto& o) { o.width(32); }, true},
      {"width", 16, [](auto& o) { o.width(16); }, false},
      {"width", 0.01, [](auto& o) { o.width(0.01); }, true},
      {"remove_conv", "conv1", [](auto& o) { o.remove_conv("conv1"); }, true},
  };
  for (const auto& c : cases) {
    INFO("model." << c.key << " = " << c.value.dump());
    AlexNetOptions options;
    c.set(options);
    const auto problem = alexnet::find_option_problem(options);
    CHECK(problem.has_value() == c.refused);
    if (c.refused) {
      CHECK(problem->option == c.key);
      CHECK_THROWS_WITH(alexnet::validate(options), Catch::Contains(c.key));
      CHECK_THAT(error_of({{"model", {{c.key, c.value}}}}),
                 Catch::Contains("'model." + c.key + "'") && Catch::Contains(problem->allowed) &&
                     Catch::Contains(c.value.dump()));
    } else {
      CHECK_NOTHROW(alexnet::validate(options));
      CHECK(error_of({{"model", {{c.key, c.value}}}}) == "(no error)");
    }
  }
}

TEST_CASE("Model options round-trip through JSON", "[config]") {
  auto options = alexnet::AlexNetOptions()
                     .num_classes(7)
                     .dropout(0.25)
                     .columns(1)
                     .activation(alexnet::Activation::kTanh)
                     .lrn_options(alexnet::LocalResponseNormOptions(3).alpha(5e-4).k(1.0));
  const auto back =
      alexnet::train::model_options_from_json(alexnet::train::model_options_to_json(options));
  CHECK(back.num_classes() == 7);
  CHECK(back.dropout() == 0.25);
  CHECK(back.columns() == 1);
  CHECK(back.activation() == alexnet::Activation::kTanh);
  CHECK(back.lrn_options().size() == 3);
  CHECK(back.lrn_options().alpha() == 5e-4);
  CHECK(back.lrn_options().k() == 1.0);
  CHECK_THROWS_WITH(alexnet::train::model_options_from_json({{"lrn_size", 4}}),
                    Catch::Contains("model.lrn_size") && Catch::Contains("odd"));
}

TEST_CASE("Width and depth options round-trip and are validated naming the key",
          "[config][variants]") {
  const auto options =
      alexnet::AlexNetOptions().width(0.25).remove_conv("conv3").extra_conv("conv5");
  const json j = alexnet::train::model_options_to_json(options);
  CHECK(j["width"] == 0.25);
  CHECK(j["remove_conv"] == "conv3");
  CHECK(j["extra_conv"] == "conv5");
  const auto back = alexnet::train::model_options_from_json(j);
  CHECK(back.width() == 0.25);
  CHECK(back.remove_conv() == "conv3");
  CHECK(back.extra_conv() == "conv5");
  const auto defaults = alexnet::train::model_options_from_json(json::object());
  CHECK(defaults.width() == 1.0);
  CHECK(defaults.remove_conv().empty());
  CHECK(defaults.extra_conv().empty());

  CHECK_THAT(error_of({{"model", {{"width", 0}}}}),
             Catch::Contains("model.width") && Catch::Contains("got 0"));
  CHECK_THAT(error_of({{"model", {{"width", 100}}}}),
             Catch::Contains("model.width") && Catch::Contains("100"));
  CHECK_THAT(error_of({{"model", {{"width", "wide"}}}}), Catch::Contains("model.width"));
  CHECK_THAT(error_of({{"model", {{"remove_conv", "conv1"}}}}),
             Catch::Contains("model.remove_conv") && Catch::Contains("\"conv1\"") &&
                 Catch::Contains("conv3, conv4, conv5"));
  CHECK_THAT(error_of({{"model", {{"extra_conv", "fc6"}}}}),
             Catch::Contains("model.extra_conv") && Catch::Contains("\"fc6\""));
  CHECK_THAT(error_of({{"model", {{"extra_conv", 4}}}}), Catch::Contains("model.extra_conv"));
  CHECK_THAT(error_of({{"model", {{"extra_conv", "conv4"}, {"remove_conv", "conv4"}}}}),
             Catch::Contains("model.extra_conv") && Catch::Contains("other than remove_conv"));
}

TEST_CASE("set_config_value parses values and refuses unknown keys", "[config]") {
  json j = alexnet::train::to_json(TrainConfig());
  alexnet::train::set_config_value(j, "optimizer.lr", "0.5");
  alexnet::train::set_config_value(j, "schedule.milestones", "[1,2]");
  alexnet::train::set_config_value(j, "data.source", "/some/folder");
  alexnet::train::set_config_value(j, "data.flip", "false");
  const auto config = config_from_json(j);
  CHECK(config.optimizer.lr == 0.5);
  CHECK(config.schedule.milestones == std::vector<double>{1, 2});
  CHECK(config.data.source == "/some/folder");
  CHECK_FALSE(config.data.flip);
  CHECK_THROWS_WITH(alexnet::train::set_config_value(j, "optimizer.learning_rate", "1"),
                    Catch::Contains("optimizer.learning_rate"));
}

TEST_CASE("apply_config_overrides sets each key=value item in order", "[config]") {
  json j = alexnet::train::to_json(TrainConfig());
  alexnet::train::apply_config_overrides(j, "optimizer.lr=0.5;;schedule.milestones=[1,2]");
  alexnet::train::apply_config_overrides(j, "optimizer.lr=0.25");
  const auto config = config_from_json(j);
  CHECK(config.optimizer.lr == 0.25);
  CHECK(config.schedule.milestones == std::vector<double>{1, 2});
  CHECK_THROWS_WITH(alexnet::train::apply_config_overrides(j, "optimizer.lr"),
                    Catch::Contains("'optimizer.lr' is not key=value"));
  CHECK_THROWS_WITH(alexnet::train::apply_config_overrides(j, "=1"), Catch::Contains("'=1'"));
  CHECK_THROWS_WITH(alexnet::train::apply_config_overrides(j, "optimizer.rate=1"),
                    Catch::Contains("optimizer.rate"));
  // White space around a key, as after "; ", is not part of it.
  alexnet::train::apply_config_overrides(j, "optimizer.lr=0.5; epochs=7");
  CHECK(config_from_json(j).epochs == 7);
}

TEST_CASE("Configuration files: a key given twice, deep nesting and bad devices are refused",
          "[config]") {
  TempDir dir;
  write_text(dir / "twice.json", "{\"epochs\": 2, \"data\": {\"flip\": true}, \"epochs\": 3}");
  CHECK_THROWS_WITH(alexnet::train::read_json_file(dir / "twice.json"),
                    Catch::Contains("twice.json") && Catch::Contains("'epochs' appears twice"));
  // The same key in two objects is fine.
  write_text(dir / "nested.json", "{\"a\": {\"k\": 1}, \"b\": {\"k\": 2}, \"k\": [{\"k\": 1}]}");
  CHECK(alexnet::train::read_json_file(dir / "nested.json").at("b").at("k") == 2);
  write_text(dir / "deep.json", std::string(100000, '[') + std::string(100000, ']'));
  CHECK_THROWS_WITH(alexnet::train::read_json_file(dir / "deep.json"),
                    Catch::Contains("deep.json") && Catch::Contains("nests deeper"));
  CHECK_THROWS_WITH(alexnet::train::read_json_file(dir.path.string()),
                    Catch::Contains("is a folder"));
  for (const std::string devices : {"cpu,cpu,cpu", "", "cpu,"}) {
    INFO(devices);
    CHECK_THAT(error_of({{"devices", devices}}), Catch::Contains("'devices'"));
  }
  CHECK(error_of({{"devices", "cpu,cpu"}}) == "(no error)");
}

TEST_CASE("The shipped configurations parse", "[config]") {
  const std::string dir = std::string(ALEXNET_SOURCE_DIR) + "/configs/";
  const auto demo = config_from_json(alexnet::train::read_json_file(dir + "fashion-mnist.json"));
  CHECK(demo.data.source == "fashion-mnist");
  CHECK(demo.model.init() == alexnet::Init::kKaiming);
  CHECK(demo.model.lrn());
  CHECK(demo.model.dropout() == 0.5);

  // imagenet.json leaves data.source to --data.
  json imagenet = alexnet::train::read_json_file(dir + "imagenet.json");
  CHECK_THROWS_WITH(config_from_json(imagenet), Catch::Contains("data.source"));
  alexnet::train::set_config_value(imagenet, "data.source", "/data/imagenet");
  const auto paper = config_from_json(imagenet);
  CHECK(paper.batch_size == 128);
  CHECK(paper.optimizer.momentum == 0.9);
  CHECK(paper.optimizer.weight_decay == 0.0005);
  CHECK(paper.optimizer.lr == 0.01);
  CHECK(paper.schedule.kind == alexnet::train::ScheduleKind::kPlateau);
  CHECK(paper.schedule.max_drops == 3);
  CHECK(paper.model.init() == alexnet::Init::kPaper);
  CHECK(paper.data.pca_lighting);
  CHECK(paper.data.crop == 224);
  CHECK(paper.devices == "auto");

  CHECK_THROWS_WITH(alexnet::train::read_json_file(dir + "missing.json"),
                    Catch::Contains("missing.json"));
}

}  // namespace test_config
