// BatchLoader's batch assembly (the conversion itself: data/batch_fill.h) and hand-out;
// the reader thread that takes hold of the rows is in data/batch_loader_reader.cpp.
#include "data/batch_loader.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>


#include "core/error.h"
#include "core/strings.h"
#include "data/batch_fill.h"
#include "data/batch_loader_window.h"
#include "data/file_state.h"
#include "data/mapped_pages.h"

namespace forge::data {

namespace {

// Sorted, unique sample indices and where each lands in the read buffer.
std::vector<int64_t> sortedUnique(const int64_t* first, const int64_t* last) {
  std::vector<int64_t> s(first, last);
  std::sort(s.begin(), s.end());
  s.erase(std::unique(s.begin(), s.end()), s.end());
  return s;
}

// Reads `sorted` (ascending, unique) into consecutive rows of `rows`: one read per run of
// consecutive samples of one file. Returns the number of reads.
int64_t readRuns(const SplitSource& source, const std::vector<int64_t>& sorted, at::Tensor& rows) {
  auto* out = static_cast<char*>(rows.data_ptr());
  const size_t rowBytes = source.rowBytes();
  int64_t calls = 0;
  size_t i = 0;
  while (i < sorted.size()) {
    int64_t end = source.fileEnd(source.fileOf(sorted[i]));
    size_t j = i + 1;
    while (j < sorted.size() && sorted[j] == sorted[j - 1] + 1 && sorted[j] < end) ++j;
    source.read(sorted[i], static_cast<int64_t>(j - i), out + i * rowBytes);
    ++calls;
    i = j;
  }
  return calls;
}

}  // namespace

Batch readBatch(const SplitSource& source, const Normalization& norm, const std::vector<int64_t>& indices) {
  Affine f(expandNormalization(norm, source.sampleShape()));
  std::vector<int64_t> sorted = sortedUnique(indices.data(), indices.data() + indices.size());
  at::Tensor rows = at::empty({static_cast<int64_t>(sorted.size()), source.rowElements()}, source.featureType());
  readRuns(source, sorted, rows);
  const int64_t n = static_cast<int64_t>(indices.size());
  BatchFill fill(source, f, n, /*pinned=*/false);
  for (int64_t k = 0; k < n; ++k) {
    int64_t r = std::lower_bound(sorted.begin(), sorted.end(), indices[k]) - sorted.begin();
    fill.put(rows.data_ptr(), r, indices[k], k);
  }
  return fill.batch(n);
}

BatchLoader::BatchLoader(const SplitSource& source, Normalization norm, LoaderOptions options)
    : source_(source),
      norm_(expandNormalization(norm, source.sampleShape())),
      affine_(std::make_shared<const Affine>(norm_)),
      opt_(options) {
  FORGE_CHECK(opt_.batchSize > 0, "batch size must be positive");
  opt_.prefetch = std::max<size_t>(1, opt_.prefetch);
  // Batches ahead of the caller: enough that a wake of the caller hands it a run of them,
  // few enough to stay in cache (about 8 MiB), and never fewer than `prefetch`.
  const int64_t batchBytes = opt_.batchSize * static_cast<int64_t>(source_.batchRowBytes());
  aheadLimit_ = std::max<int64_t>(static_cast<int64_t>(opt_.prefetch),
                                  std::clamp<int64_t>((8 << 20) / std::max<int64_t>(1, batchBytes), 2, 16));
  opt_.window = std::max(opt_.batchSize, opt_.window / opt_.batchSize * opt_.batchSize);
}

BatchLoader::~BatchLoader() { stop(); }

int64_t BatchLoader::batchesPerEpoch(int64_t samples) const {
  // Rounded up without samples + batchSize - 1, which overflows for a batch size near 2^63.
  return samples / opt_.batchSize + (!opt_.dropLast && samples % opt_.batchSize != 0 ? 1 : 0);
}

void BatchLoader::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopRequested_ = true;
  }
  cv_.notify_all();
  if (reader_.joinable()) reader_.join();
  std::lock_guard<std::mutex> lock(mutex_);
  windows_.clear();
  windowsHeld_ = 0;
  ahead_ = 0;
  stopRequested_ = false;
  readerDone_ = true;
  error_ = nullptr;
}

