#include "train/checkpoint.h"

#include "train/config.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickler.h>
#include <torch/serialize.h>

namespace alexnet::train {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using TensorDict = torch::OrderedDict<std::string, torch::Tensor>;

constexpr const char* kFormat = "alexnet-cpp checkpoint";
constexpr int64_t kVersion = 2;

// What torch.load(weights_only=True) reads decides the layout: lists and dicts have element
// type Any (the pickler writes typed lists of ints, floats or tensors through torch.jit helper
// functions, which it refuses), and floats are tensors (PyTorch 1.13's reader has no opcode for
// a pickled float).
template <typename Container>
c10::IValue generic_list(const Container& items) {
  c10::impl::GenericList list(c10::AnyType::get());
  for (const auto& item : items) list.push_back(c10::IValue(item));
  return list;
}

c10::IValue tensor_dict(const TensorDict& tensors) {
  c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
  for (const auto& item : tensors) {
    dict.insert(item.key(), item.value().detach().cpu().contiguous().clone());
  }
  return dict;
}

c10::IValue to_ivalue(const Checkpoint& c) {
  c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
  dict.insert("format", kFormat);
  dict.insert("version", kVersion);
  dict.insert("config", c.config.dump());
  dict.insert("model", tensor_dict(c.model));
  dict.insert("optimizer", tensor_dict(c.optimizer));
  dict.insert("schedule", c.schedule.dump());
  dict.insert("epoch", c.epoch);
  dict.insert("batch_in_epoch", c.batch_in_epoch);
  dict.insert("step", c.step);
  dict.insert("cpu_rng_state",
              c.cpu_rng_state.defined() ? c10::IValue(c.cpu_rng_state.clone()) : c10::IValue());
  dict.insert("cuda_rng_states", generic_list(c.cuda_rng_states));
  dict.insert("resolved_devices", c.resolved_devices);
  dict.insert("progress", c.progress.dump());
  dict.insert("class_names", generic_list(c.class_names));
  dict.insert("mean", torch::tensor(c.mean, torch::kFloat64));
  dict.insert("std", torch::tensor(c.std, torch::kFloat64));
  dict.insert("image_size", c.image_size);
  dict.insert("resize_size", c.resize_size);
  return dict;
}

// What torch::pickle_save writes (a zip of data.pkl and the tensors' bytes, as torch.save
// does), without the torch.jit type tags that pickle_save adds to every dict and list.
std::string pickle_plain(const c10::IValue& value) {
  std::vector<char> pickle;
  torch::jit::Pickler pickler(
      [&](const char* data, size_t size) { pickle.insert(pickle.end(), data, data + size); },
      /*tensor_table=*/nullptr, /*type_renamer=*/nullptr, /*memoized_class_types=*/nullptr,
      /*get_tensor_id=*/nullptr, /*tag_aggregates=*/false);
  pickler.protocol();
  pickler.pushIValue(value);
  pickler.stop();
  std::string bytes;
  caffe2::serialize::PyTorchStreamWriter writer([&](const void* data, size_t size) {
    bytes.append(static_cast<const char*>(data), size);
    return size;
  });
  torch::jit::writeArchiveAndTensors("data", pickle.data(), pickle.size(), pickler.tensorData(),
                                     writer);
  writer.writeEndOfFile();
  return bytes;
}

// Reads the entries of a checkpoint's dict, naming the file and the key in every error.
class EntryReader {
 public:
  EntryReader(c10::impl::GenericDict dict, std::string path)
      : dict_(std::move(dict)), path_(std::move(path)) {}

  c10::IValue get(const std::string& key) const {
    const auto found = dict_.find(key);
    if (found == dict_.end()) fail(key, "is missing");
    return found->value();
  }

  int64_t integer(const std::string& key) const {
    const auto value = get(key);
    if (!value.isInt()) fail(key, "is not an int");
    return value.toInt();
  }

  std::string text(const std::string& key) const {
    const auto value = get(key);
    if (!value.isString()) fail(key, "is not a string");
    return value.toStringRef();
  }

  json json_text(const std::string& key) const {
    try {
      return json::parse(text(key));
    } catch (const json::exception& e) {
      fail(key, std::string("is not valid JSON: ") + e.what());
    }
  }

  std::vector<c10::IValue> list(const std::string& key) const {
    const auto value = get(key);
    if (!value.isList()) fail(key, "is not a list");
    const auto items = value.toListRef();
    return std::vector<c10::IValue>(items.begin(), items.end());
  }

  std::vector<std::string> strings(const std::string& key) const {
    std::vector<std::string> out;
    for (const auto& item : list(key)) {
      if (!item.isString()) fail(key, "is not a list of strings");
      out.push_back(item.toStringRef());
    }
    return out;
  }

