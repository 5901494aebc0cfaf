// Communicator over NCCL for CUDA tensors: one NCCL communicator per process, on the GPU the
// process is bound to (distributed/device.h).
//
// Streams: every collective runs on the communicator's own high-priority stream, ordered
// after the work already queued on the caller's current stream (the gradients' producer) by
// an event, so a bucket's all-reduce overlaps the rest of backward. The tensor's memory is
// recorded on that stream, so the caching allocator never hands it out while NCCL still uses
// it.
//
// Waiting: Work::wait(deadline) polls the completion event and ncclCommGetAsyncError. An
// error, or the deadline passing, aborts the NCCL communicator (ncclCommAbort releases the
// GPU from a collective that can never finish) and throws CommError / CommTimeout. The
// communicator is non-blocking, so not even ncclCommInitRank can hang past its deadline.
//
// CPU tensors (control values: flags, counters, RNG states, fingerprints) go to the MPI
// communicator the NCCL one was bootstrapped from, in program order, as with PyTorch's
// gloo-beside-NCCL arrangement.
#pragma once

#include <c10/core/Device.h>

#include <atomic>
#include <memory>

#include "distributed/communicator.h"

namespace forge::dist {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `bootstrap` (every rank): rank 0 creates the unique id, `bootstrap`
  // broadcasts it, each rank joins on `device` (which must be the current CUDA device).
  // `bootstrap` must outlive this object.
  NcclCommunicator(Communicator& bootstrap, c10::Device device, std::chrono::duration<double> timeout);
  ~NcclCommunicator() override;  // destroys (or, after a failure, aborts) the communicator; never throws
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override;

  std::unique_ptr<Work> allReduceAsync(at::Tensor tensor, ReduceOp op) override;
  std::unique_ptr<Work> broadcastAsync(at::Tensor tensor, int root) override;
  std::unique_ptr<Work> allGatherAsync(at::Tensor input, at::Tensor output) override;
  std::unique_ptr<Work> barrierAsync() override;
  [[noreturn]] void abort(int exitCode) noexcept override;

  // The NCCL version forge runs with (ncclGetVersion), e.g. "2.28.9".
  static std::string ncclVersion();

  struct State;  // the ncclComm_t and its stream (nccl_communicator.cpp)

 private:
  template <typename Launch>
  std::unique_ptr<Work> enqueue(const char* op, std::vector<at::Tensor> keep, Launch launch);

  Communicator& bootstrap_;
  std::shared_ptr<State> state_;
  int rank_ = 0;
  int size_ = 1;
  uint64_t sequence_ = 0;
};

}  // namespace forge::dist
