#include "trainer/engine/stopping.h"

#include <cmath>

#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "trainer/engine/stateful_part.h"
#include "trainer/engine/trainer.h"

namespace forge::train {
namespace {

constexpr const char* kField = "early_stopping";

class StoppingRules : public LoopObserver, public StatefulPart {
 public:
  explicit StoppingRules(Trainer& t) : trainer_(t) {}

  void beforeTraining() override {
    // Resumed with early stopping off (patience 0), a stopped run trains on.
    if (stopped_ && trainer_.config().earlyStopping.patience > 0) {
      trainer_.requestStop("early stopping had already stopped this run (early_stopping.patience; 0 trains on)");
    }
    checkSteps(trainer_.state().globalStep);
  }

  void afterStep(const StepReport& r) override { checkSteps(r.state.globalStep); }

  void afterEpoch(const EpochReport& r) override {
    const auto& cfg = trainer_.config().earlyStopping;
    if (cfg.patience <= 0 || std::isnan(r.monitored)) return;
    const bool higher = trainer_.higherIsBetter();
    const bool improved = std::isnan(best_) || (higher ? r.monitored > best_ + cfg.minDelta
                                                       : r.monitored < best_ - cfg.minDelta);
    if (improved) {
      best_ = r.monitored;
      badEpochs_ = 0;
      return;
    }
    if (++badEpochs_ < cfg.patience) return;
    stopped_ = true;
    trainer_.requestStop(concat("early stopping: ", trainer_.monitoredMetric(), " has not improved on ", best_,
                                " by more than ", cfg.minDelta, " for ", badEpochs_, " epoch(s)"));
  }

  std::string field() const override { return kField; }

  c10::IValue stateDict() const override {
    c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
    // None before the first evaluation (not NaN, which compares unequal to itself in Python).
    d.insert("best", std::isnan(best_) ? c10::IValue() : c10::IValue(best_));
    d.insert("bad_epochs", badEpochs_);
    d.insert("stopped", stopped_);
    return d;
  }

  void loadStateDict(const c10::IValue& state, const std::string& source) override {
    if (state.isNone()) return;
    auto bad = [&] { return CheckpointError(concat("checkpoint '", source, "': ", kField, " is not {best, bad_epochs, stopped}")); };
    if (!state.isGenericDict()) throw bad();
    auto d = state.toGenericDict();
    if (!d.contains("best") || !d.contains("bad_epochs") || !d.contains("stopped")) throw bad();
    const c10::IValue best = d.at("best");
    if (!best.isNone() && !best.isDouble()) throw bad();
    best_ = best.isNone() ? std::nan("") : best.toDouble();
    badEpochs_ = d.at("bad_epochs").toInt();
    stopped_ = d.at("stopped").toBool();
  }

 private:
  void checkSteps(int64_t globalStep) {
    const int64_t max = trainer_.config().run.maxSteps;
    if (max > 0 && globalStep >= max) trainer_.requestStop(concat("run.max_steps = ", max, " reached"));
  }

  Trainer& trainer_;
  double best_ = std::nan("");  // the monitored metric's best by early stopping's rule (min_delta)
  int64_t badEpochs_ = 0;       // epochs since it improved
  bool stopped_ = false;
};

}  // namespace

std::unique_ptr<LoopObserver> makeStoppingRules(Trainer& t) { return std::make_unique<StoppingRules>(t); }

}  // namespace forge::train
