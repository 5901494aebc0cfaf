#include "data/batch_loader.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "core/error.h"
#include "core/strings.h"

namespace forge::data {

ExpandedNormalization expandNormalization(const Normalization& n, const std::vector<int64_t>& sampleShape) {
  int64_t features = 1;
  for (int64_t d : sampleShape) features *= d;
  const int64_t channels = sampleShape.empty() ? 1 : sampleShape[0];
  auto expand = [&](const std::vector<double>& v, const char* key) {
    std::vector<float> out(features);
    const int64_t size = static_cast<int64_t>(v.size());
    if (size == 1) {
      std::fill(out.begin(), out.end(), static_cast<float>(v[0]));
    } else if (size == features) {
      for (int64_t j = 0; j < features; ++j) out[j] = static_cast<float>(v[j]);
    } else if (size == channels && sampleShape.size() >= 2) {
      const int64_t perChannel = features / channels;
      for (int64_t j = 0; j < features; ++j) out[j] = static_cast<float>(v[j / perChannel]);
    } else {
      throw ConfigError(concat("data.normalize.", key, " has ", size, " values; samples of shape ",
                               dimsText(sampleShape), " take 1, ", features, " (one per feature)",
                               sampleShape.size() >= 2 ? concat(" or ", channels, " (one per channel)") : ""));
    }
    return out;
  };
  ExpandedNormalization e;
  e.scale = static_cast<float>(n.scale);
  e.mean = expand(n.mean, "mean");
  std::vector<float> std = expand(n.std, "std");
  e.invStd.resize(features);
  for (int64_t j = 0; j < features; ++j) {
    if (!(std[j] > 0)) throw ConfigError(concat("data.normalize.std must be positive, feature ", j, " has ", std[j]));
    e.invStd[j] = 1.0f / std[j];
  }
  return e;
}

int64_t windowFor(size_t bufferBytes, size_t rowBytes, int64_t batchSize) {
  int64_t k = static_cast<int64_t>(bufferBytes / 2 / std::max<size_t>(1, rowBytes));
  return std::max(batchSize, k / batchSize * batchSize);
}

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

template <typename T>
int64_t firstNonFinite(const T* row, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    if (!std::isfinite(row[j])) return j;
  }
  return -1;
}

// Which feature of row r is not finite (for the message; only called once one is known).
int64_t firstNonFinite(const void* base, at::ScalarType type, int64_t r, int64_t n) {
  if (type == at::kFloat) return firstNonFinite(static_cast<const float*>(base) + r * n, n);
  if (type == at::kDouble) return firstNonFinite(static_cast<const double*>(base) + r * n, n);
  return -1;  // integers are always finite
}


// out = (in * scale - mean) / std, as one multiply-add per value: out = in * a + b.
struct Affine {
  std::vector<float> a, b;
  // The same a and b for every feature (one mean and std, the common case): the vector
  // loops then keep them in registers instead of loading two more values per value.
  bool uniform = true;
  explicit Affine(const ExpandedNormalization& nm) : a(nm.mean.size()), b(nm.mean.size()) {
    for (size_t j = 0; j < a.size(); ++j) {
      a[j] = nm.scale * nm.invStd[j];
      b[j] = -nm.mean[j] * nm.invStd[j];
      uniform = uniform && a[j] == a[0] && b[j] == b[0];
    }
  }
};

