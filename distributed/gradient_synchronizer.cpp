#include "distributed/gradient_synchronizer.h"

#include <set>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>

#include <cstring>

#include "core/error.h"
#include "core/log.h"
#include "distributed/rank_status.h"
#include "distributed/replicas.h"

namespace forge::dist {

namespace {

// A bucket is either one large parameter, all-reduced in place in its own .grad (copying it
// into a buffer would buy nothing: its size already amortizes MPI's latency), or several
// small ones coalesced in a flat buffer, their .grad tensors aliasing it.
struct Bucket {
  std::vector<size_t> params;       // indices into Impl::params, in bucket order
  std::vector<int64_t> offsets;     // element offset of each in `buffer`
  at::Tensor buffer;                // coalesced buckets: flat, contiguous, the parameters' dtype
  bool single = false;
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
  std::vector<at::Tensor> slots;                 // param index -> its place in a coalesced bucket
  std::vector<char> arrived;                     // this step
  std::vector<int64_t> arrivalOrder;             // first synchronized step only
  bool syncing = false;
  bool prescaled = false;  // this step's loss was scaled by 1 / world size: sum, don't average
  bool rebuilt = false;
  bool fromArrival = false;        // `built` came from an arrival order (rebuilt or adopted)
  std::vector<int64_t> built;      // the order the buckets were last built from
  size_t nextToLaunch = 0;
  Timeline* timeline = nullptr;

  Impl(std::shared_ptr<torch::nn::Module> m, Communicator& c, SyncOptions o)
      : module(std::move(m)), comm(c), options(o) {}

  // Parameters at least this large get a bucket of their own.
  size_t singleBytes() const { return std::min(options.firstBucketCapBytes, options.bucketCapBytes); }

  // Buckets over `order` (parameter indices, first to be filled first), capped in bytes.
  void buildBuckets(const std::vector<int64_t>& order) {
    built = order;
    buckets.clear();
    where.assign(params.size(), {0, 0});
    size_t bytes = 0;
    bool open = false;  // the last bucket takes more parameters
    for (int64_t i : order) {
      const at::Tensor& p = params[i];
      if (p.nbytes() >= singleBytes()) {
        buckets.emplace_back();
        buckets.back().single = true;
        where[i] = {buckets.size() - 1, 0};
        buckets.back().params.push_back(static_cast<size_t>(i));
        buckets.back().offsets.push_back(0);
        open = false;
        continue;
      }
      // The open bucket's cap: the first bucket of all is the small one.
      size_t cap = buckets.size() == 1 ? options.firstBucketCapBytes : options.bucketCapBytes;
      bool full = open && bytes + p.nbytes() > cap;
      bool otherType = open && params[buckets.back().params.front()].scalar_type() != p.scalar_type();
      if (!open || full || otherType) {
        buckets.emplace_back();
        bytes = 0;
        open = true;
      }
      Bucket& b = buckets.back();
      where[i] = {buckets.size() - 1, b.params.size()};
      b.offsets.push_back(b.params.empty() ? 0 : b.offsets.back() + params[b.params.back()].numel());
      b.params.push_back(static_cast<size_t>(i));
      bytes += p.nbytes();
    }
    for (auto& b : buckets) {
      if (b.single) continue;
      int64_t n = b.offsets.back() + params[b.params.back()].numel();
      b.buffer = at::zeros({n}, params[b.params.front()].options().requires_grad(false));
    }
    // Gradients of coalesced parameters live in their bucket: AccumulateGrad adds into .grad
    // in place, so backward writes straight into the bucket and the averaged result is .grad,
    // with no copy either way (as DDP's gradient_as_bucket_view). Current values move along.
    torch::NoGradGuard noGrad;
    slots.assign(params.size(), at::Tensor());
    for (size_t i = 0; i < params.size(); ++i) {
      if (buckets[where[i].first].single) continue;
      slots[i] = makeSlot(i);
      if (params[i].grad().defined()) slots[i].copy_(params[i].grad());
      params[i].mutable_grad() = slots[i];
    }
  }

