#include "checkpoint/async_saver.h"

#include "core/log.h"

namespace forge::ckpt {
namespace {

c10::IValue deepCopyValue(const c10::IValue& v) {
  if (v.isTensor()) return v.toTensor().detach().clone();
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
  for (auto& [name, t] : out.modelState) t = t.detach().clone();
  out.optimizerState = deepCopyValue(ck.optimizerState);
  for (auto& r : out.rngStates) r = r.clone();
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

void AsyncSaver::wait() {
  if (thread_.joinable()) thread_.join();
  if (error_) {
    std::exception_ptr e = error_;
    error_ = nullptr;
    std::rethrow_exception(e);
  }
}

}  // namespace forge::ckpt
