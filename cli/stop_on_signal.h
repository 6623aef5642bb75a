#pragma once

#include <atomic>

namespace alexnet::cli {

/// While it lives, SIGINT and SIGTERM ask the command to stop instead of ending the process,
/// so that it can checkpoint or remove its partial files. A second signal of the same kind
/// ends the process at once. One instance at a time.
class StopOnSignal {
 public:
  StopOnSignal();
  ~StopOnSignal();
  StopOnSignal(const StopOnSignal&) = delete;
  StopOnSignal& operator=(const StopOnSignal&) = delete;

  bool requested() const;
  /// Becomes true at the first signal; what a long computation polls.
  const std::atomic<bool>* flag() const;
  /// 128 + the signal's number, as a shell reports a process the signal ended: 130 for
  /// SIGINT, 143 for SIGTERM; 0 while none arrived.
  int exit_code() const;
  /// "SIGINT" or "SIGTERM".
  const char* name() const;
};

}  // namespace alexnet::cli
