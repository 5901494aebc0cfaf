#include "trainer/trainer.h"

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <set>
#include <thread>


#include "core/log.h"
#include "core/names.h"
#include "core/strings.h"
#include "core/table.h"
#include "distributed/device.h"
#include "distributed/replicas.h"
#include "trainer/guards.h"
#include "checkpoint/atomic_file.h"
#include "checkpoint/python_state_dict.h"
#include "trainer/metrics.h"
#include "trainer/preemption.h"
#include "trainer/models/model_registry.h"

namespace forge::train {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
constexpr int64_t kPreemptionCheckEverySteps = 8;
constexpr const char* kBestMetricName = "eval_accuracy";

double secondsSince(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string hex16(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}


// Dropout and other random layers draw from a per-rank stream: ranks must not drop the
// same units, and the stream must be reproducible from (seed, rank).
uint64_t rankSeed(uint64_t seed, int rank) { return seed * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL * (rank + 1); }

// bf16 autocast on CUDA for the forward pass (matrix products in bf16, reductions and the
// loss in fp32); the weights, their gradients and the optimizer state stay fp32.
class AutocastBf16 {
 public:
  explicit AutocastBf16(bool on) : on_(on) {
    if (!on_) return;
    prevEnabled_ = at::autocast::is_autocast_enabled(at::kCUDA);
    prevType_ = at::autocast::get_autocast_dtype(at::kCUDA);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    at::autocast::increment_nesting();
  }
  ~AutocastBf16() {
    if (!on_) return;
    // Leaving the outermost region frees the casts of the weights it cached.
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(at::kCUDA, prevEnabled_);
    at::autocast::set_autocast_dtype(at::kCUDA, prevType_);
  }
  AutocastBf16(const AutocastBf16&) = delete;
  AutocastBf16& operator=(const AutocastBf16&) = delete;

 private:
  bool on_;
  bool prevEnabled_ = false;
  at::ScalarType prevType_ = at::kFloat;
};

}  // namespace

int threadsPerRank(int configured, const dist::WorldInfo& world) {
  if (configured > 0) return configured;
  return std::max(1, dist::coresOnNode() / std::max(1, world.localSize));
}

Trainer::Trainer(Config cfg, dist::Communicator& comm, const dist::WorldInfo& world, const std::string& resume,
                 c10::Device device)
    : cfg_(std::move(cfg)),
      comm_(comm),
      world_(world),
      device_(device),
      progress_(Progress::resolve(cfg_.log.progress, Progress::stdoutIsTerminal()), cfg_.log.everyS) {
  norm_ = data::Normalization{cfg_.data.normalize.scale, cfg_.data.normalize.mean, cfg_.data.normalize.std};
  data::SourceSpec spec{cfg_.data.paths, cfg_.data.trainSplit, cfg_.data.features, cfg_.data.labels,
                        cfg_.model.numClasses};
  train_ = std::make_unique<data::SplitSource>(spec);
  spec.split = cfg_.data.evalSplit;
  eval_ = std::make_unique<data::SplitSource>(spec);
  checkInputShape();

  torch::manual_seed(cfg_.run.seed);  // identical initial weights on every rank
  model_ = makeModel(cfg_.model);
  requireTrainableParameters(*model_);
  if (!cfg_.model.initFrom.empty()) {
    // Strict: every mismatch is named. A resume later overrides these weights.
    loadModelStateDict(*model_, ckpt::loadModelState(cfg_.model.initFrom), cfg_.model.initFrom);
    log::info("train", "model initialized from ", cfg_.model.initFrom);
  }
  {
    int64_t n = std::min<int64_t>(cfg_.data.batchSize, train_->size());
    std::vector<int64_t> first(n);
    for (int64_t i = 0; i < n; ++i) first[i] = i;
    data::Batch probe = data::readBatch(*train_, norm_, first);
    probeShapes(*model_, probe.x, train_->name(), cfg_.model.numClasses);
  }
  // One move, parameters and buffers together, before the optimizer sees the parameters.
  model_->to(device_);
  for (auto& p : model_->parameters()) {
    if (p.requires_grad()) params_.push_back(p);
  }
  optimizer_ = makeOptimizer(cfg_.optimizer, params_);
  window_ = data::windowFor(static_cast<size_t>(cfg_.data.bufferMb * (1 << 20)), train_->rowElements() * sizeof(float),
                            cfg_.data.batchSize);
  sampler_ = std::make_unique<data::DistributedSampler>(train_->blocks(), world_.rank, world_.size, cfg_.run.seed,
                                                         cfg_.data.shuffle, cfg_.data.dropLast, window_);
  makeLoader();
  batchesPerEpoch_ = loader_->batchesPerEpoch(sampler_->samplesPerRank());
  stepsPerEpoch_ = (batchesPerEpoch_ + cfg_.optimizer.accumulateSteps - 1) / cfg_.optimizer.accumulateSteps;
  if (stepsPerEpoch_ == 0) {
    throw ConfigError(concat("data.batch_size ", cfg_.data.batchSize, " with drop_last leaves no full batch from ",
                          sampler_->samplesPerRank(), " samples per rank"));
  }
  schedule_ = std::make_unique<LrSchedule>(cfg_.schedule, cfg_.optimizer.lr, stepsPerEpoch_, cfg_.run.epochs);
  checkpoints_ = std::make_unique<ckpt::CheckpointDir>((fs::path(cfg_.run.dir) / "checkpoints").string(),
                                                       static_cast<int>(cfg_.checkpoint.keepLast));
  if (hasBatchNorm(*model_)) {
    // Training-mode BatchNorm needs two samples per batch to form statistics.
    int64_t lastBatch = sampler_->samplesPerRank() % cfg_.data.batchSize;
    if (lastBatch == 1 && !cfg_.data.dropLast) {
      throw ConfigError(concat("the last batch of every epoch would hold 1 sample per rank (",
                               sampler_->samplesPerRank(), " samples per rank, data.batch_size ", cfg_.data.batchSize,
                               "), which BatchNorm cannot train on: set data.drop_last: true or another batch size"));
    }
  }
  if (world_.rank == 0) prepareRunDir(resume);
}

// Samples of this rank's share of the current epoch already trained on: the sampler's
// position (step_ optimizer steps of accumulate_steps batches).
int64_t Trainer::samplesDone() const { return step_ * cfg_.optimizer.accumulateSteps * cfg_.data.batchSize; }

// Starts streaming `epoch` (from the resumed position when it is the current one).
void Trainer::startLoader(int64_t epoch) {
  sampler_->setEpoch(epoch);
  std::vector<int64_t> indices = sampler_->indices();
  int64_t skip = 0;
  if (epoch == epoch_) {
    // Resuming mid-epoch: the batches already trained on are skipped, the order is unchanged.
    skip = std::min<int64_t>(static_cast<int64_t>(indices.size()), samplesDone());
  }
  loader_->start(std::move(indices), skip);
  loaderEpoch_ = epoch;
}

void Trainer::makeLoader() {
  data::LoaderOptions o;
  o.batchSize = cfg_.data.batchSize;
  o.dropLast = cfg_.data.dropLast;
  o.prefetch = static_cast<size_t>(cfg_.data.prefetch);
  o.window = window_;
  o.pinMemory = device_.is_cuda();
  o.nonFinite = cfg_.data.nonFinite == "skip" ? data::NonFinite::kSkip : data::NonFinite::kError;
  loader_ = std::make_unique<data::BatchLoader>(*train_, norm_, o);
  loaderEpoch_ = -1;
}

// Before any training: samples must be what the model takes (the shape probe would also
// fail, but this names the data and the config key).
void Trainer::checkInputShape() const {
  const auto& shape = train_->sampleShape();
  int64_t features = 1;
  for (int64_t d : shape) features *= d;
  if (cfg_.model.name == "mlp" && features != cfg_.model.inFeatures) {
    throw DataError(concat("data ", train_->name(), ": samples have shape ", dimsText(shape), " (", features,
                           " features) but the model takes ", cfg_.model.inFeatures, " (model.in_features)"));
  }
  if (cfg_.model.name == "cnn") {
    // Flat samples are reshaped to the image; the element count must match.
    int64_t image = 1;
    for (int64_t d : cfg_.model.inputShape) image *= d;
    if (features != image) {
      throw DataError(concat("data ", train_->name(), ": samples have shape ", dimsText(shape), " (", features,
                             " values) but the model takes ", dimsText(cfg_.model.inputShape), " (", image,
                             " values, model.input_shape)"));
    }
  }
  if (eval_->sampleShape() != shape || eval_->featureType() != train_->featureType()) {
    throw DataError(concat("data ", eval_->name(), ": samples are ", at::toString(eval_->featureType()), " ",
                           dimsText(eval_->sampleShape()), " but the training split's are ",
                           at::toString(train_->featureType()), " ", dimsText(shape)));
  }
}

// data.normalize.stats: auto. Per-feature mean and std of the training split, computed once
// (each rank sums a disjoint share: the split is read once in all) and kept in the run dir,
// so that a resumed run normalizes exactly as before. Collective.
void Trainer::resolveFeatureStats() {
  if (cfg_.data.normalize.stats != "auto") return;
  const std::string path = (fs::path(cfg_.run.dir) / "feature_stats.h5").string();
  at::Tensor have = at::full({1}, world_.rank == 0 && fs::exists(path) ? 1 : 0, at::kInt);
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

bool Trainer::hasBatchNorm(const torch::nn::Module& m) {
  for (const auto& sub : m.modules()) {
    if (sub->name().find("BatchNorm") != std::string::npos) return true;
  }
  return false;
}

// Rank 0, during setup: the run folder, the config as resolved, and which checkpoint to
// resume from. A fresh start never mixes with an earlier run's checkpoints, and a resume
// from an older checkpoint moves the newer ones aside (they belong to the abandoned future)
// so that retention and a later --resume auto cannot confuse the two histories.
void Trainer::prepareRunDir(const std::string& resume) {
  std::error_code ec;
  fs::create_directories(checkpoints_->dir(), ec);
  if (ec) throw ConfigError(concat("cannot create run dir '", cfg_.run.dir, "': ", ec.message(), " (set run.dir)"));
  if (int n = checkpoints_->removeStaleTemporaries()) {
    log::info("ckpt", "removed ", n, " temporary file(s) of a save that was interrupted");
  }
  {
    std::string cfgPath = (fs::path(cfg_.run.dir) / "config.yaml").string();
    std::ofstream out(cfgPath);
    out << cfg_.resolved;
    if (!out.flush()) throw ConfigError(concat("cannot write '", cfgPath, "'"));
  }
  if (resume == "auto") {
    auto found = checkpoints_->loadNewest();
    if (found) {
      for (const auto& skipped : found->skipped) log::warn("ckpt", "skipped ", skipped);
      resumePath_ = found->path;
    }
  } else if (!resume.empty()) {
    ckpt::Checkpoint ck = ckpt::load(resume);  // verify before anything is moved
    resumePath_ = resume;
    std::vector<std::string> newer;
    for (const auto& f : checkpoints_->list()) {
      if (fs::equivalent(f, resume, ec)) continue;
      std::smatch m;
      std::string name = fs::path(f).filename().string();
      static const std::regex kStep(R"(ckpt-e\d+-s(\d+)\.pt)");
      if (std::regex_match(name, m, kStep) && std::stoll(m[1]) > ck.globalStep) newer.push_back(f);
    }
    // best.pt from the abandoned future goes with it (a best.pt that fails to load stays).
    if (fs::exists(checkpoints_->bestPath()) && !fs::equivalent(checkpoints_->bestPath(), resume, ec)) {
      try {
        if (ckpt::load(checkpoints_->bestPath()).globalStep > ck.globalStep) {
          newer.push_back(checkpoints_->bestPath());
          log::warn("ckpt", "best.pt was written after ", resume, " and goes aside with the newer checkpoints; the "
                    "next epoch that beats the resumed best ", kBestMetricName, " writes a new one");
        }
      } catch (const CheckpointError&) {
      }
    }
    if (!newer.empty()) {
      fs::path aside = fs::path(checkpoints_->dir()) / concat("abandoned-after-step-", ck.globalStep);
      fs::create_directories(aside);
      for (const auto& f : newer) fs::rename(f, aside / fs::path(f).filename());
      log::warn("ckpt", "moved ", newer.size(), " checkpoint(s) newer than ", resume, " to ", aside.string());
    }
  } else if (!checkpoints_->list().empty()) {
    throw ConfigError(concat("run dir '", cfg_.run.dir, "' already holds checkpoints of an earlier run (newest: ",
                             checkpoints_->list().front(), "): continue it with --resume auto, or train afresh "
                             "in another run.dir (or delete that one)"));
  }
  // What rank 0 printed, from the first line on; a resumed run's sessions follow each other.
  const std::string logPath = (fs::path(cfg_.run.dir) / "forge.log").string();
  if (resumePath_.empty()) fs::remove(logPath, ec);
  log::teeTo(logPath);
}

Trainer::~Trainer() = default;

void Trainer::resumeFrom() {
  // Rank 0 chose the file during setup; every rank reads the same one.
  std::string path = resumePath_;
  at::Tensor len = at::full({1}, static_cast<int64_t>(path.size()), at::kLong);
  comm_.broadcast(len, 0);
  at::Tensor chars = at::zeros({len.item<int64_t>()}, at::kByte);
  if (world_.rank == 0) std::memcpy(chars.data_ptr(), path.data(), path.size());
  if (chars.numel() > 0) comm_.broadcast(chars, 0);
  path.assign(static_cast<const char*>(chars.data_ptr()), chars.numel());
  if (path.empty()) {
    log::info("ckpt", "no checkpoint in ", checkpoints_->dir(), ": starting fresh");
    freshOrResumed_ = "fresh start";
    return;
  }
  resumed_ = true;
  ckpt::Checkpoint ck = ckpt::load(path);
  loadModelStateDict(*model_, ck.modelState, path);
  try {
    loadOptimizerStateDict(*optimizer_, cfg_.optimizer, params_, ck.optimizerState);
  } catch (const CheckpointError& e) {
    throw CheckpointError(concat("checkpoint '", path, "': its optimizer state does not fit the config's optimizer '",
                                 cfg_.optimizer.name, "' (was the optimizer changed?): ", e.what()));
  }
  epoch_ = ck.epoch;
  step_ = ck.step;
  globalStep_ = ck.globalStep;
  bestMetric_ = ck.bestMetric;
  if (ck.worldSize == world_.size && static_cast<int>(ck.rngStates.size()) == world_.size) {
    // Restored at the start of the (mid-)epoch, after the per-epoch reseed.
    pendingRngState_ = ck.rngStates[world_.rank];
  }
  if (ck.sampler.isGenericDict() && step_ > 0 && ck.worldSize == world_.size) {
    // Mid-epoch, the rest of the epoch follows the saved order only if nothing that shapes
    // the order changed.
    auto saved = ck.sampler.toGenericDict();
    std::string changed;
    auto differs = [&](const char* key, const c10::IValue& now) {
      auto it = saved.find(key);
      if (it != saved.end() && !(it->value() == now)) changed += concat(changed.empty() ? "" : ", ", key);
    };
    differs("seed", static_cast<int64_t>(cfg_.run.seed));
    differs("shuffle", cfg_.data.shuffle);
    differs("drop_last", cfg_.data.dropLast);
    differs("window", window_);
    if (!changed.empty()) {
      log::warn("ckpt", "the config changes the data order (", changed, " differ from the checkpoint's; "
                "data.buffer_mb sets the window): the rest of the interrupted epoch sees other batches than the "
                "uninterrupted run would have");
    }
  }
  if (ck.worldSize != world_.size) {
    // Positions are in optimizer steps, whose size depends on the world size: carry over the
    // samples seen instead, and re-derive the global step so the schedule stays on course.
    const int64_t perStep = cfg_.data.batchSize * cfg_.optimizer.accumulateSteps;
    step_ = std::min(stepsPerEpoch_, ck.step * ck.worldSize * perStep / (world_.size * perStep));
    globalStep_ = epoch_ * stepsPerEpoch_ + step_;
    log::warn("ckpt", "checkpoint was written by ", ck.worldSize, " ranks, resuming on ", world_.size,
              ck.step > 0 ? ": the order of the rest of the interrupted epoch changes" : "");
  }
  // Epochs count from 1 here, as in the progress lines: "at epoch 4 step 0" is where epoch 4
  // starts, after 3 complete ones.
  freshOrResumed_ = concat("resumed from ", path, " at epoch ", epoch_ + 1, " step ", step_, ", global step ",
                           globalStep_);
  log::info("ckpt", "resumed from ", path, " at epoch ", epoch_ + 1, " step ", step_, " (global step ", globalStep_,
            ")", step_ == 0 && epoch_ > 0 ? concat(": epoch ", epoch_, " is complete") : std::string());
  warnIfScheduleChanged(ck);
}

// The learning rate is a pure function of the schedule's settings, the epochs and the steps
// per epoch; a resume whose config changes any of them continues on another curve (raising
// run.epochs stretches a cosine schedule, and the LR jumps back up). Said, not refused: it
// may be what the user wants.
void Trainer::warnIfScheduleChanged(const ckpt::Checkpoint& ck) const {
  if (world_.rank != 0 || !ck.schedule.isGenericDict()) return;
  auto saved = ck.schedule.toGenericDict();
  auto savedLr = saved.find("lr");
  if (savedLr == saved.end() || !savedLr->value().isDouble()) return;
  const double before = savedLr->value().toDouble();
  const double now = schedule_->at(globalStep_, epoch_);
  if (std::fabs(now - before) <= 1e-12 * std::max(1.0, std::fabs(before))) return;
  std::string changed;
  auto differs = [&](const char* key, const c10::IValue& value) {
    auto it = saved.find(key);
    auto text = [](const c10::IValue& v) {
      if (v.isDouble()) return jsonNumber(v.toDouble());
      std::ostringstream os;
      os << v;
      return os.str();
    };
    if (it != saved.end() && !(it->value() == value)) {
      changed += concat(changed.empty() ? "" : ", ", key, " ", text(it->value()), " -> ", text(value));
    }
  };
  differs("epochs", cfg_.run.epochs);
  differs("name", cfg_.schedule.name);
  differs("base_lr", cfg_.optimizer.lr);
  differs("warmup_steps", cfg_.schedule.warmupSteps);
  differs("steps_per_epoch", stepsPerEpoch_);
  differs("min_lr", cfg_.schedule.minLr);
  log::warn("ckpt", "the learning-rate schedule differs from the checkpoint's",
            changed.empty() ? std::string() : concat(" (", changed, ")"), ": the LR at the resumed step is ", now,
            " instead of ", before, ", and the run continues on the new curve");
}

ckpt::Checkpoint Trainer::makeCheckpoint() const {
  ckpt::Checkpoint ck;
  ck.modelState = modelStateDict(*model_);
  ck.optimizerState = optimizerStateDict(*optimizer_, cfg_.optimizer, params_);
  ck.epoch = epoch_;
  ck.step = step_;
  ck.globalStep = globalStep_;
  ck.bestMetric = bestMetric_;
  ck.bestMetricName = kBestMetricName;
  ck.worldSize = world_.size;
  ck.config = cfg_.resolved;
  ck.forgeVersion = FORGE_VERSION;
  // The schedule and the data order are pure functions of these: recorded so that a resume
  // can tell when its config would change them, and for anyone reading the file.
  c10::impl::GenericDict schedule(c10::StringType::get(), c10::AnyType::get());
  schedule.insert("name", cfg_.schedule.name);
  schedule.insert("base_lr", cfg_.optimizer.lr);
  schedule.insert("warmup_steps", cfg_.schedule.warmupSteps);
  schedule.insert("step_epochs", cfg_.schedule.stepEpochs);
  schedule.insert("gamma", cfg_.schedule.gamma);
  schedule.insert("min_lr", cfg_.schedule.minLr);
  schedule.insert("steps_per_epoch", stepsPerEpoch_);
  schedule.insert("epochs", cfg_.run.epochs);
  schedule.insert("global_step", globalStep_);
  schedule.insert("lr", schedule_->at(globalStep_, epoch_));
  ck.schedule = schedule;
  c10::impl::GenericDict sampler(c10::StringType::get(), c10::AnyType::get());
  sampler.insert("seed", static_cast<int64_t>(cfg_.run.seed));
  sampler.insert("epoch", epoch_);
  sampler.insert("position", samplesDone());
  sampler.insert("world_size", static_cast<int64_t>(world_.size));
  sampler.insert("shuffle", cfg_.data.shuffle);
  sampler.insert("drop_last", cfg_.data.dropLast);
  sampler.insert("window", window_);
  sampler.insert("samples_per_rank", sampler_->samplesPerRank());
  ck.sampler = sampler;
  return ck;
}

// Collective (every rank gathers its generator state to the others); rank 0 writes.
std::string Trainer::saveCheckpoint(bool isBest) {
  auto start = Clock::now();
  struct Timed {  // the training thread's time in here, on every path out
    double& total;
    Clock::time_point t0 = Clock::now();
    ~Timed() { total += secondsSince(t0); }
  } timed{checkpointSeconds_};
  at::Tensor mine = currentRngState();
  at::Tensor all = at::empty({mine.numel() * world_.size}, at::kByte);
  comm_.allGather(mine, all);
  if (world_.rank != 0) return "";
  ckpt::Checkpoint ck = makeCheckpoint();
  for (int r = 0; r < world_.size; ++r) ck.rngStates.push_back(all.narrow(0, r * mine.numel(), mine.numel()).clone());
  std::string path = checkpoints_->pathFor(ck.epoch, ck.globalStep);
  auto write = [this, isBest, start](const ckpt::Checkpoint& c) {
    std::string written = checkpoints_->save(c);
    if (isBest) checkpoints_->saveBest(c);
    log::info("ckpt", "saved ", written, isBest ? " and best.pt" : "", " in ", formatDuration(secondsSince(start)));
  };
  if (cfg_.checkpoint.async) {
    // The background thread copies the parameters and optimizer state while the next
    // forward and backward run; the loop waits for that copy before the optimizer step
    // changes them. Buffers change in forward already: they are copied here (they are small).
    std::set<std::string> buffers;
    for (const auto& b : model_->named_buffers()) buffers.insert(b.key());
    for (auto& [name, t] : ck.modelState) {
      if (buffers.count(name)) t = t.detach().to(at::kCPU, /*non_blocking=*/false, /*copy=*/true);
    }
    asyncSaver_.submitSnapshot(std::move(ck), write);
  } else if (device_.is_cuda()) {
    write(ckpt::deepCopy(ck));  // one copy to host memory, then the same file as on the CPU
  } else {
    write(ck);
  }
  return path;
}

at::Tensor Trainer::currentRngState() const {
  std::vector<at::Tensor> parts;
  {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    parts.push_back(gen.get_state());
  }
  if (device_.is_cuda()) {
    at::Generator gen = at::globalContext().defaultGenerator(device_);  // a handle: shares the generator
    std::lock_guard<std::mutex> lock(gen.mutex());
    parts.push_back(gen.get_state());
  }
  return parts.size() == 1 ? parts[0] : at::cat(parts);
}

void Trainer::restoreRngState(const at::Tensor& state) const {
  auto cpu = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(cpu.mutex());
  int64_t cpuBytes = cpu.get_state().numel();
  cpu.set_state(state.narrow(0, 0, std::min(cpuBytes, state.numel())).clone());
  if (!device_.is_cuda()) return;
  at::Generator gen = at::globalContext().defaultGenerator(device_);
  std::lock_guard<std::mutex> lockCuda(gen.mutex());
  if (state.numel() == cpuBytes + gen.get_state().numel()) {
    gen.set_state(state.narrow(0, cpuBytes, state.numel() - cpuBytes).clone());
  } else {
    log::warn("ckpt", "the checkpoint holds no CUDA generator state (written on the CPU?): dropout on the GPU "
              "continues from the epoch's seed, not from the saved position");
  }
}

// At a step boundary: true when some rank had a preemption signal by the previous boundary.
// The flag's all-reduce is started one step and read the next, so its latency hides
// behind a step's work; every rank reads the same result at the same step.
bool Trainer::preemptionAgreed() {
  static const char* signalAt = std::getenv(env::kFaultSignalStep);
  if (signalAt != nullptr && world_.rank == 0 && std::atoll(signalAt) == globalStep_) std::raise(SIGUSR1);
  // Every few steps is soon enough (a scheduler's warning comes tens of seconds ahead) and
  // keeps the collective off most steps.
  if (globalStep_ % kPreemptionCheckEverySteps != 0) return false;
  bool stop = false;
  if (preemptWork_) {
    preemptWork_->wait(Clock::now() + std::chrono::duration_cast<Clock::duration>(comm_.timeout()));
    preemptWork_.reset();
    stop = preemptFlag_.item<int>() > 0;
  }
  if (!stop) {
    preemptFlag_ = at::full({1}, preemptionRequested() ? 1 : 0, at::kInt);
    preemptWork_ = comm_.allReduceAsync(preemptFlag_, dist::ReduceOp::kMax);
  }
  return stop;
}

void Trainer::trainEpoch(int64_t epoch) {
  model_->train();
  // Dropout draws from a stream seeded per (seed, rank, epoch): ranks drop different units,
  // and a run resumed at an epoch boundary draws exactly what the uninterrupted run drew.
  torch::manual_seed(rankSeed(cfg_.run.seed, world_.rank) + static_cast<uint64_t>(epoch));
  if (pendingRngState_.defined()) {
    // Resumed mid-epoch at the same world size: continue this rank's stream exactly.
    if (step_ > 0) restoreRngState(pendingRngState_);
    pendingRngState_ = at::Tensor();
  }
  if (loaderEpoch_ != epoch) startLoader(epoch);
  const int64_t k = cfg_.optimizer.accumulateSteps;

  auto start = Clock::now();
  // Sums stay on the device: reading them each step would stall a GPU's queue every step.
  auto sumOptions = at::TensorOptions().dtype(at::kDouble).device(device_);
  at::Tensor lossSum = at::zeros({}, sumOptions);
  at::Tensor correct = at::zeros({}, sumOptions);
  double seen = 0;
  int64_t stepsThisEpoch = 0;
  const bool bf16 = cfg_.run.precision == "bf16" && device_.is_cuda();
  double waitBefore = loader_->waitSeconds();
  double commBefore = sync_->commWaitSeconds();
  double ckptBefore = checkpointSeconds_;
  mark_ = StepMark{0, 0, 0, waitBefore, commBefore, start};
  std::vector<std::pair<std::string, at::Tensor>> before;
  while (step_ < stepsPerEpoch_) {
    if (preemptionAgreed()) {
      sync_->flushBuffers();  // rank 0's statistics, as at any step boundary
      std::string path = saveCheckpoint(false);
      asyncSaver_.wait();
      comm_.barrier();  // nobody exits (and makes mpirun kill the job) before the file is down
      int sig = preemptionSignal();
      throw Preempted(concat("preempted", sig ? concat(" by signal ", sig) : std::string(" (signal on another rank)"),
                             " at epoch ", epoch + 1, " step ", step_, ": saved ",
                             world_.rank == 0 ? path : std::string("on rank 0"), "; exit ", kExitRequeue,
                             " = please requeue (resume with --resume auto)"));
    }
    injectFault();
    double lr = schedule_->at(globalStep_, epoch);
    setLearningRate(*optimizer_, lr);
    sync_->zeroGrad();
    // The last optimizer step of an epoch may get fewer micro-batches than k.
    const int64_t micro = std::min(k, batchesPerEpoch_ - step_ * k);
    for (int64_t m = 0; m < micro; ++m) {
      auto batch = loader_->next();
      if (!batch) {
        throw Error(concat("rank ", world_.rank, " ran out of batches at epoch ", epoch + 1, " step ", step_ + 1,
                           " (every rank must run the same number of steps)"));
      }
      at::Tensor x = batch->x.to(device_, /*non_blocking=*/true);  // pinned: the copy overlaps
      at::Tensor y = batch->y.to(device_, /*non_blocking=*/true);
      sync_->beforeForward();
      at::Tensor logits;
      {
        AutocastBf16 autocast(bf16);
        logits = model_->forward(x);
      }
      if (cfg_.distributed.broadcastBuffers) sync_->afterForward();
      logits = logits.to(at::kFloat);  // the loss in fp32 (a no-op without autocast)
      at::Tensor loss = torch::nn::functional::cross_entropy(logits, y);
      const bool last = m + 1 == micro;
      if (last && !checkedFirstStep_) before = snapshotParameters(*model_);
      sync_->backward(micro > 1 ? loss / static_cast<double>(micro) : loss, last);
      int64_t n = y.size(0);
      lossSum += loss.detach() * static_cast<double>(n);
      correct += logits.detach().argmax(1).eq(y).sum();
      seen += n;
    }
    {
      auto waitStart = Clock::now();
      asyncSaver_.waitForSnapshot();  // an asynchronous save's copy of what step() changes
      checkpointSeconds_ += secondsSince(waitStart);
    }
    optimizer_->step();
    if (!checkedFirstStep_) {
      // Parameters without any gradient were already named by the synchronizer.
      auto unchanged = checkFirstStep(*model_, before, {});
      if (!unchanged.empty()) {
        std::string names;
        for (const auto& n : unchanged) names += (names.empty() ? "" : ", ") + n;
        log::info("train", "note: unchanged by the first step (gradient below float precision, e.g. a bias "
                  "followed by BatchNorm): ", names);
      }
      checkedFirstStep_ = true;
      before.clear();
    }
    ++step_;
    ++globalStep_;
    ++stepsThisEpoch;
    if (cfg_.checkpoint.everySteps > 0 && globalStep_ % cfg_.checkpoint.everySteps == 0 && step_ < stepsPerEpoch_) {
      saveCheckpoint(false);
    }
    if (world_.rank == 0 && cfg_.log.everySteps > 0 && globalStep_ % cfg_.log.everySteps == 0) {
      writeStepRecord(epoch, lossSum.item<double>(), correct.item<double>(), seen, lr);
    }
    if (world_.rank == 0 && progress_.due()) {
      ProgressState p;
      p.epoch = epoch + 1;
      p.epochs = cfg_.run.epochs;
      p.step = step_;
      p.timedSteps = stepsThisEpoch;
      p.steps = stepsPerEpoch_;
      p.elapsed = secondsSince(start);
      p.loss = lossSum.item<double>() / std::max(1.0, seen);
      p.samplesPerS = seen * world_.size / std::max(1e-9, p.elapsed);
      p.dataWaitShare = (loader_->waitSeconds() - waitBefore) / std::max(1e-9, p.elapsed);
      progress_.update(p);
    }
  }
  if (world_.rank == 0) progress_.endEpoch();
  if (loader_->next()) throw Error(concat("rank ", world_.rank, " has batches left at the end of epoch ", epoch + 1));
  const int64_t skipped = loader_->skippedNonFinite();  // this epoch's, before the next one starts
  // The next epoch's first window is read while this one is evaluated and saved.
  if (epoch + 1 < cfg_.run.epochs) startLoader(epoch + 1);
  double trainSeconds = secondsSince(start);
  trainLoopSeconds_ += trainSeconds;
  dataWaitSeconds_ += loader_->waitSeconds() - waitBefore;
  commSeconds_ += sync_->commWaitSeconds() - commBefore;
  checkpointInLoopSeconds_ += checkpointSeconds_ - ckptBefore;
  if (skipped > 0) {
    log::warn("data", "left out ", skipped, " sample(s) with non-finite features in epoch ", epoch + 1,
              " on this rank (data.non_finite: skip)");
  }
  // Every rank must have run the same number of steps; the sampler makes it so, this proves it.
  at::Tensor steps = at::tensor({static_cast<double>(stepsThisEpoch), -static_cast<double>(stepsThisEpoch)}, at::kDouble);
  comm_.allReduce(steps, dist::ReduceOp::kMax);
  if (steps[0].item<double>() != -steps[1].item<double>()) {
    throw Error(concat("ranks ran different numbers of steps in epoch ", epoch + 1, " (between ",
                       -steps[1].item<double>(), " and ", steps[0].item<double>(), ")"));
  }
  // Each rank's last forward moved its own BatchNorm statistics; rank 0's are the model's,
  // for evaluation and the checkpoint alike (as the next step's broadcast would make them).
  if (cfg_.distributed.broadcastBuffers) {
    sync_->flushBuffers();
  } else {
    sync_->broadcastBuffers();
  }
  at::Tensor sums = at::tensor({lossSum.item<double>(), correct.item<double>(), seen}, at::kDouble);
  comm_.allReduce(sums, dist::ReduceOp::kSum);
  double globalSeen = std::max(1.0, sums[2].item<double>());
  samplesSession_ += sums[2].item<double>();
  ++epochsSession_;
  auto evalStart = Clock::now();
  EvalResult ev = evaluate(*model_, *eval_, norm_, cfg_.data.evalBatchSize, comm_, device_);
  evalSeconds_ += secondsSince(evalStart);

  epoch_ = epoch + 1;
  step_ = 0;
  bool isBest = std::isnan(bestMetric_) || ev.accuracy > bestMetric_;
  if (isBest) {
    bestMetric_ = ev.accuracy;
    bestEpoch_ = epoch_;
  }
  double samplesPerSec = globalSeen / std::max(1e-9, trainSeconds);
  double waitShare = (loader_->waitSeconds() - waitBefore) / std::max(1e-9, trainSeconds);
  double commShare = (sync_->commWaitSeconds() - commBefore) / std::max(1e-9, trainSeconds);
  if (world_.rank == 0) {
    char line[256];
    std::snprintf(line, sizeof line,
                  "epoch %lld/%lld  train loss %.4f acc %.2f%%  %s loss %.4f acc %.2f%%  lr %.4g  %s samples/s  %s",
                  static_cast<long long>(epoch_), static_cast<long long>(cfg_.run.epochs),
                  sums[0].item<double>() / globalSeen, 100.0 * sums[1].item<double>() / globalSeen,
                  cfg_.data.evalSplit.c_str(), ev.loss, 100.0 * ev.accuracy, schedule_->at(globalStep_ - 1, epoch),
                  withThousands(static_cast<long long>(samplesPerSec)).c_str(), formatDuration(trainSeconds).c_str());
    log::info("train", line);
    MetricsRecord r;
    r.type = "epoch";
    r.epoch = epoch_;
    r.step = stepsPerEpoch_;
    r.globalStep = globalStep_;
    r.wallTime = unixSeconds();
    r.trainLoss = sums[0].item<double>() / globalSeen;
    r.trainAccuracy = sums[1].item<double>() / globalSeen;
    r.evalLoss = ev.loss;
    r.evalAccuracy = ev.accuracy;
    r.lr = schedule_->at(globalStep_ - 1, epoch);
    r.samplesPerS = samplesPerSec;
    r.dataWaitShare = waitShare;
    r.commShare = commShare;
    r.seconds = trainSeconds;
    metrics_->write(r);
  }
  bool periodic = cfg_.checkpoint.everyEpochs > 0 && epoch_ % cfg_.checkpoint.everyEpochs == 0;
  if (periodic || epoch_ == cfg_.run.epochs || isBest) saveCheckpoint(isBest);
}

// Rank 0: a "step" record over the steps since the previous one. The loss and accuracy are
// rank 0's batches' (reading every rank's would add a collective); the epoch records are
// over all ranks.
void Trainer::writeStepRecord(int64_t epoch, double lossSum, double correct, double seen, double lr) {
  const double elapsed = std::max(1e-9, secondsSince(mark_.at));
  const double n = std::max(1.0, seen - mark_.seen);
  MetricsRecord r;
  r.type = "step";
  r.epoch = epoch + 1;
  r.step = step_;
  r.globalStep = globalStep_;
  r.wallTime = unixSeconds();
  r.trainLoss = (lossSum - mark_.lossSum) / n;
  r.trainAccuracy = (correct - mark_.correct) / n;
  r.lr = lr;
  r.samplesPerS = (seen - mark_.seen) * world_.size / elapsed;
  r.dataWaitShare = (loader_->waitSeconds() - mark_.dataWait) / elapsed;
  r.commShare = (sync_->commWaitSeconds() - mark_.comm) / elapsed;
  r.seconds = elapsed;
  metrics_->write(r);
  mark_ = StepMark{lossSum, correct, seen, loader_->waitSeconds(), sync_->commWaitSeconds(), Clock::now()};
}

namespace {

// A module as `print(model)` shows it, without the C++ namespace.
std::string describeModule(const torch::nn::Module& m) {
  std::ostringstream os;
  m.pretty_print(os);
  std::string text = os.str();
  for (const std::string ns : {"torch::nn::", "forge::train::"}) {
    for (size_t at; (at = text.find(ns)) != std::string::npos;) text.erase(at, ns.size());
  }
  return text;
}

}  // namespace

// Rank 0, once the starting point is known: what this run is, in one screen.
void Trainer::logStartupSummary() const {
  if (world_.rank != 0) return;
  std::string overrides;
  for (const auto& o : cfg_.overrides) overrides += concat(overrides.empty() ? "" : ", ", o);
  log::info("train", "config ", cfg_.sourcePath, overrides.empty() ? " (no overrides)" : " with --set " + overrides,
            "; run dir ", cfg_.run.dir, " (", freshOrResumed_, ")");
  // The layers in forward order, as print(model) lists them, with their parameter counts.
  Table layers({"layer", "module", "parameters"}, {Table::Align::kLeft, Table::Align::kLeft, Table::Align::kRight});
  std::map<std::string, std::shared_ptr<torch::nn::Module>> children;
  for (const auto& c : model_->named_children()) children[c.key()] = c.value();
  int64_t total = 0, trainable = 0;
  for (const auto& p : model_->parameters()) {
    total += p.numel();
    if (p.requires_grad()) trainable += p.numel();
  }
  std::set<std::string> shown;
  for (const auto& stage : model_->stages()) {
    auto it = children.find(stage.name);
    if (it == children.end()) {
      layers.row({stage.name, "(function)", "-"});
      continue;
    }
    int64_t n = 0;
    for (const auto& p : it->second->parameters()) n += p.numel();
    layers.row({stage.name, describeModule(*it->second), withThousands(n)});
    shown.insert(stage.name);
  }
  for (const auto& [name, child] : children) {  // registered but not a stage of forward
    if (shown.count(name)) continue;
    int64_t n = 0;
    for (const auto& p : child->parameters()) n += p.numel();
    layers.row({name + " (unused)", describeModule(*child), withThousands(n)});
  }
  log::info("train", "model ", cfg_.model.name, ": ", withThousands(trainable), " trainable parameters",
            total != trainable ? concat(" (", withThousands(total), " in all)") : std::string(), ", on ",
            dist::describeDevice(device_), cfg_.run.precision == "bf16" ? " with bf16 autocast" : "");
  for (const auto& l : layers.lines("    ")) log::info("train", l);
  const int64_t perRank = sampler_->samplesPerRank();
  const int64_t evalPerRank = (eval_->size() + world_.size - 1) / world_.size;
  log::info("data", train_->name(), ": ", withThousands(train_->size()), " samples",
            train_->files() > 1 ? concat(" in ", train_->files(), " files") : std::string(), ", ",
            withThousands(perRank), " per rank, ", stepsPerEpoch_, " steps of ", cfg_.data.batchSize, " per rank",
            cfg_.optimizer.accumulateSteps > 1 ? concat(" x ", cfg_.optimizer.accumulateSteps, " micro-batches")
                                               : std::string(),
            " (global batch ", cfg_.data.batchSize * cfg_.optimizer.accumulateSteps * world_.size, ")");
  log::info("data", eval_->name(), ": ", withThousands(eval_->size()), " samples, up to ", withThousands(evalPerRank),
            " per rank, evaluated after every epoch");
  log::info("train", world_.size, " rank(s); ", cfg_.run.epochs, " epoch(s) of ", stepsPerEpoch_, " steps; optimizer ",
            cfg_.optimizer.name, " lr ", cfg_.optimizer.lr, ", schedule ", cfg_.schedule.name, "; metrics in ",
            metrics_->jsonlPath(), cfg_.log.tensorboard ? concat(" (and .csv, ", cfg_.run.dir, "/tb/)") : " (and .csv)");
}

// Rank 0, at the end: how the run went and where the time went.
void Trainer::logEndSummary(const TrainSummary& s) const {
  if (world_.rank != 0) return;
  auto pct = [&](double part) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f%%", 100.0 * part / std::max(1e-9, s.seconds));
    return std::string(buf);
  };
  auto acc = [](double a) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f%%", 100.0 * a);
    return std::string(buf);
  };
  Table t({"", ""});
  if (!std::isnan(s.bestMetric)) {
    t.row({"best " + std::string(kBestMetricName), concat(acc(s.bestMetric), s.bestEpoch > 0
                                                                                ? concat(" after epoch ", s.bestEpoch)
                                                                                : std::string(" (an earlier session)"))});
  }
  char loss[32];
  std::snprintf(loss, sizeof loss, "%.4f", s.finalEval.loss);
  t.row({"final " + cfg_.data.evalSplit, concat(acc(s.finalEval.accuracy), " accuracy, loss ", loss, " (",
                                                withThousands(s.finalEval.samples), " samples)")});
  t.row({"time", concat(formatDuration(s.seconds), " this session (", s.epochsThisSession, " epoch(s) trained)")});
  if (s.epochsThisSession > 0) {
    t.row({"throughput", concat(withThousands(std::llround(s.samplesPerS)), " samples/s on average, ", world_.size,
                                " rank(s)")});
  }
  t.row({"time shares", concat("compute ", pct(s.computeSeconds), ", communication ", pct(s.commSeconds),
                               ", data wait ", pct(s.dataWaitSeconds), ", checkpoint ", pct(s.checkpointSeconds),
                               ", evaluation ", pct(s.evalSeconds), ", setup and other ", pct(s.otherSeconds))});
  log::info("train", "summary:");
  for (const auto& l : t.lines("    ")) log::info("train", l);
}