  // Parameter i's place in its coalesced bucket, shaped like the parameter. Made with set_()
  // rather than as a view: it aliases the bucket all the same, but autograd does not treat it
  // as a view, so code that detach_()es gradients in place (LibTorch's Optimizer::zero_grad)
  // keeps working.
  at::Tensor makeSlot(size_t i) const {
    auto [bi, s] = where[i];
    const Bucket& b = buckets[bi];
    at::Tensor v = b.buffer.narrow(0, b.offsets[s], params[i].numel()).view(params[i].sizes());
    at::Tensor alias = at::empty({0}, v.options());
    alias.set_(v.storage(), v.storage_offset(), v.sizes(), v.strides());
    return alias;
  }

  bool isSingle(size_t i) const { return buckets[where[i].first].single; }

  // False when someone replaced .grad (e.g. an optimizer's zero_grad(set_to_none)).
  bool gradIsSlot(size_t i) const {
    const at::Tensor& g = params[i].grad();
    return g.defined() && g.data_ptr() == slots[i].data_ptr();
  }

  void launchReady() {
    while (nextToLaunch < buckets.size() && buckets[nextToLaunch].pending == 0) {
      Bucket& b = buckets[nextToLaunch];
      if (b.single) {
        at::Tensor& p = params[b.params[0]];
        if (!p.grad().is_contiguous()) p.mutable_grad() = p.grad().contiguous();
        b.work = comm.allReduceAsync(p.grad(), prescaled ? ReduceOp::kSum : ReduceOp::kAvg);
      } else {
        b.work = comm.allReduceAsync(b.buffer, prescaled ? ReduceOp::kSum : ReduceOp::kAvg);
      }
      rankStatus().setBucket(static_cast<int>(nextToLaunch));
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
    if (!isSingle(i) && !gradIsSlot(i)) slots[i].copy_(params[i].grad());
    Bucket& b = buckets[where[i].first];
    if (--b.pending == 0 && options.overlap) launchReady();
  }

  // A parameter that got no gradient contributes zeros.
  void zeroMissing(size_t i) {
    torch::NoGradGuard noGrad;
    if (isSingle(i)) {
      if (params[i].grad().defined()) {
        params[i].mutable_grad().zero_();
      } else {
        params[i].mutable_grad() = at::zeros_like(params[i]);
      }
    } else {
      slots[i].zero_();
      params[i].mutable_grad() = slots[i];
    }
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
  std::set<const c10::TensorImpl*> seen;  // a tied weight, registered under two names, is one parameter
  for (const auto& p : impl_->module->named_parameters()) {
    if (!p.value().requires_grad() || !seen.insert(p.value().unsafeGetTensorImpl()).second) continue;
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

// A contiguous tensor's bytes, as a flat uint8 tensor aliasing it (any device, any dtype).
static at::Tensor bytesOf(const at::Tensor& t) { return t.detach().view({-1}).view(at::kByte); }

void GradientSynchronizer::afterForward() {
  Impl& m = *impl_;
  if (m.buffers.empty() || m.comm.size() == 1) return;
  FORGE_CHECK(!m.bufferWork, "afterForward() twice without beforeForward()");
  int64_t total = 0;
  for (const auto& b : m.buffers) total += static_cast<int64_t>(b.nbytes());
  if (!m.bufferBytes.defined() || m.bufferBytes.numel() != total) {
    m.bufferBytes = at::empty({total}, m.buffers.front().options().dtype(at::kByte));
  }
  if (m.comm.rank() == 0) {
    torch::NoGradGuard noGrad;
    int64_t offset = 0;
    for (const auto& b : m.buffers) {
      at::Tensor bytes = bytesOf(b.contiguous());
      m.bufferBytes.narrow(0, offset, bytes.numel()).copy_(bytes);
      offset += bytes.numel();
    }
  }
  m.bufferWork = m.comm.broadcastAsync(m.bufferBytes, 0);
}

void GradientSynchronizer::beforeForward() {
  Impl& m = *impl_;
  if (!m.bufferWork) return;
  auto start = Clock::now();
  m.bufferWork->wait(deadlineAfter(m.comm.timeout(), start));
  m.bufferWork.reset();
  commWaitSeconds_ += std::chrono::duration<double>(Clock::now() - start).count();
  if (m.comm.rank() == 0) return;
  torch::NoGradGuard noGrad;
  int64_t offset = 0;
  for (auto& b : m.buffers) {
    FORGE_CHECK(b.is_contiguous(), "buffers must be contiguous");
    at::Tensor bytes = bytesOf(b);
    bytes.copy_(m.bufferBytes.narrow(0, offset, bytes.numel()));
    offset += bytes.numel();
  }
}

void GradientSynchronizer::backward(const at::Tensor& loss, bool sync) {
  const int w = impl_->comm.size();
  beginBackward(sync);
  impl_->prescaled = w > 1;
  (w > 1 ? loss * (1.0 / w) : loss).backward();
  finishBackward();
}

void GradientSynchronizer::beginBackward(bool sync) {
  Impl& m = *impl_;
  m.syncing = sync;
  m.prescaled = false;
  rankStatus().setBucket(-1);
  if (!m.syncing) return;
  settle();
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
      m.zeroMissing(i);
      m.arrived[i] = 1;
      --m.buckets[m.where[i].first].pending;
    }
  }
  if (m.comm.size() > 1) m.launchReady();
  if (m.comm.size() == 1) {
    for (size_t i = 0; i < m.params.size(); ++i) {
      if (!m.params[i].grad().defined()) m.zeroMissing(i);
    }
    return;
  }
  FORGE_CHECK(m.nextToLaunch == m.buckets.size(), "not every bucket was launched");

  auto start = Clock::now();
  auto deadline = deadlineAfter(m.comm.timeout(), start);
  timeline_.bucketStarted.clear();
  // The step that rebuilds the buckets waits on the host: their buffers are replaced below.
  const bool onStream = m.rebuilt;
  for (auto& b : m.buckets) {
    if (onStream) {
      b.work->waitOnStream(deadline);
    } else {
      b.work->wait(deadline);
    }
    timeline_.bucketStarted.push_back(b.work->startedAt());
  }
  commWaitSeconds_ += std::chrono::duration<double>(Clock::now() - start).count();

  // The averages are in the buckets; point any .grad that was replaced back at them.
  for (size_t i = 0; i < m.params.size(); ++i) {
    if (!m.isSingle(i) && !m.gradIsSlot(i)) m.params[i].mutable_grad() = m.slots[i];
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
    m.fromArrival = true;
    m.arrivalOrder.clear();
  }
}

void GradientSynchronizer::settle() {
  auto start = Clock::now();
  auto deadline = deadlineAfter(impl_->comm.timeout(), start);
  for (auto& b : impl_->buckets) {
    if (b.work) b.work->wait(deadline);  // returns at once when it completed (or was waited)
  }
}

void GradientSynchronizer::zeroGrad() {
  Impl& m = *impl_;
  torch::NoGradGuard noGrad;
  for (auto& b : m.buckets) {
    if (!b.single) b.buffer.zero_();
  }
  for (size_t i = 0; i < m.params.size(); ++i) {
    if (m.isSingle(i)) {
      // None, so that backward hands over its fresh gradient instead of adding into zeros.
      m.params[i].mutable_grad() = at::Tensor();
    } else if (!m.gradIsSlot(i)) {
      m.params[i].mutable_grad() = m.slots[i];
    }
  }
}

std::vector<int64_t> GradientSynchronizer::rebuiltOrder() const {
  return impl_->fromArrival ? impl_->built : std::vector<int64_t>();
}

bool GradientSynchronizer::adoptOrder(const std::vector<int64_t>& order) {
  Impl& m = *impl_;
  FORGE_CHECK(!m.syncing, "adoptOrder() during backward");
  if (!m.options.rebuildBuckets || order.size() != m.params.size()) return false;
  std::vector<char> seen(m.params.size(), 0);
  for (int64_t i : order) {
    if (i < 0 || i >= static_cast<int64_t>(m.params.size()) || seen[i]) return false;
    seen[i] = 1;
  }
  m.buildBuckets(order);
  m.rebuilt = true;
  m.fromArrival = true;
  m.arrivalOrder.clear();
  return true;
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