  std::vector<double> numbers(const std::string& key) const {
    const auto value = get(key);
    if (!value.isTensor() || value.toTensor().dim() != 1 || !value.toTensor().is_floating_point()) {
      fail(key, "is not a 1-D floating-point tensor");
    }
    const auto values = value.toTensor().to(torch::kFloat64).contiguous();
    return std::vector<double>(values.data_ptr<double>(),
                               values.data_ptr<double>() + values.numel());
  }

  std::vector<torch::Tensor> tensors(const std::string& key) const {
    std::vector<torch::Tensor> out;
    for (const auto& item : list(key)) {
      if (!item.isTensor()) fail(key, "is not a list of tensors");
      out.push_back(item.toTensor());
    }
    return out;
  }

  // A tensor, or an undefined one for None.
  torch::Tensor optional_tensor(const std::string& key) const {
    const auto value = get(key);
    if (value.isNone()) return {};
    if (!value.isTensor()) fail(key, "is neither a tensor nor None");
    return value.toTensor();
  }

  TensorDict tensor_dict(const std::string& key) const {
    const auto value = get(key);
    if (!value.isGenericDict()) fail(key, "is not a dict");
    TensorDict out;
    for (const auto& item : value.toGenericDict()) {
      if (!item.key().isString() || !item.value().isTensor()) {
        fail(key, "is not a dict of tensors by name");
      }
      out.insert(item.key().toStringRef(), item.value().toTensor());
    }
    return out;
  }

  [[noreturn]] void fail(const std::string& key, const std::string& problem) const {
    throw std::runtime_error("checkpoint '" + path_ + "': entry '" + key + "' " + problem);
  }

 private:
  c10::impl::GenericDict dict_;
  std::string path_;
};

// Refuses what is not a zip archive, and the TorchScript archives of older versions (which a
// plain-data reader must not interpret).
void check_archive(const std::string& path) {
  std::string error;
  const ArchiveKind kind = archive_kind(path, &error);
  if (kind == ArchiveKind::kNotArchive) {
    throw std::runtime_error("checkpoint '" + path +
                             "' cannot be read (truncated or not a checkpoint): " + error);
  }
  if (kind == ArchiveKind::kTorchScript) {
    throw std::runtime_error(
        "checkpoint '" + path +
        "' is a TorchScript archive: a checkpoint written by an older version of alexnet-cpp, "
        "or an exported model (give that as --model). It is not read as a checkpoint, since "
        "loading it would run its code; train again, or export the old checkpoint with the "
        "version that wrote it");
  }
}

c10::IValue read_pickle(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open checkpoint '" + path + "'");
  const std::vector<char> bytes{std::istreambuf_iterator<char>(in),
                                std::istreambuf_iterator<char>()};
  try {
    return torch::pickle_load(bytes);
  } catch (const c10::Error& e) {
    throw std::runtime_error(
        "checkpoint '" + path +
        "' cannot be read (truncated or not a checkpoint): " + e.what_without_backtrace());
  }
}

Checkpoint from_entries(const EntryReader& entries) {
  Checkpoint c;
  c.config = entries.json_text("config");
  if (!c.config.is_object()) entries.fail("config", "is not a JSON object");
  if (!c.config.contains("model") || !c.config.at("model").is_object()) {
    entries.fail("config", "has no \"model\" object (the network's options)");
  }
  c.model = entries.tensor_dict("model");
  // The trainer never saves a diverged model; such weights come from elsewhere.
  for (const auto& item : c.model) {
    const auto& value = item.value();
    if (value.is_floating_point() && !torch::isfinite(value).all().item<bool>()) {
      entries.fail("model", "holds NaN or infinite values in '" + item.key() + "'");
    }
  }
  c.optimizer = entries.tensor_dict("optimizer");
  c.schedule = entries.json_text("schedule");
  c.epoch = entries.integer("epoch");
  c.batch_in_epoch = entries.integer("batch_in_epoch");
  c.step = entries.integer("step");
  c.cpu_rng_state = entries.optional_tensor("cpu_rng_state");
  c.cuda_rng_states = entries.tensors("cuda_rng_states");
  c.resolved_devices = entries.text("resolved_devices");
  c.progress = entries.json_text("progress");
  c.class_names = entries.strings("class_names");
  c.mean = entries.numbers("mean");
  c.std = entries.numbers("std");
  c.image_size = entries.integer("image_size");
  c.resize_size = entries.integer("resize_size");
  return c;
}

}  // namespace

void save_checkpoint(const Checkpoint& checkpoint, const std::string& path) {
  runtime::write_file_atomically(path, pickle_plain(to_ivalue(checkpoint)));
}

ArchiveKind archive_kind(const std::string& path, std::string* error) {
  std::vector<std::string> records;
  try {
    records = caffe2::serialize::PyTorchStreamReader(path).getAllRecords();
  } catch (const c10::Error& e) {
    if (error != nullptr) *error = e.what_without_backtrace();
    return ArchiveKind::kNotArchive;
  }
  bool data = false;
  for (const auto& record : records) {
    if (record == "constants.pkl" || record.rfind("code/", 0) == 0)
      return ArchiveKind::kTorchScript;
    data = data || record == "data.pkl";
  }
  return data ? ArchiveKind::kPlainData : ArchiveKind::kOther;
}

