#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "data/dataset.h"

namespace alexnet::distributed {

/// Where this process sits in a data-parallel job, in torchrun's convention.
///
/// Batch semantics: the configured batch size is the *global* batch. Each of the
/// `world_size` ranks computes the mean loss over its `batch_size / world_size` samples and
/// the gradients are averaged over ranks, so a step of N processes equals a step of one
/// process on the whole batch: the learning rate and every other hyper-parameter mean the
/// same whatever the number of processes.
struct DistributedConfig {
  int64_t rank = 0;        ///< RANK: 0 .. world_size - 1; rank 0 hosts the rendezvous store
  int64_t world_size = 1;  ///< WORLD_SIZE: number of processes in the job
  int64_t local_rank = 0;  ///< LOCAL_RANK: index on this machine (picks its CUDA devices)
  /// LOCAL_WORLD_SIZE: processes on this machine (they share its cores).
  int64_t local_world_size = 1;
  std::string master_addr = "127.0.0.1";  ///< MASTER_ADDR: rank 0's address
  int64_t master_port = 29500;            ///< MASTER_PORT: rank 0's rendezvous port
  /// ALEXNET_RENDEZVOUS_FILE: where the ranks of a job on one machine meet (a c10d FileStore
  /// in a folder only this user may enter, set by launch_local_processes); no TCP port is
  /// opened for the rendezvous then. Empty: rank 0 hosts a TCP store on MASTER_PORT, on every
  /// interface (c10d's TCPStore in LibTorch 1.13 has no listen address), which a job across
  /// machines needs and which must then run on a trusted network.
  std::string rendezvous_file;
  /// "auto" (NCCL for CUDA devices where LibTorch has it, else Gloo), "gloo" or "nccl".
  std::string backend = "auto";
  /// Bound on joining the job and on every collective: a dead or hung rank makes the others
  /// fail after at most this long instead of waiting forever.
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};

  /// Whether the job has more than one process.
  bool enabled() const { return world_size > 1; }
};

/// Reads RANK, WORLD_SIZE, LOCAL_RANK (default: RANK), LOCAL_WORLD_SIZE (default:
/// WORLD_SIZE), MASTER_ADDR, MASTER_PORT and ALEXNET_RENDEZVOUS_FILE. Without WORLD_SIZE the result
/// is a single process (world_size 1). Throws std::invalid_argument naming the variable and its
/// value when one is malformed or out of range (RANK >= WORLD_SIZE, a port outside 1..65535, RANK
/// set without WORLD_SIZE), or when WORLD_SIZE > 1 and MASTER_ADDR or MASTER_PORT is unset.
DistributedConfig distributed_config_from_env();

/// Whether `address` names this machine's loopback interface: "localhost", 127.x.y.z or ::1.
bool is_loopback_address(const std::string& address);

/// "gloo" or "nccl" for `requested` ("auto", "gloo", "nccl") and the training device.
/// Throws std::invalid_argument for an unknown name, for NCCL where LibTorch lacks it, and
/// for NCCL on a device that is not CUDA.
std::string resolve_backend(const std::string& requested, const torch::Device& device);

/// Whether this build can use NCCL (LibTorch with CUDA and NCCL).
bool nccl_available();

/// The devices of local rank `local_rank` when every process on a machine is configured with
/// the same `devices`: CUDA indices move up by local_rank * (number of CUDA devices given),
/// so "cuda:0" becomes cuda:LOCAL_RANK and "cuda:0,cuda:1" (the column split) becomes
/// cuda:2*LOCAL_RANK,cuda:2*LOCAL_RANK+1. CPU devices stay. Throws std::invalid_argument
/// naming the device when it does not exist.
std::vector<torch::Device> devices_for_rank(std::vector<torch::Device> devices, int64_t local_rank);

/// The samples of `dataset` that rank `rank` of `world_size` evaluates: indices rank,
/// rank + world_size, ... (disjoint, together all samples; sizes differ by at most one).
/// Throws c10::Error for a null data set or a rank outside 0..world_size-1.
data::DatasetPtr shard_for_rank(data::DatasetPtr dataset, int64_t rank, int64_t world_size);

}  // namespace alexnet::distributed
