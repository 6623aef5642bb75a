// File helpers shared by the data tests: raw bytes, and editing a packed file's header.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

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

}  // namespace alexnet::testing
