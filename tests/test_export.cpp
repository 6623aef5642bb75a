#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <torch/script.h>
#include <torch/torch.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "model/alexnet.h"
#include "tests/app_support.h"
#include "tests/archive_support.h"
#include "tests/export_support.h"
#include "tests/support.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/export.h"
#include "train/exported_model.h"

#if ALEXNET_WITH_OPENCV
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "data/image_decode.h"
#include "transforms/transforms.h"
#endif

namespace test_export {

using alexnet::AlexNet;
using alexnet::AlexNetOptions;
using alexnet::train::ExportInfo;
namespace fs = std::filesystem;
using namespace alexnet::testing;

namespace {

// The model of ten_class_model in float64, which export_torchscript writes in float64.
AlexNet make_double_model(AlexNetOptions options) {
  AlexNet model = ten_class_model(std::move(options));
  model->to(torch::kFloat64);
  return model;
}

// Two images with the spread of mean-subtracted pixels, so that the LRN scale matters.
torch::Tensor tiny_input(int64_t channels, torch::ScalarType dtype = torch::kFloat32) {
  torch::manual_seed(1);
  return (torch::randn({2, channels, 64, 64}) * 60.0).to(dtype);
}

// How exported modules are compared with the eager model: both in float64.
//
// The exported module calls the same convolution, pooling and linear ops on the same weights as
// the eager model; only the LRN is written differently (sums of shifted channel slices: each
// sum of n <= 5 squares is added in another order, then rsqrt and sqrt). With unit roundoff u
// = 1.1e-16 that changes an LRN output by about 10 u of its size; the layers after it add sums of
// at most 9216 terms, each off by at most 9216 u of its terms' magnitudes, so the outputs agree to
// about 1e-11 of their scale. 1e-9 leaves a hundred times that for cancellation. A wrong LRN
// convention (alpha divided by n or not) changes the logits by more than 1e-3 of their scale
// (the test "Export follows the model's LRN convention"), a missing layer or wrong constant by
// their own size.
constexpr double kExportTolerance = 1e-9;

// max |actual - expected| relative to the largest |expected| (at least 1).
double relative_difference(const torch::Tensor& actual, const torch::Tensor& expected) {
  REQUIRE(actual.sizes() == expected.sizes());
  const double scale = std::max(1.0, expected.abs().max().item<double>());
  return (actual - expected).abs().max().item<double>() / scale;
}

torch::Tensor run(torch::jit::Module& module, const std::string& method, const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  return module.get_method(method)({x}).toTensor();
}

torch::Tensor eager(AlexNet& model, const std::string& method, const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  return method == "forward" ? model->forward(x) : model->features(x);
}

void write_floats(const fs::path& path, const torch::Tensor& t) {
  const auto c = t.contiguous().to(torch::kFloat32);
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(c.data_ptr<float>()),
            static_cast<std::streamsize>(c.numel() * sizeof(float)));
}

torch::Tensor read_doubles(const fs::path& path, std::vector<int64_t> shape) {
  const std::string bytes = read_text(path);
  auto t = torch::empty(shape, torch::kFloat64);
  REQUIRE(bytes.size() == static_cast<size_t>(t.numel()) * sizeof(double));
  std::memcpy(t.data_ptr<double>(), bytes.data(), bytes.size());
  return t;
}

}  // namespace

TEST_CASE("Exported TorchScript computes the eager model in eval mode", "[export]") {
  // The paper's network, then each variant at a quarter of its width (the same structure,
  // 16 times fewer weights in the fully connected layers).
  const auto quarter = [] { return AlexNetOptions().width(0.25); };
  const std::vector<std::pair<std::string, AlexNetOptions>> variants{
      {"paper LRN (alpha not divided by n)", AlexNetOptions()},
      {"LRN alpha divided by n",
       quarter().lrn_options(
           alexnet::LocalResponseNormOptions(5).alpha(5e-3).divide_alpha_by_size(true))},
      {"LRN n=3, beta 0.6, k 1",
       quarter().lrn_options(alexnet::LocalResponseNormOptions(3).beta(0.6).k(1.0))},
      {"tanh", quarter().activation(alexnet::Activation::kTanh)},
      {"2/2 pooling", quarter().pool_kernel(2).pool_stride(2)},
      {"one column", quarter().columns(1)},
      {"no LRN", quarter().lrn(false)},
      {"one input channel", quarter().in_channels(1)},
  };
  for (const auto& [name, options] : variants) {
    INFO(name);
    AlexNet model = make_double_model(options);
    const auto x = tiny_input(model->options.in_channels(), torch::kFloat64);
    auto scripted = alexnet::train::export_torchscript(model, ten_class_info(x.size(1)));
    for (const std::string method : {"forward", "features"}) {
      INFO(method);
      CHECK(relative_difference(run(scripted, method, x), eager(model, method, x)) <
            kExportTolerance);
    }
  }
}

