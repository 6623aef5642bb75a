#include "distributed/communicator.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <sstream>
#include <thread>

#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#if ALEXNET_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if defined(USE_C10D_NCCL)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "distributed/communicator_state.h"

namespace alexnet::distributed {
namespace {

using Clock = std::chrono::steady_clock;

std::string seconds_text(std::chrono::milliseconds duration) {
  std::ostringstream out;
  out << duration.count() / 1000.0 << " s";
  return out.str();
}

std::vector<uint8_t> bytes(const std::string& text) { return {text.begin(), text.end()}; }
std::string text(const std::vector<uint8_t>& value) { return {value.begin(), value.end()}; }

std::string host_name() {
  char name[256] = {0};
  if (gethostname(name, sizeof(name) - 1) != 0) return "?";
  return name;
}

template <typename Group>
class GroupCollectives : public Collectives {
 public:
  /// `barrier_devices`: the CUDA device indices an NCCL barrier runs on (empty for Gloo).
  explicit GroupCollectives(c10::intrusive_ptr<Group> group,
                            std::vector<int64_t> barrier_devices = {})
      : group_(std::move(group)), barrier_devices_(std::move(barrier_devices)) {}
  WorkPtr all_reduce(at::Tensor tensor) override {
    std::vector<at::Tensor> tensors{std::move(tensor)};
    return group_->allreduce(tensors);
  }
  WorkPtr broadcast(std::vector<at::Tensor>& tensors, int64_t root) override {
    c10d::BroadcastOptions options;
    options.rootRank = root;
    return group_->broadcast(tensors, options);
  }
  WorkPtr barrier() override {
    c10d::BarrierOptions options;
    options.device_ids = barrier_devices_;
    return group_->barrier(options);
  }

