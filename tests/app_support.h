// Running other programs from the tests: the `alexnet` executable (ALEXNET_BINARY, set by
// tests/CMakeLists.txt) and /usr/bin/python3.
#pragma once

#include <filesystem>
#include <map>
#include <string>

#include <catch2/catch.hpp>

#include "tests/support.h"

namespace alexnet::testing {

/// How a command ended and what it printed.
struct CommandOutcome {
  int status = -1;  // the exit status; 128 + N when signal N ended the process
  std::string output;
};

/// Runs `alexnet ARGS` with stdout and stderr into dir/output.txt.
inline CommandOutcome run_alexnet(const std::string& args, const TempDir& dir) {
  const std::string log = dir / "output.txt";
  const int status = run_command(std::string(ALEXNET_BINARY) + " " + args + " >" + log + " 2>&1");
  return {status, read_text(log)};
}

/// True, with a warning that the test is skipped, where the `alexnet` executable is not built.
inline bool skip_without_alexnet() {
  if (std::filesystem::exists(ALEXNET_BINARY)) return false;
  WARN("skipped: " ALEXNET_BINARY " is not built");
  return true;
}

/// True, with a warning that the test is skipped, where /usr/bin/python3 is missing or cannot
/// import `module` (asked once per module and process).
inline bool skip_without_python(const std::string& module) {
  static std::map<std::string, bool> importable;
  auto known = importable.find(module);
  if (known == importable.end()) {
    const bool found =
        std::filesystem::exists("/usr/bin/python3") &&
        run_command("/usr/bin/python3 -c 'import " + module + "' >/dev/null 2>&1") == 0;
    known = importable.emplace(module, found).first;
  }
  if (known->second) return false;
  const std::string reason = "/usr/bin/python3 is missing or cannot import " + module;
  WARN("skipped: " << reason << " (Debian's python3-" << module << ")");
  return true;
}

}  // namespace alexnet::testing
