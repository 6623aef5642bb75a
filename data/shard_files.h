// What the shard folder's reader (shards.cpp) and writer (shard_writer.cpp) share: file names
// and the parts of a shard's header both read. Internal to the data library.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "data/json_fields.h"

namespace alexnet::data {

inline constexpr const char* kShardPrefix = "shard-";
inline constexpr const char* kShardSuffix = ".alexpack";
/// Added to a file's name while it is written (renamed when complete).
inline constexpr const char* kShardPartialSuffix = ".partial";

/// The shard number of "shard-NNNNN.alexpack", or -1 for any other name.
int64_t shard_number(const std::string& name);

/// Whether `folder` holds shard files, complete or partial.
bool holds_shard_files(const std::string& folder);

/// The name `name` will have when complete, for a NAME.partial file; "" for any other name.
std::string name_without_partial_suffix(const std::string& name);

/// The JSON file at `path`; throws std::runtime_error naming `what` and `path`.
nlohmann::json read_shard_json(const std::string& path, const std::string& what);

/// A shard header's 'stats_sums' (StatsAccumulator::sums()), checked: 14 numbers whose image
/// and pixel counts are whole and not negative. Throws naming the field.
std::array<double, 14> shard_stats_sums(const JsonFields& fields);

}  // namespace alexnet::data
