// The normalization, its conversion kernels and BatchLoader's batch assembly and hand-out;
// the reader thread that takes hold of the rows is in data/batch_loader_reader.cpp.
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
#include "data/batch_loader_window.h"
#include "data/file_state.h"
#include "data/mapped_pages.h"

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
// The conversion with AVX2 and FMA, one multiply-add per value. With one mean and std for
// every feature (the common case) a and b stay in registers instead of being loaded for
// each value.
__attribute__((target("avx2,fma"))) bool convertF32Fma(const float* in, float* out, int64_t n, const float* a,
                                                       const float* b, bool uniform) {
  const __m256i expMask = _mm256_set1_epi32(0x7f800000);
  __m256i bad = _mm256_setzero_si256();
  int64_t j = 0;
  if (uniform) {
    const __m256 va = _mm256_set1_ps(a[0]), vb = _mm256_set1_ps(b[0]);
    for (; j + 8 <= n; j += 8) {
      __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(in + j), va, vb);
      _mm256_storeu_ps(out + j, v);
      __m256i e = _mm256_and_si256(_mm256_castps_si256(v), expMask);
      bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(e, expMask));
    }
  }
  for (; j + 8 <= n; j += 8) {
    __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(in + j), _mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j));
    _mm256_storeu_ps(out + j, v);
    __m256i e = _mm256_and_si256(_mm256_castps_si256(v), expMask);
    bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(e, expMask));
  }
  bool ok = _mm256_testz_si256(bad, bad);
  return convertRowImpl(in + j, out + j, n - j, a + j, b + j) && ok;
}

__attribute__((target("avx2,fma"))) void convertU8Fma(const uint8_t* in, float* out, int64_t n, const float* a,
                                                      const float* b, bool uniform) {
  int64_t j = 0;
  if (uniform) {
    const __m256 va = _mm256_set1_ps(a[0]), vb = _mm256_set1_ps(b[0]);
    for (; j + 8 <= n; j += 8) {
      __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + j));
      __m256 raw = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
      _mm256_storeu_ps(out + j, _mm256_fmadd_ps(raw, va, vb));
    }
  }
  for (; j + 8 <= n; j += 8) {
    __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + j));
    __m256 raw = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
    _mm256_storeu_ps(out + j, _mm256_fmadd_ps(raw, _mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j)));
  }
  convertRowImpl(in + j, out + j, n - j, a + j, b + j);
}

const bool kHaveFma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif

// Row r of stored rows at `base` (type `type`, n values a row) into `out`, normalized.
// False when a value is not finite.
bool convert(const void* base, at::ScalarType type, int64_t r, float* out, int64_t n, const Affine& f) {
  switch (type) {
    case at::kByte: {
      const uint8_t* in = static_cast<const uint8_t*>(base) + r * n;
#if defined(__x86_64__) && defined(__GNUC__)
      if (kHaveFma) return convertU8Fma(in, out, n, f.a.data(), f.b.data(), f.uniform), true;
#endif
      convertU8(in, out, n, f.a.data(), f.b.data());
      return true;  // always finite
    }
    case at::kFloat: {
      const float* in = static_cast<const float*>(base) + r * n;
#if defined(__x86_64__) && defined(__GNUC__)
      if (kHaveFma) return convertF32Fma(in, out, n, f.a.data(), f.b.data(), f.uniform);
#endif
      return convertF32(in, out, n, f.a.data(), f.b.data());
    }
    case at::kDouble: return convertF64(static_cast<const double*>(base) + r * n, out, n, f.a.data(), f.b.data());
    default: FORGE_CHECK(false, "unsupported feature type ", type);
  }
  return false;
}


// Token ids [from, from + n) of row r of stored rows at `base` (n_row ids a row) as int64.
void copyTokens(const void* base, at::ScalarType type, int64_t r, int64_t rowLen, int64_t from, int64_t n,
                int64_t* out) {
  switch (type) {
    case at::kByte: {
      const uint8_t* in = static_cast<const uint8_t*>(base) + r * rowLen + from;
      for (int64_t j = 0; j < n; ++j) out[j] = in[j];
      return;
    }
    case at::kInt: {
      const int32_t* in = static_cast<const int32_t*>(base) + r * rowLen + from;
      for (int64_t j = 0; j < n; ++j) out[j] = in[j];
      return;
    }
    case at::kLong:
      std::memcpy(out, static_cast<const int64_t*>(base) + r * rowLen + from, n * sizeof(int64_t));
      return;
    default: FORGE_CHECK(false, "unsupported token type ", type);
  }
}

// A batch's tensors and how one sample goes into them: features (normalized values, or
// token ids) and targets (a class, float values, or the next tokens of the same row).
struct BatchFill {
  const SplitSource& source;
  const Affine& affine;
  int64_t n;        // stored values a row
  int64_t inputs;   // values a row of x
  int64_t targets;  // values a row of y
  at::Tensor x, y;

  BatchFill(const SplitSource& src, const Affine& f, int64_t rows, bool pinned)
      : source(src), affine(f), n(src.rowElements()) {
    const bool next = src.targets() == Targets::kNextTokens;
    inputs = next ? n - 1 : n;
    targets = 1;
    for (int64_t d : src.targetShape()) targets *= d;
    auto opts = at::TensorOptions().pinned_memory(pinned);
    x = at::empty({rows, inputs}, opts.dtype(src.tokens() ? at::kLong : at::kFloat));
    y = at::empty({rows, targets}, opts.dtype(src.targets() == Targets::kValues ? at::kFloat : at::kLong));
  }

  // Sample `sample`, stored as row r of `base`, into position m. False when a feature value
  // is not finite (nothing is written for the targets then).
  bool put(const void* base, int64_t r, int64_t sample, int64_t m) {
    const at::ScalarType type = source.featureType();
    if (source.tokens()) {
      copyTokens(base, type, r, n, 0, inputs, x.data_ptr<int64_t>() + m * inputs);
    } else if (!convert(base, type, r, x.data_ptr<float>() + m * n, n, affine)) {
      return false;
    }
    switch (source.targets()) {
      case Targets::kClasses: y.data_ptr<int64_t>()[m] = source.labels().data_ptr<int64_t>()[sample]; break;
      case Targets::kValues:
        std::memcpy(y.data_ptr<float>() + m * targets, source.labels().data_ptr<float>() + sample * targets,
                    targets * sizeof(float));
        break;
      case Targets::kNextTokens: copyTokens(base, type, r, n, 1, targets, y.data_ptr<int64_t>() + m * targets); break;
    }
    return true;
  }

  // The first m samples, shaped as the model and the loss take them.
  Batch batch(int64_t m) const {
    std::vector<int64_t> ys{m};
    for (int64_t d : source.targetShape()) ys.push_back(d);
    std::vector<int64_t> xs{m};
    for (int64_t d : source.inputShape()) xs.push_back(d);
    at::Tensor bx = m < x.size(0) ? x.narrow(0, 0, m) : x;
    at::Tensor by = m < y.size(0) ? y.narrow(0, 0, m) : y;
    return Batch{bx.view(xs), by.view(ys)};
  }
};



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
