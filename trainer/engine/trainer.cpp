// The loop: epochs of steps, each step micro-batches of forward, loss and backward, then the
// optimizer; observers do the rest (trainer/engine/observers.h).
#include "trainer/engine/trainer.h"

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include "core/error.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/strings.h"
#include "core/usage.h"
#include "distributed/rank_status.h"
#include "distributed/replicas.h"
#include "trainer/engine/faults.h"
#include "trainer/module/rules.h"

namespace forge::train {
namespace {

using Clock = std::chrono::steady_clock;

// Dropout and other random layers draw from a stream seeded per (seed, global step, rank):
// ranks do not drop the same units, and a run resumed anywhere, at any world size, draws
// what a run of that world size that never stopped would have (nothing to restore).
uint64_t stepSeed(uint64_t seed, int64_t globalStep, int rank) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL * (rank + 1) +
               0xD1B54A32D192ED03ULL * static_cast<uint64_t>(globalStep + 1);
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// Seeds the generators a step draws from: the CPU's, and the device's. Directly, not by
// torch::manual_seed, which also probes for CUDA devices: a few microseconds a step instead
// of hundreds (bench/RESULTS.md).
void seedGenerators(uint64_t seed, c10::Device device) {
  {
    auto cpu = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(cpu.mutex());
    cpu.set_current_seed(seed);
  }
  if (device.is_cuda()) {
    at::Generator gen = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_current_seed(seed);
  }
}

// Autocast for the forward pass on the compute device (bf16 on CUDA or the CPU, fp16 on
// CUDA): matrix products in the low precision, reductions and the loss in fp32; the
// weights, their gradients and the optimizer state stay fp32. `type` kFloat: off.
class Autocast {
 public:
  Autocast(c10::DeviceType device, at::ScalarType type) : device_(device), on_(type != at::kFloat) {
    if (!on_) return;
    prevEnabled_ = at::autocast::is_autocast_enabled(device_);
    prevType_ = at::autocast::get_autocast_dtype(device_);
    at::autocast::set_autocast_enabled(device_, true);
    at::autocast::set_autocast_dtype(device_, type);
    at::autocast::increment_nesting();
  }
  ~Autocast() {
    if (!on_) return;
    // Leaving the outermost region frees the casts of the weights it cached.
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(device_, prevEnabled_);
    at::autocast::set_autocast_dtype(device_, prevType_);
  }
  Autocast(const Autocast&) = delete;
  Autocast& operator=(const Autocast&) = delete;

