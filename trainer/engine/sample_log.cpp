#include "trainer/engine/sample_log.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "core/names.h"

namespace forge::train {

SampleLog::SampleLog(int rank) : rank_(rank) {
  const char* path = std::getenv(env::kSampleLog);
  if (path == nullptr || *path == '\0') return;
  file_ = std::fopen((std::string(path) + ".rank" + std::to_string(rank)).c_str(), "a");
}

SampleLog::~SampleLog() {
  if (file_ != nullptr) std::fclose(file_);
}

void SampleLog::start(int64_t epoch, const std::vector<int64_t>& order, int64_t microBatch) {
  if (!on()) return;
  epoch_ = epoch;
  order_ = order;
  micro_ = microBatch;
  next_ = 0;
}

void SampleLog::record(int64_t epoch, int64_t globalStep) {
  if (!on() || epoch != epoch_) return;
  const int64_t end = std::min<int64_t>(next_ + micro_, static_cast<int64_t>(order_.size()));
  std::string line = std::to_string(epoch) + " " + std::to_string(globalStep) + " " + std::to_string(rank_);
  for (int64_t i = next_; i < end; ++i) line += " " + std::to_string(order_[i]);
  line += "\n";
  std::fputs(line.c_str(), file_);
  std::fflush(file_);  // a rank stopped by a signal or a crash keeps what it trained on
  next_ = end;
}

}  // namespace forge::train
