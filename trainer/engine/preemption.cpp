#include "trainer/engine/preemption.h"

#include <csignal>

namespace forge::train {
namespace {
volatile std::sig_atomic_t g_signal = 0;

extern "C" void onPreemptionSignal(int sig) { g_signal = sig; }
}  // namespace

void installPreemptionHandlers() {
  struct sigaction sa {};
  sa.sa_handler = onPreemptionSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGUSR1, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

bool preemptionRequested() { return g_signal != 0; }

int preemptionSignal() { return g_signal; }

}  // namespace forge::train
