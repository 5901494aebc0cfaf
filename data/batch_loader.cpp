#include "data/batch_loader.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

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

int64_t firstNonFinite(const at::Tensor& rows, int64_t r, int64_t n) {
  if (rows.scalar_type() == at::kFloat) return firstNonFinite(rows.data_ptr<float>() + r * n, n);
  if (rows.scalar_type() == at::kDouble) return firstNonFinite(rows.data_ptr<double>() + r * n, n);
  return -1;  // integers are always finite
}

template <typename T>
void convertRow(const T* in, float* out, int64_t n, const ExpandedNormalization& nm) {
  const float scale = nm.scale;
  const float* mean = nm.mean.data();
  const float* inv = nm.invStd.data();
  for (int64_t j = 0; j < n; ++j) out[j] = (static_cast<float>(in[j]) * scale - mean[j]) * inv[j];
}

void convert(const at::Tensor& rows, int64_t r, float* out, int64_t n, const ExpandedNormalization& nm) {
  switch (rows.scalar_type()) {
    case at::kByte: return convertRow(rows.data_ptr<uint8_t>() + r * n, out, n, nm);
    case at::kFloat: return convertRow(rows.data_ptr<float>() + r * n, out, n, nm);
    case at::kDouble: return convertRow(rows.data_ptr<double>() + r * n, out, n, nm);
    default: FORGE_CHECK(false, "unsupported feature type ", rows.scalar_type());
  }
}

std::vector<int64_t> batchShape(int64_t n, const std::vector<int64_t>& sample) {
  std::vector<int64_t> s{n};
  s.insert(s.end(), sample.begin(), sample.end());
  return s;
}

}  // namespace

Batch readBatch(const SplitSource& source, const Normalization& norm, const std::vector<int64_t>& indices) {
  ExpandedNormalization nm = expandNormalization(norm, source.sampleShape());
  std::vector<int64_t> sorted = sortedUnique(indices.data(), indices.data() + indices.size());
  at::Tensor rows = at::empty({static_cast<int64_t>(sorted.size()), source.rowElements()}, source.featureType());
  readRuns(source, sorted, rows);
  const int64_t n = static_cast<int64_t>(indices.size());
  at::Tensor x = at::empty(batchShape(n, source.sampleShape()), at::kFloat);
  at::Tensor y = at::empty({n}, at::kLong);
  const int64_t* labels = source.labels().data_ptr<int64_t>();
  for (int64_t k = 0; k < n; ++k) {
    int64_t r = std::lower_bound(sorted.begin(), sorted.end(), indices[k]) - sorted.begin();
    convert(rows, r, x.data_ptr<float>() + k * source.rowElements(), source.rowElements(), nm);
    y.data_ptr<int64_t>()[k] = labels[indices[k]];
  }
  return Batch{x, y};
}

struct BatchLoader::Window {
  int64_t first = 0;  // position in the order
  int64_t count = 0;
  std::vector<int64_t> sorted;
  at::Tensor rows;
  std::vector<char> bad;  // per sorted row: has a non-finite feature (skip mode)
};

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
  if (assembler_.joinable()) assembler_.join();
  std::lock_guard<std::mutex> lock(mutex_);
  windows_.clear();
  batches_.clear();
  liveWindows_ = 0;
  stopRequested_ = false;
  readerDone_ = true;
  assemblerDone_ = true;
  error_ = nullptr;
}

void BatchLoader::start(std::vector<int64_t> order, int64_t skip) {
  stop();
  FORGE_CHECK(skip % opt_.batchSize == 0, "a loader starts at a batch boundary, not at sample ", skip);
  order_ = std::move(order);
  skip_ = std::min<int64_t>(skip, static_cast<int64_t>(order_.size()));
  {
    std::lock_guard<std::mutex> lock(mutex_);
    readerDone_ = false;
    assemblerDone_ = false;
  }
  reader_ = std::thread(&BatchLoader::readLoop, this);
  assembler_ = std::thread(&BatchLoader::assembleLoop, this);
}

