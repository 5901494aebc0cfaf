#include "trainer/evaluator.h"

#include <torch/torch.h>

namespace forge::train {

EvalResult evaluate(Model& model, const data::SplitSource& split, const data::Normalization& norm, int64_t batchSize,
                    dist::Communicator& comm, c10::Device device) {
  bool wasTraining = model.is_training();
  model.eval();
  torch::NoGradGuard noGrad;
  const int64_t first = split.size() * comm.rank() / comm.size();
  const int64_t last = split.size() * (comm.rank() + 1) / comm.size();
  std::vector<int64_t> mine(last - first);
  for (int64_t i = first; i < last; ++i) mine[i - first] = i;
  // Sums stay on the device until the end: no host round trip per batch.
  at::Tensor lossSum = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(device));
  at::Tensor correct = at::zeros({}, at::TensorOptions().dtype(at::kLong).device(device));
  data::LoaderOptions o;
  o.batchSize = batchSize;
  o.window = data::windowFor(64u << 20, split.rowElements() * sizeof(float), batchSize);
  o.pinMemory = device.is_cuda();
  data::BatchLoader loader(split, norm, o);
  const bool any = last > first;
  if (any) loader.start(std::move(mine));
  while (auto b = any ? loader.next() : std::nullopt) {
    at::Tensor x = b->x.to(device, /*non_blocking=*/true);
    at::Tensor y = b->y.to(device, /*non_blocking=*/true);
    at::Tensor logits = model.forward(x).to(at::kFloat);
    lossSum += torch::nn::functional::cross_entropy(
        logits, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
    correct += logits.argmax(1).eq(y).sum();
  }
  at::Tensor sums = at::tensor({lossSum.item<double>(), static_cast<double>(correct.item<int64_t>()),
                                static_cast<double>(last - first)}, at::kDouble);
  comm.allReduce(sums, dist::ReduceOp::kSum);
  model.train(wasTraining);
  EvalResult r;
  r.samples = static_cast<int64_t>(sums[2].item<double>());
  r.loss = sums[0].item<double>() / std::max<double>(1, r.samples);
  r.accuracy = sums[1].item<double>() / std::max<double>(1, r.samples);
  return r;
}

}  // namespace forge::train
