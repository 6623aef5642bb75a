#pragma once

// Internal to alexnet_distributed: the communicator's state, shared by communicator.cpp and
// gradient_reducer.cpp (which starts all-reduces and waits for them later). It includes
// c10d's headers, so every file that includes it is compiled without the precompiled header
// and with the USE_C10D_* definitions (distributed/CMakeLists.txt).

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <torch/csrc/distributed/c10d/Store.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

#include "distributed/communicator.h"

namespace alexnet::distributed {

using WorkPtr = c10::intrusive_ptr<c10d::Work>;

/// The collectives of one backend (Gloo or NCCL), whatever its c10d base class (ProcessGroup
/// in LibTorch 1.13, Backend in 2.x): the concrete classes have the same methods in both.
class Collectives {
 public:
  virtual ~Collectives() = default;
  virtual WorkPtr all_reduce(at::Tensor tensor) = 0;
  virtual WorkPtr broadcast(std::vector<at::Tensor>& tensors, int64_t root) = 0;
  virtual WorkPtr barrier() = 0;
};

/// What a rank registered at the rendezvous.
struct PeerInfo {
  int64_t world_size = 0;
  int64_t pid = 0;
  std::string host;
};

struct Communicator::State {
  DistributedConfig config;
  std::string backend;
  torch::Device device{torch::kCPU};  // where NCCL's tensors live
  c10::intrusive_ptr<c10d::Store> store;
  std::unique_ptr<Collectives> collectives;
  std::vector<PeerInfo> peers;
  std::mutex mutex;      // sequence and the store's progress key
  int64_t sequence = 0;  // collectives started by this rank

  std::string who() const { return "rank " + std::to_string(config.rank); }

  /// Starts one collective: numbers it and records the number in the store, so that when
  /// it fails the ranks that never reached it can be named.
  template <typename Start>
  std::pair<WorkPtr, int64_t> start(const std::string& what, Start&& start_collective) {
    std::lock_guard<std::mutex> lock(mutex);
    const int64_t number = record_progress(what);
    try {
      return {start_collective(), number};
    } catch (const std::exception& e) {
      throw failure(what, number, e.what());
    }
  }

  /// Called with the mutex held: numbers the next collective and writes its number to this
  /// rank's progress key. Throws DistributedError when the store does not answer.
  int64_t record_progress(const std::string& what);

  /// Waits for collective `number`; throws failure() when it fails.
  void wait(const WorkPtr& work, const std::string& what, int64_t number);

  /// Names the ranks that are gone (local processes that no longer exist) or behind (did not
  /// start collective `number`).
  DistributedError failure(const std::string& what, int64_t number, const std::string& cause);
};

}  // namespace alexnet::distributed