void BatchLoader::readLoop() {
  try {
    const int64_t total = static_cast<int64_t>(order_.size());
    const int64_t n = source_.rowElements();
    for (int64_t first = skip_ / opt_.window * opt_.window; first < total; first += opt_.window) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return stopRequested_ || liveWindows_ < 2; });
        if (stopRequested_) break;
        ++liveWindows_;
      }
      auto w = std::make_shared<Window>();
      w->first = first;
      w->count = std::min(opt_.window, total - first);
      w->sorted = sortedUnique(order_.data() + first, order_.data() + first + w->count);
      w->rows = at::empty({static_cast<int64_t>(w->sorted.size()), n}, source_.featureType());
      readCalls_ += readRuns(source_, w->sorted, w->rows);
      rowsRead_ += static_cast<int64_t>(w->sorted.size());
      if (source_.featureType() != at::kByte) {
        w->bad.assign(w->sorted.size(), 0);
        for (size_t r = 0; r < w->sorted.size(); ++r) {
          int64_t j = firstNonFinite(w->rows, static_cast<int64_t>(r), n);
          if (j < 0) continue;
          if (opt_.nonFinite == NonFinite::kError) {
            throw DataError(concat("non-finite feature (NaN or Inf) at feature ", j, " of sample ", w->sorted[r],
                                   " of ", source_.name(), " (", source_.locate(w->sorted[r]),
                                   "): fix the data, or set data.non_finite: skip to leave such samples out"));
          }
          w->bad[r] = 1;
        }
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        windows_.push_back(std::move(w));
      }
      cv_.notify_all();
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!error_) error_ = std::current_exception();
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    readerDone_ = true;
  }
  cv_.notify_all();
}

void BatchLoader::assembleLoop() {
  try {
    const int64_t n = source_.rowElements();
    const int64_t* labels = source_.labels().data_ptr<int64_t>();
    auto floatOptions = at::TensorOptions().dtype(at::kFloat).pinned_memory(opt_.pinMemory);
    auto longOptions = at::TensorOptions().dtype(at::kLong).pinned_memory(opt_.pinMemory);
    while (true) {
      std::shared_ptr<Window> w;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return stopRequested_ || error_ || !windows_.empty() || readerDone_; });
        if (stopRequested_ || error_) break;
        if (windows_.empty()) break;  // the reader is done and everything is assembled
        w = windows_.front();
        windows_.pop_front();
      }
      const int64_t total = static_cast<int64_t>(order_.size());
      for (int64_t b0 = std::max(w->first, skip_); b0 < w->first + w->count; b0 += opt_.batchSize) {
        int64_t b1 = std::min(b0 + opt_.batchSize, w->first + w->count);
        if (b1 - b0 < opt_.batchSize && opt_.dropLast && b1 == total) break;
        std::vector<int64_t> rows;
        rows.reserve(b1 - b0);
        for (int64_t p = b0; p < b1; ++p) {
          int64_t r = std::lower_bound(w->sorted.begin(), w->sorted.end(), order_[p]) - w->sorted.begin();
          if (!w->bad.empty() && w->bad[r]) {
            ++skipped_;
            continue;
          }
          rows.push_back(r);
        }
        if (rows.empty()) {
          throw DataError(concat("every sample of a batch (positions ", b0, "..", b1, " of this rank's epoch in ",
                                 source_.name(), ") has non-finite features"));
        }
        const int64_t m = static_cast<int64_t>(rows.size());
        Batch batch{at::empty(batchShape(m, source_.sampleShape()), floatOptions), at::empty({m}, longOptions)};
        float* x = batch.x.data_ptr<float>();
        int64_t* y = batch.y.data_ptr<int64_t>();
        for (int64_t k = 0; k < m; ++k) {
          convert(w->rows, rows[k], x + k * n, n, norm_);
          y[k] = labels[w->sorted[rows[k]]];
        }
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return stopRequested_ || batches_.size() < opt_.prefetch; });
        if (stopRequested_) break;
        batches_.push_back(std::move(batch));
        cv_.notify_all();
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        --liveWindows_;
      }
      cv_.notify_all();
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!error_) error_ = std::current_exception();
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    assemblerDone_ = true;
  }
  cv_.notify_all();
}

std::optional<Batch> BatchLoader::next() {
  auto start = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] { return !batches_.empty() || assemblerDone_ || error_; });
  waitSeconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (error_) std::rethrow_exception(error_);
  if (batches_.empty()) return std::nullopt;
  Batch b = std::move(batches_.front());
  batches_.pop_front();
  lock.unlock();
  cv_.notify_all();
  return b;
}

}  // namespace forge::data