// Rank 0: the end-of-run summary for scripts, RUN_DIR/summary.json (replaced each session).
void Trainer::writeSummaryJson(const TrainSummary& s) const {
  std::string j = concat("{\n  \"epochs\": ", epoch_, ",\n  \"global_step\": ", globalStep_,
                         ",\n  \"best_metric_name\": ", jsonQuote(kBestMetricName),
                         ",\n  \"best_metric\": ", jsonNumber(s.bestMetric),
                         // 0: the best epoch was trained in an earlier session, which did not record it here
                         ",\n  \"best_epoch\": ", s.bestEpoch > 0 ? std::to_string(s.bestEpoch) : std::string("null"),
                         ",\n  \"final_eval_loss\": ", jsonNumber(s.finalEval.loss),
                         ",\n  \"final_eval_accuracy\": ", jsonNumber(s.finalEval.accuracy),
                         ",\n  \"fingerprint\": ", jsonQuote(hex16(s.fingerprint)), ",\n  \"world_size\": ", world_.size,
                         ",\n  \"session_seconds\": ", jsonNumber(s.seconds),
                         ",\n  \"session_epochs\": ", s.epochsThisSession,
                         ",\n  \"samples_per_s\": ", jsonNumber(s.samplesPerS), ",\n  \"seconds\": {",
                         "\"compute\": ", jsonNumber(s.computeSeconds), ", \"communication\": ",
                         jsonNumber(s.commSeconds), ", \"data_wait\": ", jsonNumber(s.dataWaitSeconds),
                         ", \"checkpoint\": ", jsonNumber(s.checkpointSeconds), ", \"evaluation\": ",
                         jsonNumber(s.evalSeconds), ", \"other\": ", jsonNumber(s.otherSeconds), "}\n}\n");
  const std::string path = (fs::path(cfg_.run.dir) / "summary.json").string();
  try {
    ckpt::writeFileAtomically(path, std::vector<char>(j.begin(), j.end()));
  } catch (const CheckpointError& e) {
    log::warn("train", e.what(), ": no summary.json this time");
  }
}

