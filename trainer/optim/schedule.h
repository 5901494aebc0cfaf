// The learning rate as a pure function of the position in training: the registered
// schedule's curve (constant, step, cosine, or a user's), under a linear warmup.
#pragma once

#include <ATen/core/ivalue.h>

#include "trainer/spec/parts.h"

namespace forge::train {

class LrSchedule {
 public:
  // `options`: the schedule's own keys (parsed against spec.options).
  LrSchedule(const ScheduleSpec& spec, int64_t warmupSteps, Options options, double baseLr, int64_t stepsPerEpoch,
             int64_t epochs);
  // `globalStep` counts optimizer steps from 0; `epoch` is the 0-based epoch it falls in.
  double at(int64_t globalStep, int64_t epoch) const;
  // What the rate depends on, for the checkpoint (and the warning when a resume changes it):
  // name, base_lr, warmup_steps, the schedule's own keys, steps_per_epoch, epochs.
  c10::impl::GenericDict describe() const;

 private:
  const ScheduleSpec* spec_;
  int64_t warmupSteps_;
  Options options_;
  double base_;
  int64_t stepsPerEpoch_, epochs_;
};

ScheduleSpec constantSchedule();
ScheduleSpec stepSchedule();
ScheduleSpec cosineSchedule();
ScheduleSpec linearSchedule();

}  // namespace forge::train
