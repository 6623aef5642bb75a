#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include <torch/script.h>
#include <torch/torch.h>
#include <catch2/catch.hpp>

#include "experiments/feature_extraction.h"
#include "experiments/feature_index.h"
#include "experiments/kernel_grid.h"
#include "experiments/training_experiments.h"
#include "tests/app_support.h"
#include "tests/data_support.h"
#include "tests/support.h"
#if ALEXNET_WITH_OPENCV
#include "draw/drawing.h"
#endif

namespace test_experiments {

#if ALEXNET_WITH_OPENCV
using namespace alexnet::draw;
#endif

using namespace alexnet::experiments;
namespace fs = std::filesystem;
using namespace alexnet::testing;

namespace {

// A tiny in-memory data set: image i is [3, 12, 12] filled with a pattern of i, label i % 3.
std::shared_ptr<InMemoryDataset> tiny_dataset(size_t n) {
  auto dataset =
      std::make_shared<InMemoryDataset>("tiny", std::vector<std::string>{"zero", "one", "two"});
  for (size_t i = 0; i < n; ++i) {
    auto image = torch::arange(3 * 12 * 12, torch::kLong).view({3, 12, 12});
    image = (image * static_cast<int64_t>(i + 1) * 7 + static_cast<int64_t>(i) * 13) % 256;
    dataset->add(image.to(torch::kUInt8), static_cast<int64_t>(i % 3));
  }
  return dataset;
}

// A TorchScript module with the exported model's attributes and methods: features(x) is a
// ReLU of a random projection of 4x4-pooled pixels, forward(x) maps those to 3 logits, and
// conv1.weight is a [6, 3, 5, 5] kernel bank. Its image size is the smallest an exported
// model may give (alexnet::kMinImageSide, 63, rounded up to 64).
torch::jit::Module tiny_model() {
  torch::manual_seed(0);
  torch::jit::Module conv1("Conv1");
  conv1.register_parameter("weight", torch::randn({6, 3, 5, 5}), /*is_buffer=*/false);
  torch::jit::Module model("TinyExported");
  model.register_module("conv1", conv1);
  model.register_parameter("projection", torch::randn({16, 3 * 4 * 4}), false);
  // Named as an exported AlexNet names its last layer, which readers check against num_classes.
  torch::jit::Module fc8("Fc8");
  fc8.register_parameter("weight", torch::randn({3, 16}), /*is_buffer=*/false);
  fc8.register_parameter("bias", torch::zeros({3}), /*is_buffer=*/false);
  model.register_module("fc8", fc8);
  model.register_attribute("class_names", c10::ListType::ofStrings(),
                           c10::List<std::string>({"zero", "one", "two"}));
  model.register_attribute("image_size", c10::IntType::get(), int64_t{64});
  model.register_attribute("resize_size", c10::IntType::get(), int64_t{72});
  model.register_attribute("in_channels", c10::IntType::get(), int64_t{3});
  model.register_attribute("num_classes", c10::IntType::get(), int64_t{3});
  model.register_attribute("mean", c10::ListType::ofFloats(), c10::List<double>({100, 110, 120}));
  model.register_attribute("std", c10::ListType::ofFloats(), c10::List<double>());
  model.define(R"JIT(
def features(self, x):
    pooled = torch.flatten(torch.adaptive_avg_pool2d(x, [4, 4]), 1)
    return torch.relu(torch.matmul(pooled, self.projection.t()))

def forward(self, x):
    return torch.matmul(self.features(x), self.fc8.weight.t()) + self.fc8.bias
)JIT");
  model.eval();
  return model;
}

void write_big_endian(std::ofstream& out, std::initializer_list<uint32_t> values) {
  for (uint32_t v : values) {
    for (int shift = 24; shift >= 0; shift -= 8) out.put(static_cast<char>((v >> shift) & 0xFF));
  }
}

// Uncompressed t10k IDX files of n 12 x 12 images with distinct patterns, label i % 4.
void write_idx_test_split(const std::string& dir, uint32_t n) {
  fs::create_directories(dir);
  std::ofstream images(dir + "/t10k-images-idx3-ubyte", std::ios::binary);
  write_big_endian(images, {0x803, n, 12, 12});
  for (uint32_t i = 0; i < n; ++i) {
    for (uint32_t p = 0; p < 144; ++p) images.put(static_cast<char>((p * (i + 3) + 17 * i) % 256));
  }
  std::ofstream labels(dir + "/t10k-labels-idx1-ubyte", std::ios::binary);
  write_big_endian(labels, {0x801, n});
  for (uint32_t i = 0; i < n; ++i) labels.put(static_cast<char>(i % 4));
}

// Runs the alexnet binary with `args`, stdout to `out`; returns the exit status.
// Runs the alexnet binary; its standard output goes to `out`, its errors and notes to
// `out`.err.
int run_alexnet(const std::string& args, const std::string& out) {
  const std::string command =
      std::string(ALEXNET_BINARY) + " " + args + " > " + out + " 2> " + out + ".err";
  return std::system(command.c_str());
}

}  // namespace

TEST_CASE("Kernel grid puts the first column's kernels above the second's", "[experiments]") {
  const auto options =
      KernelGridOptions().blocks(2).tiles_per_row(16).scale(4).gap(3).block_gap(18).margin(6);
  // 96 kernels of 11 x 11: two blocks of 3 rows of 16 tiles of 44 x 44 pixels.
  const auto [height, width] = kernel_grid_size(96, 11, 11, options);
  CHECK(width == 2 * 6 + 16 * 44 + 15 * 3);
  CHECK(height == 2 * 6 + 2 * (3 * 44 + 2 * 3) + 18);
  CHECK(kernel_tile_origin(0, 96, 11, 11, options) == std::make_pair(int64_t{6}, int64_t{6}));
  CHECK(kernel_tile_origin(17, 96, 11, 11, options) ==
        std::make_pair(int64_t{6 + 47}, int64_t{6 + 47}));
  // Kernel 47 ends the first block; kernel 48 starts the second, one block gap lower.
  const auto last_first = kernel_tile_origin(47, 96, 11, 11, options);
  const auto first_second = kernel_tile_origin(48, 96, 11, 11, options);
  CHECK(last_first.second == 6 + 15 * 47);
  CHECK(first_second.second == 6);
  CHECK(first_second.first == last_first.first + 44 + 18);

  torch::manual_seed(3);
  const auto weight = torch::randn({96, 3, 11, 11});
  const auto picture = kernel_grid(weight, options);
  REQUIRE(picture.sizes() == torch::IntArrayRef({height, width, 3}));
  CHECK(picture.scalar_type() == torch::kUInt8);
  // The gap between the blocks is background.
  const int64_t gap_row = last_first.first + 44 + 9;
  CHECK(picture[gap_row].eq(255).all().item<bool>());
  // Each tile spans its own 0..255 range and repeats each kernel pixel 4 x 4 times.
  for (int64_t k : {0, 47, 48, 95}) {
    const auto [top, left] = kernel_tile_origin(k, 96, 11, 11, options);
    const auto tile = picture.slice(0, top, top + 44).slice(1, left, left + 44);
    CHECK(tile.min().item<int>() == 0);
    CHECK(tile.max().item<int>() == 255);
    const auto w = weight[k];
    const auto argmax = w.flatten().argmax().item<int64_t>();
    const int64_t c = argmax / 121, y = (argmax % 121) / 11, x = argmax % 11;
    CHECK(tile[y * 4 + 3][x * 4][c].item<int>() == 255);
  }
}

TEST_CASE("Kernel grid draws grey tiles for one channel and rejects bad layouts", "[experiments]") {
  auto weight = torch::zeros({4, 1, 2, 2});
  weight[0][0][0][0] = 1.0;  // kernel 0: one bright pixel
  weight[1].fill_(0.5);      // kernel 1: constant -> mid-grey
  const auto options = KernelGridOptions().blocks(1).tiles_per_row(4).scale(1).gap(1).margin(0);
  const auto picture = kernel_grid(weight, options);
  REQUIRE(picture.sizes() == torch::IntArrayRef({2, 4 * 2 + 3, 3}));
  CHECK(picture[0][0].eq(255).all().item<bool>());
  CHECK(picture[1][1].eq(0).all().item<bool>());
  CHECK(picture[0][3].eq(128).all().item<bool>());
  // Grey: all three channels equal everywhere.
  CHECK(picture.select(2, 0).equal(picture.select(2, 2)));
  CHECK_THROWS_WITH(kernel_grid(torch::zeros({5, 3, 2, 2}), KernelGridOptions().blocks(2)),
                    Catch::Contains("does not divide"));
  CHECK_THROWS_WITH(kernel_grid(torch::zeros({5, 3, 2})), Catch::Contains("[K, C, kh, kw]"));
}

TEST_CASE("precision@k matches a hand computation on a toy index", "[experiments]") {
  // Points on a line: 0, 1, 3, 6.5, 11 with labels a a b a b (no tied distances).
  const auto vectors = torch::tensor({0.0f, 1.0f, 3.0f, 6.5f, 11.0f}).view({5, 1});
  const auto labels = torch::tensor({0, 0, 1, 0, 1}, torch::kLong);
  // k = 1: 0 -> 1 (a, hit); 1 -> 0 (hit); 3 -> 1 (miss); 6.5 -> 3 (miss); 11 -> 6.5 (miss).
  CHECK(precision_at_k(vectors, labels, 1) == Approx(2.0 / 5));
  // k = 2: 0 -> {1, 3}: 1 hit; 1 -> {0, 3}: 1; 3 -> {1, 0}: 0; 6.5 -> {3, 11}: 0;
  // 11 -> {6.5, 3}: 1. Total 3 of 10.
  CHECK(precision_at_k(vectors, labels, 2) == Approx(3.0 / 10));
  // Chunking does not change the result.
  CHECK(precision_at_k(vectors, labels, 2, /*chunk=*/2) == Approx(3.0 / 10));
  CHECK_THROWS_WITH(precision_at_k(vectors, labels, 5), Catch::Contains("k must be"));
}

TEST_CASE("Nearest neighbours start with the query itself at distance 0", "[experiments]") {
  torch::manual_seed(1);
  const auto vectors = torch::randn({20, 8}) * 100;
  const auto result = nearest_neighbours(vectors, vectors.index_select(0, torch::tensor({4, 11})),
                                         /*k=*/3, {4, 11});
  REQUIRE(result.size() == 2);
  REQUIRE(result[0].size() == 3);
  CHECK(result[0][0].index == 4);
  CHECK(result[0][0].distance == 0.0);
  CHECK(result[1][0].index == 11);
  CHECK(result[1][0].distance == 0.0);
  // Distances ascend and match a direct computation.
  for (const auto& list : result) {
    for (size_t i = 1; i < list.size(); ++i) {
      CHECK(list[i - 1].distance <= list[i].distance);
    }
  }
  const double direct = (vectors[result[0][1].index] - vectors[4]).norm().item<double>();
  CHECK(result[0][1].distance == Approx(direct).epsilon(1e-5));
  const auto all = (vectors - vectors[4]).norm(2, 1);
  CHECK(std::get<0>(all.sort())[1].item<double>() == Approx(result[0][1].distance).epsilon(1e-5));
}

TEST_CASE("Features of a tiny model go into an index that reads back", "[experiments]") {
  auto model = alexnet::train::read_exported_model(tiny_model(), "tiny.pt");
  CHECK(model.info.image_size == 64);
  CHECK(model.info.resize_size == 72);
  CHECK(model.info.mean == std::vector<double>{100, 110, 120});
  CHECK(model.info.std.empty());
  CHECK(model.info.class_names == std::vector<std::string>{"zero", "one", "two"});
  CHECK(model_tensor(model.module, "conv1.weight", "tiny").sizes() ==
        torch::IntArrayRef({6, 3, 5, 5}));
  CHECK_THROWS_WITH(model_tensor(model.module, "conv9.weight", "tiny"), Catch::Contains("conv9"));

  auto dataset = tiny_dataset(11);
  FeatureOptions options;
  options.batch_size = 4;
  options.workers = 0;
  options.pixel_size = 4;
  const auto index = extract_features(model, dataset, "tiny-source", "test", options);
  REQUIRE(index.size() == 11);
  CHECK(index.features.sizes() == torch::IntArrayRef({11, 16}));
  CHECK(index.pixels.sizes() == torch::IntArrayRef({11, 3 * 4 * 4}));
  CHECK(index.labels[5].item<int64_t>() == 2);
  CHECK(index.descriptions[7] == "tiny#7");
  // The stored features are what the model computes on the preprocessed image.
  {
    alexnet::transforms::Rng rng(0);
    const auto input = feature_pipeline(model)->apply(dataset->get(7).image, rng);
    CHECK(input.sizes() == torch::IntArrayRef({3, 64, 64}));
    const auto expected = model_features(model.module, input.unsqueeze(0))[0];
    CHECK(torch::allclose(index.features[7], expected, 1e-4, 1e-4));
  }

  TempDir dir;
  save_feature_index(index, dir / "tiny.index");
  const auto back = load_feature_index(dir / "tiny.index");
  CHECK(torch::equal(back.features, index.features));
  CHECK(torch::equal(back.labels, index.labels));
  CHECK(torch::equal(back.pixels, index.pixels));
  CHECK(back.descriptions == index.descriptions);
  CHECK(back.dataset_indices == index.dataset_indices);
  CHECK(back.class_names == index.class_names);
  CHECK(back.data_source == "tiny-source");
  CHECK(back.model_path == "tiny.pt");

  const auto neighbours = nearest_neighbours(back.features, back.features.slice(0, 3, 4), 4, {3});
  CHECK(neighbours[0][0].index == 3);
  CHECK(neighbours[0][0].distance == 0.0);

  // A truncated file is refused, naming it.
  const auto size = fs::file_size(dir / "tiny.index");
  fs::resize_file(dir / "tiny.index", size - 10);
  CHECK_THROWS_WITH(load_feature_index(dir / "tiny.index"),
                    Catch::Contains("tiny.index") && Catch::Contains("truncated"));
  std::ofstream(dir / "other.bin") << "not an index at all";
  CHECK_THROWS_WITH(load_feature_index(dir / "other.bin"), Catch::Contains("other.bin"));

  // A header altered to promise more (or negative) features than the file holds is refused
  // before anything is allocated, naming the file.
  save_feature_index(index, dir / "tiny.index");
  std::string bytes;
  {
    std::ifstream in(dir / "tiny.index", std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  uint64_t length = 0;
  std::memcpy(&length, bytes.data() + 8, sizeof(length));
  const auto header = nlohmann::json::parse(bytes.substr(16, length));
  auto write_with = [&](const std::string& key, int64_t value) {
    auto altered = header;
    altered[key] = value;
    const std::string text = altered.dump();
    const uint64_t altered_length = text.size();
    std::ofstream out(dir / "crafted.index", std::ios::binary);
    out.write(bytes.data(), 8);
    out.write(reinterpret_cast<const char*>(&altered_length), sizeof(altered_length));
    out << text << bytes.substr(16 + length);
  };
  write_with("count", int64_t{1} << 50);
  CHECK_THROWS_WITH(load_feature_index(dir / "crafted.index"),
                    Catch::Contains("crafted.index") && Catch::Contains("header describes"));
  write_with("feature_dim", -4);
  CHECK_THROWS_WITH(load_feature_index(dir / "crafted.index"),
                    Catch::Contains("crafted.index") && Catch::Contains("negative"));
  write_with("count", index.features.size(0));
  CHECK(torch::equal(load_feature_index(dir / "crafted.index").features, index.features));
  CHECK_THROWS_WITH(load_feature_index(dir / "missing.index"), Catch::Contains("missing.index"));
}

#if ALEXNET_WITH_OPENCV
TEST_CASE("Pictures are written as PNG files of the expected size", "[experiments][png]") {
  TempDir dir;
  const auto options = KernelGridOptions();
  const auto kernels = kernel_grid(torch::randn({96, 3, 11, 11}), options);
  write_png(kernels, dir / "kernels.png");
  const auto read = read_picture(dir / "kernels.png");
  const auto [height, width] = kernel_grid_size(96, 11, 11, options);
  CHECK(read.sizes() == torch::IntArrayRef({height, width, 3}));
  CHECK(torch::equal(read, kernels));

  const auto data = tiny_dataset(4);
  std::vector<std::vector<Tile>> rows(2);
  for (size_t i = 0; i < 4; ++i)
    rows[i / 2].push_back(Tile{data->get(i).image, {"label", "d=1"}, {}});
  rows[1].push_back(Tile{data->get(0).image, {"third"}, Rgb{255, 0, 0}});
  TileGridOptions grid_options;
  grid_options.tile_size = 40;
  const auto grid = tile_grid(rows, grid_options);
  const auto [grid_h, grid_w] = tile_grid_size(2, 3, grid_options);
  CHECK(grid.sizes() == torch::IntArrayRef({grid_h, grid_w, 3}));
  // The 12 x 12 image is enlarged to 36 x 36 (nearest): some pixel differs from background.
  CHECK(grid.ne(255).any().item<bool>());

  ChartOptions chart_options;
  chart_options.title = "error";
  chart_options.width = 320;
  chart_options.height = 240;
  chart_options.reference_lines = {{0.25, "target"}};
  const auto chart = line_chart(
      {{"relu", {0, 1, 2}, {0.9, 0.4, 0.2}}, {"tanh", {0, 1, 2}, {0.9, 0.6, 0.3}}}, chart_options);
  CHECK(chart.sizes() == torch::IntArrayRef({240, 320, 3}));
  const auto both = side_by_side({chart, chart}, 10);
  CHECK(both.sizes() == torch::IntArrayRef({240, 650, 3}));
  write_png(both, dir / "chart.png");
  CHECK(fs::file_size(dir / "chart.png") > 1000);
  CHECK_THROWS_WITH(line_chart({{"bad", {0, 1}, {1}}}, chart_options), Catch::Contains("bad"));
  // Written as every output is (runtime::AtomicFile): the folder is made, a device is refused.
  write_png(kernels, dir / "new/folder/x.png");
  CHECK(fs::file_size(dir / "new/folder/x.png") > 100);
  CHECK_THROWS_WITH(write_png(kernels, "/dev/null"), Catch::Contains("not a regular file"));
  CHECK(fs::is_character_file("/dev/null"));
  int files = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir / "new/folder")) ++files;
  CHECK(files == 1);  // no temporary file left
}
#endif

TEST_CASE("Training curves and the ReLU/tanh comparison read metrics.jsonl", "[experiments]") {
  TempDir dir;
  std::ofstream(dir / "metrics.jsonl")
      << R"({"kind":"step","epoch":0.25,"step":10,"loss":2.0,"train_top1_error":0.8,"elapsed_s":5})"
      << "\n"
      << R"({"kind":"step","epoch":0.5,"step":20,"loss":1.0,"train_top1_error":0.3,"elapsed_s":10})"
      << "\n\n"
      << R"({"kind":"epoch","epoch":1,"step":40,"train_top1_error":0.3,"val_top1_error":0.28,"val_top5_error":0.02})"
      << "\n"
      << R"({"kind":"step","epoch":1.25,"step":50,"loss":0.5,"train_top1_error":0.2,"elapsed_s":25})"
      << "\n";
  const auto curve = read_training_curve(dir / "metrics.jsonl");
  REQUIRE(curve.size() == 3);
  CHECK(curve[1].step == 20);
  CHECK(curve[2].epoch == 1.25);
  const auto reached = first_reaching(curve, 0.25);
  REQUIRE(reached);
  CHECK(reached->step == 50);
  CHECK(reached->elapsed_s == 25);
  CHECK_FALSE(first_reaching(curve, 0.1));
  // Averaged over two intervals: (0.8 + 0.3) / 2 = 0.55, then (0.3 + 0.2) / 2 = 0.25.
  REQUIRE(first_reaching(curve, 0.25, 2));
  CHECK(first_reaching(curve, 0.25, 2)->step == 50);
  CHECK_FALSE(first_reaching(curve, 0.24, 2));
  CHECK(first_reaching(curve, 0.55, 2)->step == 20);
  CHECK(read_last_validation(dir / "metrics.jsonl")["val_top5_error"].get<double>() == 0.02);

  std::ofstream(dir / "bad.jsonl") << "{\"kind\":\"step\"}\nnot json\n";
  CHECK_THROWS_WITH(read_training_curve(dir / "bad.jsonl"),
                    Catch::Contains("bad.jsonl") && Catch::Contains("line 2"));
  std::ofstream(dir / "steps.jsonl") << R"({"kind":"step","epoch":1,"step":1})"
                                     << "\n";
  CHECK_THROWS_WITH(read_training_curve(dir / "steps.jsonl"), Catch::Contains("steps.jsonl"));
  CHECK_THROWS_WITH(read_last_validation(dir / "steps.jsonl"), Catch::Contains("no epoch record"));
}

TEST_CASE("Ablation table: one row per variant with mean and sample spread", "[experiments]") {
  const auto variants = ablation_variants();
  REQUIRE(variants.size() == 12);
  CHECK(variants[0].name == "full");
  // Each variant changes exactly what its name says.
  alexnet::train::TrainConfig config;
  config.data.pca_lighting = true;
  for (const auto& v : variants) {
    auto changed = config;
    v.apply(changed);
    CHECK(changed.model.lrn() == (v.name != "no-lrn"));
    CHECK(changed.model.pool_kernel() == (v.name == "pool-2x2" ? 2 : 3));
    CHECK(changed.model.pool_stride() == 2);
    CHECK(changed.model.columns() == (v.name == "one-column" ? 1 : 2));
    CHECK(changed.data.pca_lighting == (v.name != "no-pca"));
    CHECK(changed.model.dropout() == (v.name == "no-dropout" ? 0.0 : 0.5));
    CHECK(changed.model.activation() == alexnet::Activation::kReLU);
    const std::string removed = v.name.rfind("no-conv", 0) == 0 ? v.name.substr(3) : "";
    CHECK(changed.model.remove_conv() == removed);
    CHECK(changed.model.extra_conv() == (v.name == "extra-conv" ? "conv4" : ""));
    CHECK(changed.model.width() == (v.name == "width-0.5" ? 0.5 : v.name == "width-2" ? 2 : 1));
  }
  std::vector<RunResult> runs;
  auto add = [&](const std::string& group, double top1, double top5) {
    RunResult r;
    r.group = group;
    r.name = group + "-s" + std::to_string(runs.size());
    r.val_top1_error = top1;
    r.val_top5_error = top5;
    runs.push_back(r);
  };
  add("full", 0.20, 0.01);
  add("no-lrn", 0.30, 0.03);
  add("full", 0.24, 0.03);
  add("no-lrn", 0.30, 0.05);
  const auto rows = summarise_ablation(variants, runs);
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].name == "full");
  CHECK(rows[0].runs.size() == 2);
  CHECK(rows[0].top1_mean == Approx(0.22));
  CHECK(rows[0].top1_std == Approx(std::sqrt(0.0008)));  // sample std of 0.20, 0.24
  CHECK(rows[1].top5_mean == Approx(0.04));
  CHECK(rows[1].top1_std == Approx(0.0).margin(1e-12));
  const auto table = ablation_markdown(rows);
  CHECK(table.find("| full |") != std::string::npos);
  CHECK(table.find("22.00 ± 2.83") != std::string::npos);
  CHECK(table.find("+8.00") != std::string::npos);  // no-lrn top-1 vs full
  const auto j = ablation_json(rows);
  CHECK(j[1]["variant"] == "no-lrn");
  CHECK(j[1]["runs"].size() == 2);
  // A result survives its JSON form (how --reuse reads finished runs back).
  const auto back = RunResult::from_json(runs[3].to_json());
  CHECK(back.group == "no-lrn");
  CHECK(back.val_top5_error == 0.05);
  CHECK(back.diverged.empty());

  // A diverged run is counted, left out of the mean, and survives JSON (NaN as null).
  RunResult diverged;
  diverged.group = "no-lrn";
  diverged.name = "no-lrn-s9";
  diverged.diverged = "the training loss is NaN at epoch 1, step 45";
  diverged.val_top1_error = diverged.val_top5_error = std::nan("");
  runs.push_back(RunResult::from_json(nlohmann::json::parse(diverged.to_json().dump())));
  CHECK(runs.back().diverged == diverged.diverged);
  CHECK(std::isnan(runs.back().val_top1_error));
  const auto with_diverged = summarise_ablation(variants, runs);
  REQUIRE(with_diverged.size() == 2);
  CHECK(with_diverged[1].runs.size() == 3);
  CHECK(with_diverged[1].diverged == 1);
  CHECK(with_diverged[1].top1_mean == Approx(0.30));
  CHECK(with_diverged[1].top5_mean == Approx(0.04));
  CHECK(ablation_markdown(with_diverged).find("| 2 (+1 diverged) | 30.00") != std::string::npos);
  // One finished run: its errors without a spread.
  const auto single = ablation_markdown(summarise_ablation(variants, {runs[0]}));
  CHECK(single.find("| 1 | 20.00 | 1.00 |") != std::string::npos);
  CHECK(ablation_json(with_diverged)[1]["diverged_runs"] == 1);
  // All runs of a variant diverged: no statistics, the table says so.
  const auto all_diverged = summarise_ablation(variants, {runs.back()});
  REQUIRE(all_diverged.size() == 1);
  CHECK(all_diverged[0].diverged == 1);
  CHECK(ablation_markdown(all_diverged).find("| 0 (+1 diverged) | diverged |") !=
        std::string::npos);
}

