#include "distributed/mpi_runtime.h"

#include <mpi.h>

#include <cstdio>
#include <cstdlib>

#include "distributed/launch_check.h"
#include "distributed/mpi/mpi_check.h"

namespace forge::dist {

MpiRuntime::MpiRuntime(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    // Before MPI_Init: srun without PMI makes Open MPI abort inside it with its own advice.
    checkLaunchBeforeMpi();
    // The gradient engine talks to MPI from a communication thread while the main thread may
    // issue collectives too.
    FORGE_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &threadLevel_));
    owns_ = true;
  } else {
    MPI_Query_thread(&threadLevel_);
  }
  // Errors come back as codes that FORGE_MPI_CHECK turns into messages, not as MPI's abort.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
}

MpiRuntime::~MpiRuntime() {
  if (!owns_) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void MpiRuntime::abortJob(int exitCode) noexcept {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  std::fflush(stdout);
  std::fflush(stderr);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, exitCode);
  std::_Exit(exitCode);
}

}  // namespace forge::dist
