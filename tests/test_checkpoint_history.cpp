// checkpoint.keep_last: the per-epoch checkpoints a run keeps besides last.pt and best.pt.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <torch/torch.h>
#include <catch2/catch.hpp>

#include "tests/support.h"
#include "train/checkpoint.h"
#include "train/checkpoint_history.h"
#include "train/config.h"
#include "train/trainer.h"

namespace test_checkpoint_history {

namespace fs = std::filesystem;
using alexnet::testing::fresh_dir;

// Random 64x64 images of four classes (labels i % 4).
class NoiseDataset : public alexnet::data::Dataset {
 public:
  explicit NoiseDataset(size_t n) {
    torch::manual_seed(11);
    for (size_t i = 0; i < n; ++i) {
      images_.push_back(torch::randint(0, 256, {3, 64, 64}, torch::kUInt8));
      labels_.push_back(static_cast<int64_t>(i % 4));
    }
    names_ = {"a", "b", "c", "d"};
  }
  size_t size() const override { return images_.size(); }
  alexnet::data::Sample get(size_t i) const override { return {images_.at(i), labels_.at(i)}; }
  int64_t label(size_t i) const override { return labels_.at(i); }
  const std::vector<std::string>& class_names() const override { return names_; }
  std::string sample_source(size_t i) const override { return "noise#" + std::to_string(i); }

 private:
  std::vector<torch::Tensor> images_;
  std::vector<int64_t> labels_;
  std::vector<std::string> names_;
};

// A quarter-width net, 16 training images in batches of 8: two steps per epoch.
alexnet::train::TrainConfig small_config(int64_t epochs, int64_t keep_last) {
  alexnet::train::TrainConfig c;
  c.model.init(alexnet::Init::kKaiming).width(0.25);
  c.data.resize = 0;
  c.data.crop = 64;
  c.data.pca_lighting = false;
  // Pixels of uniform noise on 0..255: mean 127.5, std 74.
  c.data.normalize = alexnet::train::Normalize::kMeanStd;
  c.data.mean = {127.5, 127.5, 127.5};
  c.data.std = {74.0, 74.0, 74.0};
  c.data.workers = 1;
  c.schedule.kind = alexnet::train::ScheduleKind::kConstant;
  c.epochs = epochs;
  c.batch_size = 8;
  c.eval_batch_size = 8;
  c.devices = "cpu";
  c.threads = 2;
  c.log_interval = 100;
  c.checkpoint.keep_last = keep_last;
  return c;
}

alexnet::train::RunData small_data() {
  return {std::make_shared<NoiseDataset>(16), std::make_shared<NoiseDataset>(4)};
}

// The names of the files in `folder`.
std::set<std::string> file_names(const fs::path& folder) {
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(folder)) {
    names.insert(entry.path().filename().string());
  }
  return names;
}

alexnet::train::RunOptions quiet_run(const fs::path& dir, std::ostringstream& log, bool resume) {
  alexnet::train::RunOptions options;
  options.run_dir = dir.string();
  options.log = &log;
  options.finalize = false;
  options.resume = resume;
  return options;
}

TEST_CASE("Epoch checkpoint names and pruning keep the most recent epochs", "[checkpoint]") {
  CHECK(alexnet::train::epoch_checkpoint_name(7) == "epoch_0007.pt");
  CHECK(alexnet::train::epoch_checkpoint_name(12345) == "epoch_12345.pt");
  const fs::path dir = fresh_dir("history_prune");
  const std::string last = (dir / "last.pt").string();
  std::ofstream(last) << "checkpoint bytes";
  // Files of other names are never counted or deleted.
  std::ofstream(dir / "epoch_abc.pt") << "x";
  std::ofstream(dir / "epoch_0001.pt.tmp2") << "x";
  std::ofstream(dir / "best.pt") << "x";
  for (int64_t epoch = 1; epoch <= 12; ++epoch) {
    alexnet::train::keep_epoch_checkpoint(dir, last, epoch, /*keep_last=*/3);
  }
  CHECK(alexnet::train::epoch_checkpoints(dir) == std::vector<int64_t>{10, 11, 12});
  CHECK(alexnet::testing::read_text(dir / "epoch_0012.pt") == "checkpoint bytes");
  CHECK(file_names(dir) == std::set<std::string>{"last.pt", "best.pt", "epoch_abc.pt",
                                                 "epoch_0001.pt.tmp2", "epoch_0010.pt",
                                                 "epoch_0011.pt", "epoch_0012.pt"});
  // keep_last 0 writes and deletes nothing.
  alexnet::train::keep_epoch_checkpoint(dir, last, 13, /*keep_last=*/0);
  CHECK(alexnet::train::epoch_checkpoints(dir) == std::vector<int64_t>{10, 11, 12});
  // Fewer epochs kept from now on: the oldest go.
  alexnet::train::keep_epoch_checkpoint(dir, last, 13, /*keep_last=*/1);
  CHECK(alexnet::train::epoch_checkpoints(dir) == std::vector<int64_t>{13});
  CHECK(alexnet::train::epoch_checkpoints(dir / "missing").empty());
  fs::remove_all(dir);
}

