// Streams batches of one split from its HDF5 files in background threads, so that the
// training loop never waits for data and memory stays bounded by the configured buffer,
// not by the size of the data set.
//
//   reader thread     reads the next shuffle window of the epoch's order (data/sampler.h):
//                     the window's samples sorted into contiguous runs, one HDF5 read per
//                     run (whole chunks; never one call per sample; nothing read twice in
//                     an epoch), non-finite features detected as they arrive;
//   assembler thread  gathers each batch from the window in visiting order, converts to
//                     float32 and normalizes in one pass, optionally into pinned memory;
//   the caller        takes batches from a bounded queue (next()).
// At most two windows and `prefetch` batches exist at once.
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
  size_t prefetch = 4;         // batches assembled ahead
  int64_t window = 1 << 16;    // samples per read window (the sampler's shuffle window)
  bool pinMemory = false;      // page-locked batches, for non-blocking copies to a GPU
  NonFinite nonFinite = NonFinite::kError;
};

// Samples per window for a buffer of `bufferBytes` (two windows live at once): a multiple of
// the batch size, at least one batch.
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
  int64_t skippedNonFinite() const { return skipped_.load(); }

  struct Window;

 private:
  void readLoop();
  void assembleLoop();

  const SplitSource& source_;
  ExpandedNormalization norm_;
  LoaderOptions opt_;
  std::vector<int64_t> order_;
  int64_t skip_ = 0;

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Window>> windows_;  // read, waiting for the assembler
  int liveWindows_ = 0;                          // read or being read, not yet assembled
  std::deque<Batch> batches_;
  bool stopRequested_ = false;
  bool readerDone_ = true;
  bool assemblerDone_ = true;
  std::exception_ptr error_;
  std::thread reader_;
  std::thread assembler_;
  double waitSeconds_ = 0;
  std::atomic<int64_t> rowsRead_{0};
  std::atomic<int64_t> readCalls_{0};
  std::atomic<int64_t> skipped_{0};
};

}  // namespace forge::data
