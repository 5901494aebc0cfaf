#include "trainer/engine/observers.h"

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <thread>

#include "core/error.h"
#include "core/log.h"
#include "core/names.h"
#include "core/strings.h"
#include "distributed/rank_status.h"
#include "trainer/engine/preemption.h"
#include "trainer/engine/trainer.h"
#include "trainer/report/metrics_log.h"
#include "trainer/report/progress.h"
#include "trainer/spec/registry.h"

namespace forge::train {
namespace {

using Clock = std::chrono::steady_clock;

class FaultInjector : public LoopObserver {
 public:
  explicit FaultInjector(int rank) : rank_(rank) {}

  void beforeStep(const TrainState& s, int64_t) override {
    static const char* crashRank = std::getenv(env::kFaultCrashRank);
    static const char* crashStep = std::getenv(env::kFaultCrashStep);
    if (crashRank != nullptr && std::atoi(crashRank) == rank_ &&
        (crashStep == nullptr || std::atoll(crashStep) == s.globalStep)) {
      log::warn("fault", "injected fault: rank ", rank_, " dies (SIGKILL) at step ", s.globalStep);
      std::raise(SIGKILL);
    }
    static const char* stallRank = std::getenv(env::kFaultStallRank);
    static const char* stallStep = std::getenv(env::kFaultStallStep);
    if (stallRank == nullptr || std::atoi(stallRank) != rank_) return;
    if (stallStep != nullptr && std::atoll(stallStep) != s.globalStep) return;
    log::warn("fault", "injected fault: rank ", rank_, " stops responding at step ", s.globalStep);
    for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
  }

 private:
  int rank_;
};

class PreemptionWatch : public LoopObserver {
 public:
  PreemptionWatch(Trainer& t, dist::Communicator& comm)
      : trainer_(t), comm_(comm), start_(Clock::now()), lastCheck_(start_) {}

  void beforeStep(const TrainState& s, int64_t epoch) override {
    static const char* signalAt = std::getenv(env::kFaultSignalStep);
    if (signalAt != nullptr && comm_.rank() == 0 && std::atoll(signalAt) == s.globalStep) std::raise(SIGUSR1);
    if (!agreed(s.globalStep)) return;
    trainer_.flushBuffers();  // rank 0's statistics, as at any step boundary
    std::string path = trainer_.saveCheckpoint();
    trainer_.waitForSaves();
    comm_.barrier();  // nobody exits (and makes mpirun kill the job) before the file is down
    int sig = preemptionSignal();
    if (outOfTime_) {
      throw Preempted(concat("run.max_time = ", trainer_.config().run.maxTime, " s is nearly spent: stopped at epoch ",
                             epoch + 1, " step ", s.step, " and saved ", comm_.rank() == 0 ? path : std::string("on rank 0"),
                             "; exit ", kExitRequeue, " = please requeue (resume with --resume auto)"));
    }
    throw Preempted(concat("preempted", sig ? concat(" by signal ", sig) : std::string(" (signal on another rank)"),
                           " at epoch ", epoch + 1, " step ", s.step, ": saved ",
                           comm_.rank() == 0 ? path : std::string("on rank 0"), "; exit ", kExitRequeue,
                           " = please requeue (resume with --resume auto)"));
  }

  void afterTraining() override {
    if (!work_) return;
    work_->wait(dist::deadlineAfter(comm_.timeout()));
    work_.reset();
  }

 private:
  // Every few steps is soon enough (a scheduler's warning comes tens of seconds ahead) and
  // keeps the collective off most steps. Every rank reads the same result at the same step.
  static constexpr int64_t kEverySteps = 8;

  // The same collective carries a second flag: this rank's loss of the epoch so far is not
  // finite. A diverged run then stops within 2 x kEverySteps steps on every rank alike.
  bool agreed(int64_t globalStep) {
    if (globalStep % kEverySteps != 0) return false;
    dist::PhaseScope phase(dist::Phase::kPreemption);
    bool stop = false;
    if (work_) {
      work_->wait(dist::deadlineAfter(comm_.timeout()));
      work_.reset();
      if (flags_[1].item<int>() > 0) throw trainer_.divergedError("the training loss became NaN or Inf (checked every 8 steps)");
      stop = flags_[0].item<int>() > 0;
      outOfTime_ = flags_[2].item<int>() > 0 && flags_[0].item<int>() == 1 && !preemptionRequested();
    }
    if (!stop) {
      const bool late = outOfTime();
      flags_ = at::tensor({preemptionRequested() || late ? 1 : 0, trainer_.epochLossFinite() ? 0 : 1, late ? 1 : 0},
                          at::kInt);
      work_ = comm_.allReduceAsync(flags_, dist::ReduceOp::kMax);
    }
    return stop;
  }