TEST_CASE("Exported depth and width variants compute the eager model", "[export]") {
  const std::vector<std::pair<std::string, AlexNetOptions>> variants{
      {"width 0.5", AlexNetOptions().width(0.5)},
      {"without conv3", AlexNetOptions().width(0.25).remove_conv("conv3")},
      {"without conv5", AlexNetOptions().width(0.25).remove_conv("conv5")},
      {"conv5_extra, one column", AlexNetOptions().width(0.25).extra_conv("conv5").columns(1)},
      {"conv4_extra, two devices",
       AlexNetOptions().width(0.25).extra_conv("conv4").devices({torch::kCPU, torch::kCPU})},
  };
  for (const auto& [name, options] : variants) {
    INFO(name);
    AlexNet model = make_double_model(options);
    const auto x = tiny_input(3, torch::kFloat64);
    auto scripted = alexnet::train::export_torchscript(model, ten_class_info(3));
    for (const std::string method : {"forward", "features"}) {
      INFO(method);
      CHECK(relative_difference(run(scripted, method, x), eager(model, method, x)) <
            kExportTolerance);
    }
    std::vector<std::string> names;
    for (const auto& sub : scripted.named_children()) names.push_back(sub.name);
    CHECK(names == model->layer_names());
  }
}

TEST_CASE("Export follows the model's LRN convention and constants", "[export]") {
  // Sensitivity check for the test above: the same weights with the other alpha/n
  // convention give clearly different logits.
  AlexNet model = ten_class_model(AlexNetOptions());
  const auto x = tiny_input(3);
  const auto expected = eager(model, "forward", x);
  AlexNet other = ten_class_model(AlexNetOptions().lrn_options(
      alexnet::LocalResponseNormOptions(5).divide_alpha_by_size(true)));
  auto scripted = alexnet::train::export_torchscript(other, ten_class_info(3));
  CHECK(relative_difference(run(scripted, "forward", x), expected) > 1e-3);
}

TEST_CASE("The TorchScript LRN computes the fused LRN", "[export]") {
  AlexNet model = make_double_model(AlexNetOptions());
  const auto x = tiny_input(3, torch::kFloat64);
  auto scripted = alexnet::train::export_torchscript(model, ten_class_info(3));
  CHECK(relative_difference(run(scripted, "forward", x), eager(model, "forward", x)) <
        kExportTolerance);
}

TEST_CASE("A two-device model exports as its single-device function", "[export]") {
  AlexNet two = make_double_model(AlexNetOptions().devices({torch::kCPU, torch::kCPU}));
  const auto x = tiny_input(3, torch::kFloat64);
  auto scripted = alexnet::train::export_torchscript(two, ten_class_info(3));
  CHECK(relative_difference(run(scripted, "forward", x), eager(two, "forward", x)) <
        kExportTolerance);
  std::vector<std::string> names;
  for (const auto& p : scripted.named_parameters()) names.push_back(p.name);
  CHECK(names.front() == "conv1.weight");
  CHECK(names.size() == 16);
}

