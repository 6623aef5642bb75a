#include "data/shards.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>

#include "data/json_fields.h"
#include "transforms/transforms.h"

namespace alexnet::data {
namespace {

namespace fs = std::filesystem;

constexpr const char* kShardPrefix = "shard-";
constexpr const char* kShardSuffix = ".alexpack";
constexpr const char* kPartialSuffix = ".partial";

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The shard number of "shard-NNNNN.alexpack", or -1 for any other name.
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

bool holds_shard_files(const std::string& folder) {
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(folder, error)) {
    std::string name = entry.path().filename().string();
    if (ends_with(name, kPartialSuffix))
      name.resize(name.size() - std::string(kPartialSuffix).size());
    if (shard_number(name) >= 0) return true;
  }
  return false;
}

nlohmann::json read_json_file(const std::string& path, const std::string& what) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + what + " " + path);
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(what + " " + path + " is not valid JSON: " + e.what());
  }
}

// Writes `text` to `path`.partial and renames it to `path`.
void write_whole(const std::string& path, const std::string& text) {
  const std::string partial = path + kPartialSuffix;
  {
    std::ofstream out(partial, std::ios::trunc | std::ios::binary);
    out << text;
    out.close();
    if (!out) {
      std::remove(partial.c_str());
      throw std::runtime_error("cannot write " + partial);
    }
  }
  std::error_code error;
  fs::rename(partial, path, error);
  if (error) {
    std::remove(partial.c_str());
    throw std::runtime_error("cannot rename " + partial + " to " + path + ": " + error.message());
  }
}

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

std::array<double, 14> stats_sums(const JsonFields& fields) {
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

nlohmann::json stats_json(const DatasetStats& stats) {
  nlohmann::json out;
  out["mean"] = stats.mean;
  out["std"] = stats.std;
  const auto values = stats.eigenvalues.to(torch::kDouble).contiguous();
  const auto vectors = stats.eigenvectors.to(torch::kDouble).contiguous();
  out["eigenvalues"] =
      std::vector<double>(values.data_ptr<double>(), values.data_ptr<double>() + 3);
  std::vector<std::vector<double>> rows;
  for (int r = 0; r < 3; ++r) {
    rows.emplace_back(vectors.data_ptr<double>() + 3 * r, vectors.data_ptr<double>() + 3 * r + 3);
  }
  out["eigenvectors"] = rows;
  out["stats_images"] = stats.images;
  return out;
}

// The first difference between two settings objects, as "'key' is A there, B here"; empty
// when equal. Nested objects name their path ('source.limit').
std::string first_difference(const nlohmann::json& stored, const nlohmann::json& wanted,
                             const std::string& prefix = "") {
  if (stored.is_object() && wanted.is_object()) {
    std::vector<std::string> keys;
    for (const auto& item : stored.items()) keys.push_back(item.key());
    for (const auto& item : wanted.items()) keys.push_back(item.key());
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    for (const auto& key : keys) {
      const std::string name = prefix.empty() ? key : prefix + "." + key;
      if (!stored.contains(key) || !wanted.contains(key)) {
        return "'" + name + "' is " +
               (stored.contains(key) ? JsonFields::shown(stored.at(key)) : "absent") +
               " there and " +
               (wanted.contains(key) ? JsonFields::shown(wanted.at(key)) : "absent") + " here";
      }
      const std::string inner = first_difference(stored.at(key), wanted.at(key), name);
      if (!inner.empty()) return inner;
    }
    return "";
  }
  if (stored == wanted) return "";
  return "'" + (prefix.empty() ? std::string("settings") : prefix) + "' is " +
         JsonFields::shown(stored) + " there and " + JsonFields::shown(wanted) + " here";
}

// FNV-1a over the class names and every sample's source and label: a changed folder (an image
// added, removed or moved to another class) gives another value.
std::string source_fingerprint(const Dataset& dataset) {
  uint64_t hash = 0xcbf29ce484222325ull;
  auto mix = [&](const std::string& text) {
    for (unsigned char c : text) hash = (hash ^ c) * 0x100000001b3ull;
    hash = (hash ^ 0xFFu) * 0x100000001b3ull;
  };
  for (const auto& name : dataset.class_names()) mix(name);
  for (size_t i = 0; i < dataset.size(); ++i) {
    mix(dataset.describe(i));
    mix(std::to_string(dataset.label(i)));
  }
  char text[17];
  std::snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(hash));
  return text;
}

