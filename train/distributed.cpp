#include "train/distributed.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <ostream>
#include <sstream>
#include <thread>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
#if ALEXNET_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if defined(USE_C10D_NCCL)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

extern char** environ;

namespace alexnet::train {
namespace {

using Clock = std::chrono::steady_clock;
using WorkPtr = c10::intrusive_ptr<c10d::Work>;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string seconds_text(std::chrono::milliseconds duration) {
  std::ostringstream out;
  out << duration.count() / 1000.0 << " s";
  return out.str();
}

int64_t env_int(const char* name, int64_t fallback, int64_t low, int64_t high) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  size_t used = 0;
  int64_t value = 0;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || text[used] != '\0') {
    throw std::invalid_argument(std::string("environment variable ") + name + "='" + text +
                                "' is not an integer");
  }
  if (value < low || value > high) {
    throw std::invalid_argument(std::string("environment variable ") + name + "=" + text +
                                " is out of range [" + std::to_string(low) + ", " +
                                std::to_string(high) + "]");
  }
  return value;
}

std::vector<uint8_t> bytes(const std::string& text) { return {text.begin(), text.end()}; }
std::string text(const std::vector<uint8_t>& value) { return {value.begin(), value.end()}; }

std::string host_name() {
  char name[256] = {0};
  if (gethostname(name, sizeof(name) - 1) != 0) return "?";
  return name;
}

bool is_loopback(const std::string& address) {
  return address == "localhost" || address.rfind("127.", 0) == 0 || address == "::1";
}

/// The collectives of one backend (Gloo or NCCL), whatever its c10d base class (ProcessGroup
/// in LibTorch 1.13, Backend in 2.x): the concrete classes have the same methods in both.
class Collectives {
 public:
  virtual ~Collectives() = default;
  virtual WorkPtr all_reduce(at::Tensor tensor) = 0;
  virtual WorkPtr broadcast(std::vector<at::Tensor>& tensors, int64_t root) = 0;
  virtual WorkPtr barrier() = 0;
};

template <typename Group>
class GroupCollectives : public Collectives {
 public:
  explicit GroupCollectives(c10::intrusive_ptr<Group> group) : group_(std::move(group)) {}
  WorkPtr all_reduce(at::Tensor tensor) override {
    std::vector<at::Tensor> tensors{std::move(tensor)};
    return group_->allreduce(tensors);
  }
  WorkPtr broadcast(std::vector<at::Tensor>& tensors, int64_t root) override {
    c10d::BroadcastOptions options;
    options.rootRank = root;
    return group_->broadcast(tensors, options);
  }
  WorkPtr barrier() override { return group_->barrier(); }

 private:
  c10::intrusive_ptr<Group> group_;
};

struct PeerInfo {
  int64_t world_size = 0;
  int64_t pid = 0;
  std::string host;
};

PeerInfo parse_peer(const std::string& value) {
  PeerInfo peer;
  std::istringstream in(value);
  in >> peer.world_size >> peer.pid >> peer.host;
  return peer;
}

std::string key_join(int64_t rank) { return "alexnet/join/" + std::to_string(rank); }
std::string key_claim(int64_t rank) { return "alexnet/claim/" + std::to_string(rank); }
std::string key_progress(int64_t rank) { return "alexnet/progress/" + std::to_string(rank); }

}  // namespace

