#pragma once

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <utility>
#include <vector>

namespace alexnet::distributed {

/// A TCP port on `address` that was free a moment ago (bind to port 0, read, close). Throws
/// std::runtime_error naming the address when it cannot be resolved or bound.
int64_t find_free_port(const std::string& address = "127.0.0.1");

/// How launch_local_processes() starts and stops the ranks.
struct LaunchOptions {
  /// Number of processes (ranks) to start.
  int64_t nproc = 2;
  /// MASTER_ADDR given to every rank.
  std::string master_addr = "127.0.0.1";
  /// 0: a free port is chosen.
  int64_t master_port = 0;
  /// After the first process fails, the others get SIGTERM and, this long later, SIGKILL.
  std::chrono::milliseconds kill_grace{std::chrono::seconds(10)};
  /// Extra environment variables for every process (e.g. OMP_NUM_THREADS).
  std::vector<std::pair<std::string, std::string>> env;
  /// Where the launcher reports a failed rank; null: nowhere.
  std::ostream* log = nullptr;
};

/// What launch_local_processes() saw.
struct LaunchResult {
  /// 0 when every process exited with 0; else the first failed process's exit code
  /// (128 + signal number for a signal).
  int exit_code = 0;
  /// The rank that failed first, -1 when none did.
  int64_t failed_rank = -1;
  /// "rank 1 (pid 1234) exited with code 3" / "... was killed by signal 9 (Killed)"; empty
  /// when all succeeded.
  std::string message;
};

/// Starts `nproc` copies of `executable` with `args` (argv[1..]) on this machine, each with
/// RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT set, and
/// waits for all of them. With a loopback master_addr (a job on this machine only) they also
/// get ALEXNET_RENDEZVOUS_FILE, a file in a new folder of mode 0700 under $TMPDIR (or /tmp)
/// that the launcher removes when they are done: the ranks meet there, and no rendezvous port
/// is opened; and NCCL_SOCKET_IFNAME=lo unless it is set. When one fails, the rest are stopped
/// (SIGTERM, then SIGKILL after kill_grace) and the failure is reported. The processes run in their
/// own process group and end with the launcher; a SIGINT or SIGTERM to the launcher is passed on to
/// each of them once (a second one kills them), and the result's exit code is then 128 + the
/// signal's number. Throws std::runtime_error when a process cannot be started, no free port
/// is found or the private folder cannot be made, c10::Error when options.nproc < 1.
LaunchResult launch_local_processes(const std::string& executable,
                                    const std::vector<std::string>& args,
                                    const LaunchOptions& options);

}  // namespace alexnet::distributed