TEST_CASE("Exported module carries its attributes and single-device parameter names", "[export]") {
  AlexNet model = ten_class_model(AlexNetOptions());
  ExportInfo info = ten_class_info(3);
  info.mean = {123.5, 116.25, 103.0};
  info.std = {};
  auto scripted = alexnet::train::export_torchscript(model, info);

  const auto names = scripted.attr("class_names").toList();
  REQUIRE(names.size() == 10);
  CHECK(names.get(3).toStringRef() == "class 3");
  CHECK(scripted.attr("image_size").toInt() == 64);
  CHECK(scripted.attr("resize_size").toInt() == 72);
  CHECK(scripted.attr("in_channels").toInt() == 3);
  CHECK(scripted.attr("num_classes").toInt() == 10);
  const auto mean = scripted.attr("mean").toList();
  REQUIRE(mean.size() == 3);
  CHECK(mean.get(1).toDouble() == 116.25);
  CHECK(scripted.attr("std").toList().size() == 0);
  const auto options = nlohmann::json::parse(scripted.attr("model_options").toStringRef());
  CHECK(options.at("num_classes") == 10);
  CHECK_FALSE(scripted.is_training());
  for (const auto& sub : scripted.modules()) CHECK_FALSE(sub.is_training());

  std::vector<std::string> expected;
  for (const auto& layer : model->layer_names()) {
    expected.push_back(layer + ".weight");
    expected.push_back(layer + ".bias");
  }
  std::vector<std::string> actual;
  for (const auto& p : scripted.named_parameters()) {
    actual.push_back(p.name);
    CHECK_FALSE(p.value.requires_grad());
    CHECK(p.value.device().is_cpu());
  }
  CHECK(actual == expected);
  CHECK(run(scripted, "features", tiny_input(3)).sizes() == torch::IntArrayRef({2, 4096}));
}

TEST_CASE("Exported model refuses inputs of the wrong shape, naming the shape", "[export]") {
  AlexNet model = ten_class_model(AlexNetOptions());
  auto scripted = alexnet::train::export_torchscript(model, ten_class_info(3));
  CHECK_THROWS_WITH(run(scripted, "forward", torch::zeros({1, 1, 64, 64})),
                    Catch::Contains("expects input [N, 3, H, W]"));
  CHECK_THROWS_WITH(run(scripted, "forward", torch::zeros({1, 3, 32, 32})),
                    Catch::Contains("at least 63x63"));
}

TEST_CASE("Export refuses preprocessing information that does not fit the model", "[export]") {
  AlexNet model = ten_class_model(AlexNetOptions());
  ExportInfo info = ten_class_info(3);
  info.mean = {1.0, 2.0};
  CHECK_THROWS_WITH(alexnet::train::export_torchscript(model, info), Catch::Contains("mean"));
  info = ten_class_info(3);
  info.class_names.pop_back();
  CHECK_THROWS_WITH(alexnet::train::export_torchscript(model, info),
                    Catch::Contains("class_names holds 9 names for 10 classes"));
  info = ten_class_info(3);
  info.resize_size = 60;
  CHECK_THROWS_WITH(alexnet::train::export_torchscript(model, info),
                    Catch::Contains("resize_size"));
}

TEST_CASE("save_torchscript writes atomically and the file loads back", "[export]") {
  const fs::path dir = fresh_dir("save");
  const fs::path path = dir / "run" / "model.pt";
  // A quarter of the paper's width: the file's writing, not the network, is under test.
  AlexNet model = make_double_model(AlexNetOptions().width(0.25));
  const auto x = tiny_input(3, torch::kFloat64);
  alexnet::train::save_torchscript(model, ten_class_info(3), path.string());
  REQUIRE(fs::exists(path));
  for (const auto& entry : fs::directory_iterator(path.parent_path())) {
    CHECK(entry.path().filename() == "model.pt");  // no temporary file left behind
  }
  auto loaded = torch::jit::load(path.string());
  CHECK(relative_difference(run(loaded, "forward", x), eager(model, "forward", x)) <
        kExportTolerance);
  CHECK(loaded.attr("class_names").toList().size() == 10);

  // Overwriting replaces the model as a whole.
  AlexNet other =
      make_double_model(AlexNetOptions().width(0.25).activation(alexnet::Activation::kTanh));
  alexnet::train::save_torchscript(other, ten_class_info(3), path.string());
  auto reloaded = torch::jit::load(path.string());
  CHECK(relative_difference(run(reloaded, "forward", x), eager(other, "forward", x)) <
        kExportTolerance);

  CHECK_THROWS_WITH(alexnet::train::save_torchscript(model, ten_class_info(3), "/proc/no/model.pt"),
                    Catch::Contains("/proc/no"));
  fs::remove_all(dir);
}

