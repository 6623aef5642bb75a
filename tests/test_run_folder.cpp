// Tests of train/run_folder and train/atomic_file: who may use a run folder, what a crash
// leaves in it, which settings a resumed run may change, and files replaced whole.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "runtime/atomic_file.h"
#include "tests/support.h"
#include "train/run_folder.h"

namespace test_run_folder {

namespace fs = std::filesystem;
using alexnet::train::FolderPolicy;
using alexnet::train::RunFolder;
using Catch::Matchers::Contains;
using nlohmann::json;
using namespace alexnet::testing;

TEST_CASE("A folder that holds a run is refused unless resuming or overwriting", "[run_folder]") {
  const auto dir = fresh_dir("held");
  { RunFolder empty(dir, FolderPolicy::kNew); }  // an empty folder is fine
  write_text(dir / "config.json", "{}");
  write_text(dir / "checkpoints" / "last.pt", "weights");
  CHECK_THROWS_WITH(RunFolder(dir, FolderPolicy::kNew),
                    Contains("already holds a run") && Contains("--resume") &&
                        Contains("--overwrite") && Contains(dir.string()));
  CHECK(read_text(dir / "config.json") == "{}");  // nothing replaced
  { RunFolder resumed(dir, FolderPolicy::kResume); }
  {
    RunFolder overwritten(dir, FolderPolicy::kOverwrite);
    CHECK(read_text(dir / "config.json") == "{}");  // kept until the new run's checks pass
    overwritten.clear_for_overwrite();
  }
  CHECK_FALSE(fs::exists(dir / "config.json"));
  CHECK_FALSE(fs::exists(dir / "checkpoints"));
  CHECK_THROWS_WITH(RunFolder(dir, FolderPolicy::kResume), Contains("last.pt"));

  // An empty checkpoints/ alone (a mount point made ready) is no run; a run that stopped
  // before its first checkpoint is one, but the refusal does not offer --resume.
  fs::create_directories(dir / "checkpoints");
  { RunFolder fresh(dir, FolderPolicy::kNew); }
  write_text(dir / "config.json", "{}");
  CHECK_THROWS_WITH(RunFolder(dir, FolderPolicy::kNew), Contains("no checkpoint to resume") &&
                                                            Contains("--overwrite") &&
                                                            !Contains("--resume"));
}

TEST_CASE("A second run into a folder in use is refused, naming the holder", "[run_folder]") {
  const auto dir = fresh_dir("locked");
  std::string message;
  {
    RunFolder first(dir, FolderPolicy::kNew);
    try {
      RunFolder second(dir, FolderPolicy::kResume);
    } catch (const std::runtime_error& e) {
      message = e.what();
    }
  }
  CHECK_THAT(message, Contains("in use") && Contains("pid " + std::to_string(getpid())));
  RunFolder after(dir, FolderPolicy::kNew);  // released with the first
}

TEST_CASE("Stale temporary files are removed, a planted link is never written through",
          "[run_folder]") {
  const auto dir = fresh_dir("stale");
  write_text(dir / "checkpoints" / "last.pt", "weights");
  write_text(dir / "checkpoints" / "last.pt.a1b2c3.tmp", "half a checkpoint");
  write_text(dir / "metrics.csv.Zz9Yy8.tmp", "half a table");
  write_text(dir / "victim.txt", "precious");
  // Files of the user's that end in .tmp are not the trainer's.
  write_text(dir / "notes.tmp", "mine");
  write_text(dir / "checkpoints" / "plan.abcdef.tmp", "mine too");
  fs::create_symlink(dir / "victim.txt", dir / "checkpoints" / "last.pt.tmp");
  { RunFolder folder(dir, FolderPolicy::kResume); }
  CHECK_FALSE(fs::exists(dir / "checkpoints" / "last.pt.a1b2c3.tmp"));
  CHECK_FALSE(fs::exists(dir / "metrics.csv.Zz9Yy8.tmp"));
  CHECK(read_text(dir / "notes.tmp") == "mine");
  CHECK(read_text(dir / "checkpoints" / "plan.abcdef.tmp") == "mine too");
  CHECK(read_text(dir / "victim.txt") == "precious");

  // A link planted where a temporary file might go while the run writes.
  fs::remove(dir / "checkpoints" / "last.pt.tmp");
  fs::create_symlink(dir / "victim.txt", dir / "checkpoints" / "last.pt.tmp");
  alexnet::runtime::write_file_atomically((dir / "checkpoints" / "last.pt").string(), "new");
  CHECK(read_text(dir / "victim.txt") == "precious");
  CHECK(read_text(dir / "checkpoints" / "last.pt") == "new");
}

TEST_CASE("An atomic write removes the temporary files a killed writer left, not live ones",
          "[run_folder]") {
  const auto dir = fresh_dir("stale_atomic");
  const auto target = (dir / "model.pt").string();
  write_text(target + ".Ab12Cd.tmp", "what a kill -9 left");
  write_text(dir / "model.pt.notes.tmp", "mine");
  write_text(dir / "other.pt.Ab12Cd.tmp", "another file's");
  {
    alexnet::runtime::AtomicFile live(target);
    live.write("x", 1);
    CHECK_FALSE(fs::exists(target + ".Ab12Cd.tmp"));
    // A second writer of the same file leaves the first one's temporary file alone.
    alexnet::runtime::write_file_atomically(target, "second");
    CHECK(fs::exists(live.temporary_path()));
    live.commit();
  }
  CHECK(read_text(target) == "x");
  CHECK(read_text(dir / "model.pt.notes.tmp") == "mine");
  CHECK(read_text(dir / "other.pt.Ab12Cd.tmp") == "another file's");
}

TEST_CASE("An atomic write that fails leaves the previous file and no temporary file",
          "[run_folder]") {
  const auto dir = fresh_dir("atomic");
  const auto path = dir / "model.pt";
  alexnet::runtime::write_file_atomically(path.string(), "old");
  {
    alexnet::runtime::AtomicFile file(path.string());
    file.write("half", 4);
    // Destroyed without commit, as when an exception (a full disk) interrupts the write.
  }
  CHECK(read_text(path) == "old");
  int files = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir)) ++files;
  CHECK(files == 1);
  // A folder that cannot be written: the error names the file.
  if (geteuid() != 0) {
    const auto locked = dir / "locked";
    fs::create_directories(locked);
    ::chmod(locked.c_str(), 0500);
    CHECK_THROWS_WITH(alexnet::runtime::write_file_atomically((locked / "x").string(), "y"),
                      Contains((locked / "x").string()));
    ::chmod(locked.c_str(), 0700);
  }
  // A folder that cannot be created: the error names the file.
  CHECK_THROWS_WITH(alexnet::runtime::write_file_atomically("/proc/no/such/file", "y"),
                    Contains("/proc/no/such/file"));
  // A FIFO, a device or a folder at the path is refused, not replaced by a file.
  const auto fifo = dir / "fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK_THROWS_WITH(alexnet::runtime::write_file_atomically(fifo.string(), "y"),
                    Contains(fifo.string()) && Contains("not a regular file"));
  CHECK(fs::is_fifo(fifo));
  CHECK_THROWS_WITH(alexnet::runtime::write_file_atomically("/dev/null", "y"),
                    Contains("/dev/null") && Contains("not a regular file"));
  CHECK(fs::is_character_file("/dev/null"));
  CHECK_THROWS_WITH(alexnet::runtime::write_file_atomically(dir.string(), "y"),
                    Contains("a folder"));
  // A symbolic link is replaced by the file; what it pointed to stays.
  write_text(dir / "target.txt", "kept");
  fs::create_symlink(dir / "target.txt", dir / "link.txt");
  alexnet::runtime::write_file_atomically((dir / "link.txt").string(), "new");
  CHECK(read_text(dir / "target.txt") == "kept");
  CHECK(read_text(dir / "link.txt") == "new");
}

