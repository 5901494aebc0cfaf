// What a data file was when a run opened it, to notice that it changed under the run: its
// identity (device and inode), size, modification and status change times. A run must read the same bytes
// from its first step to its last; a file rewritten, cut short or replaced meanwhile would
// otherwise train on a mix of old and new data, or on zeros (HDF5 reads past the end of a
// file as zeros).
#pragma once

#include <sys/stat.h>

#include <string>

namespace forge::data {

struct FileState {
  dev_t device = 0;
  ino_t inode = 0;
  off_t size = 0;
  timespec modified{};
  // The status change time: a write moves it, and unlike the modification time no call can
  // set it back (`touch -d` after an overwrite of the same size hides from mtime alone).
  // Once no path names the file any more (renamed over: the run reads the old one, which
  // nothing can write through a path now) it is not compared; chmod and new links move it
  // too, and are refused as well: a run's data stays as it was, metadata included.
  timespec changed{};
  nlink_t links = 0;

  // Of the open descriptor `fd`; DataError naming `path` when fstat fails.
  static FileState of(int fd, const std::string& path);
  // What changed since `opened` in the file read through `fd`: "" when nothing, else e.g.
  // "cut short from 1,000,000 to 4,096 bytes" or "modified (its modification time changed)".
  // One fstat: cheap enough for every read of a run of rows.
  static std::string changeOfContent(const FileState& opened, int fd);
  // changeOfContent, and whether `path` still names that file (one stat more): "replaced
  // (the path names another file now)" when it does not. For the epoch boundary.
  static std::string changeOf(const FileState& opened, int fd, const std::string& path);
};

// The message of a DataError for `path` having changed (`change`) during the run: what to
// do about it.
std::string changedFileMessage(const std::string& path, const std::string& change);

}  // namespace forge::data
