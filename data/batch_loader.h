// Streams batches of one split from its HDF5 files in a background thread, so that the
// training loop never waits for data and memory stays bounded by the configured buffer,
// not by the size of the data set.
//
// For each shuffle window of the epoch's order (data/sampler.h) the thread reads the
// window's samples as contiguous runs (one HDF5 read per run of whole chunks, into a small
// staging buffer that stays in cache; never one call per sample; nothing read twice in an
// epoch) and converts each row, in the same pass, to normalized float32 at its shuffled
// position in a window buffer, checking for NaN / Inf as it goes. The window's batches are
// then contiguous slices of that buffer, handed to the caller as views without another
// copy. Two window buffers exist (one being filled while the caller trains on the other).
//
// A batch is (x, y): x float32 of shape B x sampleShape, x = (raw * scale - mean) / std
// (mean and std per feature, per channel or one number); y int64 of shape B.
#pragma once

#include <ATen/ATen.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "data/source.h"

namespace forge::data {

struct Normalization {
  double scale = 1.0;              // applied first (1/255 for uint8 images)
  std::vector<double> mean{0.0};   // one value, one per channel (first sample dim), or one per feature
  std::vector<double> std{1.0};
};

// Per-feature mean and 1/std for a sample shape; ConfigError when a list fits neither the
// channels nor the features.
struct ExpandedNormalization {
  float scale = 1.0f;
  std::vector<float> mean;
  std::vector<float> invStd;
};
ExpandedNormalization expandNormalization(const Normalization& n, const std::vector<int64_t>& sampleShape);

struct Batch {
  at::Tensor x;
  at::Tensor y;
};

enum class NonFinite { kError, kSkip };

struct LoaderOptions {
  int64_t batchSize = 64;
  bool dropLast = false;
  size_t prefetch = 4;         // kept for the config; a whole window is assembled ahead
  int64_t window = 1 << 16;    // samples per read window (the sampler's shuffle window)
  bool pinMemory = false;      // page-locked batches, for non-blocking copies to a GPU
  NonFinite nonFinite = NonFinite::kError;
};

// Samples per window for a buffer of `bufferBytes` (two windows of float32 samples live at
// once; `rowBytes` is a converted sample's size): a multiple of the batch size, at least one.
int64_t windowFor(size_t bufferBytes, size_t rowBytes, int64_t batchSize);

// Reads the given samples at once (contiguous runs, one read each) into a batch; for shape
// probes and tests.
Batch readBatch(const SplitSource& source, const Normalization& norm, const std::vector<int64_t>& indices);

class BatchLoader {
 public:
  // `source` must outlive the loader.
  BatchLoader(const SplitSource& source, Normalization norm, LoaderOptions options);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  int64_t batchesPerEpoch(int64_t samples) const;

  // Starts streaming `order` (an epoch's visiting order for this rank) from sample `skip`
  // (a multiple of the batch size: where a resumed run continues). Stops any earlier epoch.
  void start(std::vector<int64_t> order, int64_t skip = 0);
  // The next batch, or nullopt at the end of the epoch. Rethrows the threads' errors (e.g.
  // DataError for a non-finite feature, naming the file, dataset, row and sample).
  std::optional<Batch> next();
  void stop();

  double waitSeconds() const { return waitSeconds_; }  // time next() spent waiting, in total
  int64_t rowsRead() const { return rowsRead_.load(); }
  int64_t readCalls() const { return readCalls_.load(); }
  int64_t skippedNonFinite() const { return skipped_.load(); }  // in the stream since start()
  // Busy time of the two threads (reading; gathering and converting), for benchmarks.
  double readSeconds() const { return readSeconds_; }
  double assembleSeconds() const { return assembleSeconds_ + inlineConvertSeconds_; }

 private:
  struct Buffers {
    at::Tensor x;  // window x rowElements float32: the converted samples in visiting order
    at::Tensor y;  // window int64
  };
  struct Window;
  struct Staged;
  void readLoop();
  void convertLoop();
  // Converts a staged run's rows into their places in its window (either thread).
  void convertRun(const Staged& st);
  Buffers freeBuffers(std::unique_lock<std::mutex>& lock);

  const SplitSource& source_;
  ExpandedNormalization norm_;
  LoaderOptions opt_;
  std::vector<int64_t> order_;
  int64_t skip_ = 0;

  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<Buffers> pool_;  // window buffers; batches handed out are views into them
  std::deque<Batch> batches_;
  std::vector<at::Tensor> staging_;  // raw rows as read, three buffers of ~2 MiB
  std::vector<int> freeStaging_;
  std::deque<Staged> staged_;        // read, waiting for the converter
  bool stopRequested_ = false;
  bool readerDone_ = true;
  bool consumerWaiting_ = false;    // the caller waits in next() for a batch
  bool readerWantsBuffer_ = false;  // the reader waits for a window buffer to be released
  std::exception_ptr error_;
  std::thread reader_;
  double waitSeconds_ = 0;
  std::atomic<int64_t> rowsRead_{0};
  std::atomic<int64_t> readCalls_{0};
  std::atomic<int64_t> skipped_{0};
  double readSeconds_ = 0;      // written by the reader thread only
  double assembleSeconds_ = 0;  // written by the converter thread only
  double inlineConvertSeconds_ = 0;  // the reader's share of converting (reader thread only)
};

}  // namespace forge::data
