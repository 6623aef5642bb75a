#include "train/checkpoint_history.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "runtime/atomic_file.h"

namespace alexnet::train {
namespace {

namespace fs = std::filesystem;

// The epoch of a file named epoch_<digits>.pt, or -1.
int64_t epoch_of(const std::string& name) {
  const std::string prefix = "epoch_", suffix = ".pt";
  if (name.size() <= prefix.size() + suffix.size() || name.rfind(prefix, 0) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
    return -1;
  }
  const std::string digits =
      name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.size() > 18 || !std::all_of(digits.begin(), digits.end(),
                                         [](unsigned char c) { return std::isdigit(c) != 0; })) {
    return -1;
  }
  return std::stoll(digits);
}

// The epoch checkpoints of `folder` with their paths, by ascending epoch.
std::vector<std::pair<int64_t, fs::path>> epoch_checkpoint_files(const fs::path& folder) {
  std::vector<std::pair<int64_t, fs::path>> files;
  std::error_code error;
  if (!fs::is_directory(folder, error)) return files;
  for (const auto& entry : fs::directory_iterator(folder, error)) {
    const int64_t epoch = epoch_of(entry.path().filename().string());
    if (epoch >= 0 && entry.is_regular_file(error)) files.emplace_back(epoch, entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

std::string epoch_checkpoint_name(int64_t epoch) {
  char name[48];
  std::snprintf(name, sizeof(name), "epoch_%04lld.pt", static_cast<long long>(epoch));
  return name;
}

std::vector<int64_t> epoch_checkpoints(const fs::path& folder) {
  std::vector<int64_t> epochs;
  for (const auto& [epoch, path] : epoch_checkpoint_files(folder)) epochs.push_back(epoch);
  return epochs;
}

void keep_epoch_checkpoint(const fs::path& folder, const std::string& last_path, int64_t epoch,
                           int64_t keep_last) {
  if (keep_last <= 0) return;
  runtime::copy_file_atomically(last_path, (folder / epoch_checkpoint_name(epoch)).string());
  const auto files = epoch_checkpoint_files(folder);
  const size_t keep = static_cast<size_t>(keep_last);
  for (size_t i = 0; i + keep < files.size(); ++i) {
    std::error_code error;
    if (!fs::remove(files[i].second, error) && error) {
      throw std::runtime_error("cannot delete the old checkpoint " + files[i].second.string() +
                               ": " + error.message());
    }
  }
}

}  // namespace alexnet::train
