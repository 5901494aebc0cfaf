// forge's commands, one file each (cmd_<name>.cpp), and what they share: the config from
// the command line, the process group it asks for, and the guard that ends the whole job
// when one rank fails after setup.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "distributed/agreement.h"
#include "distributed/process_group.h"
#include "trainer/app/args.h"
#include "trainer/config/config.h"

namespace forge::train {

struct Command {
  std::string name;
  std::string synopsis;  // the lines `forge --help` shows for it
  std::function<int(int argc, char** argv)> run;
};

// The commands, in the order `forge --help` lists them.
const std::vector<Command>& commands();

int cmdData(int argc, char** argv);
int cmdTrain(int argc, char** argv);
int cmdEval(int argc, char** argv);
int cmdCkpt(int argc, char** argv);
int cmdPlot(int argc, char** argv);
int cmdDoctor(int argc, char** argv);
int cmdModel(int argc, char** argv);
int cmdConfig(int argc, char** argv);

// The one CONFIG.yaml positional argument with its --set overrides.
Config configFrom(const Args& a, const char* help, const char* cmd);

// MPI, device, backend and threads as the config asks.
// `command` ("train", "eval", "doctor") is compared across ranks before anything else.
std::unique_ptr<dist::ProcessGroup> processGroupFor(int* argc, char*** argv, const Config& cfg, const char* command);

// The config every rank must have read alike (dist::checkRanksAgree), "(none)" without one:
// always one fact, so that ranks with and without a config compare.
std::vector<dist::Fact> configFacts(const Config* cfg);

// Collective: every rank holds the same config (else each stops with exit 2, naming the
// difference); then what must change at the same point of every rank's program does:
// distributed.wait (a rank's collectives would not match its peers' otherwise).
void agreeOnConfig(dist::ProcessGroup& pg, const Config* cfg);

// Runs `body` (after setup, when errors may hit one rank only): an error ends every rank of
// the job (MPI abort) with its exit code instead of leaving the others in a collective; a
// preemption is a clean stop with exit 75.
int runGuarded(dist::ProcessGroup& pg, const std::function<int()>& body);

}  // namespace forge::train
