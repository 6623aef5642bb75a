// The Catch2 main shared by every test executable, and the helpers of support.h.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <system_error>

#include "tests/support.h"

namespace fs = std::filesystem;

namespace alexnet::testing {

fs::path test_root() {
  return fs::temp_directory_path() / ("alexnet_test_" + std::to_string(getpid()));
}

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = test_root() / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

TempDir::TempDir() {
  static int counter = 0;
  path = fresh_dir("dir" + std::to_string(counter++));
}

int run_command(const std::string& command) {
  const int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_text(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

}  // namespace alexnet::testing

namespace {

// Removes the test process's folder after every test case that passed; keeps it and says
// where it is after one that failed.
class TempFolderCleaner : public Catch::TestEventListenerBase {
 public:
  using TestEventListenerBase::TestEventListenerBase;

  void testCaseEnded(const Catch::TestCaseStats& stats) override {
    const fs::path root = alexnet::testing::test_root();
    std::error_code error;
    if (!fs::exists(root, error)) return;
    if (stats.totals.assertions.failed > 0 || stats.totals.testCases.failed > 0) {
      std::cerr << "kept the files of the failed test '" << stats.testInfo.name << "' in "
                << root.string() << "\n";
      return;
    }
    fs::remove_all(root, error);
  }
};

}  // namespace

CATCH_REGISTER_LISTENER(TempFolderCleaner)
