// Streams batches of one split from its HDF5 files in background threads, so that the
// training loop never waits for data and memory stays bounded by the configured buffer,
// not by the size of the data set.
//
// For each shuffle window of the epoch's order (data/sampler.h) the reader thread takes
// hold of the window's stored rows as contiguous runs (never one HDF5 call per sample,
// nothing read twice in an epoch): mapped from the page cache where the file stores them
// as forge reads them (unfiltered native chunks back to back, or a contiguous dataset),
// else read into a raw buffer of the window's size. Batches are then assembled one by one,
// by two threads, a few ahead of the caller (about 8 MiB of them, at most 16, at least
// `prefetch`): each gathers its rows in shuffled order from the held rows, converting them
// to normalized float32 and checking for NaN / Inf in the same pass, into a fresh batch
// that is still in cache when the caller uses it. The converted data never makes a trip
// through memory of its own. Rows of at most two windows are held at once (one being
// taken while the other's batches are built).
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

// The normalization as one multiply-add per value (data/batch_loader.cpp).
struct Affine;

struct Batch {
  at::Tensor x;
  at::Tensor y;
};

enum class NonFinite { kError, kSkip };

struct LoaderOptions {
  int64_t batchSize = 64;
  bool dropLast = false;
  size_t prefetch = 4;         // batches assembled ahead of the caller, at least
  int64_t window = 1 << 16;    // samples per read window, when start() is given no window starts
  bool pinMemory = false;      // page-locked batches, for non-blocking copies to a GPU
  NonFinite nonFinite = NonFinite::kError;
  // Rows a run of rows taken with one call may step over between two samples it needs (0:
  // runs of consecutive rows only). A rank's samples are 1 in world of a global window's
  // rows: with gaps allowed, a window still comes in runs of whole blocks, one mapping or one
  // read each, instead of one call per sample or two (the rows stepped over are mapped but
  // not touched, or read and not used).
  int64_t maxGap = 0;
};

// Samples per window for a buffer of `bufferBytes` (the rows of two windows are held at
// once; `rowBytes` is a converted sample's size, an upper bound of the stored one): a
// multiple of the batch size, at least one.
int64_t windowFor(size_t bufferBytes, size_t rowBytes, int64_t batchSize);

// Samples per global shuffle window (data/sampler.h) for a buffer of `bufferBytes`: a
// function of the buffer and the row size, and of `globalBatch` when it is a constant of the
// config (data.global_batch_size; 0: not set), never of the world size. A set global batch
// rounds the window to a multiple of it, so that no step straddles two windows: a rank then
// takes each window's rows in runs of whole blocks only, without the few rows of a step
// that reach into the next window (measured: 10-15% of the loader's throughput).
int64_t globalWindowFor(size_t bufferBytes, size_t rowBytes, int64_t globalBatch);

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
  // `windowStarts`: positions of `order` where read windows begin (ascending, from 0, each
  // a multiple of the batch size: DistributedSampler::Plan); empty: every options.window.
  void start(std::vector<int64_t> order, int64_t skip = 0, std::vector<int64_t> windowStarts = {});
  // The next batch, or nullopt at the end of the epoch. Rethrows the threads' errors (e.g.
  // DataError for a non-finite feature, naming the file, dataset, row and sample).
  std::optional<Batch> next();
  void stop();

  double waitSeconds() const { return waitSeconds_; }  // time next() spent waiting, in total
  int64_t rowsRead() const { return rowsRead_.load(); }
  int64_t readCalls() const { return readCalls_.load(); }
  int64_t skippedNonFinite() const { return skipped_.load(); }  // in the stream since start()
  // Busy time of the threads (taking hold of rows; assembling batches), for benchmarks:
  // read them once the epoch has ended.
  double readSeconds() const { return readSeconds_; }
  double assembleSeconds() const { return assembleSeconds_; }

 private:
  struct Window;   // data/batch_loader_window.h
  class RowRuns;   // data/batch_loader_reader.cpp
  // The reader thread (data/batch_loader_reader.cpp): takes hold of each window's rows in
  // turn, then assembles with the other thread until the epoch's batches are built.
  void readLoop();
  // Every window of the epoch, from the one holding sample skip_; stops early on a stop or
  // an error.
  void readWindows();
  // The window of the order starting at position `first` with its batches (none: nothing of
  // it is to be delivered).
  std::shared_ptr<Window> planWindow(int64_t first, int64_t count, int64_t total) const;
  // Waits until the window may hold rows (at most two do; assembling meanwhile) and hands it
  // a released raw buffer. False when the epoch stops or fails first.
  bool admitWindow(Window& w);
  // Takes hold of the window's rows, run by run (mapped, else read into its raw buffer).
  // False when the epoch stops or fails first.
  bool holdRows(Window& w, const RowRuns& runs);
  void assembleLoop();
  // Claims the next batch to assemble, if one may be (the oldest window's first unclaimed
  // batch, while fewer than aheadLimit_ are ahead of the caller), and assembles it. Called
  // with the lock held; releases it while working. False when there was nothing to claim.
  bool assembleOne(std::unique_lock<std::mutex>& lock);
  // assembleOne, or, when there is nothing to claim, a wait until something changes.
  void assembleOrWait(std::unique_lock<std::mutex>& lock);
  // The oldest window with a batch nobody has claimed yet, or null (lock held).
  std::shared_ptr<Window> firstUnclaimed() const;
  // Whether a run of batches is ready for the caller, enough to wake it for (lock held).
  bool runReady() const;
  Batch assemble(const Window& w, int64_t b0, int64_t b1);
  void fail(std::exception_ptr e);

  const SplitSource& source_;
  ExpandedNormalization norm_;
  std::shared_ptr<const Affine> affine_;
  LoaderOptions opt_;
  std::vector<int64_t> order_;
  std::vector<int64_t> windowStarts_;  // where each read window begins in order_
  int64_t skip_ = 0;

  std::mutex mutex_;
  std::condition_variable cv_;
  // Windows whose rows are held, in order: batches being assembled, then handed out.
  std::deque<std::shared_ptr<Window>> windows_;
  int windowsHeld_ = 0;             // including one the reader is still taking
  std::vector<at::Tensor> rawFree_; // raw buffers of released windows, for reuse
  int64_t ahead_ = 0;               // batches claimed and not yet handed out
  int64_t aheadLimit_ = 16;         // at most this many (see the constructor)
  int workersWaiting_ = 0;          // threads waiting for work (the caller's take may give some)
  bool stopRequested_ = false;
  bool readerDone_ = true;          // every window of the epoch is in windows_
  bool consumerWaiting_ = false;    // the caller waits in next() for a batch
  std::exception_ptr error_;
  std::thread reader_;
  double waitSeconds_ = 0;
  std::atomic<int64_t> rowsRead_{0};
  std::atomic<int64_t> readCalls_{0};
  std::atomic<int64_t> skipped_{0};
  // Written by the reader thread only, and under mutex_; read once the epoch has ended.
  double readSeconds_ = 0;
  double assembleSeconds_ = 0;
};

}  // namespace forge::data
