// Data files must not change during a run (data/file_state.h). The loader finds a change
// when it next reads or maps rows of the changed file, on the rank that reads them. What it
// cannot see is found here, at the epoch boundary at the latest: a file replaced by another
// under its path (the run still reads the old one), rows already held when their file
// changed, an epoch whose rows were all taken before. Every rank looks at every file (an
// fstat and a stat each), the ranks agree through one all-reduce, and every rank alike
// throws the same DataError naming the file (exit 2), before the epoch's metrics are
// recorded or any checkpoint saves what was trained on changed data.
#pragma once

#include <memory>
#include <vector>

#include "data/source.h"
#include "distributed/communicator.h"
#include "trainer/engine/observer.h"

namespace forge::train {

// Collective (one all-reduce): DataError on every rank when any rank finds a file of
// `sources` changed since it was opened, naming the first such file (in the order of
// `sources` and their files). A no-op otherwise.
void requireUnchangedData(const std::vector<const data::SplitSource*>& sources, dist::Communicator& comm);

// The loop's watch: requireUnchangedData after each epoch's evaluation, ahead of every other
// observer (every save checks too: Trainer::saveCheckpoint). It also carries the test-only pause (env::kFaultPauseStep, kFaultPauseFile) with
// which tests change a data file at a known step. The sources must outlive it.
std::unique_ptr<LoopObserver> makeDataWatch(std::vector<const data::SplitSource*> sources, dist::Communicator& comm);

}  // namespace forge::train
