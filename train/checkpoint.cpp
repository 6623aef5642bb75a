#include "train/checkpoint.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>

namespace alexnet::train {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kFormat = "alexnet-cpp checkpoint";
constexpr int64_t kVersion = 1;

// Archive keys may not contain dots, so tensors are stored as "<group>_<i>" and their names
// in the metadata.
void write_dict(torch::serialize::OutputArchive& archive, const std::string& group,
                const torch::OrderedDict<std::string, torch::Tensor>& dict, json& names) {
  names[group] = json::array();
  int64_t i = 0;
  for (const auto& item : dict) {
    names[group].push_back(item.key());
    archive.write(group + "_" + std::to_string(i++), item.value().detach().cpu().contiguous(),
                  /*is_buffer=*/true);
  }
}

torch::OrderedDict<std::string, torch::Tensor> read_dict(torch::serialize::InputArchive& archive,
                                                         const std::string& group,
                                                         const json& names,
                                                         const std::string& path) {
  torch::OrderedDict<std::string, torch::Tensor> dict;
  if (!names.contains(group)) {
    throw std::runtime_error("checkpoint '" + path + "' has no '" + group + "' entries");
  }
  int64_t i = 0;
  for (const auto& name : names.at(group)) {
    torch::Tensor tensor;
    const std::string key = group + "_" + std::to_string(i++);
    if (!archive.try_read(key, tensor, /*is_buffer=*/true)) {
      throw std::runtime_error("checkpoint '" + path + "' lacks tensor '" + key + "' (" +
                               name.get<std::string>() + ")");
    }
    dict.insert(name.get<std::string>(), tensor);
  }
  return dict;
}

}  // namespace

void save_checkpoint(const Checkpoint& checkpoint, const std::string& path) {
  torch::serialize::OutputArchive archive;
  json meta{{"format", kFormat},
            {"version", kVersion},
            {"config", checkpoint.config},
            {"schedule", checkpoint.schedule},
            {"epoch", checkpoint.epoch},
            {"batch_in_epoch", checkpoint.batch_in_epoch},
            {"step", checkpoint.step},
            {"progress", checkpoint.progress},
            {"class_names", checkpoint.class_names},
            {"mean", checkpoint.mean},
            {"std", checkpoint.std},
            {"image_size", checkpoint.image_size},
            {"resize_size", checkpoint.resize_size},
            {"cuda_rng_states", checkpoint.cuda_rng_states.size()}};
  json names;
  write_dict(archive, "model", checkpoint.model, names);
  write_dict(archive, "optimizer", checkpoint.optimizer, names);
  meta["tensors"] = names;
  if (checkpoint.cpu_rng_state.defined())
    archive.write("cpu_rng_state", checkpoint.cpu_rng_state, /*is_buffer=*/true);
  for (size_t i = 0; i < checkpoint.cuda_rng_states.size(); ++i) {
    archive.write("cuda_rng_state_" + std::to_string(i), checkpoint.cuda_rng_states[i],
                  /*is_buffer=*/true);
  }
  archive.write("meta", c10::IValue(meta.dump()));
  std::ostringstream out;
  archive.save_to(out);
  write_file_atomically(path, out.str());
}

Checkpoint load_checkpoint(const std::string& path) {
  if (!fs::exists(path)) throw std::runtime_error("checkpoint '" + path + "' does not exist");
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path);
  } catch (const c10::Error& e) {
    throw std::runtime_error(
        "checkpoint '" + path +
        "' cannot be read (truncated or not a checkpoint): " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw std::runtime_error("checkpoint '" + path +
                             "' cannot be read (truncated or not a checkpoint): " + e.what());
  }
  c10::IValue meta_value;
  if (!archive.try_read("meta", meta_value) || !meta_value.isString()) {
    throw std::runtime_error("checkpoint '" + path +
                             "' has no metadata (not an alexnet-cpp "
                             "checkpoint?)");
  }
  json meta;
  try {
    meta = json::parse(meta_value.toStringRef());
  } catch (const json::exception& e) {
    throw std::runtime_error("checkpoint '" + path + "' has corrupt metadata: " + e.what());
  }
  if (meta.value("format", "") != kFormat) {
    throw std::runtime_error("checkpoint '" + path + "' is not an alexnet-cpp checkpoint");
  }
  Checkpoint checkpoint;
  try {
    checkpoint.config = meta.at("config");
    checkpoint.schedule = meta.at("schedule");
    checkpoint.epoch = meta.at("epoch").get<int64_t>();
    checkpoint.batch_in_epoch = meta.at("batch_in_epoch").get<int64_t>();
    checkpoint.step = meta.at("step").get<int64_t>();
    checkpoint.progress = meta.at("progress");
    checkpoint.class_names = meta.at("class_names").get<std::vector<std::string>>();
    checkpoint.mean = meta.at("mean").get<std::vector<double>>();
    checkpoint.std = meta.at("std").get<std::vector<double>>();
    checkpoint.image_size = meta.at("image_size").get<int64_t>();
    checkpoint.resize_size = meta.at("resize_size").get<int64_t>();
    checkpoint.model = read_dict(archive, "model", meta.at("tensors"), path);
    checkpoint.optimizer = read_dict(archive, "optimizer", meta.at("tensors"), path);
    archive.try_read("cpu_rng_state", checkpoint.cpu_rng_state, /*is_buffer=*/true);
    const auto cuda_states = meta.at("cuda_rng_states").get<size_t>();
    for (size_t i = 0; i < cuda_states; ++i) {
      torch::Tensor state;
      if (!archive.try_read("cuda_rng_state_" + std::to_string(i), state, /*is_buffer=*/true)) {
        throw std::runtime_error("checkpoint '" + path + "' lacks CUDA generator state " +
                                 std::to_string(i));
      }
      checkpoint.cuda_rng_states.push_back(state);
    }
  } catch (const json::exception& e) {
    throw std::runtime_error("checkpoint '" + path + "' has incomplete metadata: " + e.what());
  }
  return checkpoint;
}

void capture_rng_states(Checkpoint& checkpoint, const std::vector<torch::Device>& devices) {
  checkpoint.cpu_rng_state = at::detail::getDefaultCPUGenerator().get_state();
  checkpoint.cuda_rng_states.clear();
  for (const auto& device : devices) {
    if (device.is_cuda()) {
      checkpoint.cuda_rng_states.push_back(
          at::globalContext().defaultGenerator(device).get_state());
    }
  }
}

void restore_rng_states(const Checkpoint& checkpoint, const std::vector<torch::Device>& devices) {
  if (checkpoint.cpu_rng_state.defined()) {
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(checkpoint.cpu_rng_state);
  }
  size_t next = 0;
  for (const auto& device : devices) {
    if (device.is_cuda() && next < checkpoint.cuda_rng_states.size()) {
      at::Generator generator = at::globalContext().defaultGenerator(device);
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_state(checkpoint.cuda_rng_states[next++]);
    }
  }
}


}  // namespace alexnet::train
