// Assembles batches in a background thread and hands them over through a bounded queue, so
// the training loop never waits on gathering and converting samples.
//
// A batch is (x, y): x float32 of shape B x sampleShape, normalized as
// x = (raw * scale - mean) / std; y int64 of shape B.
#pragma once

#include <ATen/ATen.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include "data/dataset.h"

namespace forge::data {

struct Normalization {
  double scale = 1.0;  // applied first (1/255 for uint8 images)
  double mean = 0.0;
  double std = 1.0;
};

struct Batch {
  at::Tensor x;
  at::Tensor y;
};

// Builds one batch from the given sample indices (used by the loader's thread and by the
// trainer's shape probe).
Batch makeBatch(const SplitData& data, const Normalization& norm, const int64_t* indices, int64_t count);

class BatchLoader {
 public:
  // `data` must outlive the loader. `prefetch` bounds the queue (batches held in memory).
  // pinMemory: batches are handed over in page-locked host memory, so that the copy to a GPU
  // can be non-blocking and overlap compute.
  BatchLoader(const SplitData& data, Normalization norm, int64_t batchSize, bool dropLast, size_t prefetch = 4,
              bool pinMemory = false);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  // Starts an epoch over `indices` (in visiting order); stops any epoch still running.
  void start(std::vector<int64_t> indices);
  // The next batch of the epoch, blocking until it is ready; nullopt after the last.
  // Errors raised in the loader thread are rethrown here.
  std::optional<Batch> next();

  int64_t batchesPerEpoch(int64_t samples) const;
  // Seconds next() spent waiting for the loader thread since construction.
  double waitSeconds() const { return waitSeconds_; }

 private:
  void stop();
  void produce(std::vector<int64_t> indices);

  const SplitData& data_;
  Normalization norm_;
  int64_t batchSize_;
  bool dropLast_;
  size_t prefetch_;
  bool pinMemory_ = false;

  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Batch> queue_;
  bool producerDone_ = true;
  bool stopRequested_ = false;
  std::exception_ptr error_;
  double waitSeconds_ = 0;
};

}  // namespace forge::data
