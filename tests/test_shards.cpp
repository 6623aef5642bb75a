// Tests of shard folders (data/shards.h) and JPEG packs: writing, reading, validation,
// resuming an interrupted `prepare`, and the loader's determinism on shards.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <sys/wait.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "data/image_decode.h"
#include "data/image_folder.h"
#include "data/jpeg_encode.h"
#include "data/loader.h"
#include "data/packed.h"
#include "data/shards.h"
#include "tests/app_support.h"
#include "tests/data_support.h"
#include "tests/support.h"
#include "transforms/transforms.h"

namespace test_shards {

using namespace alexnet::data;
namespace fs = std::filesystem;
using namespace alexnet::testing;

// A smooth image (gradients and a soft blob, as photographs are mostly smooth), [3, h, w].
torch::Tensor smooth_image(int64_t height, int64_t width, int64_t seed) {
  const auto y = torch::linspace(0, 1, height, torch::kDouble).view({height, 1});
  const auto x = torch::linspace(0, 1, width, torch::kDouble).view({1, width});
  std::vector<torch::Tensor> channels;
  for (int64_t c = 0; c < 3; ++c) {
    const double a = 40 + 30 * ((seed + c) % 5), b = 20 + 17 * ((seed * 3 + c) % 7);
    const auto blob = torch::exp(-((x - 0.5).pow(2) + (y - 0.4).pow(2)) * (8.0 + seed % 4));
    channels.push_back(60 + a * x + b * y + 60 * blob * (c == seed % 3 ? 1 : 0.3));
  }
  return torch::stack(channels).clamp(0, 255).round().to(torch::kByte);
}

// root/c0 and root/c1 with `per_class` JPEGs each, of various sizes (the shorter side 40..58).
void write_image_folder(const std::string& root, int per_class) {
  for (int c = 0; c < 2; ++c) {
    for (int i = 0; i < per_class; ++i) {
      const int64_t seed = 10 * c + i;
      const auto image = smooth_image(40 + 3 * i, 52 + 2 * (i % 3), seed);
      write_bytes(root + "/c" + std::to_string(c) + "/" + std::to_string(i) + ".jpg",
                  encode_jpeg(image, 98));
    }
  }
}

// dir/root written by write_image_folder, read as an ImageFolder with image size 32.
std::shared_ptr<ImageFolder> image_folder(const TempDir& dir, int per_class) {
  write_image_folder(dir / "root", per_class);
  return std::make_shared<ImageFolder>(dir / "root", 32);
}

ShardWriteOptions shard_options(const std::string& folder, PackedEncoding encoding,
                                int64_t shard_size) {
  ShardWriteOptions options;
  options.folder = folder;
  options.encoding = encoding;
  options.shard_size = shard_size;
  options.image_size = 32;
  options.workers = 2;
  options.source = {{"data", "generated"}};
  return options;
}

void edit_json_file(const std::string& path, const std::function<void(nlohmann::json&)>& edit) {
  auto json = nlohmann::json::parse(read_text(path));
  edit(json);
  std::ofstream(path) << json.dump(1);
}

// Every file of `folder` (name -> bytes).
std::map<std::string, std::vector<uint8_t>> folder_files(const std::string& folder) {
  std::map<std::string, std::vector<uint8_t>> files;
  for (const auto& entry : fs::directory_iterator(folder)) {
    files[entry.path().filename().string()] = read_bytes(entry.path().string());
  }
  return files;
}

bool skip_without_jpeg() {
  if (can_encode_jpeg() && can_decode_images()) return false;
  WARN("skipped: this build has no libjpeg/OpenCV");
  return true;
}

TEST_CASE("Raw shards hold the decoded images exactly, JPEG shards within a JPEG tolerance",
          "[data][shards]") {
  if (skip_without_jpeg()) return;
  TempDir dir;
  const auto folder = image_folder(dir, 7);
  REQUIRE(folder->size() == 14);

  const auto raw_result = write_shards(folder, shard_options(dir / "raw", PackedEncoding::kRaw, 4));
  CHECK(raw_result.shards == 4);
  CHECK(raw_result.written == 4);
  CHECK(raw_result.images == 14);
  ShardedDataset raw(dir / "raw");
  REQUIRE(raw.size() == 14);
  CHECK(raw.shards() == 4);
  CHECK(raw.encoding() == PackedEncoding::kRaw);
  CHECK(raw.class_names() == std::vector<std::string>{"c0", "c1"});
  for (size_t i = 0; i < raw.size(); ++i) {
    INFO("sample " << i);
    CHECK(raw.label(i) == folder->label(i));
    CHECK(torch::equal(raw.get(i).image, folder->get(i).image));
  }
  // Shard k holds the source's images [4k, 4k + 4): 4, 4, 4, 2.
  const auto index = nlohmann::json::parse(read_text(dir / "raw/index.json"));
  std::vector<int64_t> counts;
  for (const auto& shard : index.at("shards")) counts.push_back(shard.at("count").get<int64_t>());
  CHECK(counts == std::vector<int64_t>{4, 4, 4, 2});
  CHECK(index.at("shards")[3].at("file") == "shard-00003.alexpack");
  CHECK(index.at("shards")[3].at("bytes") == fs::file_size(dir / "raw/shard-00003.alexpack"));
  CHECK(raw.sample_source(13) == dir / "raw/shard-00003.alexpack#1");
  CHECK(raw.sample_source(4) == dir / "raw/shard-00001.alexpack#0");
  const PackedDataset third(dir / "raw/shard-00002.alexpack");
  CHECK(third.version() == kPackedRecordsVersion);
  CHECK(third.header().at("source_begin") == 8);
  CHECK(third.header().at("source_end") == 12);

  // The statistics of every image, as a single accumulator over them gives (another order of
  // summation: equal within rounding).
  StatsAccumulator direct;
  for (size_t i = 0; i < folder->size(); ++i) direct.add(folder->get(i).image);
  const auto expected = direct.finish();
  const auto stats = raw.stats();
  REQUIRE(stats.has_value());
  CHECK(stats->images == 14);
  for (int c = 0; c < 3; ++c) {
    CHECK(stats->mean[c] == Approx(expected.mean[c]).epsilon(1e-12));
    CHECK(stats->std[c] == Approx(expected.std[c]).epsilon(1e-9));
  }
  CHECK(torch::allclose(stats->eigenvalues, expected.eigenvalues, 1e-9, 1e-9));

  // JPEG at quality 95 of smooth 32 x 32 images: quantisation steps of about 2 levels for
  // luma and 4:2:0 chroma, so an image differs by about 1 level on average and a few at
  // edges; 2 (mean) and 24 (any pixel) leave room for the chroma blur at the sides, and fail
  // for a wrong colour order, a transposed or shifted image, or another image.
  write_shards(folder, shard_options(dir / "jpeg", PackedEncoding::kJpeg, 4));
  auto low = shard_options(dir / "jpeg30", PackedEncoding::kJpeg, 4);
  low.quality = 30;
  write_shards(folder, low);
  ShardedDataset jpeg(dir / "jpeg"), jpeg30(dir / "jpeg30");
  REQUIRE(jpeg.size() == 14);
  CHECK(jpeg.encoding() == PackedEncoding::kJpeg);
  double error95 = 0, error30 = 0;
  for (size_t i = 0; i < jpeg.size(); ++i) {
    INFO("sample " << i);
    const auto exact = folder->get(i).image.to(torch::kInt);
    const auto decoded = jpeg.get(i).image;
    REQUIRE(decoded.sizes() == c10::IntArrayRef({3, 32, 32}));
    const auto diff = (decoded.to(torch::kInt) - exact).abs();
    CHECK(diff.to(torch::kDouble).mean().item<double>() <= 2.0);
    CHECK(diff.max().item<int>() <= 24);
    CHECK(jpeg.label(i) == folder->label(i));
    error95 += diff.to(torch::kDouble).mean().item<double>();
    error30 += (jpeg30.get(i).image.to(torch::kInt) - exact)
                   .abs()
                   .to(torch::kDouble)
                   .mean()
                   .item<double>();
  }
  CHECK(error30 > 1.5 * error95);  // --quality reaches the encoder
  CHECK(fs::file_size(dir / "jpeg30/shard-00000.alexpack") <
        fs::file_size(dir / "jpeg/shard-00000.alexpack"));
  CHECK(fs::file_size(dir / "jpeg/shard-00000.alexpack") <
        fs::file_size(dir / "raw/shard-00000.alexpack"));
  // Statistics come from the images before encoding: the same as the raw folder's, exactly.
  CHECK(jpeg.stats()->mean == stats->mean);
  CHECK(jpeg.stats()->std == stats->std);

  // open_dataset takes the folder or its index, for the split the folder holds.
  CHECK(open_dataset(dir / "jpeg", "train")->size() == 14);
  CHECK(open_dataset(dir / "jpeg/index.json", "train")->size() == 14);
  CHECK_THROWS_WITH(open_dataset(dir / "jpeg", "val"),
                    Catch::Contains(dir / "jpeg") && Catch::Contains("train split"));
  // An image folder whose root holds some other index.json is still an image folder.
  std::ofstream(dir / "root/index.json") << "{\"images\": 14}";
  CHECK_FALSE(is_shard_source(dir / "root"));
  CHECK(open_dataset(dir / "root", "train")->size() == 14);
  CHECK(is_shard_source(dir / "jpeg"));
  CHECK(is_shard_source(dir / "jpeg/index.json"));
}

TEST_CASE("A JPEG pack in one file reads back like the shards", "[data][shards]") {
  if (skip_without_jpeg()) return;
  TempDir dir;
  PackedWriterOptions format;
  format.encoding = PackedEncoding::kJpeg;
  format.version = kPackedRecordsVersion;
  PackedWriter writer(dir / "one.pack", 3, 24, 24, format);
  std::vector<torch::Tensor> images;
  for (int i = 0; i < 3; ++i) {
    images.push_back(smooth_image(24, 24, i));
    writer.add(images.back(), i % 2);
  }
  writer.finish({"a", "b"}, std::nullopt);
  auto pack = open_dataset(dir / "one.pack", "train");
  REQUIRE(pack->size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    const auto diff = (pack->get(i).image.to(torch::kInt) - images[i].to(torch::kInt)).abs();
    CHECK(diff.to(torch::kDouble).mean().item<double>() <= 2.0);
    CHECK(pack->label(i) == static_cast<int64_t>(i % 2));
  }
  // A raw writer in version 1 cannot take JPEG; version 1 readers see version 2 in bytes 8..11.
  CHECK_THROWS_WITH(PackedWriter(dir / "bad.pack", 3, 24, 24, {PackedEncoding::kJpeg, 95, 1}),
                    Catch::Contains("version 2"));
  const auto bytes = read_bytes(dir / "one.pack");
  uint32_t version = 0;
  std::memcpy(&version, bytes.data() + 8, 4);
  CHECK(version == 2);
  // A damaged record (its start-of-image marker gone) is a DecodeError naming the record (the
  // loader skips it), and the records no longer match their hash.
  auto damaged = bytes;
  const auto header = PackedDataset(dir / "one.pack").header();
  damaged[header.at("record_offsets")[1].get<size_t>()] = 0x00;
  write_bytes(dir / "damaged.pack", damaged);
  PackedDataset broken(dir / "damaged.pack");
  CHECK_THROWS_AS(broken.get(1), DecodeError);
  CHECK_THROWS_WITH(broken.get(1), Catch::Contains(dir / "damaged.pack#1"));
  CHECK_THROWS_WITH(broken.verify(), Catch::Contains("records_fnv1a64"));
  // A version this build does not know is refused by number.
  auto future = bytes;
  future[8] = 3;
  write_bytes(dir / "future.pack", future);
  CHECK_THROWS_WITH(PackedDataset(dir / "future.pack"),
                    Catch::Contains("future.pack") && Catch::Contains("format version 3"));
}

TEST_CASE("Malformed shard indexes and shard headers are refused naming the file and the field",
          "[data][shards]") {
  if (skip_without_jpeg()) return;
  TempDir dir;
  const auto folder = image_folder(dir, 3);
  write_shards(folder, shard_options(dir / "good", PackedEncoding::kJpeg, 4));
  REQUIRE(ShardedDataset(dir / "good").size() == 6);

  const std::vector<std::pair<std::string, nlohmann::json>> index_cases{
      {"format", "webdataset"},
      {"version", 2},
      {"encoding", "png"},
      {"height", 0},
      {"width", "32"},
      {"class_names", nlohmann::json::array()},
      {"split", "test2"},
      {"count", 7},
      {"count", -1},
      {"shards", "shard-00000.alexpack"},
      {"shards", nlohmann::json::array()},
      {"mean", {1, 2}},
      {"eigenvectors", {{1, 0, 0}}},
      {"stats_images", "all"},
  };
  int number = 0;
  for (const auto& [field, value] : index_cases) {
    const std::string copy = dir / ("bad" + std::to_string(number++));
    fs::copy(dir / "good", copy);
    edit_json_file(copy + "/index.json", [&, &field = field, &value = value](
                                             nlohmann::json& index) { index[field] = value; });
    INFO(field << " = " << value.dump());
    CHECK_THROWS_WITH(ShardedDataset(copy),
                      Catch::Contains(copy + "/index.json") && Catch::Contains("'" + field + "'"));
  }
  // Entries of 'shards': a path outside the folder, a count the shard does not hold, a
  // missing file.
  const std::vector<std::pair<nlohmann::json, std::string>> entry_cases{
      {{{"file", "../good/shard-00000.alexpack"}, {"count", 4}}, "'file'"},
      {{{"file", "shard-00000.alexpack"}, {"count", 3}}, "holds 4 images"},
      {{{"file", "shard-00000.alexpack"}}, "'count'"},
      {{{"file", "shard-00009.alexpack"}, {"count", 4}}, "shard-00009.alexpack"},
      {{{"file", "shard-00001.alexpack"}, {"count", 2}}, "'shards' element 0"},
  };
  for (const auto& [entry, expected] : entry_cases) {
    const std::string copy = dir / ("bad" + std::to_string(number++));
    fs::copy(dir / "good", copy);
    edit_json_file(copy + "/index.json",
                   [&, &entry = entry](nlohmann::json& index) { index["shards"][0] = entry; });
    INFO(entry.dump());
    CHECK_THROWS_WITH(ShardedDataset(copy), Catch::Contains(copy) && Catch::Contains(expected));
  }
  const std::string not_json = dir / "not_json";
  fs::copy(dir / "good", not_json);
  std::ofstream(not_json + "/index.json") << "{\"format\": ";
  CHECK_THROWS_WITH(ShardedDataset(not_json),
                    Catch::Contains(not_json + "/index.json") && Catch::Contains("JSON"));

  // Shard headers: each field checked, the file named.
  const std::vector<std::pair<std::string, nlohmann::json>> header_cases{
      {"encoding", "gif"},        {"record_offsets", {4096, 5000}}, {"record_offsets", "all"},
      {"records_fnv1a64", "xyz"}, {"labels", {0, 0, 5, 0}},
  };
  for (const auto& [field, value] : header_cases) {
    const std::string copy = dir / ("bad" + std::to_string(number++));
    fs::copy(dir / "good", copy);
    const std::string shard = copy + "/shard-00000.alexpack";
    edit_packed_header(shard, [&, &field = field, &value = value](nlohmann::json& header) {
      header[field] = value;
    });
    INFO(field << " = " << value.dump());
    CHECK_THROWS_WITH(ShardedDataset(copy),
                      Catch::Contains(shard) && Catch::Contains("'" + field + "'"));
  }
  // Offsets that go backwards.
  const std::string backwards = dir / "backwards";
  fs::copy(dir / "good", backwards);
  edit_packed_header(backwards + "/shard-00000.alexpack", [](nlohmann::json& header) {
    auto& offsets = header["record_offsets"];
    std::swap(offsets[1], offsets[2]);
  });
  CHECK_THROWS_WITH(ShardedDataset(backwards), Catch::Contains("shard-00000.alexpack") &&
                                                   Catch::Contains("'record_offsets'") &&
                                                   Catch::Contains("below"));
}

TEST_CASE("A FIFO in a shard folder is refused unopened; prepare keeps files not its own",
          "[data][shards]") {
  if (skip_without_jpeg()) return;
  TempDir dir;
  const auto folder = image_folder(dir, 3);
  write_shards(folder, shard_options(dir / "good", PackedEncoding::kJpeg, 4));
  // Opening a FIFO for reading waits for a writer: a reader that opened it would hang here.
  for (const std::string name : {"index.json", "shard-00001.alexpack"}) {
    const std::string copy = dir / ("fifo-" + name);
    fs::copy(dir / "good", copy);
    fs::remove(copy + "/" + name);
    REQUIRE(mkfifo((copy + "/" + name).c_str(), 0600) == 0);
    CHECK_THROWS_WITH(ShardedDataset(copy),
                      Catch::Contains(copy + "/" + name) && Catch::Contains("not a regular file"));
  }

  const std::string foreign = dir / "foreign";
  write_text(foreign + "/index.json", "{\"x\": 1}");
  CHECK_THROWS_WITH(
      write_shards(folder, shard_options(foreign, PackedEncoding::kJpeg, 4)),
      Catch::Contains(foreign + "/index.json") && Catch::Contains("not a shard index"));
  CHECK(read_text(foreign + "/index.json") == "{\"x\": 1}");

  PackedWriteOptions packed;
  packed.image_size = 32;
  packed.workers = 1;
  packed.path = dir / "precious.pack";
  write_text(packed.path, "precious");
  CHECK_THROWS_WITH(write_packed(folder, packed),
                    Catch::Contains(packed.path) && Catch::Contains("not a packed file"));
  CHECK(read_text(packed.path) == "precious");
  packed.path = dir / "good";
  CHECK_THROWS_WITH(write_packed(folder, packed), Catch::Contains("is a folder"));
  packed.path = dir / "first.pack";  // an earlier packed file is replaced
  CHECK(write_packed(folder, packed).images == 6);
  CHECK(write_packed(folder, packed).images == 6);
  CHECK(PackedDataset(packed.path).size() == 6);
}

TEST_CASE("An interrupted write_shards resumes to the same shards, index and statistics",
          "[data][shards]") {
  if (skip_without_jpeg()) return;
  TempDir dir;
  const auto folder = image_folder(dir, 7);
  const auto whole = write_shards(folder, shard_options(dir / "whole", PackedEncoding::kJpeg, 3));
  REQUIRE(whole.shards == 5);
  REQUIRE_FALSE(whole.stopped);

  // Stopped once shard 1 is complete: shards 0 and 1 stay, nothing else.
  std::atomic<bool> stop{false};
  auto options = shard_options(dir / "resumed", PackedEncoding::kJpeg, 3);
  options.stop = &stop;
  options.shard_done = [&](int64_t shard) {
    if (shard == 1) stop = true;
  };
  const auto first = write_shards(folder, options);
  CHECK(first.stopped);
  CHECK(first.written == 2);
  CHECK_FALSE(first.stats.has_value());
  auto files = folder_files(dir / "resumed");
  std::vector<std::string> names;
  for (const auto& [name, bytes] : files) names.push_back(name);
  CHECK(names == std::vector<std::string>{"shard-00000.alexpack", "shard-00001.alexpack"});
  CHECK_THROWS_WITH(ShardedDataset(dir / "resumed"),
                    Catch::Contains("no index.json") && Catch::Contains("run the same command"));
  CHECK_THROWS_WITH(open_dataset(dir / "resumed", "train"), Catch::Contains("no index.json"));

  // What a killed run leaves: a partial shard, and a complete one cut short.
  write_bytes(dir / "resumed/shard-00002.alexpack.partial", {1, 2, 3});
  auto cut = read_bytes(dir / "whole/shard-00003.alexpack");
  cut.resize(cut.size() / 2);
  write_bytes(dir / "resumed/shard-00003.alexpack", cut);
  // A complete shard whose records changed after it was written.
  auto changed = read_bytes(dir / "whole/shard-00004.alexpack");
  changed[kPackedDataOffset + 300] ^= 0x40;
  write_bytes(dir / "resumed/shard-00004.alexpack", changed);

  stop = false;
  options.shard_done = nullptr;
  const auto second = write_shards(folder, options);
  CHECK_FALSE(second.stopped);
  CHECK(second.kept == 2);
  CHECK(second.written == 3);
  REQUIRE(second.stats.has_value());
  CHECK(second.stats->mean == whole.stats->mean);
  CHECK(second.stats->std == whole.stats->std);
  CHECK(torch::equal(second.stats->eigenvalues, whole.stats->eigenvalues));
  CHECK(torch::equal(second.stats->eigenvectors, whole.stats->eigenvectors));
  // Byte for byte: every shard and the index.
  const auto expected = folder_files(dir / "whole");
  const auto resumed = folder_files(dir / "resumed");
  REQUIRE(expected.size() == 6);
  CHECK(resumed.size() == expected.size());
  for (const auto& [name, bytes] : expected) {
    INFO(name);
    REQUIRE(resumed.count(name) == 1);
    CHECK(resumed.at(name) == bytes);
  }

  // A run with the same settings on a complete folder keeps everything.
  const auto again = write_shards(folder, options);
  CHECK(again.kept == 5);
  CHECK(again.written == 0);
  CHECK(folder_files(dir / "resumed") == expected);

  // Other settings: refused, naming the setting, before anything is touched.
  auto other = options;
  other.quality = 90;
  CHECK_THROWS_WITH(write_shards(folder, other),
                    Catch::Contains(dir / "resumed") && Catch::Contains("'quality'") &&
                        Catch::Contains("95") && Catch::Contains("90"));
  other = options;
  other.shard_size = 4;
  CHECK_THROWS_WITH(write_shards(folder, other), Catch::Contains("'shard_size'"));
  other = options;
  other.source = {{"data", "elsewhere"}};
  CHECK_THROWS_WITH(write_shards(folder, other), Catch::Contains("'source.data'"));
  // The same settings on another source (one more image): its fingerprint differs.
  write_bytes(dir / "root/c1/extra.jpg", encode_jpeg(smooth_image(40, 40, 3), 98));
  const auto grown = std::make_shared<ImageFolder>(dir / "root", 32);
  CHECK_THROWS_WITH(write_shards(grown, options), Catch::Contains("'images'"));
  CHECK(folder_files(dir / "resumed") == expected);
}

TEST_CASE("Undecodable images are left out of their shard and listed", "[data][shards]") {
  if (skip_without_jpeg()) return;
  TempDir dir;
  write_image_folder(dir / "root", 3);
  write_bytes(dir / "root/c0/1.jpg", {0xFF, 0xD8, 0xFF, 0x00});  // index 1, shard 0
  write_bytes(dir / "root/c1/0.jpg", {0xFF, 0xD8, 0xFF, 0x00});  // index 3, shard 1
  write_bytes(dir / "root/c1/1.jpg", {0xFF, 0xD8, 0xFF, 0x00});  // index 4, shard 2
  const auto folder = std::make_shared<ImageFolder>(dir / "root", 32);
  const auto result = write_shards(folder, shard_options(dir / "out", PackedEncoding::kRaw, 2));
  CHECK(result.images == 3);
  REQUIRE(result.skipped.size() == 3);
  CHECK(result.skipped[0].index == 1);
  CHECK(result.skipped[2].index == 4);
  CHECK(result.skipped[2].source == dir / "root/c1/1.jpg");
  ShardedDataset shards(dir / "out");
  const auto index = shards.index();
  std::vector<int64_t> counts;
  for (const auto& shard : index.at("shards")) counts.push_back(shard.at("count").get<int64_t>());
  CHECK(counts == std::vector<int64_t>{1, 1, 1});
  CHECK(index.at("skipped") == 3);
  REQUIRE(shards.size() == 3);
  CHECK(torch::equal(shards.get(0).image, folder->get(0).image));
  CHECK(torch::equal(shards.get(1).image, folder->get(2).image));
  CHECK(torch::equal(shards.get(2).image, folder->get(5).image));
}

TEST_CASE("The loader reads a shard folder the same with any number of workers, and by rank",
          "[data][shards][loader]") {
  if (skip_without_jpeg()) return;
  TempDir dir;
  const auto folder = image_folder(dir, 9);
  write_shards(folder, shard_options(dir / "out", PackedEncoding::kJpeg, 5));
  const auto shards = open_dataset(dir / "out", "train");
  REQUIRE(shards->size() == 18);
  alexnet::transforms::PipelineOptions pipeline;
  pipeline.resize = 32;
  pipeline.crop = 24;
  pipeline.mean = shards->stats()->mean;
  const auto transform = alexnet::transforms::training_pipeline(pipeline);

  auto epoch = [&](int64_t workers, int64_t rank, int64_t world_size) {
    LoaderOptions options;
    options.batch_size = 4;
    options.workers = workers;
    options.seed = 5;
    options.drop_last = world_size > 1;
    options.rank = rank;
    options.world_size = world_size;
    Loader loader(shards, transform, options);
    loader.start_epoch(1);
    std::vector<Batch> batches;
    while (auto batch = loader.next()) batches.push_back(std::move(*batch));
    return batches;
  };
  const auto reference = epoch(0, 0, 1);
  REQUIRE(reference.size() == 5);
  for (int64_t workers : {1, 3}) {
    INFO(workers << " workers");
    const auto batches = epoch(workers, 0, 1);
    REQUIRE(batches.size() == reference.size());
    for (size_t b = 0; b < batches.size(); ++b) {
      CHECK(batches[b].indices == reference[b].indices);
      CHECK(torch::equal(batches[b].labels, reference[b].labels));
      CHECK(torch::equal(batches[b].images, reference[b].images));
    }
  }
  // Two ranks: each gets its half of every global batch, the same as the single process saw.
  const auto rank0 = epoch(2, 0, 2), rank1 = epoch(1, 1, 2);
  REQUIRE(rank0.size() == 4);
  REQUIRE(rank1.size() == 4);
  for (size_t b = 0; b < 4; ++b) {
    auto indices = rank0[b].indices;
    indices.insert(indices.end(), rank1[b].indices.begin(), rank1[b].indices.end());
    CHECK(indices == reference[b].indices);
    CHECK(torch::equal(torch::cat({rank0[b].images, rank1[b].images}), reference[b].images));
  }
}

// `alexnet prepare` on the command line: shards, a refused second run, a resumed one.
int run_prepare(const std::string& args, const std::string& log) {
  const std::string command =
      std::string(ALEXNET_BINARY) + " prepare " + args + " > " + log + " 2>&1";
  return run_command(command);
}

TEST_CASE(
    "`alexnet prepare --format jpeg --shard-size` writes shards, refuses other arguments "
    "and resumes",
    "[data][shards][app]") {
  if (skip_without_jpeg()) return;
  if (skip_without_alexnet()) return;
  TempDir dir;
  write_image_folder(dir / "root", 5);
  const std::string args = "--data " + dir / "root" + " --out " + dir / "out" +
                           " --size 32 --format jpeg --shard-size 4";
  REQUIRE(run_prepare(args, dir / "log1.txt") == 0);
  INFO(read_text(dir / "log1.txt"));
  const auto written = folder_files(dir / "out");
  CHECK(written.size() == 4);  // three shards and the index
  auto shards = open_dataset(dir / "out", "train");
  CHECK(shards->size() == 10);
  CHECK(read_text(dir / "log1.txt").find("3 shards") != std::string::npos);

  CHECK(run_prepare(args + " --quality 80", dir / "log2.txt") != 0);
  const std::string refused = read_text(dir / "log2.txt");
  CHECK(refused.find("'quality'") != std::string::npos);
  CHECK(refused.find(dir / "out") != std::string::npos);

  // A run killed while writing shard 2 (what kill -9 leaves), then the same command.
  fs::remove(dir / "out/index.json");
  fs::rename(dir / "out/shard-00002.alexpack", dir / "out/shard-00002.alexpack.partial");
  REQUIRE(run_prepare(args, dir / "log3.txt") == 0);
  CHECK(read_text(dir / "log3.txt").find("2 kept") != std::string::npos);
  CHECK(folder_files(dir / "out") == written);

  // A bad --format or --quality names the option.
  CHECK(run_prepare(args + " --format png", dir / "log4.txt") != 0);
  CHECK(read_text(dir / "log4.txt").find("png") != std::string::npos);
  CHECK(run_prepare(args + " --quality 0", dir / "log5.txt") != 0);
  CHECK(read_text(dir / "log5.txt").find("--quality") != std::string::npos);
}

}  // namespace test_shards
