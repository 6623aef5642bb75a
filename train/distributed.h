#pragma once

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "data/dataset.h"

namespace alexnet::train {

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
  /// "auto" (NCCL for CUDA devices where LibTorch has it, else Gloo), "gloo" or "nccl".
  std::string backend = "auto";
  /// Bound on joining the job and on every collective: a dead or hung rank makes the others
  /// fail after at most this long instead of waiting forever.
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};

  bool enabled() const { return world_size > 1; }
};

/// Reads RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE (default: WORLD_SIZE), MASTER_ADDR
/// and MASTER_PORT. Without WORLD_SIZE the
/// result is a single process (world_size 1). Throws std::invalid_argument naming the
/// variable and its value when one is malformed or out of range (RANK >= WORLD_SIZE, a
/// port outside 1..65535, RANK set without WORLD_SIZE).
DistributedConfig distributed_config_from_env();

/// "gloo" or "nccl" for `requested` ("auto", "gloo", "nccl") and the training device.
/// Throws std::invalid_argument for an unknown name or NCCL where LibTorch lacks it.
std::string resolve_backend(const std::string& requested, const torch::Device& device);

/// Whether this build can use NCCL (LibTorch with CUDA and NCCL).
bool nccl_available();

/// The devices of local rank `local_rank` when every process on a machine is configured with
/// the same `devices`: CUDA indices move up by local_rank * (number of CUDA devices given),
/// so "cuda:0" becomes cuda:LOCAL_RANK and "cuda:0,cuda:1" (the column split) becomes
/// cuda:2*LOCAL_RANK,cuda:2*LOCAL_RANK+1. CPU devices stay. Throws std::invalid_argument
/// naming the device when it does not exist.
std::vector<torch::Device> devices_for_rank(std::vector<torch::Device> devices, int64_t local_rank);

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
  /// WORLD_SIZE mismatch, a duplicate RANK, or ranks missing after the timeout.
  /// `device` picks the backend for "auto" (CUDA: NCCL where built).
  Communicator(const DistributedConfig& config, const torch::Device& device);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int64_t rank() const;
  int64_t world_size() const;
  /// "gloo" or "nccl".
  const std::string& backend() const;

  /// Sums `tensor` (contiguous, float or double, any shape) over ranks, in place.
  void all_reduce_sum(torch::Tensor tensor);
  /// Copies rank `root`'s tensors into every rank's, in place (same shapes on all ranks).
  void broadcast(std::vector<torch::Tensor> tensors, int64_t root = 0);
  /// Returns when every rank has called it.
  void barrier();
  /// The element-wise sums over ranks of `values` (metrics, flags), in double precision.
  std::vector<double> sum(const std::vector<double>& values);

  struct State;

 private:
  friend class GradientReducer;
  std::unique_ptr<State> state_;
};

/// Copies rank 0's parameters and buffers into every rank's `module`.
void broadcast_module(Communicator& communicator, torch::nn::Module& module);

/// The parameters of `module` in the order backward produces their gradients: the reverse
/// of registration order, which for AlexNet is fc8 first and conv1 last.
std::vector<torch::Tensor> parameters_in_backward_order(torch::nn::Module& module);

struct GradientReducerOptions {
  /// Gradients are flattened into buckets of about this many bytes (one parameter larger
  /// than this gets a bucket of its own); one all-reduce per bucket.
  int64_t bucket_bytes = 25 << 20;
  /// Start a bucket's all-reduce from autograd hooks as soon as all its gradients exist,
  /// overlapping communication with the rest of backward. false: all buckets after
  /// backward (for measuring the overlap's gain).
  bool overlap = true;
};

/// Averages gradients over ranks with bucketed all-reduces (the core of PyTorch's DDP).
/// Use: zero the gradients, run backward, call synchronize(), step the optimiser. Each
/// parameter must get its gradient from one backward pass per step (no accumulation over
/// several backward passes between synchronize() calls). Parameters may live on several
/// devices (the two-device column split): a bucket holds parameters of one device and dtype.
class GradientReducer {
 public:
  /// `parameters` in the order their gradients become ready (parameters_in_backward_order).
  GradientReducer(Communicator& communicator, std::vector<torch::Tensor> parameters,
                  GradientReducerOptions options = {});
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  /// After backward: starts the buckets not yet started, waits for all and leaves in every
  /// parameter's .grad the mean of that gradient over ranks. A parameter that got no
  /// gradient this step contributes zeros. Throws DistributedError when a rank fails.
  void synchronize();

  int64_t bucket_count() const;
  /// Bytes in each bucket, in launch order.
  std::vector<int64_t> bucket_bytes() const;
  /// Seconds synchronize() spent waiting for all-reduces, summed over calls: the part of
  /// communication that did not overlap with computation.
  double wait_seconds() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// The samples of `dataset` that rank `rank` of `world_size` evaluates: indices rank,
/// rank + world_size, ... (disjoint, together all samples; sizes differ by at most one).
data::DatasetPtr shard_for_rank(data::DatasetPtr dataset, int64_t rank, int64_t world_size);

/// A TCP port on `address` that was free a moment ago (bind to port 0, read, close).
int64_t find_free_port(const std::string& address = "127.0.0.1");

struct LaunchOptions {
  int64_t nproc = 2;
  std::string master_addr = "127.0.0.1";
  /// 0: a free port is chosen.
  int64_t master_port = 0;
  /// After the first process fails, the others get SIGTERM and, this long later, SIGKILL.
  std::chrono::milliseconds kill_grace{std::chrono::seconds(10)};
  /// Extra environment variables for every process (e.g. OMP_NUM_THREADS).
  std::vector<std::pair<std::string, std::string>> env;
  /// Where the launcher reports a failed rank; null: nowhere.
  std::ostream* log = nullptr;
};

/// What launch_local_processes() saw.
struct LaunchResult {
  /// 0 when every process exited with 0; else the first failed process's exit code
  /// (128 + signal number for a signal).
  int exit_code = 0;
  /// The rank that failed first, -1 when none did.
  int64_t failed_rank = -1;
  /// "rank 1 (pid 1234) exited with code 3" / "... was killed by signal 9 (Killed)"; empty
  /// when all succeeded.
  std::string message;
};

/// Starts `nproc` copies of `executable` with `args` (argv[1..]) on this machine, each with
/// RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set, and waits for all of them.
/// When one fails, the rest are stopped (SIGTERM, then SIGKILL after kill_grace) and the
/// failure is reported. The processes run in their own process group and end with the
/// launcher; a SIGINT or SIGTERM to the launcher is passed on to each of them once (a second
/// one kills them), and the result's exit code is then 128 + the signal's number. Throws
/// std::runtime_error when a process cannot be started.
LaunchResult launch_local_processes(const std::string& executable,
                                    const std::vector<std::string>& args,
                                    const LaunchOptions& options);

}  // namespace alexnet::train
