#include "trainer/engine/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "core/error.h"
#include "core/strings.h"

namespace forge::train {
namespace {

std::string holderOf(int fd) {
  char text[512] = {0};
  ssize_t n = pread(fd, text, sizeof text - 1, 0);
  std::string s = n > 0 ? std::string(text, static_cast<size_t>(n)) : std::string();
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s.empty() ? "a job that has not yet written its host and pid" : s;
}

}  // namespace

RunDirLock::RunDirLock(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw ConfigError(concat("run.dir '", dir, "' cannot be created: ", ec.message()));
  const std::string path = (std::filesystem::path(dir) / kFileName).string();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw ConfigError(concat("run.dir '", dir, "': cannot open its lock file ", path, ": ", std::strerror(errno)));
  if (flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    std::string holder = err == EWOULDBLOCK ? holderOf(fd_) : std::string();
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK) {
      throw ConfigError(concat("run.dir '", dir, "' is in use by another forge job (", holder,
                               "): two jobs would overwrite each other's checkpoints and metrics. Wait for it to end "
                               "(or stop it), or give this run another run.dir"));
    }
    throw ConfigError(concat("run.dir '", dir, "': cannot lock ", path, " (", std::strerror(err),
                             "); forge needs file locks in the run dir to keep two jobs from writing it at once"));
  }
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  std::time_t now = std::time(nullptr);
  char when[32] = {0};
  std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&now));
  const std::string me = concat("host ", host, ", pid ", getpid(), ", since ", when, "\n");
  if (ftruncate(fd_, 0) != 0 || pwrite(fd_, me.data(), me.size(), 0) != static_cast<ssize_t>(me.size())) {
    // The lock holds without the note; only the message a second job would print is poorer.
  }
}

RunDirLock::~RunDirLock() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace forge::train
