// Running the `alexnet` executable from the tests (ALEXNET_BINARY, set by tests/CMakeLists.txt).
#pragma once

#include <filesystem>
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

}  // namespace alexnet::testing