// Converts one row; returns false when a value is not finite. NaN and Inf stay non-finite
// through the affine map, so the check reads the output's exponent bits (all ones) in the
// same pass. An integer OR reduction keeps the loop vectorized (a float sum would not be).
template <typename T>
inline bool convertRowImpl(const T* in, float* out, int64_t n, const float* a, const float* b) {
  uint32_t bad = 0;
  for (int64_t j = 0; j < n; ++j) {
    float v = static_cast<float>(in[j]) * a[j] + b[j];
    out[j] = v;
    uint32_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    bad |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

// Built for AVX2 and for plain x86-64, chosen at load time by the CPU: the conversion is
// the loader's hottest loop.
#if defined(__x86_64__) && defined(__GNUC__)
#define FORGE_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FORGE_CLONES
#endif
FORGE_CLONES bool convertU8(const uint8_t* in, float* out, int64_t n, const float* a, const float* b) {
  return convertRowImpl(in, out, n, a, b);
}
FORGE_CLONES bool convertF32(const float* in, float* out, int64_t n, const float* a, const float* b) {
  return convertRowImpl(in, out, n, a, b);
}
FORGE_CLONES bool convertF64(const double* in, float* out, int64_t n, const float* a, const float* b) {
  return convertRowImpl(in, out, n, a, b);
}

#if defined(__x86_64__) && defined(__GNUC__)
// The same conversion with AVX2 and non-temporal stores: the converted rows go to a window
// buffer far larger than the caches and are read back only later, so writing around the
// caches saves the read-for-ownership of every line (the loader's largest memory cost).
// `out` must be 32-byte aligned; the caller checks, and fences before handing rows out.
__attribute__((target("avx2,fma"))) bool streamF32(const float* in, float* out, int64_t n, const float* a,
                                                   const float* b, bool uniform) {
  const __m256i expMask = _mm256_set1_epi32(0x7f800000);
  __m256i bad = _mm256_setzero_si256();
  int64_t j = 0;
  if (uniform) {
    const __m256 va = _mm256_set1_ps(a[0]), vb = _mm256_set1_ps(b[0]);
    for (; j + 8 <= n; j += 8) {
      __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(in + j), va, vb);
      _mm256_stream_ps(out + j, v);
      __m256i e = _mm256_and_si256(_mm256_castps_si256(v), expMask);
      bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(e, expMask));
    }
  }
  for (; j + 8 <= n; j += 8) {
    __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(in + j), _mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j));
    _mm256_stream_ps(out + j, v);
    __m256i e = _mm256_and_si256(_mm256_castps_si256(v), expMask);
    bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(e, expMask));
  }
  bool ok = _mm256_testz_si256(bad, bad);
  return convertRowImpl(in + j, out + j, n - j, a + j, b + j) && ok;
}

__attribute__((target("avx2,fma"))) void streamU8(const uint8_t* in, float* out, int64_t n, const float* a,
                                                  const float* b, bool uniform) {
  int64_t j = 0;
  if (uniform) {
    const __m256 va = _mm256_set1_ps(a[0]), vb = _mm256_set1_ps(b[0]);
    for (; j + 8 <= n; j += 8) {
      __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + j));
      __m256 raw = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
      _mm256_stream_ps(out + j, _mm256_fmadd_ps(raw, va, vb));
    }
  }
  for (; j + 8 <= n; j += 8) {
    __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + j));
    __m256 raw = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
    _mm256_stream_ps(out + j, _mm256_fmadd_ps(raw, _mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j)));
  }
  convertRowImpl(in + j, out + j, n - j, a + j, b + j);
}

const bool kHaveAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
inline void fenceStreams() { _mm_sfence(); }
#else
const bool kHaveAvx2 = false;
inline void fenceStreams() {}
#endif

// Row r of stored rows at `base` (type `type`, n values a row) into `out`, normalized.
bool convert(const void* base, at::ScalarType type, int64_t r, float* out, int64_t n, const Affine& f,
             bool stream = false) {
  stream = stream && kHaveAvx2 && reinterpret_cast<uintptr_t>(out) % 32 == 0;
  switch (type) {
    case at::kByte: {
      const uint8_t* in = static_cast<const uint8_t*>(base) + r * n;
#if defined(__x86_64__) && defined(__GNUC__)
      if (stream) return streamU8(in, out, n, f.a.data(), f.b.data(), f.uniform), true;
#endif
      convertU8(in, out, n, f.a.data(), f.b.data());
      return true;  // always finite
    }
    case at::kFloat: {
      const float* in = static_cast<const float*>(base) + r * n;
#if defined(__x86_64__) && defined(__GNUC__)
      if (stream) return streamF32(in, out, n, f.a.data(), f.b.data(), f.uniform);
#endif
      return convertF32(in, out, n, f.a.data(), f.b.data());
    }
    case at::kDouble: return convertF64(static_cast<const double*>(base) + r * n, out, n, f.a.data(), f.b.data());
    default: FORGE_CHECK(false, "unsupported feature type ", type);
  }
  return false;
}


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