std::string refusal(const std::string& folder, const std::string& file,
                    const std::string& difference) {
  return "shard folder " + folder + " holds another prepare's output: in " + file + ", " +
         difference + " (give another output folder, or remove this one)";
}

}  // namespace

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

// ---------------------------------------------------------------------------------------------
// Reading

ShardedDataset::ShardedDataset(const std::string& path) {
  std::error_code error;
  folder_ = fs::is_directory(path, error) ? path : fs::path(path).parent_path().string();
  if (folder_.empty()) folder_ = ".";
  const std::string index_path = (fs::path(folder_) / kShardIndexName).string();
  if (!fs::exists(index_path, error)) {
    if (holds_shard_files(folder_)) {
      throw std::runtime_error("shard folder " + folder_ + " has no " + kShardIndexName +
                               ": the `alexnet prepare` writing it stopped before the end; run "
                               "the same command again to finish it");
    }
    throw std::runtime_error(folder_ + " is not a shard folder (no " + kShardIndexName + ")");
  }
  index_ = read_json_file(index_path, "shard index");
  if (!index_.is_object())
    throw std::runtime_error("shard index " + index_path + " is not a JSON object");
  const JsonFields fields(index_, "shard index " + index_path);
  if (fields.string("format") != kShardIndexFormat) {
    fields.fail("format", "is " + JsonFields::shown(index_.at("format")) + ", not \"" +
                              kShardIndexFormat + "\"");
  }
  const int64_t version = fields.integer("version", 0, std::numeric_limits<int64_t>::max());
  if (version != kShardIndexVersion) {
    fields.fail("version", "is " + std::to_string(version) + ", this build reads version " +
                               std::to_string(kShardIndexVersion));
  }
  try {
    encoding_ = parse_packed_encoding(fields.string("encoding"));
  } catch (const std::invalid_argument&) {
    fields.fail("encoding",
                "is " + JsonFields::shown(index_.at("encoding")) + ", not \"raw\" or \"jpeg\"");
  }
  const int64_t height = fields.integer("height", 1, 1 << 16);
  const int64_t width = fields.integer("width", 1, 1 << 16);
  class_names_ = fields.strings("class_names");
  if (class_names_.empty()) fields.fail("class_names", "is empty");
  split_ = fields.string("split");
  if (split_ != "train" && split_ != "val") {
    fields.fail("split", "is \"" + split_ + "\", not train or val");
  }
  const int64_t count = fields.integer("count", 0, std::numeric_limits<int64_t>::max());
  const auto& list = fields.at("shards");
  if (!list.is_array() || list.empty()) {
    fields.fail("shards",
                "must be a non-empty array of {file, count}, got " + JsonFields::shown(list));
  }
  allow_open_files(list.size());
  int64_t total = 0;
  for (size_t k = 0; k < list.size(); ++k) {
    const std::string element = "element " + std::to_string(k) + " ";
    const auto& entry = list[k];
    if (!entry.is_object())
      fields.fail("shards", element + "is " + JsonFields::shown(entry) + ", not an object");
    const JsonFields shard_fields(entry, "shard index " + index_path,
                                  "field 'shards' element " + std::to_string(k) + " field");
    const std::string file = shard_fields.string("file");
    if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..") {
      shard_fields.fail("file", "is \"" + file + "\", not a file name inside the folder");
    }
    const int64_t shard_count =
        shard_fields.integer("count", 0, std::numeric_limits<int64_t>::max());
    const std::string shard_path = (fs::path(folder_) / file).string();
    auto shard = std::make_shared<PackedDataset>(shard_path);
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
    if (static_cast<int64_t>(shard->size()) != shard_count) {
      mismatch("has 'count' " + std::to_string(shard_count) + ", but the shard holds " +
               std::to_string(shard->size()) + " images");
    }
    if (shard->encoding() != encoding_) {
      mismatch(std::string("holds ") + packed_encoding_name(shard->encoding()) +
               " records, but the index's 'encoding' is " + packed_encoding_name(encoding_));
    }
    if (shard->height() != height || shard->width() != width) {
      mismatch("holds " + std::to_string(shard->width()) + " x " + std::to_string(shard->height()) +
               " images, but the index's 'width' x 'height' is " + std::to_string(width) + " x " +
               std::to_string(height));
    }
    if (shard->class_names() != class_names_) {
      mismatch("has other 'class_names' than the index");
    }
    if (shard->split() != split_) {
      mismatch("holds the " + shard->split() + " split, but the index's 'split' is " + split_);
    }
    starts_.push_back(static_cast<size_t>(total));
    for (size_t i = 0; i < shard->size(); ++i) labels_.push_back(shard->label(i));
    total += shard_count;
    shards_.push_back(std::move(shard));
  }
  if (total != count) {
    fields.fail("count", "is " + std::to_string(count) + ", but the shards hold " +
                             std::to_string(total) + " images");
  }
  if (count == 0) fields.fail("count", "is 0: the folder holds no images");
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

