#include "distributed/mpi/mpi_communicator.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <thread>

#include <pthread.h>

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "core/names.h"
#include "distributed/mpi/mpi_check.h"
#include "distributed/mpi_runtime.h"
#include "distributed/rank_status.h"

namespace forge::dist {
namespace detail {
std::string mpiErrorString(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, len);
}
}  // namespace detail

namespace {

MPI_Datatype mpiType(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return MPI_FLOAT;
    case at::kDouble: return MPI_DOUBLE;
    case at::kLong: return MPI_INT64_T;
    case at::kInt: return MPI_INT32_T;
    case at::kByte: return MPI_UINT8_T;
    case at::kChar: return MPI_INT8_T;
    case at::kBool: return MPI_C_BOOL;
    default:
      throw CommError(concat("the mpi backend cannot reduce tensors of type ", t.scalar_type()));
  }
}

MPI_Op mpiOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg: return MPI_SUM;
    case ReduceOp::kMax: return MPI_MAX;
    case ReduceOp::kMin: return MPI_MIN;
  }
  return MPI_SUM;
}

void checkTensor(const at::Tensor& t, const char* op) {
  FORGE_CHECK_T(CommError, t.defined(), op, ": undefined tensor");
  FORGE_CHECK_T(CommError, t.device().is_cpu(), op, ": the mpi backend takes CPU tensors, got ", t.device());
  FORGE_CHECK_T(CommError, t.is_contiguous(), op, ": tensor must be contiguous");
  FORGE_CHECK_T(CommError, t.numel() <= INT32_MAX, op, ": more than 2^31 elements in one call");
}

// One collective: what to run, and its outcome, shared by the Work and the thread.
struct Op {
  const char* name;
  uint64_t seq;
  CollectiveKind kind = CollectiveKind::kNone;
  RankStatus* status = nullptr;  // told when it completes
  std::vector<at::Tensor> keep;  // alive until the thread is done with them
  std::function<int(MPI_Comm)> call;
  std::function<void()> after;
  Clock::time_point submitted = Clock::now();
  Clock::time_point started{};  // written by the thread under the engine's mutex
  bool done = false;
  std::string error;
};

// Test-only (FORGE_FAULT_FREEZE_RANK / _STEP): the process freezes (SIGSTOP, every thread)
// as its communication thread starts an all-reduce at or after the given global step, as a
// rank whose node or network stops inside a collective looks to its peers.
void maybeFreeze(const Op& op) {
  static const char* rank = std::getenv(env::kFaultFreezeRank);
  if (rank == nullptr || op.status == nullptr || op.kind != CollectiveKind::kAllReduce) return;
  static const char* step = std::getenv(env::kFaultFreezeStep);
  RankRecord r = op.status->snapshot();
  if (std::atoi(rank) != r.rank || (step != nullptr && r.globalStep < std::atoll(step))) return;
  log::warn("fault", "injected fault: rank ", r.rank, " freezes inside allReduce #", op.seq, " at step ", r.globalStep);
  std::raise(SIGSTOP);
}

// Until every rank of `comm` has reached this point: a non-blocking barrier, polled for a
// moment (a peer about to arrive), then polled between sleeps of 1/16 of the wait so far,
// 20 us to 1 ms. A late peer thus costs the waiting rank one poll per sleep instead of a
// core, and the collective after it starts at most 1/16 of the wait (1 ms) late.
int arriveTogether(MPI_Comm comm) {
  constexpr double kSpinS = 50e-6, kMinSleepS = 20e-6, kMaxSleepS = 1e-3;
  MPI_Request request;
  int rc = MPI_Ibarrier(comm, &request);
  if (rc != MPI_SUCCESS) return rc;
  const auto start = Clock::now();
  for (;;) {
    int done = 0;
    rc = MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS || done) return rc;
    const double waited = secondsSince(start);
    if (waited < kSpinS) continue;
    std::this_thread::sleep_for(std::chrono::duration<double>(std::clamp(waited / 16, kMinSleepS, kMaxSleepS)));
  }
}

}  // namespace

struct MpiCommunicator::Engine {
  MPI_Comm comm = MPI_COMM_NULL;
  std::mutex mutex;
  std::condition_variable cv;
  std::deque<std::shared_ptr<Op>> queue;
  bool stop = false;
  bool busy = false;
  std::atomic<bool> sleepWhileWaiting{true};
  bool alone = false;  // a world of one: nobody to wait for
  std::thread thread;