DistributedConfig distributed_config_from_env() {
  DistributedConfig config;
  const bool has_world = std::getenv("WORLD_SIZE") != nullptr;
  config.world_size = env_int("WORLD_SIZE", 1, 1, 1 << 20);
  if (!has_world && std::getenv("RANK") != nullptr) {
    throw std::invalid_argument(std::string("environment variable RANK=") + std::getenv("RANK") +
                                " is set but WORLD_SIZE is not; set both (torchrun's convention)");
  }
  config.rank = env_int("RANK", 0, 0, config.world_size - 1);
  config.local_rank = env_int("LOCAL_RANK", config.rank, 0, 1 << 20);
  config.local_world_size = env_int("LOCAL_WORLD_SIZE", config.world_size, 1, 1 << 20);
  if (const char* addr = std::getenv("MASTER_ADDR"); addr != nullptr && *addr != '\0') {
    config.master_addr = addr;
  } else if (config.enabled()) {
    throw std::invalid_argument("WORLD_SIZE=" + std::to_string(config.world_size) +
                                " but MASTER_ADDR is not set (rank 0's host name or address)");
  }
  if (config.enabled() && std::getenv("MASTER_PORT") == nullptr) {
    throw std::invalid_argument("WORLD_SIZE=" + std::to_string(config.world_size) +
                                " but MASTER_PORT is not set (rank 0's rendezvous port)");
  }
  config.master_port = env_int("MASTER_PORT", config.master_port, 1, 65535);
  return config;
}

bool nccl_available() {
#if defined(USE_C10D_NCCL)
  return true;
#else
  return false;
#endif
}

