#include "distributed/gradient_synchronizer.h"

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>

#include <cstring>

#include "core/error.h"
#include "core/log.h"
#include "distributed/replicas.h"

namespace forge::dist {

namespace {

struct Bucket {
  std::vector<size_t> params;       // indices into Impl::params, in bucket order
  std::vector<int64_t> offsets;     // element offset of each in `buffer`
  at::Tensor buffer;                // flat, contiguous, the parameters' dtype
  size_t pending = 0;               // gradients still to arrive this step
  std::unique_ptr<Work> work;
};

}  // namespace

struct GradientSynchronizer::Impl {
  std::shared_ptr<torch::nn::Module> module;
  Communicator& comm;
  SyncOptions options;
  std::vector<std::string> names;   // trainable parameters, registration order
  std::vector<at::Tensor> params;
  std::vector<at::Tensor> buffers;
  at::Tensor bufferBytes;                        // staging for the per-step buffer broadcast
  std::unique_ptr<Work> bufferWork;
  std::vector<Bucket> buckets;
  std::vector<std::pair<size_t, size_t>> where;  // param index -> (bucket, slot)
  std::vector<char> arrived;                     // this step
  std::vector<int64_t> arrivalOrder;             // first synchronized step only
  bool syncing = false;
  bool rebuilt = false;
  size_t nextToLaunch = 0;
  Timeline* timeline = nullptr;

  Impl(std::shared_ptr<torch::nn::Module> m, Communicator& c, SyncOptions o)
      : module(std::move(m)), comm(c), options(o) {}

  // Buckets over `order` (parameter indices, first to be filled first), capped in bytes.
  void buildBuckets(const std::vector<int64_t>& order) {
    buckets.clear();
    where.assign(params.size(), {0, 0});
    size_t bytes = 0;
    for (int64_t i : order) {
      const at::Tensor& p = params[i];
      size_t cap = buckets.size() <= 1 ? options.firstBucketCapBytes : options.bucketCapBytes;
      bool full = !buckets.empty() && bytes > 0 && bytes + p.nbytes() > cap;
      bool otherType = !buckets.empty() && !buckets.back().params.empty() &&
                       params[buckets.back().params.front()].scalar_type() != p.scalar_type();
      if (buckets.empty() || full || otherType) {
        buckets.emplace_back();
        bytes = 0;
      }
      Bucket& b = buckets.back();
      where[i] = {buckets.size() - 1, b.params.size()};
      b.offsets.push_back(b.params.empty() ? 0 : b.offsets.back() + params[b.params.back()].numel());
      b.params.push_back(static_cast<size_t>(i));
      bytes += p.nbytes();
    }
    for (auto& b : buckets) {
      int64_t n = b.offsets.back() + params[b.params.back()].numel();
      b.buffer = at::zeros({n}, params[b.params.front()].options().requires_grad(false));
    }
  }

  void launchReady() {
    while (nextToLaunch < buckets.size() && buckets[nextToLaunch].pending == 0) {
      Bucket& b = buckets[nextToLaunch];
      b.work = comm.allReduceAsync(b.buffer, ReduceOp::kAvg);
      ++nextToLaunch;
    }
  }

  // Called by autograd after parameter `i`'s gradient has been accumulated into .grad.
  void onGradient(size_t i) {
    if (!syncing || arrived[i]) return;
    arrived[i] = 1;
    if (comm.size() == 1) return;  // nothing to average: .grad is the result
    if (!rebuilt) arrivalOrder.push_back(static_cast<int64_t>(i));
    if (timeline) timeline->lastGradientReady = Clock::now();
    auto [bi, slot] = where[i];
    Bucket& b = buckets[bi];
    const at::Tensor& g = params[i].grad();
    b.buffer.narrow(0, b.offsets[slot], params[i].numel()).copy_(g.reshape(-1));
    if (--b.pending == 0) launchReady();
  }
};

namespace {

// Runs after AccumulateGrad has written the parameter's .grad.
class AfterAccumulate final : public torch::autograd::PostAccumulateGradHook {
 public:
  AfterAccumulate(GradientSynchronizer::Impl* impl, size_t index) : impl_(impl), index_(index) {}
  void operator()(const torch::autograd::Variable&) override { impl_->onGradient(index_); }

