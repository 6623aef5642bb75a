#include "train/run_folder.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>

#include "train/checkpoint.h"
#include "train/config.h"

namespace alexnet::train {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string read_small_file(int fd) {
  char buffer[256] = {};
  const ssize_t n = ::pread(fd, buffer, sizeof(buffer) - 1, 0);
  std::string text(buffer, n > 0 ? static_cast<size_t>(n) : 0);
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

std::string this_host() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0) return "unknown host";
  return name;
}

// The files of a run; a folder holding any of them holds a run.
const char* const kRunFiles[] = {"config.json", "metrics.jsonl", "metrics.csv",
                                 "checkpoints", "model.pt",      "curves.png"};

bool holds_run(const fs::path& path) {
  for (const char* name : kRunFiles) {
    const fs::path file = path / name;
    if (!fs::exists(fs::symlink_status(file))) continue;
    // An empty checkpoints/ alone is no run: a folder made ready for one (a mount point).
    std::error_code error;
    if (fs::is_directory(fs::symlink_status(file)) && fs::is_empty(file, error)) continue;
    return true;
  }
  return false;
}

}  // namespace

RunFolder::RunFolder(const fs::path& path, FolderPolicy policy) : path_(path), policy_(policy) {
  fs::create_directories(path);
  const fs::path lock_path = path / ".lock";
  lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (lock_fd_ < 0) {
    throw std::runtime_error("cannot open the lock file '" + lock_path.string() +
                             "': " + std::strerror(errno));
  }
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    const std::string holder = read_small_file(lock_fd_);
    ::close(lock_fd_);
    lock_fd_ = -1;
    throw std::runtime_error("run folder '" + path.string() + "' is in use by another run (" +
                             (holder.empty() ? "holder unknown" : holder) +
                             "); wait for it to end or choose another --out");
  }
  const std::string holder = "pid " + std::to_string(::getpid()) + " on host " + this_host() + "\n";
  if (::ftruncate(lock_fd_, 0) != 0 ||
      ::pwrite(lock_fd_, holder.data(), holder.size(), 0) != static_cast<ssize_t>(holder.size())) {
    // The lock holds without the note; only the message to a second run is poorer.
  }

  try {
    check_policy(path, policy);
  } catch (...) {
    ::close(lock_fd_);  // the destructor does not run for a constructor that throws
    lock_fd_ = -1;
    throw;
  }
}

void RunFolder::check_policy(const fs::path& path, FolderPolicy policy) {
  const bool has_run = holds_run(path);
  if (policy == FolderPolicy::kNew && has_run) {
    if (!fs::exists(path / "checkpoints" / "last.pt")) {
      throw std::runtime_error("run folder '" + path.string() +
                               "' already holds a run that has no checkpoint to resume (it "
                               "stopped before its first one); replace it with --overwrite, or "
                               "choose another --out");
    }
    throw std::runtime_error("run folder '" + path.string() +
                             "' already holds a run; continue it with --resume " + path.string() +
                             ", replace it with --overwrite, or choose another "
                             "--out");
  }
  if (policy == FolderPolicy::kResume && !fs::exists(path / "checkpoints" / "last.pt")) {
    throw std::runtime_error("cannot resume: '" + (path / "checkpoints" / "last.pt").string() +
                             "' does not exist");
  }
  runtime::remove_stale_temporaries(path.string());
  runtime::remove_stale_temporaries((path / "checkpoints").string());
}

void RunFolder::clear_for_overwrite() {
  if (policy_ != FolderPolicy::kOverwrite) return;
  for (const char* name : kRunFiles) {
    const fs::path file = path_ / name;
    if (fs::is_directory(fs::symlink_status(file))) {
      // Its contents, then the folder itself where it can go (a mount point stays).
      for (const auto& entry : fs::directory_iterator(file)) fs::remove_all(entry.path());
      std::error_code error;
      fs::remove(file, error);
    } else {
      fs::remove(file);
    }
  }
  policy_ = FolderPolicy::kNew;
}

RunFolder::~RunFolder() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

void trim_metrics(const fs::path& path, int64_t step, int64_t epochs_done, std::ostream& log) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  int64_t line_number = 0, dropped = 0;
  for (; std::getline(in, line);) {
    ++line_number;
    json record = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!record.is_object()) {
      log << "warning: " << path.string() << " line " << line_number
          << " is not a whole JSON record (a write cut short); dropped" << std::endl;
      continue;
    }
    if (record.contains("step") && record["step"].is_number_integer() &&
        record["step"].get<int64_t>() > step) {
      ++dropped;
      continue;
    }
    // An epoch's record is written just before its end-of-epoch checkpoint: after a crash in
    // between, the checkpoint at the same step is the one before, and the epoch ends again.
    if (record.value("kind", "") == "epoch" && record.contains("epoch") &&
        record["epoch"].is_number_integer() && record["epoch"].get<int64_t>() > epochs_done) {
      ++dropped;
      continue;
    }
    kept += line + "\n";
  }
  if (dropped > 0) {
    log << "note: " << dropped << " record(s) of " << path.string()
        << " were logged after the checkpoint (step " << step
        << "); dropped, the resumed run logs them again" << std::endl;
  }
  runtime::write_file_atomically(path.string(), kept);
}

const std::vector<std::string>& resumable_keys() {
  static const std::vector<std::string> keys{
      "epochs",          "max_steps",           "devices",
      "threads",         "log_interval",        "checkpoint_interval",
      "eval_batch_size", "val_ten_crop",        "data.workers",
      "data.val_limit",  "checkpoint.keep_last"};
  return keys;
}

void check_resume_config(const json& saved, const json& now) {
  // A missing key (e.g. one the checkpoint was written before) holds its default.
  const json defaults = to_json(TrainConfig());
  const auto differences =
      config_differences(merge_json(defaults, saved), merge_json(defaults, now));
  const auto& allowed = resumable_keys();
  for (const auto& [key, values] : differences) {
    if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
    std::ostringstream allowed_text;
    for (size_t i = 0; i < allowed.size(); ++i) allowed_text << (i ? ", " : "") << allowed[i];
    throw std::invalid_argument("cannot resume: '" + key + "' was " + values.first.dump() +
                                " in the checkpoint and is " + values.second.dump() +
                                " now; it shapes the computation, so a resumed run must keep "
                                "it (keys that may change: " +
                                allowed_text.str() + ")");
  }
}

}  // namespace alexnet::train
