// When to save, and which saved epochs to keep as the best (trainer/engine/observers.h).
#include <algorithm>
#include <cmath>
#include <filesystem>

#include "checkpoint/checkpoint_dir.h"
#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "trainer/engine/observers.h"
#include "trainer/engine/stateful_part.h"
#include "trainer/engine/trainer.h"

namespace forge::train {
namespace {

constexpr const char* kField = "checkpoint_policy";

class CheckpointPolicy : public LoopObserver, public StatefulPart {
 public:
  explicit CheckpointPolicy(Trainer& t) : trainer_(t) {}

  void afterStep(const StepReport& r) override {
    if (r.state.step >= r.stepsPerEpoch) return;  // the epoch's end saves after its evaluation
    const int64_t every = trainer_.config().checkpoint.everySteps;
    // A stop mid-epoch (run.max_steps) ends the run with a checkpoint of where it stopped.
    if ((every > 0 && r.state.globalStep % every == 0) || trainer_.stopRequested()) trainer_.saveCheckpoint();
  }

  void afterEpoch(const EpochReport& r) override {
    const auto& ck = trainer_.config().checkpoint;
    SaveCopies copies;
    copies.best = r.isBest;
    copies.top = enterTop(r.monitored, r.state.epoch, copies.dropTop);
    const bool periodic = ck.everyEpochs > 0 && r.state.epoch % ck.everyEpochs == 0;
    if (periodic || r.state.epoch == trainer_.config().run.epochs || r.isBest || copies.top ||
        trainer_.stopRequested()) {
      trainer_.saveCheckpoint(copies);
    }
  }

  std::string field() const override { return kField; }

  // {monitor, higher_is_better, top_k_epochs, top_k_values}: the save_top_k best epochs so
  // far, best first (their files are top/<periodic name of epoch e, sample 0>).
  c10::IValue stateDict() const override {
    c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
    d.insert("monitor", trainer_.monitoredMetric());
    d.insert("higher_is_better", trainer_.higherIsBetter());
    // Lists of element type Any: pickled as plain lists (a typed IntList is pickled through
    // torch.jit's build_intlist, which weights_only=True refuses).
    c10::impl::GenericList epochs(c10::AnyType::get()), values(c10::AnyType::get());
    for (const auto& e : top_) {
      epochs.push_back(e.epoch);
      values.push_back(e.value);
    }
    d.insert("top_k_epochs", epochs);
    d.insert("top_k_values", values);
    return d;
  }

  void loadStateDict(const c10::IValue& state, const std::string& source) override {
    top_.clear();
    if (state.isNone()) return;
    auto bad = [&](const char* what) {
      return CheckpointError(concat("checkpoint '", source, "': ", kField, " ", what));
    };
    if (!state.isGenericDict()) throw bad("is not a dict");
    auto d = state.toGenericDict();
    for (const char* k : {"monitor", "higher_is_better", "top_k_epochs", "top_k_values"}) {
      if (!d.contains(k)) throw bad(concat("has no '", k, "'").c_str());
    }
    const std::string monitor = d.at("monitor").toStringRef();
    if (monitor != trainer_.monitoredMetric() || d.at("higher_is_better").toBool() != trainer_.higherIsBetter()) {
      if (trainer_.isRankZero()) {
        log::warn("ckpt", "the checkpoint's top-k epochs follow ", monitor, ", this run ", trainer_.monitoredMetric(),
                  " (checkpoint.monitor / mode changed): the top-k list starts anew; the files in top/ stay");
      }
      return;
    }
    if (!d.at("top_k_epochs").isList() || !d.at("top_k_values").isList()) throw bad("top_k_* are not lists");
    auto epochs = d.at("top_k_epochs").toListRef();
    auto values = d.at("top_k_values").toListRef();
    if (epochs.size() != values.size()) throw bad("lists differ in length");
    for (size_t i = 0; i < epochs.size(); ++i) {
      if (!epochs[i].isInt() || !values[i].isDouble()) throw bad("holds a value of the wrong type");
      top_.push_back({epochs[i].toInt(), values[i].toDouble()});
    }
  }

 private:
  struct Entry {
    int64_t epoch;
    double value;
  };

  bool better(double a, double b) const { return trainer_.higherIsBetter() ? a > b : a < b; }

  // Whether the epoch enters the top k (a NaN value never does); the files of the epochs it
  // pushes out go into `drop`.
  bool enterTop(double value, int64_t epoch, std::vector<std::string>& drop) {
    const auto k = static_cast<size_t>(trainer_.config().checkpoint.saveTopK);
    if (k == 0 || std::isnan(value)) return false;
    if (top_.size() >= k && !better(value, top_.back().value)) return false;
    // After the equals already there: the earlier epoch keeps its place.
    auto at = std::find_if(top_.begin(), top_.end(), [&](const Entry& e) { return better(value, e.value); });
    top_.insert(at, Entry{epoch, value});
    while (top_.size() > k) {
      drop.push_back(std::filesystem::path(ckpt::CheckpointDir::nameFor(ckpt::Progress{top_.back().epoch, 0})).string());
      top_.pop_back();
    }
    return true;
  }

  Trainer& trainer_;
  std::vector<Entry> top_;  // best first
};

}  // namespace

std::unique_ptr<LoopObserver> makeCheckpointPolicy(Trainer& t) { return std::make_unique<CheckpointPolicy>(t); }

}  // namespace forge::train
