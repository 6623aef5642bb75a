#include "distributed/environment.h"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <utility>

namespace alexnet::distributed {
namespace {

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
  if (config.local_rank >= config.local_world_size) {
    throw std::invalid_argument(
        "environment variable LOCAL_RANK=" + std::to_string(config.local_rank) +
        " must be below LOCAL_WORLD_SIZE=" + std::to_string(config.local_world_size));
  }
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
  if (const char* file = std::getenv("ALEXNET_RENDEZVOUS_FILE"); file != nullptr) {
    config.rendezvous_file = file;
  }
  return config;
}

bool is_loopback_address(const std::string& address) {
  return address == "localhost" || address.rfind("127.", 0) == 0 || address == "::1";
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

}  // namespace alexnet::distributed
