// Who this process is: rank and world size from MPI, local rank and ranks per node from a
// shared-memory split of MPI_COMM_WORLD, plus what the launcher (mpirun / Slurm) says.
#pragma once

#include <string>

namespace forge::dist {

struct WorldInfo {
  int rank = 0;
  int size = 1;
  int localRank = 0;   // rank among the processes on this node
  int localSize = 1;   // processes on this node
  int nodes = 1;
  int sharingMask = 1;   // processes on this node with this one's CPU affinity mask
  std::string launcher;  // "mpirun", "slurm" or "none"
};

// Collective over MPI_COMM_WORLD: every rank must call it, once, after MpiRuntime.
WorldInfo discoverWorld();

// The rank the launcher assigned (Open MPI, PMIx, Slurm), read from the environment before
// MPI is up, so that errors raised that early still name their rank. 0 when not launched.
int rankFromEnvironment();

// Cores this node offers to the whole job (not only this process's affinity mask).
int coresOnNode();

}  // namespace forge::dist
