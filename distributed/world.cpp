#include "distributed/world.h"

#include <mpi.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include <cstdlib>
#include <thread>

#include "core/hash.h"
#include "core/names.h"
#include "distributed/mpi/mpi_check.h"

namespace forge::dist {
namespace {

// FNV-1a of this process's CPU affinity mask: equal on ranks bound to the same cores.
uint64_t affinityHash() {
  cpu_set_t set;
  CPU_ZERO(&set);
  sched_getaffinity(0, sizeof set, &set);
  return fnv1a(&set, sizeof set);
}

}  // namespace

WorldInfo discoverWorld() {
  WorldInfo w;
  FORGE_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &w.rank));
  FORGE_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &w.size));
  MPI_Comm local;
  FORGE_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, w.rank, MPI_INFO_NULL, &local));
  FORGE_MPI_CHECK(MPI_Comm_rank(local, &w.localRank));
  FORGE_MPI_CHECK(MPI_Comm_size(local, &w.localSize));
  // Who shares this rank's cores: the same affinity mask (all of them when unbound).
  uint64_t mine = affinityHash();
  std::vector<uint64_t> masks(static_cast<size_t>(w.localSize));
  FORGE_MPI_CHECK(MPI_Allgather(&mine, 1, MPI_UINT64_T, masks.data(), 1, MPI_UINT64_T, local));
  w.sharingMask = static_cast<int>(std::count(masks.begin(), masks.end(), mine));
  MPI_Comm_free(&local);
  int leader = w.localRank == 0 ? 1 : 0;
  FORGE_MPI_CHECK(MPI_Allreduce(&leader, &w.nodes, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
  if (std::getenv(env::kSlurmProcId) != nullptr && std::getenv(env::kOmpiRank) == nullptr) {
    w.launcher = "slurm";
  } else if (std::getenv(env::kOmpiRank) != nullptr) {
    w.launcher = std::getenv(env::kSlurmJobId) != nullptr ? "mpirun (in slurm job)" : "mpirun";
  } else {
    w.launcher = "none";
  }
  return w;
}

int rankFromEnvironment() {
  for (const char* name : {env::kOmpiRank, env::kPmixRank, env::kSlurmProcId}) {
    if (const char* v = std::getenv(name)) return std::atoi(v);
  }
  return 0;
}

int coresOnNode() {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  if (n <= 0) n = static_cast<long>(std::thread::hardware_concurrency());
  return n > 0 ? static_cast<int>(n) : 1;
}

}  // namespace forge::dist
