// The `forge` executable. Errors that reach here are reported once, with the rank, and
// without a stack dump; the exit code says what kind of failure it was.
#include <c10/util/Exception.h>

#include <cstdlib>
#include <exception>

#include "core/error.h"
#include "core/log.h"
#include "core/names.h"
#include "distributed/world.h"
#include "trainer/cli.h"

int main(int argc, char** argv) {
  // Under a launcher, messages name their rank from the first one (every rank reports a
  // config error); a lone command (`forge plot`, `forge ckpt inspect`) has no rank to name.
  // Commands that start MPI name it once they know the world.
  for (const char* launcherVariable : {forge::env::kOmpiRank, forge::env::kPmixRank, forge::env::kSlurmProcId}) {
    if (std::getenv(launcherVariable) != nullptr) {
      forge::log::setRank(forge::dist::rankFromEnvironment(), 1);
      break;
    }
  }
  try {
    return forge::train::runCli(argc, argv);
  } catch (const forge::Error& e) {
    forge::log::error("", e.what());
    return e.exitCode();
  } catch (const c10::Error& e) {
    std::string what = e.what_without_backtrace();
    forge::log::error("", "torch error: ", what.substr(0, what.find('\n')));
    return 1;
  } catch (const std::exception& e) {
    forge::log::error("", "error: ", e.what());
    return 1;
  }
}
