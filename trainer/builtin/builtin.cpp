// forge's own parts, registered the way a user's are: one line each.
#include "trainer/models/cnn.h"
#include "trainer/models/mlp.h"
#include "trainer/optim/adam.h"
#include "trainer/optim/schedule.h"
#include "trainer/optim/sgd.h"
#include "trainer/spec/registry.h"
#include "trainer/tasks/classification.h"

namespace forge {
namespace {

void registerBuiltins(Registries& r) {
  r.models.add(train::mlpModel());
  r.models.add(train::cnnModel());
  r.losses.add(train::crossEntropyLoss());
  r.metrics.add(train::accuracyMetric());
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
