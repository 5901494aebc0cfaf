// Communicator over Open MPI for CPU tensors. Collectives are MPI's non-blocking ones
// (MPI_Iallreduce, ...) so that every wait can be bounded by a deadline: a wait polls
// MPI_Test, which also drives MPI's progress, until completion or the deadline.
#pragma once

#include <mpi.h>

#include <cstdint>

#include "distributed/communicator.h"

namespace forge::dist {

class MpiCommunicator final : public Communicator {
 public:
  // Duplicates `parent` (collective over it) so forge's traffic never matches anyone else's.
  MpiCommunicator(MPI_Comm parent, std::chrono::duration<double> timeout);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }

  std::unique_ptr<Work> allReduceAsync(at::Tensor tensor, ReduceOp op) override;
  std::unique_ptr<Work> broadcastAsync(at::Tensor tensor, int root) override;
  std::unique_ptr<Work> allGatherAsync(at::Tensor input, at::Tensor output) override;
  std::unique_ptr<Work> barrierAsync() override;
  [[noreturn]] void abort(int exitCode) noexcept override;

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  uint64_t sequence_ = 0;  // counts collectives issued on this communicator
};

}  // namespace forge::dist
