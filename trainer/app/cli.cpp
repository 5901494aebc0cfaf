#include "trainer/app/cli.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <exception>
#include <iostream>

#include "core/error.h"
#include "distributed/agreement.h"
#include "core/log.h"
#include "core/names.h"
#include "core/strings.h"
#include "distributed/world.h"
#include "trainer/app/commands.h"
#include "trainer/spec/registry.h"

namespace forge {
namespace {

std::string mainHelp() {
  std::string text =
      "forge: data-parallel training of PyTorch-style models from C++\n\nusage: forge <command> [options]\n\n"
      "commands:\n";
  for (const auto& c : train::commands()) text += "  " + c.synopsis + "\n";
  text +=
      "\n`forge <command> --help` describes a command's options.\n"
      "Exit codes: 0 done, 1 internal error, 2 bad config / data / usage, 3 communication\n"
      "failure or timeout, 4 checkpoint error, 5 training diverged (NaN / Inf loss or weights),\n"
      "75 preempted (SIGUSR1 / SIGTERM / Ctrl-C): saved, please requeue and resume with\n"
      "--resume auto; 130 a second Ctrl-C (quit without saving).\n";
  return text;
}

int dispatch(int argc, char** argv) {
  registry().check();  // a program's parts that could not be registered
  const std::string help = mainHelp();
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h" || std::string(argv[1]) == "help") {
    std::cout << help;
    return argc < 2 ? 2 : 0;
  }
  if (std::string(argv[1]) == "--version") {
    const std::string id = dist::executableBuildId();
    std::cout << "forge " << FORGE_VERSION << (id.empty() ? "" : " (build " + id.substr(0, 16) + ")") << "\n";
    return 0;
  }
  const std::string cmd = argv[1];
  std::vector<std::string> names;
  for (const auto& c : train::commands()) {
    if (c.name == cmd) return c.run(argc, argv);
    names.push_back(c.name);
  }
  std::string hint = nearest(cmd, names);
  train::usage(concat("unknown command '", cmd, "'", hint.empty() ? "" : concat(" (did you mean '", hint, "'?)")),
               help.c_str());
}

}  // namespace

int runMain(int argc, char** argv) {
  // Under a launcher, messages name their rank from the first one (every rank reports a
  // config error); a lone command (`forge plot`, `forge ckpt inspect`) has no rank to name.
  // Commands that start MPI name it once they know the world.
  for (const char* launcherVariable : {env::kOmpiRank, env::kPmixRank, env::kSlurmProcId}) {
    if (std::getenv(launcherVariable) != nullptr) {
      log::setRank(dist::rankFromEnvironment(), 1);
      break;
    }
  }
  try {
    return dispatch(argc, argv);
  } catch (const Error& e) {
    log::error("", e.what());
    return e.exitCode();
  } catch (const c10::Error& e) {
    std::string what = e.what_without_backtrace();
    log::error("", "torch error: ", what.substr(0, what.find('\n')));
    return 1;
  } catch (const std::exception& e) {
    log::error("", "error: ", e.what());
    return 1;
  }
}

}  // namespace forge
