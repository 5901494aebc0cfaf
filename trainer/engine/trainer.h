// The training engine. Every rank constructs a Trainer with the same config and calls the
// same methods in the same order (they issue collectives). The loop only wires parts: the
// model (any torch::nn::Module, trainer/spec/model.h), the task's loss and metrics, the
// optimizer and schedule, the data loader, the gradient synchronizer; checkpoint policy,
// preemption, metrics files and progress are observers (trainer/engine/observer.h).
//
// One step: batch from the background loader -> buffers follow rank 0 -> forward (train
// mode) -> loss -> backward, gradients averaged over ranks bucket by bucket -> optimizer
// step. After each epoch: evaluation on the eval split, observers (metrics from rank 0,
// checkpoint from rank 0).
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint/async_saver.h"
#include "checkpoint/checkpoint_dir.h"
#include "core/error.h"
#include "core/usage.h"
#include "data/batch_loader.h"
#include "data/sampler.h"
#include "data/source.h"
#include "distributed/communicator.h"
#include "distributed/gradient_synchronizer.h"
#include "distributed/world.h"
#include "trainer/config/config.h"
#include "trainer/engine/evaluator.h"
#include "trainer/engine/gradient_guard.h"
#include "trainer/engine/loss_scaler.h"
#include "trainer/engine/metric_sums.h"
#include "trainer/engine/observer.h"
#include "trainer/engine/run_dir.h"
#include "trainer/engine/run_lock.h"
#include "trainer/engine/sample_log.h"
#include "trainer/engine/stateful_part.h"
#include "trainer/engine/train_state.h"
#include "trainer/optim/optimizer.h"
#include "trainer/report/summary.h"
#include "trainer/optim/schedule.h"
#include "trainer/spec/model.h"

namespace forge::train {

struct TrainSummary {
  EvalResult finalEval;
  double bestMetric = 0;
  int64_t bestEpoch = 0;
  uint64_t fingerprint = 0;  // of the final parameters and buffers, equal on every rank
  double seconds = 0;
  // This session's time, by where it went (seconds; they add up to `seconds`).
  double computeSeconds = 0, commSeconds = 0, dataWaitSeconds = 0, checkpointSeconds = 0, evalSeconds = 0,
         otherSeconds = 0;
  double samplesPerS = 0;  // training samples over all ranks / training time, this session
  int64_t epochsThisSession = 0;
};

// The split `split` of the config's data; a model that declares num_classes gets its labels
// checked against it when the files open.
data::SourceSpec sourceSpecFor(const Config& cfg, const std::string& split);

// What a save writes besides the periodic file (checkpoint/checkpoint_dir.h).
struct SaveCopies {
  bool best = false;                 // best.pt
  bool top = false;                  // top/<name>: the epoch entered checkpoint.save_top_k
  std::vector<std::string> dropTop;  // top/ files of epochs pushed out of the top k
};

class Trainer {
 public:
  // Setup: loads and validates the data, builds the model (the config's model.name, or
  // `model` when given: forge::fit), probes it on a real batch (shapes, the nn.Module
  // rules), makes the optimizer; on rank 0 also prepares the run dir and picks the
  // checkpoint to resume from. `resume`: "" (fresh start; an error if the run dir holds
  // checkpoints), "auto" (the newest checkpoint that verifies, or fresh when there is none)
  // or a checkpoint path. Local to each rank (no collectives), so a setup error is raised
  // on the ranks that see it. `device`: where this rank computes; the model moves there once.
  Trainer(Config cfg, dist::Communicator& comm, const dist::WorldInfo& world, const std::string& resume = "",
          c10::Device device = c10::kCPU, std::optional<ModelHandle> model = std::nullopt);
  ~Trainer();

  // Collective: trains the remaining epochs.
  TrainSummary run();

  const ModelHandle& model() const { return model_; }
  const TrainState& state() const { return state_; }
  const Config& config() const { return cfg_; }
  const Task& task() const { return task_; }
  bool isRankZero() const { return world_.rank == 0; }
  // The metric best.pt, save_top_k and early stopping follow: checkpoint.monitor, by
  // default "eval_<first metric>" (or "eval_loss"); its direction (checkpoint.mode, by
  // default the metric's own).
  std::string monitoredMetric() const;
  bool higherIsBetter() const;
  // Ends training at the next step boundary (after the current epoch's evaluation when the
  // step ended the epoch), on this rank: call it on every rank alike (a decision every rank
  // takes from the same values). The first reason is kept for the log.
  void requestStop(const std::string& why);
  bool stopRequested() const { return !stopReason_.empty(); }

  // For observers. Collective (every rank's generator state is gathered); rank 0 writes,
  // in the background with checkpoint.async. Returns the path on rank 0, "" elsewhere.
  std::string saveCheckpoint(const SaveCopies& copies = {});
  // Waits for a background save (rank 0; a no-op elsewhere).
  void waitForSaves();
  // Collective: every rank's buffers become rank 0's (as at any step boundary).
  void flushBuffers();
  // Collective: throws Diverged on every rank when the loss of the epoch so far or a
  // parameter is not finite on any rank. `before`: what it guards ("saving a checkpoint").
  void ensureFinite(const std::string& before);
  // This rank's loss of the epoch so far is finite (true between epochs). Reads the device.
  bool epochLossFinite() const;
  // The Diverged error all ranks raise once they agree the run diverged.
  Diverged divergedError(const std::string& found) const;
  // The trainable parameters (the optimizer's), in the order of the optimizer state.
  const std::vector<at::Tensor>& parameters() const { return params_; }
  // Collective (every rank evaluates its share): the model's metrics on the eval split, in
  // eval mode, as after each epoch.
  EvalResult evaluateModel();

