// The `forge` executable. Errors that reach here are reported once, with the rank, and
// without a stack dump; the exit code says what kind of failure it was.
#include <c10/util/Exception.h>

#include <exception>

#include "core/error.h"
#include "core/log.h"
#include "distributed/world.h"
#include "trainer/cli.h"

int main(int argc, char** argv) {
  forge::log::setRank(forge::dist::rankFromEnvironment(), 1);
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