std::vector<int64_t> batchShape(int64_t n, const std::vector<int64_t>& sample) {
  std::vector<int64_t> s{n};
  s.insert(s.end(), sample.begin(), sample.end());
  return s;
}

}  // namespace

Batch readBatch(const SplitSource& source, const Normalization& norm, const std::vector<int64_t>& indices) {
  Affine f(expandNormalization(norm, source.sampleShape()));
  std::vector<int64_t> sorted = sortedUnique(indices.data(), indices.data() + indices.size());
  at::Tensor rows = at::empty({static_cast<int64_t>(sorted.size()), source.rowElements()}, source.featureType());
  readRuns(source, sorted, rows);
  const int64_t n = static_cast<int64_t>(indices.size());
  at::Tensor x = at::empty(batchShape(n, source.sampleShape()), at::kFloat);
  at::Tensor y = at::empty({n}, at::kLong);
  const int64_t* labels = source.labels().data_ptr<int64_t>();
  for (int64_t k = 0; k < n; ++k) {
    int64_t r = std::lower_bound(sorted.begin(), sorted.end(), indices[k]) - sorted.begin();
    convert(rows.data_ptr(), rows.scalar_type(), r, x.data_ptr<float>() + k * source.rowElements(),
            source.rowElements(), f);
    y.data_ptr<int64_t>()[k] = labels[indices[k]];
  }
  return Batch{x, y};
}

BatchLoader::BatchLoader(const SplitSource& source, Normalization norm, LoaderOptions options)
    : source_(source), norm_(expandNormalization(norm, source.sampleShape())), opt_(options) {
  FORGE_CHECK(opt_.batchSize > 0, "batch size must be positive");
  opt_.prefetch = std::max<size_t>(1, opt_.prefetch);
  opt_.window = std::max(opt_.batchSize, opt_.window / opt_.batchSize * opt_.batchSize);
}

BatchLoader::~BatchLoader() { stop(); }

int64_t BatchLoader::batchesPerEpoch(int64_t samples) const {
  return opt_.dropLast ? samples / opt_.batchSize : (samples + opt_.batchSize - 1) / opt_.batchSize;
}

void BatchLoader::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopRequested_ = true;
  }
  cv_.notify_all();
  if (reader_.joinable()) reader_.join();
  std::lock_guard<std::mutex> lock(mutex_);
  batches_.clear();
  stopRequested_ = false;
  readerDone_ = true;
  error_ = nullptr;
}

void BatchLoader::start(std::vector<int64_t> order, int64_t skip) {
  stop();
  FORGE_CHECK(skip % opt_.batchSize == 0, "a loader starts at a batch boundary, not at sample ", skip);
  order_ = std::move(order);
  skip_ = std::min<int64_t>(skip, static_cast<int64_t>(order_.size()));
  skipped_ = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    readerDone_ = false;
  }
  reader_ = std::thread(&BatchLoader::readLoop, this);
}