 private:
  c10::DeviceType device_;
  bool on_;
  bool prevEnabled_ = false;
  at::ScalarType prevType_ = at::kFloat;
};

at::ScalarType autocastType(const std::string& precision) {
  if (precision == "bf16") return at::kBFloat16;
  if (precision == "fp16") return at::kHalf;
  return at::kFloat;
}

}  // namespace

TrainSummary Trainer::run() {
  auto start = Clock::now();
  resumeFrom();
  resolveFeatureStats();
  // The first window is read while the replicas are synchronized.
  if (state_.epoch < cfg_.run.epochs) startLoader(state_.epoch);
  dist::SyncOptions sync;
  sync.bucketCapBytes = static_cast<size_t>(cfg_.distributed.bucketCapMb * (1 << 20));
  sync.firstBucketCapBytes = static_cast<size_t>(cfg_.distributed.firstBucketCapMb * (1 << 20));
  sync.rebuildBuckets = cfg_.distributed.rebuildBuckets;
  sync.overlap = cfg_.distributed.overlap;
  sync.allowUnusedParameters = cfg_.distributed.allowUnusedParameters;
  sync_ = std::make_unique<dist::GradientSynchronizer>(model_.module, comm_, sync);
  // The interrupted run's buckets, so the resumed first step reduces in the same order
  // (every rank read the same checkpoint, so every rank adopts the same order).
  if (!resumedBucketOrder_.empty() && sync_->adoptOrder(resumedBucketOrder_)) {
    if (world_.rank == 0) {
      log::info("ckpt", "gradient buckets as the interrupted run had them (", sync_->bucketLayout().size(),
                " bucket(s), the order of the checkpoint)");
    }
  } else if (!resumedBucketOrder_.empty()) {
    log::warn("ckpt", "the checkpoint's gradient bucket order does not fit this model's trainable parameters (or "
              "distributed.rebuild_buckets is off): the buckets are laid out afresh");
  }
  sync_->broadcastState();
  for (auto& o : observers_) o->beforeTraining();

  logStartupSummary();
  if (state_.epoch >= cfg_.run.epochs) {
    log::info("train", "all ", cfg_.run.epochs, " epochs are already done (raise run.epochs to train on, or "
              "use another run.dir to train afresh)");
  }
  for (int64_t e = state_.epoch; e < cfg_.run.epochs && !stopRequested(); ++e) trainEpoch(e);
  if (stopRequested() && world_.rank == 0) log::info("train", "stopped: ", stopReason_);
  for (auto& o : observers_) o->afterTraining();
  waitForSaves();
  return summarize(start);
}

void Trainer::trainEpoch(int64_t epoch) {
  model_.module->train();
  if (loaderEpoch_ != epoch) startLoader(epoch);
  const auto start = Clock::now();
  const double waitBefore = loader_->waitSeconds(), commBefore = sync_->commWaitSeconds();
  const double ckptBefore = checkpointSeconds_;
  const ProcessUsage usageBefore = processUsage();
  const int64_t samplesBefore = epochSamplesDone();
  MetricSums sums(task_, device_);
  epochSums_ = &sums;
  struct Forget {  // on every way out of the epoch
    const MetricSums*& sums;
    ~Forget() { sums = nullptr; }
  } forget{epochSums_};
  int64_t steps = 0;
  const int64_t verifyEvery = cfg_.distributed.verifyEverySteps;
  while (state_.step < stepsPerEpoch_ && !stopRequested()) {
    dist::rankStatus().setStep(epoch + 1, state_.globalStep);
    for (auto& o : observers_) o->beforeStep(state_, epoch);
    const double lr = schedule_->at(state_.globalStep, epoch);
    optimizer_->setLearningRate(lr);
    trainStep(epoch, sums);
    ++state_.step;
    ++state_.globalStep;
    state_.epochSamples = epochSamplesDone();
    ++steps;
    if (verifyEvery > 0 && state_.globalStep % verifyEvery == 0 && world_.size > 1) {
      dist::checkReplicasAgree(*model_.module, comm_, false, concat("after global step ", state_.globalStep));
    }
    StepReport report{state_,    epoch, stepsPerEpoch_, lr, start, secondsSince(start), steps,
                      loader_->waitSeconds() - waitBefore, sync_->commWaitSeconds() - commBefore, sums,
                      gradients_->lastNorm(), gradients_->skippedSteps()};
    for (auto& o : observers_) o->afterStep(report);
  }
  const double seconds = secondsSince(start);
  checkpointInLoopSeconds_ += checkpointSeconds_ - ckptBefore;
  loopUsage_ += processUsage() - usageBefore;
  if (state_.step < stepsPerEpoch_) {  // stopped mid-epoch (run.max_steps): nothing to evaluate
    flushBuffers();  // every rank's buffers become rank 0's, as saved (the replicas end equal)
    trainLoopSeconds_ += seconds;
    stepsSession_ += steps;
    samplesSession_ += static_cast<double>(epochSamplesDone() - samplesBefore);
    dataWaitSeconds_ += loader_->waitSeconds() - waitBefore;
    commSeconds_ += sync_->commWaitSeconds() - commBefore;
    return;
  }
  finishEpoch(epoch, sums, steps, seconds, waitBefore, commBefore);
}

// One optimizer step: accumulate_steps micro-batches (fewer at the end of an epoch), their
// gradients averaged over ranks as backward runs, then the optimizer. The first step of a
// session also checks that every trainable parameter moved.
void Trainer::trainStep(int64_t epoch, MetricSums& sums) {
  const int64_t k = cfg_.optimizer.accumulateSteps;
  const int64_t micro = std::min(k, batchesPerEpoch_ - state_.step * k);
  // This rank's samples in the step (fewer in the epoch's last): each micro-batch's loss
  // weighs by its share of them, so that a step's gradient is its global batch's mean
  // however the world size splits it.
  const int64_t perRank = sampler_->globalBatch() / world_.size;
  const int64_t share = std::min(perRank, planSamples_ - (state_.step - planFirstStep_) * perRank);
  const at::ScalarType low = autocastType(cfg_.run.precision);
  std::vector<std::pair<std::string, at::Tensor>> before;
  seedGenerators(stepSeed(cfg_.run.seed, state_.globalStep, world_.rank), device_);
  sync_->zeroGrad();
  auto& status = dist::rankStatus();
  for (int64_t m = 0; m < micro; ++m) {
    status.enterPhase(dist::Phase::kDataWait);
    auto loaded = loader_->next();
    if (!loaded) {
      throw Error(concat("rank ", world_.rank, " ran out of batches at epoch ", epoch + 1, " step ", state_.step + 1,
                         " (every rank must run the same number of steps)"));
    }
    sampleLog_.record(epoch, state_.globalStep);
    // Pinned host memory: the copies overlap.
    data::Batch batch{loaded->x.to(device_, /*non_blocking=*/true), loaded->y.to(device_, /*non_blocking=*/true)};
    if (hasBatchNorm_ && batch.x.size(0) == 1) {
      // Every rank holds as many samples (the sampler pads to make it so): all stop alike.
      throw ConfigError(concat("epoch ", epoch + 1, " step ", state_.step + 1, " holds 1 sample per rank, which "
                               "BatchNorm cannot train on (the last step of an epoch resumed on ", world_.size,
                               " ranks at a position that leaves one sample each); its checkpoints stay: resume "
                               "on another number of ranks, or set data.drop_last: true"));
    }
    sync_->beforeForward();
    status.enterPhase(dist::Phase::kForward);
    maybeHang(dist::Phase::kForward, world_.rank, state_.globalStep);
    maybeSlow(world_.rank);
    at::Tensor out;
    {
      Autocast autocast(device_.type(), low);
      out = model_.forward(batch);
    }
    if (cfg_.distributed.broadcastBuffers) sync_->afterForward();
    out = out.to(at::kFloat);  // the loss in fp32 (a no-op without autocast)
    at::Tensor loss = task_.lossOf(out, batch);
    const bool last = m + 1 == micro;
    if (last && !checkedFirstStep_) before = snapshotParameters(*model_.module);
    const int64_t planned = std::min(cfg_.data.batchSize, share - m * cfg_.data.batchSize);
    status.enterPhase(dist::Phase::kBackward);
    const at::Tensor weighed = micro > 1 ? loss / (static_cast<double>(share) / static_cast<double>(planned)) : loss;
    // Scaled by the loss scale (trainer/engine/loss_scaler.h), exactly: a power of 2.
    const at::Tensor scaled = scaler_ ? weighed * scaler_->scale() : weighed;
    sync_->backward(maybeInfGradient(scaled, world_.rank, state_.globalStep), last);
    sums.add(loss, out, batch);
  }
  {
    auto waitStart = Clock::now();
    asyncSaver_.waitForSnapshot();  // an asynchronous save's copy of what step() changes
    checkpointSeconds_ += secondsSince(waitStart);
  }
  status.enterPhase(dist::Phase::kOptimizer);
  // The all-reduced gradients, equal on every rank: every rank skips or clips alike.
  const GradientVerdict verdict = gradients_->inspect(state_.globalStep, scaler_ ? scaler_->scale() : 1.0);
  if (scaler_) scaler_->update(verdict.apply);
  if (verdict.apply) optimizer_->step();
  maybePerturb(*model_.module, world_.rank, state_.globalStep);
  status.enterPhase(dist::Phase::kBetweenSteps);
  if (checkedFirstStep_ || !verdict.apply) return;
  // Parameters without any gradient were already named by the synchronizer.
  auto unchanged = checkFirstStep(*model_.module, before, {});
  if (!unchanged.empty()) {
    log::info("train", "note: unchanged by the first step (gradient below float precision, e.g. a bias followed "
              "by BatchNorm): ", join(unchanged));
  }
  checkedFirstStep_ = true;
}

// After the epoch's last step: the ranks agree they ran as many steps, buffers follow rank
// 0, the training values are summed over ranks, the eval split is evaluated, observers run.
void Trainer::finishEpoch(int64_t epoch, const MetricSums& sums, int64_t steps, double seconds, double waitBefore,
                          double commBefore) {
  if (loader_->next()) throw Error(concat("rank ", world_.rank, " has batches left at the end of epoch ", epoch + 1));
  const int64_t skipped = loader_->skippedNonFinite();  // this epoch's, before the next one starts
  // The next epoch's first window is read while this one is evaluated and saved.
  if (epoch + 1 < cfg_.run.epochs) startLoader(epoch + 1);
  trainLoopSeconds_ += seconds;
  const double waited = loader_->waitSeconds() - waitBefore, comm = sync_->commWaitSeconds() - commBefore;
  dataWaitSeconds_ += waited;
  commSeconds_ += comm;
  if (skipped > 0) {
    log::warn("data", "left out ", skipped, " sample(s) with non-finite features in epoch ", epoch + 1,
              " on this rank (data.non_finite: skip)");
  }
  dist::PhaseScope phase(dist::Phase::kEpochEnd);
  // Every rank must have run the same number of steps; the sampler makes it so, this proves it.
  at::Tensor count = at::tensor({static_cast<double>(steps), -static_cast<double>(steps)}, at::kDouble);
  comm_.allReduce(count, dist::ReduceOp::kMax);
  if (count[0].item<double>() != -count[1].item<double>()) {
    throw Error(concat("ranks ran different numbers of steps in epoch ", epoch + 1, " (between ",
                       -count[1].item<double>(), " and ", count[0].item<double>(), ")"));
  }
  // Nothing of a diverged epoch is evaluated, saved or reported as a result.
  ensureFinite(concat("evaluating epoch ", epoch + 1));
  // Each rank's last forward moved its own BatchNorm statistics; rank 0's are the model's,
  // for evaluation and the checkpoint alike (as the next step's broadcast would make them).
  if (cfg_.distributed.broadcastBuffers) {
    sync_->flushBuffers();
  } else {
    sync_->broadcastBuffers();
  }
  if (world_.size > 1) dist::checkReplicasAgree(*model_.module, comm_, true, concat("at the end of epoch ", epoch + 1));
  auto train = sums.global(comm_);
  samplesSession_ += sums.globalSamples();
  ++epochsSession_;
  stepsSession_ += steps;
  EvalResult ev = evaluateModel();

  const int64_t epochSamples = state_.epochSamples;
  state_.epoch = epoch + 1;
  state_.step = 0;
  state_.epochSamples = 0;
  const std::string name = monitoredMetric();
  const bool onEval = name.rfind("eval_", 0) == 0;
  const std::string key = name.substr(onEval ? 5 : 6);
  double monitored = std::nan("");
  for (const auto& [k, v] : onEval ? ev.values : train) {
    if (k == key) monitored = v;
  }
  // A NaN metric (a diverged model) is never the best.
  const bool isBest = !std::isnan(monitored) &&
                      (std::isnan(state_.bestMetric) ||
                       (higherIsBetter() ? monitored > state_.bestMetric : monitored < state_.bestMetric));
  if (isBest) {
    state_.bestMetric = monitored;
    state_.bestEpoch = state_.epoch;
  }
  const double t = std::max(1e-9, seconds);
  EpochReport report{state_, stepsPerEpoch_, epochSamples, train, ev.values,
                     schedule_->at(state_.globalStep - 1, epoch), sums.globalSamples() / t, waited / t,
                     comm / t, seconds, isBest, monitored, {}};
  for (auto& o : observers_) o->afterEpoch(report);
}

void Trainer::flushBuffers() { sync_->flushBuffers(); }

EvalResult Trainer::evaluateModel() {
  auto evalStart = Clock::now();
  EvalResult ev = evaluate(model_, task_, *eval_, norm_, cfg_.data.evalBatchSize, comm_, device_);
  evalSeconds_ += secondsSince(evalStart);
  return ev;
}

}  // namespace forge::train
