#include "checkpoint/checkpoint_dir.h"

#include <sys/stat.h>

#include <algorithm>
#include <charconv>
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

std::string currentName(const Progress& p) {
  char name[80];
  std::snprintf(name, sizeof name, "ckpt-e%04lld-n%010lld.pt", static_cast<long long>(p.epoch),
                static_cast<long long>(p.samples));
  return name;
}

std::string earlierName(int64_t epoch, int64_t globalStep) {
  char name[80];
  std::snprintf(name, sizeof name, "ckpt-e%04lld-s%09lld.pt", static_cast<long long>(epoch),
                static_cast<long long>(globalStep));
  return name;
}

// What a periodic file's name states: a current name its progress, an earlier one its
// (epoch, global step).
struct Claim {
  bool earlier = false;
  int64_t first = 0, second = 0;
};

std::optional<int64_t> number(const std::ssub_match& m) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(&*m.first, &*m.first + m.length(), v);
  if (ec != std::errc() || end != &*m.first + m.length()) return std::nullopt;
  return v;
}

// nullopt unless the name is exactly one that forge writes: numbers in range, as many
// digits as forge prints.
std::optional<Claim> claimOf(const std::string& path) {
  const std::string name = fs::path(path).filename().string();
  std::smatch m;
  const bool earlier = !std::regex_match(name, m, kPeriodicName);
  if (earlier && !std::regex_match(name, m, kEarlierName)) return std::nullopt;
  auto a = number(m[1]), b = number(m[2]);
  if (!a || !b) return std::nullopt;
  if (name != (earlier ? earlierName(*a, *b) : currentName(Progress{*a, *b}))) return std::nullopt;
  return Claim{earlier, *a, *b};
}

// Most advanced first; between equals, current names before earlier ones, then by name.
void sortByProgress(std::vector<CheckpointDir::Entry>& entries) {
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    if (a.progress != b.progress) return a.progress > b.progress;
    bool an = std::regex_match(fs::path(a.path).filename().string(), kPeriodicName);
    bool bn = std::regex_match(fs::path(b.path).filename().string(), kPeriodicName);
    if (an != bn) return an;
    return a.path > b.path;
  });
}

}  // namespace

CheckpointDir::CheckpointDir(std::string dir, int keepLast) : dir_(std::move(dir)), keepLast_(keepLast) {}

std::string CheckpointDir::nameFor(const Progress& p) { return currentName(p); }
std::string CheckpointDir::pathFor(const Progress& p) const { return (fs::path(dir_) / currentName(p)).string(); }
std::string CheckpointDir::bestPath() const { return (fs::path(dir_) / "best.pt").string(); }
std::string CheckpointDir::lastPath() const { return (fs::path(dir_) / "last.pt").string(); }
std::string CheckpointDir::topDir() const { return (fs::path(dir_) / "top").string(); }
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

std::vector<std::string> CheckpointDir::leftovers() const {
  std::vector<std::string> out;
  std::error_code ec;
  if (fs::exists(bestPath(), ec)) out.push_back(bestPath());
  if (!fs::is_directory(dir_, ec)) return out;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    if (!entry.is_directory()) continue;
    for (const auto& inner : fs::recursive_directory_iterator(entry.path(), ec)) {
      if (!inner.is_directory()) out.push_back(inner.path().string());
    }
  }
  std::sort(out.begin(), out.end());
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

std::optional<CheckpointDir::Identity> CheckpointDir::identityOf(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  auto ns = [](const timespec& t) { return static_cast<int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec; };
  return Identity{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino),
                  static_cast<uint64_t>(st.st_size), ns(st.st_mtim), ns(st.st_ctim)};
}

void CheckpointDir::remember(const std::string& path, const Progress& progress) {
  if (auto id = identityOf(path)) {
    known_[path] = Known{*id, progress};
  } else {
    known_.erase(path);
  }
}

