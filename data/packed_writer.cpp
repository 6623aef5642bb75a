#include <chrono>
#include <filesystem>

#include "data/packed.h"

namespace alexnet::data {

namespace {

// Refuses, before any image is decoded, an output path that holds a folder or a file that is
// not a packed file: replacing it is not what the user meant.
void check_output_path(const std::string& path) {
  std::error_code error;
  if (!std::filesystem::exists(std::filesystem::symlink_status(path, error))) return;
  if (std::filesystem::is_directory(path, error)) {
    throw std::runtime_error("cannot write packed file " + path + ": it is a folder");
  }
  if (!is_packed_file(path)) {
    throw std::runtime_error("cannot write packed file " + path +
                             ": a file that is not a packed file is there; remove it or choose "
                             "another output");
  }
}

}  // namespace

PackedWriteResult write_packed(DatasetPtr source, const PackedWriteOptions& options) {
  check_output_path(options.path);
  const int64_t size = options.image_size;
  const auto total = static_cast<int64_t>(source->size());
  const auto class_names = source->class_names();
  auto loader = square_image_loader(std::move(source), size, options.workers, options.strict);
  PackedWriterOptions format;
  format.encoding = options.encoding;
  format.quality = options.quality;
  format.version =
      options.encoding == PackedEncoding::kRaw ? kPackedVersion : kPackedRecordsVersion;
  PackedWriter writer(options.path, /*channels=*/3, size, size, format);
  StatsAccumulator stats;
  PackedWriteResult result;
  const auto stopped = [&] { return options.stop != nullptr && options.stop->load(); };
  auto last_report = std::chrono::steady_clock::now();
  loader->start_epoch(0);
  while (!stopped()) {
    auto batch = loader->next();
    if (!batch) break;
    for (int64_t k = 0; k < batch->images.size(0); ++k) {
      auto image = batch->images[k];
      if (image.size(0) == 1) image = image.expand({3, size, size});
      writer.add(image, batch->labels[k].item<int64_t>());
      stats.add(image);
    }
    result.images = batch->indices.back() + 1;  // in order: shuffle is off
    if (options.progress &&
        std::chrono::steady_clock::now() - last_report > std::chrono::seconds(1)) {
      options.progress(result.images, total, loader->skipped());
      last_report = std::chrono::steady_clock::now();
    }
  }
  if (stopped()) {
    writer.discard();
    result.stopped = true;
    return result;
  }
  if (options.progress) options.progress(total, total, loader->skipped());
  result.skipped = loader->skipped_samples();
  if (writer.count() == 0) throw std::runtime_error("no image could be decoded");
  result.stats = stats.finish();
  nlohmann::json extra = options.extra;
  extra["skipped"] = loader->skipped();
  writer.finish(class_names, result.stats, extra);
  result.images = writer.count();
  return result;
}

}  // namespace alexnet::data
