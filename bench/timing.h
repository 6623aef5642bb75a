#pragma once

// Timing and memory helpers shared by the benchmarks of `alexnet bench`.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

namespace alexnet::bench {

using Clock = std::chrono::steady_clock;

/// Seconds from `start` until now.
inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

/// Seconds taken by each of `repeats` calls of `fn`, after `warmup` untimed calls. `sync`
/// runs after every call (e.g. a CUDA synchronise) and counts towards the time.
inline std::vector<double> time_repeats(const std::function<void()>& fn, int64_t warmup,
                                        int64_t repeats,
                                        const std::function<void()>& sync = nullptr) {
  for (int64_t i = 0; i < warmup; ++i) {
    fn();
    if (sync) sync();
  }
  std::vector<double> seconds;
  for (int64_t i = 0; i < repeats; ++i) {
    const auto start = Clock::now();
    fn();
    if (sync) sync();
    seconds.push_back(seconds_since(start));
  }
  return seconds;
}

/// CPU time used so far by all threads of this process, in seconds.
inline double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

/// The median of a non-empty list (the upper one of the two middle values).
inline double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values.empty() ? 0.0 : values[values.size() / 2];
}

/// A /proc/self/status field in MiB ("VmHWM": peak resident memory, "VmRSS": current);
/// -1 where /proc is not available.
inline double proc_status_mib(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0) {
      return std::stod(line.substr(field.size() + 1)) / 1024.0;  // the value is in kB
    }
  }
  return -1.0;
}

}  // namespace alexnet::bench