 private:
  c10::intrusive_ptr<Group> group_;
  std::vector<int64_t> barrier_devices_;
};

PeerInfo parse_peer(const std::string& value) {
  PeerInfo peer;
  std::istringstream in(value);
  in >> peer.world_size >> peer.pid >> peer.host;
  return peer;
}

// "HOST:PORT" of rank 0's TCP store, or "file PATH" of a local job's rendezvous file.
std::string rendezvous_name(const DistributedConfig& config) {
  if (!config.rendezvous_file.empty()) return "file " + config.rendezvous_file;
  return config.master_addr + ":" + std::to_string(config.master_port);
}

std::string key_join(int64_t rank) { return "alexnet/join/" + std::to_string(rank); }
std::string key_claim(int64_t rank) { return "alexnet/claim/" + std::to_string(rank); }
std::string key_progress(int64_t rank) { return "alexnet/progress/" + std::to_string(rank); }

// The ranks of a local job meet in the file config.rendezvous_file, which only this user can
// reach.
c10::intrusive_ptr<c10d::Store> open_file_store(const Communicator::State& s) {
  const auto& config = s.config;
  try {
    auto store = c10::make_intrusive<c10d::FileStore>(config.rendezvous_file,
                                                      static_cast<int>(config.world_size));
    store->setTimeout(config.timeout);
    return store;
  } catch (const std::exception& e) {
    throw DistributedError(s.who() + ": cannot open the rendezvous file " + config.rendezvous_file +
                           " (ALEXNET_RENDEZVOUS_FILE) [" + e.what() + "]");
  }
}

// Rank 0 hosts the TCPStore at `where`; the other ranks connect to it. A local job meets in
// its rendezvous file instead.
c10::intrusive_ptr<c10d::Store> open_store(const Communicator::State& s, const std::string& where) {
  const auto& config = s.config;
  if (!config.rendezvous_file.empty()) return open_file_store(s);
  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<std::uint16_t>(config.master_port);
  store_options.isServer = config.rank == 0;
  // numWorkers stays unset: the rendezvous counts the ranks itself.
  store_options.waitWorkers = false;
  store_options.timeout = config.timeout;
  try {
    return c10::make_intrusive<c10d::TCPStore>(config.master_addr, store_options);
  } catch (const std::exception& e) {
    if (config.rank == 0) {
      throw DistributedError("rank 0: cannot host the rendezvous at " + where +
                             ": the port is in use or the address is not this machine's "
                             "(choose another MASTER_PORT, or --master-port) [" +
                             e.what() + "]");
    }
    throw DistributedError(s.who() + ": cannot reach rank 0's rendezvous at " + where + " within " +
                           seconds_text(config.timeout) +
                           ": check MASTER_ADDR and MASTER_PORT and that rank 0 is running [" +
                           e.what() + "]");
  }
}

// Claims this rank at the rendezvous and publishes its WORLD_SIZE, pid and host.
void register_rank(Communicator::State& s, const std::string& where) {
  const auto& config = s.config;
  const auto pid = static_cast<int64_t>(getpid());
  if (s.store->add(key_claim(config.rank), 1) > 1) {
    throw DistributedError(s.who() + ": another process already joined " + where + " as rank " +
                           std::to_string(config.rank) + " (two processes with the same RANK)");
  }
  s.store->set(key_join(config.rank), bytes(std::to_string(config.world_size) + " " +
                                            std::to_string(pid) + " " + host_name()));
}

// Reads the ranks that joined since the last call into s.peers and returns those still
// missing. Throws DistributedError when a rank's WORLD_SIZE differs from this one's, or a
// rank beyond WORLD_SIZE - 1 joined (a process that believes the world is larger).
std::vector<int64_t> read_joined(Communicator::State& s, std::vector<bool>& joined) {
  const auto& config = s.config;
  std::vector<int64_t> missing;
  for (int64_t r = 0; r < config.world_size; ++r) {
    const auto i = static_cast<size_t>(r);
    if (!joined[i] && s.store->check({key_join(r)})) {
      s.peers[i] = parse_peer(text(s.store->get(key_join(r))));
      joined[i] = true;
      if (s.peers[i].world_size != config.world_size) {
        throw DistributedError(s.who() + ": WORLD_SIZE mismatch: this process has WORLD_SIZE=" +
                               std::to_string(config.world_size) + ", rank " + std::to_string(r) +
                               " (pid " + std::to_string(s.peers[i].pid) + " on " +
                               s.peers[i].host +
                               ") has WORLD_SIZE=" + std::to_string(s.peers[i].world_size));
      }
    }
    if (!joined[i]) missing.push_back(r);
  }
  if (s.store->check({key_join(config.world_size)})) {
    const auto extra = parse_peer(text(s.store->get(key_join(config.world_size))));
    throw DistributedError(s.who() + ": WORLD_SIZE mismatch: this process has WORLD_SIZE=" +
                           std::to_string(config.world_size) + " but a process joined as rank " +
                           std::to_string(config.world_size) +
                           " with WORLD_SIZE=" + std::to_string(extra.world_size));
  }
  return missing;
}

// Waits until every rank has registered, or throws DistributedError after the timeout.
void wait_for_all_ranks(Communicator::State& s, const std::string& where) {
  const auto& config = s.config;
  s.peers.assign(static_cast<size_t>(config.world_size), PeerInfo{});
  std::vector<bool> joined(static_cast<size_t>(config.world_size), false);
  const auto deadline = Clock::now() + config.timeout;
  while (true) {
    const std::vector<int64_t> missing = read_joined(s, joined);
    if (missing.empty()) break;
    if (Clock::now() > deadline) {
      std::ostringstream list;
      for (size_t i = 0; i < missing.size(); ++i) list << (i ? ", " : "") << missing[i];
      throw DistributedError(s.who() + ": timed out after " + seconds_text(config.timeout) +
                             " waiting at " + where + " for rank(s) " + list.str() +
                             " of WORLD_SIZE=" + std::to_string(config.world_size) +
                             " to join: were all ranks started, with the same WORLD_SIZE?");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

#if ALEXNET_WITH_GLOO
// Gloo's network device: GLOO_SOCKET_IFNAME's interface when set, the loopback address for a
// local job, else the device of this host's name.
std::shared_ptr<::gloo::transport::Device> gloo_device(const std::string& master_addr) {
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname) {
    return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  }
  if (is_loopback_address(master_addr)) {
    return c10d::ProcessGroupGloo::createDeviceForHostname(master_addr);
  }
  return c10d::ProcessGroupGloo::createDefaultDevice();
}
#endif

// The Gloo or NCCL process group over the rendezvous store, its keys under the backend's name.
std::unique_ptr<Collectives> connect_group(const Communicator::State& s, const std::string& where) {
  const auto& config = s.config;
  auto group_store = c10::make_intrusive<c10d::PrefixStore>(s.backend, s.store);
  [[maybe_unused]] const int rank = static_cast<int>(config.rank);
  [[maybe_unused]] const int size = static_cast<int>(config.world_size);
  try {
    if (s.backend == "gloo") {
#if ALEXNET_WITH_GLOO
      auto options = c10d::ProcessGroupGloo::Options::create(config.timeout);
      options->devices.push_back(gloo_device(config.master_addr));
      options->threads = 2;
      return std::make_unique<GroupCollectives<c10d::ProcessGroupGloo>>(
          c10::make_intrusive<c10d::ProcessGroupGloo>(group_store, rank, size, options));
#else
      throw DistributedError("this build has no Gloo (configured with ALEXNET_WITH_GLOO=OFF)");
#endif
    }
#if defined(USE_C10D_NCCL)
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = config.timeout;
    // The barrier runs on the rank's own device; NCCL would guess rank % device count, which
    // is not the device devices_for_rank gives with the two-device column split.
    return std::make_unique<GroupCollectives<c10d::ProcessGroupNCCL>>(
        c10::make_intrusive<c10d::ProcessGroupNCCL>(group_store, rank, size, options),
        std::vector<int64_t>{s.device.has_index() ? s.device.index() : 0});
#else
    return nullptr;
#endif
  } catch (const DistributedError&) {
    throw;
  } catch (const std::exception& e) {
    throw DistributedError(s.who() + ": the " + s.backend + " process group of " +
                           std::to_string(size) + " ranks (rendezvous " + where +
                           ") could not connect: " + e.what());
  }
}

}  // namespace

int64_t Communicator::State::record_progress(const std::string& what) {
  const int64_t number = ++sequence;
  try {
    store->set(key_progress(config.rank), bytes(std::to_string(number)));
  } catch (const std::exception& e) {
    throw DistributedError(who() + ": " + what + " (collective #" + std::to_string(number) +
                           "): the rendezvous store " + rendezvous_name(config) +
                           " is unreachable, so rank 0 has stopped or died (" + e.what() + ")");
  }
  return number;
}

void Communicator::State::wait(const WorkPtr& work, const std::string& what, int64_t number) {
  try {
    work->wait();
  } catch (const std::exception& e) {
    throw failure(what, number, e.what());
  }
}

DistributedError Communicator::State::failure(const std::string& what, int64_t number,
                                              const std::string& cause) {
  std::ostringstream out;
  out << who() << ": " << what << " (collective #" << number << ") failed: ";
  std::vector<std::string> faults;
  const std::string here = host_name();
  for (size_t r = 0; r < peers.size(); ++r) {
    if (static_cast<int64_t>(r) == config.rank || peers[r].host != here) continue;
    if (kill(static_cast<pid_t>(peers[r].pid), 0) != 0 && errno == ESRCH) {
      faults.push_back("rank " + std::to_string(r) + " (pid " + std::to_string(peers[r].pid) +
                       ") is gone");
    }
  }
  try {
    store->setTimeout(std::chrono::seconds(5));
    for (int64_t r = 0; r < config.world_size; ++r) {
      if (r == config.rank) continue;
      int64_t reached = 0;
      if (store->check({key_progress(r)})) reached = std::stoll(text(store->get(key_progress(r))));
      if (reached < number) {
        faults.push_back("rank " + std::to_string(r) + " never started it (it reached #" +
                         std::to_string(reached) + "): it is hung, slow or dead");
      }
    }
  } catch (const std::exception&) {
    if (config.rank != 0) faults.push_back("rank 0 is gone (its rendezvous store does not answer)");
  }
  if (faults.empty()) faults.push_back("every rank started it; a rank died or stalled inside it");
  for (size_t i = 0; i < faults.size(); ++i) out << (i ? "; " : "") << faults[i];
  out << " [" << backend << ": " << cause << "]";
  return DistributedError(out.str());
}

Communicator::Communicator(const DistributedConfig& config, const torch::Device& device)
    : state_(std::make_unique<State>()) {
  auto& s = *state_;
  s.config = config;
  TORCH_CHECK(config.world_size >= 1, "WORLD_SIZE must be positive, got ", config.world_size);
  TORCH_CHECK(config.rank >= 0 && config.rank < config.world_size, "RANK ", config.rank,
              " is outside 0..WORLD_SIZE-1 (WORLD_SIZE ", config.world_size, ")");
  TORCH_CHECK(config.master_port >= 1 && config.master_port <= 65535, "MASTER_PORT ",
              config.master_port, " is outside 1..65535");
  s.backend = resolve_backend(config.backend, device);
  s.device = device;
  const std::string where = rendezvous_name(config);
  s.store = open_store(s, where);
  register_rank(s, where);
  wait_for_all_ranks(s, where);
  s.collectives = connect_group(s, where);
}

Communicator::~Communicator() = default;

int64_t Communicator::rank() const { return state_->config.rank; }
int64_t Communicator::world_size() const { return state_->config.world_size; }
const std::string& Communicator::backend() const { return state_->backend; }

void Communicator::all_reduce_sum(torch::Tensor tensor) {
  TORCH_CHECK(tensor.is_contiguous(), "all_reduce_sum needs a contiguous tensor");
  auto [work, number] =
      state_->start("all-reduce", [&] { return state_->collectives->all_reduce(tensor); });
  state_->wait(work, "all-reduce", number);
}

void Communicator::broadcast(std::vector<torch::Tensor> tensors, int64_t root) {
  TORCH_CHECK(root >= 0 && root < world_size(), "broadcast root ", root, " outside 0..",
              world_size() - 1);
  for (auto& tensor : tensors) {
    TORCH_CHECK(tensor.is_contiguous(), "broadcast needs contiguous tensors");
    std::vector<at::Tensor> one{tensor};
    auto [work, number] =
        state_->start("broadcast", [&] { return state_->collectives->broadcast(one, root); });
    state_->wait(work, "broadcast", number);
  }
}

void Communicator::barrier() {
  auto [work, number] = state_->start("barrier", [&] { return state_->collectives->barrier(); });
  state_->wait(work, "barrier", number);
}

std::vector<double> Communicator::sum(const std::vector<double>& values) {
  auto tensor = torch::tensor(values, torch::kFloat64);
  if (backend() == "nccl") tensor = tensor.to(state_->device);
  all_reduce_sum(tensor);
  tensor = tensor.cpu();
  return {tensor.data_ptr<double>(), tensor.data_ptr<double>() + tensor.numel()};
}

void broadcast_module(Communicator& communicator, torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> tensors;
  for (const auto& p : module.parameters()) tensors.push_back(p);
  for (const auto& b : module.buffers()) tensors.push_back(b);
  // One flat tensor per device and dtype: a few collectives instead of one per parameter.
  std::vector<std::vector<torch::Tensor>> groups;
  for (const auto& t : tensors) {
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) {
      return g[0].device() == t.device() && g[0].scalar_type() == t.scalar_type();
    });
    if (it == groups.end()) {
      groups.push_back({t});
    } else {
      it->push_back(t);
    }
  }
  for (auto& group : groups) {
    std::vector<torch::Tensor> flat_parts;
    for (const auto& t : group) flat_parts.push_back(t.reshape(-1));
    auto flat = torch::cat(flat_parts);
    communicator.broadcast({flat}, 0);
    int64_t offset = 0;
    for (auto& t : group) {
      t.copy_(flat.narrow(0, offset, t.numel()).view_as(t));
      offset += t.numel();
    }
  }
}

}  // namespace alexnet::distributed
