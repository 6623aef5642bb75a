// `alexnet prepare`: decodes an image folder once into a packed file (data/packed.h) or a
// folder of shards (data/shards.h).
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>

#include "cli.h"
#include "cli/option_groups.h"
#include "cli/stop_on_signal.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data/packed.h"
#include "data/shards.h"

namespace alexnet::cli {
namespace {

using Clock = std::chrono::steady_clock;

std::string list_text(const std::vector<double>& values) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(2) << "[";
  for (size_t i = 0; i < values.size(); ++i) out << (i ? ", " : "") << values[i];
  out << "]";
  return out.str();
}

// Writes "source<TAB>message" lines (data::one_line) to `path`.partial, then renames it to `path`,
// so the log is either absent, the previous one, or complete.
void write_skipped_log(const std::string& path, const std::vector<data::SkippedSample>& skipped) {
  const std::string partial = path + ".partial";
  {
    std::ofstream out(partial, std::ios::trunc);
    for (const auto& sample : skipped) {
      out << data::one_line(sample.source) << "\t" << data::one_line(sample.message) << "\n";
    }
    out.close();
    if (!out) {
      const std::string reason = std::strerror(errno);
      std::remove(partial.c_str());
      throw std::runtime_error("cannot write " + partial + ": " + reason);
    }
  }
  std::error_code error;
  std::filesystem::rename(partial, path, error);
  if (error) {
    std::remove(partial.c_str());
    throw std::runtime_error("cannot rename " + partial + " to " + path + ": " + error.message());
  }
}

std::string stats_text(const data::DatasetStats& stats) {
  return "mean " + list_text(stats.mean) + ", std " + list_text(stats.std) +
         ", PCA eigenvalues (x255 scale) " +
         list_text(std::vector<double>(stats.eigenvalues.data_ptr<double>(),
                                       stats.eigenvalues.data_ptr<double>() + 3));
}

ArgParser prepare_parser() {
  ArgParser parser("alexnet prepare --data DIR --out FILE|FOLDER [options]",
                   "Decodes every image once, rescales its shorter side to --size and keeps the "
                   "central square (the paper's preparation), and writes them as uint8 with "
                   "labels, class names, the per-channel mean/std and the RGB covariance "
                   "eigen-data to a packed file that training reads without decoding (and "
                   "without OpenCV). --format jpeg stores each image re-encoded once as a "
                   "JPEG of --quality instead (about a tenth of the bytes; decoded by the "
                   "loader's workers). --shard-size N writes a folder of shards of N images and "
                   "an index.json instead of one file; a run stopped (or killed) after some "
                   "shards resumes with the rest when started again with the same arguments. "
                   "Undecodable images are skipped and listed. Ctrl-C or SIGTERM stops the run "
                   "and removes the partial file, keeping complete shards (exit status 130 or "
                   "143); a second one ends it at once.");
  parser.option("data", "image folder (ROOT/<class>/<image>, or ROOT/train and ROOT/val)")
      .option("out", "packed file to write, or the shard folder with --shard-size")
      .option("format", "raw (uint8 pixels) or jpeg (re-encoded once at --size)", "raw")
      .option("quality", "JPEG quality of --format jpeg, 1..100", "95")
      .option("shard-size", "images per shard: write a shard folder (0: one file)", "0");
  // The images.
  parser.option("split", "train, or val (ROOT/val, or --val-data)", "train")
      .option("val-data", "validation images: a folder or a list file of \"path label\" lines")
      .option("val-root", "folder the list file's paths are relative to (default: its folder)")
      .option("class-names", "file of human-readable class names (e.g. synset words)")
      .option("size", "side of the stored square images", "256")
      .option("workers", "decoding threads", "2");
  add_subset_options(parser);
  parser
      .option("max-pixels",
              "skip images whose header declares more pixels (width x height; 0: no limit)",
              std::to_string(data::kDefaultMaxImagePixels))
      .option("skipped-log",
              "file listing skipped images, written only when an image was skipped (default: "
              "OUT.skipped.txt)")
      .flag("strict", "stop at the first undecodable image instead of skipping it");
  return parser;
}

// What `alexnet prepare` writes, checked.
struct PrepareSettings {
  std::string out_path;
  int64_t size = 0;
  data::PackedEncoding encoding = data::PackedEncoding::kRaw;
  int64_t quality = 0;
  int64_t shard_size = 0;  // 0: one packed file
  /// Where skipped images are listed; the default file is removed when none was skipped.
  std::string skipped_log;
  bool default_log = true;
};

PrepareSettings prepare_settings(const ArgParser& parser) {
  if (!parser.has("data") || !parser.has("out")) {
    throw std::invalid_argument("--data and --out are required (see alexnet prepare --help)");
  }
  PrepareSettings settings;
  settings.out_path = parser.get("out");
  settings.size = parser.get_int("size");
  if (settings.size <= 0) throw std::invalid_argument("--size must be positive");
  if (parser.get_int("limit") < 0) throw std::invalid_argument("--limit must be >= 0");
  if (parser.get_int("max-pixels") < 0) throw std::invalid_argument("--max-pixels must be >= 0");
  settings.encoding = data::parse_packed_encoding(parser.get("format"));
  settings.quality = parser.get_int("quality");
  if (settings.quality < 1 || settings.quality > 100) {
    throw std::invalid_argument("--quality must be in 1..100, got " +
                                std::to_string(settings.quality));
  }
  settings.shard_size = parser.get_int("shard-size");
  if (settings.shard_size < 0) throw std::invalid_argument("--shard-size must be >= 0");
  settings.default_log = !parser.has("skipped-log");
  if (!settings.default_log) {
    settings.skipped_log = parser.get("skipped-log");
  } else {
    settings.skipped_log =
        settings.out_path + (settings.shard_size > 0 ? "/skipped.txt" : ".skipped.txt");
  }
  return settings;
}

// The images to write: --split of --data decoded for --size, --limit of them.
data::DatasetPtr open_prepare_data(const ArgParser& parser, const PrepareSettings& settings) {
  data::DatasetOptions options;
  options.split = parser.get("split");
  options.image_size = settings.size;
  options.val_source = parser.get("val-data");
  options.val_root = parser.get("val-root");
  options.class_names_file = parser.get("class-names");
  options.max_image_pixels = parser.get_int("max-pixels");
  return subset_option(parser, data::open_dataset(parser.get("data"), options));
}

// Prints "prepare: DONE/TOTAL images, N images/s, K skipped" on stderr: over one line on a
// terminal, every 10 s and at the end otherwise. `rate_note` follows the rate.
std::function<void(int64_t, int64_t, int64_t)> progress_printer(const std::string& rate_note = "") {
  const bool tty = isatty(STDERR_FILENO) != 0;
  const auto start = Clock::now();
  auto last_line = start - std::chrono::hours(1);
  return [=](int64_t done, int64_t total, int64_t skipped) mutable {
    const auto now = Clock::now();
    const bool final_line = done >= total;
    if (!tty && !final_line && now - last_line < std::chrono::seconds(10)) return;
    last_line = now;
    const double seconds = std::chrono::duration<double>(now - start).count();
    std::cerr << (tty ? "\r" : "") << "prepare: " << done << "/" << total << " images, "
              << std::fixed << std::setprecision(0) << (seconds > 0 ? done / seconds : 0.0)
              << " images/s" << rate_note << ", " << skipped << " skipped"
              << (tty && !final_line ? "" : "\n") << std::flush;
  };
}

// --shard-size N: the folder of shards and its index (data/shards.h), resumed when the folder
// holds an earlier run's complete shards.
int write_shard_folder(const ArgParser& parser, const data::DatasetPtr& dataset,
                       const PrepareSettings& settings, const StopOnSignal& stop) {
  data::ShardWriteOptions options;
  options.folder = settings.out_path;
  options.encoding = settings.encoding;
  options.quality = settings.quality;
  options.shard_size = settings.shard_size;
  options.image_size = settings.size;
  options.split = parser.get("split") == "test" ? "val" : parser.get("split");
  options.source = {{"data", parser.get("data")},
                    {"val_data", parser.get("val-data")},
                    {"val_root", parser.get("val-root")},
                    {"class_names", parser.get("class-names")},
                    {"limit", parser.get_int("limit")},
                    {"seed", parser.get_int("seed")},
                    {"max_pixels", parser.get_int("max-pixels")}};
  options.workers = std::max<int64_t>(1, parser.get_int("workers"));
  options.strict = parser.get_flag("strict");
  options.stop = stop.flag();
  options.progress = progress_printer(" (this run)");
  const int64_t shard_size = settings.shard_size;
  const int64_t shards = (static_cast<int64_t>(dataset->size()) + shard_size - 1) / shard_size;
  std::cerr << "prepare: " << dataset->size() << " images, " << dataset->class_names().size()
            << " classes, " << options.workers << " workers -> " << options.folder << " (" << shards
            << " shards of " << shard_size << ", " << parser.get("format") << ")\n";
  const auto result = data::write_shards(dataset, options);
  if (result.stopped) {
    std::cerr << (isatty(STDERR_FILENO) != 0 ? "\n" : "") << "prepare: stopped by " << stop.name()
              << "; " << result.kept + result.written << " of " << result.shards
              << " shards complete in " << options.folder
              << " (the same command resumes with the rest)\n";
    return stop.exit_code();
  }
  const std::string& skipped_log = settings.skipped_log;
  if (!result.skipped.empty()) write_skipped_log(skipped_log, result.skipped);
  if (result.skipped.empty() && settings.default_log) std::remove(skipped_log.c_str());
  std::cout << "wrote " << options.folder << ": " << result.shards << " shards (" << result.kept
            << " kept from an earlier run), " << result.images << " images of "
            << options.image_size << "x" << options.image_size << ", "
            << dataset->class_names().size() << " classes, " << result.skipped.size() << " skipped"
            << (result.skipped.empty() ? "" : " (listed in " + skipped_log + ")") << "\n"
            << stats_text(*result.stats) << "\n";
  return 0;
}

// One packed file (data/packed.h), written as OUT.partial and renamed when complete.
int write_packed_file(const ArgParser& parser, const data::DatasetPtr& dataset,
                      const PrepareSettings& settings, const StopOnSignal& stop) {
  data::PackedWriteOptions options;
  options.path = settings.out_path;
  options.encoding = settings.encoding;
  options.quality = settings.quality;
  options.image_size = settings.size;
  const std::string split = parser.get("split");
  options.extra = {{"source", parser.get("data")}, {"split", split == "test" ? "val" : split}};
  options.workers = std::max<int64_t>(1, parser.get_int("workers"));
  options.strict = parser.get_flag("strict");
  options.stop = stop.flag();
  options.progress = progress_printer();
  const auto total = static_cast<int64_t>(dataset->size());
  std::cerr << "prepare: " << total << " images, " << dataset->class_names().size() << " classes, "
            << options.workers << " workers -> " << options.path << "\n";
  const auto result = data::write_packed(dataset, options);
  if (result.stopped) {
    std::cerr << (isatty(STDERR_FILENO) != 0 ? "\n" : "") << "prepare: stopped by " << stop.name()
              << " after " << result.images << " of " << total << " images; removed "
              << options.path << ".partial\n";
    return stop.exit_code();
  }
  const std::string& skipped_log = settings.skipped_log;
  if (!result.skipped.empty()) write_skipped_log(skipped_log, result.skipped);
  // A log left by an earlier run describes the file just replaced.
  if (result.skipped.empty() && settings.default_log) std::remove(skipped_log.c_str());
  std::cout << "wrote " << options.path << ": " << result.images << " images of "
            << options.image_size << "x" << options.image_size << ", "
            << dataset->class_names().size() << " classes, " << result.skipped.size() << " skipped"
            << (result.skipped.empty() ? "" : " (listed in " + skipped_log + ")") << "\n"
            << stats_text(*result.stats) << "\n";
  return 0;
}

int run_prepare(const std::vector<std::string>& args) {
  // First, so that a signal at any later point (a list file that is a FIFO keeps prepare
  // waiting) is seen by the loop that writes.
  const StopOnSignal stop;
  ArgParser parser = prepare_parser();
  if (!parser.parse(args)) return 0;
  const PrepareSettings settings = prepare_settings(parser);
  const data::DatasetPtr dataset = open_prepare_data(parser, settings);
  return settings.shard_size > 0 ? write_shard_folder(parser, dataset, settings, stop)
                                 : write_packed_file(parser, dataset, settings, stop);
}

const Registration kPrepareRegistration{
    "prepare", "decode an image folder once into a packed file for training", run_prepare};

}  // namespace
}  // namespace alexnet::cli
