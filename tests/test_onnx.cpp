#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "model/alexnet.h"
#include "tests/export_support.h"
#include "tests/support.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/export.h"
#include "train/onnx_export.h"
#include "train/protobuf_wire.h"

#if ALEXNET_WITH_OPENCV
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#endif
#if ALEXNET_WITH_OPENCV_DNN
#include "data/image_decode.h"
#include "train/onnx_model.h"
#include "transforms/transforms.h"
#endif
#if ALEXNET_WITH_ONNX_CHECKER
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#endif

namespace test_onnx {

using alexnet::AlexNet;
using alexnet::AlexNetOptions;
using alexnet::train::ExportInfo;
namespace fs = std::filesystem;
using namespace alexnet::testing;

// Images with the spread of mean-subtracted but unscaled pixels, so that the LRN's scale
// (k + alpha * sum of squares) differs from k and the LRN convention shows in the logits.
torch::Tensor spread_input(int64_t batch, int64_t channels, int64_t side) {
  torch::manual_seed(1);
  return torch::randn({batch, channels, side, side}) * 60.0;
}

// max |actual - expected| relative to the largest |expected| (at least 1).
double relative_difference(const torch::Tensor& actual, const torch::Tensor& expected) {
  REQUIRE(actual.sizes() == expected.sizes());
  const double scale = std::max(1.0, expected.abs().max().item<double>());
  return (actual.to(torch::kFloat64) - expected.to(torch::kFloat64)).abs().max().item<double>() /
         scale;
}

// How OpenCV's logits are compared with LibTorch's: both float32, the same weights.
//
// Each layer's output is a sum of K products (K = 363 for conv1 up to 9216 for fc6, 2304 for
// conv3-5) that the two libraries add in different orders (blocked GEMM, im2col, their own
// LRN loops). With float32's unit roundoff u = 6e-8, such a sum differs by about sqrt(K) u
// of the sum of its terms' magnitudes when the rounding errors are independent: at most
// 96 u = 6e-6 for fc6. Eight such layers, each passing on its input's relative error (ReLU,
// max-pooling and the LRN, whose derivative is below 1 in magnitude, do not amplify it), add
// up to about 8 x 6e-6 = 5e-5 of the logits' scale, and measured differences are around
// 1e-6. 1e-4 covers the estimate twice over. A wrong LRN convention (alpha divided by n or
// not) changes the logits by more than 1e-3 of their scale on these inputs (the test
// "The LRN convention shows at the comparison's tolerance"), a missing layer, a wrong
// grouping or a wrong constant by their own size.
constexpr double kOnnxTolerance = 1e-4;

torch::Tensor libtorch_logits(AlexNet& model, const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  return model->forward(x);
}

// The bytes of a file.
std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST_CASE("Protocol-buffer wire format: known encodings and round trips", "[onnx]") {
  using alexnet::train::protobuf::Field;
  using alexnet::train::protobuf::MessageReader;
  using alexnet::train::protobuf::MessageWriter;
  using alexnet::train::protobuf::WireType;
  // The protocol-buffer documentation's examples: field 1 = 150 is 08 96 01; field 2 =
  // "testing" is 12 07 74 65 73 74 69 6e 67.
  CHECK(MessageWriter().integer(1, 150).data() == std::string("\x08\x96\x01", 3));
  CHECK(MessageWriter().bytes(2, "testing").data() == std::string("\x12\x07testing", 9));
  // -1 as int64: ten bytes of two's complement.
  CHECK(MessageWriter().integer(1, -1).data() ==
        std::string("\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11));
  // 1.0f is 0x3f800000, little-endian, wire type 5.
  CHECK(MessageWriter().float32(3, 1.0f).data() == std::string("\x1d\x00\x00\x80\x3f", 5));

  MessageWriter nested;
  nested.integer(1, 300).bytes(2, std::string(200, 'x'));
  MessageWriter message;
  message.integer(1, -5).message(7, nested).float32(2, 0.25f).integer(20000, 1);
  MessageReader reader(message.data(), "test message");
  Field field;
  REQUIRE(reader.next(field));
  CHECK(field.number == 1);
  CHECK(static_cast<int64_t>(field.integer) == -5);
  REQUIRE(reader.next(field));
  CHECK(field.number == 7);
  CHECK(field.type == WireType::kLengthDelimited);
  MessageReader inner(field.bytes, "nested");
  Field part;
  REQUIRE(inner.next(part));
  CHECK(part.integer == 300);
  REQUIRE(inner.next(part));
  CHECK(part.bytes == std::string(200, 'x'));
  CHECK_FALSE(inner.next(part));
  REQUIRE(reader.next(field));
  CHECK(field.type == WireType::kFixed32);
  float value = 0;
  const auto bits = static_cast<uint32_t>(field.integer);
  std::memcpy(&value, &bits, sizeof(value));
  CHECK(value == 0.25f);
  REQUIRE(reader.next(field));
  CHECK(field.number == 20000);
  CHECK_FALSE(reader.next(field));

  const std::string truncated = message.data().substr(0, 10);
  MessageReader bad(truncated, "cut.onnx");
  CHECK_THROWS_WITH(bad.next(field), Catch::Contains("cut.onnx") && Catch::Contains("truncated"));
}

TEST_CASE("The ONNX graph follows the layer table, with the LRN per column", "[onnx]") {
#if !ALEXNET_WITH_ONNX_CHECKER
  WARN(
      "skipped: built without libonnx-dev (install it, e.g. third_party/install_deps.sh, to "
      "run ONNX's checker and parser on the exported files)");
#else
  const fs::path dir = fresh_dir("onnx_checker");
  const std::vector<std::pair<std::string, AlexNetOptions> > variants{
      {"paper", AlexNetOptions()},
      {"one column, tanh, no LRN",
       AlexNetOptions().columns(1).activation(alexnet::Activation::kTanh).lrn(false)},
      {"without conv3, conv5_extra, width 0.25",
       AlexNetOptions().width(0.25).remove_conv("conv3").extra_conv("conv5")},
  };
  for (const auto& [name, options] : variants) {
    INFO(name);
    AlexNet model = ten_class_model(options);
    const std::string path = (dir / "model.onnx").string();
    alexnet::train::save_onnx(model, ten_class_info(3), path);
    CHECK_NOTHROW(onnx::checker::check_model(path));

    // Read back with ONNX's own protobuf classes: an independent parser of the encoding.
    onnx::ModelProto proto;
    REQUIRE(proto.ParseFromString(file_bytes(path)));
    CHECK(proto.ir_version() == 6);
    REQUIRE(proto.opset_import_size() == 1);
    CHECK(proto.opset_import(0).version() == alexnet::train::kOnnxOpset);
    const auto& graph = proto.graph();
    std::vector<std::string> convs, gemms, initializers;
    for (const auto& node : graph.node()) {
      if (node.op_type() == "Conv") convs.push_back(node.name());
      if (node.op_type() == "Gemm") gemms.push_back(node.name());
      CHECK(node.op_type() != "Dropout");
    }
    std::vector<std::string> layers = convs;
    layers.insert(layers.end(), gemms.begin(), gemms.end());
    CHECK(layers == model->layer_names());
    const auto state = model->single_device_state();
    for (const auto& tensor : graph.initializer()) {
      initializers.push_back(tensor.name());
      CHECK(tensor.data_type() == onnx::TensorProto::FLOAT);
      const torch::Tensor* parameter = state.find(tensor.name());
      REQUIRE(parameter != nullptr);
      // fc6's weight holds the 6 x 6 pooling of a 1 x 1 map folded in (64-pixel input).
      if (tensor.name() != "fc6.weight") {
        CHECK(std::vector<int64_t>(tensor.dims().begin(), tensor.dims().end()) ==
              parameter->sizes().vec());
        REQUIRE(tensor.raw_data().size() == static_cast<size_t>(parameter->numel()) * 4);
        const auto stored = torch::from_blob(const_cast<char*>(tensor.raw_data().data()),
                                             parameter->sizes(), torch::kFloat32);
        CHECK(torch::equal(stored, *parameter));
      }
    }
    CHECK(initializers.size() == 2 * model->layer_names().size());
    REQUIRE(graph.input_size() == 1);
    CHECK(graph.input(0).name() == "input");
    CHECK(graph.input(0).type().tensor_type().shape().dim(0).dim_param() == "N");
    CHECK(graph.input(0).type().tensor_type().shape().dim(2).dim_value() == 64);
    REQUIRE(graph.output_size() == 1);
    CHECK(graph.output(0).name() == model->layer_names().back());

    int lrns = 0, splits = 0;
    for (const auto& node : graph.node()) {
      if (node.op_type() == "Split") ++splits;
      if (node.op_type() != "LRN") continue;
      ++lrns;
      for (const auto& attribute : node.attribute()) {
        // The paper's alpha (1e-4, not divided by n) times n.
        if (attribute.name() == "alpha") CHECK(attribute.f() == Approx(5e-4).epsilon(1e-6));
        if (attribute.name() == "bias") CHECK(attribute.f() == 2.0f);
        if (attribute.name() == "size") CHECK(attribute.i() == 5);
      }
    }
    const int columns = static_cast<int>(options.columns());
    CHECK(lrns == (options.lrn() ? 2 * columns : 0));
    CHECK(splits == (options.lrn() && columns == 2 ? 2 : 0));

    std::map<std::string, std::string> metadata;
    for (const auto& entry : proto.metadata_props()) metadata[entry.key()] = entry.value();
    CHECK(nlohmann::json::parse(metadata.at("class_names")).at(9) == "class 9");
    CHECK(metadata.at("image_size") == "64");
    CHECK(metadata.at("in_channels") == "3");
    CHECK(nlohmann::json::parse(metadata.at("mean")) == nlohmann::json({100.0, 100.0, 100.0}));
    CHECK(
        alexnet::train::model_options_from_json(nlohmann::json::parse(metadata.at("model_options")))
            .columns() == options.columns());
  }
  fs::remove_all(dir);
#endif
}

TEST_CASE("read_onnx_metadata reads what save_onnx wrote and names what is wrong", "[onnx]") {
  const fs::path dir = fresh_dir("onnx_metadata");
  AlexNet model = ten_class_model(AlexNetOptions().in_channels(1).width(0.25));
  ExportInfo info = ten_class_info(1);
  info.class_names[3] = "Dress, \"long\"";
  const std::string path = (dir / "model.onnx").string();
  alexnet::train::save_onnx(model, info, path);
  const auto metadata = alexnet::train::read_onnx_metadata(path);
  CHECK(metadata.info.class_names == info.class_names);
  CHECK(metadata.info.image_size == 64);
  CHECK(metadata.info.resize_size == 72);
  CHECK(metadata.info.mean == info.mean);
  CHECK(metadata.info.std == info.std);
  CHECK(metadata.in_channels == 1);
  CHECK(metadata.num_classes == 10);

  // A property given again later in the file overrides the first (protobuf's merge).
  auto with_property = [&](const std::string& key, const std::string& value) {
    alexnet::train::protobuf::MessageWriter entry, extra;
    entry.bytes(1, key).bytes(2, value);
    extra.message(14, entry);
    const std::string bad = (dir / ("bad_" + key + ".onnx")).string();
    std::ofstream(bad, std::ios::binary) << file_bytes(path) << extra.data();
    return bad;
  };
  const std::string bad_channels = with_property("in_channels", "5");
  CHECK_THROWS_WITH(
      alexnet::train::read_onnx_metadata(bad_channels),
      Catch::Contains(bad_channels) && Catch::Contains("in_channels") && Catch::Contains("5"));
  const std::string bad_mean = with_property("mean", "[1, 2, 3]");
  CHECK_THROWS_WITH(alexnet::train::read_onnx_metadata(bad_mean),
                    Catch::Contains("'mean'") && Catch::Contains("3 values"));
  const std::string small_image = with_property("image_size", "62");
  CHECK_THROWS_WITH(alexnet::train::read_onnx_metadata(small_image),
                    Catch::Contains("'image_size' must be at least 63, is 62"));
  const std::string bad_names = with_property("class_names", "not json");
  CHECK_THROWS_WITH(alexnet::train::read_onnx_metadata(bad_names),
                    Catch::Contains("class_names") && Catch::Contains("not JSON"));

  const std::string text = (dir / "text.onnx").string();
  std::ofstream(text) << "this is not an ONNX file\n";
  CHECK_THROWS_WITH(alexnet::train::read_onnx_metadata(text), Catch::Contains(text));
  const std::string missing = (dir / "missing.onnx").string();
  CHECK_THROWS_WITH(alexnet::train::read_onnx_metadata(missing), Catch::Contains(missing));

  ExportInfo wrong = ten_class_info(1);
  wrong.class_names.pop_back();
  CHECK_THROWS_WITH(alexnet::train::save_onnx(model, wrong, (dir / "wrong.onnx").string()),
                    Catch::Contains("class_names holds 9 names for 10 classes"));
  CHECK_FALSE(fs::exists(dir / "wrong.onnx"));
  fs::remove_all(dir);
}

#if ALEXNET_WITH_OPENCV_DNN
// The logits of OpenCV's DNN module for `x` from the file save_onnx writes for `model`.
torch::Tensor opencv_logits(AlexNet& model, const ExportInfo& info, const torch::Tensor& x,
                            const fs::path& dir) {
  const std::string path = (dir / "model.onnx").string();
  alexnet::train::save_onnx(model, info, path);
  alexnet::train::OnnxModel onnx(path);
  return onnx.forward(x);
}

TEST_CASE("OpenCV's DNN module computes LibTorch's logits from the exported file", "[onnx]") {
  const fs::path dir = fresh_dir("onnx_opencv");
  struct Variant {
    std::string name;
    AlexNetOptions options;
    int64_t image_size;
  };
  // The paper's width at 64 and 224 pixels; a quarter of it elsewhere, which keeps every
  // structural variant and makes each file 16 times smaller.
  const std::vector<Variant> variants{
      {"paper (two columns, alpha not divided by n)", AlexNetOptions(), 64},
      {"LRN alpha divided by n (PyTorch's convention)",
       AlexNetOptions().width(0.25).lrn_options(
           alexnet::LocalResponseNormOptions(5).alpha(5e-3).divide_alpha_by_size(true)),
       64},
      {"LRN n=3, beta 0.6, k 1",
       AlexNetOptions().width(0.25).lrn_options(
           alexnet::LocalResponseNormOptions(3).beta(0.6).k(1.0)),
       64},
      {"one column", AlexNetOptions().width(0.25).columns(1), 64},
      {"two devices", AlexNetOptions().width(0.25).devices({torch::kCPU, torch::kCPU}), 64},
      {"tanh", AlexNetOptions().width(0.25).activation(alexnet::Activation::kTanh), 64},
      {"2/2 pooling, no LRN", AlexNetOptions().width(0.25).pool_kernel(2).pool_stride(2).lrn(false),
       64},
      {"one input channel", AlexNetOptions().width(0.25).in_channels(1), 64},
      {"without conv4, conv3_extra",
       AlexNetOptions().width(0.25).remove_conv("conv4").extra_conv("conv3"), 64},
      // 224 pixels: 6 x 6 maps before fc6, no pooling to add.
      {"224 pixels", AlexNetOptions(), 224},
      // 256 pixels: 7 x 7 maps, pooled to 6 x 6 by a 2/1 AveragePool.
      {"256 pixels, width 0.25", AlexNetOptions().width(0.25), 256},
      // 96 pixels: 2 x 2 maps, pooling folded into fc6.
      {"96 pixels", AlexNetOptions().width(0.25), 96},
  };
  for (const auto& variant : variants) {
    INFO(variant.name);
    AlexNet model = ten_class_model(variant.options);
    const int64_t channels = model->options.in_channels();
    const auto x = spread_input(3, channels, variant.image_size);
    const auto expected = libtorch_logits(model, x);
    const auto actual = opencv_logits(model, ten_class_info(channels, variant.image_size), x, dir);
    CHECK(relative_difference(actual, expected) < kOnnxTolerance);
    // The logits vary between the images (the comparison is not of constants).
    CHECK((expected[0] - expected[1]).abs().max().item<double>() >
          1e-2 * expected.abs().max().item<double>());
  }
  fs::remove_all(dir);
}

TEST_CASE("The LRN convention shows at the comparison's tolerance", "[onnx]") {
  // Sensitivity check for the test above: the file exported with one LRN convention against
  // LibTorch running the same weights with the other.
  const fs::path dir = fresh_dir("onnx_lrn_convention");
  auto paper = AlexNetOptions();
  auto divided =
      AlexNetOptions().lrn_options(alexnet::LocalResponseNormOptions(5).divide_alpha_by_size(true));
  AlexNet exported = ten_class_model(paper);
  AlexNet other = ten_class_model(divided);
  other->load_single_device_state(exported->single_device_state());
  const auto x = spread_input(2, 3, 64);
  const auto actual = opencv_logits(exported, ten_class_info(3), x, dir);
  CHECK(relative_difference(actual, libtorch_logits(exported, x)) < kOnnxTolerance);
  CHECK(relative_difference(actual, libtorch_logits(other, x)) > 10 * kOnnxTolerance);
  fs::remove_all(dir);
}

TEST_CASE("OnnxModel refuses inputs of the wrong shape and files it cannot read", "[onnx]") {
  const fs::path dir = fresh_dir("onnx_refuses");
  AlexNet model = ten_class_model(AlexNetOptions().width(0.25));
  const std::string path = (dir / "model.onnx").string();
  alexnet::train::save_onnx(model, ten_class_info(3), path);
  alexnet::train::OnnxModel onnx(path);
  CHECK_THROWS_WITH(onnx.forward(torch::zeros({1, 3, 72, 72})),
                    Catch::Contains(path) && Catch::Contains("[1, 3, 72, 72]"));
  CHECK_THROWS_WITH(onnx.forward(torch::zeros({1, 1, 64, 64})), Catch::Contains("[N, 3, 64, 64]"));
  const std::string missing = (dir / "missing.onnx").string();
  CHECK_THROWS_WITH(alexnet::train::OnnxModel(missing), Catch::Contains(missing));
  fs::remove_all(dir);
}
#endif

#if ALEXNET_WITH_OPENCV_DNN && ALEXNET_WITH_OPENCV
TEST_CASE("On a Fashion-MNIST image, export and predict agree across ONNX and TorchScript",
          "[onnx]") {
  if (!fs::exists(std::string(alexnet::data::kFashionMnistDir) + "/t10k-images-idx3-ubyte.gz")) {
    WARN("skipped: dataset-fashion-mnist is not installed");
    return;
  }
  const fs::path dir = fresh_dir("onnx_fashion");
  // A checkpoint as `alexnet train` writes one for the demo's model (untrained weights), at a
  // quarter of its width.
  AlexNetOptions options = AlexNetOptions().width(0.25).in_channels(1).num_classes(10);
  AlexNet model = ten_class_model(options);
  const auto test = alexnet::data::open_dataset("fashion-mnist", "test");
  alexnet::train::Checkpoint checkpoint;
  checkpoint.config = {{"model", alexnet::train::model_options_to_json(model->options)}};
  checkpoint.model = model->single_device_state();
  checkpoint.class_names = test->class_names();
  checkpoint.mean = {72.9};
  checkpoint.std = {90.0};
  checkpoint.image_size = 64;
  checkpoint.resize_size = 64;
  const std::string checkpoint_path = (dir / "checkpoint.pt").string();
  alexnet::train::save_checkpoint(checkpoint, checkpoint_path);

  const std::string binary = ALEXNET_BINARY;
  const std::string onnx_path = (dir / "model.onnx").string();
  const std::string script_path = (dir / "model.pt").string();
  REQUIRE(run_command(binary + " export --format onnx --checkpoint " + checkpoint_path + " --out " +
                      onnx_path + " --json >" + (dir / "export.json").string()) == 0);
  const auto exported = nlohmann::json::parse(read_text(dir / "export.json"));
  CHECK(exported.at("format") == "onnx");
  CHECK(exported.at("max_relative_difference").get<double>() < kOnnxTolerance);
  REQUIRE(run_command(binary + " export --checkpoint " + checkpoint_path + " --out " + script_path +
                      " >/dev/null") == 0);
  CHECK(run_command(binary + " export --format tflite --checkpoint " + checkpoint_path +
                    " --out x 2>" + (dir / "err.txt").string()) != 0);
  CHECK(read_text(dir / "err.txt").find("tflite") != std::string::npos);
  // Outputs that would destroy something are refused: the checkpoint itself, a device.
  const std::string err = (dir / "err.txt").string();
  CHECK(run_command(binary + " export --checkpoint " + checkpoint_path + " --out " +
                    checkpoint_path + " 2>" + err) == 2);
  CHECK(read_text(err).find("the checkpoint itself") != std::string::npos);
  CHECK(alexnet::train::load_checkpoint(checkpoint_path).model.size() == checkpoint.model.size());
  CHECK(run_command(binary + " export --checkpoint " + checkpoint_path + " --out /dev/null 2>" +
                    err) == 2);
  CHECK(fs::is_character_file("/dev/null"));
  // Weights that are not finite are refused naming the parameter; nothing is written.
  auto broken = checkpoint;
  broken.model["fc6.weight"] = broken.model["fc6.weight"].clone();
  broken.model["fc6.weight"][0][0] = std::numeric_limits<float>::quiet_NaN();
  const std::string broken_path = (dir / "broken.pt").string();
  alexnet::train::save_checkpoint(broken, broken_path);
  CHECK(run_command(binary + " export --checkpoint " + broken_path + " --out " +
                    (dir / "broken-model.pt").string() + " 2>" + err) == 1);
  CHECK(read_text(err).find("fc6.weight") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "broken-model.pt"));

  // Test images 0 .. 3 as PNG files, prepared by the evaluation pipeline as predict does.
  alexnet::train::OnnxModel onnx(onnx_path);
  const auto pipeline = alexnet::transforms::eval_pipeline(onnx.pipeline_options(), false);
  std::vector<torch::Tensor> inputs;
  std::string images;
  for (size_t i = 0; i < 4; ++i) {
    // [3, 28, 28] uint8, the grey image in every channel.
    const auto grey = test->get(i).image[0].contiguous();
    const std::string png = (dir / ("image" + std::to_string(i) + ".png")).string();
    REQUIRE(cv::imwrite(png, cv::Mat(28, 28, CV_8UC1, grey.data_ptr<uint8_t>())));
    images += " " + png;
    alexnet::transforms::Rng rng(0);
    inputs.push_back(pipeline->apply(alexnet::data::decode_image_file(png, 0), rng));
  }
  const auto x = torch::stack(inputs);
  CHECK(x.sizes() == c10::IntArrayRef({4, 1, 64, 64}));
  CHECK(relative_difference(onnx.forward(x), libtorch_logits(model, x)) < kOnnxTolerance);

  // predict gives the same classes and probabilities from either file.
  for (const std::string& file : {onnx_path, script_path}) {
    REQUIRE(run_command(binary + " predict --json --top 3 --model " + file + images + " >" + file +
                        ".json") == 0);
  }
  const auto from_onnx = nlohmann::json::parse(read_text(onnx_path + ".json"));
  const auto from_script = nlohmann::json::parse(read_text(script_path + ".json"));
  REQUIRE(from_onnx.size() == 4);
  REQUIRE(from_script.size() == 4);
  for (size_t i = 0; i < 4; ++i) {
    for (size_t r = 0; r < 3; ++r) {
      const auto& a = from_onnx[i].at("top")[r];
      const auto& b = from_script[i].at("top")[r];
      CHECK(a.at("class") == b.at("class"));
      CHECK(a.at("probability").get<double>() ==
            Approx(b.at("probability").get<double>()).margin(1e-4));
    }
  }
  CHECK(run_command(binary + " predict --model " + (dir / "nope.onnx").string() + images + " 2>" +
                    (dir / "err.txt").string()) != 0);
  CHECK(read_text(dir / "err.txt").find("nope.onnx") != std::string::npos);
  fs::remove_all(dir);
}
#endif

}  // namespace test_onnx