TEST_CASE("A full disk gives an error naming the file and keeps the previous version",
          "[run_folder]") {
  // A 64 KiB file system, where root may mount one; skipped elsewhere.
  const auto dir = fresh_dir("full");
  const std::string mount = "mount -t tmpfs -o size=64k tmpfs " + dir.string() + " 2>/dev/null";
  if (geteuid() != 0 || std::system(mount.c_str()) != 0) {
    WARN("skipped: cannot mount a small tmpfs here (needs root)");
    return;
  }
  const auto path = dir / "checkpoints" / "last.pt";
  alexnet::runtime::write_file_atomically(path.string(), std::string(1000, 'a'));
  std::string message;
  try {
    alexnet::runtime::write_file_atomically(path.string(), std::string(200000, 'b'));
  } catch (const std::runtime_error& e) {
    message = e.what();
  }
  CHECK_THAT(message, Contains(path.string()) && Contains("No space left"));
  CHECK(read_text(path) == std::string(1000, 'a'));
  int files = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(path.parent_path())) ++files;
  CHECK(files == 1);
  CHECK(std::system(("umount " + dir.string()).c_str()) == 0);
}

TEST_CASE("trim_metrics keeps every step once and drops a torn line", "[run_folder]") {
  const auto dir = fresh_dir("metrics");
  const auto path = dir / "metrics.jsonl";
  write_text(path,
             "{\"kind\":\"step\",\"step\":2}\n"
             "{\"kind\":\"step\",\"step\":4}\n"
             "{\"kind\":\"epoch\",\"epoch\":1,\"step\":4}\n"
             "{\"kind\":\"step\",\"step\":6}\n"
             "{\"kind\":\"st");
  std::ostringstream log;
  const std::string whole = read_text(path);
  alexnet::train::trim_metrics(path, 4, /*epochs_done=*/1, log);
  CHECK(read_text(path) ==
        "{\"kind\":\"step\",\"step\":2}\n"
        "{\"kind\":\"step\",\"step\":4}\n"
        "{\"kind\":\"epoch\",\"epoch\":1,\"step\":4}\n");
  CHECK_THAT(log.str(), Contains("line 5") && Contains("metrics.jsonl"));
  // A crash after epoch 1's record, before its end-of-epoch checkpoint: the checkpoint of
  // step 4 is the one written inside the epoch, and the resumed run ends epoch 1 again.
  write_text(path, whole);
  alexnet::train::trim_metrics(path, 4, /*epochs_done=*/0, log);
  CHECK(read_text(path) ==
        "{\"kind\":\"step\",\"step\":2}\n"
        "{\"kind\":\"step\",\"step\":4}\n");
}

