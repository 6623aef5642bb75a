#include "data/shards.h"

#include <sys/resource.h>

#include <algorithm>
#include <filesystem>
#include <limits>

#include "data/json_fields.h"
#include "data/shard_files.h"

namespace alexnet::data {
namespace {

namespace fs = std::filesystem;

// A shard folder of many shards keeps one descriptor open per shard: raise the soft limit
// towards the hard one when the default (often 1024) is too low.
void allow_open_files(size_t shards) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  const rlim_t wanted = static_cast<rlim_t>(shards) + 256;
  if (limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur >= wanted) return;
  const rlim_t before = limit.rlim_cur;
  limit.rlim_cur = limit.rlim_max == RLIM_INFINITY ? wanted : std::min(wanted, limit.rlim_max);
  if (limit.rlim_cur > before) setrlimit(RLIMIT_NOFILE, &limit);
  getrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < wanted) {
    throw std::runtime_error("reading " + std::to_string(shards) + " shards needs about " +
                             std::to_string(wanted) + " open files, but the limit is " +
                             std::to_string(limit.rlim_cur) +
                             " (raise it with ulimit -n, or prepare with a larger --shard-size)");
  }
}

// The fields of a shard index that each shard's header must repeat.
struct IndexHeader {
  PackedEncoding encoding = PackedEncoding::kJpeg;
  int64_t height = 0, width = 0;
  std::vector<std::string> class_names;
  std::string split;
  int64_t count = 0;
};

// The folder a shard source names (the folder itself or its index.json's), and its index.
// A folder without index.json is refused, with advice when a prepare left shards in it.
std::string shard_folder(const std::string& path) {
  std::error_code error;
  std::string folder = fs::is_directory(path, error) ? path : fs::path(path).parent_path().string();
  if (folder.empty()) folder = ".";
  if (!fs::exists(fs::path(folder) / kShardIndexName, error)) {
    if (holds_shard_files(folder)) {
      throw std::runtime_error("shard folder " + folder + " has no " + kShardIndexName +
                               ": the `alexnet prepare` writing it stopped before the end; run "
                               "the same command again to finish it");
    }
    throw std::runtime_error(folder + " is not a shard folder (no " + kShardIndexName + ")");
  }
  return folder;
}

IndexHeader read_index_header(const JsonFields& fields, const nlohmann::json& index) {
  if (fields.string("format") != kShardIndexFormat) {
    fields.fail("format", "is " + JsonFields::shown(index.at("format")) + ", not \"" +
                              kShardIndexFormat + "\"");
  }
  const int64_t version = fields.integer("version", 0, std::numeric_limits<int64_t>::max());
  if (version != kShardIndexVersion) {
    fields.fail("version", "is " + std::to_string(version) + ", this build reads version " +
                               std::to_string(kShardIndexVersion));
  }
  IndexHeader header;
  try {
    header.encoding = parse_packed_encoding(fields.string("encoding"));
  } catch (const std::invalid_argument&) {
    fields.fail("encoding",
                "is " + JsonFields::shown(index.at("encoding")) + ", not \"raw\" or \"jpeg\"");
  }
  header.height = fields.integer("height", 1, 1 << 16);
  header.width = fields.integer("width", 1, 1 << 16);
  header.class_names = fields.strings("class_names");
  if (header.class_names.empty()) fields.fail("class_names", "is empty");
  header.split = fields.string("split");
  if (header.split != "train" && header.split != "val") {
    fields.fail("split", "is \"" + header.split + "\", not train or val");
  }
  header.count = fields.integer("count", 0, std::numeric_limits<int64_t>::max());
  return header;
}

