#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace alexnet::cli {

/// A command line that cannot be parsed: an unknown option, a missing or malformed value, an
/// unexpected argument, options that exclude each other. `alexnet` exits with status 2 on it,
/// as argparse and getopt-based tools do.
class UsageError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// A small command-line parser: `--name value`, `--name=value` and `--flag` options plus
/// positional arguments. Unknown options and missing values are errors that name them. An
/// option given more than once keeps every value (get_all); get() reads the last.
class ArgParser {
 public:
  /// `usage` is the first help line, e.g. "alexnet summary [options]".
  ArgParser(std::string usage, std::string description);

  /// An option taking a value; `default_value` empty means "not set".
  ArgParser& option(const std::string& name, const std::string& help,
                    const std::string& default_value = "");
  /// A boolean flag, false unless given.
  ArgParser& flag(const std::string& name, const std::string& help);
  /// Accept positional arguments, described by `name` in the help text.
  ArgParser& positionals(const std::string& name, const std::string& help);

  /// Parses argv (without the program and subcommand names). Returns false and prints the
  /// help when --help or -h was given. Throws UsageError on bad input.
  bool parse(const std::vector<std::string>& args);

  std::string help() const;

  bool has(const std::string& name) const;
  /// The last value given, else the default.
  std::string get(const std::string& name) const;
  /// Every value given, in order; else the default alone, or nothing when it is empty.
  std::vector<std::string> get_all(const std::string& name) const;
  bool get_flag(const std::string& name) const;
  int64_t get_int(const std::string& name) const;
  double get_double(const std::string& name) const;
  /// Whether the user gave the option on the command line (as opposed to its default).
  bool given(const std::string& name) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  struct Spec {
    std::string help;
    std::string default_value;
    bool is_flag = false;
  };
  const Spec& spec(const std::string& name) const;

  std::string usage_;
  std::string description_;
  std::vector<std::string> order_;
  std::map<std::string, Spec> specs_;
  std::map<std::string, std::vector<std::string>> values_;
  std::optional<std::pair<std::string, std::string>> positional_spec_;
  std::vector<std::string> positional_;
};

/// Parses "1,2,3" into integers; `what` names the option in errors (UsageError).
std::vector<int64_t> parse_int_list(const std::string& text, const std::string& what);
/// `args` without any `--name VALUE` or `--name=VALUE`: the arguments to pass on to a process
/// that must not see the option.
std::vector<std::string> without_option(const std::vector<std::string>& args,
                                        const std::string& name);
/// Splits on commas, dropping empty items.
std::vector<std::string> split(const std::string& text, char sep = ',');

}  // namespace alexnet::cli
