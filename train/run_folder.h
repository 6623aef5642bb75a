// The run folder of a training run: who may use it, and what a crash may have left in it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <ostream>
#include <string>

#include <nlohmann/json.hpp>

namespace alexnet::train {

/// What a run may do with a folder that already holds a run.
enum class FolderPolicy {
  kNew,        ///< refuse it (the default: nothing of an earlier run is replaced)
  kResume,     ///< continue it from checkpoints/last.pt
  kOverwrite,  ///< remove the earlier run's files and start afresh
};

/// Holds a run folder for the lifetime of one training run (the process that writes it).
///
/// Creates the folder, takes an exclusive lock on RUN_DIR/.lock (flock; the file names the
/// holder's pid and host, and a second run into the folder is refused naming them), applies
/// the policy (kNew refuses a folder holding config.json, metrics.jsonl or checkpoints/;
/// kOverwrite removes them when clear_for_overwrite() is called, once the new run's settings
/// are checked; kResume needs checkpoints/last.pt) and removes the temporary
/// files that a crash during a write leaves behind (is_atomic_file_temporary: NAME.XXXXXX.tmp;
/// other *.tmp files stay). Throws std::runtime_error naming
/// the folder and the flag that would allow the run. The lock is released on destruction or
/// when the process dies.
class RunFolder {
 public:
  RunFolder(const std::filesystem::path& path, FolderPolicy policy);
  ~RunFolder();
  RunFolder(const RunFolder&) = delete;
  RunFolder& operator=(const RunFolder&) = delete;

  /// With kOverwrite: removes the earlier run's files (config.json, metrics, checkpoints/, ...).
  /// Nothing for the other policies.
  void clear_for_overwrite();

 private:
  void check_policy(const std::filesystem::path& path, FolderPolicy policy);
  std::filesystem::path path_;
  FolderPolicy policy_;
  int lock_fd_ = -1;
};

/// Makes RUN_DIR/metrics.jsonl agree with a checkpoint at `step`, `epochs_done` epochs
/// complete, before a resumed run appends to it: drops the records of steps after `step` and
/// of epochs after `epochs_done` (logged after that checkpoint was written, and logged again
/// by the resumed run) and lines that are not whole JSON objects (a write torn by a crash),
/// warning on `log` about each torn line and noting how many records it dropped. A missing
/// file is left missing.
void trim_metrics(const std::filesystem::path& path, int64_t step, int64_t epochs_done,
                  std::ostream& log);

/// Refuses to resume when `now` (the effective configuration of this run) differs from
/// `saved` (the checkpoint's) in a key that shapes the computation: everything except the
/// keys resumable_keys() lists. A key missing from either counts as its default (as
/// config_from_json reads it). Throws std::invalid_argument naming the key and both values.
void check_resume_config(const nlohmann::json& saved, const nlohmann::json& now);

/// The configuration keys a resumed run may change, dotted ("data.workers").
const std::vector<std::string>& resumable_keys();

}  // namespace alexnet::train
