#include "trainer/optim/schedule.h"

#include "core/error.h"

#include <algorithm>
#include <cmath>


namespace forge::train {

LrSchedule::LrSchedule(const ScheduleSpec& spec, int64_t warmupSteps, Options options, double baseLr,
                       int64_t stepsPerEpoch, int64_t epochs)
    : spec_(&spec),
      warmupSteps_(warmupSteps),
      options_(std::move(options)),
      base_(baseLr),
      stepsPerEpoch_(stepsPerEpoch),
      epochs_(epochs) {}

double LrSchedule::at(int64_t globalStep, int64_t epoch) const {
  ScheduleArgs a;
  a.baseLr = base_;
  a.globalStep = globalStep;
  a.epoch = epoch;
  a.totalSteps = std::max<int64_t>(1, stepsPerEpoch_ * epochs_);
  a.warmupSteps = warmupSteps_;
  double lr = spec_->lr(a, options_);
  if (globalStep < warmupSteps_) lr *= static_cast<double>(globalStep + 1) / warmupSteps_;
  return lr;
}

c10::impl::GenericDict LrSchedule::describe() const {
  c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
  d.insert("name", spec_->name);
  d.insert("base_lr", base_);
  d.insert("warmup_steps", warmupSteps_);
  for (const auto& [key, value] : options_.values()) {
    std::visit(
        [&](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, bool> || std::is_same_v<T, int64_t> || std::is_same_v<T, double> ||
                        std::is_same_v<T, std::string>) {
            d.insert(key, v);
          }
        },
        value);
  }
  d.insert("steps_per_epoch", stepsPerEpoch_);
  d.insert("epochs", epochs_);
  return d;
}

ScheduleSpec constantSchedule() {
  ScheduleSpec s;
  s.name = "constant";
  s.help = "optimizer.lr throughout (after the warmup)";
  s.lr = [](const ScheduleArgs& a, const Options&) { return a.baseLr; };
  return s;
}

ScheduleSpec stepSchedule() {
  ScheduleSpec s;
  s.name = "step";
  s.help = "multiplied by gamma every step_epochs epochs";
  s.options.add<int64_t>("step_epochs", 1, "epochs between two decays", atLeast(1))
      .add<double>("gamma", 0.1, "the factor of each decay, in (0, 1]", [](const double& g) {
        return g > 0 && g <= 1 ? std::string() : concat("must be in (0, 1], got ", g);
      });
  s.lr = [](const ScheduleArgs& a, const Options& o) {
    return a.baseLr * std::pow(o.get<double>("gamma"), static_cast<double>(a.epoch / o.get<int64_t>("step_epochs")));
  };
  return s;
}

namespace {

// How far the decay after the warmup has gone: 0 at the warmup's end, 1 at the last step.
double decayProgress(const ScheduleArgs& a) {
  const int64_t span = std::max<int64_t>(1, a.totalSteps - a.warmupSteps);
  return std::clamp(static_cast<double>(a.globalStep - a.warmupSteps) / span, 0.0, 1.0);
}

}  // namespace

ScheduleSpec cosineSchedule() {
  ScheduleSpec s;
  s.name = "cosine";
  s.help = "half a cosine from optimizer.lr down to min_lr over the whole run (after the warmup)";
  s.options.add<double>("min_lr", 0.0, "the floor, at the last step", inRange(0, 1e300, true));
  s.lr = [](const ScheduleArgs& a, const Options& o) {
    const double minLr = o.get<double>("min_lr");
    return minLr + (a.baseLr - minLr) * 0.5 * (1.0 + std::cos(M_PI * decayProgress(a)));
  };
  return s;
}

ScheduleSpec linearSchedule() {
  ScheduleSpec s;
  s.name = "linear";
  s.help = "a straight line from optimizer.lr down to min_lr over the whole run (after the warmup)";
  s.options.add<double>("min_lr", 0.0, "the floor, at the last step", inRange(0, 1e300, true));
  s.lr = [](const ScheduleArgs& a, const Options& o) {
    const double minLr = o.get<double>("min_lr");
    return a.baseLr + (minLr - a.baseLr) * decayProgress(a);
  };
  return s;
}

}  // namespace forge::train
