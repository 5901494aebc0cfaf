#include "checkpoint/checkpoint_dir.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <regex>

#include "core/error.h"

namespace forge::ckpt {
namespace {
namespace fs = std::filesystem;
const std::regex kPeriodicName(R"(ckpt-e(\d+)-s(\d+)\.pt)");
}  // namespace

CheckpointDir::CheckpointDir(std::string dir, int keepLast) : dir_(std::move(dir)), keepLast_(keepLast) {}

std::string CheckpointDir::pathFor(int64_t epoch, int64_t globalStep) const {
  char name[64];
  std::snprintf(name, sizeof name, "ckpt-e%04lld-s%09lld.pt", static_cast<long long>(epoch),
                static_cast<long long>(globalStep));
  return (fs::path(dir_) / name).string();
}

int64_t CheckpointDir::globalStepOf(const std::string& path) {
  std::smatch m;
  std::string name = fs::path(path).filename().string();
  return std::regex_match(name, m, kPeriodicName) ? std::stoll(m[2]) : -1;
}

std::string CheckpointDir::bestPath() const { return (fs::path(dir_) / "best.pt").string(); }

std::vector<std::string> CheckpointDir::list() const {
  std::vector<std::pair<std::pair<long long, long long>, std::string>> found;
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) return {};
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    std::smatch m;
    std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && std::regex_match(name, m, kPeriodicName)) {
      found.push_back({{std::stoll(m[2]), std::stoll(m[1])}, entry.path().string()});
    }
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(f.second);
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

std::string CheckpointDir::save(const Checkpoint& ck) {
  std::string path = pathFor(ck.epoch, ck.globalStep);
  forge::ckpt::save(ck, path);
  if (keepLast_ > 0) {
    auto all = list();
    for (size_t i = static_cast<size_t>(keepLast_); i < all.size(); ++i) {
      std::error_code ec;
      fs::remove(all[i], ec);
    }
  }
  return path;
}

void CheckpointDir::saveBest(const Checkpoint& ck) { forge::ckpt::save(ck, bestPath()); }

std::optional<CheckpointDir::Found> CheckpointDir::loadNewest() const {
  Found result;
  for (const auto& path : list()) {
    try {
      result.checkpoint = load(path);
      result.path = path;
      return result;
    } catch (const CheckpointError& e) {
      result.skipped.push_back(e.what());
    }
  }
  if (!result.skipped.empty()) {
    std::string all;
    for (const auto& s : result.skipped) all += "\n  " + s;
    throw CheckpointError(concat("no checkpoint in '", dir_, "' verifies:", all));
  }
  return std::nullopt;
}

}  // namespace forge::ckpt
