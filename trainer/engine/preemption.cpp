#include "trainer/engine/preemption.h"

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>

namespace forge::train {
namespace {
volatile std::sig_atomic_t g_signal = 0;

void say(const char* text) {
  ssize_t ignored = ::write(STDERR_FILENO, text, std::strlen(text));
  (void)ignored;
}

// Async-signal-safe: a flag, and for Ctrl-C a line that says what happens next. A second
// Ctrl-C is "quit now": the process ends at once with the shell's code for SIGINT, 130.
// The count is taken before anything is said: two Ctrl-Cs handled by two threads at once
// must not both count as the first.
std::atomic<int> g_interrupts{0};
static_assert(std::atomic<int>::is_always_lock_free, "the handler needs a lock-free counter");

extern "C" void onPreemptionSignal(int sig) {
  if (sig == SIGINT) {
    if (g_interrupts.fetch_add(1) > 0) {
      say("\nforge: second interrupt: quitting now without saving\n");
      ::_exit(128 + SIGINT);
    }
    g_signal = sig;
    say("\nforge: interrupt: saving a checkpoint at the next step boundary, then exiting (Ctrl-C again quits "
        "at once without saving)\n");
    return;
  }
  g_signal = sig;
}
}  // namespace

void installPreemptionHandlers() {
  struct sigaction sa {};
  sa.sa_handler = onPreemptionSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGUSR1, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}

bool preemptionRequested() { return g_signal != 0; }

int preemptionSignal() { return g_signal; }

}  // namespace forge::train
