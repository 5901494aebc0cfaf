#include "trainer/engine/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"

namespace forge::train {
namespace {

// What the holder wrote, printable only (the file is anyone's to write).
std::string holderOf(int fd) {
  char text[256] = {0};
  ssize_t n = pread(fd, text, sizeof text - 1, 0);
  std::string s;
  for (ssize_t i = 0; i < n; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '\n') break;
    s += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
  }
  return s.empty() ? "its lock file names no host or pid" : s;
}

bool locksUnsupported(int err) { return err == ENOLCK || err == EOPNOTSUPP || err == ENOSYS || err == EROFS; }

}  // namespace

RunDirLock::RunDirLock(const std::string& dir) : dir_(dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    const bool dangling = std::filesystem::is_symlink(std::filesystem::symlink_status(dir)) &&
                          !std::filesystem::exists(dir);
    throw ConfigError(concat("cannot create run dir '", dir, "': ",
                             dangling ? "it is a symbolic link to a folder that does not exist" : ec.message(),
                             " (set run.dir)"));
  }
  path_ = (std::filesystem::path(dir) / kFileName).string();
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd_ < 0) {
    const int err = errno;
    if (err == ELOOP) {
      throw ConfigError(concat("run.dir '", dir, "': its lock file ", path_, " is a symbolic link, which forge will not "
                               "write through; remove it"));
    }
    if (locksUnsupported(err)) {
      log::warn("run", "run.dir '", dir, "': no lock file (", std::strerror(err),
                "): nothing keeps a second job from writing this run dir at the same time");
      return;
    }
    throw ConfigError(concat("run.dir '", dir, "': cannot open its lock file ", path_, ": ", std::strerror(err)));
  }
  struct stat st{};
  if (fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd_);
    fd_ = -1;
    throw ConfigError(concat("run.dir '", dir, "': its lock file ", path_, " is not a regular file; remove it"));
  }
  dev_ = st.st_dev;
  ino_ = st.st_ino;
  if (flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    std::string holder = err == EWOULDBLOCK ? holderOf(fd_) : std::string();
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK) {
      throw ConfigError(concat("run.dir '", dir, "' is in use by another job (", holder,
                               "): two jobs would overwrite each other's checkpoints and metrics. Wait for it to end "
                               "(or stop it), or give this run another run.dir"));
    }
    if (locksUnsupported(err)) {
      log::warn("run", "run.dir '", dir, "': the file system refuses file locks (", std::strerror(err),
                "): nothing keeps a second job from writing this run dir at the same time");
      return;
    }
    throw ConfigError(concat("run.dir '", dir, "': cannot lock ", path_, " (", std::strerror(err), ")"));
  }
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  std::time_t now = std::time(nullptr);
  char when[32] = {0};
  std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&now));
  const std::string me = concat("forge on host ", host, ", pid ", getpid(), ", since ", when, "\n");
  if (ftruncate(fd_, 0) != 0 || pwrite(fd_, me.data(), me.size(), 0) != static_cast<ssize_t>(me.size())) {
    // The lock holds without the note; only the message a second job would print is poorer.
  }
}

RunDirLock::~RunDirLock() {
  if (fd_ >= 0) ::close(fd_);
}

void RunDirLock::verify() const {
  if (fd_ < 0) return;  // no lock on this file system: nothing to compare
  struct stat st{};
  if (lstat(path_.c_str(), &st) != 0 || st.st_dev != dev_ || st.st_ino != ino_) {
    throw ConfigError(concat("run.dir '", dir_, "' was moved, renamed or deleted while this job ran (", path_,
                             " is no longer its lock file): stopping before writing anywhere else; the files written "
                             "so far are in the folder wherever it went"));
  }
}

}  // namespace forge::train