// A window buffer nobody else references (the batches handed out are views into it), or a
// new one. Two exist normally; a caller that keeps batches of older windows alive gets more
// rather than a deadlock.
BatchLoader::Buffers BatchLoader::freeBuffers(std::unique_lock<std::mutex>& lock) {
  const int64_t n = source_.rowElements();
  while (true) {
    for (auto& b : pool_) {
      // Free: no window holds the tensor (its own count) and no batch views its memory (the
      // storage's count: views are other tensors sharing it).
      if (b.x.use_count() == 1 && b.x.storage().use_count() == 1 && b.y.use_count() == 1 &&
          b.y.storage().use_count() == 1) {
        return b;
      }
    }
    if (pool_.size() < 2 || (batches_.empty() && consumerWaiting_)) {
      pool_.push_back(Buffers{at::empty({opt_.window, n}, at::kFloat), at::empty({opt_.window}, at::kLong)});
      return pool_.back();
    }
    // Batches of the previous window are still in use; they are released as the caller
    // takes new ones, which notifies.
    readerWantsBuffer_ = true;
    cv_.wait_for(lock, std::chrono::milliseconds(1));
    readerWantsBuffer_ = false;
    if (stopRequested_) return Buffers{};
  }
}

// Two threads per epoch, a pipeline:
//   reader     for each window of the order: sorts its samples, then reads them as
//              contiguous runs (one HDF5 call per run of whole chunks, each sample once) into
//              small staging buffers that stay in cache;
//   converter  converts each staged row to normalized float32 straight into its shuffled
//              position in the window's buffer, checking for NaN / Inf in the same pass;
//              once a window is complete, its batches (contiguous slices of the buffer) go to
//              the caller as views, with no further copy.
// Reading from storage and converting in memory overlap; three staging buffers circulate.
struct BatchLoader::Window {
  int64_t first = 0;  // position of the window in the order
  int64_t count = 0;
  // (sample << shift | position in the window), ascending: sorting one integer per sample
  // keeps this off the reader's critical path.
  std::vector<uint64_t> slots;
  int shift = 0;
  // Positions whose sample has non-finite features (data.non_finite: skip); written by
  // both threads at distinct positions, read once the window is complete.
  std::vector<char> bad;
  std::atomic<bool> anyBad{false};
  int64_t sample(size_t k) const { return static_cast<int64_t>(slots[k] >> shift); }
  int64_t position(size_t k) const { return static_cast<int64_t>(slots[k] & ((uint64_t{1} << shift) - 1)); }
  Buffers buf;
};

struct BatchLoader::Staged {
  std::shared_ptr<Window> window;  // null: the end of the epoch
  size_t begin = 0, end = 0;       // slots of this run
  int64_t runFirst = 0;            // first sample of the run
  int staging = -1;                // the staging buffer holding the run (or its slot, when mapped)
  bool windowDone = false;         // the window is complete (no rows)
  std::shared_ptr<MappedRows> mapped;  // the run's rows mapped from the file, when they could be
};