// A module with the attributes of an exported model of 3 classes and 1 input channel, except
// that `leave_out` is not registered and `replace` is registered as a string.
torch::jit::Module module_with_attributes(const std::string& leave_out,
                                          const std::string& replace) {
  torch::jit::Module module("Exported");
  auto add = [&](const std::string& name, const c10::TypePtr& type, const c10::IValue& value) {
    if (name == leave_out) return;
    if (name == replace) {
      module.register_attribute(name, c10::StringType::get(), std::string("wrong"));
    } else {
      module.register_attribute(name, type, value);
    }
  };
  add("class_names", c10::ListType::ofStrings(), c10::List<std::string>({"a", "b", "c"}));
  add("image_size", c10::IntType::get(), int64_t{64});
  add("resize_size", c10::IntType::get(), int64_t{72});
  add("in_channels", c10::IntType::get(), int64_t{1});
  add("num_classes", c10::IntType::get(), int64_t{3});
  add("mean", c10::ListType::ofFloats(), c10::List<double>({100.0}));
  add("std", c10::ListType::ofFloats(), c10::List<double>({50.0}));
  module.define("def forward(self, x):\n    return x\n");
  return module;
}

TEST_CASE("load_exported_model reads the attributes and names what is wrong", "[export]") {
  using alexnet::train::load_exported_model;
  const fs::path dir = fresh_dir("exported_model");
  AlexNet model = ten_class_model(AlexNetOptions().in_channels(1));
  const std::string good = (dir / "model.pt").string();
  alexnet::train::save_torchscript(model, ten_class_info(1), good);
  const auto loaded = load_exported_model(good);
  CHECK(loaded.path == good);
  CHECK(loaded.in_channels == 1);
  CHECK(loaded.num_classes == 10);
  CHECK(loaded.info.class_names.at(4) == "class 4");
  CHECK(loaded.info.mean == std::vector<double>{100.0});
  CHECK(loaded.info.std == std::vector<double>{50.0});
  CHECK_FALSE(loaded.module.is_training());
  const auto pipeline = loaded.pipeline_options();
  CHECK(pipeline.resize == 72);
  CHECK(pipeline.crop == 64);
  CHECK(pipeline.channels == 1);

  const std::string missing = (dir / "missing.pt").string();
  CHECK_THROWS_WITH(load_exported_model(missing), Catch::Contains(missing));
  // A tensor record cut short inside a valid archive (LibTorch would read past its end, and
  // running the module crashed) is refused; the same copy uncut loads.
  const std::string cut = (dir / "cut.pt").string();
  REQUIRE_FALSE(alexnet::testing::copy_archive_cutting_record(good, cut, "/0", 4).empty());
  CHECK_THROWS_WITH(load_exported_model(cut), Catch::Contains(cut) && Catch::Contains("damaged"));
  const std::string copy = (dir / "copy.pt").string();
  alexnet::testing::copy_archive_cutting_record(good, copy, "/0", fs::file_size(good));
  CHECK(load_exported_model(copy).num_classes == 10);
  const std::string junk = (dir / "junk.pt").string();
  std::ofstream(junk) << "not a model";
  CHECK_THROWS_WITH(load_exported_model(junk), Catch::Contains(junk));
  // Other files a user may give instead: each named for what it is.
  alexnet::train::Checkpoint checkpoint;
  checkpoint.config = {{"model", alexnet::train::model_options_to_json(model->options)}};
  checkpoint.model = model->single_device_state();
  const std::string checkpoint_path = (dir / "last.pt").string();
  alexnet::train::save_checkpoint(checkpoint, checkpoint_path);
  CHECK_THROWS_WITH(load_exported_model(checkpoint_path),
                    Catch::Contains(checkpoint_path) && Catch::Contains("--checkpoint"));
  CHECK_THROWS_WITH(load_exported_model(dir.string()), Catch::Contains("is a folder"));
  const std::string onnx = (dir / "model.onnx").string();
  std::ofstream(onnx) << "protobuf bytes";
  CHECK_THROWS_WITH(load_exported_model(onnx), Catch::Contains("ONNX"));

  for (const std::string name :
       {"class_names", "image_size", "resize_size", "in_channels", "num_classes", "mean", "std"}) {
    const std::string without = (dir / ("without_" + name + ".pt")).string();
    module_with_attributes(name, "").save(without);
    CHECK_THROWS_WITH(load_exported_model(without),
                      Catch::Contains(without) && Catch::Contains("'" + name + "' is missing"));
    const std::string wrong = (dir / ("wrong_" + name + ".pt")).string();
    module_with_attributes("", name).save(wrong);
    CHECK_THROWS_WITH(load_exported_model(wrong),
                      Catch::Contains(wrong) && Catch::Contains("'" + name + "' is not a"));
  }
  // Values of the right type that do not fit together.
  auto bad = module_with_attributes("", "");
  bad.setattr("resize_size", int64_t{60});
  CHECK_THROWS_WITH(alexnet::train::read_exported_model(bad, "bad.pt"),
                    Catch::Contains("bad.pt") && Catch::Contains("'resize_size'"));
  bad = module_with_attributes("", "");
  bad.setattr("mean", c10::List<double>({1.0, 2.0, 3.0}));
  CHECK_THROWS_WITH(alexnet::train::read_exported_model(bad, "bad.pt"),
                    Catch::Contains("'mean' holds 3 values for 1 input channels"));
  bad = module_with_attributes("", "");
  bad.setattr("class_names", c10::List<std::string>({"a"}));
  CHECK_THROWS_WITH(alexnet::train::read_exported_model(bad, "bad.pt"),
                    Catch::Contains("'class_names' holds 1 names for 3 classes"));
  // Parameters a damaged or altered file may hold, each refused naming the file and parameter:
  // data shorter than the shape (LibTorch would read past it), another type, NaN, and first
  // and last layers that do not fit in_channels and num_classes.
  {
    auto check_refused = [&](const std::function<void(torch::jit::Module&)>& alter,
                             const std::string& expected) {
      auto module = alexnet::train::export_torchscript(model, ten_class_info(1));
      alter(module);
      INFO(expected);
      CHECK_THROWS_WITH(alexnet::train::read_exported_model(module, "altered.pt"),
                        Catch::Contains("altered.pt") && Catch::Contains(expected));
    };
    auto set = [](torch::jit::Module& module, const std::string& layer, const std::string& name,
                  const torch::Tensor& value) {
      module.attr(layer).toModule().setattr(name, value);
    };
    check_refused(
        [&](torch::jit::Module& m) {
          auto short_data = torch::zeros({10});
          short_data.storage().set_nbytes(16);
          set(m, "fc8", "bias", short_data);
        },
        "'fc8.bias' holds 16 bytes where its shape [10] needs 40");
    check_refused(
        [&](torch::jit::Module& m) {
          set(m, "conv3", "bias",
              m.attr("conv3").toModule().attr("bias").toTensor().to(torch::kDouble));
        },
        "'conv3.bias' is Double, not float32");
    check_refused(
        [&](torch::jit::Module& m) { set(m, "fc7", "bias", torch::full({4096}, std::nanf(""))); },
        "'fc7.bias' holds NaN or infinite values");
    check_refused(
        [&](torch::jit::Module& m) {
          m.setattr("num_classes", int64_t{7});
          m.setattr("class_names", c10::List<std::string>());
        },
        "'fc8.weight' gives 10 outputs, but attribute num_classes is 7");
    check_refused(
        [&](torch::jit::Module& m) {
          m.setattr("in_channels", int64_t{3});
          m.setattr("mean", c10::List<double>({1.0, 2.0, 3.0}));
          m.setattr("std", c10::List<double>({1.0, 2.0, 3.0}));
        },
        "'conv1.weight' takes 1 input channels, but attribute in_channels is 3");
  }
  // The smallest image the network accepts, as read_onnx_metadata requires of an ONNX file.
  bad = module_with_attributes("", "");
  bad.setattr("image_size", int64_t{62});
  CHECK_THROWS_WITH(alexnet::train::read_exported_model(bad, "bad.pt"),
                    Catch::Contains("'image_size' must be at least 63, is 62"));
  fs::remove_all(dir);
}

