// Keeps the replicas of a module in step across the ranks of a Communicator:
//   - broadcastState(): parameters and buffers from rank 0 (before the first step);
//   - broadcastBuffers(): buffers (BatchNorm running stats) from rank 0, each step;
//   - averageGradients(): every trainable parameter's gradient averaged over the ranks.
// This is the simple, correct engine: after backward, all gradients go in one flat buffer
// through one all-reduce. (The bucketed engine that overlaps with backward replaces it.)
// Every method is a collective: all ranks, same order.
#pragma once

#include <torch/nn/module.h>

#include "distributed/communicator.h"

namespace forge::dist {

class GradientSynchronizer {
 public:
  GradientSynchronizer(std::shared_ptr<torch::nn::Module> module, Communicator& comm);

  void broadcastState();
  void broadcastBuffers();
  // A parameter without a gradient this step contributes zeros (its .grad is created).
  void averageGradients();

  // Seconds spent in collectives since construction (for the communication share).
  double commSeconds() const { return commSeconds_; }

 private:
  void broadcastTensors(const std::vector<at::Tensor>& tensors);

  std::shared_ptr<torch::nn::Module> module_;
  Communicator& comm_;
  std::vector<at::Tensor> params_;   // trainable, in registration order
  std::vector<at::Tensor> buffers_;
  double commSeconds_ = 0;
};

}  // namespace forge::dist
