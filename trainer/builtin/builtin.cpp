// forge's own parts, registered the way a user's are: one line each.
#include "trainer/models/cnn.h"
#include "trainer/models/gpt.h"
#include "trainer/models/mlp.h"
#include "trainer/models/resnet.h"
#include "trainer/optim/adam.h"
#include "trainer/optim/schedule.h"
#include "trainer/optim/sgd.h"
#include "trainer/spec/registry.h"
#include "trainer/tasks/classification.h"
#include "trainer/tasks/language_model.h"
#include "trainer/tasks/regression.h"

namespace forge {
namespace {

void registerBuiltins(Registries& r) {
  r.models.add(train::mlpModel());
  r.models.add(train::cnnModel());
  r.models.add(train::resnetModel());
  r.models.add(train::gptModel());
  r.losses.add(train::crossEntropyLoss());
  r.losses.add(train::mseLoss());
  r.losses.add(train::huberLoss());
  r.metrics.add(train::accuracyMetric());
  r.metrics.add(train::top5AccuracyMetric());
  r.metrics.add(train::mseMetric());
  r.metrics.add(train::maeMetric());
  r.metrics.add(train::r2Metric());
  r.metrics.add(train::perplexityMetric());
  r.metrics.add(train::bitsPerTokenMetric());
  r.metrics.add(train::tokenAccuracyMetric());
  r.optimizers.add(train::sgdOptimizer());
  r.optimizers.add(train::adamOptimizer());
  r.optimizers.add(train::adamwOptimizer());
  r.schedules.add(train::constantSchedule());
  r.schedules.add(train::stepSchedule());
  r.schedules.add(train::cosineSchedule());
  r.schedules.add(train::linearSchedule());
}

}  // namespace

Registries& registry() {
  static Registries* r = [] {
    auto* made = new Registries();  // never destroyed: parts may be looked up during exit
    registerBuiltins(*made);
    return made;
  }();
  return *r;
}

}  // namespace forge
