#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "cli/arg_parser.h"

namespace alexnet::cli {

/// configs/NAME under the working directory, else in the source tree's configs/ folder that the
/// binary was built from; throws naming both places when neither has it.
std::string find_config(const std::string& name);

/// A subcommand of `alexnet`. Each app/cmd_*.cpp registers its commands with a static
/// `Registration`, so adding a command touches only its own file.
struct Command {
  std::string name;
  std::string summary;
  std::function<int(const std::vector<std::string>&)> run;
};

std::map<std::string, Command>& commands();

struct Registration {
  Registration(std::string name, std::string summary,
               std::function<int(const std::vector<std::string>&)> run);
};

}  // namespace alexnet::cli