void check_tensor_records(const std::string& path, const std::string& what,
                          const std::vector<torch::Tensor>& tensors) {
  std::multiset<size_t> records;
  caffe2::serialize::PyTorchStreamReader reader(path);
  for (const auto& name : reader.getAllRecords()) {
    if (name.rfind("data/", 0) == 0) records.insert(std::get<1>(reader.getRecord(name)));
  }
  std::map<const void*, size_t> storages;
  for (const auto& tensor : tensors) {
    if (tensor.defined() && tensor.storage()) {
      storages[tensor.storage().data()] = tensor.storage().nbytes();
    }
  }
  std::vector<size_t> needed;
  for (const auto& [data, bytes] : storages) needed.push_back(bytes);
  std::sort(needed.rbegin(), needed.rend());
  // The largest storages first, each taking the smallest record that holds it.
  for (const size_t bytes : needed) {
    const auto record = records.lower_bound(bytes);
    if (record == records.end()) {
      throw std::runtime_error(what + " '" + path + "' is damaged: it holds a tensor of " +
                               std::to_string(bytes) +
                               " bytes, but no record of the archive left is that long (a "
                               "record cut short or altered)");
    }
    records.erase(record);
  }
}

// Every tensor in `value`, however deeply nested in lists, tuples and dicts.
void collect_tensors(const c10::IValue& value, std::vector<torch::Tensor>& out) {
  if (value.isTensor()) {
    out.push_back(value.toTensor());
  } else if (value.isList()) {
    for (const auto& item : value.toListRef()) collect_tensors(item, out);
  } else if (value.isTuple()) {
    for (const auto& item : value.toTupleRef().elements()) collect_tensors(item, out);
  } else if (value.isGenericDict()) {
    for (const auto& item : value.toGenericDict()) {
      collect_tensors(item.key(), out);
      collect_tensors(item.value(), out);
    }
  }
}

Checkpoint load_checkpoint(const std::string& path) {
  if (!fs::exists(path)) throw std::runtime_error("checkpoint '" + path + "' does not exist");
  if (fs::is_directory(path)) {
    throw std::runtime_error("checkpoint '" + path +
                             "' is a folder (a run's checkpoints are RUN/checkpoints/last.pt and "
                             "best.pt)");
  }
  check_archive(path);
  const c10::IValue root = read_pickle(path);
  std::vector<torch::Tensor> tensors;
  collect_tensors(root, tensors);
  check_tensor_records(path, "checkpoint", tensors);
  if (!root.isGenericDict()) {
    throw std::runtime_error("checkpoint '" + path + "' does not hold a dict (not a checkpoint)");
  }
  const EntryReader entries(root.toGenericDict(), path);
  const auto format = entries.get("format");
  if (!format.isString() || format.toStringRef() != kFormat) {
    entries.fail("format",
                 "is not \"" + std::string(kFormat) + "\" (not an alexnet-cpp checkpoint)");
  }
  const int64_t version = entries.integer("version");
  if (version != kVersion) {
    entries.fail("version", "is " + std::to_string(version) + "; this version reads " +
                                std::to_string(kVersion));
  }
  return from_entries(entries);
}

alexnet::AlexNet model_from_checkpoint(const Checkpoint& checkpoint, torch::Device device) {
  alexnet::AlexNetOptions options = model_options_from_json(checkpoint.config.at("model"));
  options.devices({device});
  alexnet::AlexNet model(options);
  model->load_single_device_state(checkpoint.model);
  model->eval();
  return model;
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

void restore_rng_states(const Checkpoint& checkpoint, const std::vector<torch::Device>& devices,
                        std::ostream& log) {
  if (checkpoint.cpu_rng_state.defined()) {
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(checkpoint.cpu_rng_state);
  }
  size_t next = 0;
  for (const auto& device : devices) {
    if (!device.is_cuda()) continue;
    if (next == checkpoint.cuda_rng_states.size()) {
      log << "note: the checkpoint holds no CUDA generator state for " << device
          << "; its random stream starts from the seed" << std::endl;
      continue;
    }
    at::Generator generator = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(checkpoint.cuda_rng_states[next++]);
  }
  if (next < checkpoint.cuda_rng_states.size()) {
    log << "note: " << checkpoint.cuda_rng_states.size() - next << " of the checkpoint's "
        << checkpoint.cuda_rng_states.size()
        << " CUDA generator states are not restored: this run uses " << next
        << " CUDA device(s) (trained on " << checkpoint.resolved_devices << ")" << std::endl;
  }
}

}  // namespace alexnet::train
