#include "data/cifar10.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace alexnet::data {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kSide = 32;
constexpr int64_t kImageBytes = 3 * kSide * kSide;
constexpr int64_t kRecordBytes = 1 + kImageBytes;

bool has_batches(const fs::path& dir) {
  std::error_code error;
  return fs::is_regular_file(dir / "test_batch.bin", error) ||
         fs::is_regular_file(dir / "data_batch_1.bin", error);
}

// The folder holding the .bin files: dir itself or dir/cifar-10-batches-bin.
fs::path batches_folder(const std::string& dir) {
  if (has_batches(dir)) return dir;
  const fs::path nested = fs::path(dir) / "cifar-10-batches-bin";
  if (has_batches(nested)) return nested;
  throw std::runtime_error("CIFAR-10 folder " + dir +
                           " holds neither data_batch_1.bin nor test_batch.bin (expected the "
                           "binary version, cifar-10-batches-bin/)");
}

// batches.meta.txt holds ten short lines; anything much larger is not a class names file.
constexpr uintmax_t kMaxClassNamesBytes = 1 << 20;

std::vector<std::string> read_class_names(const fs::path& file) {
  std::error_code error;
  if (!fs::exists(file, error)) return cifar10_class_names();
  // Opening a FIFO would wait for a writer forever.
  if (!fs::is_regular_file(file, error)) {
    throw std::runtime_error("CIFAR-10 class names " + file.string() + " is not a regular file");
  }
  const uintmax_t bytes = fs::file_size(file, error);
  if (error) {
    throw std::runtime_error("cannot read CIFAR-10 class names " + file.string() + ": " +
                             error.message());
  }
  if (bytes > kMaxClassNamesBytes) {
    throw std::runtime_error("CIFAR-10 class names " + file.string() + " has " +
                             std::to_string(bytes) + " bytes, more than the " +
                             std::to_string(kMaxClassNamesBytes) +
                             " bytes a list of class names may have");
  }
  std::ifstream in(file);
  if (!in) throw std::runtime_error("cannot read CIFAR-10 class names " + file.string());
  std::vector<std::string> names;
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) names.push_back(line);
  }
  if (names.empty())
    throw std::runtime_error("CIFAR-10 class names " + file.string() + " is empty");
  return names;
}

}  // namespace

const std::vector<std::string>& cifar10_class_names() {
  static const std::vector<std::string> names{"airplane", "automobile", "bird",  "cat",  "deer",
                                              "dog",      "frog",       "horse", "ship", "truck"};
  return names;
}

bool is_cifar10_folder(const std::string& dir) {
  std::error_code error;
  if (!fs::is_directory(dir, error)) return false;
  return has_batches(dir) || has_batches(fs::path(dir) / "cifar-10-batches-bin");
}

Cifar10Dataset::Cifar10Dataset(const std::string& dir, const std::string& split) {
  TORCH_CHECK(split == "train" || split == "val" || split == "test", "unknown split '", split,
              "' for CIFAR-10 ", dir, " (expected train, val or test)");
  const fs::path folder = batches_folder(dir);
  class_names_ = read_class_names(folder / "batches.meta.txt");
  if (split == "train") {
    for (int i = 1; i <= 5; ++i) {
      files_.push_back((folder / ("data_batch_" + std::to_string(i) + ".bin")).string());
    }
  } else {
    files_.push_back((folder / "test_batch.bin").string());
  }

  std::vector<int64_t> records;
  for (const auto& file : files_) {
    std::error_code error;
    if (!fs::exists(file, error)) throw std::runtime_error("CIFAR-10 file " + file + " is missing");
    if (!fs::is_regular_file(file, error)) {
      throw std::runtime_error("CIFAR-10 file " + file + " is not a regular file");
    }
    const auto bytes = static_cast<int64_t>(fs::file_size(file, error));
    if (error || bytes == 0 || bytes % kRecordBytes != 0) {
      throw std::runtime_error("CIFAR-10 file " + file + " has " + std::to_string(bytes) +
                               " bytes, not a positive multiple of the 3073-byte record "
                               "(1 label byte + 32 x 32 x 3 image bytes)");
    }
    records.push_back(bytes / kRecordBytes);
  }
  int64_t total = 0;
  for (int64_t n : records) total += n;
  images_ = torch::empty({total, 3, kSide, kSide}, torch::kUInt8);
  labels_.reserve(static_cast<size_t>(total));
  uint8_t* out = images_.data_ptr<uint8_t>();
  std::vector<char> record(kRecordBytes);
  for (size_t f = 0; f < files_.size(); ++f) {
    file_begin_.push_back(labels_.size());
    std::ifstream in(files_[f], std::ios::binary);
    if (!in) throw std::runtime_error("cannot open CIFAR-10 file " + files_[f]);
    for (int64_t r = 0; r < records[f]; ++r) {
      if (!in.read(record.data(), kRecordBytes)) {
        throw std::runtime_error("CIFAR-10 file " + files_[f] + " ends inside record " +
                                 std::to_string(r));
      }
      const auto label = static_cast<int64_t>(static_cast<uint8_t>(record[0]));
      if (label >= static_cast<int64_t>(class_names_.size())) {
        throw std::runtime_error("CIFAR-10 file " + files_[f] + " record " + std::to_string(r) +
                                 " has label " + std::to_string(label) + ", but there are only " +
                                 std::to_string(class_names_.size()) + " classes");
      }
      labels_.push_back(label);
      std::memcpy(out, record.data() + 1, kImageBytes);
      out += kImageBytes;
    }
  }
}

Sample Cifar10Dataset::get(size_t index) const {
  TORCH_CHECK(index < labels_.size(), "CIFAR-10 index ", index, " out of range (", labels_.size(),
              " images)");
  return Sample{images_[static_cast<int64_t>(index)].clone(), labels_[index]};
}

std::string Cifar10Dataset::sample_source(size_t index) const {
  TORCH_CHECK(index < labels_.size(), "CIFAR-10 index ", index, " out of range (", labels_.size(),
              " images)");
  size_t f = file_begin_.size() - 1;
  while (file_begin_[f] > index) --f;
  return files_[f] + "#" + std::to_string(index - file_begin_[f]);
}

DatasetPtr open_cifar10(const std::string& dir, const std::string& split) {
  return std::make_shared<Cifar10Dataset>(dir, split);
}

}  // namespace alexnet::data
