// The `alexnet` command line: dispatches to the subcommands registered in app/cmd_*.cpp.
#include <cerrno>
#include <cstring>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include <c10/util/Exception.h>

#include "cli.h"
#include "cli/arg_parser.h"

namespace {

void print_help() {
  std::cout << "usage: alexnet COMMAND [options]\n\n"
               "AlexNet (Krizhevsky, Sutskever, Hinton 2012) on LibTorch.\n\ncommands:\n";
  for (const auto& [name, command] : alexnet::cli::commands()) {
    std::cout << "  " << name << std::string(name.size() < 12 ? 12 - name.size() : 1, ' ')
              << command.summary << "\n";
  }
  std::cout << "\nRun `alexnet COMMAND --help` for a command's options.\n";
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    print_help();
    if (!std::cout.flush()) {
      std::cerr << "alexnet: error: cannot write standard output: " << std::strerror(errno) << "\n";
      return 1;
    }
    return args.empty() ? 2 : 0;
  }
  const auto& registry = alexnet::cli::commands();
  auto it = registry.find(args[0]);
  if (it == registry.end()) {
    std::cerr << "alexnet: unknown command '" << args[0] << "'\n\n";
    print_help();
    return 2;
  }
  try {
    const int status = it->second.run(std::vector<std::string>(args.begin() + 1, args.end()));
    // Output that could not be written (a full disk, a closed pipe) is an error, not success.
    if (!std::cout.flush()) {
      std::cerr << "alexnet " << args[0]
                << ": error: cannot write standard output: " << std::strerror(errno) << "\n";
      return status == 0 ? 1 : status;
    }
    return status;
  } catch (const alexnet::cli::UsageError& e) {
    std::cerr << "alexnet " << args[0] << ": " << e.what() << "\n";
    return 2;
  } catch (const c10::Error& e) {
    std::cerr << "alexnet " << args[0] << ": error: " << e.what_without_backtrace() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "alexnet " << args[0] << ": error: " << e.what() << "\n";
  }
  return 1;
}
