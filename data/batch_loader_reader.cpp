// BatchLoader's windows and reader thread: the windows' sizes, the start of an epoch's
// stream, and for each window of the epoch's order the reader taking hold of the window's
// stored rows (see data/batch_loader_window.h); the batches are assembled in
// data/batch_loader.cpp.
#include "data/batch_loader.h"

#include <algorithm>
#include <chrono>

#include <pthread.h>
#include <sched.h>

#include "core/error.h"
#include "data/batch_loader_window.h"

namespace forge::data {

namespace {

// Ascending LSD radix sort of 64-bit keys, 11 bits a pass, only as many passes as the
// largest key needs: a window's keys (sample << shift | position) sort in a few linear
// passes instead of std::sort's n log n comparisons, which were a tenth of the reader's time.
void radixSort(std::vector<uint64_t>& keys, std::vector<uint64_t>& scratch) {
  uint64_t maxKey = 0;
  for (uint64_t k : keys) maxKey = std::max(maxKey, k);
  scratch.resize(keys.size());
  constexpr int kBits = 11;
  constexpr size_t kBuckets = size_t{1} << kBits;
  std::vector<size_t> count(kBuckets);
  for (int shift = 0; shift < 64 && (maxKey >> shift) != 0; shift += kBits) {
    std::fill(count.begin(), count.end(), 0);
    for (uint64_t k : keys) ++count[(k >> shift) & (kBuckets - 1)];
    size_t sum = 0;
    for (auto& c : count) {
      size_t n = c;
      c = sum;
      sum += n;
    }
    for (uint64_t k : keys) scratch[count[(k >> shift) & (kBuckets - 1)]++] = k;
    keys.swap(scratch);
  }
}

// The loader's threads run as background work (SCHED_BATCH): woken to refill the batches
// ahead, they do not preempt the training thread, which they would otherwise interrupt
// for the whole refill at every wake.
void runAsBackground() {
#if defined(__linux__)
  sched_param p{};
  p.sched_priority = 0;
  pthread_setschedparam(pthread_self(), SCHED_BATCH, &p);  // best effort: a refusal changes nothing
#endif
}

}  // namespace

int64_t windowFor(size_t bufferBytes, size_t rowBytes, int64_t batchSize) {
  int64_t k = static_cast<int64_t>(bufferBytes / 2 / std::max<size_t>(1, rowBytes));
  return std::max(batchSize, k / batchSize * batchSize);
}

int64_t globalWindowFor(size_t bufferBytes, size_t rowBytes, int64_t globalBatch) {
  const int64_t w = windowFor(bufferBytes, rowBytes, 1);
  return globalBatch > 0 ? std::max(globalBatch, w / globalBatch * globalBatch) : w;
}

void BatchLoader::start(std::vector<int64_t> order, int64_t skip, std::vector<int64_t> windowStarts) {
  stop();
  FORGE_CHECK(skip % opt_.batchSize == 0, "a loader starts at a batch boundary, not at sample ", skip);
  order_ = std::move(order);
  skip_ = std::min<int64_t>(skip, static_cast<int64_t>(order_.size()));
  const int64_t total = static_cast<int64_t>(order_.size());
  if (windowStarts.empty()) {
    for (int64_t first = 0; first < total; first += opt_.window) windowStarts.push_back(first);
  }
  for (size_t i = 0; i < windowStarts.size(); ++i) {
    FORGE_CHECK(windowStarts[i] % opt_.batchSize == 0 && windowStarts[i] < std::max<int64_t>(1, total) &&
                    (i == 0 ? windowStarts[i] == 0 : windowStarts[i] > windowStarts[i - 1]),
                "read windows must start at ascending batch boundaries from 0, not at ", windowStarts[i]);
  }
  windowStarts_ = std::move(windowStarts);
  skipped_ = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    readerDone_ = false;
  }
  reader_ = std::thread(&BatchLoader::readLoop, this);
}

// A window's samples in the order they are stored, cut into runs of consecutive rows of one
// file, each taken with one call. The reader keeps one and reuses its buffers from window
// to window.
class BatchLoader::RowRuns {
 public:
  struct Run {
    size_t begin, end;  // slots
    int64_t first, rows;
  };

  // Sorts the window's samples order[0, count) by index, remembering their positions.
  void sort(const int64_t* order, int64_t count) {
    shift_ = 1;
    while ((int64_t{1} << shift_) < count) ++shift_;
    slots_.resize(count);
    for (int64_t k = 0; k < count; ++k) {
      slots_[k] = (static_cast<uint64_t>(order[k]) << shift_) | static_cast<uint64_t>(k);
    }
    radixSort(slots_, scratch_);
  }

  // Cuts the sorted samples into runs: samples of one file at most maxGap rows apart, each
  // run at most runRows long.
  void split(const SplitSource& source, int64_t runRows, int64_t maxGap) {
    runs_.clear();
    for (size_t i = 0; i < slots_.size();) {
      const int64_t runFirst = sample(i);
      const int64_t end = source.fileEnd(source.fileOf(runFirst));
      size_t j = i;
      int64_t last = runFirst;
      while (j < slots_.size() && sample(j) - runFirst < runRows && sample(j) < end && sample(j) - last <= 1 + maxGap) {
        last = sample(j);
        ++j;
      }
      runs_.push_back(Run{i, j, runFirst, last - runFirst + 1});
      i = j;
    }
  }

  const std::vector<Run>& runs() const { return runs_; }
  int64_t sample(size_t k) const { return static_cast<int64_t>(slots_[k] >> shift_); }
  int64_t position(size_t k) const { return static_cast<int64_t>(slots_[k] & ((uint64_t{1} << shift_) - 1)); }