std::vector<torch::Device> devices_for_rank(std::vector<torch::Device> devices,
                                            int64_t local_rank) {
  const auto cuda_given = std::count_if(devices.begin(), devices.end(),
                                        [](const torch::Device& d) { return d.is_cuda(); });
  for (auto& device : devices) {
    if (!device.is_cuda()) continue;
    const int64_t index = (device.has_index() ? device.index() : 0) + local_rank * cuda_given;
    const int64_t available = torch::cuda::is_available() ? torch::cuda::device_count() : 0;
    if (index >= available) {
      throw std::invalid_argument(
          "local rank " + std::to_string(local_rank) + " would use cuda:" + std::to_string(index) +
          " (its share of " + std::to_string(cuda_given) + " device(s) per process) but " +
          std::to_string(available) + " CUDA device(s) exist; start fewer processes per machine");
    }
    device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  return devices;
}

std::string resolve_backend(const std::string& requested, const torch::Device& device) {
  if (requested == "auto") return device.is_cuda() && nccl_available() ? "nccl" : "gloo";
  if (requested == "gloo") return requested;
  if (requested == "nccl") {
    if (!nccl_available()) {
      throw std::invalid_argument(
          "distributed backend 'nccl' needs LibTorch with CUDA and NCCL; this build has none "
          "(use 'gloo' or 'auto')");
    }
    if (!device.is_cuda()) {
      throw std::invalid_argument("distributed backend 'nccl' needs CUDA devices, not " +
                                  device.str() + " (use 'gloo' or 'auto')");
    }
    return requested;
  }
  throw std::invalid_argument("unknown distributed backend '" + requested +
                              "' (allowed: auto, gloo, nccl)");
}

// ---------------------------------------------------------------------------------------
// Communicator

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
    const int64_t number = ++sequence;
    try {
      store->set(key_progress(config.rank), bytes(std::to_string(number)));
    } catch (const std::exception& e) {
      throw DistributedError(who() + ": " + what + " (collective #" + std::to_string(number) +
                             "): the rendezvous store on rank 0 at " + config.master_addr + ":" +
                             std::to_string(config.master_port) +
                             " is unreachable, so rank 0 has stopped or died (" + e.what() + ")");
    }
    try {
      return {start_collective(), number};
    } catch (const std::exception& e) {
      throw failure(what, number, e.what());
    }
  }

  void wait(const WorkPtr& work, const std::string& what, int64_t number) {
    try {
      work->wait();
    } catch (const std::exception& e) {
      throw failure(what, number, e.what());
    }
  }

  /// Names the ranks that are gone (local processes that no longer exist) or behind (did not
  /// start collective `number`).
  DistributedError failure(const std::string& what, int64_t number, const std::string& cause) {
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
        if (store->check({key_progress(r)}))
          reached = std::stoll(text(store->get(key_progress(r))));
        if (reached < number) {
          faults.push_back("rank " + std::to_string(r) + " never started it (it reached #" +
                           std::to_string(reached) + "): it is hung, slow or dead");
        }
      }
    } catch (const std::exception&) {
      if (config.rank != 0)
        faults.push_back("rank 0 is gone (its rendezvous store does not answer)");
    }
    if (faults.empty()) faults.push_back("every rank started it; a rank died or stalled inside it");
    for (size_t i = 0; i < faults.size(); ++i) out << (i ? "; " : "") << faults[i];
    out << " [" << backend << ": " << cause << "]";
    return DistributedError(out.str());
  }
};

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
  const std::string where = config.master_addr + ":" + std::to_string(config.master_port);

  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<std::uint16_t>(config.master_port);
  store_options.isServer = config.rank == 0;
  store_options.numWorkers = c10::nullopt;
  store_options.waitWorkers = false;
  store_options.timeout = config.timeout;
  try {
    s.store = c10::make_intrusive<c10d::TCPStore>(config.master_addr, store_options);
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

  // Rendezvous: every rank registers; all must agree on WORLD_SIZE and hold distinct ranks.
  const auto pid = static_cast<int64_t>(getpid());
  if (s.store->add(key_claim(config.rank), 1) > 1) {
    throw DistributedError(s.who() + ": another process already joined " + where + " as rank " +
                           std::to_string(config.rank) + " (two processes with the same RANK)");
  }
  s.store->set(key_join(config.rank), bytes(std::to_string(config.world_size) + " " +
                                            std::to_string(pid) + " " + host_name()));
  s.peers.assign(static_cast<size_t>(config.world_size), PeerInfo{});
  std::vector<bool> joined(static_cast<size_t>(config.world_size), false);
  const auto deadline = Clock::now() + config.timeout;
  while (true) {
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
    // A rank that believes the world is larger than it is shows up as an extra claim.
    if (s.store->check({key_join(config.world_size)})) {
      const auto extra = parse_peer(text(s.store->get(key_join(config.world_size))));
      throw DistributedError(s.who() + ": WORLD_SIZE mismatch: this process has WORLD_SIZE=" +
                             std::to_string(config.world_size) + " but a process joined as rank " +
                             std::to_string(config.world_size) +
                             " with WORLD_SIZE=" + std::to_string(extra.world_size));
    }
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

  auto group_store = c10::make_intrusive<c10d::PrefixStore>(s.backend, s.store);
  [[maybe_unused]] const int rank = static_cast<int>(config.rank);
  [[maybe_unused]] const int size = static_cast<int>(config.world_size);
  try {
    if (s.backend == "gloo") {
#if ALEXNET_WITH_GLOO
      auto options = c10d::ProcessGroupGloo::Options::create(config.timeout);
      if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname) {
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      } else if (is_loopback(config.master_addr)) {
        options->devices.push_back(
            c10d::ProcessGroupGloo::createDeviceForHostname(config.master_addr));
      } else {
        options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      options->threads = 2;
      s.collectives = std::make_unique<GroupCollectives<c10d::ProcessGroupGloo>>(
          c10::make_intrusive<c10d::ProcessGroupGloo>(group_store, rank, size, options));
#else
      throw DistributedError("this build has no Gloo (configured with ALEXNET_WITH_GLOO=OFF)");
#endif
    } else {
#if defined(USE_C10D_NCCL)
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = config.timeout;
      s.collectives = std::make_unique<GroupCollectives<c10d::ProcessGroupNCCL>>(
          c10::make_intrusive<c10d::ProcessGroupNCCL>(group_store, rank, size, options));
#endif
    }
  } catch (const DistributedError&) {
    throw;
  } catch (const std::exception& e) {
    throw DistributedError(s.who() + ": the " + s.backend + " process group of " +
                           std::to_string(size) + " ranks (rendezvous " + where +
                           ") could not connect: " + e.what());
  }
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

std::vector<torch::Tensor> parameters_in_backward_order(torch::nn::Module& module) {
  auto parameters = module.parameters();
  std::reverse(parameters.begin(), parameters.end());
  return parameters;
}

// ---------------------------------------------------------------------------------------
// GradientReducer

struct GradientReducer::Impl {
  struct Bucket {
    torch::Tensor flat;
    std::vector<size_t> members;  // parameter indices
    int64_t pending = 0;          // members whose gradient has not arrived this step
    WorkPtr work;
    int64_t number = 0;
  };

  Communicator::State* comm = nullptr;
  GradientReducerOptions options;
  std::vector<torch::Tensor> parameters;
  std::vector<size_t> bucket_of;
  std::vector<int64_t> offset_of;
  std::vector<bool> arrived;
  std::vector<Bucket> buckets;
  size_t next_launch = 0;
  std::vector<unsigned> hooks;
  std::mutex mutex;
  double wait_s = 0.0;
  std::exception_ptr hook_error;

  torch::Tensor slot(size_t i) {
    const auto& p = parameters[i];
    return buckets[bucket_of[i]].flat.narrow(0, offset_of[i], p.numel()).view(p.sizes());
  }

  void reset_step() {
    std::fill(arrived.begin(), arrived.end(), false);
    for (auto& b : buckets) {
      b.pending = static_cast<int64_t>(b.members.size());
      b.work.reset();
    }
    next_launch = 0;
  }

  // Called with the mutex held: starts the ready buckets, in bucket order on every rank.
  void launch_ready() {
    while (next_launch < buckets.size() && buckets[next_launch].pending == 0) {
      auto& bucket = buckets[next_launch];
      const std::string what = "gradient all-reduce of bucket " + std::to_string(next_launch);
      auto started = comm->start(what, [&] { return comm->collectives->all_reduce(bucket.flat); });
      bucket.work = started.first;
      bucket.number = started.second;
      ++next_launch;
    }
  }

  void arrive(size_t i, const torch::Tensor& gradient) {
    std::lock_guard<std::mutex> lock(mutex);
    if (arrived[i]) return;
    arrived[i] = true;
    slot(i).copy_(gradient);
    --buckets[bucket_of[i]].pending;
    launch_ready();
  }
};

GradientReducer::GradientReducer(Communicator& communicator, std::vector<torch::Tensor> parameters,
                                 GradientReducerOptions options)
    : impl_(std::make_unique<Impl>()) {
  auto& m = *impl_;
  m.comm = communicator.state_.get();
  m.options = options;
  TORCH_CHECK(options.bucket_bytes > 0, "bucket_bytes must be positive, got ",
              options.bucket_bytes);
  for (auto& p : parameters) {
    if (p.requires_grad()) m.parameters.push_back(p);
  }
  TORCH_CHECK(!m.parameters.empty(), "GradientReducer: no parameter requires a gradient");
  // One open bucket per (device, dtype); a bucket is numbered when it opens, so buckets
  // start in the order their first gradient is expected.
  struct Open {
    torch::Device device;
    c10::ScalarType dtype;
    size_t bucket;
    int64_t bytes;
  };
  std::vector<Open> open;
  std::vector<int64_t> numel;
  m.bucket_of.resize(m.parameters.size());
  m.offset_of.resize(m.parameters.size());
  for (size_t i = 0; i < m.parameters.size(); ++i) {
    const auto& p = m.parameters[i];
    const int64_t size = p.numel() * static_cast<int64_t>(p.element_size());
    auto it = std::find_if(open.begin(), open.end(), [&](const Open& o) {
      return o.device == p.device() && o.dtype == p.scalar_type();
    });
    if (it != open.end() && it->bytes > 0 && it->bytes + size > options.bucket_bytes) {
      open.erase(it);
      it = open.end();
    }
    if (it == open.end()) {
      m.buckets.emplace_back();
      numel.push_back(0);
      open.push_back({p.device(), p.scalar_type(), m.buckets.size() - 1, 0});
      it = open.end() - 1;
    }
    m.bucket_of[i] = it->bucket;
    m.offset_of[i] = numel[it->bucket];
    numel[it->bucket] += p.numel();
    it->bytes += size;
    m.buckets[it->bucket].members.push_back(i);
  }
  for (size_t b = 0; b < m.buckets.size(); ++b) {
    const auto& first = m.parameters[m.buckets[b].members.front()];
    m.buckets[b].flat = torch::zeros({numel[b]}, first.options().requires_grad(false));
  }
  m.arrived.assign(m.parameters.size(), false);
  m.reset_step();
  if (options.overlap) {
    Impl* impl = impl_.get();
    for (size_t i = 0; i < m.parameters.size(); ++i) {
      m.hooks.push_back(m.parameters[i].register_hook([impl, i](torch::Tensor gradient) {
        try {
          impl->arrive(i, gradient);
        } catch (...) {
          std::lock_guard<std::mutex> lock(impl->mutex);
          if (!impl->hook_error) impl->hook_error = std::current_exception();
        }
      }));
    }
  }
}

GradientReducer::~GradientReducer() {
  auto& m = *impl_;
  for (size_t i = 0; i < m.hooks.size(); ++i) m.parameters[i].remove_hook(m.hooks[i]);
  // Collectives still in flight write into the buckets: let them finish (or fail).
  for (auto& bucket : m.buckets) {
    if (!bucket.work) continue;
    try {
      bucket.work->wait();
    } catch (const std::exception&) {
    }
  }
}

void GradientReducer::synchronize() {
  auto& m = *impl_;
  torch::NoGradGuard no_grad;
  {
    std::lock_guard<std::mutex> lock(m.mutex);
    if (m.hook_error) {
      auto error = m.hook_error;
      m.hook_error = nullptr;
      std::rethrow_exception(error);
    }
    for (size_t i = 0; i < m.parameters.size(); ++i) {
      if (m.arrived[i]) continue;
      const auto& grad = m.parameters[i].grad();
      if (grad.defined()) {
        m.slot(i).copy_(grad);
      } else {
        m.slot(i).zero_();
      }
      m.arrived[i] = true;
      --m.buckets[m.bucket_of[i]].pending;
    }
    m.launch_ready();
  }
  const auto start = Clock::now();
  const double world = static_cast<double>(m.comm->config.world_size);
  for (size_t b = 0; b < m.buckets.size(); ++b) {
    auto& bucket = m.buckets[b];
    m.comm->wait(bucket.work, "gradient all-reduce of bucket " + std::to_string(b), bucket.number);
    bucket.work.reset();
    bucket.flat.div_(world);
  }
  m.wait_s += seconds_since(start);
  for (size_t i = 0; i < m.parameters.size(); ++i) {
    auto& p = m.parameters[i];
    if (p.grad().defined()) {
      p.mutable_grad().copy_(m.slot(i));
    } else {
      p.mutable_grad() = m.slot(i).clone();
    }
  }
  m.reset_step();
}

int64_t GradientReducer::bucket_count() const {
  return static_cast<int64_t>(impl_->buckets.size());
}

std::vector<int64_t> GradientReducer::bucket_bytes() const {
  std::vector<int64_t> sizes;
  for (const auto& b : impl_->buckets) {
    sizes.push_back(b.flat.numel() * static_cast<int64_t>(b.flat.element_size()));
  }
  return sizes;
}

double GradientReducer::wait_seconds() const { return impl_->wait_s; }

// ---------------------------------------------------------------------------------------
// Sharding and local launching

data::DatasetPtr shard_for_rank(data::DatasetPtr dataset, int64_t rank, int64_t world_size) {
  TORCH_CHECK(dataset != nullptr, "shard_for_rank: null data set");
  TORCH_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, "shard_for_rank: rank ", rank,
              " of world size ", world_size);
  std::vector<size_t> indices;
  for (size_t i = static_cast<size_t>(rank); i < dataset->size();
       i += static_cast<size_t>(world_size)) {
    indices.push_back(i);
  }
  return data::subset(std::move(dataset), std::move(indices));
}

int64_t find_free_port(const std::string& address) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(address.c_str(), "0", &hints, &found) != 0 || found == nullptr) {
    throw std::runtime_error("find_free_port: cannot resolve address '" + address + "'");
  }
  const int fd = socket(found->ai_family, found->ai_socktype, found->ai_protocol);
  if (fd < 0) {
    freeaddrinfo(found);
    throw std::runtime_error(std::string("find_free_port: socket: ") + std::strerror(errno));
  }
  int64_t port = -1;
  if (bind(fd, found->ai_addr, found->ai_addrlen) == 0) {
    sockaddr_storage bound{};
    socklen_t length = sizeof(bound);
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &length) == 0) {
      port = bound.ss_family == AF_INET ? ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port)
                                        : ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
    }
  }
  const int error = errno;
  close(fd);
  freeaddrinfo(found);
  if (port <= 0) {
    throw std::runtime_error("find_free_port: cannot bind to " + address + ": " +
                             std::strerror(error));
  }
  return port;
}

