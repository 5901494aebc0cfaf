// One job per run dir: an exclusive lock that rank 0 holds for the job's life, so that two
// jobs never write the same checkpoints, metrics and logs (a second submission of the same
// config, a requeued job while the old one still runs on another node).
#pragma once

#include <sys/types.h>

#include <string>

namespace forge::train {

class RunDirLock {
 public:
  // Rank 0, before anything is read or written in `dir`: creates `dir` when missing, takes
  // an exclusive lock (flock) on `dir`/.forge.lock and writes this job's host, pid and start
  // time into it. Does not block: when another live process holds the lock, a ConfigError
  // names that job's host and pid. The OS releases the lock when this process ends, however
  // it ends (kill -9 included), so a crashed job never leaves the run dir locked. A lock
  // file that is a symbolic link is refused (it would overwrite its target). On a file
  // system that refuses locks (ENOLCK, EOPNOTSUPP) or is read-only, a warning says the run
  // dir is unprotected and the job goes on.
  explicit RunDirLock(const std::string& dir);
  ~RunDirLock();
  RunDirLock(const RunDirLock&) = delete;
  RunDirLock& operator=(const RunDirLock&) = delete;

  // Rank 0, before writing into the run dir (each checkpoint): throws ConfigError when the
  // run dir was moved, renamed or deleted since the lock was taken (its lock file is gone or
  // is another file), since another job may then lock and write a new folder at that path.
  void verify() const;

  static constexpr const char* kFileName = ".forge.lock";

 private:
  std::string dir_, path_;
  int fd_ = -1;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

}  // namespace forge::train
