#include "distributed/nccl/nccl_communicator.h"

#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/strings.h"
#include "distributed/nccl/nccl_check.h"
#include "distributed/rank_status.h"

namespace forge::dist {
namespace nccl {

namespace {
// "…/distributed/nccl/nccl_communicator.cpp" -> "distributed/nccl/nccl_communicator.cpp":
// the place in the project, not on the machine that built it.
const char* projectPath(const char* file) {
  const char* p = std::strstr(file, "distributed/");
  return p != nullptr ? p : file;
}
// "ncclAllReduce(a, b, ...)" -> "ncclAllReduce"
std::string callName(const char* call) {
  std::string s(call);
  size_t paren = s.find('(');
  return paren == std::string::npos ? s : s.substr(0, paren);
}
}  // namespace

std::string errorMessage(int rank, const char* call, const char* file, int line, ncclResult_t result,
                         ncclComm_t comm) {
  std::string msg = concat("[rank ", rank, "] NCCL error in ", callName(call), " at ", projectPath(file), ":", line,
                           ": ", ncclGetErrorString(result));
  const char* last = ncclGetLastError(comm);
  if (last != nullptr && *last != '\0') msg += concat(" (", last, ")");
  return msg;
}

void throwNcclError(int rank, const char* call, const char* file, int line, ncclResult_t result, ncclComm_t comm) {
  throw CommError(errorMessage(rank, call, file, line, result, comm));
}

void throwCudaError(int rank, const char* call, const char* file, int line, cudaError_t result) {
  throw CommError(concat("[rank ", rank, "] CUDA error in ", callName(call), " at ", projectPath(file), ":", line,
                         ": ", cudaGetErrorString(result)));
}

}  // namespace nccl

namespace {

ncclDataType_t ncclType(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;
    case at::kHalf: return ncclFloat16;
    case at::kBFloat16: return ncclBfloat16;
    case at::kInt: return ncclInt32;
    case at::kLong: return ncclInt64;
    case at::kByte: return ncclUint8;
    case at::kChar: return ncclInt8;
    case at::kBool: return ncclUint8;  // sum of bools is meaningless; max/min work (logical or/and)
    default:
      throw CommError(concat("the nccl backend cannot reduce tensors of type ", t.scalar_type()));
  }
}

ncclRedOp_t ncclOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kAvg: return ncclAvg;  // NCCL divides on the GPU: no extra pass
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kMin: return ncclMin;
  }
  return ncclSum;
}

std::string seconds(Clock::duration d) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f", std::chrono::duration<double>(d).count());
  return text;
}

cudaEvent_t newEvent(int rank) {
  cudaEvent_t e = nullptr;
  FORGE_CUDA_CHECK(rank, cudaEventCreateWithFlags(&e, cudaEventDisableTiming));  // the cheap kind
  return e;
}

}  // namespace

// The communicator and what belongs to it. Shared with every Work in flight, so a Work can
// poll errors and abort even while the NcclCommunicator is being torn down.
struct NcclCommunicator::State {
  ncclComm_t comm = nullptr;
  int rank = 0;
  c10::Device device{c10::kCUDA, 0};
  std::optional<c10::cuda::CUDAStream> stream;
  std::mutex mutex;  // enqueueing (the main thread or autograd's device thread) and abort
  std::atomic<bool> aborted{false};
  std::atomic<bool> failed{false};
  // CUDA events are made once and reused, not created per collective: `ready` orders each
  // collective after its producer (recorded and waited on under `mutex`; a stream wait takes
  // the event's state at the time of the call, so re-recording it later is safe), and each
  // Work leases a completion event from `freeEvents` and gives it back when destroyed.
  cudaEvent_t ready = nullptr;
  std::mutex poolMutex;
  std::vector<cudaEvent_t> freeEvents;

  cudaEvent_t leaseEvent() {
    {
      std::lock_guard<std::mutex> lock(poolMutex);
      if (!freeEvents.empty()) {
        cudaEvent_t e = freeEvents.back();
        freeEvents.pop_back();
        return e;
      }
    }
    c10::cuda::CUDAGuard guard(device);
    return newEvent(rank);
  }
  void returnEvent(cudaEvent_t e) noexcept {
    std::lock_guard<std::mutex> lock(poolMutex);
    freeEvents.push_back(e);
  }
  // Last, once no Work holds the State any more (each holds it by shared_ptr).
  void destroyEvents() noexcept {
    for (cudaEvent_t e : freeEvents) cudaEventDestroy(e);
    freeEvents.clear();
    if (ready != nullptr) cudaEventDestroy(ready);
    ready = nullptr;
  }

