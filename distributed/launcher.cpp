#include "distributed/launcher.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <thread>

#include <c10/util/Exception.h>

#include "distributed/environment.h"

extern char** environ;

namespace alexnet::distributed {
namespace {

using Clock = std::chrono::steady_clock;

std::atomic<int> g_forward_signal{0};
std::atomic<int> g_signal_count{0};
extern "C" void remember_signal(int signal_number) {
  g_forward_signal = signal_number;
  ++g_signal_count;
}

// While it exists, SIGINT and SIGTERM are counted and remembered instead of ending the
// launcher; the previous handlers come back when it goes.
class SignalForwarding {
 public:
  SignalForwarding() {
    struct sigaction forward {};
    forward.sa_handler = remember_signal;
    sigemptyset(&forward.sa_mask);
    g_forward_signal = 0;
    g_signal_count = 0;
    sigaction(SIGINT, &forward, &old_int_);
    sigaction(SIGTERM, &forward, &old_term_);
  }
  ~SignalForwarding() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  SignalForwarding(const SignalForwarding&) = delete;
  SignalForwarding& operator=(const SignalForwarding&) = delete;

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

// A folder that only this user may enter (mode 0700, made by mkdtemp under $TMPDIR or /tmp),
// removed with everything in it when the object goes.
class PrivateFolder {
 public:
  explicit PrivateFolder(const std::string& prefix) {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern =
        std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/" + prefix + "XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) {
      throw std::runtime_error("cannot create a private folder " + pattern + ": " +
                               std::strerror(errno));
    }
    path_ = pattern;
  }
  ~PrivateFolder() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  PrivateFolder(const PrivateFolder&) = delete;
  PrivateFolder& operator=(const PrivateFolder&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

struct Child {
  pid_t pid = -1;
  bool running = false;
};

void signal_all(const std::vector<Child>& children, int signal_number) {
  for (const auto& c : children) {
    if (c.running) kill(c.pid, signal_number);
  }
}

std::string status_text(int status, int* exit_code) {
  if (WIFEXITED(status)) {
    *exit_code = WEXITSTATUS(status);
    return "exited with code " + std::to_string(*exit_code);
  }
  if (WIFSIGNALED(status)) {
    const int signal_number = WTERMSIG(status);
    *exit_code = 128 + signal_number;
    return "was killed by signal " + std::to_string(signal_number) + " (" +
           strsignal(signal_number) + ")";
  }
  *exit_code = 1;
  return "stopped with status " + std::to_string(status);
}

// This process's environment without the variables the launcher sets, then options.env.
std::vector<std::string> inherited_environment(const LaunchOptions& options) {
  static const std::vector<std::string> kReplaced{"RANK",
                                                  "LOCAL_RANK",
                                                  "WORLD_SIZE",
                                                  "LOCAL_WORLD_SIZE",
                                                  "MASTER_ADDR",
                                                  "MASTER_PORT",
                                                  "ALEXNET_RENDEZVOUS_FILE"};
  std::vector<std::string> base_env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string entry(*e);
    const std::string name = entry.substr(0, entry.find('='));
    const bool replaced = std::find(kReplaced.begin(), kReplaced.end(), name) != kReplaced.end() ||
                          std::any_of(options.env.begin(), options.env.end(),
                                      [&](const auto& kv) { return kv.first == name; });
    if (!replaced) base_env.push_back(entry);
  }
  for (const auto& [name, value] : options.env) base_env.push_back(name + "=" + value);
  return base_env;
}

// The child's side of fork: only async-signal-safe calls from here to execve.
[[noreturn]] void exec_rank(const char* executable, char* const* argv, char* const* envp,
                            pid_t launcher) {
  // Its own process group: a Ctrl-C reaches the ranks once, through the launcher, so they
  // all stop at the same step; and they go when the launcher goes.
  setpgid(0, 0);
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != launcher) _exit(1);
  execve(executable, argv, envp);
  const char message[] = "launch_local_processes: execve failed\n";
  [[maybe_unused]] auto written = write(2, message, sizeof(message) - 1);
  _exit(127);
}

// Forks rank 0 .. nproc-1 with `argv` (null-terminated) and `base_env` plus the rank's
// variables. When a fork fails, the ranks already started are killed and
// reaped, and std::runtime_error is thrown.
std::vector<Child> start_ranks(const std::string& executable, const std::vector<char*>& argv,
                               const std::vector<std::string>& base_env,
                               const LaunchOptions& options, int64_t port,
                               const std::string& rendezvous_file) {
  std::vector<Child> children(static_cast<size_t>(options.nproc));
  for (int64_t rank = 0; rank < options.nproc; ++rank) {
    std::vector<std::string> env_text = base_env;
    env_text.push_back("RANK=" + std::to_string(rank));
    env_text.push_back("LOCAL_RANK=" + std::to_string(rank));
    env_text.push_back("WORLD_SIZE=" + std::to_string(options.nproc));
    env_text.push_back("LOCAL_WORLD_SIZE=" + std::to_string(options.nproc));
    env_text.push_back("MASTER_ADDR=" + options.master_addr);
    env_text.push_back("MASTER_PORT=" + std::to_string(port));
    if (!rendezvous_file.empty()) env_text.push_back("ALEXNET_RENDEZVOUS_FILE=" + rendezvous_file);
    std::vector<char*> envp;
    for (auto& e : env_text) envp.push_back(e.data());
    envp.push_back(nullptr);
    const pid_t launcher = getpid();
    const pid_t pid = fork();
    if (pid == 0) exec_rank(executable.c_str(), argv.data(), envp.data(), launcher);
    if (pid < 0) {
      const int error = errno;
      signal_all(children, SIGKILL);
      for (auto& c : children) {
        if (c.running) waitpid(c.pid, nullptr, 0);
      }
      throw std::runtime_error("cannot start rank " + std::to_string(rank) + " of " + executable +
                               ": " + std::strerror(error));
    }
    children[static_cast<size_t>(rank)] = {pid, true};
  }
  return children;
}

// Waits for every child. Records the first failure in `result` and stops the others
// (SIGTERM, SIGKILL after kill_grace); passes the first SIGINT/SIGTERM on. Returns whether
// a signal was passed on.
bool supervise(std::vector<Child>& children, const LaunchOptions& options, LaunchResult& result) {
  // SIGKILL at kill_at when kill_pending (not a std::optional: GCC 12 then warns that its
  // time point may be used uninitialised).
  bool kill_pending = false;
  Clock::time_point kill_at;
  int64_t running = options.nproc;
  bool forwarded = false;
  while (running > 0) {
    // The first SIGINT/SIGTERM is passed on (the ranks checkpoint and stop together); a
    // second one kills them.
    if (const int signal_number = g_forward_signal.load(); signal_number != 0 && !forwarded) {
      signal_all(children, signal_number);
      forwarded = true;
      kill_pending = false;
    }
    if (g_signal_count.load() >= 2) signal_all(children, SIGKILL);
    bool reaped = false;
    for (size_t rank = 0; rank < children.size(); ++rank) {
      auto& child = children[rank];
      if (!child.running) continue;
      int status = 0;
      const pid_t done = waitpid(child.pid, &status, WNOHANG);
      if (done != child.pid) continue;
      child.running = false;
      --running;
      reaped = true;
      int exit_code = 0;
      const std::string how = status_text(status, &exit_code);
      if (exit_code != 0 && result.failed_rank < 0 && !forwarded) {
        result.failed_rank = static_cast<int64_t>(rank);
        result.exit_code = exit_code;
        result.message =
            "rank " + std::to_string(rank) + " (pid " + std::to_string(child.pid) + ") " + how;
        if (options.log != nullptr) {
          *options.log << "launcher: " << result.message << "; stopping the other ranks"
                       << std::endl;
        }
        signal_all(children, SIGTERM);
        kill_at = Clock::now() + options.kill_grace;
        kill_pending = true;
      }
    }
    if (kill_pending && Clock::now() > kill_at) {
      signal_all(children, SIGKILL);
      kill_pending = false;
    }
    if (!reaped && running > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return forwarded;
}

}  // namespace

int64_t find_free_port(const std::string& address) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(address.c_str(), "0", &hints, &found) != 0 || found == nullptr) {
    throw std::runtime_error("find_free_port: cannot resolve address '" + address + "'");
  }
  const int fd = socket(found->ai_family, found->ai_socktype, found->ai_protocol);
  if (fd < 0) {
    freeaddrinfo(found);
    throw std::runtime_error(std::string("find_free_port: socket: ") + std::strerror(errno));
  }
  int64_t port = -1;
  if (bind(fd, found->ai_addr, found->ai_addrlen) == 0) {
    sockaddr_storage bound{};
    socklen_t length = sizeof(bound);
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &length) == 0) {
      port = bound.ss_family == AF_INET ? ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port)
                                        : ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
    }
  }
  const int error = errno;
  close(fd);
  freeaddrinfo(found);
  if (port <= 0) {
    throw std::runtime_error("find_free_port: cannot bind to " + address + ": " +
                             std::strerror(error));
  }
  return port;
}

