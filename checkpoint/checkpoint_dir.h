// A run's checkpoint folder: naming, retention and resume discovery.
//   <dir>/ckpt-e<epoch:04>-s<global step:09>.pt   periodic checkpoints, newest keep_last kept
//   <dir>/best.pt                                  the best eval metric so far
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"

namespace forge::ckpt {

class CheckpointDir {
 public:
  CheckpointDir(std::string dir, int keepLast);

  const std::string& dir() const { return dir_; }
  std::string pathFor(int64_t epoch, int64_t globalStep) const;
  std::string bestPath() const;

  // Writes the checkpoint atomically, then deletes periodic ones beyond keep_last (oldest
  // first). Returns the path written. Call on one rank (rank 0).
  std::string save(const Checkpoint& ck);
  void saveBest(const Checkpoint& ck);

  // Deletes temporary files that a save killed midway left behind (atomic saves write
  // ".<name>.tmp.<pid>" first). Returns how many. Call on rank 0 before training, when no
  // save of this run can be in flight.
  int removeStaleTemporaries() const;

  // The global step in a periodic checkpoint's file name; -1 for any other name.
  static int64_t globalStepOf(const std::string& path);

  // Periodic checkpoints, newest (highest global step) first.
  std::vector<std::string> list() const;

  struct Found {
    std::string path;
    Checkpoint checkpoint;
    std::vector<std::string> skipped;  // "<path>: <why>" for each newer file that failed to verify
  };
  // The newest checkpoint that loads and verifies; nullopt when there is none.
  std::optional<Found> loadNewest() const;

 private:
  std::string dir_;
  int keepLast_;
};

}  // namespace forge::ckpt
