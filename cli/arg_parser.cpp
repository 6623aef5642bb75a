#include "cli/arg_parser.h"

#include <iostream>
#include <sstream>
#include <stdexcept>

namespace alexnet::cli {

ArgParser::ArgParser(std::string usage, std::string description)
    : usage_(std::move(usage)), description_(std::move(description)) {
  flag("help", "show this help and exit");
}

ArgParser& ArgParser::option(const std::string& name, const std::string& help,
                             const std::string& default_value) {
  if (!specs_.count(name)) order_.push_back(name);
  specs_[name] = Spec{help, default_value, false};
  return *this;
}

ArgParser& ArgParser::flag(const std::string& name, const std::string& help) {
  if (!specs_.count(name)) order_.push_back(name);
  specs_[name] = Spec{help, "", true};
  return *this;
}

ArgParser& ArgParser::positionals(const std::string& name, const std::string& help) {
  positional_spec_ = std::make_pair(name, help);
  return *this;
}

const ArgParser::Spec& ArgParser::spec(const std::string& name) const {
  auto it = specs_.find(name);
  if (it == specs_.end()) throw std::logic_error("option --" + name + " was never declared");
  return it->second;
}

bool ArgParser::parse(const std::vector<std::string>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "-h") {
      values_["help"].push_back("1");
      continue;
    }
    if (arg.size() > 1 && arg[0] == '-' && arg.compare(0, 2, "--") != 0) {
      throw UsageError("unknown option " + arg + " (options start with --; see " + usage_ +
                       " --help)");
    }
    if (arg.size() > 2 && arg.compare(0, 2, "--") == 0) {
      std::string name = arg.substr(2);
      std::optional<std::string> value;
      auto eq = name.find('=');
      if (eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
      }
      auto it = specs_.find(name);
      if (it == specs_.end()) {
        throw UsageError("unknown option --" + name + " (see " + usage_ + " --help)");
      }
      if (it->second.is_flag) {
        if (value) throw UsageError("--" + name + " takes no value");
        values_[name].push_back("1");
        continue;
      }
      if (!value) {
        if (i + 1 >= args.size()) throw UsageError("--" + name + " needs a value");
        // "--epochs --lr 0.1": the value was forgotten (give "--name=--x" for such a value).
        const std::string& next = args[i + 1];
        if (next.size() > 2 && next.compare(0, 2, "--") == 0 &&
            specs_.count(next.substr(2, next.find('=') - 2)) > 0) {
          throw UsageError("--" + name + " needs a value (got the option " + next + ")");
        }
        value = args[++i];
      }
      values_[name].push_back(*value);
    } else {
      if (!positional_spec_) {
        throw UsageError("unexpected argument '" + arg + "' (see " + usage_ + " --help)");
      }
      positional_.push_back(arg);
    }
  }
  if (get_flag("help")) {
    std::cout << help();
    return false;
  }
  return true;
}

std::string ArgParser::help() const {
  std::ostringstream out;
  out << "usage: " << usage_ << "\n\n" << description_ << "\n";
  if (positional_spec_) {
    out << "\narguments:\n  " << positional_spec_->first << "\n      " << positional_spec_->second
        << "\n";
  }
  out << "\noptions:\n";
  for (const auto& name : order_) {
    const Spec& s = specs_.at(name);
    out << "  --" << name << (s.is_flag ? "" : " VALUE") << "\n      " << s.help;
    if (!s.default_value.empty()) out << " (default: " << s.default_value << ")";
    out << "\n";
  }
  return out.str();
}

bool ArgParser::has(const std::string& name) const {
  spec(name);
  return values_.count(name) || !specs_.at(name).default_value.empty();
}

bool ArgParser::given(const std::string& name) const {
  spec(name);
  return values_.count(name) > 0;
}

std::string ArgParser::get(const std::string& name) const {
  const Spec& s = spec(name);
  auto it = values_.find(name);
  return it == values_.end() ? s.default_value : it->second.back();
}

std::vector<std::string> ArgParser::get_all(const std::string& name) const {
  const Spec& s = spec(name);
  auto it = values_.find(name);
  if (it != values_.end()) return it->second;
  if (s.default_value.empty()) return {};
  return {s.default_value};
}

bool ArgParser::get_flag(const std::string& name) const {
  spec(name);
  return values_.count(name) > 0;
}

int64_t ArgParser::get_int(const std::string& name) const {
  const std::string text = get(name);
  try {
    size_t used = 0;
    const long long value = std::stoll(text, &used);
    if (used != text.size()) throw std::invalid_argument(text);
    return value;
  } catch (const std::exception&) {
    throw UsageError("--" + name + " expects an integer, got '" + text + "'");
  }
}

double ArgParser::get_double(const std::string& name) const {
  const std::string text = get(name);
  try {
    size_t used = 0;
    const double value = std::stod(text, &used);
    if (used != text.size()) throw std::invalid_argument(text);
    return value;
  } catch (const std::exception&) {
    throw UsageError("--" + name + " expects a number, got '" + text + "'");
  }
}

std::vector<std::string> without_option(const std::vector<std::string>& args,
                                        const std::string& name) {
  const std::string option = "--" + name;
  std::vector<std::string> kept;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == option) {
      ++i;  // and its value
    } else if (args[i].rfind(option + "=", 0) != 0) {
      kept.push_back(args[i]);
    }
  }
  return kept;
}

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> items;
  std::string item;
  std::istringstream in(text);
  while (std::getline(in, item, sep)) {
    if (!item.empty()) items.push_back(item);
  }
  return items;
}

std::vector<int64_t> parse_int_list(const std::string& text, const std::string& what) {
  std::vector<int64_t> values;
  for (const auto& item : split(text)) {
    try {
      size_t used = 0;
      values.push_back(std::stoll(item, &used));
      if (used != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      throw UsageError(what + " expects a comma-separated list of integers, got '" + text + "'");
    }
  }
  return values;
}

}  // namespace alexnet::cli
