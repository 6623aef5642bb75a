#include "train/config_reader.h"

#include <algorithm>
#include <sstream>
#include <stdexcept>

namespace alexnet::train {

using nlohmann::json;

std::string join_names(const std::vector<std::string>& items, const std::string& separator) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? separator : "") + items[i];
  return out;
}

ObjectReader::ObjectReader(const json& object, std::string prefix)
    : object_(object), prefix_(std::move(prefix)) {
  if (!object_.is_object()) {
    throw std::invalid_argument("configuration " +
                                (prefix_.empty() ? std::string("root") : "key '" + prefix_ + "'") +
                                " must be a JSON object, got " + object_.dump());
  }
}

std::string ObjectReader::path(const std::string& key) const {
  return prefix_.empty() ? key : prefix_ + "." + key;
}

const json* ObjectReader::find(const std::string& key) {
  known_.push_back(key);
  auto it = object_.find(key);
  return it == object_.end() ? nullptr : &*it;
}

void ObjectReader::read(const std::string& key, int64_t& out) {
  if (const json* value = find(key)) {
    if (!value->is_number_integer()) fail(key, *value, "an integer");
    out = value->get<int64_t>();
  }
}

void ObjectReader::read(const std::string& key, int64_t& out, int64_t min_value) {
  if (const json* value = find(key)) {
    if (!value->is_number_integer() || value->get<int64_t>() < min_value) {
      fail(key, *value, "an integer >= " + std::to_string(min_value));
    }
    out = value->get<int64_t>();
  }
}

void ObjectReader::read(const std::string& key, uint64_t& out) {
  if (const json* value = find(key)) {
    if (!value->is_number_integer() || value->get<int64_t>() < 0) {
      fail(key, *value, "a non-negative integer");
    }
    out = value->get<uint64_t>();
  }
}

void ObjectReader::read(const std::string& key, double& out) {
  if (const json* value = find(key)) {
    if (!value->is_number()) fail(key, *value, "a number");
    out = value->get<double>();
  }
}

void ObjectReader::read(const std::string& key, double& out, double min_value, double max_value) {
  if (const json* value = find(key)) {
    if (!value->is_number() || value->get<double>() < min_value ||
        value->get<double>() > max_value) {
      std::ostringstream range;
      range << "a number in [" << min_value << ", " << max_value << "]";
      fail(key, *value, range.str());
    }
    out = value->get<double>();
  }
}

void ObjectReader::read(const std::string& key, bool& out) {
  if (const json* value = find(key)) {
    if (!value->is_boolean()) fail(key, *value, "true or false");
    out = value->get<bool>();
  }
}

void ObjectReader::read(const std::string& key, std::string& out) {
  if (const json* value = find(key)) {
    if (!value->is_string()) fail(key, *value, "a string");
    out = value->get<std::string>();
  }
}

void ObjectReader::read(const std::string& key, std::vector<double>& out) {
  if (const json* value = find(key)) {
    bool ok = value->is_array();
    for (const auto& item : ok ? *value : json::array()) ok = ok && item.is_number();
    if (!ok) fail(key, *value, "a list of numbers");
    out = value->get<std::vector<double>>();
  }
}

void ObjectReader::read_choice(const std::string& key, std::string& out,
                               const std::vector<std::string>& allowed) {
  if (const json* value = find(key)) {
    const bool ok = value->is_string() && std::find(allowed.begin(), allowed.end(),
                                                    value->get<std::string>()) != allowed.end();
    if (!ok) fail(key, *value, "one of " + join_names(allowed, ", "));
    out = value->get<std::string>();
  }
}

void ObjectReader::fail(const std::string& key, const json& value,
                        const std::string& allowed) const {
  throw std::invalid_argument("configuration key '" + path(key) + "' must be " + allowed +
                              ", got " + value.dump());
}

void ObjectReader::finish() const {
  for (const auto& item : object_.items()) {
    if (item.key().rfind('_', 0) == 0) continue;  // a comment
    if (std::find(known_.begin(), known_.end(), item.key()) == known_.end()) {
      throw std::invalid_argument(
          "unknown configuration key '" + path(item.key()) + "'; allowed keys" +
          (prefix_.empty() ? "" : " in '" + prefix_ + "'") + ": " + join_names(known_, ", "));
    }
  }
}

}  // namespace alexnet::train