LaunchResult launch_local_processes(const std::string& executable,
                                    const std::vector<std::string>& args,
                                    const LaunchOptions& options) {
  TORCH_CHECK(options.nproc >= 1, "--nproc must be at least 1, got ", options.nproc);
  const int64_t port =
      options.master_port > 0 ? options.master_port : find_free_port(options.master_addr);
  // Everything the children need is built before fork: between fork and exec only
  // async-signal-safe calls are allowed.
  std::vector<std::string> base_env = inherited_environment(options);
  std::vector<std::string> argv_text{executable};
  argv_text.insert(argv_text.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_text) argv.push_back(a.data());
  argv.push_back(nullptr);

  // Ranks on the loopback address meet in a file only this user can reach, not on a TCP
  // port open to every interface (LibTorch 1.13's TCPStore cannot listen on one address).
  // NCCL's bootstrap, too, stays on the loopback interface unless told otherwise.
  std::optional<PrivateFolder> rendezvous;
  if (is_loopback_address(options.master_addr)) {
    rendezvous.emplace("alexnet-rendezvous-");
    const bool nccl_interface_set =
        std::any_of(base_env.begin(), base_env.end(),
                    [](const std::string& e) { return e.rfind("NCCL_SOCKET_IFNAME=", 0) == 0; });
    if (!nccl_interface_set) base_env.push_back("NCCL_SOCKET_IFNAME=lo");
  }
  const std::string rendezvous_file = rendezvous ? rendezvous->path() + "/store" : "";

  LaunchResult result;
  bool forwarded = false;
  {
    SignalForwarding forwarding;
    auto children = start_ranks(executable, argv, base_env, options, port, rendezvous_file);
    forwarded = supervise(children, options, result);
  }
  if (result.failed_rank < 0 && forwarded) {
    const int signal_number = g_forward_signal.load();
    result.exit_code = 128 + signal_number;
    result.message = "stopped by signal " + std::to_string(signal_number) + " (" +
                     strsignal(signal_number) + ")";
  }
  return result;
}

}  // namespace alexnet::distributed