std::string ShardedDataset::describe(size_t index) const {
  const auto [shard, local] = locate(index);
  return shards_[shard]->describe(local);
}

// ---------------------------------------------------------------------------------------------
// Writing

namespace {

// What is known about shard k before the run: whether a complete, valid copy is kept.
struct ShardPlan {
  int64_t begin = 0, end = 0;  // source indices
  bool kept = false;
};

// Checks the folder's index and shards against `settings`; removes partial files and damaged
// shards. Returns which shards are kept.
std::vector<ShardPlan> plan_shards(const ShardWriteOptions& options, const nlohmann::json& settings,
                                   int64_t images) {
  const std::string& folder = options.folder;
  const int64_t count = (images + options.shard_size - 1) / options.shard_size;
  std::vector<ShardPlan> plan(static_cast<size_t>(count));
  for (int64_t k = 0; k < count; ++k) {
    plan[k].begin = k * options.shard_size;
    plan[k].end = std::min(images, (k + 1) * options.shard_size);
  }
  const std::string index_path = (fs::path(folder) / kShardIndexName).string();
  std::error_code error;
  if (fs::exists(index_path, error)) {
    nlohmann::json index;
    try {
      index = read_json_file(index_path, "shard index");
    } catch (const std::runtime_error&) {
      // A damaged index is written again at the end.
    }
    if (index.is_object() && index.contains("settings")) {
      const std::string difference = first_difference(index.at("settings"), settings);
      if (!difference.empty()) throw std::runtime_error(refusal(folder, index_path, difference));
    }
  }
  std::vector<fs::path> entries;
  for (const auto& entry : fs::directory_iterator(folder, error)) entries.push_back(entry.path());
  if (error) throw std::runtime_error("cannot list folder " + folder + ": " + error.message());
  std::sort(entries.begin(), entries.end());
  for (const auto& entry : entries) {
    const std::string name = entry.filename().string();
    if (ends_with(name, kPartialSuffix)) {
      if (shard_number(name.substr(0, name.size() - std::string(kPartialSuffix).size())) >= 0 ||
          name == std::string(kShardIndexName) + kPartialSuffix) {
        fs::remove(entry, error);  // left by a run that was killed
      }
      continue;
    }
    const int64_t k = shard_number(name);
    if (k < 0) continue;
    std::shared_ptr<PackedDataset> shard;
    try {
      shard = std::make_shared<PackedDataset>(entry.string());
    } catch (const std::exception& e) {
      std::cerr << "warning: " << e.what() << "; writing it again\n";
      fs::remove(entry, error);
      continue;
    }
    const auto& header = shard->header();
    if (header.contains("settings")) {
      const std::string difference = first_difference(header.at("settings"), settings);
      if (!difference.empty())
        throw std::runtime_error(refusal(folder, entry.string(), difference));
    } else {
      throw std::runtime_error(refusal(folder, entry.string(), "'settings' is absent"));
    }
    try {
      const JsonFields fields(header, "packed file " + entry.string(), "header field");
      const auto max = std::numeric_limits<int64_t>::max();
      if (k >= count || fields.integer("shard", 0, max) != k ||
          fields.integer("source_begin", 0, max) != plan[k].begin ||
          fields.integer("source_end", 0, max) != plan[k].end) {
        throw std::runtime_error("its 'shard', 'source_begin' or 'source_end' does not match");
      }
      shard->verify();
      stats_sums(fields);
      plan[k].kept = true;
    } catch (const std::exception& e) {
      std::cerr << "warning: shard " << entry.string() << " is damaged (" << e.what()
                << "); writing it again\n";
      shard.reset();
      fs::remove(entry, error);
    }
  }
  return plan;
}

// Writes one shard at a time from the samples of a loader over the shards to do.
class ShardSink {
 public:
  ShardSink(const ShardWriteOptions& options, const nlohmann::json& settings,
            const nlohmann::json& common, const std::vector<std::string>& class_names,
            int64_t shard_count)
      : options_(options),
        settings_(settings),
        common_(common),
        class_names_(class_names),
        shard_count_(shard_count) {}

