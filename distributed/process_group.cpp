#include "distributed/process_group.h"

#include <ATen/Parallel.h>
#include <unistd.h>

#include <cstring>

#include "core/log.h"
#include "core/strings.h"
#include "distributed/agreement.h"
#include "distributed/determinism.h"
#include "distributed/device.h"
#include "distributed/launch_check.h"
#include "distributed/rank_status.h"
#ifdef FORGE_WITH_NCCL
#include "distributed/nccl/nccl_communicator.h"
#endif

namespace forge::dist {
namespace {

// What the launcher told this process, as the launcher spells it (rank 0's view).
std::string launcherDetail() {
  std::string out;
  for (const char* name : {"SLURM_JOB_ID", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS", "SLURM_RESTART_COUNT",
                           "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_SIZE"}) {
    if (const char* v = std::getenv(name)) out += concat(out.empty() ? " (" : ", ", name, "=", v);
  }
  return out.empty() ? out : out + ")";
}

}  // namespace

ProcessGroup::ProcessGroup(int* argc, char*** argv, const ProcessGroupOptions& o) : runtime_(argc, argv) {
  // Before the device is bound and NCCL reads its environment.
  const std::vector<std::string> pinned = applyDeterminism(o.deterministic);
  auto timeout = std::chrono::duration<double>(o.timeoutS);
  mpiComm_ = std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, timeout);
  // First, before any collective whose form could change between builds: the same build,
  // MPI and command on every rank (a mixed install would otherwise hang or misread).
  checkRanksAgree(*mpiComm_, buildFacts(o.command));
  world_ = discoverWorld();
  log::setRank(world_.rank, world_.size);
  checkLaunch(world_);
  comm_ = mpiComm_.get();
  std::string why;
  const bool boundPerRank = o.device != "cpu" && gpusBoundPerRank(*mpiComm_);
  agreeOnSetup(*mpiComm_, [&] {
    DeviceChoice choice = selectDevice(o.device, world_, boundPerRank);
    device_ = choice.device;
    why = choice.why;
    backend_ = o.backend;
    if (backend_ == "auto") backend_ = device_.is_cuda() && builtWithNccl() ? "nccl" : "mpi";
    if (backend_ == "nccl" && !builtWithNccl()) {
      throw ConfigError("distributed.backend is nccl, but this forge was built without NCCL (configure with "
                        "-DFORGE_WITH_NCCL=ON against a CUDA LibTorch); use backend: mpi on CPUs");
    }
    if (backend_ == "nccl" && !device_.is_cuda()) {
      throw ConfigError(concat("distributed.backend is nccl, which works on CUDA tensors, but this rank computes "
                               "on the CPU (", why.empty() ? "run.device: cpu" : why, "): use backend: mpi or auto"));
    }
    if (backend_ == "mpi" && device_.is_cuda()) {
      throw ConfigError("distributed.backend is mpi, which works on CPU tensors, but run.device is cuda: use "
                        "backend: nccl (or auto)");
    }
    if (o.needsCuda && !device_.is_cuda()) {
      throw ConfigError(concat(o.needsCudaWhy, " is GPU-only, but this rank computes on the CPU (",
                               why.empty() ? "run.device: cpu" : why, "): ", o.needsCudaFix));
    }
  });
#ifdef FORGE_WITH_NCCL
  if (backend_ == "nccl") {
    agreeOnSetup(*mpiComm_, [&] { ncclComm_ = std::make_unique<NcclCommunicator>(*mpiComm_, device_, timeout); });
    comm_ = ncclComm_.get();
  }
#endif
  setStatusIdentity(world_.rank);
  comm_->reportTo(&rankStatus());
  watchdog_ = std::make_unique<Watchdog>(MPI_COMM_WORLD, o.watchdog ? o.timeoutS : 2 * kNoDeadlineSeconds);
  threads_ = chooseThreads(o.threads, world_);
  const ThreadChoice& threads = threads_;
  const int n = threads.threads;
  at::set_num_threads(n);
  if (threads.capped) log::warn("dist", "intra-op threads: ", threads.source);
  if (threads.oversubscribed) {
    log::warn("dist", n, " intra-op threads on each of ", world_.sharingMask, " ranks that share ", threads.allowedCores,
              " cores (", threads.source, "): the cores are oversubscribed; set OMP_NUM_THREADS or run.threads lower, "
              "or bind each rank to its own cores");
  }
  std::string backendText = backend_;
#ifdef FORGE_WITH_NCCL
  if (backend_ == "nccl") backendText += " " + NcclCommunicator::ncclVersion() + " (control values over mpi)";
#endif
  log::info("dist", world_.size, " rank(s) on ", world_.nodes, " node(s), ", world_.localSize, " per node, backend ",
            backendText, ", ", n, " intra-op thread(s) per rank (", threads.source, "), launcher ", world_.launcher, launcherDetail());
  logDeviceMap(why);
  if (!pinned.empty() && world_.rank == 0) {
    log::info("dist", "run.deterministic: ", join(pinned));
  }
}

ProcessGroup::~ProcessGroup() = default;

// Once, from rank 0: every rank's node, local rank and device.
void ProcessGroup::logDeviceMap(const std::string& why) {
  constexpr int64_t kWidth = 96;
  char host[64] = {0};
  gethostname(host, sizeof host - 1);
  std::string mine = concat(host, " local ", world_.localRank, " -> ", describeDevice(device_));
  at::Tensor in = at::zeros({kWidth}, at::kByte);
  std::memcpy(in.data_ptr(), mine.data(), std::min<size_t>(mine.size(), kWidth - 1));
  at::Tensor all = at::zeros({kWidth * world_.size}, at::kByte);
  mpiComm_->allGather(in, all);
  if (world_.rank != 0) return;
  std::string map;
  for (int r = 0; r < world_.size; ++r) {
    map += concat(r ? "; " : "", "rank ", r, ": ", std::string(static_cast<const char*>(all.data_ptr()) + r * kWidth));
  }
  log::info("dist", "devices: ", map, why.empty() ? "" : concat(" (run.device auto chose the CPU: ", why, ")"));
}

}  // namespace forge::dist
