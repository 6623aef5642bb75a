#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "train/checkpoint.h"
#include "tests/support.h"

namespace fs = std::filesystem;
using alexnet::train::Checkpoint;
using alexnet::train::load_checkpoint;
using alexnet::train::save_checkpoint;

namespace {

using alexnet::testing::fresh_dir;


Checkpoint example(float scale) {
  torch::manual_seed(1);
  Checkpoint c;
  c.config = {{"model", {{"num_classes", 10}}}, {"epochs", 3}};
  c.model.insert("conv1.weight", torch::randn({4, 3, 2, 2}) * scale);
  c.model.insert("conv1.bias", torch::zeros({4}));
  c.optimizer.insert("lr", torch::tensor(0.01, torch::kFloat64));
  c.optimizer.insert("velocity.conv1.weight", torch::randn({4, 3, 2, 2}));
  c.schedule = {{"drops", 1}, {"best", 0.25}, {"bad_epochs", 0}};
  c.epoch = 2;
  c.batch_in_epoch = 17;
  c.step = 123;
  c.cpu_rng_state = at::detail::getDefaultCPUGenerator().get_state();
  c.progress = {{"elapsed_s", 12.5}};
  c.class_names = {"a", "b"};
  c.mean = {1.5, 2.5, 3.5};
  c.std = {};
  c.image_size = 64;
  c.resize_size = 72;
  return c;
}

}  // namespace

TEST_CASE("Checkpoints round-trip every field", "[checkpoint]") {
  const auto dir = fresh_dir("roundtrip");
  const auto path = (dir / "sub" / "last.pt").string();
  const Checkpoint saved = example(1.0f);
  save_checkpoint(saved, path);
  CHECK_FALSE(fs::exists(path + ".tmp"));
  const Checkpoint loaded = load_checkpoint(path);
  CHECK(loaded.config == saved.config);
  REQUIRE(loaded.model.size() == 2);
  CHECK(loaded.model.keys() == saved.model.keys());
  CHECK(torch::equal(loaded.model["conv1.weight"], saved.model["conv1.weight"]));
  CHECK(torch::equal(loaded.optimizer["velocity.conv1.weight"],
                     saved.optimizer["velocity.conv1.weight"]));
  CHECK(loaded.optimizer["lr"].item<double>() == 0.01);
  CHECK(loaded.schedule == saved.schedule);
  CHECK(loaded.epoch == 2);
  CHECK(loaded.batch_in_epoch == 17);
  CHECK(loaded.step == 123);
  CHECK(torch::equal(loaded.cpu_rng_state, saved.cpu_rng_state));
  CHECK(loaded.progress == saved.progress);
  CHECK(loaded.class_names == saved.class_names);
  CHECK(loaded.mean == saved.mean);
  CHECK(loaded.std.empty());
  CHECK(loaded.image_size == 64);
  CHECK(loaded.resize_size == 72);
}

TEST_CASE("A missing, truncated or foreign checkpoint gives an error naming the file",
          "[checkpoint]") {
  const auto dir = fresh_dir("errors");
  const auto missing = (dir / "missing.pt").string();
  CHECK_THROWS_WITH(load_checkpoint(missing), Catch::Contains(missing));

  const auto path = (dir / "last.pt").string();
  save_checkpoint(example(1.0f), path);
  const auto size = fs::file_size(path);
  const auto truncated = (dir / "truncated.pt").string();
  fs::copy_file(path, truncated);
  fs::resize_file(truncated, size / 2);
  CHECK_THROWS_WITH(load_checkpoint(truncated), Catch::Contains(truncated));

  const auto text = (dir / "text.pt").string();
  std::ofstream(text) << "not a checkpoint";
  CHECK_THROWS_WITH(load_checkpoint(text), Catch::Contains(text));
}

TEST_CASE("An interrupted write leaves the previous checkpoint whole", "[checkpoint]") {
  const auto dir = fresh_dir("atomic");
  const auto path = (dir / "last.pt").string();
  const Checkpoint first = example(1.0f);
  save_checkpoint(first, path);
  // What a crash in the middle of the next save leaves behind: a partial temporary file.
  {
    std::ofstream partial(path + ".tmp", std::ios::binary);
    partial << "PK\x03\x04 partial";
  }
  const Checkpoint loaded = load_checkpoint(path);
  CHECK(torch::equal(loaded.model["conv1.weight"], first.model["conv1.weight"]));
  // The next save writes a temporary file of its own (the leftover is never reused; a run
  // removes such files when it starts) and leaves none of its own behind.
  save_checkpoint(example(2.0f), path);
  int files = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir)) ++files;
  CHECK(files == 2);  // last.pt and the leftover
  CHECK(torch::allclose(load_checkpoint(path).model["conv1.weight"],
                        first.model["conv1.weight"] * 2));
}
