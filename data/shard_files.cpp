#include "data/shard_files.h"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "data/shards.h"

namespace alexnet::data {

namespace {

namespace fs = std::filesystem;

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

int64_t shard_number(const std::string& name) {
  const std::string prefix = kShardPrefix, suffix = kShardSuffix;
  if (name.size() <= prefix.size() + suffix.size() || name.rfind(prefix, 0) != 0 ||
      !ends_with(name, suffix)) {
    return -1;
  }
  const std::string digits =
      name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.size() > 12 || digits.find_first_not_of("0123456789") != std::string::npos) return -1;
  const int64_t number = std::stoll(digits);
  return shard_file_name(number) == name ? number : -1;
}

std::string name_without_partial_suffix(const std::string& name) {
  if (!ends_with(name, kShardPartialSuffix)) return "";
  return name.substr(0, name.size() - std::string(kShardPartialSuffix).size());
}

bool holds_shard_files(const std::string& folder) {
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(folder, error)) {
    const std::string name = entry.path().filename().string();
    const std::string completed = name_without_partial_suffix(name);
    if (shard_number(completed.empty() ? name : completed) >= 0) return true;
  }
  return false;
}

nlohmann::json read_shard_json(const std::string& path, const std::string& what) {
  // Opening a FIFO would wait for a writer.
  std::error_code error;
  if (fs::exists(path, error) && !fs::is_regular_file(path, error)) {
    throw std::runtime_error(what + " " + path + " is not a regular file");
  }
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + what + " " + path);
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(what + " " + path + " is not valid JSON: " + e.what());
  }
}

std::array<double, 14> shard_stats_sums(const JsonFields& fields) {
  const auto numbers = fields.numbers("stats_sums", 14);
  std::array<double, 14> sums{};
  std::copy(numbers.begin(), numbers.end(), sums.begin());
  if (sums[0] < 0 || sums[1] < 0 || sums[0] != static_cast<double>(static_cast<int64_t>(sums[0]))) {
    fields.fail("stats_sums", "starts with " + JsonFields::shown(fields.at("stats_sums")[0]) +
                                  " images and " + JsonFields::shown(fields.at("stats_sums")[1]) +
                                  " pixels: counts must be whole and not negative");
  }
  return sums;
}

std::string shard_file_name(int64_t shard) {
  char name[48];
  std::snprintf(name, sizeof(name), "%s%05lld%s", kShardPrefix, static_cast<long long>(shard),
                kShardSuffix);
  return name;
}

bool is_shard_source(const std::string& path) {
  // An index.json of another program (in an image folder's root, say) is not a shard index.
  auto names_shards = [](const fs::path& index) {
    std::error_code error;
    if (!fs::is_regular_file(index, error)) return false;
    std::ifstream in(index);
    const auto json = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    return json.is_object() && json.value("format", nlohmann::json()) == kShardIndexFormat;
  };
  std::error_code error;
  if (fs::is_directory(path, error)) {
    return holds_shard_files(path) || names_shards(fs::path(path) / kShardIndexName);
  }
  if (fs::path(path).filename() != kShardIndexName) return false;
  const std::string folder = fs::path(path).parent_path().string();
  return names_shards(path) || holds_shard_files(folder.empty() ? "." : folder);
}

}  // namespace alexnet::data
