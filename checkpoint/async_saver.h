// Asynchronous checkpoint writing. A background thread copies the state in memory and then
// encodes and writes it while training goes on. The copy itself overlaps training too:
// submitSnapshot() hands over references to the live tensors, and the training loop calls
// waitForSnapshot() before it next changes them (before the optimizer step), so training
// stalls only for whatever of the copy the next forward and backward did not cover.
// Tensors that change earlier (BatchNorm's running statistics, in forward) must be copied
// by the caller before submitting. One save at a time: a second submit waits for the first.
#pragma once

#include <condition_variable>
#include <exception>
#include <mutex>
#include <functional>
#include <thread>

#include "checkpoint/checkpoint.h"

namespace forge::ckpt {

// A checkpoint whose tensors are copies: safe to write while training changes the originals.
// Every tensor copied into host memory (from the GPU too), so the copy owns its data.
Checkpoint deepCopy(const Checkpoint& ck);

class AsyncSaver {
 public:
  AsyncSaver() = default;
  ~AsyncSaver();  // waits for a save in flight; logs (never throws) its error
  AsyncSaver(const AsyncSaver&) = delete;
  AsyncSaver& operator=(const AsyncSaver&) = delete;

  // Waits for the previous save (rethrowing its error), then runs `write` on the thread.
  void submit(std::function<void()> write);
  // Waits for the previous save, then on the thread: deepCopy(live) (whose tensors may
  // alias the training state), then write(copy).
  void submitSnapshot(Checkpoint live, std::function<void(const Checkpoint&)> write);
  // Blocks until the snapshot of the save in flight, if any, is complete (its copy done);
  // after it returns the training state may change. Cheap when there is none.
  void waitForSnapshot();
  // Blocks until no save is in flight; rethrows the error of the last one.
  void wait();

 private:
  std::thread thread_;
  std::exception_ptr error_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool snapshotPending_ = false;
};

}  // namespace forge::ckpt
