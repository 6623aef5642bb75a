#pragma once

#include <optional>
#include <sstream>
#include <string>

namespace alexnet {

/// An option outside its range: its name as the options struct and the configuration file
/// spell it ("dropout", "lrn_k"), what it must be ("a number in [0, 1)") and the value given.
struct OptionProblem {
  std::string option;
  std::string allowed;
  std::string value;

  /// "<option> must be <allowed>, got <value>".
  std::string message() const { return option + " must be " + allowed + ", got " + value; }
};

/// A value as OptionProblem::value shows it: numbers as printed by a stream, strings quoted.
template <typename T>
std::string option_value_text(const T& value) {
  std::ostringstream out;
  out << value;
  return out.str();
}
inline std::string option_value_text(const std::string& value) { return "'" + value + "'"; }

}  // namespace alexnet
