// Owns MPI's lifetime in a process: MPI_Init_thread on construction (unless MPI is already
// up), MPI_Finalize on destruction. Create exactly one, first thing in main(). Works without
// mpirun too (MPI's singleton mode: a world of one rank).
#pragma once

namespace forge::dist {

class MpiRuntime {
 public:
  MpiRuntime(int* argc, char*** argv);
  ~MpiRuntime();  // never throws
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  // The thread level MPI granted (MPI_THREAD_*).
  int threadLevel() const { return threadLevel_; }

  // Ends every rank of the job with `exitCode`: for errors that only some ranks see, so that
  // no peer is left waiting in a collective. Never returns.
  [[noreturn]] static void abortJob(int exitCode) noexcept;

 private:
  bool owns_ = false;
  int threadLevel_ = 0;
};

}  // namespace forge::dist