TEST_CASE("Python's torch.jit.load runs the exported file with the same outputs", "[export]") {
  if (skip_without_python("torch")) return;
  const std::string python = "/usr/bin/python3";
  const fs::path dir = fresh_dir("python");
  AlexNet model = make_double_model(AlexNetOptions());
  // float32 values in the input file, exact in float64; the script computes in the weights'
  // float64 and writes float64 results.
  const auto x = tiny_input(3).to(torch::kFloat64);
  alexnet::train::save_torchscript(model, ten_class_info(3), (dir / "model.pt").string());
  write_floats(dir / "input.bin", x);
  const std::string script = std::string(ALEXNET_SOURCE_DIR) + "/tests/python/check_torchscript.py";
  const std::string command = python + " " + script + " " + (dir / "model.pt").string() + " " +
                              (dir / "input.bin").string() + " 2 3 64 64 " + dir.string() + " 2>" +
                              (dir / "stderr.txt").string();
  const int status = run_command(command);
  INFO("python stderr: " << read_text(dir / "stderr.txt"));
  REQUIRE(status == 0);

  const auto logits = read_doubles(dir / "logits.bin", {2, 10});
  const auto features = read_doubles(dir / "features.bin", {2, 4096});
  CHECK(relative_difference(logits, eager(model, "forward", x)) < kExportTolerance);
  CHECK(relative_difference(features, eager(model, "features", x)) < kExportTolerance);
  const auto attributes = nlohmann::json::parse(read_text(dir / "attributes.json"));
  INFO("PyTorch " << attributes.value("torch_version", "?"));
  CHECK(attributes.at("class_names").size() == 10);
  CHECK(attributes.at("image_size") == 64);
  CHECK(attributes.at("in_channels") == 3);
  // Loaded in inference mode, the module and each of its submodules.
  CHECK(attributes.at("training").size() == 9);
  for (const auto& training : attributes.at("training")) CHECK(training == false);
  CHECK(attributes.at("mean") == nlohmann::json({100.0, 100.0, 100.0}));
  // The 16 parameters, nothing else.
  const auto& keys = attributes.at("state_dict_keys");
  CHECK(keys.size() == 16);
  CHECK(std::find(keys.begin(), keys.end(), "conv1.weight") != keys.end());
  fs::remove_all(dir);
}

