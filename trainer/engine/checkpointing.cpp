// What a checkpoint holds of this run, and how it is written (rank 0, optionally in the
// background), with every rank's generator state.
#include <torch/torch.h>

#include <set>

#include "checkpoint/checkpoint.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/strings.h"
#include "distributed/rank_status.h"
#include "trainer/engine/data_watch.h"
#include "trainer/engine/trainer.h"
#include "trainer/module/state_dict.h"

namespace forge::train {
namespace {

using Clock = std::chrono::steady_clock;

}  // namespace

ckpt::Checkpoint Trainer::makeCheckpoint() const {
  ckpt::Checkpoint ck;
  ck.modelState = modelStateDict(*model_.module);
  ck.optimizerState = optimizer_->stateDict();
  ck.epoch = state_.epoch;
  ck.step = state_.step;
  ck.globalStep = state_.globalStep;
  ck.epochSamples = state_.epochSamples;
  ck.bestMetric = state_.bestMetric;
  ck.bestMetricName = monitoredMetric();
  ck.worldSize = world_.size;
  ck.config = cfg_.resolved;
  ck.forgeVersion = FORGE_VERSION;
  // The schedule and the data order are pure functions of these: recorded so that a resume
  // can tell when its config would change them, and for anyone reading the file.
  c10::impl::GenericDict schedule = schedule_->describe();
  schedule.insert("global_step", state_.globalStep);
  schedule.insert("lr", schedule_->at(state_.globalStep, state_.epoch));
  ck.schedule = schedule;
  c10::impl::GenericDict sampler(c10::StringType::get(), c10::AnyType::get());
  sampler.insert("seed", cfg_.run.seed);
  sampler.insert("epoch", state_.epoch);
  sampler.insert("position", samplesDone());
  sampler.insert("world_size", static_cast<int64_t>(world_.size));
  sampler.insert("shuffle", cfg_.data.shuffle);
  sampler.insert("drop_last", cfg_.data.dropLast);
  // The global order is a function of seed, epoch, shuffle and this window; the steps cut it
  // into global batches of global_batch samples from the epoch's start.
  sampler.insert("global_window", window_);
  sampler.insert("global_batch", sampler_->globalBatch());
  sampler.insert("global_batch_size", cfg_.data.globalBatchSize);
  sampler.insert("micro_batch", cfg_.data.batchSize);
  sampler.insert("batch_size_limit", batchSizeLimit_);
  sampler.insert("epoch_samples_total", sampler_->epochSamples());
  sampler.insert("samples_per_rank", sampler_->samplesPerRank());
  ck.sampler = sampler;
  if (sync_) ck.bucketOrder = sync_->rebuiltOrder();
  for (const StatefulPart* part : parts_) ck.parts.emplace_back(part->field(), part->stateDict());
  return ck;
}

// Collective (every rank gathers its generator state to the others); rank 0 writes.
std::string Trainer::saveCheckpoint(const SaveCopies& copies) {
  auto start = Clock::now();
  struct Timed {  // the training thread's time in here, on every path out
    double& total;
    Clock::time_point t0 = Clock::now();
    ~Timed() { total += secondsSince(t0); }
  } timed{checkpointSeconds_};
  dist::PhaseScope phase(dist::Phase::kCheckpoint);
  ensureFinite("saving a checkpoint");  // a diverged state never replaces a good checkpoint
  // Nor one trained on a data file that changed under the run (step, epoch and preemption
  // saves alike).
  requireUnchangedData({train_.get(), eval_.get()}, comm_);
  at::Tensor mine = currentRngState();
  at::Tensor all = at::empty({mine.numel() * world_.size}, at::kByte);
  comm_.allGather(mine, all);
  if (world_.rank != 0) return "";
  runLock_->verify();  // the run dir is still the one this job locked
  ckpt::Checkpoint ck = makeCheckpoint();
  for (int r = 0; r < world_.size; ++r) ck.rngStates.push_back(all.narrow(0, r * mine.numel(), mine.numel()).clone());
  std::string path = checkpoints_->pathFor(ckpt::progressOf(ck, "this run's checkpoint"));
  auto write = [this, copies, start](const ckpt::Checkpoint& c) {
    std::string written;
    try {
      written = checkpoints_->save(c);
      if (copies.best) checkpoints_->saveBest(c);
      if (copies.top) checkpoints_->saveTop(c);
      for (const auto& name : copies.dropTop) checkpoints_->removeTop(name);
    } catch (const std::exception&) {
      // The run dir may have been moved between the check above and the write (the write
      // then fails on a missing folder): name that cause rather than the I/O error it made.
      runLock_->verify();
      throw;
    }
    log::info("ckpt", "saved ", written, copies.best ? " and best.pt" : "", copies.top ? " and a top-k copy" : "",
              " in ", formatDuration(secondsSince(start)));
  };
  if (cfg_.checkpoint.async) {
    // The background thread copies the parameters and optimizer state while the next
    // forward and backward run; the loop waits for that copy before the optimizer step
    // changes them. Buffers change in forward already: they are copied here (they are small).
    std::set<std::string> buffers;
    for (const auto& b : model_.module->named_buffers()) buffers.insert(b.key());
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

void Trainer::waitForSaves() {
  auto start = Clock::now();
  asyncSaver_.wait();
  checkpointSeconds_ += secondsSince(start);
}

// This rank's generator states as one byte tensor: the CPU generator's, then (on a GPU) the
// CUDA generator's, which draws dropout there.
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

}  // namespace forge::train