 private:
  GradientSynchronizer::Impl* impl_;
  size_t index_;
};

}  // namespace

GradientSynchronizer::GradientSynchronizer(std::shared_ptr<torch::nn::Module> module, Communicator& comm,
                                           SyncOptions options)
    : impl_(std::make_unique<Impl>(std::move(module), comm, options)) {
  FORGE_CHECK(options.bucketCapBytes > 0 && options.firstBucketCapBytes > 0, "bucket caps must be positive");
  for (const auto& p : impl_->module->named_parameters()) {
    if (!p.value().requires_grad()) continue;
    impl_->names.push_back(p.key());
    impl_->params.push_back(p.value());
  }
  impl_->buffers = impl_->module->buffers();
  // Backward produces gradients roughly in reverse registration order.
  std::vector<int64_t> reverse;
  for (int64_t i = static_cast<int64_t>(impl_->params.size()) - 1; i >= 0; --i) reverse.push_back(i);
  impl_->buildBuckets(reverse);
  impl_->arrived.assign(impl_->params.size(), 0);
  impl_->rebuilt = !options.rebuildBuckets;
  impl_->timeline = &timeline_;
  for (size_t i = 0; i < impl_->params.size(); ++i) {
    torch::autograd::impl::set_post_acc_grad_hooks(impl_->params[i],
                                                   std::make_unique<AfterAccumulate>(impl_.get(), i));
  }
}

GradientSynchronizer::~GradientSynchronizer() {
  for (auto& p : impl_->params) {
    try {
      torch::autograd::impl::set_post_acc_grad_hooks(p, nullptr);
    } catch (...) {
    }
  }
}

static void broadcastTensors(Communicator& comm, const std::vector<at::Tensor>& tensors) {
  if (tensors.empty() || comm.size() == 1) return;
  torch::NoGradGuard noGrad;
  // Buffers mix dtypes (BatchNorm's num_batches_tracked is int64): one flat buffer per dtype.
  std::map<at::ScalarType, std::vector<at::Tensor>> byType;
  for (const auto& t : tensors) byType[t.scalar_type()].push_back(t);
  for (auto& [type, group] : byType) {
    std::vector<at::Tensor> flat;
    for (auto& t : group) flat.push_back(t.detach().reshape(-1));
    at::Tensor buffer = at::cat(flat);
    comm.broadcast(buffer, 0);
    int64_t offset = 0;
    for (auto& t : group) {
      t.detach().copy_(buffer.narrow(0, offset, t.numel()).view(t.sizes()));
      offset += t.numel();
    }
  }
}

uint64_t GradientSynchronizer::broadcastState() {
  flushBuffers();
  std::vector<at::Tensor> all;
  for (auto& p : impl_->module->parameters()) all.push_back(p);
  for (auto& b : impl_->buffers) all.push_back(b);
  broadcastTensors(impl_->comm, all);
  return verifyReplicas(*impl_->module, impl_->comm);
}

void GradientSynchronizer::broadcastBuffers() {
  flushBuffers();
  broadcastTensors(impl_->comm, impl_->buffers);
}

void GradientSynchronizer::afterForward() {
  Impl& m = *impl_;
  if (m.buffers.empty() || m.comm.size() == 1) return;
  FORGE_CHECK(!m.bufferWork, "afterForward() twice without beforeForward()");
  int64_t total = 0;
  for (const auto& b : m.buffers) total += static_cast<int64_t>(b.nbytes());
  if (!m.bufferBytes.defined() || m.bufferBytes.numel() != total) m.bufferBytes = at::empty({total}, at::kByte);
  if (m.comm.rank() == 0) {
    auto* out = static_cast<char*>(m.bufferBytes.data_ptr());
    for (const auto& b : m.buffers) {
      at::Tensor c = b.detach().contiguous();
      std::memcpy(out, c.data_ptr(), c.nbytes());
      out += c.nbytes();
    }
  }
  m.bufferWork = m.comm.broadcastAsync(m.bufferBytes, 0);
}

void GradientSynchronizer::beforeForward() {
  Impl& m = *impl_;
  if (!m.bufferWork) return;
  auto start = Clock::now();
  m.bufferWork->wait(start + std::chrono::duration_cast<Clock::duration>(m.comm.timeout()));
  m.bufferWork.reset();
  commWaitSeconds_ += std::chrono::duration<double>(Clock::now() - start).count();
  if (m.comm.rank() == 0) return;
  torch::NoGradGuard noGrad;
  const auto* in = static_cast<const char*>(m.bufferBytes.data_ptr());
  for (auto& b : m.buffers) {
    FORGE_CHECK(b.is_contiguous(), "buffers must be contiguous");
    std::memcpy(b.data_ptr(), in, b.nbytes());
    in += b.nbytes();
  }
}

void GradientSynchronizer::beginBackward(bool sync) {
  Impl& m = *impl_;
  m.syncing = sync;
  if (!m.syncing) return;
  std::fill(m.arrived.begin(), m.arrived.end(), 0);
  for (auto& b : m.buckets) {
    b.pending = b.params.size();
    b.work.reset();
  }
  m.nextToLaunch = 0;
  timeline_ = Timeline{};
  timeline_.backwardBegin = Clock::now();
}

void GradientSynchronizer::finishBackward() {
  Impl& m = *impl_;
  if (!m.syncing) return;
  m.syncing = false;
  std::vector<std::string> unused;
  for (size_t i = 0; i < m.params.size(); ++i) {
    if (!m.arrived[i]) unused.push_back(m.names[i]);
  }
  if (!unused.empty()) {
    std::string list;
    for (const auto& n : unused) list += (list.empty() ? "" : ", ") + n;
    if (!m.options.allowUnusedParameters) {
      throw Error(concat("these trainable parameters got no gradient in this step: ", list,
                         " (a layer not used in forward or cut off from the loss; set "
                         "distributed.allow_unused_parameters: true if that is intended)"));
    }
    // Unused here (maybe not on other ranks): contribute zeros so every bucket completes.
    for (size_t i = 0; i < m.params.size() && m.comm.size() > 1; ++i) {
      if (m.arrived[i]) continue;
      auto [bi, slot] = m.where[i];
      Bucket& b = m.buckets[bi];
      b.buffer.narrow(0, b.offsets[slot], m.params[i].numel()).zero_();
      m.arrived[i] = 1;
      --b.pending;
    }
    if (m.comm.size() > 1) m.launchReady();
  }
  if (m.comm.size() == 1) {
    torch::NoGradGuard noGrad;
    for (auto& p : m.params) {
      if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
    }
    return;
  }
  FORGE_CHECK(m.nextToLaunch == m.buckets.size(), "not every bucket was launched");

  auto start = Clock::now();
  auto deadline = start + std::chrono::duration_cast<Clock::duration>(m.comm.timeout());
  timeline_.bucketStarted.clear();
  for (auto& b : m.buckets) {
    b.work->wait(deadline);
    timeline_.bucketStarted.push_back(b.work->startedAt());
  }
  commWaitSeconds_ += std::chrono::duration<double>(Clock::now() - start).count();

  torch::NoGradGuard noGrad;
  for (auto& b : m.buckets) {
    for (size_t s = 0; s < b.params.size(); ++s) {
      at::Tensor& p = m.params[b.params[s]];
      at::Tensor avg = b.buffer.narrow(0, b.offsets[s], p.numel()).view(p.sizes());
      if (p.grad().defined()) {
        p.mutable_grad().copy_(avg);
      } else {
        p.mutable_grad() = avg.clone();
      }
    }
  }

  if (!m.rebuilt) {
    m.rebuilt = true;
    // Rank 0's arrival order for everyone (buckets must be identical on every rank);
    // parameters that did not arrive go last, in reverse registration order.
    std::vector<char> seen(m.params.size(), 0);
    for (int64_t i : m.arrivalOrder) seen[i] = 1;
    for (int64_t i = static_cast<int64_t>(m.params.size()) - 1; i >= 0; --i) {
      if (!seen[i]) m.arrivalOrder.push_back(i);
    }
    at::Tensor order = at::tensor(m.arrivalOrder, at::kLong);
    m.comm.broadcast(order, 0);
    m.buildBuckets(std::vector<int64_t>(order.data_ptr<int64_t>(), order.data_ptr<int64_t>() + order.numel()));
    m.arrivalOrder.clear();
  }
}

std::vector<std::vector<std::string>> GradientSynchronizer::bucketLayout() const {
  std::vector<std::vector<std::string>> out;
  for (const auto& b : impl_->buckets) {
    out.emplace_back();
    for (size_t i : b.params) out.back().push_back(impl_->names[i]);
  }
  return out;
}

}  // namespace forge::dist
