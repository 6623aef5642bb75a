#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "cli/arg_parser.h"
#include "train/precision.h"

namespace alexnet::cli {

/// configs/NAME under the working directory, else in the source tree's configs/ folder that the
/// binary was built from; throws naming both places when neither has it.
std::string find_config(const std::string& name);

/// --precision as a train::Precision; where `device` is given, also one it can run
/// (check_precision). A bad value is a UsageError naming the option.
train::Precision precision_option(const ArgParser& parser,
                                  std::optional<torch::Device> device = std::nullopt);

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