  void open(int64_t shard, const ShardPlan& plan) {
    PackedWriterOptions format;
    format.encoding = options_.encoding;
    format.quality = options_.quality;
    format.version = kPackedRecordsVersion;
    writer_ = std::make_unique<PackedWriter>(
        (fs::path(options_.folder) / shard_file_name(shard)).string(), /*channels=*/3,
        options_.image_size, options_.image_size, format);
    shard_ = shard;
    plan_ = plan;
    stats_ = StatsAccumulator();
  }

  void add(const torch::Tensor& image, int64_t label) {
    writer_->add(image, label);
    stats_.add(image);
  }

  // skipped: [source index, file, message] of the shard's images left out.
  void close(const nlohmann::json& skipped) {
    nlohmann::json extra = common_;
    extra["shard"] = shard_;
    extra["shards"] = shard_count_;
    extra["source_begin"] = plan_.begin;
    extra["source_end"] = plan_.end;
    extra["settings"] = settings_;
    extra["stats_sums"] = stats_.sums();
    extra["skipped"] = skipped;
    writer_->finish(class_names_, std::nullopt, extra);
    writer_.reset();
  }

  void discard() {
    if (writer_) writer_->discard();
    writer_.reset();
  }
  bool is_open() const { return writer_ != nullptr; }
  int64_t shard() const { return shard_; }

 private:
  const ShardWriteOptions& options_;
  const nlohmann::json& settings_;
  const nlohmann::json& common_;
  const std::vector<std::string>& class_names_;
  int64_t shard_count_;
  std::unique_ptr<PackedWriter> writer_;
  int64_t shard_ = -1;
  ShardPlan plan_;
  StatsAccumulator stats_;
};

}  // namespace