#if ALEXNET_WITH_OPENCV
TEST_CASE("alexnet predict prints top-5 classes from the exported file alone", "[export]") {
  const fs::path dir = fresh_dir("predict");
  AlexNet model = ten_class_model(AlexNetOptions().in_channels(1));
  ExportInfo info = ten_class_info(1);
  info.class_names[7] = "Sneaker";
  const std::string model_path = (dir / "model.pt").string();
  alexnet::train::save_torchscript(model, info, model_path);

  // A colour 80x100 picture, a grey 64x64 one, a missing file and a file that is no image.
  torch::manual_seed(3);
  const auto colour = torch::randint(0, 256, {80, 100, 3}, torch::kUInt8);
  const auto grey = torch::randint(0, 256, {64, 64}, torch::kUInt8);
  const std::string a = (dir / "a.png").string(), b = (dir / "b.png").string();
  const std::string missing = (dir / "missing.png").string(), bad = (dir / "bad.png").string();
  REQUIRE(cv::imwrite(a, cv::Mat(80, 100, CV_8UC3, colour.data_ptr<uint8_t>())));
  REQUIRE(cv::imwrite(b, cv::Mat(64, 64, CV_8UC1, grey.data_ptr<uint8_t>())));
  std::ofstream(bad) << "not an image";

  const std::string binary = ALEXNET_BINARY;
  const std::string images = a + " " + missing + " " + b + " " + bad;
  const int json_status = run_command(binary + " predict --model " + model_path + " --json " +
                                      images + " >" + (dir / "out.json").string());
  CHECK(json_status == 1);
  const auto out = nlohmann::json::parse(read_text(dir / "out.json"));
  REQUIRE(out.size() == 4);
  CHECK(out[1].at("error").get<std::string>().find("missing.png") != std::string::npos);
  CHECK(out[3].at("error").get<std::string>().find("bad.png") != std::string::npos);
  for (size_t i : {size_t{0}, size_t{2}}) {
    const auto& top = out[i].at("top");
    REQUIRE(top.size() == 5);
    double total = 0.0;
    for (size_t r = 0; r < top.size(); ++r) {
      total += top[r].at("probability").get<double>();
      if (r > 0) CHECK(top[r].at("probability") <= top[r - 1].at("probability"));
      const int64_t label = top[r].at("label");
      CHECK(top[r].at("class") == info.class_names.at(static_cast<size_t>(label)));
    }
    CHECK(total <= 1.0 + 1e-9);
  }

  // The same probabilities as the model on the image prepared by the training transforms:
  // shorter side to resize_size, central crop, grey, minus mean, divided by std.
  alexnet::transforms::Rng rng(0);
  auto image = alexnet::data::decode_image_file(a, 0);
  image = alexnet::transforms::ResizeShorter(info.resize_size).apply(image, rng);
  image = alexnet::transforms::CenterCrop(info.image_size).apply(image, rng).to(torch::kFloat32);
  auto x = ((image[0] * 0.299 + image[1] * 0.587 + image[2] * 0.114).round() - 100.0) / 50.0;
  const auto p = torch::softmax(eager(model, "forward", x.view({1, 1, 64, 64})), 1)[0];
  const int64_t best = out[0]["top"][0].at("label");
  CHECK(best == p.argmax().item<int64_t>());
  CHECK(out[0]["top"][0].at("probability").get<double>() ==
        Approx(p[best].item<double>()).epsilon(1e-5));

  // Human-readable output: one line per image, errors on stderr naming the file.
  const int text_status =
      run_command(binary + " predict --model " + model_path + " --top 3 " + images + " >" +
                  (dir / "out.txt").string() + " 2>" + (dir / "err.txt").string());
  CHECK(text_status == 1);
  const std::string text = read_text(dir / "out.txt");
  CHECK(text.find(a + ": 1. ") != std::string::npos);
  CHECK(text.find(" 3. ") != std::string::npos);
  CHECK(text.find(" 4. ") == std::string::npos);
  CHECK(read_text(dir / "err.txt").find("missing.png") != std::string::npos);

  CHECK(run_command(binary + " predict --model " + model_path + " " + a + " >/dev/null") == 0);
  CHECK(run_command(binary + " predict --model " + (dir / "nope.pt").string() + " " + a +
                    " >/dev/null 2>&1") != 0);
  fs::remove_all(dir);
}
#endif

