// Helpers shared by the unit tests.
#pragma once

#include <filesystem>
#include <string>

namespace alexnet::testing {

/// The folder under the system temp folder that holds everything this test process writes:
/// <tmp>/alexnet_test_<pid>. tests/main.cpp removes it when a test case passes and keeps it,
/// printing its path, when one fails.
std::filesystem::path test_root();

/// A fresh, empty folder test_root()/name (an existing one is emptied).
std::filesystem::path fresh_dir(const std::string& name);

/// Runs `command` with the shell; returns its exit status, or -1 when a signal ended it.
int run_command(const std::string& command);

/// The whole file as text ("" when it cannot be read).
std::string read_text(const std::filesystem::path& path);

/// Writes `text` to `path`, creating its folder.
void write_text(const std::filesystem::path& path, const std::string& text);

/// A fresh folder with a name of its own (test_root()/dir<N>), for tests that need several.
struct TempDir {
  TempDir();
  std::filesystem::path path;
  /// The path of `name` inside the folder, as a string.
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

}  // namespace alexnet::testing
