#include "cli.h"

#include <filesystem>
#include <stdexcept>

#ifndef ALEXNET_CONFIG_DIR
#define ALEXNET_CONFIG_DIR "configs"
#endif

namespace alexnet::cli {

train::Precision precision_option(const ArgParser& parser, std::optional<torch::Device> device) {
  try {
    const train::Precision precision = train::parse_precision(parser.get("precision"));
    if (device) train::check_precision(precision, *device);
    return precision;
  } catch (const std::invalid_argument& e) {
    throw UsageError(std::string("--precision: ") + e.what());
  }
}

std::map<std::string, Command>& commands() {
  static std::map<std::string, Command> registry;
  return registry;
}

Registration::Registration(std::string name, std::string summary,
                           std::function<int(const std::vector<std::string>&)> run) {
  commands()[name] = Command{name, std::move(summary), std::move(run)};
}

std::string find_config(const std::string& name) {
  namespace fs = std::filesystem;
  for (const fs::path& dir : {fs::path("configs"), fs::path(ALEXNET_CONFIG_DIR)}) {
    if (fs::exists(dir / name)) return (dir / name).string();
  }
  throw std::runtime_error("cannot find configs/" + name + " (looked in ./configs and " +
                           ALEXNET_CONFIG_DIR + "); pass --config FILE");
}

}  // namespace alexnet::cli
