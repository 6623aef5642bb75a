// eval and predict --precision: bfloat16 (autocast, or emulated) against float32, in the library
// and through the `alexnet` binary.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <torch/torch.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "model/alexnet.h"
#include "tests/support.h"
#include "train/config.h"
#include "train/export.h"
#include "train/exported_model.h"
#include "train/precision.h"
#include "transforms/transforms.h"

#if ALEXNET_WITH_OPENCV
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#endif

namespace test_eval_precision {

namespace fs = std::filesystem;
using alexnet::train::Precision;
using namespace alexnet::testing;

// How far bfloat16 autocast may move the logits, relative to the largest float32 logit.
//
// bfloat16 keeps 8 significant bits, so rounding a value to it changes it by at most
// u = 2^-8 of itself. Under autocast each convolution and linear layer rounds its input and
// its weights to bfloat16, sums the products in float32 (error about 2^-24, negligible) and
// rounds its output: three roundings per layer. The net has eight such layers and two LRNs,
// whose exported form is a convolution as well (three roundings each): 30 roundings of at most
// u each. ReLU and max-pooling do not amplify differences and the LRN divides by at least
// k^beta > 1, so if every rounding moved the logits by u of their scale in the same direction,
// they would move by 30 u = 0.117 of it; 32 u leaves room for the products of roundings.
// Rounding errors of independent values mostly cancel, so the measured difference is several
// times smaller; a computation in the wrong type or on the wrong values moves the logits by
// their own size.
constexpr double kBf16Tolerance = 32.0 / 256.0;

// A quarter-width net (kaiming init, so the activations keep their scale over the layers).
alexnet::AlexNet tiny_model() {
  torch::manual_seed(0);
  alexnet::AlexNet model(
      alexnet::AlexNetOptions().num_classes(5).width(0.25).init(alexnet::Init::kKaiming));
  model->eval();
  return model;
}

// Four mean-subtracted 64x64 images.
torch::Tensor tiny_batch() {
  torch::manual_seed(1);
  return torch::randn({4, 3, 64, 64}) * 60.0;
}

// max |actual - expected| over max |expected|.
double relative_difference(const torch::Tensor& actual, const torch::Tensor& expected) {
  REQUIRE(actual.sizes() == expected.sizes());
  return (actual.to(torch::kFloat64) - expected.to(torch::kFloat64)).abs().max().item<double>() /
         expected.abs().max().item<double>();
}

// The logits of `fp32` and of `bf16` (the same model in bfloat16) on the tiny batch.
void check_bf16_close(const alexnet::train::ForwardFunction& fp32,
                      const alexnet::train::ForwardFunction& bf16) {
  torch::NoGradGuard no_grad;
  const auto x = tiny_batch();
  const auto expected = fp32(x);
  const auto got = bf16(x);
  CHECK(got.scalar_type() == torch::kFloat32);
  const double difference = relative_difference(got, expected);
  INFO("relative difference " << difference);
  // bfloat16 took effect (its results differ), and by no more than its rounding.
  CHECK(difference > 0.0);
  CHECK(difference <= kBf16Tolerance);
  // After it, float32 again: the same bits as before.
  CHECK(torch::equal(fp32(x), expected));
}

TEST_CASE("bf16 logits stay within bfloat16 rounding of float32 ones", "[precision]") {
  auto model = tiny_model();
  SECTION("the eager model, as eval --checkpoint runs it") {
    const alexnet::train::ForwardFunction forward = [&model](const torch::Tensor& x) {
      return model->forward(x);
    };
    check_bf16_close(
        forward, alexnet::train::forward_in_precision(forward, torch::kCPU, Precision::kBFloat16));
  }
  SECTION("the exported TorchScript module, as eval --model and predict run it") {
    alexnet::train::ExportInfo info;
    info.image_size = 64;
    info.resize_size = 64;
    const auto exported =
        std::make_shared<alexnet::train::ExportedModel>(alexnet::train::read_exported_model(
            alexnet::train::export_torchscript(model, info), "tiny.pt"));
    // Where bfloat16 is emulated, an eager copy of the module computes (a TorchScript module
    // cannot round as the emulation does): without bfloat16 both would give the same bits.
    check_bf16_close(alexnet::train::exported_forward(exported, Precision::kFloat32, torch::kCPU),
                     alexnet::train::exported_forward(exported, Precision::kBFloat16, torch::kCPU));
  }
}

TEST_CASE("eager_model rebuilds an exported model that computes what the module does",
          "[precision]") {
  torch::NoGradGuard no_grad;
  auto model = tiny_model();
  alexnet::train::ExportInfo info;
  info.image_size = 64;
  info.resize_size = 64;
  auto module = alexnet::train::export_torchscript(model, info);
  const auto exported = alexnet::train::read_exported_model(module, "tiny.pt");
  auto eager = alexnet::train::eager_model(exported, torch::kCPU);
  const auto x = tiny_batch();
  const auto scripted = module.forward({x}).toTensor();
  // The module's LRN is a different formulation of the same sums (float32 rounding only).
  CHECK(relative_difference(eager->forward(x), scripted) < 1e-5);
  CHECK(relative_difference(eager->forward(x), model->forward(x)) < 1e-5);

  // A file whose model_options does not describe its weights is refused, naming the file.
  module.setattr("model_options", std::string("{\"num_classes\": 7}"));
  const auto mismatched = alexnet::train::read_exported_model(module, "odd.pt");
  CHECK_THROWS_WITH(alexnet::train::eager_model(mismatched, torch::kCPU),
                    Catch::Contains("odd.pt") && Catch::Contains("model_options"));
  module.setattr("model_options", std::string("not json"));
  CHECK_THROWS_WITH(alexnet::train::eager_model(
                        alexnet::train::read_exported_model(module, "odd.pt"), torch::kCPU),
                    Catch::Contains("odd.pt") && Catch::Contains("model_options"));

  // Options whose layers have other widths are refused before a model of that size is built.
  const auto options = alexnet::train::model_options_to_json(model->options);
  auto wide = options;
  wide["width"] = 16.0;
  module.setattr("model_options", wide.dump());
  CHECK_THROWS_WITH(alexnet::train::eager_model(
                        alexnet::train::read_exported_model(module, "wide.pt"), torch::kCPU),
                    Catch::Contains("wide.pt") && Catch::Contains("layer conv1"));
  // Options that fit the weights but not the network the file computes (another activation,
  // no LRN) are refused too: the rebuilt model would give other results.
  for (const auto& [key, value] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"activation", "tanh"}, {"lrn", false}, {"pool_kernel", 2}}) {
    auto altered = options;
    altered[key] = value;
    module.setattr("model_options", altered.dump());
    INFO(key);
    CHECK_THROWS_WITH(alexnet::train::eager_model(
                          alexnet::train::read_exported_model(module, "altered.pt"), torch::kCPU),
                      Catch::Contains("altered.pt") && Catch::Contains("does not describe"));
  }
  module.setattr("model_options", options.dump());
  CHECK_NOTHROW(alexnet::train::eager_model(alexnet::train::read_exported_model(module, "ok.pt"),
                                            torch::kCPU));
}

