// The collective-communication interface forge's training is written against. Backends:
// MpiCommunicator (CPU tensors, distributed/mpi/) and, for CUDA tensors, an NCCL backend.
//
// Every collective must be called in the same order on every rank of the communicator; a
// rank that skips or reorders one makes its peers wait, and the deadline turns that wait into
// a CommTimeout naming the operation and its sequence number instead of a silent hang.
#pragma once

#include <ATen/ATen.h>

#include <chrono>
#include <memory>
#include <string>

namespace forge::dist {

class RankStatus;

using Clock = std::chrono::steady_clock;

enum class ReduceOp { kSum, kAvg, kMax, kMin };

// A collective in flight. Keeps its tensors alive until it completes.
class Work {
 public:
  virtual ~Work() = default;
  // Blocks until the operation has completed, or throws CommTimeout once `deadline` passes
  // ("timeout in <op> #<seq> after <t> s"). Call from the thread that owns the communicator.
  virtual void wait(Clock::time_point deadline) = 0;
  // Orders the work the caller queues next on its current device stream after the
  // operation, without blocking the host where the backend can (NCCL: the stream waits on
  // the collective's event; errors, a timeout or completion are then seen by a later wait()
  // or by the watchdog). Backends without streams block as wait() does. Results are only
  // valid for stream-ordered device work until wait() returns.
  virtual void waitOnStream(Clock::time_point deadline) { wait(deadline); }
  // Non-blocking: true once the operation has completed (results are then in place).
  virtual bool test() = 0;
  // When the backend began executing the operation (the epoch of Clock before it has).
  virtual Clock::time_point startedAt() const = 0;
};

// `from` + `timeout`, saturating: a timeout of kNoDeadlineSeconds or more (distributed.timeout_s:
// 1e10) means no deadline instead of a sum that overflows into the past.
inline constexpr double kNoDeadlineSeconds = 1e9;
inline Clock::time_point deadlineAfter(std::chrono::duration<double> timeout, Clock::time_point from = Clock::now()) {
  if (!(timeout.count() < kNoDeadlineSeconds)) return Clock::time_point::max();
  return from + std::chrono::duration_cast<Clock::duration>(timeout);
}

class Communicator {
 public:
  explicit Communicator(std::chrono::duration<double> timeout) : timeout_(timeout) {}
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;

  // Each collective issued and completed is reported to `status` (the process's record, read
  // by the watchdog: distributed/watchdog.h). The training communicator reports; others not.
  void reportTo(RankStatus* status) { status_ = status; }

  // Default deadline for the blocking calls below, measured from the moment of the call.
  std::chrono::duration<double> timeout() const { return timeout_; }
  void setTimeout(std::chrono::duration<double> t) { timeout_ = t; }

  // In place on a contiguous tensor. kAvg divides the sum by size(). All ranks, same order.
  virtual std::unique_ptr<Work> allReduceAsync(at::Tensor tensor, ReduceOp op) = 0;
  // In place: afterwards every rank holds root's values. All ranks, same order.
  virtual std::unique_ptr<Work> broadcastAsync(at::Tensor tensor, int root) = 0;
  // `output` has size() * input.numel() elements; rank r's input lands at [r * n, (r+1) * n).
  // All ranks, same order.
  virtual std::unique_ptr<Work> allGatherAsync(at::Tensor input, at::Tensor output) = 0;
  // All ranks, same order.
  virtual std::unique_ptr<Work> barrierAsync() = 0;

  // Ends every rank of the job with `exitCode`. Any rank, any time; never returns.
  [[noreturn]] virtual void abort(int exitCode) noexcept = 0;

  // Blocking forms: start, then wait until now + timeout().
  void allReduce(const at::Tensor& tensor, ReduceOp op);
  void broadcast(const at::Tensor& tensor, int root);
  void allGather(const at::Tensor& input, const at::Tensor& output);
  void barrier();

  // Scalar conveniences built on allReduce (all ranks, same order).
  double allReduceScalar(double value, ReduceOp op);
  // True on every rank iff `flag` is true on at least one rank.
  bool anyRank(bool flag);

 protected:
  RankStatus* status_ = nullptr;

 private:
  std::chrono::duration<double> timeout_;
};

}  // namespace forge::dist