void BatchLoader::readLoop() {
  const int64_t total = static_cast<int64_t>(order_.size());
  const int64_t stagingRows = std::max<int64_t>(1, static_cast<int64_t>((4u << 20) / std::max<size_t>(1, source_.rowBytes())));
  {
    std::lock_guard<std::mutex> lock(mutex_);
    staging_.clear();
    freeStaging_.clear();
    for (int i = 0; i < 3; ++i) {
      staging_.push_back(at::empty({stagingRows, source_.rowElements()}, source_.featureType()));
      freeStaging_.push_back(i);
    }
    staged_.clear();
  }
  std::thread converter(&BatchLoader::convertLoop, this);
  std::vector<uint64_t> scratch;  // for sorting each window's samples
  auto push = [&](Staged st) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      staged_.push_back(std::move(st));
    }
    cv_.notify_all();
  };
  try {
    for (int64_t first = skip_ / opt_.window * opt_.window; first < total; first += opt_.window) {
      auto w = std::make_shared<Window>();
      w->first = first;
      w->count = std::min(opt_.window, total - first);
      {
        std::unique_lock<std::mutex> lock(mutex_);
        if (stopRequested_ || error_) break;
        w->buf = freeBuffers(lock);
        if (stopRequested_ || !w->buf.x.defined()) break;
      }
      w->shift = 1;
      while ((int64_t{1} << w->shift) < w->count) ++w->shift;
      w->slots.resize(w->count);
      w->bad.assign(w->count, 0);
      for (int64_t k = 0; k < w->count; ++k) {
        w->slots[k] = (static_cast<uint64_t>(order_[first + k]) << w->shift) | static_cast<uint64_t>(k);
      }
      radixSort(w->slots, scratch);
      size_t i = 0;
      while (i < w->slots.size()) {
        // A run: consecutive samples of one file, at most a staging buffer.
        const int64_t runFirst = w->sample(i);
        const int64_t end = source_.fileEnd(source_.fileOf(runFirst));
        size_t j = i;
        int64_t last = runFirst;
        while (j < w->slots.size() && w->sample(j) - runFirst < stagingRows && w->sample(j) < end &&
               w->sample(j) - last <= 1) {
          last = w->sample(j);
          ++j;
        }
        const int64_t rows = last - runFirst + 1;
        int staging;
        {
          std::unique_lock<std::mutex> lock(mutex_);
          cv_.wait(lock, [&] { return stopRequested_ || error_ || !freeStaging_.empty(); });
          if (stopRequested_ || error_) break;
          staging = freeStaging_.back();
          freeStaging_.pop_back();
        }
        // Mapped from the page cache when the file allows (the converter then reads the
        // rows in place: one copy less), else copied into the staging buffer. Either way a
        // staging slot is held, which bounds the runs in flight.
        auto r0 = std::chrono::steady_clock::now();
        auto mapped = std::make_shared<MappedRows>(source_.map(runFirst, rows));
        if (!*mapped) {
          mapped.reset();
          source_.read(runFirst, rows, staging_[staging].data_ptr());
        }
        readSeconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - r0).count();
        ++readCalls_;
        rowsRead_ += rows;
        Staged st{w, i, j, runFirst, staging, false, std::move(mapped)};
        bool converterBusy;
        {
          std::lock_guard<std::mutex> lock(mutex_);
          converterBusy = !staged_.empty();
        }
        if (converterBusy) {
          // The converter has a run queued already: this one is converted here, so both
          // cores convert (with mapped rows, reading is the lighter half of the work).
          auto c0 = std::chrono::steady_clock::now();
          convertRun(st);
          st.mapped.reset();
          {
            std::lock_guard<std::mutex> lock(mutex_);
            freeStaging_.push_back(staging);
          }
          inlineConvertSeconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - c0).count();
        } else {
          push(std::move(st));
        }
        i = j;
      }
      push(Staged{w, 0, 0, 0, -1, true, nullptr});
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!error_) error_ = std::current_exception();
  }
  push(Staged{});  // end of the epoch
  converter.join();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    readerDone_ = true;
  }
  cv_.notify_all();
}

void BatchLoader::convertRun(const Staged& st) {
  Window& w = *st.window;
  const int64_t n = source_.rowElements();
  const int64_t* labels = source_.labels().data_ptr<int64_t>();
  const Affine affine(norm_);
  float* x = w.buf.x.data_ptr<float>();
  int64_t* y = w.buf.y.data_ptr<int64_t>();
  const void* rows = st.mapped ? st.mapped->rows() : staging_[st.staging].data_ptr();
  const at::ScalarType type = source_.featureType();
  for (size_t k = st.begin; k < st.end; ++k) {
    const int64_t sample = w.sample(k);
    const int64_t pos = w.position(k);
    y[pos] = labels[sample];
    if (!convert(rows, type, sample - st.runFirst, x + pos * n, n, affine, /*stream=*/true)) {
      if (opt_.nonFinite == NonFinite::kError) {
        throw DataError(concat("non-finite feature (NaN or Inf) at feature ",
                               firstNonFinite(rows, type, sample - st.runFirst, n), " of sample ", sample, " of ",
                               source_.name(), " (", source_.locate(sample),
                               "): fix the data, or set data.non_finite: skip to leave such samples out"));
      }
      w.bad[pos] = 1;
      w.anyBad = true;
    }
  }
  fenceStreams();  // this thread's non-temporal stores land before the run counts as done
}

