// forge's public C++ API, in one include: `#include <forge/forge.h>` in a project that uses
// the installed package (find_package(forge) ... target_link_libraries(app forge::forge)).
//
// A training run is assembled from registered parts, each under the name the YAML config
// uses:
//   model.name     a ModelSpec: a factory of any torch::nn::Module (wrapModel) and the
//                  config keys it declares                        (trainer/spec/parts.h)
//   task.loss      a LossSpec: the mean loss of a batch
//   task.metrics   MetricSpecs: sums over batches and ranks, then a value
//   optimizer.name an OptimizerSpec: make, and state in torch.optim's state_dict layout
//   schedule.name  a ScheduleSpec: the learning rate as a function of the position
// forge's own parts (mlp, cnn, cross_entropy, accuracy, sgd, adam, adamw, constant, step,
// cosine) are registered the same way (trainer/builtin/builtin.cpp).
//
// A program registers its parts at the start of main, then runs forge's command line:
//
//   int main(int argc, char** argv) {
//     forge::registerModel(myModelSpec());
//     forge::registerMetric(myMetricSpec());
//     return forge::runMain(argc, argv);  // forge train my.yaml, forge eval ..., under mpirun
//   }
//
// or builds a forge::train::Trainer itself (trainer/engine/trainer.h) on a
// forge::dist::ProcessGroup (distributed/process_group.h) with a model of its own.
#pragma once

#include "distributed/process_group.h"
#include "trainer/app/cli.h"
#include "trainer/config/config.h"
#include "trainer/engine/trainer.h"
#include "trainer/spec/model.h"
#include "trainer/spec/options.h"
#include "trainer/spec/parts.h"
#include "trainer/spec/registry.h"
