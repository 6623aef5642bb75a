// The per-epoch checkpoints a run keeps besides last.pt and best.pt.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace alexnet::train {

/// The file name of the checkpoint written at the end of `epoch` (counted from 1):
/// "epoch_0007.pt" (at least four digits).
std::string epoch_checkpoint_name(int64_t epoch);

/// The epochs whose checkpoints `folder` holds (regular files named epoch_<digits>.pt, as
/// epoch_checkpoint_name writes them), ascending. Other files are ignored; a missing folder
/// holds none.
std::vector<int64_t> epoch_checkpoints(const std::filesystem::path& folder);

/// Keeps the checkpoint of `epoch`: copies `last_path` (the checkpoint just written at that
/// epoch's end) to folder/epoch_checkpoint_name(epoch) atomically, then deletes the epoch
/// checkpoints of `folder` other than the `keep_last` most recent (highest) epochs. Does
/// nothing when keep_last is 0. Throws std::runtime_error naming a file it cannot write or
/// delete.
void keep_epoch_checkpoint(const std::filesystem::path& folder, const std::string& last_path,
                           int64_t epoch, int64_t keep_last);

}  // namespace alexnet::train
