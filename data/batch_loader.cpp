#include "data/batch_loader.h"

#include <chrono>

#include "core/error.h"

namespace forge::data {

Batch makeBatch(const SplitData& data, const Normalization& norm, const int64_t* indices, int64_t count) {
  at::Tensor idx = at::from_blob(const_cast<int64_t*>(indices), {count}, at::kLong);
  at::Tensor x = data.features.index_select(0, idx).to(at::kFloat);
  if (norm.scale != 1.0) x.mul_(norm.scale);
  if (norm.mean != 0.0) x.sub_(norm.mean);
  if (norm.std != 1.0) x.div_(norm.std);
  return Batch{x, data.labels.index_select(0, idx)};
}

BatchLoader::BatchLoader(const SplitData& data, Normalization norm, int64_t batchSize, bool dropLast, size_t prefetch,
                         bool pinMemory)
    : data_(data), norm_(norm), batchSize_(batchSize), dropLast_(dropLast), prefetch_(std::max<size_t>(1, prefetch)),
      pinMemory_(pinMemory) {
  FORGE_CHECK(batchSize > 0, "batch size must be positive");
}

BatchLoader::~BatchLoader() { stop(); }

int64_t BatchLoader::batchesPerEpoch(int64_t samples) const {
  return dropLast_ ? samples / batchSize_ : (samples + batchSize_ - 1) / batchSize_;
}

void BatchLoader::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopRequested_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> lock(mutex_);
  queue_.clear();
  stopRequested_ = false;
  producerDone_ = true;
  error_ = nullptr;
}

void BatchLoader::start(std::vector<int64_t> indices) {
  stop();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    producerDone_ = false;
  }
  thread_ = std::thread(&BatchLoader::produce, this, std::move(indices));
}

void BatchLoader::produce(std::vector<int64_t> indices) {
  try {
    const int64_t n = static_cast<int64_t>(indices.size());
    const int64_t batches = batchesPerEpoch(n);
    for (int64_t b = 0; b < batches; ++b) {
      int64_t first = b * batchSize_;
      int64_t count = std::min(batchSize_, n - first);
      Batch batch = makeBatch(data_, norm_, indices.data() + first, count);
      if (pinMemory_) batch = Batch{batch.x.pin_memory(), batch.y.pin_memory()};
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [&] { return stopRequested_ || queue_.size() < prefetch_; });
      if (stopRequested_) break;
      queue_.push_back(std::move(batch));
      cv_.notify_all();
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    error_ = std::current_exception();
  }
  std::lock_guard<std::mutex> lock(mutex_);
  producerDone_ = true;
  cv_.notify_all();
}

std::optional<Batch> BatchLoader::next() {
  auto begin = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] { return !queue_.empty() || producerDone_; });
  waitSeconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  if (error_) std::rethrow_exception(error_);
  if (queue_.empty()) return std::nullopt;
  Batch b = std::move(queue_.front());
  queue_.pop_front();
  cv_.notify_all();
  return b;
}

}  // namespace forge::data
