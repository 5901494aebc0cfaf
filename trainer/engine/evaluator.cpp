#include "trainer/engine/evaluator.h"

#include <torch/torch.h>

#include <cmath>

#include "core/error.h"
#include "core/strings.h"
#include "distributed/rank_status.h"
#include "trainer/engine/faults.h"

namespace forge::train {

double EvalResult::value(const std::string& name) const {
  for (const auto& [k, v] : values) {
    if (k == name) return v;
  }
  return std::nan("");
}

std::string Reference::text() const {
  return concat(value, " ", fixed(result, 4), " = ", fixed(ratio(), 3), "x the ", reference, " of this split (",
                fixed(level, 4), ")");
}

std::vector<Reference> referencesOf(const EvalResult& r, const data::SplitSource& split) {
  std::vector<Reference> out;
  auto add = [&](const char* value, const char* attribute, const char* what) {
    const double v = r.value(value);
    auto level = split.attribute(attribute);
    if (level && *level > 0 && !std::isnan(v)) out.push_back({value, what, v, *level});
  };
  if (split.targets() == data::Targets::kNextTokens) add("loss", "unigram_entropy_nats", "byte-unigram entropy");
  if (split.targets() == data::Targets::kValues) add("mse", "noise_floor_mse", "noise floor");
  return out;
}

EvalResult evaluate(const ModelHandle& model, const Task& task, const data::SplitSource& split,
                    const data::Normalization& norm, int64_t batchSize, dist::Communicator& comm, c10::Device device) {
  dist::PhaseScope phase(dist::Phase::kEvaluation);
  maybeHang(dist::Phase::kEvaluation, comm.rank(), dist::rankStatus().globalStep());
  torch::nn::Module& m = *model.module;
  const bool wasTraining = m.is_training();
  m.eval();
  torch::NoGradGuard noGrad;
  const int64_t first = split.size() * comm.rank() / comm.size();
  const int64_t last = split.size() * (comm.rank() + 1) / comm.size();
  std::vector<int64_t> mine(last - first);
  for (int64_t i = first; i < last; ++i) mine[i - first] = i;
  MetricSums sums(task, device);
  // Per-class counts over the labels the split holds: every rank holds all of them, so
  // every rank sums the same number of values (also a rank without samples of its own).
  const bool integerLabels = split.size() > 0 && split.targets() == data::Targets::kClasses;
  const int64_t classes = integerLabels ? split.labels().max().item<int64_t>() + 1 : 0;
  auto longOnDevice = at::TensorOptions().dtype(at::kLong).device(device);
  at::Tensor classSamples = at::zeros({classes}, longOnDevice);
  at::Tensor classCorrect = at::zeros({classes}, longOnDevice);
  bool perClass = integerLabels;
  data::LoaderOptions o;
  o.batchSize = batchSize;
  o.window = data::windowFor(64u << 20, split.batchRowBytes(), batchSize);
  o.pinMemory = device.is_cuda();
  data::BatchLoader loader(split, norm, o);
  const bool any = last > first;
  if (any) loader.start(std::move(mine));
  while (auto b = any ? loader.next() : std::nullopt) {
    data::Batch batch{b->x.to(device, /*non_blocking=*/true), b->y.to(device, /*non_blocking=*/true)};
    at::Tensor out = model.forward(batch).to(at::kFloat);
    sums.add(task.lossOf(out, batch), out, batch);
    perClass = perClass && out.dim() == 2 && out.size(1) >= classes;
    if (perClass) {
      at::Tensor hit = out.argmax(1).eq(batch.y);
      classSamples += at::bincount(batch.y, {}, classes).narrow(0, 0, classes);
      classCorrect += at::bincount(batch.y.masked_select(hit), {}, classes).narrow(0, 0, classes);
    }
  }
  EvalResult r;
  r.values = sums.global(comm);
  r.samples = static_cast<int64_t>(sums.globalSamples());
  // Every rank takes part in the per-class sum when any rank could: the decision is agreed.
  const bool anyPerClass = comm.anyRank(integerLabels && !perClass) ? false : integerLabels;
  if (anyPerClass && classes > 0) {
    at::Tensor counts = at::cat({classSamples.cpu(), classCorrect.cpu()}).to(at::kDouble);
    comm.allReduce(counts, dist::ReduceOp::kSum);
    for (int64_t c = 0; c < classes; ++c) {
      r.classSamples.push_back(static_cast<int64_t>(counts[c].item<double>()));
      r.classCorrect.push_back(static_cast<int64_t>(counts[classes + c].item<double>()));
    }
  }
  m.train(wasTraining);
  // Every rank holds the same sums: all raise this alike. A NaN loss is no result to report
  // (or to choose a best checkpoint by).
  for (const auto& [name, v] : r.values) {
    if (std::isnan(v) || std::isinf(v)) {
      throw Diverged(concat("the ", name, " on '", split.name(), "' is ", v, ": the model's outputs there are not ",
                            "finite (weights too large, or extreme values in the split's features); not reported as ",
                            "a result, and nothing of it saved"));
    }
  }
  return r;
}

}  // namespace forge::train
