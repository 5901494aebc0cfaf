#include "distributed/launch_check.h"

#include <sched.h>

#include <cstdlib>

#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"

namespace forge::dist {
namespace {

// A positive integer from the environment, or 0 when unset or not one.
long positiveEnv(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return 0;
  char* end = nullptr;
  long n = std::strtol(v, &end, 10);
  return (end != nullptr && *end == '\0' && n > 0) ? n : 0;
}

const char* kHowToLaunch =
    "forge's ranks are MPI processes: start them with `mpirun -np N forge train ...` (launch/mpirun.sh), "
    "with `srun --mpi=pmix forge train ...` inside a Slurm allocation, or with `sbatch launch/forge.sbatch`";

// OMP_NUM_THREADS as OpenMP reads it: a count, or a list whose first entry is the outer
// level's. 0 when unset; a value that is not one is said and ignored.
long ompThreads() {
  const char* v = std::getenv("OMP_NUM_THREADS");
  if (v == nullptr || *v == '\0') return 0;
  char* end = nullptr;
  long n = std::strtol(v, &end, 10);
  if (end != v && n > 0 && (*end == '\0' || *end == ',')) return n;
  log::warn("dist", "OMP_NUM_THREADS='", v, "' is not a positive thread count: ignored");
  return 0;
}

}  // namespace

[[noreturn]] void refuseSrunWithoutPmi(long tasks) {
  const char* procid = std::getenv("SLURM_PROCID");
  throw ConfigError(concat("srun started ", tasks, " tasks (this is task ", procid ? procid : "?",
                           "), but gave MPI no process-management interface (PMI), so each task would be a job of "
                           "its own. Use `srun --mpi=pmix` (see `srun --mpi=list`) or mpirun inside the allocation; ",
                           kHowToLaunch));
}

void checkLaunchBeforeMpi() {
  const long tasks = positiveEnv("SLURM_STEP_NUM_TASKS");
  if (tasks <= 1) return;
  for (const char* pmi : {"PMIX_RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK"}) {
    if (std::getenv(pmi) != nullptr) return;
  }
  refuseSrunWithoutPmi(tasks);
}

void checkLaunch(const WorldInfo& world) {
  if (world.size != 1) return;
  if (long n = positiveEnv("WORLD_SIZE"); n > 1) {
    const char* rank = std::getenv("RANK");
    throw ConfigError(concat("this process was started as rank ", rank ? rank : "?", " of WORLD_SIZE=", n,
                             " (torchrun or a launcher like it), but MPI sees a world of 1 process: every process "
                             "would train alone. ",
                             kHowToLaunch, "; unset WORLD_SIZE to train on 1 rank"));
  }
  // Another MPI's launcher: its processes start, but this Open MPI cannot join them.
  const struct {
    const char* var;
    const char* who;
  } others[] = {{"PMI_SIZE", "an MPICH or Intel MPI mpiexec (or srun --mpi=pmi2)"},
                {"OMPI_COMM_WORLD_SIZE", "an mpirun of another Open MPI installation"},
                {"PMIX_SIZE", "a PMIx launcher this Open MPI did not join"}};
  for (const auto& o : others) {
    if (long n = positiveEnv(o.var); n > 1) {
      throw ConfigError(concat("this process was started as one of ", n, " (", o.var, "=", n, ", from ", o.who,
                               "), but MPI sees a world of 1 process: forge's MPI is not the launcher's, so every "
                               "process would train alone. Use the mpirun of the Open MPI forge was built with; ",
                               kHowToLaunch));
    }
  }
  // A PMI that MPI did not use (or a launcher that copied SLURM_* into each process).
  if (long tasks = positiveEnv("SLURM_STEP_NUM_TASKS"); tasks > 1) refuseSrunWithoutPmi(tasks);
}

int coresAllowed() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return coresOnNode();
  return std::max(1, CPU_COUNT(&set));
}

ThreadChoice chooseThreads(int configured, const WorldInfo& world) {
  ThreadChoice c;
  c.allowedCores = coresAllowed();
  const int node = coresOnNode();
  long requested = 0;
  if (configured > 0) {
    requested = configured;
    c.source = "run.threads";
  } else if (long omp = ompThreads(); omp > 0) {
    requested = omp;
    c.source = "OMP_NUM_THREADS";
  } else if (long slurm = positiveEnv("SLURM_CPUS_PER_TASK"); slurm > 0) {
    requested = slurm;
    c.source = "SLURM_CPUS_PER_TASK";
  } else {
    // Ranks of this node with the same mask share its cores (unbound ranks: all of them).
    const int sharing = std::max(1, world.sharingMask);
    requested = std::max(1, c.allowedCores / sharing);
    c.source = concat("CPU affinity: ", c.allowedCores, " of ", node, " cores on the node, shared by ", sharing,
                      sharing == 1 ? " rank" : " ranks");
  }
  c.capped = requested > c.allowedCores;
  c.threads = static_cast<int>(std::min<long>(requested, c.allowedCores));
  if (c.capped) c.source += concat(" asked for ", requested, ", capped to the ", c.allowedCores, " allowed cores");
  const int sharing = std::max(1, world.sharingMask);
  c.oversubscribed = c.threads > 1 && static_cast<long>(c.threads) * sharing > c.allowedCores;
  return c;
}

}  // namespace forge::dist