  // Aborts once; `comm` is gone afterwards (ncclCommAbort frees it), so every later use
  // checks `aborted` first. The caller holds `mutex`.
  void abortLocked() noexcept {
    failed = true;
    if (comm != nullptr && !aborted) {
      ncclCommAbort(comm);  // frees the GPU from collectives that can never finish
      aborted = true;
      comm = nullptr;
    }
  }
  void abortComm() noexcept {
    std::lock_guard<std::mutex> lock(mutex);
    abortLocked();
  }

  [[noreturn]] void throwAborted(const char* op) const {
    throw CommError(concat("[rank ", rank, "] ", op, ": the NCCL communicator was aborted after an earlier error"));
  }

  // Polls a non-blocking communicator until the call it is working on has finished. The
  // caller holds `mutex`: nothing else may touch the communicator (or its stream) meanwhile,
  // as NCCL requires of a call that returned ncclInProgress.
  void settleLocked(const char* call, Clock::time_point deadline, const char* file, int line) {
    if (aborted) throwAborted(call);
    ncclResult_t state = ncclInProgress;
    while (true) {
      ncclResult_t rc = ncclCommGetAsyncError(comm, &state);
      if (rc != ncclSuccess) state = rc;
      if (state != ncclInProgress) break;
      if (Clock::now() > deadline) {
        abortLocked();
        throw CommTimeout(concat("[rank ", rank, "] timeout in ", call,
                                 " (a peer rank is dead, stuck, or never joined)"));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    if (state != ncclSuccess) {
      std::string msg = nccl::errorMessage(rank, call, file, line, state, comm);
      abortLocked();
      throw CommError(msg);
    }
  }

  // Checks a call's result; on failure the communicator is aborted (NCCL's rule after an
  // error) before the error is thrown. The caller holds `mutex`.
  void checkLocked(ncclResult_t r, const char* call, const char* file, int line) {
    if (r == ncclSuccess || r == ncclInProgress) return;
    std::string msg = nccl::errorMessage(rank, call, file, line, r, comm);
    abortLocked();
    throw CommError(msg);
  }

  ~State() {
    finalizeComm();
    destroyEvents();
  }

  void finalizeComm() noexcept {
    if (comm == nullptr) return;  // never made, or aborted (and freed) already
    if (failed) {
      abortComm();
      return;
    }
    // Healthy: finish outstanding work, then free. A peer that is gone could make finalize
    // wait forever, so it gets a bounded time before the communicator is aborted instead.
    try {
      c10::cuda::CUDAGuard guard(device);
      ncclResult_t state = ncclCommFinalize(comm);
      auto deadline = Clock::now() + std::chrono::seconds(10);
      while (state == ncclInProgress && Clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
        if (ncclCommGetAsyncError(comm, &state) != ncclSuccess) break;
      }
      if (state == ncclSuccess) {
        ncclCommDestroy(comm);
        return;
      }
    } catch (...) {
    }
    ncclCommAbort(comm);
  }
};

namespace {

class NcclWork final : public Work {
 public:
  NcclWork(std::shared_ptr<NcclCommunicator::State> state, const char* op, uint64_t seq, std::vector<at::Tensor> keep,
           RankStatus* status)
      : state_(std::move(state)), op_(op), seq_(seq), keep_(std::move(keep)), done_(state_->leaseEvent()),
        status_(status) {
    if (status_ != nullptr) status_->entered(collectiveKindOf(op_), seq_);
  }
  // The event goes back to the pool; a stream that waits on it keeps the state it had then.
  ~NcclWork() override { state_->returnEvent(done_); }
  NcclWork(const NcclWork&) = delete;
  NcclWork& operator=(const NcclWork&) = delete;

  cudaEvent_t doneEvent() const { return done_; }

  // The caller's current stream waits for the collective on the GPU; the host goes on. One
  // look at the communicator's errors now; a later wait() (with its deadline) or the
  // watchdog finds what happens after.
  void waitOnStream(Clock::time_point deadline) override {
    if (finished_) return;
    NcclCommunicator::State& s = *state_;
    if (completedOrChecked(deadline)) return;
    c10::cuda::CUDAGuard guard(s.device);
    cudaStream_t current = c10::cuda::getCurrentCUDAStream(s.device.index()).stream();
    cudaError_t r = cudaStreamWaitEvent(current, done_, 0);
    if (r != cudaSuccess) {
      s.abortComm();
      nccl::throwCudaError(s.rank, "cudaStreamWaitEvent", __FILE__, __LINE__, r);
    }
  }

  void wait(Clock::time_point deadline) override {
    if (finished_) return;
    for (int spins = 0; !completedOrChecked(deadline); ++spins) {
      // Spin briefly (a bucket often completes within microseconds), then sleep so that a long
      // wait does not take a core from the data loader.
      if (spins < 2000) {
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
  }

  bool test() override { return finished_ || (!state_->aborted && cudaEventQuery(done_) == cudaSuccess); }
  Clock::time_point startedAt() const override { return started_; }

 private:
  // One non-blocking look: true (and the Work finished) once the collective has completed;
  // throws on an abort, a CUDA or NCCL error, or the deadline passed.
  bool completedOrChecked(Clock::time_point deadline) {
    NcclCommunicator::State& s = *state_;
    // After an abort the kernels exit early and the event completes: that is no result.
    if (s.aborted) s.throwAborted(op_);
    cudaError_t q = cudaEventQuery(done_);
    if (q == cudaSuccess) {
      // The host has seen the collective finish, so whatever is queued after this point on
      // any stream runs after it.
      finished_ = true;
      keep_.clear();
      if (status_ != nullptr) status_->completed(collectiveKindOf(op_), seq_);
      return true;
    }
    if (q != cudaErrorNotReady) {
      s.abortComm();
      nccl::throwCudaError(s.rank, "cudaEventQuery", __FILE__, __LINE__, q);
    }
    {
      std::lock_guard<std::mutex> lock(s.mutex);
      if (s.aborted) s.throwAborted(op_);
      ncclResult_t async = ncclSuccess;
      ncclResult_t rc = ncclCommGetAsyncError(s.comm, &async);
      if (rc != ncclSuccess) async = rc;
      if (async != ncclSuccess && async != ncclInProgress) {
        std::string msg = nccl::errorMessage(s.rank, op_, __FILE__, __LINE__, async, s.comm);
        s.abortLocked();
        throw CommError(concat(msg, " (", op_, " #", seq_, ")"));
      }
    }
    if (Clock::now() > deadline) {
      s.abortComm();
      throw CommTimeout(concat("timeout in ", op_, " #", seq_, " after ", seconds(Clock::now() - started_),
                               " s (a peer rank is dead, stuck, or issued a different collective); "
                               "NCCL communicator aborted"));
    }
    return false;
  }

  std::shared_ptr<NcclCommunicator::State> state_;
  const char* op_;
  uint64_t seq_;
  std::vector<at::Tensor> keep_;
  cudaEvent_t done_;
  Clock::time_point started_ = Clock::now();
  bool finished_ = false;
  RankStatus* status_;
};

void checkCuda(const at::Tensor& t, const c10::Device& device, const char* op) {
  FORGE_CHECK_T(CommError, t.defined(), op, ": undefined tensor");
  FORGE_CHECK_T(CommError, t.device() == device, op, ": the nccl backend of this rank works on ", device,
                ", got a tensor on ", t.device());
  FORGE_CHECK_T(CommError, t.is_contiguous(), op, ": tensor must be contiguous");
}

}  // namespace

NcclCommunicator::NcclCommunicator(Communicator& bootstrap, c10::Device device, std::chrono::duration<double> timeout)
    : Communicator(timeout), bootstrap_(bootstrap), state_(std::make_shared<State>()) {
  FORGE_CHECK_T(CommError, device.is_cuda() && device.has_index(), "the nccl backend needs a CUDA device, got ",
                device);
  rank_ = bootstrap.rank();
  size_ = bootstrap.size();
  State& s = *state_;
  s.rank = rank_;
  s.device = device;
  c10::cuda::CUDAGuard guard(device);

  // The unique id travels over the bootstrap (MPI) communicator.
  ncclUniqueId id;
  std::memset(&id, 0, sizeof id);
  if (rank_ == 0) FORGE_NCCL_CHECK(rank_, nullptr, ncclGetUniqueId(&id));
  at::Tensor idBytes = at::empty({static_cast<int64_t>(sizeof id)}, at::kByte);
  std::memcpy(idBytes.data_ptr(), &id, sizeof id);
  bootstrap.broadcast(idBytes, 0);
  std::memcpy(&id, idBytes.data_ptr(), sizeof id);

  auto deadline = deadlineAfter(timeout);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // every call returns at once; we poll against our own deadline
  std::lock_guard<std::mutex> lock(s.mutex);
  ncclResult_t r = ncclCommInitRankConfig(&s.comm, size_, id, rank_, &config);
  s.checkLocked(r, "ncclCommInitRankConfig", __FILE__, __LINE__);
  s.settleLocked("ncclCommInitRankConfig", deadline, __FILE__, __LINE__);
  // High priority: a bucket's all-reduce should not queue behind backward's kernels.
  s.stream.emplace(c10::cuda::getStreamFromPool(/*isHighPriority=*/true, device.index()));
  s.ready = newEvent(rank_);
}

NcclCommunicator::~NcclCommunicator() = default;  // State's destructor never throws

std::string NcclCommunicator::backend() const { return "nccl"; }

std::string NcclCommunicator::ncclVersion() {
  int v = 0;
  if (ncclGetVersion(&v) != ncclSuccess) return "unknown";
  // Since 2.9: major * 10000 + minor * 100 + patch.
  return concat(v / 10000, ".", (v / 100) % 100, ".", v % 100);
}

template <typename Launch>
std::unique_ptr<Work> NcclCommunicator::enqueue(const char* op, std::vector<at::Tensor> keep, Launch launch) {
  State& s = *state_;
  std::unique_lock<std::mutex> lock(s.mutex);
  if (s.aborted) s.throwAborted(op);
  // Gradient hooks run on autograd's device thread; make this rank's GPU current there too.
  c10::cuda::CUDAGuard guard(s.device);
  cudaStream_t producer = c10::cuda::getCurrentCUDAStream(s.device.index()).stream();
  cudaStream_t comm = s.stream->stream();
  auto work = std::make_unique<NcclWork>(state_, op, ++sequence_, keep, status_);
  // Ordered after everything already queued on the producer stream (the gradients).
  FORGE_CUDA_CHECK(rank_, cudaEventRecord(s.ready, producer));
  FORGE_CUDA_CHECK(rank_, cudaStreamWaitEvent(comm, s.ready, 0));
  for (const auto& t : keep) c10::cuda::CUDACachingAllocator::recordStream(t.storage().data_ptr(), *s.stream);
  ncclResult_t r = launch(s.comm, comm);
  s.checkLocked(r, op, __FILE__, __LINE__);
  if (r == ncclInProgress) {
    // The non-blocking communicator is still enqueueing (microseconds); the lock stays held,
    // so no other call reaches the communicator or its stream until it is done.
    s.settleLocked(op, deadlineAfter(timeout()), __FILE__, __LINE__);
  }
  FORGE_CUDA_CHECK(rank_, cudaEventRecord(work->doneEvent(), comm));
  return work;
}

std::unique_ptr<Work> NcclCommunicator::allReduceAsync(at::Tensor tensor, ReduceOp op) {
  if (tensor.defined() && tensor.is_cpu()) return bootstrap_.allReduceAsync(std::move(tensor), op);
  checkCuda(tensor, state_->device, "allreduce");
  ncclDataType_t type = ncclType(tensor);
  ncclRedOp_t red = ncclOp(op);
  void* ptr = tensor.data_ptr();
  size_t count = static_cast<size_t>(tensor.numel());
  return enqueue("ncclAllReduce", {tensor}, [=](ncclComm_t c, cudaStream_t st) {
    return ncclAllReduce(ptr, ptr, count, type, red, c, st);
  });
}

std::unique_ptr<Work> NcclCommunicator::broadcastAsync(at::Tensor tensor, int root) {
  if (tensor.defined() && tensor.is_cpu()) return bootstrap_.broadcastAsync(std::move(tensor), root);
  checkCuda(tensor, state_->device, "broadcast");
  void* ptr = tensor.data_ptr();
  size_t bytes = tensor.nbytes();  // any dtype: the bytes travel as they are
  return enqueue("ncclBroadcast", {tensor}, [=](ncclComm_t c, cudaStream_t st) {
    return ncclBroadcast(ptr, ptr, bytes, ncclUint8, root, c, st);
  });
}

std::unique_ptr<Work> NcclCommunicator::allGatherAsync(at::Tensor input, at::Tensor output) {
  if (input.defined() && input.is_cpu() && output.defined() && output.is_cpu()) {
    return bootstrap_.allGatherAsync(std::move(input), std::move(output));
  }
  checkCuda(input, state_->device, "allgather");
  checkCuda(output, state_->device, "allgather");
  FORGE_CHECK_T(CommError, output.nbytes() == input.nbytes() * static_cast<size_t>(size_),
                "allgather: output must hold world size x input");
  const void* in = input.data_ptr();
  void* out = output.data_ptr();
  size_t bytes = input.nbytes();
  return enqueue("ncclAllGather", {input, output}, [=](ncclComm_t c, cudaStream_t st) {
    return ncclAllGather(in, out, bytes, ncclUint8, c, st);
  });
}

std::unique_ptr<Work> NcclCommunicator::barrierAsync() {
  // A one-element all-reduce: no rank's copy completes before every rank has joined.
  at::Tensor t = at::zeros({1}, at::TensorOptions().dtype(at::kFloat).device(state_->device));
  return allReduceAsync(t, ReduceOp::kSum);
}

void NcclCommunicator::abort(int exitCode) noexcept {
  state_->abortComm();
  bootstrap_.abort(exitCode);
  std::_Exit(exitCode);  // not reached: the bootstrap's abort ends the job
}

}  // namespace forge::dist