TEST_CASE("fp16 is refused on the CPU, naming it and CUDA", "[precision]") {
  auto model = tiny_model();
  CHECK_THROWS_WITH(alexnet::train::forward_in_precision(
                        [&model](const torch::Tensor& x) { return model->forward(x); }, torch::kCPU,
                        Precision::kFloat16),
                    Catch::Contains("fp16") && Catch::Contains("CUDA"));
}

#if ALEXNET_WITH_OPENCV
// root/<class>/<i>.png: 64x64 images (no resizing before the model), two per class.
void write_tiny_folder(const fs::path& root, const std::vector<std::string>& classes) {
  torch::manual_seed(4);
  for (const auto& name : classes) {
    fs::create_directories(root / name);
    for (int i = 0; i < 2; ++i) {
      auto pixels = torch::randint(0, 256, {64, 64, 3}, torch::kUInt8);
      REQUIRE(cv::imwrite((root / name / (std::to_string(i) + ".png")).string(),
                          cv::Mat(64, 64, CV_8UC3, pixels.data_ptr<uint8_t>())));
    }
  }
}

TEST_CASE("eval and predict --precision bf16 run and stay close to fp32", "[precision]") {
  const fs::path dir = fresh_dir("eval_precision");
  const std::vector<std::string> classes{"a", "b", "c", "d", "e"};
  write_tiny_folder(dir / "data", classes);
  auto model = tiny_model();
  alexnet::train::ExportInfo info;
  info.class_names = classes;
  info.image_size = 64;
  info.resize_size = 64;
  info.mean = {120.0, 120.0, 120.0};
  info.std = {60.0, 60.0, 60.0};
  const std::string model_path = (dir / "model.pt").string();
  alexnet::train::save_torchscript(model, info, model_path);

  const std::string eval = std::string(ALEXNET_BINARY) + " eval --model " + model_path +
                           " --data " + (dir / "data").string() +
                           " --split train --workers 1 --json";
  const std::string out = (dir / "out.json").string(), err = (dir / "err.txt").string();
  REQUIRE(run_command(eval + " >" + out + " 2>" + err) == 0);
  const auto fp32 = nlohmann::json::parse(read_text(out));
  REQUIRE(run_command(eval + " --precision bf16 >" + out + " 2>" + err) == 0);
  const auto bf16 = nlohmann::json::parse(read_text(out));
  CHECK(fp32.at("precision") == "fp32");
  CHECK(bf16.at("precision") == "bf16");
  CHECK(bf16.at("samples") == 10);
  // Without native bfloat16 the command says it runs emulated, and the report records it.
  const bool native = alexnet::train::cpu_has_native_bf16();
  const bool noted = read_text(err).find("no native bfloat16") != std::string::npos;
  CHECK(noted == !native);
  CHECK(bf16.at("bf16_emulated") == !native);
  CHECK(fp32.at("bf16_emulated") == false);

  // A sample's cross-entropy, logsumexp(z) - z_label, moves by at most 2 max |dz|, so the mean
  // loss by at most 2 kBf16Tolerance times the largest float32 logit on these images.
  alexnet::data::DatasetOptions options;
  options.image_size = 64;
  const auto data = alexnet::data::open_dataset((dir / "data").string(), options);
  const auto exported = alexnet::train::load_exported_model(model_path);
  const auto pipeline = alexnet::transforms::eval_pipeline(exported.pipeline_options(), false);
  alexnet::transforms::Rng rng(0);
  std::vector<torch::Tensor> images;
  for (size_t i = 0; i < data->size(); ++i)
    images.push_back(pipeline->apply(data->get(i).image, rng));
  torch::NoGradGuard no_grad;
  const double largest = model->forward(torch::stack(images)).abs().max().item<double>();
  const double loss_difference =
      std::abs(bf16.at("loss").get<double>() - fp32.at("loss").get<double>());
  INFO("loss " << fp32.at("loss") << " (fp32), " << bf16.at("loss") << " (bf16); largest logit "
               << largest);
  CHECK(loss_difference <= 2 * kBf16Tolerance * largest);

  // predict runs in bf16; fp16 (CUDA only) and unknown precisions are refused, naming them.
  const std::string image = (dir / "data" / "a" / "0.png").string();
  const std::string predict =
      std::string(ALEXNET_BINARY) + " predict --model " + model_path + " --json --top 1 " + image;
  REQUIRE(run_command(predict + " --precision bf16 >" + out + " 2>" + err) == 0);
  const auto predicted = nlohmann::json::parse(read_text(out));
  REQUIRE(predicted.size() == 1);
  CHECK(predicted[0].at("top").size() == 1);
  CHECK(run_command(predict + " --precision fp16 >/dev/null 2>" + err) != 0);
  CHECK_THAT(read_text(err), Catch::Contains("fp16") && Catch::Contains("CUDA"));
  CHECK(run_command(eval + " --precision half >/dev/null 2>" + err) != 0);
  CHECK_THAT(read_text(err), Catch::Contains("'half'"));
  fs::remove_all(dir);
}
#endif

}  // namespace test_eval_precision