TEST_CASE("checkpoint.keep_last keeps the last N epoch checkpoints, across a resume",
          "[checkpoint]") {
  const auto data = small_data();
  std::ostringstream log;
  const fs::path dir = fresh_dir("history_run");
  // Three epochs, then two more in a resumed run.
  alexnet::train::train(small_config(3, 2), data, quiet_run(dir, log, /*resume=*/false));
  INFO(log.str());
  CHECK(file_names(dir / "checkpoints") ==
        std::set<std::string>{"last.pt", "best.pt", "epoch_0002.pt", "epoch_0003.pt"});
  alexnet::train::train(small_config(5, 2), data, quiet_run(dir, log, /*resume=*/true));
  CHECK(file_names(dir / "checkpoints") ==
        std::set<std::string>{"last.pt", "best.pt", "epoch_0004.pt", "epoch_0005.pt"});
  // Each holds its epoch's end: epoch e done, 2 e steps; the newest equals last.pt.
  for (int64_t epoch : {4, 5}) {
    const auto checkpoint = alexnet::train::load_checkpoint(
        (dir / "checkpoints" / alexnet::train::epoch_checkpoint_name(epoch)).string());
    CHECK(checkpoint.epoch == epoch);
    CHECK(checkpoint.batch_in_epoch == 0);
    CHECK(checkpoint.step == 2 * epoch);
  }
  const auto newest = alexnet::train::load_checkpoint((dir / "checkpoints/epoch_0005.pt").string());
  const auto last = alexnet::train::load_checkpoint((dir / "checkpoints/last.pt").string());
  CHECK(torch::equal(newest.model["fc8.weight"], last.model["fc8.weight"]));
  CHECK(nlohmann::json::parse(alexnet::testing::read_text(dir / "config.json"))
            .at("checkpoint")
            .at("keep_last") == 2);

  // The default, 0, keeps none.
  const fs::path plain = fresh_dir("history_none");
  alexnet::train::train(small_config(2, 0), data, quiet_run(plain, log, /*resume=*/false));
  CHECK(file_names(plain / "checkpoints") == std::set<std::string>{"last.pt", "best.pt"});
  fs::remove_all(dir);
  fs::remove_all(plain);
}

TEST_CASE("checkpoint.keep_last is read from the configuration and checked", "[checkpoint]") {
  auto json = alexnet::train::to_json(alexnet::train::TrainConfig());
  CHECK(json.at("checkpoint").at("keep_last") == 0);
  alexnet::train::set_config_value(json, "checkpoint.keep_last", "5");
  CHECK(alexnet::train::config_from_json(json).checkpoint.keep_last == 5);
  alexnet::train::set_config_value(json, "checkpoint.keep_last", "-1");
  CHECK_THROWS_WITH(alexnet::train::config_from_json(json),
                    Catch::Contains("'checkpoint.keep_last'") && Catch::Contains(">= 0"));
  json["checkpoint"] = {{"keep", 1}};
  CHECK_THROWS_WITH(alexnet::train::config_from_json(json), Catch::Contains("'checkpoint.keep'"));
  // A resumed run may change it.
  const auto& keys = alexnet::train::resumable_keys();
  CHECK(std::find(keys.begin(), keys.end(), "checkpoint.keep_last") != keys.end());
}

}  // namespace test_checkpoint_history