  void loop() {
    pthread_setname_np(pthread_self(), "forge-comm");
    for (;;) {
      std::shared_ptr<Op> op;
      {
        std::unique_lock<std::mutex> lock(mutex);
        cv.wait(lock, [&] { return stop || !queue.empty(); });
        if (queue.empty()) return;
        op = queue.front();
        queue.pop_front();
        busy = true;
        op->started = Clock::now();
      }
      std::string error;
      maybeFreeze(*op);
      try {
        int rc = sleepWhileWaiting && !alone ? arriveTogether(comm) : MPI_SUCCESS;
        if (rc == MPI_SUCCESS) rc = op->call(comm);
        if (rc != MPI_SUCCESS) {
          error = concat("MPI error in ", op->name, " #", op->seq, ": ", detail::mpiErrorString(rc));
        } else if (op->after) {
          op->after();
        }
      } catch (const std::exception& e) {
        error = e.what();
      }
      {
        std::lock_guard<std::mutex> lock(mutex);
        op->done = true;
        if (op->status != nullptr && error.empty()) op->status->completed(op->kind, op->seq);
        op->error = std::move(error);
        op->keep.clear();
        busy = false;
      }
      cv.notify_all();
    }
  }
};

namespace {

class MpiWork final : public Work {
 public:
  MpiWork(std::shared_ptr<MpiCommunicator::Engine> engine, std::shared_ptr<Op> op)
      : engine_(std::move(engine)), op_(std::move(op)) {}

  bool test() override {
    std::lock_guard<std::mutex> lock(engine_->mutex);
    return finished();
  }

  void wait(Clock::time_point deadline) override {
    std::unique_lock<std::mutex> lock(engine_->mutex);
    if (deadline == Clock::time_point::max()) {  // no deadline (distributed.timeout_s >= 1e9)
      engine_->cv.wait(lock, [&] { return op_->done; });
    } else if (!engine_->cv.wait_until(lock, deadline, [&] { return op_->done; })) {
      double waited = std::chrono::duration<double>(Clock::now() - op_->submitted).count();
      char secs[32];
      std::snprintf(secs, sizeof secs, "%.1f", waited);
      throw CommTimeout(concat("timeout in ", op_->name, " #", op_->seq, " after ", secs,
                               " s (a peer rank is dead, stuck, or issued a different collective)"));
    }
    finished();
  }

  Clock::time_point startedAt() const override {
    std::lock_guard<std::mutex> lock(engine_->mutex);
    return op_->started;
  }

 private:
  // Under the engine's mutex.
  bool finished() {
    if (!op_->done) return false;
    if (!op_->error.empty()) throw CommError(op_->error);
    return true;
  }

  std::shared_ptr<MpiCommunicator::Engine> engine_;
  std::shared_ptr<Op> op_;
};

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm parent, std::chrono::duration<double> timeout)
    : Communicator(timeout), engine_(std::make_shared<Engine>()) {
  FORGE_MPI_CHECK(MPI_Comm_dup(parent, &engine_->comm));
  MPI_Comm_set_errhandler(engine_->comm, MPI_ERRORS_RETURN);
  FORGE_MPI_CHECK(MPI_Comm_rank(engine_->comm, &rank_));
  FORGE_MPI_CHECK(MPI_Comm_size(engine_->comm, &size_));
  engine_->alone = size_ == 1;
  if (const char* v = std::getenv(env::kMpiChunkBytes)) chunkBytes_ = std::max<int64_t>(1024, std::atoll(v));
  int level = 0;
  MPI_Query_thread(&level);
  if (level < MPI_THREAD_MULTIPLE) {
    log::warn("comm", "MPI grants thread level ", level, ", below MPI_THREAD_MULTIPLE: an abort after a timeout "
              "may not reach every rank");
  }
  // The thread holds the engine, not this object: it may outlive a communicator whose last
  // collective never completed (the process is about to abort then).
  std::shared_ptr<Engine> engine = engine_;
  engine_->thread = std::thread([engine] { engine->loop(); });
}