 private:
  // setup.cpp
  void openData();
  void buildModel(std::optional<ModelHandle> model);
  void makeLoader();
  void startLoader(int64_t epoch);
  // Every token id of the data within the model's vocabulary (collective).
  void checkTokenIds(int64_t vocabulary);
  void resolveFeatureStats();
  int64_t samplesDone() const;
  int64_t epochSamplesDone() const;
  void addObservers();
  void checkMonitor() const;
  std::vector<bool> exemptFromDecay() const;
  // A part whose state the checkpoint carries (saved by makeCheckpoint, loaded by resumeFrom).
  void addPart(StatefulPart& part);
  // resume.cpp
  void prepareRunDir(const std::string& resume);
  // Rank 0: a warning naming the model keys, task and optimizer that differ from the
  // checkpoint's config (trainer/engine/resume.cpp).
  void warnOfChangedSetup(const std::string& savedConfig, const std::string& path) const;
  void resumeFrom();
  void warnIfScheduleChanged(const ckpt::Checkpoint& ck) const;
  // checkpointing.cpp
  ckpt::Checkpoint makeCheckpoint() const;
  at::Tensor currentRngState() const;
  // trainer.cpp
  void trainEpoch(int64_t epoch);
  void trainStep(int64_t epoch, MetricSums& sums);
  void finishEpoch(int64_t epoch, const MetricSums& sums, int64_t steps, double seconds, double waitBefore,
                   double commBefore);
  // summary.cpp
  void logStartupSummary() const;
  TrainSummary summarize(std::chrono::steady_clock::time_point start);
  std::vector<RankTiming> gatherRankTimings();
  void rebuildSampler();

  Config cfg_;
  dist::Communicator& comm_;
  dist::WorldInfo world_;
  c10::Device device_;
  RunDir runDir_;
  // Rank 0: the run dir's lock, taken before anything in it is read or written, checked
  // before each save, released when the trainer goes.
  std::unique_ptr<RunDirLock> runLock_;
  std::unique_ptr<data::SplitSource> train_;
  std::unique_ptr<data::SplitSource> eval_;
  bool hasBatchNorm_ = false;
  int64_t window_ = 0;        // samples per read / shuffle window
  int64_t loaderEpoch_ = -1;  // the epoch the loader streams
  data::Normalization norm_;
  ModelHandle model_;
  std::string modelName_;  // model.name, or "(given by the program)" for a model passed in
  Task task_;
  std::vector<at::Tensor> params_;
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<GradientGuard> gradients_;  // between the all-reduce and the optimizer step
  std::unique_ptr<LossScaler> scaler_;        // null without a loss scale
  std::vector<StatefulPart*> parts_;           // the guard's and the observers' that have state
  std::unique_ptr<dist::GradientSynchronizer> sync_;
  std::unique_ptr<data::DistributedSampler> sampler_;
  std::unique_ptr<data::BatchLoader> loader_;
  std::unique_ptr<LrSchedule> schedule_;
  std::unique_ptr<ckpt::CheckpointDir> checkpoints_;
  int64_t batchesPerEpoch_ = 0;
  int64_t stepsPerEpoch_ = 0;  // optimizer steps: batches / accumulate_steps, rounded up
  TrainState state_;
  bool checkedFirstStep_ = false;
  const MetricSums* epochSums_ = nullptr;  // the running epoch's, for the divergence checks
  std::vector<std::unique_ptr<LoopObserver>> observers_;
  bool resumed_ = false;
  // The checkpoint's bucket order (ckpt::Checkpoint::bucketOrder), adopted by the
  // synchronizer once it exists; empty when fresh or not recorded.
  std::vector<int64_t> resumedBucketOrder_;
  std::string freshOrResumed_;  // for the startup summary
  std::string stopReason_;      // why training ends early ("" = it does not)
  // This session's time and samples, for the end-of-run summary.
  double trainLoopSeconds_ = 0, dataWaitSeconds_ = 0, commSeconds_ = 0, checkpointSeconds_ = 0,
         checkpointInLoopSeconds_ = 0, evalSeconds_ = 0, samplesSession_ = 0;
  int64_t epochsSession_ = 0, stepsSession_ = 0;
  ProcessUsage loopUsage_;  // CPU time and page faults in the step loops of this session
  std::string resumePath_;      // rank 0: the checkpoint to resume from ("" = fresh)
  // Where the resumed epoch continues: its global sample, and the step counted there (the
  // epoch's steps from it on are of this world size's global batch). resumeEpoch_ -1: none.
  int64_t resumeEpoch_ = -1, resumeSample_ = 0, resumeStep_ = 0;
  int64_t batchSizeLimit_ = 0;
  // The loader's current plan: this rank's samples, and the epoch step it starts at.
  int64_t planSamples_ = 0, planFirstStep_ = 0;  // data.batch_size as configured (the largest micro-batch)
  SampleLog sampleLog_{world_.rank};  // test-only (FORGE_SAMPLE_LOG)
  ckpt::AsyncSaver asyncSaver_;  // rank 0, checkpoint.async
};


}  // namespace forge::train
