// Whether every rank runs the same thing: the same forge build, LibTorch and MPI library,
// the same command, the config it read. Nodes of a cluster that see different installs or
// different config files would otherwise train different models under one job, or issue
// different collectives and hang far from the cause.
#pragma once

#include <string>
#include <vector>

#include "distributed/communicator.h"

namespace forge::dist {

struct Fact {
  std::string name;    // "forge's build", "the config (a hash of the resolved YAML)"
  std::string value;   // compared as text; at most 96 bytes are compared
  std::string detail;  // optional: the full text behind a hash, for saying where two ranks differ
};

// Collective over `comm` (CPU tensors: the MPI communicator): every rank must call it with
// the same number of facts. Blocks until every rank's facts are gathered. Throws
// ConfigError on every rank when a fact differs between ranks, naming each value and the
// ranks (and their hosts) that hold it, and for a fact with a detail the first line where a
// rank's differs from rank 0's.
void checkRanksAgree(Communicator& comm, const std::vector<Fact>& facts);

// What this process is, for checkRanksAgree as the first thing ranks exchange: forge's
// version and build id (the executable's GNU build id: equal for copies of one binary),
// LibTorch's version, the MPI library, and the command (`train`, `doctor`, ...). A fixed
// number of facts, so that every future build can compare with this one.
std::vector<Fact> buildFacts(const std::string& command);

// This executable's GNU build id as hex ("" when it has none).
std::string executableBuildId();

}  // namespace forge::dist
