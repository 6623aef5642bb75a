#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "model/alexnet.h"

namespace test_alexnet {

using alexnet::AlexNet;
using alexnet::AlexNetOptions;

namespace {

const alexnet::LayerInfo& find_layer(const std::vector<alexnet::LayerInfo>& layers,
                                     const std::string& name) {
  for (const auto& layer : layers) {
    if (layer.name == name) return layer;
  }
  FAIL("no layer " << name);
  throw std::logic_error("unreachable");
}

int64_t count(AlexNet& model) {
  int64_t total = 0;
  for (const auto& p : model->parameters()) total += p.numel();
  return total;
}

}  // namespace

TEST_CASE("AlexNet layer output shapes at 224 are the paper's", "[alexnet]") {
  torch::manual_seed(0);
  AlexNet model;
  const auto layers = model->layer_summary(224);
  const std::vector<std::pair<std::string, std::vector<int64_t>>> expected{
      {"conv1", {96, 55, 55}},  {"lrn1", {96, 55, 55}},   {"pool1", {96, 27, 27}},
      {"conv2", {256, 27, 27}}, {"lrn2", {256, 27, 27}},  {"pool2", {256, 13, 13}},
      {"conv3", {384, 13, 13}}, {"conv4", {384, 13, 13}}, {"conv5", {256, 13, 13}},
      {"pool5", {256, 6, 6}},   {"fc6", {4096}},          {"fc7", {4096}},
      {"fc8", {1000}}};
  REQUIRE(layers.size() == expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    CHECK(layers[i].name == expected[i].first);
    CHECK(layers[i].output_shape == expected[i].second);
  }
  CHECK(find_layer(layers, "conv2").params == 256 * 48 * 25 + 256);
  CHECK(find_layer(layers, "fc6").params == 4096 * 9216 + 4096);
}

TEST_CASE("AlexNet has the paper's 60,965,224 parameters", "[alexnet]") {
  AlexNet grouped;
  CHECK(count(grouped) == 60965224);
  AlexNet two(AlexNetOptions().devices({torch::kCPU, torch::kCPU}));
  CHECK(count(two) == 60965224);
  AlexNet ten(AlexNetOptions().num_classes(10));
  CHECK(count(ten) == 60965224 - 990 * 4096 - 990);
}

TEST_CASE("AlexNet registered names are the checkpoint contract", "[alexnet]") {
  AlexNet model(AlexNetOptions().num_classes(10));
  std::vector<std::string> names;
  for (const auto& item : model->named_parameters()) names.push_back(item.key());
  CHECK(names == std::vector<std::string>{"conv1.weight", "conv1.bias", "conv2.weight",
                                          "conv2.bias",   "conv3.weight", "conv3.bias",
                                          "conv4.weight", "conv4.bias",   "conv5.weight",
                                          "conv5.bias",   "fc6.weight",   "fc6.bias",
                                          "fc7.weight",   "fc7.bias",     "fc8.weight",
                                          "fc8.bias"});
  AlexNet two(AlexNetOptions().num_classes(10).devices({torch::kCPU, torch::kCPU}));
  auto params = two->named_parameters();
  CHECK(params.contains("column0.conv1.weight"));
  CHECK(params.contains("column1.fc8.bias"));
  CHECK(params["column0.fc8.weight"].size(0) == 5);
  CHECK(params["column0.conv3.weight"].sizes() == torch::IntArrayRef({192, 256, 3, 3}));
  CHECK(params["column1.conv4.weight"].sizes() == torch::IntArrayRef({192, 192, 3, 3}));
}

// The two forms compute the same sums split differently (grouped convolutions against one
// convolution per column), so they agree only up to rounding. In float64 (unit roundoff
// 1.1e-16) a sum of n < 10^5 terms (fc6 has 9216 inputs, conv1's weight gradient 2 x 55 x 55
// positions) is off by at most n * u < 1.1e-11 of its terms' magnitudes; 1e-9 of each tensor's
// scale leaves a hundred times that for cancellation and depth. A wrong column split, a missing
// LRN or a layer on the wrong slice changes values by their own size.
constexpr double kTwoDeviceTolerance = 1e-9;

bool agree(const torch::Tensor& a, const torch::Tensor& b) {
  const double scale = b.abs().max().item<double>();
  return (a - b).abs().max().item<double>() <= kTwoDeviceTolerance * scale;
}

// Runs the single-device form of `options` and its two-device form with the same parameters
// in float64 on `size` x `size` images and checks logits and gradients agree.
void check_two_device_form(const AlexNetOptions& options, int64_t size) {
  AlexNet single(options);
  AlexNet two(AlexNetOptions(options).devices({torch::kCPU, torch::kCPU}));
  two->load_single_device_state(single->single_device_state());
  single->to(torch::kFloat64);
  two->to(torch::kFloat64);

  const int64_t classes = options.num_classes();
  auto x = torch::randn({2, 3, size, size}, torch::kFloat64);
  auto target = torch::randint(classes, {2}, torch::kLong);
  auto out_single = single->forward(x);
  auto out_two = two->forward(x);
  REQUIRE(out_two.sizes() == out_single.sizes());
  CHECK(agree(out_two, out_single));
  torch::nn::functional::cross_entropy(out_single, target).backward();
  torch::nn::functional::cross_entropy(out_two, target).backward();

  // Gather the two-device gradients under single-device names.
  for (const auto& layer : single->layer_names()) {
    for (const std::string kind : {"weight", "bias"}) {
      auto g_single = single->named_parameters()[layer + "." + kind].grad();
      auto g_two = torch::cat({two->named_parameters()["column0." + layer + "." + kind].grad(),
                               two->named_parameters()["column1." + layer + "." + kind].grad()});
      INFO(layer << "." << kind);
      CHECK(agree(g_two, g_single));
    }
  }
}

TEST_CASE("Two-device form computes the single-device function and gradients", "[alexnet]") {
  torch::manual_seed(1);
  // The paper's network with 10 classes; 7 classes (fc8 split unevenly between the columns)
  // at a quarter of the width, where the split is the same.
  for (const auto& [classes, width] : {std::pair<int64_t, double>{10, 1.0}, {7, 0.25}}) {
    INFO(classes << " classes, width " << width);
    check_two_device_form(AlexNetOptions()
                              .num_classes(classes)
                              .width(width)
                              .dropout(0.0)
                              .init(alexnet::Init::kKaiming),
                          224);
  }
}

TEST_CASE("Two-device form of width and depth variants computes the single-device function",
          "[alexnet][variants]") {
  torch::manual_seed(11);
  const auto base = AlexNetOptions().num_classes(7).dropout(0.0).init(alexnet::Init::kKaiming);
  for (const auto& options : {AlexNetOptions(base).width(0.5).remove_conv("conv3"),
                              AlexNetOptions(base).width(0.25).remove_conv("conv5"),
                              AlexNetOptions(base).width(0.25).extra_conv("conv4"),
                              AlexNetOptions(base).width(0.3).extra_conv("conv3")}) {
    INFO("width " << options.width() << " remove '" << options.remove_conv() << "' extra '"
                  << options.extra_conv() << "'");
    check_two_device_form(options, 96);
  }
}

TEST_CASE("Single-device LRN is per column", "[alexnet]") {
  // Changing column 1's conv1 kernels must not change column 0's conv2 input.
  torch::manual_seed(2);
  AlexNet model(AlexNetOptions().num_classes(4).init(alexnet::Init::kKaiming));
  model->eval();
  auto x = torch::randn({1, 3, 224, 224});
  auto weight = model->named_parameters()["conv1.weight"];
  auto bias = model->named_parameters()["conv1.bias"];
  auto column0 = [&] {
    auto h = torch::relu(torch::conv2d(x, weight, bias, /*stride=*/4, /*padding=*/2));
    auto grouped = h.reshape({2, 48, 55, 55});
    return alexnet::local_response_norm(grouped, model->options.lrn_options())[0].clone();
  };
  auto a = column0();
  {
    torch::NoGradGuard no_grad;
    weight.narrow(0, 48, 48).mul_(10.0);
  }
  CHECK(torch::equal(a, column0()));
}

TEST_CASE("Paper and Kaiming initialisation statistics", "[alexnet]") {
  torch::manual_seed(3);
  AlexNet paper{AlexNetOptions()};
  auto params = paper->named_parameters();
  for (const auto& layer : paper->layer_names()) {
    auto w = params[layer + ".weight"];
    INFO(layer);
    CHECK(std::abs(w.mean().item<double>()) < 1e-3);
    CHECK(w.std().item<double>() == Approx(0.01).epsilon(0.05));
    const bool one = layer == "conv2" || layer == "conv4" || layer == "conv5" || layer == "fc6" ||
                     layer == "fc7";
    auto b = params[layer + ".bias"];
    CHECK(torch::all(b == (one ? 1.0 : 0.0)).item<bool>());
  }
  AlexNet kaiming(AlexNetOptions().init(alexnet::Init::kKaiming));
  auto kp = kaiming->named_parameters();
  const std::map<std::string, int64_t> fan_in{{"conv1", 3 * 121}, {"conv2", 48 * 25},
                                              {"conv3", 256 * 9}, {"conv4", 192 * 9},
                                              {"conv5", 192 * 9}, {"fc6", 9216},
                                              {"fc7", 4096},      {"fc8", 4096}};
  for (const auto& [layer, fan] : fan_in) {
    INFO(layer);
    CHECK(kp[layer + ".weight"].std().item<double>() ==
          Approx(std::sqrt(2.0 / fan)).epsilon(0.05));
    CHECK(torch::all(kp[layer + ".bias"] == 0).item<bool>());
  }
}

TEST_CASE("Both forms draw the same initial weights for the same seed", "[alexnet]") {
  torch::manual_seed(4);
  AlexNet single(AlexNetOptions().num_classes(10));
  torch::manual_seed(4);
  AlexNet two(AlexNetOptions().num_classes(10).devices({torch::kCPU, torch::kCPU}));
  auto a = single->single_device_state();
  auto b = two->single_device_state();
  for (const auto& item : a) {
    INFO(item.key());
    CHECK(torch::equal(item.value(), b[item.key()]));
  }
}

TEST_CASE("One backward pass reaches every parameter", "[alexnet]") {
  torch::manual_seed(5);
  for (bool lrn : {true, false}) {
    AlexNet model(AlexNetOptions().num_classes(5).lrn(lrn).init(alexnet::Init::kKaiming));
    model->train();
    auto out = model->forward(torch::randn({2, 3, 96, 96}));
    torch::nn::functional::cross_entropy(out, torch::tensor({1, 3})).backward();
    for (const auto& p : model->named_parameters()) {
      INFO(p.key());
      REQUIRE(p.value().grad().defined());
      CHECK(p.value().grad().abs().sum().item<double>() > 0);
    }
  }
}

TEST_CASE("AlexNet variants: small input, tanh, 2/2 pooling, one column", "[alexnet]") {
  torch::manual_seed(6);
  AlexNet small(AlexNetOptions().num_classes(10).in_channels(1));
  CHECK(small->forward(torch::randn({3, 1, 64, 64})).sizes() == torch::IntArrayRef({3, 10}));
  CHECK(small->features(torch::randn({3, 1, 64, 64})).sizes() == torch::IntArrayRef({3, 4096}));

  AlexNet tanh(AlexNetOptions().activation(alexnet::Activation::kTanh).num_classes(3));
  CHECK(tanh->forward(torch::randn({1, 3, 224, 224})).sizes() == torch::IntArrayRef({1, 3}));

  AlexNet pool22(AlexNetOptions().pool_kernel(2).pool_stride(2));
  auto layers = pool22->layer_summary(224);
  CHECK(find_layer(layers, "pool1").output_shape == std::vector<int64_t>{96, 27, 27});
  CHECK(find_layer(layers, "pool5").output_shape == std::vector<int64_t>{256, 6, 6});

  AlexNet half(AlexNetOptions().columns(1));
  auto half_layers = half->layer_summary(224);
  CHECK(find_layer(half_layers, "conv3").output_shape == std::vector<int64_t>{192, 13, 13});
  CHECK(find_layer(half_layers, "fc7").output_shape == std::vector<int64_t>{2048});
}

TEST_CASE("Width multiplies each column's share of every layer but fc8", "[alexnet][variants]") {
  const auto widths = [](const AlexNetOptions& options) {
    std::vector<int64_t> out;
    for (const auto& spec : alexnet::layer_table(options)) out.push_back(spec.width);
    return out;
  };
  // Per column; fc8's 0 means "the number of classes".
  CHECK(widths(AlexNetOptions()) == std::vector<int64_t>{48, 128, 192, 192, 128, 2048, 2048, 0});
  CHECK(widths(AlexNetOptions().width(0.5)) ==
        std::vector<int64_t>{24, 64, 96, 96, 64, 1024, 1024, 0});
  CHECK(widths(AlexNetOptions().width(2)) ==
        std::vector<int64_t>{96, 256, 384, 384, 256, 4096, 4096, 0});
  // Rounded to the nearest whole unit per column (conv1's 0.75 at the smallest width to 1).
  CHECK(widths(AlexNetOptions().width(0.3)) ==
        std::vector<int64_t>{14, 38, 58, 58, 38, 614, 614, 0});
  CHECK(widths(AlexNetOptions().width(alexnet::kMinWidth)) ==
        std::vector<int64_t>{1, 2, 3, 3, 2, 32, 32, 0});
  CHECK_THROWS_WITH(widths(AlexNetOptions().width(0.001)), Catch::Contains("width"));
}

TEST_CASE("Width 0.5: shapes and parameter counts from the table", "[alexnet][variants]") {
  AlexNet model(AlexNetOptions().width(0.5).num_classes(10));
  const auto layers = model->layer_summary(224);
  CHECK(find_layer(layers, "conv1").output_shape == std::vector<int64_t>{48, 55, 55});
  CHECK(find_layer(layers, "pool5").output_shape == std::vector<int64_t>{128, 6, 6});
  CHECK(find_layer(layers, "fc7").output_shape == std::vector<int64_t>{2048});
  CHECK(find_layer(layers, "fc8").output_shape == std::vector<int64_t>{10});
  // Two columns of 24, 64, 96, 96, 64, 1024, 1024 units; conv2, conv4, conv5 see their own
  // column (half the channels), conv3 and the fully connected layers see both.
  const int64_t conv1 = 48 * 3 * 11 * 11 + 48;
  const int64_t conv2 = 128 * 24 * 5 * 5 + 128;
  const int64_t conv3 = 192 * 128 * 3 * 3 + 192;
  const int64_t conv4 = 192 * 96 * 3 * 3 + 192;
  const int64_t conv5 = 128 * 96 * 3 * 3 + 128;
  const int64_t fc6 = 2048 * 128 * 6 * 6 + 2048;
  const int64_t fc7 = 2048 * 2048 + 2048;
  const int64_t fc8 = 10 * 2048 + 10;
  CHECK(find_layer(layers, "conv2").params == conv2);
  CHECK(find_layer(layers, "fc6").params == fc6);
  CHECK(count(model) == conv1 + conv2 + conv3 + conv4 + conv5 + fc6 + fc7 + fc8);
  AlexNet two(AlexNetOptions().width(0.5).num_classes(10).devices({torch::kCPU, torch::kCPU}));
  CHECK(count(two) == count(model));
  CHECK(model->features(torch::randn({2, 3, 64, 64})).sizes() == torch::IntArrayRef({2, 2048}));
}

TEST_CASE("Removing a convolution: the next layer takes its input", "[alexnet][variants]") {
  // The paper's model with 10 classes, layer by layer (see the test above for the formulas).
  const int64_t conv3 = 384 * 256 * 9 + 384, conv4 = 384 * 192 * 9 + 384;
  const int64_t conv5 = 256 * 192 * 9 + 256, fc6 = 4096 * 256 * 36 + 4096;
  const int64_t paper = 60965224 - 990 * 4096 - 990;

  AlexNet no3(AlexNetOptions().num_classes(10).remove_conv("conv3"));
  CHECK(no3->layer_names() ==
        std::vector<std::string>{"conv1", "conv2", "conv4", "conv5", "fc6", "fc7", "fc8"});
  // conv4 now reads conv2's 2 x 128 maps, still per column.
  CHECK(no3->named_parameters()["conv4.weight"].sizes() == torch::IntArrayRef({384, 128, 3, 3}));
  CHECK(count(no3) == paper - conv3 - conv4 + (384 * 128 * 9 + 384));

  AlexNet no4(AlexNetOptions().num_classes(10).remove_conv("conv4"));
  CHECK(count(no4) == paper - conv4);

  // Without conv5, conv4's maps are pooled and flattened into fc6.
  AlexNet no5(AlexNetOptions().num_classes(10).remove_conv("conv5"));
  const auto layers = no5->layer_summary(224);
  CHECK(find_layer(layers, "pool4").output_shape == std::vector<int64_t>{384, 6, 6});
  CHECK(count(no5) == paper - conv5 - fc6 + (4096 * 384 * 36 + 4096));
  CHECK(no5->forward(torch::randn({1, 3, 224, 224})).sizes() == torch::IntArrayRef({1, 10}));
}

TEST_CASE("Adding a convolution: a copy of the layer follows it", "[alexnet][variants]") {
  const int64_t paper = 60965224 - 990 * 4096 - 990;
  AlexNet extra4(AlexNetOptions().num_classes(10).extra_conv("conv4"));
  CHECK(extra4->layer_names() == std::vector<std::string>{"conv1", "conv2", "conv3", "conv4",
                                                          "conv4_extra", "conv5", "fc6", "fc7",
                                                          "fc8"});
  CHECK(count(extra4) == paper + 384 * 192 * 9 + 384);
  const auto params = extra4->named_parameters();
  CHECK(params["conv4_extra.weight"].sizes() == torch::IntArrayRef({384, 192, 3, 3}));
  CHECK(params["conv4_extra.bias"].eq(1.0).all().item<bool>());  // as conv4 (paper init)
  const auto layers = extra4->layer_summary(224);
  CHECK(find_layer(layers, "conv4_extra").output_shape == std::vector<int64_t>{384, 13, 13});

  // After conv5, the pooling moves to the copy.
  AlexNet extra5(AlexNetOptions().num_classes(10).extra_conv("conv5").width(0.25));
  std::vector<std::string> names;
  for (const auto& layer : extra5->layer_summary(224)) names.push_back(layer.name);
  CHECK(names == std::vector<std::string>{"conv1", "lrn1", "pool1", "conv2", "lrn2", "pool2",
                                          "conv3", "conv4", "conv5", "conv5_extra", "pool5_extra",
                                          "fc6", "fc7", "fc8"});
  AlexNet two(AlexNetOptions().num_classes(10).extra_conv("conv4").width(0.25).devices(
      {torch::kCPU, torch::kCPU}));
  CHECK(two->named_parameters().contains("column1.conv4_extra.weight"));
}

TEST_CASE("AlexNet refuses bad options and inputs with clear errors", "[alexnet]") {
  using Catch::Matchers::Contains;
  CHECK_THROWS_WITH(AlexNet(AlexNetOptions().num_classes(0)), Contains("num_classes"));
  CHECK_THROWS_WITH(AlexNet(AlexNetOptions().dropout(1.0)), Contains("dropout"));
  CHECK_THROWS_WITH(AlexNet(AlexNetOptions().columns(3)), Contains("columns"));
  CHECK_THROWS_WITH(AlexNet(AlexNetOptions().columns(1).devices({torch::kCPU, torch::kCPU})),
                    Contains("two columns"));
  CHECK_THROWS_WITH(AlexNet(AlexNetOptions().lrn_options(alexnet::LocalResponseNormOptions(2))),
                    Contains("odd"));
  CHECK_THROWS_WITH(AlexNet(AlexNetOptions().width(0)), Contains("width") && Contains("0"));
  CHECK_THROWS_WITH(AlexNet(AlexNetOptions().width(-0.5)), Contains("width") && Contains("-0.5"));
  CHECK_THROWS_WITH(AlexNet(AlexNetOptions().width(std::nan(""))), Contains("width"));
  CHECK_THROWS_WITH(AlexNet(AlexNetOptions().remove_conv("conv1")),
                    Contains("remove_conv") && Contains("'conv1'"));
  CHECK_THROWS_WITH(AlexNet(AlexNetOptions().remove_conv("fc6")),
                    Contains("remove_conv") && Contains("'fc6'"));
  CHECK_THROWS_WITH(AlexNet(AlexNetOptions().extra_conv("conv9")),
                    Contains("extra_conv") && Contains("'conv9'"));
  CHECK_THROWS_WITH(AlexNet(AlexNetOptions().extra_conv("conv4").remove_conv("conv4")),
                    Contains("extra_conv") && Contains("remove_conv"));
  CHECK_THROWS_WITH(alexnet::parse_devices("cpu,gpu"), Contains("gpu"));
  CHECK_THROWS_WITH(alexnet::parse_devices("cpu,cpu,cpu"), Contains("one or two"));
  CHECK_THROWS_WITH(alexnet::parse_init("xavier"), Contains("paper, kaiming"));
  AlexNet model(AlexNetOptions().num_classes(2));
  CHECK_THROWS_WITH(model->forward(torch::randn({1, 1, 224, 224})), Contains("[N, 3, H, W]"));
  CHECK_THROWS_WITH(model->forward(torch::randn({1, 3, 32, 32})), Contains("63x63"));
  auto state = model->single_device_state();
  state.erase("fc8.bias");
  CHECK_THROWS_WITH(model->load_single_device_state(state), Contains("fc8.bias"));
}

TEST_CASE("kMinImageSide is the smallest input the paper's layers accept", "[alexnet]") {
  // The side of the maps entering fc6 for an input of `side`, by the layer table's arithmetic;
  // 0 where a pooling window no longer fits.
  const AlexNetOptions options;
  auto side_before_fc6 = [&](int64_t side) {
    for (const auto& spec : alexnet::layer_table(options)) {
      if (!spec.conv) break;
      side = (side + 2 * spec.padding - spec.kernel) / spec.stride + 1;
      if (spec.pool_after) {
        if (side < options.pool_kernel()) return int64_t{0};
        side = (side - options.pool_kernel()) / options.pool_stride() + 1;
      }
    }
    return side;
  };
  CHECK(side_before_fc6(alexnet::kMinImageSide) == 1);
  CHECK(side_before_fc6(alexnet::kMinImageSide - 1) == 0);
  torch::manual_seed(0);
  AlexNet model(AlexNetOptions().num_classes(3).width(0.125).devices({torch::kCPU}));
  model->eval();
  const int64_t side = alexnet::kMinImageSide;
  CHECK(model->forward(torch::randn({1, 3, side, side})).sizes() == torch::IntArrayRef({1, 3}));
}

}  // namespace test_alexnet