// Test-only fault injection (env::kFaultStallRank / kFaultStallStep): the named rank stops
// responding at the named global step, as a hung process would, to prove that its peers
// time out and the job ends instead of hanging.
void Trainer::injectFault() const {
  static const char* crashRank = std::getenv(env::kFaultCrashRank);
  static const char* crashStep = std::getenv(env::kFaultCrashStep);
  if (crashRank != nullptr && std::atoi(crashRank) == world_.rank &&
      (crashStep == nullptr || std::atoll(crashStep) == globalStep_)) {
    log::warn("fault", "injected fault: rank ", world_.rank, " dies (SIGKILL) at step ", globalStep_);
    std::raise(SIGKILL);
  }
  static const char* rank = std::getenv(env::kFaultStallRank);
  static const char* step = std::getenv(env::kFaultStallStep);
  if (rank == nullptr || std::atoi(rank) != world_.rank) return;
  if (step != nullptr && std::atoll(step) != globalStep_) return;
  log::warn("fault", "injected fault: rank ", world_.rank, " stops responding at step ", globalStep_);
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}

TrainSummary Trainer::run() {
  auto start = Clock::now();
  resumeFrom();
  resolveFeatureStats();
  // The first window is read while the replicas are synchronized.
  if (epoch_ < cfg_.run.epochs) startLoader(epoch_);
  // A fresh run owns its metrics files; a resumed one appends to them.
  if (world_.rank == 0) metrics_ = std::make_unique<MetricsLog>(cfg_.run.dir, cfg_.log.tensorboard, resumed_ ? globalStep_ : -1);
  dist::SyncOptions sync;
  sync.bucketCapBytes = static_cast<size_t>(cfg_.distributed.bucketCapMb * (1 << 20));
  sync.firstBucketCapBytes = static_cast<size_t>(cfg_.distributed.firstBucketCapMb * (1 << 20));
  sync.rebuildBuckets = cfg_.distributed.rebuildBuckets;
  sync.overlap = cfg_.distributed.overlap;
  sync.allowUnusedParameters = cfg_.distributed.allowUnusedParameters;
  sync_ = std::make_unique<dist::GradientSynchronizer>(model_, comm_, sync);
  sync_->broadcastState();

  logStartupSummary();
  if (epoch_ >= cfg_.run.epochs) {
    log::info("train", "all ", cfg_.run.epochs, " epochs are already done (raise run.epochs to train on, or "
              "use another run.dir to train afresh)");
  }
  for (int64_t e = epoch_; e < cfg_.run.epochs; ++e) trainEpoch(e);

  if (preemptWork_) {
    preemptWork_->wait(Clock::now() + std::chrono::duration_cast<Clock::duration>(comm_.timeout()));
    preemptWork_.reset();
  }
  {
    auto waitStart = Clock::now();
    asyncSaver_.wait();
    checkpointSeconds_ += secondsSince(waitStart);
  }
  TrainSummary s;
  auto evalStart = Clock::now();
  s.finalEval = evaluate(*model_, *eval_, norm_, cfg_.data.evalBatchSize, comm_, device_);
  evalSeconds_ += secondsSince(evalStart);
  s.fingerprint = dist::verifyReplicas(*model_, comm_);
  s.bestMetric = bestMetric_;
  s.bestEpoch = bestEpoch_;
  s.seconds = secondsSince(start);
  log::info("train", "replicas identical on all ", world_.size, " ranks (parameter and buffer fingerprint ",
            hex16(s.fingerprint), ")");
  char line[200];
  std::snprintf(line, sizeof line, "final %s accuracy %.2f%% (loss %.4f) after %lld epochs; this session took %s", cfg_.data.evalSplit.c_str(),
                100.0 * s.finalEval.accuracy, s.finalEval.loss, static_cast<long long>(cfg_.run.epochs),
                formatDuration(s.seconds).c_str());
  log::info("train", line);
  s.epochsThisSession = epochsSession_;
  s.samplesPerS = samplesSession_ / std::max(1e-9, trainLoopSeconds_);
  s.dataWaitSeconds = dataWaitSeconds_;
  s.commSeconds = commSeconds_;
  s.checkpointSeconds = checkpointSeconds_;
  s.evalSeconds = evalSeconds_;
  s.computeSeconds = std::max(0.0, trainLoopSeconds_ - dataWaitSeconds_ - commSeconds_ - checkpointInLoopSeconds_);
  s.otherSeconds = std::max(0.0, s.seconds - s.computeSeconds - s.commSeconds - s.dataWaitSeconds -
                                     s.checkpointSeconds - s.evalSeconds);
  logEndSummary(s);
  // A session that trained nothing (the run was already complete) keeps the summary of the
  // one that did.
  if (world_.rank == 0 && s.epochsThisSession > 0) writeSummaryJson(s);
  return s;
}

}  // namespace forge::train
