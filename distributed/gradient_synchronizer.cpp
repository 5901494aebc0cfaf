#include "distributed/gradient_synchronizer.h"

#include <torch/torch.h>

namespace forge::dist {

GradientSynchronizer::GradientSynchronizer(std::shared_ptr<torch::nn::Module> module, Communicator& comm)
    : module_(std::move(module)), comm_(comm) {
  for (auto& p : module_->parameters()) {
    if (p.requires_grad()) params_.push_back(p);
  }
  buffers_ = module_->buffers();
}

void GradientSynchronizer::broadcastTensors(const std::vector<at::Tensor>& tensors) {
  if (tensors.empty() || comm_.size() == 1) return;
  torch::NoGradGuard noGrad;
  // Buffers mix dtypes (BatchNorm's num_batches_tracked is int64): one flat buffer per dtype.
  std::map<at::ScalarType, std::vector<at::Tensor>> byType;
  for (const auto& t : tensors) byType[t.scalar_type()].push_back(t);
  auto start = Clock::now();
  for (auto& [type, group] : byType) {
    std::vector<at::Tensor> flat;
    for (auto& t : group) flat.push_back(t.detach().reshape(-1));
    at::Tensor buffer = at::cat(flat);
    comm_.broadcast(buffer, 0);
    int64_t offset = 0;
    for (auto& t : group) {
      t.detach().copy_(buffer.narrow(0, offset, t.numel()).view(t.sizes()));
      offset += t.numel();
    }
  }
  commSeconds_ += std::chrono::duration<double>(Clock::now() - start).count();
}

void GradientSynchronizer::broadcastState() {
  std::vector<at::Tensor> all;
  for (auto& p : module_->parameters()) all.push_back(p);
  for (auto& b : buffers_) all.push_back(b);
  broadcastTensors(all);
}

void GradientSynchronizer::broadcastBuffers() { broadcastTensors(buffers_); }

void GradientSynchronizer::averageGradients() {
  if (params_.empty()) return;
  torch::NoGradGuard noGrad;
  std::vector<at::Tensor> grads;
  grads.reserve(params_.size());
  for (auto& p : params_) {
    if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
    grads.push_back(p.grad().reshape(-1));
  }
  if (comm_.size() == 1) return;
  at::Tensor flat = at::cat(grads);
  auto start = Clock::now();
  comm_.allReduce(flat, ReduceOp::kAvg);
  commSeconds_ += std::chrono::duration<double>(Clock::now() - start).count();
  int64_t offset = 0;
  for (auto& p : params_) {
    p.grad().copy_(flat.narrow(0, offset, p.numel()).view(p.sizes()));
    offset += p.numel();
  }
}

}  // namespace forge::dist
