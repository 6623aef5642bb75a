#include "data/shards.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>

#include "data/json_fields.h"
#include "data/shard_files.h"

namespace alexnet::data {
namespace {

namespace fs = std::filesystem;

// Writes `text` to `path`.partial and renames it to `path`.
void write_whole(const std::string& path, const std::string& text) {
  const std::string partial = path + kShardPartialSuffix;
  {
    std::ofstream out(partial, std::ios::trunc | std::ios::binary);
    out << text;
    out.close();
    if (!out) {
      const std::string reason = std::strerror(errno);
      std::remove(partial.c_str());
      throw std::runtime_error("cannot write " + partial + ": " + reason);
    }
  }
  std::error_code error;
  fs::rename(partial, path, error);
  if (error) {
    std::remove(partial.c_str());
    throw std::runtime_error("cannot rename " + partial + " to " + path + ": " + error.message());
  }
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
    mix(dataset.sample_source(i));
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
      index = read_shard_json(index_path, "shard index");
    } catch (const std::runtime_error&) {
      // A damaged index is written again at the end.
    }
    if (!index.is_null() &&
        !(index.is_object() && index.value("format", nlohmann::json()) == kShardIndexFormat)) {
      throw std::runtime_error("shard folder " + folder + " holds " + index_path +
                               ", which is not a shard index; choose another folder or remove it");
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
    if (const std::string completed = name_without_partial_suffix(name); !completed.empty()) {
      if (shard_number(completed) >= 0 || completed == kShardIndexName) {
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
      shard_stats_sums(fields);
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

void check_write_options(const DatasetPtr& source, const ShardWriteOptions& options) {
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
  if (source->size() == 0) throw std::runtime_error("the source holds no images");
}

void create_shard_folder(const std::string& folder) {
  std::error_code error;
  fs::create_directories(folder, error);
  if (!fs::is_directory(folder, error)) {
    throw std::runtime_error("cannot create the shard folder " + folder +
                             (fs::exists(folder) ? ": a file of that name exists" : ""));
  }
}

// What a later run must repeat to resume the folder (compared by plan_shards).
nlohmann::json shard_settings(const Dataset& source, const ShardWriteOptions& options) {
  nlohmann::json settings{{"encoding", packed_encoding_name(options.encoding)},
                          {"image_size", options.image_size},
                          {"shard_size", options.shard_size},
                          {"split", options.split},
                          {"images", static_cast<int64_t>(source.size())},
                          {"source", options.source},
                          {"source_fingerprint", source_fingerprint(source)}};
  if (options.encoding == PackedEncoding::kJpeg) settings["quality"] = options.quality;
  return settings;
}

// A loader over the source images `indices`, prepared as image_size x image_size squares.
std::unique_ptr<Loader> shard_loader(const DatasetPtr& source, const std::vector<size_t>& indices,
                                     const ShardWriteOptions& options) {
  return square_image_loader(subset(source, indices), options.image_size, options.workers,
                             options.strict);
}

// Decodes the images of the shards `plan` does not keep and writes those shards, counting
// them in `result`. Returns false when a stop was requested (the shard being written is
// removed).
bool write_planned_shards(const DatasetPtr& source, const ShardWriteOptions& options,
                          const nlohmann::json& settings, const std::vector<ShardPlan>& plan,
                          ShardWriteResult& result) {
  const auto images = static_cast<int64_t>(source->size());
  const auto shard_count = static_cast<int64_t>(plan.size());
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
  if (todo_shards.empty() || stopped()) return !stopped();

  const auto loader_ptr = shard_loader(source, todo_indices, options);
  Loader& loader = *loader_ptr;
  const nlohmann::json common{{"split", options.split}};
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
  auto last_report = std::chrono::steady_clock::now();
  loader.start_epoch(0);
  while (!stopped()) {
    auto batch = loader.next();
    if (!batch) break;
    for (int64_t j = 0; j < batch->images.size(0) && !stopped(); ++j) {
      const auto index = static_cast<int64_t>(todo_indices[static_cast<size_t>(batch->indices[j])]);
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
    return false;
  }
  advance_to(std::numeric_limits<int64_t>::max());
  if (sink.is_open()) close_current();
  return true;
}

// Writes index.json from the shards' own headers: the same numbers whether a shard was
// written now or kept from an earlier run. Fills result.images, skipped and stats.
void write_shard_index(const Dataset& source, const ShardWriteOptions& options,
                       const nlohmann::json& settings, ShardWriteResult& result) {
  StatsAccumulator total;
  nlohmann::json shard_list = nlohmann::json::array();
  for (int64_t k = 0; k < result.shards; ++k) {
    const std::string path = (fs::path(options.folder) / shard_file_name(k)).string();
    const PackedDataset shard(path);
    const JsonFields fields(shard.header(), "packed file " + path, "header field");
    total.merge(StatsAccumulator::from_sums(shard_stats_sums(fields)));
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
  nlohmann::json index;
  write_stats_fields(*result.stats, index);
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
  index["class_names"] = source.class_names();
  index["shards"] = shard_list;
  index["skipped"] = result.skipped.size();
  index["settings"] = settings;
  write_whole((fs::path(options.folder) / kShardIndexName).string(), index.dump(1) + "\n");
}

}  // namespace

ShardWriteResult write_shards(DatasetPtr source, const ShardWriteOptions& options) {
  check_write_options(source, options);
  create_shard_folder(options.folder);
  const nlohmann::json settings = shard_settings(*source, options);
  const auto plan = plan_shards(options, settings, static_cast<int64_t>(source->size()));
  ShardWriteResult result;
  result.shards = static_cast<int64_t>(plan.size());
  const bool finished = write_planned_shards(source, options, settings, plan, result);
  if (!finished || (options.stop != nullptr && options.stop->load())) {
    result.stopped = true;
    return result;
  }
  const auto images = static_cast<int64_t>(source->size());
  if (options.progress) {
    options.progress(images, images, static_cast<int64_t>(result.skipped.size()));
  }
  write_shard_index(*source, options, settings, result);
  return result;
}

}  // namespace alexnet::data
