// One job per run dir: an exclusive lock that rank 0 holds for the job's life, so that two
// jobs never write the same checkpoints, metrics and logs (a second submission of the same
// config, a requeued job while the old one still runs on another node).
#pragma once

#include <string>

namespace forge::train {

class RunDirLock {
 public:
  // Rank 0, before anything is read or written in `dir`: creates `dir` when missing, takes
  // an exclusive lock (flock) on `dir`/.forge.lock and writes this job's host, pid and start
  // time into it. Does not block: when another live process holds the lock, a ConfigError
  // names that job's host and pid. The OS releases the lock when this process ends, however
  // it ends (kill -9 included), so a crashed job never leaves the run dir locked.
  explicit RunDirLock(const std::string& dir);
  ~RunDirLock();
  RunDirLock(const RunDirLock&) = delete;
  RunDirLock& operator=(const RunDirLock&) = delete;

  static constexpr const char* kFileName = ".forge.lock";

 private:
  int fd_ = -1;
};

}  // namespace forge::train
