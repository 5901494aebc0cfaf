// The Trainer's setup: data, model, optimizer, schedule, loader, observers.
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "core/error.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/strings.h"
#include "checkpoint/python_state_dict.h"
#include "distributed/device.h"
#include "trainer/engine/data_watch.h"
#include "trainer/engine/ema.h"
#include "trainer/engine/global_batch.h"
#include "trainer/engine/observers.h"
#include "trainer/engine/stopping.h"
#include "trainer/engine/trainer.h"
#include "trainer/module/build.h"
#include "trainer/module/probe.h"
#include "trainer/module/rules.h"
#include "trainer/module/state_dict.h"
#include "trainer/spec/registry.h"
#include "trainer/tasks/kinds.h"

namespace forge::train {
namespace {

using Clock = std::chrono::steady_clock;

bool hasBatchNorm(const torch::nn::Module& m) {
  for (const auto& sub : m.modules()) {
    if (sub->name().find("BatchNorm") != std::string::npos) return true;
  }
  return false;
}

}  // namespace

Trainer::Trainer(Config cfg, dist::Communicator& comm, const dist::WorldInfo& world, const std::string& resume,
                 c10::Device device, std::optional<ModelHandle> model)
    : cfg_(std::move(cfg)), comm_(comm), world_(world), device_(device), runDir_(cfg_.run.dir) {
  // One job per run dir, before anything there is read (resume) or written (statistics).
  if (world_.rank == 0) runLock_ = std::make_unique<RunDirLock>(cfg_.run.dir);
  registry().check();
  norm_ = data::Normalization{cfg_.data.normalize.scale, cfg_.data.normalize.mean, cfg_.data.normalize.std};
  task_ = Task::resolve(cfg_.task.loss, cfg_.task.metrics);
  checkMonitor();
  openData();
  buildModel(std::move(model));
  {
    // The step's global batch, split for this world size (the config's batch_size and
    // accumulate_steps become the derived ones, which the rest of setup and the loop use).
    BatchSplit split = splitGlobalBatch(cfg_.data.globalBatchSize, cfg_.data.batchSize,
                                        cfg_.optimizer.accumulateSteps, world_.size);
    if (cfg_.data.globalBatchSize > 0 && world_.rank == 0) {
      log::info("data", "data.global_batch_size ", split.global, " on ", world_.size, " rank(s): micro-batches of ",
                split.microBatch, " x ", split.accumulate, " per step per rank");
    }
    batchSizeLimit_ = cfg_.data.batchSize;
    cfg_.data.batchSize = split.microBatch;
    cfg_.optimizer.accumulateSteps = split.accumulate;
  }
  // The global shuffle window depends on the buffer, the row size and a configured global
  // batch only, never on the world size: the epoch's order is the same on any number of ranks.
  window_ = data::globalWindowFor(static_cast<size_t>(cfg_.data.bufferMb * (1 << 20)),
                                  train_->batchRowBytes(), cfg_.data.globalBatchSize);
  const int64_t globalBatch = int64_t{world_.size} * cfg_.data.batchSize * cfg_.optimizer.accumulateSteps;
  rebuildSampler();
  batchesPerEpoch_ = loader_->batchesPerEpoch(sampler_->samplesPerRank());
  const int64_t k = cfg_.optimizer.accumulateSteps;
  stepsPerEpoch_ = batchesPerEpoch_ / k + (batchesPerEpoch_ % k != 0 ? 1 : 0);  // rounded up, without overflow
  if (stepsPerEpoch_ == 0) {
    throw ConfigError(concat("a global batch of ", globalBatch, " with drop_last leaves no full step from ",
                             sampler_->datasetSize(), " samples"));
  }
  // Steps count in int64 and the schedule computes in double: past 2^53 steps neither is
  // exact (and such a run would never end).
  constexpr int64_t kMaxSteps = int64_t(1) << 53;
  if (cfg_.run.epochs > kMaxSteps / stepsPerEpoch_) {
    throw ConfigError(concat("run.epochs ", cfg_.run.epochs, " of ", stepsPerEpoch_, " steps each is more than 2^53 ",
                             "optimizer steps: at most ", kMaxSteps / stepsPerEpoch_, " epochs"));
  }
  schedule_ = std::make_unique<LrSchedule>(registry().schedules.get(cfg_.schedule.name), cfg_.schedule.warmupSteps,
                                           cfg_.schedule.options, cfg_.optimizer.lr, stepsPerEpoch_, cfg_.run.epochs);
  {
    // The rate once warmup is over: zero, or too small for float32, trains nothing.
    const int64_t total = stepsPerEpoch_ * cfg_.run.epochs;
    const int64_t first = std::min(cfg_.schedule.warmupSteps, total - 1);
    const double lr = schedule_->at(first, first / stepsPerEpoch_);
    if (!(static_cast<float>(lr) > 0)) {
      throw ConfigError(concat("the learning rate is ", lr, " at step ", first + 1, " of ", total, " (schedule '",
                               cfg_.schedule.name, "', optimizer.lr ", cfg_.optimizer.lr, ", run.epochs ",
                               cfg_.run.epochs, "): training would not move; check the schedule's keys and run.epochs"));
    }
  }
  checkpoints_ = std::make_unique<ckpt::CheckpointDir>(runDir_.checkpoints(), static_cast<int>(cfg_.checkpoint.keepLast));
  hasBatchNorm_ = hasBatchNorm(*model_.module);
  if (hasBatchNorm_) {
    // Training-mode BatchNorm needs two samples per batch to form statistics.
    if (cfg_.data.batchSize == 1) {
      throw ConfigError(concat("micro-batches of 1 sample per rank",
                               cfg_.data.globalBatchSize > 0 ? concat(" (data.global_batch_size ", cfg_.data.globalBatchSize,
                                                                      " on ", world_.size, " ranks)")
                                                             : std::string(),
                               ", which BatchNorm cannot train on: use a larger batch or fewer ranks"));
    }
    int64_t lastBatch = sampler_->samplesPerRank() % cfg_.data.batchSize;
    if (lastBatch == 1 && !cfg_.data.dropLast) {
      throw ConfigError(concat("the last batch of every epoch would hold 1 sample per rank (",
                               sampler_->samplesPerRank(), " samples per rank, data.batch_size ", cfg_.data.batchSize,
                               "), which BatchNorm cannot train on: set data.drop_last: true or another batch size"));
    }
  }
  if (world_.rank == 0) prepareRunDir(resume);
  addObservers();
}

Trainer::~Trainer() = default;

// The splits, and before any training whether their samples are what the model takes (the
// probe would also fail, but this names the data and the config key).
data::SourceSpec sourceSpecFor(const Config& cfg, const std::string& split) {
  data::SourceSpec spec{cfg.data.paths, split, cfg.data.features, cfg.data.labels, 0};
  const TaskKind* kind = findTaskKind(cfg.task.name);
  spec.targets = kind != nullptr ? kind->targets : data::Targets::kClasses;
  spec.task = cfg.task.name;
  if (spec.targets == data::Targets::kClasses && cfg.model.options.has("num_classes")) {
    spec.numClasses = cfg.model.options.get<int64_t>("num_classes");
  }
  return spec;
}

void Trainer::openData() {
  train_ = std::make_unique<data::SplitSource>(sourceSpecFor(cfg_, cfg_.data.trainSplit));
  eval_ = std::make_unique<data::SplitSource>(sourceSpecFor(cfg_, cfg_.data.evalSplit));
  const auto& shape = train_->sampleShape();
  if (eval_->sampleShape() != shape || eval_->featureType() != train_->featureType()) {
    throw DataError(concat("data ", eval_->name(), ": samples are ", at::toString(eval_->featureType()), " ",
                           dimsText(eval_->sampleShape()), " but the training split's are ",
                           at::toString(train_->featureType()), " ", dimsText(shape)));
  }
  if (eval_->targetShape() != train_->targetShape()) {
    throw DataError(concat("data ", eval_->name(), ": each sample's target has shape ", dimsText(eval_->targetShape()),
                           " but the training split's has ", dimsText(train_->targetShape()),
                           " (dataset '", cfg_.data.labels, "' of both splits must match)"));
  }
}

// The model from the registry (or the caller), identical on every rank, moved to its device
// and checked there against the nn.Module rules on a real batch.
void Trainer::buildModel(std::optional<ModelHandle> model) {
  torch::manual_seed(cfg_.run.seed);  // identical initial weights on every rank
  if (model) {
    model_ = std::move(*model);
    modelName_ = "(given by the program)";
  } else {
    modelName_ = cfg_.model.name;
    const ModelSpec& spec = registry().models.get(cfg_.model.name);
    if (spec.checkInput) {
      std::string problem = spec.checkInput(train_->inputShape(), cfg_.model.options);
      if (!problem.empty()) throw DataError(concat("data ", train_->name(), ": ", problem));
    }
    if (spec.vocabulary) {
      checkTokenIds(spec.vocabulary(cfg_.model.options));
    } else if (train_->tokens()) {
      throw DataError(concat("data ", train_->name(), ": the features are ", train_->storedTypeName(),
                             " token ids (integer features other than uint8 are ids, carried as int64 and never "
                             "normalized), but model ", cfg_.model.name, " takes values: store float32 features, "
                             "or use a model that embeds tokens (gpt; a registered model declares its vocabulary)"));
    }
    // Weights, gradients, optimizer state (two moments at most) and gradient buckets: about
    // 5 copies of the parameters per rank, times the ranks on this node.
    model_ = buildRegisteredModel(spec, cfg_.model.options, 5 * std::max(1, world_.localSize));
  }
  if (!model_.module || !model_.forward) throw ConfigError("the model factory returned no module or no forward");
  requireTrainableParameters(*model_.module);
  if (!cfg_.model.initFrom.empty()) {
    // Strict: every mismatch is named. A resume later overrides these weights.
    loadModelStateDict(*model_.module, ckpt::loadModelState(cfg_.model.initFrom), cfg_.model.initFrom);
    log::info("train", "model initialized from ", cfg_.model.initFrom);
  }
  // One move, parameters and buffers together, before the optimizer sees the parameters; the
  // probe runs where training will (a forward that makes tensors on its input's device works).
  model_.module->to(device_);
  {
    int64_t n = std::min<int64_t>(cfg_.data.batchSize, train_->size());
    std::vector<int64_t> first(n);
    for (int64_t i = 0; i < n; ++i) first[i] = i;
    data::Batch probe = data::readBatch(*train_, norm_, first);
    probe = data::Batch{probe.x.to(device_), probe.y.to(device_)};
    probeModel(model_, probe, train_->name(), *task_.loss, task_.metrics, cfg_.distributed.allowUnusedParameters);
  }
  // A tied weight (one tensor registered under two names) is one parameter, as in PyTorch:
  // stepped once, with one optimizer state.
  std::set<const c10::TensorImpl*> seen;
  for (auto& p : model_.module->parameters()) {
    if (p.requires_grad() && seen.insert(p.unsafeGetTensorImpl()).second) params_.push_back(p);
  }
  optimizer_ = std::make_unique<Optimizer>(registry().optimizers.get(cfg_.optimizer.name), cfg_.optimizer.lr,
                                           cfg_.optimizer.weightDecay, cfg_.optimizer.options, params_,
                                           exemptFromDecay());
  GradientGuardOptions guard{cfg_.optimizer.clipGradNorm, cfg_.optimizer.maxSkippedSteps, world_.rank == 0};
  gradients_ = std::make_unique<GradientGuard>(params_, guard, [this](const std::string& found) {
    throw divergedError(found);
  });
  addPart(*gradients_);
  const auto& ls = cfg_.lossScale;
  if (ls.mode == "dynamic" || (ls.mode == "auto" && cfg_.run.precision == "fp16")) {
    scaler_ = std::make_unique<LossScaler>(LossScalerOptions{ls.init, ls.growthInterval});
    addPart(*scaler_);
  }
}

void Trainer::addPart(StatefulPart& part) { parts_.push_back(&part); }

// optimizer.no_decay: one flag per trainable parameter (params_ order).
std::vector<bool> Trainer::exemptFromDecay() const {
  const auto& rules = cfg_.optimizer.noDecay;
  const bool bias = std::find(rules.begin(), rules.end(), "bias") != rules.end();
  const bool norm = std::find(rules.begin(), rules.end(), "norm") != rules.end();
  std::set<const c10::TensorImpl*> exempt;
  std::vector<std::string> names;
  for (const auto& p : model_.module->named_parameters()) {
    const std::string& n = p.key();
    if (bias && n.size() >= 4 && n.compare(n.size() - 4, 4, "bias") == 0 && exempt.insert(p->unsafeGetTensorImpl()).second) {
      names.push_back(n);
    }
  }
  if (norm) {
    // A normalization layer by its type's name (torch::nn::BatchNorm1dImpl, LayerNormImpl, ...).
    for (const auto& m : model_.module->named_modules()) {
      if (m.value()->name().find("Norm") == std::string::npos) continue;
      for (const auto& p : m.value()->named_parameters(/*recurse=*/false)) {
        if (exempt.insert(p->unsafeGetTensorImpl()).second) names.push_back(m.key() + "." + p.key());
      }
    }
  }
  if (!rules.empty() && world_.rank == 0) {
    log::info("train", "optimizer.no_decay [", join(rules), "]: no weight decay on ", names.size(), " tensor(s): ",
              join(names));
  }
  std::vector<bool> out;
  for (const auto& p : params_) out.push_back(exempt.count(p.unsafeGetTensorImpl()) > 0);
  return out;
}

// Samples of this rank's share of the current epoch already trained on.
int64_t Trainer::samplesDone() const { return epochSamplesDone() / world_.size; }

// Global samples of the current epoch trained on: steps of the global batch from where the
// epoch started (a resumed epoch may start between two steps of this world size's), at most
// the epoch's samples (the last step's are padded or dropped).
int64_t Trainer::epochSamplesDone() const {
  const int64_t g = sampler_->globalBatch();
  const bool resumed = state_.epoch == resumeEpoch_;
  const int64_t done = resumed ? resumeSample_ + (state_.step - resumeStep_) * g : state_.step * g;
  return std::min(done, sampler_->epochSamples());
}

// Starts streaming `epoch` (from the resumed position when it is the resumed one): this
// rank's part of the epoch's global order, read window by window.
void Trainer::startLoader(int64_t epoch) {
  sampler_->setEpoch(epoch);
  const bool resumed = epoch == resumeEpoch_;
  data::DistributedSampler::Plan plan = sampler_->plan(resumed ? resumeSample_ : 0);
  // The micro-batches of the whole epoch as the loop counts them: those of the steps before
  // the resumed one, then the plan's (the last step may have fewer).
  batchesPerEpoch_ = (resumed ? resumeStep_ * cfg_.optimizer.accumulateSteps : 0) + plan.microBatches;
  planSamples_ = static_cast<int64_t>(plan.indices.size());
  planFirstStep_ = resumed ? resumeStep_ : 0;
  sampleLog_.start(epoch, plan.indices, cfg_.data.batchSize);
  loader_->start(std::move(plan.indices), 0, std::move(plan.windowStarts));
  loaderEpoch_ = epoch;
}

// The sampler and the loader for window_ (again, when a resume keeps a checkpoint's window).
void Trainer::rebuildSampler() {
  const int64_t globalBatch = int64_t{world_.size} * cfg_.data.batchSize * cfg_.optimizer.accumulateSteps;
  sampler_ = std::make_unique<data::DistributedSampler>(train_->blocks(), world_.rank, world_.size, cfg_.run.seed,
                                                         cfg_.data.shuffle, cfg_.data.dropLast, window_,
                                                         cfg_.data.batchSize, globalBatch);
  makeLoader();
}

void Trainer::makeLoader() {
  data::LoaderOptions o;
  o.batchSize = cfg_.data.batchSize;
  o.dropLast = cfg_.data.dropLast;
  o.prefetch = static_cast<size_t>(cfg_.data.prefetch);
  o.window = window_;
  // A rank needs 1 in world_.size rows of each global window: gaps of up to a few times that
  // are stepped over, so a window still comes in runs of whole blocks (bench/RESULTS.md).
  o.maxGap = 8 * int64_t{world_.size} - 1;
  o.pinMemory = device_.is_cuda();
  o.nonFinite = cfg_.data.nonFinite == "skip" ? data::NonFinite::kSkip : data::NonFinite::kError;
  loader_ = std::make_unique<data::BatchLoader>(*train_, norm_, o);
  loaderEpoch_ = -1;
}

// Every token id of both splits in [0, vocabulary): an id past the embedding table would
// fail mid-run in an index kernel (or read another row's memory on a GPU). Each rank scans a
// disjoint share of each split. Collective.
void Trainer::checkTokenIds(int64_t vocabulary) {
  for (const data::SplitSource* split : {train_.get(), eval_.get()}) {
    if (!split->tokens()) {
      throw DataError(concat("data ", split->name(), ": model ", cfg_.model.name, " embeds token ids, but the features are ",
                             at::toString(split->featureType()), " values (token ids are integers; task.name: ",
                             "language_model reads uint8 as bytes)"));
    }
    const int64_t n = split->size();
    const int64_t first = n * world_.rank / world_.size, last = n * (world_.rank + 1) / world_.size;
    data::TokenRange r = data::tokenRange(*split, first, last - first);
    // Min and max reduced as they are: negating INT64_MIN would overflow.
    at::Tensor lo = at::tensor({r.min}, at::kLong), hi = at::tensor({r.max}, at::kLong);
    comm_.allReduce(lo, dist::ReduceOp::kMin);
    comm_.allReduce(hi, dist::ReduceOp::kMax);
    if (lo.item<int64_t>() >= 0 && hi.item<int64_t>() < vocabulary) continue;
    // The rank that holds the offending id names it; the others say where to look.
    std::string where = "another rank's share of the split";
    if (r.max >= vocabulary) {
      where = concat("sample ", r.sampleOfMax, " (", split->locate(r.sampleOfMax), ") holds ", r.max);
    } else if (r.min < 0) {
      where = concat("sample ", r.sampleOfMin, " (", split->locate(r.sampleOfMin), ") holds ", r.min);
    }
    throw DataError(concat("data ", split->name(), ": token ids reach ", hi.item<int64_t>(), " and go down to ",
                           lo.item<int64_t>(), ", outside the model's vocabulary [0, ", vocabulary,
                           ") (model.vocab_size): ", where));
  }
}

// data.normalize.stats: auto. Per-feature mean and std of the training split, computed once
// (each rank sums a disjoint share: the split is read once in all) and kept in the run dir,
// so that a resumed run normalizes exactly as before. Collective.
void Trainer::resolveFeatureStats() {
  const auto& n = cfg_.data.normalize;
  if (train_->tokens() && (n.scale != 1.0 || n.mean != std::vector<double>{0.0} || n.std != std::vector<double>{1.0})) {
    throw ConfigError(concat("config error in ", cfg_.sourcePath, ": data.normalize.scale, mean or std is set, but ",
                             train_->name(), " holds token ids, which are never normalized: remove them"));
  }
  if (cfg_.data.normalize.stats != "auto") return;
  if (train_->tokens()) {
    throw ConfigError(concat("config error in ", cfg_.sourcePath, ": data.normalize.stats is auto, but ",
                             train_->name(), " holds token ids, which are never normalized: remove the key"));
  }
  const std::string path = runDir_.featureStats();
  at::Tensor have = at::full({1}, world_.rank == 0 && std::filesystem::exists(path) ? 1 : 0, at::kInt);
  comm_.broadcast(have, 0);
  std::vector<double> mean, std;
  if (have.item<int>() == 0) {
    const int64_t n = train_->size();
    const int64_t first = n * world_.rank / world_.size;
    const int64_t last = n * (world_.rank + 1) / world_.size;
    auto start = Clock::now();
    data::FeatureSums sums = data::featureSums(*train_, first, last - first, cfg_.data.normalize.scale);
    comm_.allReduce(sums.sum, dist::ReduceOp::kSum);
    comm_.allReduce(sums.sumSq, dist::ReduceOp::kSum);
    at::Tensor m = sums.sum / static_cast<double>(n);
    at::Tensor var = (sums.sumSq / static_cast<double>(n) - m * m).clamp_min(0);
    at::Tensor sd = var.sqrt();
    // A constant feature (a border pixel that is always 0) keeps std 1, as scikit-learn does.
    sd = at::where(sd > 1e-12, sd, at::ones_like(sd));
    mean.assign(m.data_ptr<double>(), m.data_ptr<double>() + m.numel());
    std.assign(sd.data_ptr<double>(), sd.data_ptr<double>() + sd.numel());
    if (world_.rank == 0) {
      data::writeFeatureStats(path, mean, std);
      log::info("data", "per-feature mean and std of ", train_->name(), " computed in ",
                formatDuration(secondsSince(start)), ", stored in ", path);
    }
    comm_.barrier();
  } else {
    data::readFeatureStats(path, mean, std);
    log::info("data", "per-feature mean and std from ", path);
  }
  if (static_cast<int64_t>(mean.size()) != train_->rowElements()) {
    throw DataError(concat(path, " holds statistics of ", mean.size(), " features, the data has ",
                           train_->rowElements(), " (delete it to recompute)"));
  }
  norm_.mean = mean;
  norm_.std = std;
  makeLoader();
}

std::string Trainer::monitoredMetric() const {
  if (!cfg_.checkpoint.monitor.empty()) return cfg_.checkpoint.monitor;
  return task_.metrics.empty() ? std::string("eval_loss") : "eval_" + task_.metrics.front()->name;
}

bool Trainer::higherIsBetter() const {
  if (cfg_.checkpoint.mode != "auto") return cfg_.checkpoint.mode == "max";
  const std::string m = monitoredMetric();
  const std::string name = m.substr(m.find('_') + 1);
  for (const auto& metric : task_.metrics) {
    if (metric->name == name) return metric->higherIsBetter;
  }
  return false;  // a loss
}

void Trainer::requestStop(const std::string& why) {
  if (stopReason_.empty()) stopReason_ = why;
}

// checkpoint.monitor names a value the run has: eval_ or train_, then loss or a task metric.
void Trainer::checkMonitor() const {
  std::vector<std::string> valid;
  for (const char* side : {"eval_", "train_"}) {
    valid.push_back(std::string(side) + "loss");
    for (const auto& metric : task_.metrics) valid.push_back(side + metric->name);
  }
  const std::string m = monitoredMetric();
  if (std::find(valid.begin(), valid.end(), m) == valid.end()) {
    throw ConfigError(concat("config error in ", cfg_.sourcePath, ": checkpoint.monitor '", m,
                             "' is not a value of this run (task.metrics: valid are ", join(valid, ", "), ")"));
  }
}

void Trainer::addObservers() {
  // Order matters: preemption looks before a step is taken; after an epoch, the metrics
  // record is written before the checkpoint that covers it. A data file that changed stops
  // the run before anything records or saves what was trained on it: the data watch first.
  observers_.push_back(makeDataWatch({train_.get(), eval_.get()}, comm_));
  observers_.push_back(makePreemptionWatch(*this, comm_));
  observers_.push_back(makeFaultInjector(world_.rank));
  // Before the reporting and saving ones, which see what it adds (its step's update, its
  // evaluation).
  if (auto ema = makeWeightAverage(*this)) observers_.push_back(std::move(ema));
  if (world_.rank == 0) {
    observers_.push_back(makeProgressObserver(*this, world_.size));
    observers_.push_back(makeMetricsObserver(*this, world_.size));
  }
  observers_.push_back(makeStoppingRules(*this));  // before the policy, which saves where it stops
  observers_.push_back(makeCheckpointPolicy(*this));
  for (auto& o : observers_) {
    if (auto* part = dynamic_cast<StatefulPart*>(o.get())) addPart(*part);
  }
}

}  // namespace forge::train
