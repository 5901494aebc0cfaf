// Asynchronous checkpoint writing: the state is copied in memory at the step boundary
// (deepCopy), and a background thread encodes and writes it while training goes on. One
// save at a time: a second submit waits for the first.
#pragma once

#include <exception>
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
  // Blocks until no save is in flight; rethrows the error of the last one.
  void wait();

 private:
  std::thread thread_;
  std::exception_ptr error_;
};

}  // namespace forge::ckpt