 private:
  std::vector<uint64_t> slots_, scratch_;  // (sample << shift_ | position) of each, sorted
  int shift_ = 1;
  std::vector<Run> runs_;
};

void BatchLoader::fail(std::exception_ptr e) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!error_) error_ = e;
  }
  cv_.notify_all();
}

void BatchLoader::readLoop() {
  runAsBackground();
  std::thread assembler([this] {
    runAsBackground();
    assembleLoop();
  });
  try {
    readWindows();
  } catch (...) {
    fail(std::current_exception());
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    readerDone_ = true;
  }
  cv_.notify_all();
  assembleLoop();  // the rest, on both threads
  assembler.join();
  cv_.notify_all();
}

void BatchLoader::readWindows() {
  const int64_t total = static_cast<int64_t>(order_.size());
  // Runs are capped so that a window's rows come in a few calls without one huge mapping.
  const int64_t runRows =
      std::max<int64_t>(1, static_cast<int64_t>((4u << 20) / std::max<size_t>(1, source_.rowBytes())));
  RowRuns runs;
  bool firstTaken = false;
  for (size_t i = 0; i < windowStarts_.size(); ++i) {
    const int64_t first = windowStarts_[i];
    const int64_t end = i + 1 < windowStarts_.size() ? windowStarts_[i + 1] : total;
    if (end <= skip_) continue;
    std::shared_ptr<Window> w = planWindow(first, end - first, total);
    if (w->batches.empty()) continue;
    if (!admitWindow(*w)) break;
    runs.sort(order_.data() + first, w->count);
    w->row.resize(w->count);
    auto r0 = std::chrono::steady_clock::now();
    runs.split(source_, runRows, opt_.maxGap);
    if (!firstTaken) {
      firstTaken = true;
      // The first window of the epoch is wanted at once: every run is requested from the
      // disk now, in parallel, rather than one after another as each is mapped (a cold
      // page cache). Later windows are taken while training is busy with earlier ones.
      for (const RowRuns::Run& r : runs.runs()) source_.willNeed(r.first, r.rows);
    }
    const bool complete = holdRows(*w, runs);
    readSeconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - r0).count();
    if (!complete) break;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      windows_.push_back(std::move(w));
    }
    cv_.notify_all();
  }
}

std::shared_ptr<BatchLoader::Window> BatchLoader::planWindow(int64_t first, int64_t count, int64_t total) const {
  auto w = std::make_shared<Window>();
  w->first = first;
  w->count = count;
  for (int64_t b0 = std::max(first, skip_) - first; b0 < w->count; b0 += opt_.batchSize) {
    const int64_t b1 = std::min(b0 + opt_.batchSize, w->count);
    if (b1 - b0 < opt_.batchSize && opt_.dropLast && first + b1 == total) break;
    w->batches.emplace_back(b0, b1);
  }
  w->built.resize(w->batches.size());
  w->failed.resize(w->batches.size());
  return w;
}

bool BatchLoader::admitWindow(Window& w) {
  // At most two windows hold rows; while waiting for one to be let go, assemble.
  std::unique_lock<std::mutex> lock(mutex_);
  while (windowsHeld_ >= 2 && !stopRequested_ && !error_) assembleOrWait(lock);
  if (stopRequested_ || error_) return false;
  ++windowsHeld_;
  if (!rawFree_.empty()) {
    w.raw = std::move(rawFree_.back());
    rawFree_.pop_back();
  }
  return true;
}

bool BatchLoader::holdRows(Window& w, const RowRuns& runs) {
  const size_t rowBytes = source_.rowBytes();
  int64_t rawUsed = 0;  // rows of the raw buffer filled
  int64_t spanRows = 0;  // rows of every run, gaps included: what the raw buffer may need
  for (const RowRuns::Run& r : runs.runs()) spanRows += r.rows;
  for (const RowRuns::Run& r : runs.runs()) {
    {
      std::lock_guard<std::mutex> lock(mutex_);  // a stop or an error need not wait for the window
      if (stopRequested_ || error_ != nullptr) return false;
    }
    // Mapped from the page cache when the file allows (the assembler then reads the
    // rows in place), else read into the window's raw buffer.
    MappedRows mapped = source_.map(r.first, r.rows);
    const char* base;
    if (mapped) {
      base = static_cast<const char*>(mapped.rows());
      w.maps.push_back(std::move(mapped));
    } else {
      // Sized at its first use in the window (a reused buffer may be too small), before any
      // row points into it.
      if (rawUsed == 0 && (!w.raw.defined() || w.raw.size(0) < spanRows)) {
        w.raw = at::empty({spanRows, source_.rowElements()}, source_.featureType());
      }
      char* dst = static_cast<char*>(w.raw.data_ptr()) + rawUsed * rowBytes;
      source_.read(r.first, r.rows, dst);
      rawUsed += r.rows;
      base = dst;
    }
    for (size_t k = r.begin; k < r.end; ++k) w.row[runs.position(k)] = base + (runs.sample(k) - r.first) * rowBytes;
    ++readCalls_;
    // The samples taken (rows stepped over in a gap are not counted; a sample twice in a
    // window, the padding's, is counted once).
    int64_t distinct = 0;
    for (size_t k = r.begin; k < r.end; ++k) distinct += k == r.begin || runs.sample(k) != runs.sample(k - 1);
    rowsRead_ += distinct;
  }
  return true;
}

}  // namespace forge::data
