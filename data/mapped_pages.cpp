#include "data/mapped_pages.h"

#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <unistd.h>

#include <mutex>

namespace forge::data {
namespace {

struct sigaction gPreviousSigbus {};
// Where a SIGBUS on this thread jumps to: set only while readMappedPages runs fn.
thread_local sigjmp_buf* tJump = nullptr;

void onSigbus(int, siginfo_t* info, void*) {
  const bool mappedPageGone = info == nullptr || info->si_code == BUS_ADRERR;
  if (mappedPageGone && tJump != nullptr) {
    sigjmp_buf* jump = tJump;
    tJump = nullptr;
    // The jump skips the return from this handler, which would have unblocked SIGBUS; a
    // later one on this thread must not find it blocked (the kernel would then kill).
    sigset_t bus;
    sigemptyset(&bus);
    sigaddset(&bus, SIGBUS);
    pthread_sigmask(SIG_UNBLOCK, &bus, nullptr);
    siglongjmp(*jump, 1);
  }
  static const char kMessage[] =
      "\n[forge] SIGBUS: a memory-mapped page could not be read. If a data file was rewritten or cut short "
      "while this run streamed it, that is the cause: data files must not change during a run (write new "
      "data to a new file). FORGE_NO_MAPPED_READS=1 makes forge copy rows instead of mapping them.\n";
  if (mappedPageGone) {
    ssize_t ignored = ::write(STDERR_FILENO, kMessage, sizeof kMessage - 1);
    (void)ignored;
  }
  ::sigaction(SIGBUS, &gPreviousSigbus, nullptr);
}

}  // namespace

void installMappedPagesHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = onSigbus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGBUS, &sa, &gPreviousSigbus);
  });
}

bool readMappedPages(void (*fn)(void*), void* context) {
  // Signal mask not saved (0): saving it is a system call per batch; the handler unblocks
  // SIGBUS itself before jumping.
  sigjmp_buf jump;
  if (sigsetjmp(jump, 0) != 0) return false;  // tJump was cleared by the handler
  tJump = &jump;
  try {
    fn(context);
  } catch (...) {
    tJump = nullptr;
    throw;
  }
  tJump = nullptr;
  return true;
}

}  // namespace forge::data