// Opens element k of the index's 'shards' list and checks that the shard agrees with it and
// with the index.
std::shared_ptr<PackedDataset> open_listed_shard(const std::string& folder,
                                                 const std::string& index_path, size_t k,
                                                 const nlohmann::json& entry,
                                                 const IndexHeader& index) {
  const JsonFields fields(entry, "shard index " + index_path,
                          "field 'shards' element " + std::to_string(k) + " field");
  const std::string file = fields.string("file");
  if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..") {
    fields.fail("file", "is \"" + file + "\", not a file name inside the folder");
  }
  const int64_t count = fields.integer("count", 0, std::numeric_limits<int64_t>::max());
  auto shard = std::make_shared<PackedDataset>((fs::path(folder) / file).string());
  auto mismatch = [&](const std::string& what) {
    throw std::runtime_error("shard index " + index_path + ": field 'shards' element " +
                             std::to_string(k) + " (" + file + ") " + what);
  };
  if (shard->version() != kPackedRecordsVersion) {
    mismatch("is a packed file of format version " + std::to_string(shard->version()) +
             ", not a shard (version " + std::to_string(kPackedRecordsVersion) + ")");
  }
  const auto& number = shard->header().value("shard", nlohmann::json());
  if (number.is_number_integer() && number.get<int64_t>() != static_cast<int64_t>(k)) {
    mismatch("is shard " + number.dump() + " of the prepare that wrote it, not shard " +
             std::to_string(k));
  }
  if (static_cast<int64_t>(shard->size()) != count) {
    mismatch("has 'count' " + std::to_string(count) + ", but the shard holds " +
             std::to_string(shard->size()) + " images");
  }
  if (shard->encoding() != index.encoding) {
    mismatch(std::string("holds ") + packed_encoding_name(shard->encoding()) +
             " records, but the index's 'encoding' is " + packed_encoding_name(index.encoding));
  }
  if (shard->height() != index.height || shard->width() != index.width) {
    mismatch("holds " + std::to_string(shard->width()) + " x " + std::to_string(shard->height()) +
             " images, but the index's 'width' x 'height' is " + std::to_string(index.width) +
             " x " + std::to_string(index.height));
  }
  if (shard->class_names() != index.class_names) {
    mismatch("has other 'class_names' than the index");
  }
  if (shard->split() != index.split) {
    mismatch("holds the " + shard->split() + " split, but the index's 'split' is " + index.split);
  }
  return shard;
}

}  // namespace

ShardedDataset::ShardedDataset(const std::string& path) : folder_(shard_folder(path)) {
  const std::string index_path = (fs::path(folder_) / kShardIndexName).string();
  index_ = read_shard_json(index_path, "shard index");
  if (!index_.is_object())
    throw std::runtime_error("shard index " + index_path + " is not a JSON object");
  const JsonFields fields(index_, "shard index " + index_path);
  const IndexHeader header = read_index_header(fields, index_);
  encoding_ = header.encoding;
  class_names_ = header.class_names;
  split_ = header.split;
  const auto& list = fields.at("shards");
  if (!list.is_array() || list.empty()) {
    fields.fail("shards",
                "must be a non-empty array of {file, count}, got " + JsonFields::shown(list));
  }
  allow_open_files(list.size());
  int64_t total = 0;
  for (size_t k = 0; k < list.size(); ++k) {
    if (!list[k].is_object()) {
      fields.fail("shards", "element " + std::to_string(k) + " is " + JsonFields::shown(list[k]) +
                                ", not an object");
    }
    auto shard = open_listed_shard(folder_, index_path, k, list[k], header);
    starts_.push_back(static_cast<size_t>(total));
    for (size_t i = 0; i < shard->size(); ++i) labels_.push_back(shard->label(i));
    total += static_cast<int64_t>(shard->size());
    shards_.push_back(std::move(shard));
  }
  if (total != header.count) {
    fields.fail("count", "is " + std::to_string(header.count) + ", but the shards hold " +
                             std::to_string(total) + " images");
  }
  if (header.count == 0) fields.fail("count", "is 0: the folder holds no images");
  stats_ = read_stats_fields(fields, /*images_required=*/true);
}

std::pair<size_t, size_t> ShardedDataset::locate(size_t index) const {
  TORCH_CHECK(index < labels_.size(), "shard folder ", folder_, ": index ", index,
              " out of range (", labels_.size(), " images)");
  // The last shard starting at or before `index` that is not empty.
  const auto it = std::upper_bound(starts_.begin(), starts_.end(), index);
  size_t shard = static_cast<size_t>(it - starts_.begin()) - 1;
  while (index - starts_[shard] >= shards_[shard]->size()) ++shard;
  return {shard, index - starts_[shard]};
}

Sample ShardedDataset::get(size_t index) const {
  const auto [shard, local] = locate(index);
  return shards_[shard]->get(local);
}

std::string ShardedDataset::sample_source(size_t index) const {
  const auto [shard, local] = locate(index);
  return shards_[shard]->sample_source(local);
}

}  // namespace alexnet::data
