// Test-only (env FORGE_SAMPLE_LOG): a record of the global sample indices of every
// micro-batch a rank trains on, one line each: "epoch global_step rank i i i ...". Off, it
// costs one branch per micro-batch.
#pragma once

#include <cstdint>
#include <cstdio>
#include <vector>

namespace forge::train {

class SampleLog {
 public:
  // Opens FORGE_SAMPLE_LOG.rank<rank> for appending when the variable is set.
  explicit SampleLog(int rank);
  ~SampleLog();
  SampleLog(const SampleLog&) = delete;
  SampleLog& operator=(const SampleLog&) = delete;

  bool on() const { return file_ != nullptr; }
  // The order the loader streams from now on, in micro-batches of `microBatch` (a copy, kept
  // only when on).
  void start(int64_t epoch, const std::vector<int64_t>& order, int64_t microBatch);
  // The next micro-batch of the order was trained on at `globalStep` (0-based).
  void record(int64_t epoch, int64_t globalStep);

 private:
  std::FILE* file_ = nullptr;
  int rank_;
  int64_t epoch_ = -1;
  std::vector<int64_t> order_;
  int64_t micro_ = 1;
  int64_t next_ = 0;
};

}  // namespace forge::train
