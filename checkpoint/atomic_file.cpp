#include "checkpoint/atomic_file.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace forge::ckpt {
namespace {

namespace fs = std::filesystem;

constexpr size_t kWritePiece = 1 << 20;

std::string osError(const std::string& what, const std::string& path) {
  return concat(what, " '", path, "': ", std::strerror(errno));
}

// Owns a file descriptor.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

}  // namespace

void writeFileAtomically(const std::string& path, const std::vector<char>& bytes) {
  writeFileAtomically(path, [&](const ByteSink& sink) { sink(bytes.data(), bytes.size()); });
}

void writeFileAtomically(const std::string& path, const std::function<void(const ByteSink&)>& produce) {
  fs::path target(path);
  fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(dir, ec);
  std::string tmp = (dir / ("." + target.filename().string() + ".tmp." + std::to_string(::getpid()))).string();
  try {
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (fd.get() < 0) throw CheckpointError(osError("cannot create", tmp));
    produce([&](const char* data, size_t size) {
      size_t done = 0;
      while (done < size) {
        // Pieces of at most 1 MiB, as dd writes: one huge write() was measured slower.
        ssize_t n = ::write(fd.get(), data + done, std::min<size_t>(size - done, kWritePiece));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) throw CheckpointError(osError("cannot write", tmp));
        done += static_cast<size_t>(n);
      }
    });
    if (::fsync(fd.get()) != 0) throw CheckpointError(osError("cannot fsync", tmp));
    if (::close(fd.release()) != 0) throw CheckpointError(osError("cannot close", tmp));
    if (::rename(tmp.c_str(), path.c_str()) != 0) throw CheckpointError(osError("cannot rename into", path));
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  // The rename is durable only once the folder's entry is on disk.
  Fd dirFd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dirFd.get() >= 0) ::fsync(dirFd.get());
}

void replaceSymlinkAtomically(const std::string& link, const std::string& target) {
  fs::path path(link);
  fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  std::string tmp = (dir / ("." + path.filename().string() + ".tmp." + std::to_string(::getpid()))).string();
  ::unlink(tmp.c_str());  // one a killed process of the same pid left
  if (::symlink(target.c_str(), tmp.c_str()) != 0) throw CheckpointError(osError("cannot create the link", tmp));
  if (::rename(tmp.c_str(), link.c_str()) != 0) {
    std::string why = osError("cannot rename into", link);
    ::unlink(tmp.c_str());
    throw CheckpointError(why);
  }
  Fd dirFd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dirFd.get() >= 0) ::fsync(dirFd.get());
}

std::string moveWithoutReplacing(const std::string& from, const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  const std::string name = fs::path(from).filename().string();
  for (int i = 0;; ++i) {
    std::string target = (fs::path(dir) / (i == 0 ? name : concat(name, ".", i))).string();
    if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, target.c_str(), RENAME_NOREPLACE) == 0) return target;
    int err = errno;
    if (err == EEXIST) continue;
    if (err == EINVAL || err == ENOSYS) {
      // A file system without RENAME_NOREPLACE: check, then rename (not atomic, but never
      // over a file that was there before).
      if (fs::exists(target, ec)) continue;
      if (::rename(from.c_str(), target.c_str()) == 0) return target;
      err = errno;
    }
    throw CheckpointError(concat("cannot move '", from, "' to '", target, "': ", std::strerror(err)));
  }
}

std::string createNewFolder(const std::string& base) {
  for (int i = 1;; ++i) {
    std::string dir = i == 1 ? base : concat(base, ".", i);
    std::error_code ec;
    if (fs::create_directory(dir, ec)) return dir;
    if (ec && ec != std::errc::file_exists) {
      throw CheckpointError(concat("cannot create the folder '", dir, "': ", ec.message()));
    }
  }
}

std::vector<char> readWholeFile(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) throw CheckpointError(osError("cannot open checkpoint", path));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw CheckpointError(osError("cannot stat checkpoint", path));
  std::vector<char> bytes(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::read(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw CheckpointError(osError("cannot read checkpoint", path));
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  bytes.resize(done);
  return bytes;
}

}  // namespace forge::ckpt
