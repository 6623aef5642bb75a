#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "distributed/environment.h"

namespace alexnet::distributed {

/// A failure of the distributed job: rendezvous, a collective, a dead or hung rank. The
/// message names this rank and, where it can be found out, the rank at fault.
class DistributedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The processes of one job and the collectives between them (c10d: a TCPStore hosted by
/// rank 0 and a Gloo or NCCL process group). Every collective must be called by all ranks
/// in the same order. Collectives are bounded by the config's timeout; on failure they throw
/// DistributedError naming the ranks that fell behind or went away.
class Communicator {
 public:
  /// Joins the job: rank 0 listens on MASTER_ADDR:MASTER_PORT, every rank registers, checks
  /// that all agree on WORLD_SIZE and that no two claim the same RANK, then the process
  /// group connects. Throws DistributedError for a port in use, an unreachable master, a
  /// WORLD_SIZE mismatch, a duplicate RANK, or ranks missing after the timeout; c10::Error
  /// for a rank, world size or port out of range; std::invalid_argument for a backend that
  /// resolve_backend() refuses. `device` picks the backend for "auto" (CUDA: NCCL where
  /// built).
  Communicator(const DistributedConfig& config, const torch::Device& device);
  /// Leaves the job (closes the process group and the store connection).
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  /// This process's RANK.
  int64_t rank() const;
  /// The number of processes in the job.
  int64_t world_size() const;
  /// "gloo" or "nccl".
  const std::string& backend() const;

  /// Sums `tensor` (contiguous, float or double, any shape) over ranks, in place. Throws
  /// c10::Error for a non-contiguous tensor.
  void all_reduce_sum(torch::Tensor tensor);
  /// Copies rank `root`'s tensors into every rank's, in place (same shapes on all ranks,
  /// contiguous). Throws c10::Error for a root outside 0..world_size-1.
  void broadcast(std::vector<torch::Tensor> tensors, int64_t root = 0);
  /// Returns when every rank has called it.
  void barrier();
  /// The element-wise sums over ranks of `values` (metrics, flags), in double precision.
  std::vector<double> sum(const std::vector<double>& values);

  /// The store, process group and collective bookkeeping (defined inside the library).
  struct State;

 private:
  friend class GradientReducer;
  std::unique_ptr<State> state_;
};

/// Copies rank 0's parameters and buffers into every rank's `module` (one broadcast per
/// device and dtype). Throws DistributedError when a rank fails.
void broadcast_module(Communicator& communicator, torch::nn::Module& module);

}  // namespace alexnet::distributed
