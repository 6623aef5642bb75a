#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace alexnet::data {

/// The fields of a JSON object read from a file (a packed file's header, a shard index), each
/// checked for its type and range before it is used. Errors are std::runtime_error:
/// "<context>: <noun> '<field>' <what is wrong>", e.g. "packed file a.pack: header field
/// 'height' is 2.5, ...".
class JsonFields {
 public:
  /// `object` must outlive this. context: "packed file PATH"; noun: "header field".
  JsonFields(const nlohmann::json& object, std::string context, std::string noun = "field");

  bool has(const std::string& field) const { return object_.contains(field); }
  /// The field; throws when it is missing.
  const nlohmann::json& at(const std::string& field) const;
  /// An integer in min..max.
  int64_t integer(const std::string& field, int64_t min, int64_t max) const;
  /// An array of integers, each in min..max.
  std::vector<int64_t> integers(const std::string& field, int64_t min, int64_t max) const;
  /// An array of strings.
  std::vector<std::string> strings(const std::string& field) const;
  /// An array of `count` numbers, or of `count` arrays of `count` numbers when `square`
  /// (row-major).
  std::vector<double> numbers(const std::string& field, size_t count, bool square = false) const;
  /// A string; `fallback` when the field is missing.
  std::string string(const std::string& field, const std::string& fallback) const;
  /// A string that must be present.
  std::string string(const std::string& field) const;

  /// Throws "<context>: <noun> '<field>' <what>".
  [[noreturn]] void fail(const std::string& field, const std::string& what) const;
  /// `value` as JSON text, cut to 40 characters.
  static std::string shown(const nlohmann::json& value);

 private:
  // `element`: the index of `value` in the field's array, or nullopt for the field itself.
  int64_t integer_value(const nlohmann::json& value, const std::string& field,
                        std::optional<size_t> element, int64_t min, int64_t max) const;

  const nlohmann::json& object_;
  std::string context_, noun_;
};

}  // namespace alexnet::data
