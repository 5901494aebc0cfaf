// Ending a run before run.epochs: run.max_steps (a step budget of the whole run) and early
// stopping (early_stopping.patience epochs in a row without the monitored metric improving by
// more than early_stopping.min_delta). Both decide from values equal on every rank (the global
// step, the all-reduced evaluation), so every rank stops at the same step without a
// collective; the checkpoint policy then saves where the run stopped, and it exits 0. The
// early-stopping counters are a StatefulPart (checkpoint field early_stopping), so a resumed
// run counts on, and a run that already stopped stays stopped when resumed.
// run.max_time (a wall-clock budget) is the preemption watch's (trainer/engine/observers.h):
// the ranks must agree on when time is up, and it ends like a preemption (exit 75).
#pragma once

#include <memory>

#include "trainer/engine/observer.h"

namespace forge::train {

class Trainer;

// Every rank adds it, before the checkpoint policy (which saves when it stops the run).
std::unique_ptr<LoopObserver> makeStoppingRules(Trainer& trainer);

}  // namespace forge::train