TEST_CASE("Every ablation variant builds and trains one step", "[experiments][variants]") {
  alexnet::train::TrainConfig base;
  base.model.num_classes(3).init(alexnet::Init::kKaiming).width(1.0 / 16);
  base.num_classes_auto = false;
  base.data.resize = base.data.crop = 64;
  base.data.workers = 0;
  base.epochs = 1;
  base.batch_size = base.eval_batch_size = 4;
  base.log_interval = 1;
  base.devices = "cpu";
  base.threads = 1;
  // One epoch of one step; the validation set is the same images.
  const alexnet::train::RunData data{tiny_dataset(4), tiny_dataset(4)};
  std::ostringstream log;
  resolve_shared_statistics(base, data, log);
  ExperimentSettings settings;
  settings.base = base;
  settings.out_dir = fresh_dir("ablation_variants").string();
  settings.log = &log;
  const auto variants = ablation_variants();
  const auto runs = run_ablation(settings, data, variants, /*seeds=*/1);
  REQUIRE(runs.size() == variants.size());
  for (const auto& run : runs) {
    INFO(run.name);
    CHECK(run.diverged.empty());
    CHECK(run.steps == 1);
    CHECK(run.val_top1_error >= 0);
    CHECK(run.val_top1_error <= 1);
  }
  const auto config = alexnet::train::read_json_file(settings.out_dir + "/no-conv5-s0/config.json");
  CHECK(config["model"]["remove_conv"] == "conv5");

  // The folder now holds an experiment: refused unless reused or overwritten.
  const std::vector<AblationVariant> full{variants.front()};
  CHECK_THROWS_WITH(run_ablation(settings, data, full, /*seeds=*/1),
                    Catch::Contains("already holds files") && Catch::Contains("--reuse"));
  settings.reuse = true;
  const auto reused = run_ablation(settings, data, full, /*seeds=*/1);
  CHECK(reused.front().val_top1_error == runs.front().val_top1_error);
  CHECK_THAT(log.str(), Catch::Contains("reusing"));
  // A finished run of another configuration is not passed off as this one's.
  settings.base.optimizer.lr *= 2;
  CHECK_THROWS_WITH(run_ablation(settings, data, full, /*seeds=*/1),
                    Catch::Contains("another configuration") && Catch::Contains("optimizer.lr"));
  settings.reuse = false;
  settings.overwrite = true;
  CHECK(run_ablation(settings, data, full, /*seeds=*/1).front().steps == 1);
}

