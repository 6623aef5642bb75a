#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

#include "tests/app_support.h"
#include "tests/archive_support.h"
#include "tests/support.h"
#include "train/checkpoint.h"

namespace test_checkpoint {

namespace fs = std::filesystem;
using alexnet::train::Checkpoint;
using alexnet::train::load_checkpoint;
using alexnet::train::save_checkpoint;
using namespace alexnet::testing;

namespace {

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
  c.resolved_devices = "cpu,cpu";
  return c;
}

std::vector<char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A copy of checkpoint `from` with its top-level dict changed by `edit`, written by
// torch::pickle_save (the reader accepts its type tags).
template <typename Edit>
std::string edited_copy(const std::string& from, const std::string& to, Edit edit) {
  auto dict = torch::pickle_load(read_bytes(from)).toGenericDict();
  edit(dict);
  const std::vector<char> bytes = torch::pickle_save(dict);
  std::ofstream(to, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return to;
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
  CHECK(loaded.resolved_devices == "cpu,cpu");
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

  // A tensor record cut short inside a valid archive: LibTorch would read past its end.
  const auto cut = (dir / "cut.pt").string();
  REQUIRE_FALSE(alexnet::testing::copy_archive_cutting_record(path, cut, "/0", 4).empty());
  CHECK_THROWS_WITH(load_checkpoint(cut), Catch::Contains(cut) && Catch::Contains("damaged"));
  // The same copy, uncut, reads as the original.
  const auto copy = (dir / "copy.pt").string();
  alexnet::testing::copy_archive_cutting_record(path, copy, "/0", size);
  CHECK(torch::equal(load_checkpoint(copy).model.begin()->value(),
                     load_checkpoint(path).model.begin()->value()));
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

TEST_CASE("A missing entry or one of the wrong type is an error naming the file and the key",
          "[checkpoint]") {
  const auto dir = fresh_dir("entries");
  const auto path = (dir / "last.pt").string();
  save_checkpoint(example(1.0f), path);
  const auto missing = edited_copy(path, (dir / "missing.pt").string(),
                                   [](c10::impl::GenericDict& d) { CHECK(d.erase("step") == 1); });
  CHECK_THROWS_WITH(load_checkpoint(missing),
                    Catch::Contains(missing) && Catch::Contains("'step' is missing"));
  const auto wrong = edited_copy(path, (dir / "wrong.pt").string(), [](c10::impl::GenericDict& d) {
    d.insert_or_assign("epoch", "2");
  });
  CHECK_THROWS_WITH(load_checkpoint(wrong),
                    Catch::Contains(wrong) && Catch::Contains("'epoch' is not an int"));
  const auto not_tensors =
      edited_copy(path, (dir / "not_tensors.pt").string(),
                  [](c10::impl::GenericDict& d) { d.insert_or_assign("model", 3); });
  CHECK_THROWS_WITH(load_checkpoint(not_tensors), Catch::Contains("'model' is not a dict"));
  const auto bad_json =
      edited_copy(path, (dir / "bad_json.pt").string(),
                  [](c10::impl::GenericDict& d) { d.insert_or_assign("config", "{"); });
  CHECK_THROWS_WITH(load_checkpoint(bad_json), Catch::Contains("'config' is not valid JSON"));
  const auto foreign =
      edited_copy(path, (dir / "foreign.pt").string(),
                  [](c10::impl::GenericDict& d) { d.insert_or_assign("format", "x"); });
  CHECK_THROWS_WITH(load_checkpoint(foreign),
                    Catch::Contains(foreign) && Catch::Contains("not an alexnet-cpp checkpoint"));
  // A dict that torch::pickle_save wrote whole reads back like the original.
  const auto same = edited_copy(path, (dir / "same.pt").string(), [](c10::impl::GenericDict&) {});
  CHECK(load_checkpoint(same).step == 123);
}

TEST_CASE("A checkpoint of an older version (a TorchScript archive) is refused, not run",
          "[checkpoint]") {
  const auto dir = fresh_dir("old");
  const auto path = (dir / "old.pt").string();
  // What versions up to 1 wrote: a serialize::OutputArchive, whose loading runs its code.
  torch::serialize::OutputArchive archive;
  archive.write("model_0", torch::ones({2}), /*is_buffer=*/true);
  archive.write("meta", c10::IValue(std::string("{}")));
  archive.save_to(path);
  CHECK_THROWS_WITH(load_checkpoint(path),
                    Catch::Contains(path) && Catch::Contains("older version"));
}

TEST_CASE("Python's torch.load(weights_only=True) reads a checkpoint as plain data",
          "[checkpoint]") {
  if (skip_without_python("torch")) return;
  const std::string python = "/usr/bin/python3";
  const auto dir = fresh_dir("python");
  const auto path = (dir / "last.pt").string();
  const Checkpoint saved = example(1.0f);
  save_checkpoint(saved, path);
  const std::string script = std::string(ALEXNET_SOURCE_DIR) + "/tests/python/check_checkpoint.py";
  const auto out = dir / "summary.json";
  const int status = run_command(python + " " + script + " " + path + " " + out.string() + " 2>" +
                                 (dir / "stderr.txt").string());
  INFO("python stderr: " << read_text(dir / "stderr.txt"));
  REQUIRE(status == 0);
  const auto summary = nlohmann::json::parse(read_text(out));
  INFO("PyTorch " << summary.value("torch_version", "?"));
  CHECK(summary.at("format") == "alexnet-cpp checkpoint");
  CHECK(summary.at("step") == 123);
  CHECK(summary.at("class_names") == nlohmann::json({"a", "b"}));
  CHECK(summary.at("model_keys") == nlohmann::json({"conv1.weight", "conv1.bias"}));
  CHECK(summary.at("optimizer_keys") == nlohmann::json({"lr", "velocity.conv1.weight"}));
  CHECK(summary.at("conv1_weight_shape") == nlohmann::json({4, 3, 2, 2}));
  CHECK(summary.at("config") == saved.config);
  // Python's repr of a float is exact when read back; the C++ float32 widens exactly.
  const double first = std::stod(summary.at("conv1_weight_first").get<std::string>());
  CHECK(first == static_cast<double>(saved.model["conv1.weight"].flatten()[0].item<float>()));
}

}  // namespace test_checkpoint