// Rows [b0, b1) of the window, converted, without those skipped as non-finite.
Batch BatchLoader::assemble(const Window& w, int64_t b0, int64_t b1) {
  const int64_t n = source_.rowElements();
  const int64_t rows = b1 - b0;
  const at::ScalarType type = source_.featureType();
  // Copies to a GPU run asynchronously from page-locked memory: such batches are made in it
  // (the CUDA host allocator orders its reuse after the copy).
  BatchFill fill(source_, *affine_, rows, opt_.pinMemory);
  const size_t rowBytes = source_.rowBytes();
  int64_t m = 0;
  int64_t nonFiniteAt = -1;  // position of a sample with a non-finite feature (nonFinite: kError)
  volatile int64_t converting = b0;  // read after a jump out of the loop (see readMappedPages)
  // Rows mapped from a file that is cut short meanwhile raise SIGBUS when read: the loop
  // then ends by a jump, so it holds nothing with a destructor.
  auto convertRows = [&] {
    for (int64_t p = b0; p < b1; ++p) {
      converting = p;
      if (p + 2 < b1) {
        // Rows lie apart in memory, where the hardware's prefetcher loses the stream: the row
        // after next is fetched now, while this one converts.
        // (Its first 4 KiB at most: large rows find the hardware prefetcher's stream.)
        const char* next = w.row[p + 2];
        for (size_t off = 0; off < std::min<size_t>(rowBytes, 4096); off += 64) __builtin_prefetch(next + off);
      }
      const int64_t sample = order_[w.first + p];
      if (!fill.put(w.row[p], 0, sample, m)) {
        if (opt_.nonFinite == NonFinite::kError) {
          nonFiniteAt = p;
          return;
        }
        ++skipped_;
        continue;
      }
      ++m;
    }
  };
  int64_t feature = -1;
  auto findFeature = [&] { feature = firstNonFinite(w.row[nonFiniteAt], type, 0, n); };
  if (!readMappedPages(convertRows) || (nonFiniteAt >= 0 && !readMappedPages(findFeature))) {
    const int64_t sample = order_[w.first + converting];
    const int file = source_.fileOf(sample);
    std::string change = source_.changeOf(file);
    if (change.empty()) change = "a page of it mapped into memory could not be read";
    throw DataError(concat(changedFileMessage(source_.path(file), change), " (found reading sample ", sample, ": ",
                           source_.locate(sample), ")"));
  }
  if (nonFiniteAt >= 0 && feature < 0) {
    // The file's values are finite: the normalization overflowed float32 (scale: 1e38).
    const int64_t sample = order_[w.first + nonFiniteAt];
    throw DataError(concat("sample ", sample, " of ", source_.name(), " (", source_.locate(sample),
                           ") has finite values in the file but not after data.normalize: its scale, mean or std "
                           "make them overflow float32; check those keys"));
  }
  if (nonFiniteAt >= 0) {
    const int64_t sample = order_[w.first + nonFiniteAt];
    throw DataError(concat("non-finite feature (NaN or Inf) at feature ", feature, " of sample ", sample, " of ",
                           source_.name(), " (", source_.locate(sample),
                           "): fix the data, or set data.non_finite: skip to leave such samples out"));
  }
  if (m == 0) {
    throw DataError(concat("every sample of a batch (positions ", w.first + b0, "..", w.first + b1,
                           " of this rank's epoch in ", source_.name(), ") has non-finite features"));
  }
  return fill.batch(m);
}

