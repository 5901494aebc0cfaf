#include "checkpoint/async_saver.h"

#include "core/log.h"

namespace forge::ckpt {
namespace {

// A copy in host memory, whatever device the tensor is on.
at::Tensor hostCopy(const at::Tensor& t) { return t.detach().to(at::kCPU, /*non_blocking=*/false, /*copy=*/true); }

c10::IValue deepCopyValue(const c10::IValue& v) {
  if (v.isTensor()) return hostCopy(v.toTensor());
  if (v.isGenericDict()) {
    auto in = v.toGenericDict();
    c10::impl::GenericDict out(in.keyType(), in.valueType());
    for (const auto& kv : in) out.insert(kv.key(), deepCopyValue(kv.value()));
    return out;
  }
  if (v.isList()) {
    auto in = v.toList();
    c10::impl::GenericList out(in.elementType());
    for (const auto& e : in) out.push_back(deepCopyValue(e));
    return out;
  }
  return v;  // scalars and strings are values already
}

}  // namespace

Checkpoint deepCopy(const Checkpoint& ck) {
  Checkpoint out = ck;
  for (auto& [name, t] : out.modelState) t = hostCopy(t);
  out.optimizerState = deepCopyValue(ck.optimizerState);
  for (auto& r : out.rngStates) r = hostCopy(r);
  for (auto& [name, state] : out.parts) state = deepCopyValue(state);
  return out;
}

AsyncSaver::~AsyncSaver() {
  try {
    wait();
  } catch (const std::exception& e) {
    log::error("ckpt", "background save failed: ", e.what());
  }
}

void AsyncSaver::submit(std::function<void()> write) {
  wait();
  thread_ = std::thread([this, write = std::move(write)] {
    try {
      write();
    } catch (...) {
      error_ = std::current_exception();
    }
  });
}

void AsyncSaver::submitSnapshot(Checkpoint live, std::function<void(const Checkpoint&)> write) {
  wait();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    snapshotPending_ = true;
  }
  thread_ = std::thread([this, live = std::move(live), write = std::move(write)]() mutable {
    auto snapshotDone = [this] {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        snapshotPending_ = false;
      }
      cv_.notify_all();
    };
    try {
      Checkpoint copy = deepCopy(live);
      live = Checkpoint{};  // drop the references to the live tensors
      snapshotDone();
      write(copy);
    } catch (...) {
      error_ = std::current_exception();
      snapshotDone();
    }
  });
}

void AsyncSaver::waitForSnapshot() {
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [this] { return !snapshotPending_; });
}

void AsyncSaver::wait() {
  if (thread_.joinable()) thread_.join();
  if (error_) {
    std::exception_ptr e = error_;
    error_ = nullptr;
    std::rethrow_exception(e);
  }
}

}  // namespace forge::ckpt
