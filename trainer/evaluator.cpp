#include "trainer/evaluator.h"

#include <torch/torch.h>

namespace forge::train {

EvalResult evaluate(Model& model, const data::SplitData& split, const data::Normalization& norm, int64_t batchSize,
                    dist::Communicator& comm, c10::Device device) {
  bool wasTraining = model.is_training();
  model.eval();
  torch::NoGradGuard noGrad;
  std::vector<int64_t> mine;
  for (int64_t i = comm.rank(); i < split.size(); i += comm.size()) mine.push_back(i);
  // Sums stay on the device until the end: no host round trip per batch.
  at::Tensor lossSum = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(device));
  at::Tensor correct = at::zeros({}, at::TensorOptions().dtype(at::kLong).device(device));
  for (size_t first = 0; first < mine.size(); first += batchSize) {
    int64_t count = std::min<int64_t>(batchSize, static_cast<int64_t>(mine.size() - first));
    data::Batch b = data::makeBatch(split, norm, mine.data() + first, count);
    at::Tensor x = b.x.to(device, /*non_blocking=*/true);
    at::Tensor y = b.y.to(device, /*non_blocking=*/true);
    at::Tensor logits = model.forward(x).to(at::kFloat);
    lossSum += torch::nn::functional::cross_entropy(
        logits, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
    correct += logits.argmax(1).eq(y).sum();
  }
  at::Tensor sums = at::tensor({lossSum.item<double>(), static_cast<double>(correct.item<int64_t>()),
                                static_cast<double>(mine.size())}, at::kDouble);
  comm.allReduce(sums, dist::ReduceOp::kSum);
  model.train(wasTraining);
  EvalResult r;
  r.samples = static_cast<int64_t>(sums[2].item<double>());
  r.loss = sums[0].item<double>() / std::max<double>(1, r.samples);
  r.accuracy = sums[1].item<double>() / std::max<double>(1, r.samples);
  return r;
}

}  // namespace forge::train