bool CheckpointDir::stillKnown(const std::string& path, Known& out) const {
  auto it = known_.find(path);
  if (it == known_.end()) return false;
  auto id = identityOf(path);
  if (!id || !(*id == it->second.identity)) return false;
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

std::vector<std::string> CheckpointDir::namedFiles() {
  std::vector<std::string> out;
  for (const auto& path : files()) {
    if (claimOf(path)) {
      out.push_back(path);
    } else {
      moveUnverified(path, concat("'", path, "' is named like a checkpoint but not as forge names one ",
                                  "(ckpt-e0002-n0000001664.pt: at least 4 and 10 digits, numbers below 2^63), so ",
                                  "its name cannot be trusted to say its progress"));
    }
  }
  return out;
}

Checkpoint CheckpointDir::loadChecked(const std::string& path, Progress& progress) {
  Checkpoint ck = load(path);
  progress = progressOf(ck, path);
  const Claim claim = *claimOf(path);
  const bool agrees = claim.earlier ? claim.first == ck.epoch && claim.second == ck.globalStep
                                    : Progress{claim.first, claim.second} == progress;
  if (!agrees) {
    auto named = claim.earlier ? concat("epoch ", claim.first, ", global step ", claim.second)
                               : Progress{claim.first, claim.second}.text();
    auto holds = claim.earlier ? concat("epoch ", ck.epoch, ", global step ", ck.globalStep) : progress.text();
    throw CheckpointError(concat("checkpoint '", path, "' is named for ", named, " but holds ", holds,
                                 " (copied or renamed?): its progress is its contents', and forge would name it ",
                                 currentName(progress)));
  }
  return ck;
}

std::vector<CheckpointDir::Entry> CheckpointDir::verified() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<Entry> out;
  for (const auto& path : namedFiles()) {
    Known k;
    if (stillKnown(path, k)) {
      out.push_back({path, k.progress});
      continue;
    }
    try {
      Progress p;
      loadChecked(path, p);
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
  replaceSymlinkAtomically(lastPath(), fs::path(path).filename().string());
  {
    std::lock_guard<std::mutex> lock(mutex_);
    remember(path, progress);
  }
  if (keepLast_ > 0) {
    auto all = verified();
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = static_cast<size_t>(keepLast_); i < all.size(); ++i) {
      if (all[i].path == path) continue;  // the one just written stays, whatever else is there
      // Deleted only as the file that verified moments ago: one changed since then stays
      // (the next save's pass reads it again).
      Known k;
      if (!stillKnown(all[i].path, k)) continue;
      std::error_code ec;
      fs::remove(all[i].path, ec);
      known_.erase(all[i].path);
    }
  }
  return path;
}

void CheckpointDir::saveBest(const Checkpoint& ck) { forge::ckpt::save(ck, bestPath()); }

std::string CheckpointDir::saveTop(const Checkpoint& ck) {
  std::string path = (fs::path(topDir()) / currentName(progressOf(ck, "the checkpoint being saved"))).string();
  forge::ckpt::save(ck, path);
  return path;
}

void CheckpointDir::removeTop(const std::string& name) {
  std::error_code ec;
  fs::remove(fs::path(topDir()) / name, ec);
}

std::optional<CheckpointDir::Found> CheckpointDir::loadNewest() {
  std::lock_guard<std::mutex> lock(mutex_);
  // Current names state their progress (a file whose contents disagree fails when it is
  // read below); earlier ones are read for it (and verified on the way).
  std::vector<Entry> candidates;
  Found result;
  for (const auto& path : namedFiles()) {
    const Claim claim = *claimOf(path);
    if (!claim.earlier) {
      candidates.push_back({path, Progress{claim.first, claim.second}});
      continue;
    }
    try {
      Progress p;
      loadChecked(path, p);
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
      Progress p;
      result.checkpoint = loadChecked(c.path, p);
      remember(c.path, p);
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
    throw CheckpointError(concat("no checkpoint in '", dir_, "' verifies (each was moved to ", unverifiedDir(), "):", all,
                                 "\nnothing was resumed: resume from a file of your choice with --resume PATH (",
                                 bestPath(), " if it is there), or repair one and move it back"));
  }
  return std::nullopt;
}

}  // namespace forge::ckpt
