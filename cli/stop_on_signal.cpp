#include "cli/stop_on_signal.h"

#include <signal.h>

#include <csignal>

namespace alexnet::cli {
namespace {

// The signal that asked to stop (0: none) and the same as a flag; both are lock-free, so the
// handler may set them.
volatile std::sig_atomic_t g_signal = 0;
std::atomic<bool> g_requested{false};
struct sigaction g_previous_int {};
struct sigaction g_previous_term {};

void request_stop(int signal_number) {
  g_signal = signal_number;
  g_requested = true;
}

}  // namespace

StopOnSignal::StopOnSignal() {
  g_signal = 0;
  g_requested = false;
  struct sigaction action {};
  action.sa_handler = request_stop;
  sigemptyset(&action.sa_mask);
  // SA_RESETHAND: the second signal ends the process; SA_RESTART: reads are not cut short.
  action.sa_flags = SA_RESTART | SA_RESETHAND;
  sigaction(SIGINT, &action, &g_previous_int);
  sigaction(SIGTERM, &action, &g_previous_term);
}

StopOnSignal::~StopOnSignal() {
  sigaction(SIGINT, &g_previous_int, nullptr);
  sigaction(SIGTERM, &g_previous_term, nullptr);
}

bool StopOnSignal::requested() const { return g_requested.load(); }

const std::atomic<bool>* StopOnSignal::flag() const { return &g_requested; }

int StopOnSignal::exit_code() const { return g_signal == 0 ? 0 : 128 + g_signal; }

const char* StopOnSignal::name() const { return g_signal == SIGTERM ? "SIGTERM" : "SIGINT"; }

}  // namespace alexnet::cli
