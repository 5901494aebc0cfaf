// Everything a multi-rank command needs before it can compute: MPI started, who this process
// is (rank, node, launcher), where it computes (device choice), the communicator training
// uses (backend choice) and the intra-op threads. The MPI communicator always exists (control
// values, and the bootstrap of NCCL); `comm()` is NCCL on GPUs, MPI on CPUs.
#pragma once

#include <memory>
#include <exception>
#include <string>

#include "core/error.h"

#include "distributed/communicator.h"
#include "distributed/launch_check.h"
#include "distributed/mpi/mpi_communicator.h"
#include "distributed/mpi_runtime.h"
#include "distributed/watchdog.h"
#include "distributed/world.h"

namespace forge::dist {

struct ProcessGroupOptions {
  std::string device = "auto";   // auto | cpu | cuda (run.device)
  std::string backend = "auto";  // auto | mpi | nccl (distributed.backend)
  double timeoutS = 300;         // every collective's deadline (distributed.timeout_s)
  bool watchdog = true;          // a hang ends with a verdict naming the rank (distributed.watchdog)
  int threads = 0;               // intra-op threads per rank; 0 = cores on the node / its ranks
  bool needsCuda = false;        // the run cannot compute on the CPU (run.precision bf16)
  std::string needsCudaWhy;      // the setting that needs it ("run.precision bf16"), for the error
  std::string needsCudaFix;      // what to change instead ("use precision: fp32")
  std::string command = "train"; // what every rank runs, compared across ranks first thing
  bool deterministic = false;    // pin cuBLAS, cuDNN and NCCL first (run.deterministic; distributed/determinism.h)
};

// Runs `setup` on every rank, then agrees: if any rank failed, every rank stops with exit
// code 2 (the failing ranks with their own message) instead of leaving peers in a collective.
// Collective.
template <typename Setup>
void agreeOnSetup(Communicator& comm, Setup setup) {
  std::exception_ptr failure;
  try {
    setup();
  } catch (...) {
    failure = std::current_exception();
  }
  bool anyFailed = comm.anyRank(failure != nullptr);
  if (failure) std::rethrow_exception(failure);
  if (anyFailed) throw ConfigError("stopping: another rank failed during setup (its message says why)");
}

class ProcessGroup {
 public:
  // Collective over MPI_COMM_WORLD: starts MPI, checks that every rank runs the same build,
  // MPI and command (dist::buildFacts; ConfigError naming the ranks), applies
  // run.deterministic, chooses and binds the device, creates the
  // backend's communicator, sets the threads, and logs (rank 0) the world and every rank's
  // device. A choice that cannot work (nccl without a GPU, ...) is a ConfigError on every rank.
  ProcessGroup(int* argc, char*** argv, const ProcessGroupOptions& options);
  ~ProcessGroup();

  const WorldInfo& world() const { return world_; }
  Communicator& comm() { return *comm_; }
  MpiCommunicator& mpi() { return *mpiComm_; }
  Watchdog& watchdog() { return *watchdog_; }
  c10::Device device() const { return device_; }
  const std::string& backend() const { return backend_; }
  // This rank's intra-op threads and where the number came from.
  const ThreadChoice& threads() const { return threads_; }

 private:
  void logDeviceMap(const std::string& why);

  MpiRuntime runtime_;
  WorldInfo world_;
  std::unique_ptr<MpiCommunicator> mpiComm_;
  std::unique_ptr<Communicator> ncclComm_;
  Communicator* comm_ = nullptr;
  std::unique_ptr<Watchdog> watchdog_;  // declared last: stops before the communicators go
  c10::Device device_{c10::kCPU};
  std::string backend_;
  ThreadChoice threads_;
};

}  // namespace forge::dist