  // run.max_time: whether this session's time, plus twice the longest span between two
  // checks so far (steps, evaluations and saves included: the check that stops and the save
  // after it fit in that), reaches the budget. Each rank by its own clock; any rank stops all.
  bool outOfTime() {
    const double budget = trainer_.config().run.maxTime;
    if (budget <= 0) return false;
    const auto now = Clock::now();
    longestSpan_ = std::max(longestSpan_, std::chrono::duration<double>(now - lastCheck_).count());
    lastCheck_ = now;
    return std::chrono::duration<double>(now - start_).count() + 2 * longestSpan_ >= budget;
  }

  Trainer& trainer_;
  dist::Communicator& comm_;
  std::unique_ptr<dist::Work> work_;
  at::Tensor flags_;  // stop (preemption requested or out of time), loss not finite, out of time
  Clock::time_point start_, lastCheck_;  // start_: this session's setup
  double longestSpan_ = 0;
  bool outOfTime_ = false;  // the agreed stop is run.max_time's, not a signal's
};

// "loss 0.4154 acc 84.94%": values as the epoch line shows them.
std::string valuesText(const std::vector<std::pair<std::string, double>>& values) {
  std::vector<std::string> parts;
  for (const auto& [k, v] : values) parts.push_back(metricLabel(k) + " " + metricValueText(k, v));
  return join(parts, " ");
}

class ProgressObserver : public LoopObserver {
 public:
  ProgressObserver(Trainer& t, int worldSize)
      : trainer_(t),
        worldSize_(worldSize),
        progress_(Progress::resolve(t.config().log.progress, Progress::stdoutIsTerminal()), t.config().log.everyS) {}

  void afterStep(const StepReport& r) override {
    if (!progress_.due()) return;
    ProgressState p;
    p.epoch = r.epoch + 1;
    p.epochs = trainer_.config().run.epochs;
    p.step = r.state.step;
    p.timedSteps = r.stepsTimed;
    p.steps = r.stepsPerEpoch;
    p.elapsed = r.epochSeconds;
    p.loss = r.sums.local().front().second;
    p.samplesPerS = r.sums.samples() * worldSize_ / std::max(1e-9, p.elapsed);
    p.dataWaitShare = r.dataWaitSeconds / std::max(1e-9, p.elapsed);
    progress_.update(p);
  }

  void afterEpoch(const EpochReport& r) override {
    progress_.endEpoch();
    const Config& cfg = trainer_.config();
    char head[64], tail[128];
    std::snprintf(head, sizeof head, "epoch %lld/%lld", static_cast<long long>(r.state.epoch),
                  static_cast<long long>(cfg.run.epochs));
    std::snprintf(tail, sizeof tail, "lr %.4g  %s samples/s  %s", r.lr,
                  withThousands(static_cast<long long>(r.samplesPerS)).c_str(), formatDuration(r.seconds).c_str());
    log::info("train", head, "  train ", valuesText(r.train), "  ", cfg.data.evalSplit, " ", valuesText(r.eval), "  ",
              tail);
  }

  void afterTraining() override { progress_.endEpoch(); }

 private:
  Trainer& trainer_;
  int worldSize_;
  Progress progress_;
};

class MetricsObserver : public LoopObserver {
 public:
  MetricsObserver(Trainer& t, int worldSize) : trainer_(t), worldSize_(worldSize) {}

  void beforeTraining() override {
    const Config& cfg = trainer_.config();
    // A fresh run owns its metrics files; a resumed one appends to them.
    const TrainState& s = trainer_.state();
    const bool resumed = s.globalStep > 0 || s.epoch > 0;
    const RunDir dir(cfg.run.dir);
    MetricsLog::Paths paths{dir.metricsJsonl(), dir.metricsCsv(), cfg.log.tensorboard ? dir.tensorboard() : ""};
    std::optional<ResumePoint> at;
    if (resumed) at = ResumePoint{ckpt::Progress{s.epoch, s.epochSamples}, s.globalStep};
    std::vector<std::string> columns = metricColumns(trainer_.task().metricNames());
    if (cfg.ema.decay > 0 && cfg.ema.evaluate) {
      columns.push_back("eval_ema_loss");
      for (const auto& m : trainer_.task().metricNames()) columns.push_back("eval_ema_" + m);
    }
    log_ = std::make_unique<MetricsLog>(paths, columns, at);
  }

