// A run's checkpoint folder: naming, retention and resume discovery, all by training
// progress (checkpoint/progress.h), never by step counts, which change meaning with the
// world size.
//   <dir>/ckpt-e<epoch:04>-n<samples:010>.pt   periodic checkpoints: epochs complete, samples
//                                               consumed in the next one over all ranks;
//                                               the keep_last most advanced that verify are kept
//   <dir>/best.pt                               the best eval metric so far
//   <dir>/last.pt                               a symbolic link to the newest periodic
//                                               checkpoint, replaced atomically at each save
//   <dir>/top/<periodic name>                   copies of the checkpoint.save_top_k best
//                                               epochs by the monitored metric (the trainer's
//                                               checkpoint policy keeps their list)
//   <dir>/unverified/                           periodic files that did not verify, moved
//                                               aside (never counted, never deleted, never
//                                               replaced: <name>.1, <name>.2, ...)
//   <dir>/abandoned-after-<name>[.N]/           what a resume from a less advanced checkpoint
//                                               left behind (trainer/engine/resume.cpp)
// Files named ckpt-e<epoch:04>-s<global step:09>.pt by earlier versions are periodic
// checkpoints too; their progress is read from their contents.
// A periodic file's progress is always its contents'; it verifies only when its name is the
// one forge gives those contents (so a copy under a more advanced name, or a second name for
// the same progress, is never counted: it goes to unverified/ like a damaged file). A name
// that matches the pattern but is not one forge writes (other digit counts, numbers out of
// range) goes there too, without being read.
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/progress.h"

namespace forge::ckpt {

class CheckpointDir {
 public:
  CheckpointDir(std::string dir, int keepLast);

  const std::string& dir() const { return dir_; }
  std::string pathFor(const Progress& p) const;
  // The periodic file name of that progress ("ckpt-e0002-n0000000000.pt").
  static std::string nameFor(const Progress& p);
  std::string bestPath() const;
  std::string lastPath() const;
  std::string topDir() const;
  std::string unverifiedDir() const;

  // Writes the checkpoint atomically under its progress's name, points last.pt at it, then deletes the verified
  // periodic checkpoints beyond the keep_last most advanced (files that do not verify are
  // moved to unverified/ instead, and counted for nothing). Returns the path written. Call
  // on one rank (rank 0).
  std::string save(const Checkpoint& ck);
  void saveBest(const Checkpoint& ck);
  // Writes a copy of `ck` into top/ under its periodic name, atomically; returns that path.
  std::string saveTop(const Checkpoint& ck);
  // Deletes top/<name> (nothing when it is not there). Rank 0.
  void removeTop(const std::string& name);

  // Deletes temporary files that a save killed midway left behind (atomic saves write
  // ".<name>.tmp.<pid>" first). Returns how many. Call on rank 0 before training, when no
  // save of this run can be in flight.
  int removeStaleTemporaries() const;

  // The periodic checkpoint files by name alone (nothing is read or verified); for "does the
  // folder hold checkpoints at all?".
  std::vector<std::string> files() const;
  // What else an earlier run left here: best.pt and every file in a subfolder (unverified/,
  // abandoned-after-*/), by path. Save temporaries are not counted.
  std::vector<std::string> leftovers() const;

  struct Entry {
    std::string path;
    Progress progress;
  };
  // The periodic checkpoints that verify, most advanced first. Each file is read once per
  // process (the ones this process wrote are known good); one that does not verify is moved
  // to unverified/ with a warning naming the file and why.
  std::vector<Entry> verified();

  struct Found {
    std::string path;
    Checkpoint checkpoint;
    std::vector<std::string> skipped;  // "<path>: <why>" for each more advanced file that failed to verify
  };
  // The most advanced checkpoint that verifies; nullopt when there is none. CheckpointError
  // when there are periodic files but none verifies. Files are read most advanced (by name)
  // first, until one verifies.
  std::optional<Found> loadNewest();

 private:
  // What a file held when it last verified, under the identity it had then. A write changes
  // the size, the mtime or (even when the mtime is set back afterwards, which utime allows)
  // the ctime; a file replaced by another has another inode.
  struct Identity {
    uint64_t device = 0, inode = 0, size = 0;
    int64_t mtimeNs = 0, ctimeNs = 0;
    bool operator==(const Identity& o) const {
      return device == o.device && inode == o.inode && size == o.size && mtimeNs == o.mtimeNs && ctimeNs == o.ctimeNs;
    }
  };
  struct Known {
    Identity identity;
    Progress progress;
  };
  static std::optional<Identity> identityOf(const std::string& path);
  // All of these: caller holds mutex_.
  // Records a file known to verify.
  void remember(const std::string& path, const Progress& progress);
  bool stillKnown(const std::string& path, Known& out) const;
  void moveUnverified(const std::string& path, const std::string& why);
  // The periodic files whose names are ones forge writes; the others are moved aside.
  std::vector<std::string> namedFiles();
  // Loads a periodic file and checks that its name is its contents' (CheckpointError if not).
  Checkpoint loadChecked(const std::string& path, Progress& progress);

  std::string dir_;
  int keepLast_;
  std::mutex mutex_;  // save() runs on the background saver's thread
  std::map<std::string, Known> known_;  // path -> what it held when it last verified
};

}  // namespace forge::ckpt
