// The loop's standard observers (trainer/engine/observer.h), added by the Trainer in this
// order on every rank (the reporting ones on rank 0 only).
#pragma once

#include <memory>

#include "distributed/communicator.h"
#include "trainer/config/config.h"
#include "trainer/engine/observer.h"

namespace forge::train {

class Trainer;

// Test-only fault injection (env::kFaultStallRank / kFaultCrashRank and their steps): the
// named rank stops responding or dies at the named global step, as a hung or OOM-killed
// process would, to prove that its peers time out and the job ends instead of hanging.
std::unique_ptr<LoopObserver> makeFaultInjector(int rank);

// Preemption (SIGUSR1 / SIGTERM, trainer/engine/preemption.h): the ranks agree at a step
// boundary that some rank was signalled, rank 0 saves, and every rank throws Preempted
// (exit 75, "please requeue"). The agreement's all-reduce is started one check and read at
// the next, so its latency hides behind the steps between. run.max_time rides on the same
// all-reduce: a rank whose time budget is nearly spent stops every rank the same way.
std::unique_ptr<LoopObserver> makePreemptionWatch(Trainer& trainer, dist::Communicator& comm);

// Rank 0: the live progress bar or progress lines, and the epoch's summary line.
std::unique_ptr<LoopObserver> makeProgressObserver(Trainer& trainer, int worldSize);

// Rank 0: step and epoch records in metrics.jsonl, metrics.csv and TensorBoard.
std::unique_ptr<LoopObserver> makeMetricsObserver(Trainer& trainer, int worldSize);

// When to save: every checkpoint.every_steps steps (within an epoch), every
// checkpoint.every_epochs epochs, after the last epoch, when the run stops early, whenever the
// monitored metric improves (best.pt) and when an epoch enters the checkpoint.save_top_k best
// (a copy in top/, the one it pushes out deleted). Collective. Also a StatefulPart: the top-k
// list (field checkpoint_policy) survives a resume (trainer/engine/checkpoint_policy.cpp).
std::unique_ptr<LoopObserver> makeCheckpointPolicy(Trainer& trainer);

}  // namespace forge::train
