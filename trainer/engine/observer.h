// Observers of the training loop: checkpoint policy, preemption, metrics files and progress
// are told what happens instead of being branches of the loop. Every rank calls every
// observer at the same points in the same order; an observer that issues collectives must
// issue them on every rank alike, and one that only reports acts on rank 0.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "trainer/engine/metric_sums.h"
#include "trainer/engine/train_state.h"

namespace forge::train {

struct StepReport {
  const TrainState& state;  // after the step
  int64_t epoch;            // 0-based epoch the step belongs to
  int64_t stepsPerEpoch;
  double lr;                // the step's learning rate
  std::chrono::steady_clock::time_point epochStart;  // of this epoch, in this session
  double epochSeconds;      // in this epoch, in this session
  int64_t stepsTimed;       // steps done in `epochSeconds`
  double dataWaitSeconds;   // this rank's waits for data, this epoch so far
  double commSeconds;       // waits for gradient all-reduces, this epoch so far
  // This rank's sums of the epoch so far. Reading them syncs with the device: read only
  // when a value is needed.
  const MetricSums& sums;
  double gradNorm;        // the step's global gradient norm before clipping (trainer/engine/gradient_guard.h)
  int64_t skippedSteps;   // steps skipped for non-finite gradients, over the whole run
};

struct EpochReport {
  const TrainState& state;  // after the epoch (state.epoch is the 1-based number of this one)
  int64_t stepsPerEpoch;
  int64_t epochSamples;     // the samples the epoch consisted of, over all ranks
  std::vector<std::pair<std::string, double>> train;  // over all ranks: ("loss", ...), metrics
  std::vector<std::pair<std::string, double>> eval;
  double lr;
  double samplesPerS;
  double dataWaitShare, commShare;
  double seconds;  // training time of the epoch, in this session
  bool isBest;     // the monitored metric improved
  double monitored;  // the monitored metric's value this epoch (Trainer::monitoredMetric)
  // Further evaluation values ("ema_loss", ...) that observers earlier in the order add for
  // the later ones (the metrics record holds them as eval_<name>).
  mutable std::vector<std::pair<std::string, double>> extraEval;
};

class LoopObserver {
 public:
  virtual ~LoopObserver() = default;
  // Once, after the starting point is known (fresh, or resumed at state()).
  virtual void beforeTraining() {}
  // Before each optimizer step, at a step boundary. May throw to end training (Preempted).
  virtual void beforeStep(const TrainState&, int64_t epoch) {}
  virtual void afterStep(const StepReport&) {}
  // After the epoch's evaluation.
  virtual void afterEpoch(const EpochReport&) {}
  // After the last epoch (or when there was nothing left to train).
  virtual void afterTraining() {}
};

}  // namespace forge::train