TEST_CASE("The kernels, features and neighbours commands on a tiny model", "[experiments][app]") {
  if (skip_without_alexnet()) return;
  TempDir dir;
  auto model = tiny_model();
  model.save(dir / "tiny.pt");
  write_idx_test_split(dir / "data", 12);

  REQUIRE(run_alexnet("features --model " + dir / "tiny.pt" + " --data " + dir / "data" +
                          " --split test --workers 0 --batch-size 5 --pixel-size 6 --out " +
                          dir / "tiny.index",
                      dir / "features.txt") == 0);
  const auto index = load_feature_index(dir / "tiny.index");
  REQUIRE(index.size() == 12);
  CHECK(index.features.size(1) == 16);
  CHECK(index.pixels.size(1) == 3 * 6 * 6);
  CHECK(index.descriptions[5].find("t10k-images-idx3-ubyte#5") != std::string::npos);
  CHECK(index.labels[6].item<int64_t>() == 2);

  REQUIRE(run_alexnet("neighbours --index " + dir / "tiny.index" + " --k 3 --json '#5' '#8'",
                      dir / "neighbours.json") == 0);
  const auto listed = nlohmann::json::parse(read_text(dir / "neighbours.json"));
  REQUIRE(listed.size() == 2);
  // Each query's list starts with itself at distance 0, then k others.
  CHECK(listed[0]["neighbours"].size() == 4);
  CHECK(listed[0]["neighbours"][0]["position"] == 5);
  CHECK(listed[0]["neighbours"][0]["distance"].get<double>() == 0.0);
  CHECK(listed[1]["neighbours"][0]["position"] == 8);
  CHECK(listed[1]["neighbours"][1]["distance"].get<double>() > 0.0);

  REQUIRE(
      run_alexnet("neighbours --index " + dir / "tiny.index" + " --precision-at 2 --pixels --json",
                  dir / "precision.json") == 0);
  const auto precision = nlohmann::json::parse(read_text(dir / "precision.json"));
  CHECK(precision["fc7"].get<double>() == Approx(precision_at_k(index.features, index.labels, 2)));
  CHECK(precision["pixels"].get<double>() == Approx(precision_at_k(index.pixels, index.labels, 2)));

  CHECK(run_alexnet("neighbours --index " + dir / "tiny.index" + " '#12'", dir / "bad.txt") != 0);
  CHECK(read_text(dir / "bad.txt.err").find("#12") != std::string::npos);

  // --limit 8 draws two images of each of the 4 classes, the same ones for the same --seed.
  auto limited = [&](const std::string& seed, const std::string& name) {
    REQUIRE(run_alexnet("features --model " + dir / "tiny.pt" + " --data " + dir / "data" +
                            " --split test --workers 0 --pixel-size 0 --limit 8 --seed " + seed +
                            " --out " + dir / name,
                        dir / (name + ".txt")) == 0);
    return load_feature_index(dir / name);
  };
  const auto first = limited("1", "limited.index");
  REQUIRE(first.size() == 8);
  CHECK(torch::equal(torch::bincount(first.labels, /*weights=*/{}, /*minlength=*/4),
                     torch::full({4}, 2, torch::kLong)));
  CHECK(limited("1", "again.index").descriptions == first.descriptions);
  CHECK(limited("2", "other.index").descriptions != first.descriptions);
  // Its records name positions in the whole data set, where the pictures are drawn from.
  for (size_t p = 0; p < static_cast<size_t>(first.size()); ++p) {
    CHECK(first.descriptions[p].find("#" + std::to_string(first.dataset_indices[p])) !=
          std::string::npos);
  }

#if ALEXNET_WITH_OPENCV
  REQUIRE(run_alexnet("neighbours --index " + dir / "limited.index" + " --k 2 --out " +
                          dir / "limited.png" + " '#0'",
                      dir / "limited-grid.txt") == 0);
  CHECK(fs::exists(dir / "limited.png"));
  REQUIRE(run_alexnet("kernels --model " + dir / "tiny.pt" + " --out " + dir / "kernels.png",
                      dir / "kernels.txt") == 0);
  const auto [kernels_h, kernels_w] = kernel_grid_size(6, 5, 5, KernelGridOptions().blocks(1));
  CHECK(read_picture(dir / "kernels.png").sizes() == torch::IntArrayRef({kernels_h, kernels_w, 3}));
  // Summed over the input channels: the same layout, grey (every pixel's R = G = B).
  REQUIRE(run_alexnet("kernels --sum-channels --model " + dir / "tiny.pt" + " --out " +
                          dir / "kernels_sum.png",
                      dir / "kernels_sum.txt") == 0);
  const auto summed = read_picture(dir / "kernels_sum.png");
  CHECK(summed.sizes() == torch::IntArrayRef({kernels_h, kernels_w, 3}));
  CHECK(torch::equal(summed.select(2, 0), summed.select(2, 1)));
  CHECK(torch::equal(summed.select(2, 0), summed.select(2, 2)));
  CHECK_FALSE(torch::equal(summed, read_picture(dir / "kernels.png")));

  REQUIRE(run_alexnet("neighbours --index " + dir / "tiny.index" + " --k 4 --tile 48 --out " +
                          dir / "grid.png" + " '#1' '#2' '#3'",
                      dir / "grid.txt") == 0);
  TileGridOptions grid_options;
  grid_options.tile_size = 48;
  const auto [grid_h, grid_w] = tile_grid_size(3, 5, grid_options);
  CHECK(read_picture(dir / "grid.png").sizes() == torch::IntArrayRef({grid_h, grid_w, 3}));
#endif
}

}  // namespace test_experiments
