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
  // Per-class counts over the labels the split holds: every rank holds all of them, so
  // every rank sums the same number of values (also a rank without samples of its own).
  const int64_t classes = split.size() > 0 ? split.labels().max().item<int64_t>() + 1 : 0;
  at::Tensor classSamples = at::zeros({classes}, at::TensorOptions().dtype(at::kLong).device(device));
  at::Tensor classCorrect = at::zeros_like(classSamples);
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
    at::Tensor hit = logits.argmax(1).eq(y);
    correct += hit.sum();
    classSamples += at::bincount(y, {}, classes).narrow(0, 0, classes);
    classCorrect += at::bincount(y.masked_select(hit), {}, classes).narrow(0, 0, classes);
  }
  at::Tensor sums = at::zeros({3 + 2 * classes}, at::kDouble);
  sums[0] = lossSum.item<double>();
  sums[1] = static_cast<double>(correct.item<int64_t>());
  sums[2] = static_cast<double>(last - first);
  sums.narrow(0, 3, classes).copy_(classSamples.cpu());
  sums.narrow(0, 3 + classes, classes).copy_(classCorrect.cpu());
  comm.allReduce(sums, dist::ReduceOp::kSum);
  model.train(wasTraining);
  EvalResult r;
  r.samples = static_cast<int64_t>(sums[2].item<double>());
  r.loss = sums[0].item<double>() / std::max<double>(1, r.samples);
  r.accuracy = sums[1].item<double>() / std::max<double>(1, r.samples);
  for (int64_t c = 0; c < classes; ++c) {
    r.classSamples.push_back(static_cast<int64_t>(sums[3 + c].item<double>()));
    r.classCorrect.push_back(static_cast<int64_t>(sums[3 + classes + c].item<double>()));
  }
  return r;
}

}  // namespace forge::train
