#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "model/alexnet.h"
#include "runtime/atomic_file.h"

namespace alexnet::train {

/// Everything needed to use a trained model or to continue its training exactly.
///
/// On disk: a file `torch.save` could have written (a zip holding data.pkl and the tensor
/// data), loadable in Python with `torch.load(path, weights_only=True)`. It holds one dict:
/// "format" ("alexnet-cpp checkpoint"), "version" (2), "config", "schedule" and "progress"
/// (JSON text), "model" and "optimizer" (dicts of tensors under single-device parameter
/// names), "epoch", "batch_in_epoch", "step", "image_size", "resize_size" (ints),
/// "resolved_devices" (text), "cpu_rng_state" (a uint8 tensor or None), "cuda_rng_states"
/// (a list of uint8 tensors), "class_names" (a list of text), "mean" and "std" (1-D float64
/// tensors). Reading it runs no code.
struct Checkpoint {
  /// The effective training configuration (see train/config.h); "model" holds the
  /// AlexNetOptions (model_options_from_json reads it).
  nlohmann::json config;
  /// Parameters under their single-device names (conv1.weight, ... fc8.bias), on the CPU.
  torch::OrderedDict<std::string, torch::Tensor> model;
  /// Optimiser state (Sgd::state()) under single-device parameter names ("lr",
  /// "velocity.conv1.weight", ...), whatever the device layout it was trained on.
  torch::OrderedDict<std::string, torch::Tensor> optimizer;
  /// Learning-rate schedule state (LrSchedule::state()).
  nlohmann::json schedule;
  /// The epoch in progress (0-based) and how many of its batches are done: the loader
  /// position. A checkpoint written at an epoch end holds (epoch + 1, 0).
  int64_t epoch = 0;
  int64_t batch_in_epoch = 0;
  /// Optimisation steps done.
  int64_t step = 0;
  /// The CPU generator's state (uint8), and one per CUDA device in use (may be empty).
  torch::Tensor cpu_rng_state;
  std::vector<torch::Tensor> cuda_rng_states;
  /// The devices trained on, resolved (config "devices" may say "auto"), e.g. "cpu,cpu".
  std::string resolved_devices;
  /// Trainer bookkeeping: running epoch sums, best validation error, elapsed seconds.
  nlohmann::json progress = nlohmann::json::object();
  /// What a user of the model needs: class names by label, input crop and resize sizes,
  /// per-channel mean and std (0..255 scale; std may be empty).
  std::vector<std::string> class_names;
  std::vector<double> mean, std;
  int64_t image_size = 224;
  int64_t resize_size = 256;
};

/// What a file in PyTorch's zip format holds, from the names of its records.
enum class ArchiveKind {
  kNotArchive,   ///< not readable as such an archive
  kTorchScript,  ///< code and constants (torch.jit.save, an exported model.pt)
  kPlainData,    ///< data.pkl without code (torch.save, a checkpoint)
  kOther,        ///< an archive of neither kind
};
/// The kind of `path`; for kNotArchive, `error` (when given) receives the reader's message.
ArchiveKind archive_kind(const std::string& path, std::string* error = nullptr);

/// Refuses `path` (a file in PyTorch's zip format, `what` names its kind in the message)
/// when a storage of `tensors`, which were read from it, is longer than every record of the
/// archive left to hold it: a record cut short or altered. LibTorch 1.13 does not check this
/// and would read past the record's end. Throws std::runtime_error naming the file.
void check_tensor_records(const std::string& path, const std::string& what,
                          const std::vector<torch::Tensor>& tensors);

/// Reads a checkpoint written by save_checkpoint, without running code. Throws
/// std::runtime_error naming the file when it is missing, truncated, not a checkpoint or
/// written by an older version (a TorchScript archive), and naming the key when an entry is
/// missing or of the wrong type (config must hold a "model" object), and naming the parameter
/// when the model holds NaN or infinite values.
Checkpoint load_checkpoint(const std::string& path);

/// The model a checkpoint describes (its config's "model" options and its parameters), on
/// one device, in eval mode. Throws when a parameter is missing or of another shape, naming it.
alexnet::AlexNet model_from_checkpoint(const Checkpoint& checkpoint,
                                       torch::Device device = torch::kCPU);

/// Writes a checkpoint atomically (an AtomicFile: a temporary file, flushed, renamed over PATH), so
/// a crash at any moment leaves either the previous file or the new one whole. Creates the folder.
void save_checkpoint(const Checkpoint& checkpoint, const std::string& path);

/// Records the generator states of the CPU and of each CUDA device of `devices`.
void capture_rng_states(Checkpoint& checkpoint, const std::vector<torch::Device>& devices);

/// Restores the states capture_rng_states recorded (CUDA states in the order of the CUDA
/// devices of `devices`). CUDA states that do not match the CUDA devices in use (more or fewer
/// of them) are reported on `log`.
void restore_rng_states(const Checkpoint& checkpoint, const std::vector<torch::Device>& devices,
                        std::ostream& log);

}  // namespace alexnet::train