void BatchLoader::convertLoop() {
  try {
    const int64_t total = static_cast<int64_t>(order_.size());
    const int64_t n = source_.rowElements();
    while (true) {
      Staged st;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return stopRequested_ || error_ || !staged_.empty(); });
        if (stopRequested_ || error_) break;
        st = std::move(staged_.front());
        staged_.pop_front();
      }
      if (!st.window) break;  // the end of the epoch
      Window& w = *st.window;
      auto t0 = std::chrono::steady_clock::now();
      float* x = w.buf.x.data_ptr<float>();
      int64_t* y = w.buf.y.data_ptr<int64_t>();
      if (!st.windowDone) {
        convertRun(st);
        st.mapped.reset();  // unmapped before its slot frees up
        {
          std::lock_guard<std::mutex> lock(mutex_);
          freeStaging_.push_back(st.staging);
        }
        cv_.notify_all();
        assembleSeconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        continue;
      }
      fenceStreams();  // the non-temporal stores are visible before any batch is handed out
      // The window is complete: its batches are slices [b0, b1) of the buffer, without the
      // rows skipped as non-finite (the good ones move up within their batch).
      std::vector<Batch> out;
      for (int64_t b0 = std::max(w.first, skip_) - w.first; b0 < w.count; b0 += opt_.batchSize) {
        const int64_t b1 = std::min(b0 + opt_.batchSize, w.count);
        if (b1 - b0 < opt_.batchSize && opt_.dropLast && w.first + b1 == total) break;
        int64_t m = b1 - b0;
        if (w.anyBad) {
          m = 0;
          for (int64_t p = b0; p < b1; ++p) {
            if (w.bad[p]) {
              ++skipped_;
              continue;
            }
            if (b0 + m != p) {
              std::memcpy(x + (b0 + m) * n, x + p * n, n * sizeof(float));
              y[b0 + m] = y[p];
            }
            ++m;
          }
          if (m == 0) {
            throw DataError(concat("every sample of a batch (positions ", w.first + b0, "..", w.first + b1,
                                   " of this rank's epoch in ", source_.name(), ") has non-finite features"));
          }
        }
        std::vector<int64_t> shape = batchShape(m, source_.sampleShape());
        Batch b{w.buf.x.narrow(0, b0, m).view(shape), w.buf.y.narrow(0, b0, m)};
        if (opt_.pinMemory) {
          // Copies to a GPU run asynchronously from page-locked memory that must stay
          // untouched until they finish: such batches get their own pinned memory, whose
          // reuse the CUDA host allocator orders after the copy.
          Batch pinned{at::empty(shape, at::TensorOptions().dtype(at::kFloat).pinned_memory(true)),
                       at::empty({m}, at::TensorOptions().dtype(at::kLong).pinned_memory(true))};
          pinned.x.copy_(b.x);
          pinned.y.copy_(b.y);
          b = std::move(pinned);
        }
        out.push_back(std::move(b));
      }
      st.window.reset();  // only the batches keep the buffer busy now
      assembleSeconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      {
        std::lock_guard<std::mutex> lock(mutex_);
        for (auto& b : out) batches_.push_back(std::move(b));
      }
      cv_.notify_all();
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!error_) error_ = std::current_exception();
  }
  cv_.notify_all();
}

std::optional<Batch> BatchLoader::next() {
  auto start = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mutex_);
  // The batch taken before this call is likely released now: tell a reader waiting for a
  // buffer (only then: waking the threads for nothing costs more than the wait it measures).
  if (readerWantsBuffer_) cv_.notify_all();
  if (batches_.empty() && !readerDone_ && !error_) {
    consumerWaiting_ = true;
    cv_.notify_all();
    cv_.wait(lock, [&] { return !batches_.empty() || readerDone_ || error_; });
    consumerWaiting_ = false;
  }
  waitSeconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (error_) std::rethrow_exception(error_);
  if (batches_.empty()) return std::nullopt;
  Batch b = std::move(batches_.front());
  batches_.pop_front();
  return b;
}

}  // namespace forge::data
