#include "checkpoint/checkpoint_dir.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <regex>

#include "checkpoint/atomic_file.h"
#include "core/error.h"
#include "core/log.h"

namespace forge::ckpt {
namespace {
namespace fs = std::filesystem;
const std::regex kPeriodicName(R"(ckpt-e(\d+)-n(\d+)\.pt)");
// Earlier versions named periodic checkpoints by global step, which says nothing about
// progress across world sizes: such files are ordered by what they hold.
const std::regex kEarlierName(R"(ckpt-e(\d+)-s(\d+)\.pt)");

// The progress a current name states; nullopt for any other name.
std::optional<Progress> progressInName(const std::string& path) {
  std::smatch m;
  std::string name = fs::path(path).filename().string();
  if (!std::regex_match(name, m, kPeriodicName)) return std::nullopt;
  return Progress{std::stoll(m[1]), std::stoll(m[2])};
}

int64_t mtimeOf(const std::string& path) {
  std::error_code ec;
  auto t = fs::last_write_time(path, ec);
  return ec ? -1 : static_cast<int64_t>(t.time_since_epoch().count());
}

// Most advanced first; between equals, current names before earlier ones, then by name.
void sortByProgress(std::vector<CheckpointDir::Entry>& entries) {
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    if (a.progress != b.progress) return a.progress > b.progress;
    bool an = progressInName(a.path).has_value(), bn = progressInName(b.path).has_value();
    if (an != bn) return an;
    return a.path > b.path;
  });
}

}  // namespace

CheckpointDir::CheckpointDir(std::string dir, int keepLast) : dir_(std::move(dir)), keepLast_(keepLast) {}

std::string CheckpointDir::pathFor(const Progress& p) const {
  char name[80];
  std::snprintf(name, sizeof name, "ckpt-e%04lld-n%010lld.pt", static_cast<long long>(p.epoch),
                static_cast<long long>(p.samples));
  return (fs::path(dir_) / name).string();
}

std::string CheckpointDir::bestPath() const { return (fs::path(dir_) / "best.pt").string(); }
std::string CheckpointDir::unverifiedDir() const { return (fs::path(dir_) / "unverified").string(); }

std::vector<std::string> CheckpointDir::files() const {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) return out;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && (std::regex_match(name, kPeriodicName) || std::regex_match(name, kEarlierName))) {
      out.push_back(entry.path().string());
    }
  }
  std::sort(out.begin(), out.end(), std::greater<>());
  return out;
}

int CheckpointDir::removeStaleTemporaries() const {
  static const std::regex kTemporary(R"(\..+\.pt\.tmp\.\d+)");
  int removed = 0;
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) return 0;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    if (entry.is_regular_file() && std::regex_match(entry.path().filename().string(), kTemporary)) {
      if (fs::remove(entry.path(), ec)) ++removed;
    }
  }
  return removed;
}

void CheckpointDir::remember(const std::string& path, const Progress& progress) {
  std::error_code ec;
  known_[path] = Known{fs::file_size(path, ec), mtimeOf(path), progress};
}

bool CheckpointDir::stillKnown(const std::string& path, Known& out) const {
  auto it = known_.find(path);
  if (it == known_.end()) return false;
  std::error_code ec;
  if (it->second.size != fs::file_size(path, ec) || ec || it->second.mtime != mtimeOf(path)) return false;
  out = it->second;
  return true;
}

void CheckpointDir::moveUnverified(const std::string& path, const std::string& why) {
  known_.erase(path);
  try {
    std::string target = moveWithoutReplacing(path, unverifiedDir());
    log::warn("ckpt", why, ": moved to ", target, " (not counted by checkpoint.keep_last, never deleted)");
  } catch (const CheckpointError& e) {
    log::warn("ckpt", why, ": not counted as a checkpoint, and it could not be moved aside (", e.what(),
              "): delete or repair it");
  }
}

std::vector<CheckpointDir::Entry> CheckpointDir::verified() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<Entry> out;
  for (const auto& path : files()) {
    Known k;
    if (stillKnown(path, k)) {
      out.push_back({path, k.progress});
      continue;
    }
    try {
      Progress p = progressOf(load(path), path);
      remember(path, p);
      out.push_back({path, p});
    } catch (const CheckpointError& e) {
      moveUnverified(path, e.what());
    }
  }
  sortByProgress(out);
  return out;
}

std::string CheckpointDir::save(const Checkpoint& ck) {
  const Progress progress = progressOf(ck, "the checkpoint being saved");
  std::string path = pathFor(progress);
  forge::ckpt::save(ck, path);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    remember(path, progress);
  }
  if (keepLast_ > 0) {
    auto all = verified();
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = static_cast<size_t>(keepLast_); i < all.size(); ++i) {
      if (all[i].path == path) continue;  // the one just written stays, whatever else is there
      std::error_code ec;
      fs::remove(all[i].path, ec);
      known_.erase(all[i].path);
    }
  }
  return path;
}

void CheckpointDir::saveBest(const Checkpoint& ck) { forge::ckpt::save(ck, bestPath()); }

std::optional<CheckpointDir::Found> CheckpointDir::loadNewest() {
  std::lock_guard<std::mutex> lock(mutex_);
  // Current names state their progress; earlier ones are read for it (and verified on the way).
  std::vector<Entry> candidates;
  Found result;
  for (const auto& path : files()) {
    if (auto p = progressInName(path)) {
      candidates.push_back({path, *p});
      continue;
    }
    try {
      Progress p = progressOf(load(path), path);
      remember(path, p);
      candidates.push_back({path, p});
    } catch (const CheckpointError& e) {
      result.skipped.push_back(e.what());
      moveUnverified(path, e.what());
    }
  }
  sortByProgress(candidates);
  for (const auto& c : candidates) {
    try {
      result.checkpoint = load(c.path);
      remember(c.path, progressOf(result.checkpoint, c.path));
      result.path = c.path;
      return result;
    } catch (const CheckpointError& e) {
      result.skipped.push_back(e.what());
      moveUnverified(c.path, e.what());
    }
  }
  if (!result.skipped.empty()) {
    std::string all;
    for (const auto& s : result.skipped) all += "\n  " + s;
    throw CheckpointError(concat("no checkpoint in '", dir_, "' verifies (moved to ", unverifiedDir(), "):", all));
  }
  return std::nullopt;
}

}  // namespace forge::ckpt