  void afterStep(const StepReport& r) override {
    if (r.stepsTimed == 1) {
      // The epoch's first step in this session: differences start from its beginning.
      mark_ = Mark{};
      mark_.at = r.epochStart;
    }
    const int64_t every = trainer_.config().log.everySteps;
    if (every <= 0 || r.state.globalStep % every != 0) return;
    std::vector<double> totals = r.sums.localTotals();
    if (mark_.totals.size() != totals.size()) mark_.totals.assign(totals.size(), 0.0);
    std::vector<double> delta(totals.size());
    for (size_t i = 0; i < totals.size(); ++i) delta[i] = totals[i] - mark_.totals[i];
    const double n = r.sums.samples() - mark_.samples;
    const double elapsed = std::max(1e-9, std::chrono::duration<double>(Clock::now() - mark_.at).count());
    MetricsRecord rec;
    rec.type = "step";
    rec.epoch = r.epoch + 1;
    rec.step = r.state.step;
    rec.epochSamples = r.state.epochSamples;
    rec.globalStep = r.state.globalStep;
    rec.wallTime = unixSeconds();
    // Rank 0's batches since the previous record (every rank's would need a collective);
    // the epoch records are over all ranks.
    for (const auto& [k, v] : r.sums.values(delta, std::max(1.0, n))) rec.set("train_" + k, v);
    rec.set("lr", r.lr)
        .set("samples_per_s", n * worldSize_ / elapsed)
        .set("data_wait_share", (r.dataWaitSeconds - mark_.dataWait) / elapsed)
        .set("comm_share", (r.commSeconds - mark_.comm) / elapsed)
        .set("seconds", elapsed)
        .set("grad_norm", r.gradNorm)
        .set("skipped_steps", static_cast<double>(r.skippedSteps));
    log_->write(rec);
    mark_ = Mark{totals, r.sums.samples(), r.dataWaitSeconds, r.commSeconds, Clock::now()};
  }

  void afterEpoch(const EpochReport& r) override {
    MetricsRecord rec;
    rec.type = "epoch";
    rec.epoch = r.state.epoch;
    rec.step = r.stepsPerEpoch;
    rec.epochSamples = r.epochSamples;
    rec.globalStep = r.state.globalStep;
    rec.wallTime = unixSeconds();
    for (const auto& [k, v] : r.train) rec.set("train_" + k, v);
    for (const auto& [k, v] : r.eval) rec.set("eval_" + k, v);
    for (const auto& [k, v] : r.extraEval) rec.set("eval_" + k, v);
    rec.set("lr", r.lr)
        .set("samples_per_s", r.samplesPerS)
        .set("data_wait_share", r.dataWaitShare)
        .set("comm_share", r.commShare)
        .set("seconds", r.seconds);
    log_->write(rec);
  }

  const std::string& path() const { return log_->jsonlPath(); }

 private:
  struct Mark {
    std::vector<double> totals;
    double samples = 0, dataWait = 0, comm = 0;
    Clock::time_point at;
  };
  Trainer& trainer_;
  int worldSize_;
  std::unique_ptr<MetricsLog> log_;
  Mark mark_;
};

}  // namespace

std::unique_ptr<LoopObserver> makeFaultInjector(int rank) { return std::make_unique<FaultInjector>(rank); }
std::unique_ptr<LoopObserver> makePreemptionWatch(Trainer& t, dist::Communicator& comm) {
  return std::make_unique<PreemptionWatch>(t, comm);
}
std::unique_ptr<LoopObserver> makeProgressObserver(Trainer& t, int worldSize) {
  return std::make_unique<ProgressObserver>(t, worldSize);
}
std::unique_ptr<LoopObserver> makeMetricsObserver(Trainer& t, int worldSize) {
  return std::make_unique<MetricsObserver>(t, worldSize);
}

}  // namespace forge::train
