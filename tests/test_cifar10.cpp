#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <torch/torch.h>
#include <catch2/catch.hpp>

#include "data/cifar10.h"
#include "data/loader.h"
#include "tests/support.h"

namespace test_cifar10 {

using namespace alexnet::data;
namespace fs = std::filesystem;
using namespace alexnet::testing;

namespace {

// The value of pixel (c, y, x) of record r in file f: distinct per record and position.
uint8_t pixel(int f, int r, int c, int y, int x) {
  return static_cast<uint8_t>((f * 31 + r * 7 + c * 50 + y * 3 + x) % 256);
}

// A batch file of `records` records with labels (f + r) % 10.
void write_batch(const std::string& path, int f, int records) {
  std::ofstream out(path, std::ios::binary);
  for (int r = 0; r < records; ++r) {
    out.put(static_cast<char>((f + r) % 10));
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x) out.put(static_cast<char>(pixel(f, r, c, y, x)));
  }
}

void write_cifar(const TempDir& dir, int records = 3) {
  for (int f = 1; f <= 5; ++f)
    write_batch(dir / ("data_batch_" + std::to_string(f) + ".bin"), f, records);
  write_batch(dir / "test_batch.bin", 0, records + 1);
  std::ofstream names(dir / "batches.meta.txt");
  for (const char* name :
       {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}) {
    names << name << "\n";
  }
  names << "\n";  // the real file ends with blank lines
}

}  // namespace

TEST_CASE("CIFAR-10 reads labels, RGB planes and class names", "[cifar10]") {
  TempDir dir;
  write_cifar(dir);
  REQUIRE(is_cifar10_folder(dir.path.string()));
  Cifar10Dataset train(dir.path.string(), "train");
  REQUIRE(train.size() == 15);
  CHECK(train.class_names().size() == 10);
  CHECK(train.class_names()[9] == "truck");
  // Record 1 of data_batch_3.bin is index 2 * 3 + 1.
  const auto sample = train.get(7);
  CHECK(sample.label == (3 + 1) % 10);
  CHECK(train.label(7) == sample.label);
  REQUIRE(sample.image.sizes() == torch::IntArrayRef({3, 32, 32}));
  CHECK(sample.image.scalar_type() == torch::kUInt8);
  for (int c = 0; c < 3; ++c) {
    CHECK(sample.image[c][5][9].item<int>() == pixel(3, 1, c, 5, 9));
    CHECK(sample.image[c][31][0].item<int>() == pixel(3, 1, c, 31, 0));
  }
  CHECK(train.sample_source(7) == dir / "data_batch_3.bin" + "#1");
  CHECK(train.sample_source(0) == dir / "data_batch_1.bin" + "#0");
  CHECK(train.sample_source(14) == dir / "data_batch_5.bin" + "#2");

  Cifar10Dataset test(dir.path.string(), "test");
  CHECK(test.size() == 4);
  CHECK(test.get(3).label == 3);
  CHECK(test.sample_source(3) == dir / "test_batch.bin" + "#3");
  CHECK_THROWS_WITH(test.get(4), Catch::Contains("out of range"));

  // open_dataset recognises the folder.
  auto opened = open_dataset(dir.path.string(), "test");
  REQUIRE(opened->size() == 4);
  CHECK(opened->sample_source(2) == test.sample_source(2));
  CHECK(torch::equal(opened->get(2).image, test.get(2).image));
}

TEST_CASE("CIFAR-10 finds cifar-10-batches-bin and works with the loader", "[cifar10]") {
  TempDir dir;
  fs::create_directories(dir.path / "cifar-10-batches-bin");
  TempDir inner;  // written, then moved under dir
  write_cifar(inner, 2);
  for (const auto& entry : fs::directory_iterator(inner.path)) {
    fs::copy_file(entry.path(), dir.path / "cifar-10-batches-bin" / entry.path().filename());
  }
  auto set = open_cifar10(dir.path.string(), "val");
  REQUIRE(set->size() == 3);
  LoaderOptions options;
  options.batch_size = 2;
  options.workers = 0;
  options.shuffle = false;
  Loader loader(set, nullptr, options);
  auto batch = loader.next();
  REQUIRE(batch);
  CHECK(batch->images.sizes() == torch::IntArrayRef({2, 3, 32, 32}));
  CHECK(batch->labels[0].item<int64_t>() == 0);
  CHECK(batch->labels[1].item<int64_t>() == 1);
}

TEST_CASE("CIFAR-10 errors name the bad file", "[cifar10]") {
  TempDir dir;
  write_cifar(dir);
  SECTION("a file of the wrong size") {
    std::ofstream(dir / "data_batch_4.bin", std::ios::binary | std::ios::app).put('x');
    CHECK_THROWS_WITH(Cifar10Dataset(dir.path.string(), "train"),
                      Catch::Contains("data_batch_4.bin") && Catch::Contains("3073"));
  }
  SECTION("a missing file") {
    fs::remove(dir / "data_batch_2.bin");
    CHECK_THROWS_WITH(Cifar10Dataset(dir.path.string(), "train"),
                      Catch::Contains("data_batch_2.bin") && Catch::Contains("missing"));
  }
  SECTION("a label without a class name") {
    std::ofstream(dir / "batches.meta.txt") << "a\nb\n";
    CHECK_THROWS_WITH(Cifar10Dataset(dir.path.string(), "test"),
                      Catch::Contains("test_batch.bin") && Catch::Contains("label 2"));
  }
  SECTION("an empty file") {
    std::ofstream(dir / "test_batch.bin", std::ios::binary | std::ios::trunc);
    CHECK_THROWS_WITH(Cifar10Dataset(dir.path.string(), "test"), Catch::Contains("test_batch.bin"));
  }
  SECTION("no CIFAR-10 files") {
    TempDir empty;
    CHECK_FALSE(is_cifar10_folder(empty.path.string()));
    CHECK_THROWS_WITH(Cifar10Dataset(empty.path.string(), "train"),
                      Catch::Contains(empty.path.string()));
  }
  SECTION("a class names file that is not a regular file, or too large") {
    fs::remove(dir / "batches.meta.txt");
    REQUIRE(mkfifo((dir / "batches.meta.txt").c_str(), 0644) == 0);  // reading it would block
    CHECK_THROWS_WITH(Cifar10Dataset(dir.path.string(), "test"),
                      Catch::Contains("batches.meta.txt") && Catch::Contains("regular file"));
    fs::remove(dir / "batches.meta.txt");
    std::ofstream(dir / "batches.meta.txt") << std::string(2 << 20, 'x') << "\n";
    CHECK_THROWS_WITH(Cifar10Dataset(dir.path.string(), "test"),
                      Catch::Contains("batches.meta.txt") && Catch::Contains("bytes"));
  }
  SECTION("a batch file that is not a regular file") {
    fs::remove(dir / "test_batch.bin");
    REQUIRE(mkfifo((dir / "test_batch.bin").c_str(), 0644) == 0);
    CHECK_THROWS_WITH(Cifar10Dataset(dir.path.string(), "test"),
                      Catch::Contains("test_batch.bin") && Catch::Contains("regular file"));
  }
  SECTION("a bad split") {
    CHECK_THROWS_WITH(Cifar10Dataset(dir.path.string(), "validation"),
                      Catch::Contains("validation"));
  }
}

}  // namespace test_cifar10
