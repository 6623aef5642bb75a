// Reading the objects of a JSON configuration into typed fields, for train/config.cpp;
// internal to the train library.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace alexnet::train {

/// "a, b, c" for {a, b, c} and ", ".
std::string join_names(const std::vector<std::string>& items, const std::string& separator);

/// The names an enum's values have in the configuration, in the order error messages list
/// them.
template <typename Enum>
using NameTable = std::vector<std::pair<Enum, std::string>>;

/// The name of `value` in `table`.
template <typename Enum>
const std::string& name_of(const NameTable<Enum>& table, Enum value) {
  for (const auto& [item, name] : table) {
    if (item == value) return name;
  }
  return table.front().second;
}

/// The names of `table`, in order.
template <typename Enum>
std::vector<std::string> names_of(const NameTable<Enum>& table) {
  std::vector<std::string> names;
  for (const auto& item : table) names.push_back(item.second);
  return names;
}

/// Reads the keys of one JSON object into typed fields and refuses the keys it did not read.
/// Errors are std::invalid_argument naming the key with its path ("optimizer.rule"), what it
/// must be and the value given.
class ObjectReader {
 public:
  /// `prefix`: the object's path ("" for the root).
  ObjectReader(const nlohmann::json& object, std::string prefix);

  /// The key with the object's path: "optimizer.lr".
  std::string path(const std::string& key) const;
  /// The value of `key`, or null when it is absent; marks the key as known.
  const nlohmann::json* find(const std::string& key);

  /// Integers (any, or >= min_value), non-negative integers, numbers (any, or in
  /// [min_value, max_value]), booleans, strings and lists of numbers; an absent key leaves
  /// `out` as it is.
  void read(const std::string& key, int64_t& out);
  void read(const std::string& key, int64_t& out, int64_t min_value);
  void read(const std::string& key, uint64_t& out);
  void read(const std::string& key, double& out);
  void read(const std::string& key, double& out, double min_value, double max_value);
  void read(const std::string& key, bool& out);
  void read(const std::string& key, std::string& out);
  void read(const std::string& key, std::vector<double>& out);
  /// A string that must be one of `allowed`.
  void read_choice(const std::string& key, std::string& out,
                   const std::vector<std::string>& allowed);
  /// A string that must be one of the names of `table`, read as its value.
  template <typename Enum>
  void read_enum(const std::string& key, Enum& out, const NameTable<Enum>& table) {
    std::string name = name_of(table, out);
    read_choice(key, name, names_of(table));
    for (const auto& [value, value_name] : table) {
      if (value_name == name) out = value;
    }
  }

  /// Throws: "configuration key 'PATH' must be ALLOWED, got VALUE".
  [[noreturn]] void fail(const std::string& key, const nlohmann::json& value,
                         const std::string& allowed) const;

  /// Throws naming the first key that no read() or find() asked for (keys starting with '_'
  /// are comments).
  void finish() const;

 private:
  const nlohmann::json& object_;
  std::string prefix_;
  std::vector<std::string> known_;
};

}  // namespace alexnet::train
