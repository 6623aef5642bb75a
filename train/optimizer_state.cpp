#include "train/optimizer_state.h"

#include <map>
#include <stdexcept>

namespace alexnet::train {
namespace {

using TensorDict = torch::OrderedDict<std::string, torch::Tensor>;

// Splits "<kind>.<parameter name>" entries (optimizer buffers) by kind; entries without a dot
// ("lr") go to `plain`.
std::map<std::string, TensorDict> buffers_by_kind(const TensorDict& state, TensorDict& plain) {
  std::map<std::string, TensorDict> kinds;
  for (const auto& item : state) {
    const auto dot = item.key().find('.');
    if (dot == std::string::npos) {
      plain.insert(item.key(), item.value());
    } else {
      kinds[item.key().substr(0, dot)].insert(item.key().substr(dot + 1), item.value());
    }
  }
  return kinds;
}

}  // namespace

TensorDict single_device_optimizer_state(const alexnet::AlexNet& model, const Sgd& optimizer) {
  TensorDict state;
  for (const auto& [kind, buffers] : buffers_by_kind(optimizer.state(), state)) {
    for (const auto& item : model->to_single_device(buffers)) {
      state.insert(kind + "." + item.key(), item.value());
    }
  }
  return state;
}

TensorDict layout_optimizer_state(const alexnet::AlexNet& model, const TensorDict& saved,
                                  const std::string& path) {
  TensorDict state;
  for (const auto& [kind, buffers] : buffers_by_kind(saved, state)) {
    TensorDict rows;
    try {
      rows = model->from_single_device(buffers);
    } catch (const c10::Error& e) {
      throw std::runtime_error("checkpoint '" + path + "': optimizer entries '" + kind +
                               ".*': " + e.what_without_backtrace());
    }
    for (const auto& item : rows) state.insert(kind + "." + item.key(), item.value());
  }
  return state;
}

}  // namespace alexnet::train
