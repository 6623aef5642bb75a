// Helpers shared by the tests that handle data: raw bytes, editing a packed file's header, and
// a data set held in memory.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "data/dataset.h"

namespace alexnet::testing {

/// The whole file ("" when it cannot be read).
inline std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// Writes `bytes` to `path`, creating its folder.
inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

/// Replaces the JSON header of the packed file `path` (data/packed.h: its offset and length
/// at bytes 16 and 24, the header last in the file) with edit(header).
inline void edit_packed_header(const std::string& path,
                               const std::function<void(nlohmann::json&)>& edit) {
  auto bytes = read_bytes(path);
  uint64_t offset = 0, size = 0;
  std::memcpy(&offset, bytes.data() + 16, 8);
  std::memcpy(&size, bytes.data() + 24, 8);
  auto header = nlohmann::json::parse(bytes.begin() + static_cast<int64_t>(offset),
                                      bytes.begin() + static_cast<int64_t>(offset + size));
  edit(header);
  const std::string text = header.dump();
  bytes.resize(offset);
  bytes.insert(bytes.end(), text.begin(), text.end());
  size = text.size();
  std::memcpy(bytes.data() + 24, &size, 8);
  write_bytes(path, bytes);
}

/// Images and their labels held in memory, added one by one; sample_source(i) is "<kind>#<i>".
class InMemoryDataset : public data::Dataset {
 public:
  InMemoryDataset(std::string kind, std::vector<std::string> class_names)
      : kind_(std::move(kind)), class_names_(std::move(class_names)) {}
  /// Appends a sample: `image` uint8 [C, H, W], `label` in 0 .. class_names().size() - 1.
  void add(torch::Tensor image, int64_t label) {
    images_.push_back(std::move(image));
    labels_.push_back(label);
  }
  size_t size() const override { return images_.size(); }
  data::Sample get(size_t i) const override { return {images_.at(i), labels_.at(i)}; }
  int64_t label(size_t i) const override { return labels_.at(i); }
  const std::vector<std::string>& class_names() const override { return class_names_; }
  std::string sample_source(size_t i) const override { return kind_ + "#" + std::to_string(i); }

 private:
  std::string kind_;
  std::vector<std::string> class_names_;
  std::vector<torch::Tensor> images_;
  std::vector<int64_t> labels_;
};

}  // namespace alexnet::testing