bool BatchLoader::assembleOne(std::unique_lock<std::mutex>& lock) {
  if (ahead_ >= aheadLimit_) return false;
  std::shared_ptr<Window> w = firstUnclaimed();
  if (!w) return false;
  const size_t b = w->claimed++;
  ++ahead_;
  lock.unlock();
  auto t0 = std::chrono::steady_clock::now();
  Batch batch;
  std::exception_ptr error;
  try {
    batch = assemble(*w, w->batches[b].first, w->batches[b].second);
  } catch (...) {
    error = std::current_exception();
  }
  std::vector<MappedRows> drop;  // unmapped outside the lock
  bool released = false;         // the reader may take another window
  const double busy = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  lock.lock();
  assembleSeconds_ += busy;
  if (error) w->failed[b] = error;
  else w->built[b] = std::move(batch);
  if (++w->assembled == w->batches.size()) {
    // Every batch is built: the window's rows are no longer needed.
    drop = std::move(w->maps);
    if (w->raw.defined()) rawFree_.push_back(std::move(w->raw));
    w->row = {};
    released = true;  // windowsHeld_ drops once the rows are unmapped
  }
  // A waiting caller is woken for a run of batches, not for each: a wake costs about as
  // much as assembling a batch.
  bool wake = consumerWaiting_ && runReady();
  if (released) {
    // Unmapped before the reader may take another window, so that the rows of at most two
    // are mapped at any time.
    lock.unlock();
    if (wake) cv_.notify_all();
    drop.clear();
    lock.lock();
    --windowsHeld_;
    wake = true;
  }
  lock.unlock();
  if (wake) cv_.notify_all();
  lock.lock();
  return true;
}

std::shared_ptr<BatchLoader::Window> BatchLoader::firstUnclaimed() const {
  for (const auto& w : windows_) {
    if (w->claimed < w->batches.size()) return w;
  }
  return nullptr;
}

bool BatchLoader::runReady() const {
  int64_t ready = 0;  // batches ready in the order the caller takes them, up to the first gap
  bool gap = false;
  for (auto& c : windows_) {
    for (size_t k = c->delivered; k < c->batches.size() && !gap; ++k) {
      if (c->ready(k)) ++ready;
      else gap = true;
    }
  }
  return ready >= aheadLimit_ / 2 || (ready == ahead_ && (ahead_ >= aheadLimit_ || !firstUnclaimed()));
}

void BatchLoader::assembleOrWait(std::unique_lock<std::mutex>& lock) {
  if (assembleOne(lock)) return;
  ++workersWaiting_;
  cv_.wait(lock);
  --workersWaiting_;
}

void BatchLoader::assembleLoop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopRequested_ && !error_ && !(readerDone_ && !firstUnclaimed())) assembleOrWait(lock);
}

std::optional<Batch> BatchLoader::next() {
  auto start = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mutex_);
  std::optional<Batch> out;
  while (true) {
    if (error_) std::rethrow_exception(error_);
    if (!windows_.empty()) {
      Window& w = *windows_.front();
      if (w.delivered < w.batches.size() && w.failed[w.delivered]) {
        error_ = w.failed[w.delivered];  // the threads stop; the epoch ends here
        lock.unlock();
        cv_.notify_all();
        std::rethrow_exception(error_);
      }
      if (w.delivered < w.batches.size() && w.built[w.delivered]) {
        out = std::move(w.built[w.delivered]);
        w.built[w.delivered].reset();
        ++w.delivered;
        --ahead_;
        if (w.delivered == w.batches.size()) windows_.pop_front();
        break;
      }
    } else if (readerDone_) {
      break;  // the end of the epoch
    }
    consumerWaiting_ = true;  // the threads wake the caller once a run of batches is ready
    cv_.wait(lock);
    consumerWaiting_ = false;
  }
  // Taking batches makes room for more to be assembled: the threads are woken once half
  // the room is free (after the clock stops: this is not waiting for data).
  const bool wake = workersWaiting_ > 0 && ahead_ <= aheadLimit_ / 2;
  lock.unlock();
  waitSeconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (wake) cv_.notify_all();
  return out;
}

}  // namespace forge::data
