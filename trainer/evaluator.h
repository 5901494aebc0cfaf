// Evaluation on a split: the model in eval mode, without gradients, each rank on its own
// disjoint contiguous share, streamed (no sample counted twice, memory bounded), loss and
// accuracy summed over all ranks. Collective: all ranks, same order.
#pragma once

#include "data/batch_loader.h"
#include "data/source.h"
#include "distributed/communicator.h"
#include "trainer/models/model.h"

namespace forge::train {

struct EvalResult {
  double loss = 0;      // mean cross-entropy per sample
  double accuracy = 0;  // fraction in [0, 1]
  int64_t samples = 0;  // over all ranks
  // Per class (by label): samples and correctly predicted ones, over all ranks.
  std::vector<int64_t> classSamples;
  std::vector<int64_t> classCorrect;
};

EvalResult evaluate(Model& model, const data::SplitSource& split, const data::Normalization& norm, int64_t batchSize,
                    dist::Communicator& comm, c10::Device device = c10::kCPU);

}  // namespace forge::train
