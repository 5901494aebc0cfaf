#include "data/file_state.h"

#include <cerrno>
#include <cstring>

#include "core/error.h"
#include "core/strings.h"

namespace forge::data {

FileState FileState::of(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw DataError(concat("cannot stat data file '", path, "': ", std::strerror(errno)));
  return FileState{st.st_dev, st.st_ino, st.st_size, st.st_mtim, st.st_ctim, st.st_nlink};
}

namespace {

std::string contentChange(const FileState& opened, const struct stat& now) {
  if (now.st_size < opened.size) {
    return concat("cut short from ", withThousands(opened.size), " to ", withThousands(now.st_size), " bytes");
  }
  if (now.st_size != opened.size) {
    return concat("rewritten: ", withThousands(opened.size), " bytes when opened, ", withThousands(now.st_size),
                  " now");
  }
  if (now.st_mtim.tv_sec != opened.modified.tv_sec || now.st_mtim.tv_nsec != opened.modified.tv_nsec) {
    return "modified (its modification time changed)";
  }
  if (now.st_nlink != 0 &&
      (now.st_ctim.tv_sec != opened.changed.tv_sec || now.st_ctim.tv_nsec != opened.changed.tv_nsec)) {
    return "modified (its status change time moved: written to with the modification time set back, or its "
           "permissions or links changed)";
  }
  return "";
}

}  // namespace

std::string FileState::changeOfContent(const FileState& opened, int fd) {
  struct stat now {};
  if (::fstat(fd, &now) != 0) return concat("no longer readable (", std::strerror(errno), ")");
  return contentChange(opened, now);
}

std::string FileState::changeOf(const FileState& opened, int fd, const std::string& path) {
  std::string change = changeOfContent(opened, fd);
  if (!change.empty()) return change;
  struct stat named {};
  if (::stat(path.c_str(), &named) != 0) return concat("removed (", std::strerror(errno), ")");
  if (named.st_dev != opened.device || named.st_ino != opened.inode) return "replaced (the path names another file now)";
  return "";
}

std::string changedFileMessage(const std::string& path, const std::string& change) {
  return concat("data file '", path, "' changed during the run: ", change,
                ". A run must read the same data from start to end: write new data to a new file and start "
                "a new run on it (or resume this one with --resume auto once the file is as it was)");
}

}  // namespace forge::data
