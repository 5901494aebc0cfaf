// Communicator over Open MPI for CPU tensors.
//
// Threads: collectives run on the communicator's own communication thread, one at a time,
// in the order they were issued, with MPI's blocking calls (the tuned algorithms). The
// caller gets a Work at once and waits on it with a deadline, so a stuck or dead peer turns
// into a CommTimeout on the caller's thread, never a silent hang. After a timeout the
// communication thread may still be inside MPI; the only way on is abort() (MPI_Abort),
// which MPI_THREAD_MULTIPLE allows from any thread.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <memory>

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

  // How a rank that reaches a collective first waits for the others. Sleeping (the
  // default): each collective starts with a non-blocking barrier, polled for 50 us, then
  // between polls the thread sleeps min(1 ms, 1/16 of the wait so far), so the core goes to
  // this rank's backward or to other processes; the collective itself then runs with every
  // rank present. Spinning: the collective alone, Open MPI polling for the peers meanwhile.
  // Every rank must use the same way (a collective of one against a barrier of another is
  // a mismatch): change it only at the same point of every rank's program.
  void setSleepWhileWaiting(bool sleep);

  struct Engine;  // the communication thread and its queue (mpi_communicator.cpp)

 private:
  std::unique_ptr<Work> submit(const char* op, std::vector<at::Tensor> keep, std::function<int(MPI_Comm)> call,
                               std::function<void()> after = nullptr);

  std::shared_ptr<Engine> engine_;
  int rank_ = 0;
  int size_ = 1;
  uint64_t sequence_ = 0;  // counts collectives issued on this communicator
  int64_t chunkBytes_ = 4 << 20;  // all-reduces larger than this run as several calls
};

}  // namespace forge::dist
