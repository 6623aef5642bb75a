#include "data/json_fields.h"

#include <stdexcept>

namespace alexnet::data {

JsonFields::JsonFields(const nlohmann::json& object, std::string context, std::string noun)
    : object_(object), context_(std::move(context)), noun_(std::move(noun)) {}

const nlohmann::json& JsonFields::at(const std::string& field) const {
  if (!object_.contains(field)) fail(field, "is missing");
  return object_.at(field);
}

int64_t JsonFields::integer(const std::string& field, int64_t min, int64_t max) const {
  return integer_value(at(field), field, std::nullopt, min, max);
}

std::vector<int64_t> JsonFields::integers(const std::string& field, int64_t min,
                                          int64_t max) const {
  const auto& value = at(field);
  if (!value.is_array()) fail(field, "must be an array of integers, got " + shown(value));
  std::vector<int64_t> out;
  out.reserve(value.size());
  for (size_t i = 0; i < value.size(); ++i) {
    out.push_back(integer_value(value[i], field, i, min, max));
  }
  return out;
}

std::vector<std::string> JsonFields::strings(const std::string& field) const {
  const auto& value = at(field);
  if (!value.is_array()) fail(field, "must be an array of strings, got " + shown(value));
  std::vector<std::string> out;
  for (size_t i = 0; i < value.size(); ++i) {
    if (!value[i].is_string()) {
      fail(field, "must be an array of strings, but element " + std::to_string(i) + " is " +
                      shown(value[i]));
    }
    out.push_back(value[i].get<std::string>());
  }
  return out;
}

std::vector<double> JsonFields::numbers(const std::string& field, size_t count, bool square) const {
  const auto& value = at(field);
  const std::string expected =
      square ? std::to_string(count) + " arrays of " + std::to_string(count) + " numbers"
             : std::to_string(count) + " numbers";
  auto refuse = [&] { fail(field, "must be an array of " + expected + ", got " + shown(value)); };
  if (!value.is_array() || value.size() != count) refuse();
  std::vector<double> out;
  for (const auto& row : value) {
    if (square && (!row.is_array() || row.size() != count)) refuse();
    for (const auto& element : square ? row : nlohmann::json::array({row})) {
      if (!element.is_number()) refuse();
      out.push_back(element.get<double>());
    }
  }
  return out;
}

std::string JsonFields::string(const std::string& field, const std::string& fallback) const {
  if (!object_.contains(field)) return fallback;
  return string(field);
}

std::string JsonFields::string(const std::string& field) const {
  const auto& value = at(field);
  if (!value.is_string()) fail(field, "must be a string, got " + shown(value));
  return value.get<std::string>();
}

void JsonFields::fail(const std::string& field, const std::string& what) const {
  throw std::runtime_error(context_ + ": " + noun_ + " '" + field + "' " + what);
}

std::string JsonFields::shown(const nlohmann::json& value) {
  std::string text = value.dump();
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  return text;
}

int64_t JsonFields::integer_value(const nlohmann::json& value, const std::string& field,
                                  std::optional<size_t> element, int64_t min, int64_t max) const {
  auto refuse = [&](const std::string& what) {
    fail(field, (element ? "element " + std::to_string(*element) + " " : std::string()) + what);
  };
  if (!value.is_number_integer()) refuse("must be an integer, got " + shown(value));
  // Non-negative numbers parse as unsigned, and may exceed int64_t.
  bool in_range;
  if (value.is_number_unsigned()) {
    const auto number = value.get<uint64_t>();
    in_range =
        number <= static_cast<uint64_t>(max) && (min <= 0 || number >= static_cast<uint64_t>(min));
  } else {
    const auto number = value.get<int64_t>();
    in_range = number >= min && number <= max;
  }
  if (!in_range) {
    refuse("is " + shown(value) + ", outside " + std::to_string(min) + ".." + std::to_string(max));
  }
  return value.get<int64_t>();
}

}  // namespace alexnet::data