TEST_CASE("A resumed run may change only the settings that do not shape the computation",
          "[run_folder]") {
  const json saved{{"batch_size", 128},
                   {"seed", 0},
                   {"epochs", 90},
                   {"threads", 0},
                   {"model", {{"lrn", true}, {"activation", "relu"}}},
                   {"data", {{"workers", 2}, {"crop", 224}}}};
  json now = saved;
  now["epochs"] = 100;
  now["threads"] = 2;
  now["data"]["workers"] = 8;
  CHECK_NOTHROW(alexnet::train::check_resume_config(saved, now));
  for (const auto& [key, value] :
       std::vector<std::pair<std::string, json>>{{"/batch_size", 64},
                                                 {"/seed", 1},
                                                 {"/model/lrn", false},
                                                 {"/model/activation", "tanh"},
                                                 {"/data/crop", 200}}) {
    INFO(key);
    json changed = saved;
    changed[json::json_pointer(key)] = value;
    std::string dotted = key.substr(1);
    std::replace(dotted.begin(), dotted.end(), '/', '.');
    CHECK_THROWS_WITH(alexnet::train::check_resume_config(saved, changed),
                      Contains("'" + dotted + "'") &&
                          Contains(saved[json::json_pointer(key)].dump()) &&
                          Contains(value.dump()));
  }
}

TEST_CASE("A checkpoint written before a configuration key existed resumes with its default",
          "[run_folder]") {
  const json saved{{"model", {{"lrn", true}}}};
  json now = saved;
  now["model"]["width"] = 1.0;
  now["model"]["extra_conv"] = "";
  CHECK_NOTHROW(alexnet::train::check_resume_config(saved, now));
  for (const auto& [key, value] : std::vector<std::pair<std::string, json>>{
           {"width", 2.0}, {"remove_conv", "conv4"}, {"extra_conv", "conv3"}}) {
    json changed = now;
    changed["model"][key] = value;
    CHECK_THROWS_WITH(alexnet::train::check_resume_config(saved, changed),
                      Contains("'model." + key + "'") && Contains(value.dump()));
  }
}

}  // namespace test_run_folder
