#include "trainer/evaluator.h"

#include <torch/torch.h>

namespace forge::train {

EvalResult evaluate(Model& model, const data::SplitData& split, const data::Normalization& norm, int64_t batchSize,
                    dist::Communicator& comm) {
  bool wasTraining = model.is_training();
  model.eval();
  torch::NoGradGuard noGrad;
  std::vector<int64_t> mine;
  for (int64_t i = comm.rank(); i < split.size(); i += comm.size()) mine.push_back(i);
  double lossSum = 0, correct = 0;
  for (size_t first = 0; first < mine.size(); first += batchSize) {
    int64_t count = std::min<int64_t>(batchSize, static_cast<int64_t>(mine.size() - first));
    data::Batch b = data::makeBatch(split, norm, mine.data() + first, count);
    at::Tensor logits = model.forward(b.x);
    lossSum += torch::nn::functional::cross_entropy(
                   logits, b.y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                   .item<double>();
    correct += logits.argmax(1).eq(b.y).sum().item<double>();
  }
  at::Tensor sums = at::tensor({lossSum, correct, static_cast<double>(mine.size())}, at::kDouble);
  comm.allReduce(sums, dist::ReduceOp::kSum);
  model.train(wasTraining);
  EvalResult r;
  r.samples = static_cast<int64_t>(sums[2].item<double>());
  r.loss = sums[0].item<double>() / std::max<double>(1, r.samples);
  r.accuracy = sums[1].item<double>() / std::max<double>(1, r.samples);
  return r;
}

}  // namespace forge::train
