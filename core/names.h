// Environment variables forge reads, named in one place.
#pragma once

namespace forge::env {

// Launchers' variables: who this process is before MPI is up.
inline constexpr const char* kOmpiRank = "OMPI_COMM_WORLD_RANK";
inline constexpr const char* kOmpiSize = "OMPI_COMM_WORLD_SIZE";
inline constexpr const char* kPmixRank = "PMIX_RANK";
inline constexpr const char* kOmpiLocalRank = "OMPI_COMM_WORLD_LOCAL_RANK";
inline constexpr const char* kSlurmProcId = "SLURM_PROCID";
inline constexpr const char* kSlurmLocalId = "SLURM_LOCALID";
inline constexpr const char* kSlurmNtasks = "SLURM_NTASKS";
inline constexpr const char* kSlurmJobId = "SLURM_JOB_ID";

// Whether rank 0's stdout reaches a terminal ("1") or a file or pipe ("0"): set by
// launch/mpirun.sh, since Open MPI hands ranks a pseudo-terminal either way. Unset: forge
// asks isatty(), except under mpirun, where it assumes a log file.
inline constexpr const char* kTerminal = "FORGE_TERMINAL";
// The terminal's width in columns, measured by launch/mpirun.sh for the progress bar.
inline constexpr const char* kColumns = "FORGE_COLUMNS";

// Test-only fault injection: the rank named by FORGE_FAULT_STALL_RANK stops responding
// (sleeps forever) at the global step FORGE_FAULT_STALL_STEP (default: the first).
inline constexpr const char* kFaultStallRank = "FORGE_FAULT_STALL_RANK";
inline constexpr const char* kFaultStallStep = "FORGE_FAULT_STALL_STEP";
// Test-only: rank 0 sends itself SIGUSR1 at global step FORGE_FAULT_SIGNAL_STEP, so a
// preemption lands at a known step (only one rank sees it: the others must agree).
inline constexpr const char* kFaultSignalStep = "FORGE_FAULT_SIGNAL_STEP";
// Test-only: the rank named by FORGE_FAULT_CRASH_RANK dies (SIGKILL, as the OOM killer
// would) at the global step FORGE_FAULT_CRASH_STEP (default: the first).
// Test-only: the rank named by FORGE_FAULT_FREEZE_RANK freezes (SIGSTOP) inside its first
// all-reduce at or after the global step FORGE_FAULT_FREEZE_STEP.
inline constexpr const char* kFaultFreezeRank = "FORGE_FAULT_FREEZE_RANK";
inline constexpr const char* kFaultFreezeStep = "FORGE_FAULT_FREEZE_STEP";
// Test-only: the rank named by FORGE_FAULT_HANG_RANK sleeps for FORGE_FAULT_HANG_SECONDS
// (default: for good) in the phase FORGE_FAULT_HANG_PHASE (forward | evaluation) at the
// global step FORGE_FAULT_HANG_STEP (default: the first time it is in that phase).
inline constexpr const char* kFaultHangRank = "FORGE_FAULT_HANG_RANK";
inline constexpr const char* kFaultHangPhase = "FORGE_FAULT_HANG_PHASE";
inline constexpr const char* kFaultHangStep = "FORGE_FAULT_HANG_STEP";
inline constexpr const char* kFaultHangSeconds = "FORGE_FAULT_HANG_SECONDS";
// Test-only: the rank named by FORGE_FAULT_PERTURB_RANK adds 1e-3 to its first parameter
// after the optimizer step of global step FORGE_FAULT_PERTURB_STEP (its replica drifts).
inline constexpr const char* kFaultPerturbRank = "FORGE_FAULT_PERTURB_RANK";
inline constexpr const char* kFaultPerturbStep = "FORGE_FAULT_PERTURB_STEP";
// Test-only: the rank named by FORGE_FAULT_SLOW_RANK sleeps FORGE_FAULT_SLOW_MS (default
// 20) milliseconds in every forward (a slow node).
inline constexpr const char* kFaultSlowRank = "FORGE_FAULT_SLOW_RANK";
inline constexpr const char* kFaultSlowMs = "FORGE_FAULT_SLOW_MS";
// Test-only: the rank named by FORGE_FAULT_INF_GRAD_RANK multiplies the loss it backward()s
// by Inf at the global steps listed in FORGE_FAULT_INF_GRAD_STEPS ("5" or "5,6,7"): its
// gradients, and so the all-reduced ones of every rank, are not finite; its reported loss
// stays finite (an fp16 overflow in backward looks so).
inline constexpr const char* kFaultInfGradRank = "FORGE_FAULT_INF_GRAD_RANK";
inline constexpr const char* kFaultInfGradSteps = "FORGE_FAULT_INF_GRAD_STEPS";
inline constexpr const char* kFaultCrashRank = "FORGE_FAULT_CRASH_RANK";
inline constexpr const char* kFaultCrashStep = "FORGE_FAULT_CRASH_STEP";
// Test-only: before the global step FORGE_FAULT_PAUSE_STEP every rank writes the file
// FORGE_FAULT_PAUSE_FILE.rank<R> and waits (at most 10 minutes) until FORGE_FAULT_PAUSE_FILE
// exists, so that a test can change a data file at a known point of a run
// (trainer/engine/data_watch.h).
inline constexpr const char* kFaultPauseStep = "FORGE_FAULT_PAUSE_STEP";
inline constexpr const char* kFaultPauseFile = "FORGE_FAULT_PAUSE_FILE";
// Test-only: each rank appends to FORGE_SAMPLE_LOG.rank<R> one line per micro-batch it
// trains on, "epoch global_step rank sample sample ...", so that a test can prove which
// samples each step used across interruptions and world sizes (trainer/engine/sample_log.h).
inline constexpr const char* kSampleLog = "FORGE_SAMPLE_LOG";

// Test-only: the forge version this rank reports to the others when they check that every
// rank runs the same build (distributed/agreement.h), as a node with another install would.
inline constexpr const char* kFaultVersion = "FORGE_FAULT_VERSION";

// Set to 1, the ranks of a node may share its GPUs (local rank % visible GPUs) instead of
// the node's rank count above its GPU count being an error. For tests of several NCCL ranks
// on one GPU, where each rank must also pose as its own host for NCCL (a distinct
// NCCL_HOSTID, socket transport, the device seen by its UUID: scripts/gpu-device-run.sh).
// Slower than one GPU per rank: the ranks' kernels take turns on the one device.
inline constexpr const char* kShareGpus = "FORGE_SHARE_GPUS";

// Other libraries' variables that run.deterministic sets when unset
// (distributed/determinism.h): cuBLAS's workspace, NCCL's algorithm and protocol.
inline constexpr const char* kCublasWorkspaceConfig = "CUBLAS_WORKSPACE_CONFIG";
inline constexpr const char* kNcclAlgo = "NCCL_ALGO";
inline constexpr const char* kNcclProto = "NCCL_PROTO";

// Tuning: set (to anything), the loader copies rows out of HDF5 files with read() instead
// of mapping them from the page cache (for comparisons; both give the same bytes).
inline constexpr const char* kNoMappedReads = "FORGE_NO_MAPPED_READS";

// Tuning: the largest single MPI_Allreduce the mpi backend issues (bytes; default 4 MiB).
inline constexpr const char* kMpiChunkBytes = "FORGE_MPI_CHUNK_BYTES";

}  // namespace forge::env
