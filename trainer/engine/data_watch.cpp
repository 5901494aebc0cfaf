#include "trainer/engine/data_watch.h"

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include "core/error.h"
#include "core/log.h"
#include "core/names.h"
#include "core/strings.h"
#include "data/file_state.h"

namespace forge::train {

void requireUnchangedData(const std::vector<const data::SplitSource*>& sources, dist::Communicator& comm) {
  // Every file once (a train and an eval split often share one), in the same order on every
  // rank: they expand the same config.
  std::vector<std::pair<const data::SplitSource*, int>> files;
  std::set<std::string> seen;
  for (const data::SplitSource* s : sources) {
    for (int f = 0; f < s->files(); ++f) {
      if (seen.insert(s->path(f)).second) files.emplace_back(s, f);
    }
  }
  const int none = static_cast<int>(files.size());
  int first = none;
  std::string change;
  for (int i = 0; i < none && first == none; ++i) {
    change = files[i].first->changeOf(files[i].second);
    if (!change.empty()) first = i;
  }
  // The lowest index any rank found: every rank names the same file.
  const auto agreed = static_cast<int>(comm.allReduceScalar(first, dist::ReduceOp::kMin));
  if (agreed >= none) {
    if (agreed == none) return;  // also a rank with more files than this one found nothing
    throw DataError("a data file changed during the run on another rank (see its message)");
  }
  const auto& [source, f] = files[agreed];
  if (agreed != first) change = source->changeOf(f);
  if (change.empty()) change = "changed, as another rank found (this rank sees it unchanged)";
  throw DataError(data::changedFileMessage(source->path(f), change));
}

namespace {

class DataWatch : public LoopObserver {
 public:
  DataWatch(std::vector<const data::SplitSource*> sources, dist::Communicator& comm)
      : sources_(std::move(sources)), comm_(comm) {}

  void beforeStep(const TrainState& s, int64_t) override { pauseForTest(s.globalStep); }

  void afterEpoch(const EpochReport&) override { requireUnchangedData(sources_, comm_); }

 private:
  void pauseForTest(int64_t globalStep) const {
    static const char* step = std::getenv(env::kFaultPauseStep);
    static const char* file = std::getenv(env::kFaultPauseFile);
    if (step == nullptr || file == nullptr || std::atoll(step) != globalStep) return;
    std::ofstream(concat(file, ".rank", comm_.rank())) << globalStep << "\n";
    log::warn("fault", "test hook: paused before step ", globalStep, " until '", file, "' exists");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(10);
    while (!std::filesystem::exists(file) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  std::vector<const data::SplitSource*> sources_;
  dist::Communicator& comm_;
};

}  // namespace

std::unique_ptr<LoopObserver> makeDataWatch(std::vector<const data::SplitSource*> sources, dist::Communicator& comm) {
  return std::make_unique<DataWatch>(std::move(sources), comm);
}

}  // namespace forge::train