#if ALEXNET_WITH_OPENCV
namespace {

// root/<class>/<i>.png for each (class, count): random 72x72 colour images.
void write_image_folder(const fs::path& root,
                        const std::vector<std::pair<std::string, int>>& classes) {
  torch::manual_seed(5);
  for (const auto& [name, count] : classes) {
    fs::create_directories(root / name);
    for (int i = 0; i < count; ++i) {
      auto pixels = torch::randint(0, 256, {72, 72, 3}, torch::kUInt8);
      REQUIRE(cv::imwrite((root / name / (std::to_string(i) + ".png")).string(),
                          cv::Mat(72, 72, CV_8UC3, pixels.data_ptr<uint8_t>())));
    }
  }
}

}  // namespace

TEST_CASE("alexnet eval refuses data with other classes unless matched by name", "[export]") {
  const fs::path dir = fresh_dir("eval_classes");
  const std::string model_path = (dir / "model.pt").string();
  save_constant_model(model_path, {"cat", "dog", "fox"});  // predicts fox
  write_image_folder(dir / "lacks_dog", {{"cat", 1}, {"fox", 3}});
  write_image_folder(dir / "has_owl", {{"cat", 1}, {"fox", 1}, {"owl", 1}});
  const std::string eval = std::string(ALEXNET_BINARY) + " eval --model " + model_path +
                           " --split train --workers 1 --json";
  const std::string err = (dir / "err.txt").string(), out = (dir / "out.json").string();

  // Class indices would shift (fox is 1 in the data, 2 in the model): refused, naming dog.
  CHECK(run_command(eval + " --data " + (dir / "lacks_dog").string() + " 2>" + err) != 0);
  std::string message = read_text(err);
  INFO(message);
  CHECK(message.find("lacks_dog") != std::string::npos);
  CHECK(message.find("model's classes 'dog' are missing") != std::string::npos);
  CHECK(message.find("--match-classes-by-name") != std::string::npos);

  // Matched by name, every fox image is right and the cat image wrong.
  REQUIRE(run_command(eval + " --match-classes-by-name --data " + (dir / "lacks_dog").string() +
                      " >" + out + " 2>" + err) == 0);
  const auto result = nlohmann::json::parse(read_text(out));
  CHECK(result.at("samples") == 4);
  CHECK(result.at("top1_error").get<double>() == Approx(0.25));

  // A class the model lacks is refused, with the flag too.
  CHECK(run_command(eval + " --data " + (dir / "has_owl").string() + " 2>" + err) != 0);
  message = read_text(err);
  CHECK(message.find("'dog'") != std::string::npos);
  CHECK(message.find("data's classes 'owl' are not among the model's") != std::string::npos);
  CHECK(run_command(eval + " --match-classes-by-name --data " + (dir / "has_owl").string() + " 2>" +
                    err) != 0);
  message = read_text(err);
  CHECK(message.find("'owl'") != std::string::npos);
  CHECK(message.find("cannot be scored") != std::string::npos);
  fs::remove_all(dir);
}
#endif

}  // namespace test_export
