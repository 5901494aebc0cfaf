// Whether every rank runs the same thing: forge's version, LibTorch's, the config it read.
// Nodes of a cluster that see different installs or different config files would
// otherwise train different models under one job, or fail far from the cause.
#pragma once

#include <string>
#include <vector>

#include "distributed/communicator.h"

namespace forge::dist {

struct Fact {
  std::string name;   // "forge version", "config (hash of the resolved YAML)"
  std::string value;  // compared as text; at most 96 bytes are compared
};

// Collective over `comm` (CPU tensors: the MPI communicator): every rank must call it with
// the same fact names in the same order. Blocks until every rank's facts are gathered.
// Throws ConfigError on every rank when a fact differs between ranks, naming each value and
// the ranks (and their hosts) that hold it.
void checkRanksAgree(Communicator& comm, const std::vector<Fact>& facts);

}  // namespace forge::dist
