#include "distributed/mpi/mpi_communicator.h"

#include <thread>

#include "core/error.h"
#include "distributed/mpi/mpi_check.h"
#include "distributed/mpi_runtime.h"

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
}

class MpiWork final : public Work {
 public:
  MpiWork(const char* op, uint64_t seq, int rank, std::vector<at::Tensor> keep, at::Tensor avgTarget, int avgBy)
      : op_(op), seq_(seq), rank_(rank), keep_(std::move(keep)), avgTarget_(std::move(avgTarget)), avgBy_(avgBy),
        start_(Clock::now()) {}

  MPI_Request* request() { return &request_; }

  bool test() override {
    if (done_) return true;
    int flag = 0;
    FORGE_MPI_CHECK(MPI_Test(&request_, &flag, MPI_STATUS_IGNORE));
    if (flag) finish();
    return done_;
  }

  void wait(Clock::time_point deadline) override {
    // Spin briefly (small collectives finish in microseconds), then back off so a waiting
    // rank leaves the cores to compute threads. MPI_Test also drives MPI's progress engine.
    int polls = 0;
    while (!test()) {
      ++polls;
      if (Clock::now() >= deadline) {
        double waited = std::chrono::duration<double>(Clock::now() - start_).count();
        throw CommTimeout(concat("timeout in ", op_, " #", seq_, " after ", waited,
                              " s (a peer rank is dead, stuck or issued a different collective)"));
      }
      if (polls > 2000) {
        std::this_thread::sleep_for(std::chrono::microseconds(polls > 20000 ? 200 : 20));
      } else if (polls > 200) {
        std::this_thread::yield();
      }
    }
  }

  ~MpiWork() override {
    // A Work dropped while in flight (an exception unwinding): the request cannot be
    // cancelled portably for collectives, so it is left to MPI_Abort / MPI_Finalize.
    (void)rank_;
  }

 private:
  void finish() {
    done_ = true;
    if (avgBy_ > 1) avgTarget_.div_(avgBy_);
  }

  const char* op_;
  uint64_t seq_;
  int rank_;
  std::vector<at::Tensor> keep_;
  at::Tensor avgTarget_;
  int avgBy_;
  Clock::time_point start_;
  MPI_Request request_ = MPI_REQUEST_NULL;
  bool done_ = false;
};

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm parent, std::chrono::duration<double> timeout)
    : Communicator(timeout) {
  FORGE_MPI_CHECK(MPI_Comm_dup(parent, &comm_));
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  FORGE_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  FORGE_MPI_CHECK(MPI_Comm_size(comm_, &size_));
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

std::unique_ptr<Work> MpiCommunicator::allReduceAsync(at::Tensor tensor, ReduceOp op) {
  checkTensor(tensor, "allReduce");
  if (op == ReduceOp::kAvg) {
    FORGE_CHECK_T(CommError, at::isFloatingType(tensor.scalar_type()), "allReduce(avg) needs a floating tensor");
  }
  auto work = std::make_unique<MpiWork>("allReduce", ++sequence_, rank_, std::vector<at::Tensor>{tensor}, tensor,
                                        op == ReduceOp::kAvg ? size_ : 1);
  FORGE_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, tensor.data_ptr(), static_cast<int>(tensor.numel()),
                                 mpiType(tensor), mpiOp(op), comm_, work->request()));
  return work;
}

std::unique_ptr<Work> MpiCommunicator::broadcastAsync(at::Tensor tensor, int root) {
  checkTensor(tensor, "broadcast");
  auto work = std::make_unique<MpiWork>("broadcast", ++sequence_, rank_, std::vector<at::Tensor>{tensor}, at::Tensor(), 1);
  FORGE_MPI_CHECK(MPI_Ibcast(tensor.data_ptr(), static_cast<int>(tensor.numel()), mpiType(tensor), root, comm_,
                             work->request()));
  return work;
}

std::unique_ptr<Work> MpiCommunicator::allGatherAsync(at::Tensor input, at::Tensor output) {
  checkTensor(input, "allGather");
  checkTensor(output, "allGather");
  FORGE_CHECK_T(CommError, output.numel() == input.numel() * size_ && output.scalar_type() == input.scalar_type(),
                "allGather: output must hold size() x input elements of the same type");
  auto work = std::make_unique<MpiWork>("allGather", ++sequence_, rank_, std::vector<at::Tensor>{input, output},
                                        at::Tensor(), 1);
  FORGE_MPI_CHECK(MPI_Iallgather(input.data_ptr(), static_cast<int>(input.numel()), mpiType(input), output.data_ptr(),
                                 static_cast<int>(input.numel()), mpiType(output), comm_, work->request()));
  return work;
}

std::unique_ptr<Work> MpiCommunicator::barrierAsync() {
  auto work = std::make_unique<MpiWork>("barrier", ++sequence_, rank_, std::vector<at::Tensor>{}, at::Tensor(), 1);
  FORGE_MPI_CHECK(MPI_Ibarrier(comm_, work->request()));
  return work;
}

void MpiCommunicator::abort(int exitCode) noexcept { MpiRuntime::abortJob(exitCode); }

}  // namespace forge::dist