namespace {

std::atomic<int> g_forward_signal{0};
std::atomic<int> g_signal_count{0};
extern "C" void remember_signal(int signal_number) {
  g_forward_signal = signal_number;
  ++g_signal_count;
}

std::string status_text(int status, int* exit_code) {
  if (WIFEXITED(status)) {
    *exit_code = WEXITSTATUS(status);
    return "exited with code " + std::to_string(*exit_code);
  }
  if (WIFSIGNALED(status)) {
    const int signal_number = WTERMSIG(status);
    *exit_code = 128 + signal_number;
    return "was killed by signal " + std::to_string(signal_number) + " (" +
           strsignal(signal_number) + ")";
  }
  *exit_code = 1;
  return "stopped with status " + std::to_string(status);
}

}  // namespace

LaunchResult launch_local_processes(const std::string& executable,
                                    const std::vector<std::string>& args,
                                    const LaunchOptions& options) {
  TORCH_CHECK(options.nproc >= 1, "--nproc must be at least 1, got ", options.nproc);
  const int64_t port =
      options.master_port > 0 ? options.master_port : find_free_port(options.master_addr);

  // Everything the children need is built before fork: between fork and exec only
  // async-signal-safe calls are allowed.
  static const std::vector<std::string> kReplaced{
      "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"};
  std::vector<std::string> base_env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string entry(*e);
    const std::string name = entry.substr(0, entry.find('='));
    const bool replaced = std::find(kReplaced.begin(), kReplaced.end(), name) != kReplaced.end() ||
                          std::any_of(options.env.begin(), options.env.end(),
                                      [&](const auto& kv) { return kv.first == name; });
    if (!replaced) base_env.push_back(entry);
  }
  for (const auto& [name, value] : options.env) base_env.push_back(name + "=" + value);

  std::vector<std::string> argv_text{executable};
  argv_text.insert(argv_text.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_text) argv.push_back(a.data());
  argv.push_back(nullptr);

  struct Child {
    pid_t pid = -1;
    bool running = false;
  };
  std::vector<Child> children(static_cast<size_t>(options.nproc));
  struct sigaction forward {
  }, old_int{}, old_term{};
  forward.sa_handler = remember_signal;
  sigemptyset(&forward.sa_mask);
  g_forward_signal = 0;
  g_signal_count = 0;
  sigaction(SIGINT, &forward, &old_int);
  sigaction(SIGTERM, &forward, &old_term);

  auto stop_all = [&](int signal_number) {
    for (auto& c : children) {
      if (c.running) kill(c.pid, signal_number);
    }
  };

  for (int64_t rank = 0; rank < options.nproc; ++rank) {
    std::vector<std::string> env_text = base_env;
    env_text.push_back("RANK=" + std::to_string(rank));
    env_text.push_back("LOCAL_RANK=" + std::to_string(rank));
    env_text.push_back("WORLD_SIZE=" + std::to_string(options.nproc));
    env_text.push_back("LOCAL_WORLD_SIZE=" + std::to_string(options.nproc));
    env_text.push_back("MASTER_ADDR=" + options.master_addr);
    env_text.push_back("MASTER_PORT=" + std::to_string(port));
    std::vector<char*> envp;
    for (auto& e : env_text) envp.push_back(e.data());
    envp.push_back(nullptr);
    const pid_t launcher = getpid();
    const pid_t pid = fork();
    if (pid == 0) {
      // Its own process group: a Ctrl-C reaches the ranks once, through the launcher, so they
      // all stop at the same step; and they go when the launcher goes.
      setpgid(0, 0);
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != launcher) _exit(1);
      execve(executable.c_str(), argv.data(), envp.data());
      const char message[] = "launch_local_processes: execve failed\n";
      [[maybe_unused]] auto written = write(2, message, sizeof(message) - 1);
      _exit(127);
    }
    if (pid < 0) {
      const int error = errno;
      stop_all(SIGKILL);
      for (auto& c : children) {
        if (c.running) waitpid(c.pid, nullptr, 0);
      }
      sigaction(SIGINT, &old_int, nullptr);
      sigaction(SIGTERM, &old_term, nullptr);
      throw std::runtime_error("cannot start rank " + std::to_string(rank) + " of " + executable +
                               ": " + std::strerror(error));
    }
    children[static_cast<size_t>(rank)] = {pid, true};
  }

  LaunchResult result;
  // SIGKILL at kill_at when kill_pending (not a std::optional: GCC 12 then warns that its
  // time point may be used uninitialised).
  bool kill_pending = false;
  Clock::time_point kill_at;
  int64_t running = options.nproc;
  bool forwarded = false;
  while (running > 0) {
    // The first SIGINT/SIGTERM is passed on (the ranks checkpoint and stop together); a
    // second one kills them.
    if (const int signal_number = g_forward_signal.load(); signal_number != 0 && !forwarded) {
      stop_all(signal_number);
      forwarded = true;
      kill_pending = false;
    }
    if (g_signal_count.load() >= 2) stop_all(SIGKILL);
    bool reaped = false;
    for (size_t rank = 0; rank < children.size(); ++rank) {
      auto& child = children[rank];
      if (!child.running) continue;
      int status = 0;
      const pid_t done = waitpid(child.pid, &status, WNOHANG);
      if (done != child.pid) continue;
      child.running = false;
      --running;
      reaped = true;
      int exit_code = 0;
      const std::string how = status_text(status, &exit_code);
      if (exit_code != 0 && result.failed_rank < 0 && !forwarded) {
        result.failed_rank = static_cast<int64_t>(rank);
        result.exit_code = exit_code;
        result.message =
            "rank " + std::to_string(rank) + " (pid " + std::to_string(child.pid) + ") " + how;
        if (options.log != nullptr) {
          *options.log << "launcher: " << result.message << "; stopping the other ranks"
                       << std::endl;
        }
        stop_all(SIGTERM);
        kill_at = Clock::now() + options.kill_grace;
        kill_pending = true;
      }
    }
    if (kill_pending && Clock::now() > kill_at) {
      stop_all(SIGKILL);
      kill_pending = false;
    }
    if (!reaped && running > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  if (result.failed_rank < 0 && forwarded) {
    const int signal_number = g_forward_signal.load();
    result.exit_code = 128 + signal_number;
    result.message = "stopped by signal " + std::to_string(signal_number) + " (" +
                     strsignal(signal_number) + ")";
  }
  return result;
}

}  // namespace alexnet::train