MpiCommunicator::~MpiCommunicator() {
  bool idle;
  {
    std::unique_lock<std::mutex> lock(engine_->mutex);
    engine_->stop = true;
    // Give queued collectives a moment; one stuck in MPI would block forever.
    idle = engine_->cv.wait_for(lock, std::chrono::seconds(2), [&] { return engine_->queue.empty() && !engine_->busy; });
  }
  engine_->cv.notify_all();
  if (!idle) {
    log::warn("comm", "a collective is still in flight at shutdown; leaving it to MPI_Abort / process exit");
    engine_->thread.detach();
    return;
  }
  engine_->thread.join();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Comm_free(&engine_->comm);
}

std::unique_ptr<Work> MpiCommunicator::submit(const char* name, std::vector<at::Tensor> keep,
                                              std::function<int(MPI_Comm)> call, std::function<void()> after) {
  auto op = std::make_shared<Op>();
  op->name = name;
  op->seq = ++sequence_;
  op->kind = collectiveKindOf(name);
  op->status = status_;
  if (status_ != nullptr) status_->entered(op->kind, op->seq);
  op->keep = std::move(keep);
  op->call = std::move(call);
  op->after = std::move(after);
  {
    std::lock_guard<std::mutex> lock(engine_->mutex);
    engine_->queue.push_back(op);
  }
  engine_->cv.notify_all();
  return std::make_unique<MpiWork>(engine_, op);
}

std::unique_ptr<Work> MpiCommunicator::allReduceAsync(at::Tensor tensor, ReduceOp op) {
  checkTensor(tensor, "allReduce");
  if (op == ReduceOp::kAvg) {
    FORGE_CHECK_T(CommError, at::isFloatingType(tensor.scalar_type()), "allReduce(avg) needs a floating tensor");
  }
  MPI_Datatype type = mpiType(tensor);
  int count = static_cast<int>(tensor.numel());
  void* data = tensor.data_ptr();
  std::function<void()> after;
  if (op == ReduceOp::kAvg && size_ > 1) {
    int n = size_;
    after = [tensor, n]() mutable { tensor.div_(n); };
  }
  MPI_Op mop = mpiOp(op);
  // Large messages go in chunks: a reduction whose working set stays in cache runs at ~2x
  // the bus bandwidth of one call over tens of MiB here (bench/RESULTS.md).
  const int64_t chunk = std::max<int64_t>(1, chunkBytes_ / static_cast<int64_t>(tensor.element_size()));
  const int64_t elementSize = static_cast<int64_t>(tensor.element_size());
  return submit("allReduce", {tensor},
                [=](MPI_Comm c) {
                  for (int64_t first = 0; first < count; first += chunk) {
                    int n = static_cast<int>(std::min<int64_t>(chunk, count - first));
                    int rc = MPI_Allreduce(MPI_IN_PLACE, static_cast<char*>(data) + first * elementSize, n, type,
                                           mop, c);
                    if (rc != MPI_SUCCESS) return rc;
                  }
                  return MPI_SUCCESS;
                },
                after);
}

std::unique_ptr<Work> MpiCommunicator::broadcastAsync(at::Tensor tensor, int root) {
  checkTensor(tensor, "broadcast");
  MPI_Datatype type = mpiType(tensor);
  int count = static_cast<int>(tensor.numel());
  void* data = tensor.data_ptr();
  return submit("broadcast", {tensor}, [=](MPI_Comm c) { return MPI_Bcast(data, count, type, root, c); });
}

std::unique_ptr<Work> MpiCommunicator::allGatherAsync(at::Tensor input, at::Tensor output) {
  checkTensor(input, "allGather");
  checkTensor(output, "allGather");
  FORGE_CHECK_T(CommError, output.numel() == input.numel() * size_ && output.scalar_type() == input.scalar_type(),
                "allGather: output must hold size() x input elements of the same type");
  MPI_Datatype type = mpiType(input);
  int count = static_cast<int>(input.numel());
  void* in = input.data_ptr();
  void* out = output.data_ptr();
  return submit("allGather", {input, output},
                [=](MPI_Comm c) { return MPI_Allgather(in, count, type, out, count, type, c); });
}

std::unique_ptr<Work> MpiCommunicator::barrierAsync() {
  return submit("barrier", {}, [](MPI_Comm c) { return MPI_Barrier(c); });
}

void MpiCommunicator::setSleepWhileWaiting(bool sleep) { engine_->sleepWhileWaiting = sleep; }

void MpiCommunicator::abort(int exitCode) noexcept { MpiRuntime::abortJob(exitCode); }

}  // namespace forge::dist
