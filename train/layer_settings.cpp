#include "train/layer_settings.h"

#include <algorithm>
#include <set>
#include <stdexcept>

namespace alexnet::train {
namespace {

using nlohmann::json;

std::vector<std::string> model_layer_names(const alexnet::AlexNetOptions& options) {
  std::vector<std::string> names;
  for (const auto& spec : alexnet::layer_table(options)) names.push_back(spec.name);
  return names;
}

bool names_contain(const std::vector<std::string>& names, const std::string& name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

[[noreturn]] void fail_layer_setting(const std::string& key, const json& value,
                                     const std::string& problem) {
  throw std::invalid_argument("configuration key '" + key + "' " + problem + ", got " +
                              value.dump());
}

void check_layer_name(const std::string& key, const json& value, const std::string& name,
                      const alexnet::AlexNetOptions& options) {
  if (!names_contain(model_layer_names(options), name)) {
    fail_layer_setting(key, value,
                       "names '" + name + "', which is not a layer of this model (its layers: " +
                           layer_list(options) + ")");
  }
}

}  // namespace

std::string layer_of_parameter(const std::string& name) {
  const auto last = name.rfind('.');
  if (last == std::string::npos) return "";
  const auto before = name.rfind('.', last - 1);
  const auto begin = before == std::string::npos || last == 0 ? 0 : before + 1;
  return name.substr(begin, last - begin);
}

std::string layer_list(const alexnet::AlexNetOptions& options) {
  std::string text;
  for (const auto& name : model_layer_names(options)) text += (text.empty() ? "" : ", ") + name;
  return text;
}

std::vector<std::string> freeze_from_json(const json& value,
                                          const alexnet::AlexNetOptions& options) {
  const std::string key = "model.freeze";
  if (!value.is_array()) fail_layer_setting(key, value, "must be a list of layer names");
  std::vector<std::string> layers;
  for (const auto& item : value) {
    if (!item.is_string()) fail_layer_setting(key, value, "must be a list of layer names");
    const std::string name = item.get<std::string>();
    check_layer_name(key, value, name, options);
    if (names_contain(layers, name)) fail_layer_setting(key, value, "names '" + name + "' twice");
    layers.push_back(name);
  }
  if (layers.size() == model_layer_names(options).size()) {
    fail_layer_setting(key, value, "holds every layer, so nothing would train");
  }
  return layers;
}

std::map<std::string, double> lr_mult_from_json(const json& value,
                                                const alexnet::AlexNetOptions& options) {
  const std::string key = "optimizer.lr_mult";
  if (!value.is_object())
    fail_layer_setting(key, value, "must be an object {\"layer\": multiplier}");
  std::map<std::string, double> multipliers;
  for (const auto& item : value.items()) {
    check_layer_name(key, value, item.key(), options);
    const json& multiplier = item.value();
    if (!multiplier.is_number() || multiplier.get<double>() < 0.0 ||
        multiplier.get<double>() > 1e6) {
      fail_layer_setting(key + "." + item.key(), multiplier, "must be a number in [0, 1e6]");
    }
    multipliers[item.key()] = multiplier.get<double>();
  }
  return multipliers;
}

int64_t freeze_layers(alexnet::AlexNet& model, const std::vector<std::string>& layers) {
  const auto names = model->layer_names();
  for (const auto& layer : layers) {
    TORCH_CHECK(names_contain(names, layer), "cannot freeze '", layer,
                "': the model has no such layer (its layers: ", layer_list(model->options), ")");
  }
  const std::set<std::string> frozen(layers.begin(), layers.end());
  int64_t count = 0;
  for (auto& item : model->named_parameters()) {
    if (frozen.count(layer_of_parameter(item.key())) == 0) continue;
    item.value().requires_grad_(false);
    ++count;
  }
  return count;
}

}  // namespace alexnet::train
