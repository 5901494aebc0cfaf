// Launch mistakes caught before any work: a process that MPI says is alone while its
// launcher says it is one of several (torchrun, srun without PMI), and how many intra-op
// threads a rank may use on the cores its node gave it.
#pragma once

#include <string>

#include "distributed/world.h"

namespace forge::dist {

// Every rank, right after MPI is up (no collective). Throws ConfigError, saying how to
// launch instead, when MPI reports a world of 1 but the environment says the job has more
// processes: WORLD_SIZE/RANK from torchrun or a similar launcher, PMI_SIZE from an MPICH or
// Intel MPI mpiexec, OMPI_COMM_WORLD_SIZE from another Open MPI's mpirun, PMIX_SIZE, or
// SLURM_STEP_NUM_TASKS from srun without PMI (N one-rank jobs that would each train alone
// and overwrite each other's run dir).
void checkLaunch(const WorldInfo& world);

// Every process, before MPI_Init (no MPI call): a ConfigError when srun started several
// tasks (SLURM_STEP_NUM_TASKS > 1) without giving MPI a process-management interface (no
// PMIX_RANK, PMI_RANK or OMPI_COMM_WORLD_RANK), which Open MPI would otherwise turn into
// an abort inside MPI_Init.
void checkLaunchBeforeMpi();

// Intra-op threads for one rank and where the number came from, in this order:
//   1. run.threads (`configured` > 0);
//   2. OMP_NUM_THREADS (a count, or the first entry of OpenMP's per-level list; another
//      value is ignored with a warning);
//   3. SLURM_CPUS_PER_TASK;
//   4. the cores in the rank's CPU affinity mask divided by the ranks on the node that have
//      the same mask (a rank bound to its own cores uses them all; unbound ranks split the
//      node).
// Never more than the cores in the affinity mask (a larger request is capped and `capped`
// says so).
struct ThreadChoice {
  int threads = 1;
  std::string source;   // "run.threads", "OMP_NUM_THREADS", ... with the figures used
  bool capped = false;  // the request exceeded the cores the rank may use
  int allowedCores = 1; // cores in the affinity mask
  bool oversubscribed = false;  // 2+ threads, and threads x ranks sharing the mask > its cores
};
ThreadChoice chooseThreads(int configured, const WorldInfo& world);

// Cores in this process's CPU affinity mask (sched_getaffinity), at least 1.
int coresAllowed();

}  // namespace forge::dist