ShardWriteResult write_shards(DatasetPtr source, const ShardWriteOptions& options) {
  TORCH_CHECK(source != nullptr, "write_shards: null data set");
  if (options.shard_size < 1) {
    throw std::invalid_argument("the shard size must be at least 1, got " +
                                std::to_string(options.shard_size));
  }
  if (options.image_size < 1 || options.image_size > 65500) {
    throw std::invalid_argument("the image size must be in 1..65500, got " +
                                std::to_string(options.image_size));
  }
  if (options.encoding == PackedEncoding::kJpeg && (options.quality < 1 || options.quality > 100)) {
    throw std::invalid_argument("the JPEG quality must be in 1..100, got " +
                                std::to_string(options.quality));
  }
  if (options.split != "train" && options.split != "val") {
    throw std::invalid_argument("the split must be train or val, got " + options.split);
  }
  const auto images = static_cast<int64_t>(source->size());
  if (images == 0) throw std::runtime_error("the source holds no images");
  std::error_code error;
  fs::create_directories(options.folder, error);
  if (!fs::is_directory(options.folder, error)) {
    throw std::runtime_error("cannot create the shard folder " + options.folder +
                             (fs::exists(options.folder) ? ": a file of that name exists" : ""));
  }

  nlohmann::json settings{{"encoding", packed_encoding_name(options.encoding)},
                          {"image_size", options.image_size},
                          {"shard_size", options.shard_size},
                          {"split", options.split},
                          {"images", images},
                          {"source", options.source},
                          {"source_fingerprint", source_fingerprint(*source)}};
  if (options.encoding == PackedEncoding::kJpeg) settings["quality"] = options.quality;
  const nlohmann::json common{{"split", options.split}};
  auto plan = plan_shards(options, settings, images);
  const auto shard_count = static_cast<int64_t>(plan.size());

  ShardWriteResult result;
  result.shards = shard_count;
  std::vector<size_t> todo_indices;
  std::vector<int64_t> todo_shards;
  int64_t done = 0;
  for (int64_t k = 0; k < shard_count; ++k) {
    if (plan[k].kept) {
      ++result.kept;
      done += plan[k].end - plan[k].begin;
      continue;
    }
    todo_shards.push_back(k);
    for (int64_t i = plan[k].begin; i < plan[k].end; ++i)
      todo_indices.push_back(static_cast<size_t>(i));
  }
  auto stopped = [&] { return options.stop != nullptr && options.stop->load(); };

  if (!todo_shards.empty() && !stopped()) {
    LoaderOptions loader_options;
    loader_options.batch_size = 32;
    loader_options.workers = std::max<int64_t>(1, options.workers);
    loader_options.shuffle = false;
    loader_options.prefetch_batches = 2 * loader_options.workers + 2;
    loader_options.strict = options.strict;
    // Images not yet image_size x image_size (IDX data, or a folder read at another size)
    // get the same preparation as tensors.
    auto prepare = std::make_shared<transforms::Compose>(std::vector<transforms::TransformPtr>{
        std::make_shared<transforms::ResizeShorter>(options.image_size),
        std::make_shared<transforms::CenterCrop>(options.image_size)});
    Loader loader(subset(source, todo_indices), prepare, loader_options);
    ShardSink sink(options, settings, common, source->class_names(), shard_count);
    size_t next_todo = 0;  // the next shard of todo_shards to open
    auto skipped_in = [&](int64_t shard) {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& sample : loader.skipped_samples()) {
        const auto index = static_cast<int64_t>(todo_indices[static_cast<size_t>(sample.index)]);
        if (index >= plan[shard].begin && index < plan[shard].end) {
          out.push_back({index, sample.source, sample.message});
        }
      }
      return out;
    };
    auto close_current = [&] {
      const int64_t shard = sink.shard();
      sink.close(skipped_in(shard));
      ++result.written;
      if (options.shard_done) options.shard_done(shard);
    };
    // Closes the open shard and writes any shards up to (not including) `shard` whose images
    // were all skipped, then opens `shard`.
    auto advance_to = [&](int64_t shard) {
      if (sink.is_open()) close_current();
      while (next_todo < todo_shards.size() && todo_shards[next_todo] <= shard) {
        const int64_t k = todo_shards[next_todo++];
        sink.open(k, plan[k]);
        if (k == shard) return;
        close_current();
      }
    };
    const auto start_time = std::chrono::steady_clock::now();
    auto last_report = start_time;
    loader.start_epoch(0);
    while (!stopped()) {
      auto batch = loader.next();
      if (!batch) break;
      for (int64_t j = 0; j < batch->images.size(0) && !stopped(); ++j) {
        const auto index =
            static_cast<int64_t>(todo_indices[static_cast<size_t>(batch->indices[j])]);
        const int64_t shard = index / options.shard_size;
        if (!sink.is_open() || sink.shard() != shard) advance_to(shard);
        auto image = batch->images[j];
        if (image.size(0) == 1) image = image.expand({3, options.image_size, options.image_size});
        sink.add(image, batch->labels[j].item<int64_t>());
      }
      const int64_t position = batch->indices.back() + 1;
      if (options.progress &&
          std::chrono::steady_clock::now() - last_report > std::chrono::seconds(1)) {
        options.progress(done + position, images, loader.skipped());
        last_report = std::chrono::steady_clock::now();
      }
    }
    if (stopped()) {
      sink.discard();
      result.stopped = true;
      return result;
    }
    advance_to(std::numeric_limits<int64_t>::max());
    if (sink.is_open()) close_current();
  }
  if (stopped()) {
    result.stopped = true;
    return result;
  }

  // The index, from the shards' own headers: the same numbers whether a shard was written
  // now or kept from an earlier run.
  StatsAccumulator total;
  nlohmann::json shard_list = nlohmann::json::array();
  for (int64_t k = 0; k < shard_count; ++k) {
    const std::string path = (fs::path(options.folder) / shard_file_name(k)).string();
    const PackedDataset shard(path);
    const JsonFields fields(shard.header(), "packed file " + path, "header field");
    total.merge(StatsAccumulator::from_sums(stats_sums(fields)));
    for (const auto& item : shard.header().value("skipped", nlohmann::json::array())) {
      if (item.is_array() && item.size() == 3) {
        result.skipped.push_back(SkippedSample{item[0].get<int64_t>(), item[1].get<std::string>(),
                                               item[2].get<std::string>()});
      }
    }
    result.images += static_cast<int64_t>(shard.size());
    shard_list.push_back(
        {{"file", shard_file_name(k)}, {"count", shard.size()}, {"bytes", fs::file_size(path)}});
  }
  if (result.images == 0) throw std::runtime_error("no image could be decoded");
  result.stats = total.finish();
  nlohmann::json index = stats_json(*result.stats);
  index["format"] = kShardIndexFormat;
  index["version"] = kShardIndexVersion;
  index["encoding"] = packed_encoding_name(options.encoding);
  if (options.encoding == PackedEncoding::kJpeg) index["quality"] = options.quality;
  index["channels"] = 3;
  index["height"] = options.image_size;
  index["width"] = options.image_size;
  index["count"] = result.images;
  index["shard_size"] = options.shard_size;
  index["split"] = options.split;
  index["class_names"] = source->class_names();
  index["shards"] = shard_list;
  index["skipped"] = result.skipped.size();
  index["settings"] = settings;
  write_whole((fs::path(options.folder) / kShardIndexName).string(), index.dump(1) + "\n");
  return result;
}

}  // namespace alexnet::data
