// The training loop. Every rank constructs a Trainer with the same config and calls the
// same methods in the same order (they issue collectives).
//
// Data flow of one step: batch from the background loader -> buffers follow rank 0 ->
// forward (train mode) -> cross-entropy -> backward -> gradients averaged over ranks ->
// optimizer step. After each epoch: evaluation on the eval split, metrics from rank 0,
// checkpoint from rank 0.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "checkpoint/async_saver.h"
#include "checkpoint/checkpoint_dir.h"
#include "data/batch_loader.h"
#include "data/source.h"
#include "data/sampler.h"
#include "distributed/communicator.h"
#include "distributed/gradient_synchronizer.h"
#include "distributed/world.h"
#include "trainer/config.h"
#include "trainer/evaluator.h"
#include "trainer/metrics.h"
#include "trainer/progress.h"
#include "trainer/models/model.h"
#include "trainer/optim.h"

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

class Trainer {
 public:
  // Setup: loads and validates the data, builds the model and optimizer, probes shapes; on
  // rank 0 also prepares the run dir and picks the checkpoint to resume from. `resume`: ""
  // (fresh start; an error if the run dir holds checkpoints), "auto" (the newest checkpoint
  // that verifies, or fresh when there is none) or a checkpoint path.
  // Local to each rank (no collectives), so a setup error is raised on the ranks that see it.
  // `device`: where this rank computes (distributed/device.h chose and bound it); the model
  // moves there once, batches follow through pinned memory.
  Trainer(Config cfg, dist::Communicator& comm, const dist::WorldInfo& world, const std::string& resume = "",
          c10::Device device = c10::kCPU);
  ~Trainer();

  // Collective: trains the remaining epochs.
  TrainSummary run();

  Model& model() { return *model_; }

 private:
  void prepareRunDir(const std::string& resume);
  void resumeFrom();
  void warnIfScheduleChanged(const ckpt::Checkpoint& ck) const;
  void logStartupSummary() const;
  void logEndSummary(const TrainSummary& s) const;
  void writeSummaryJson(const TrainSummary& s) const;
  void writeStepRecord(int64_t epoch, double lossSum, double correct, double seen, double lr);
  static bool hasBatchNorm(const torch::nn::Module& m);
  void makeLoader();
  void startLoader(int64_t epoch);
  int64_t samplesDone() const;
  void checkInputShape() const;
  void resolveFeatureStats();
  void trainEpoch(int64_t epoch);
  ckpt::Checkpoint makeCheckpoint() const;
  std::string saveCheckpoint(bool isBest);
  // This rank's generator states as one byte tensor: the CPU generator's, then (on a GPU)
  // the CUDA generator's, which draws dropout there.
  at::Tensor currentRngState() const;
  void restoreRngState(const at::Tensor& state) const;
  bool preemptionAgreed();
  void injectFault() const;

  Config cfg_;
  dist::Communicator& comm_;
  dist::WorldInfo world_;
  c10::Device device_;
  std::unique_ptr<data::SplitSource> train_;
  std::unique_ptr<data::SplitSource> eval_;
  int64_t window_ = 0;  // samples per read / shuffle window
  int64_t loaderEpoch_ = -1;  // the epoch the loader streams
  data::Normalization norm_;
  std::shared_ptr<Model> model_;
  std::vector<at::Tensor> params_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::unique_ptr<dist::GradientSynchronizer> sync_;
  std::unique_ptr<data::DistributedSampler> sampler_;
  std::unique_ptr<data::BatchLoader> loader_;
  std::unique_ptr<LrSchedule> schedule_;
  std::unique_ptr<ckpt::CheckpointDir> checkpoints_;
  int64_t batchesPerEpoch_ = 0;
  int64_t stepsPerEpoch_ = 0;  // optimizer steps: batches / accumulate_steps, rounded up

  // Position: `epoch_` epochs are complete and `step_` steps of the next one are done.
  int64_t epoch_ = 0;
  int64_t step_ = 0;
  int64_t globalStep_ = 0;
  double bestMetric_ = std::nan("");
  int64_t bestEpoch_ = 0;
  bool checkedFirstStep_ = false;
  std::unique_ptr<MetricsLog> metrics_;  // rank 0
  Progress progress_;
  bool resumed_ = false;
  std::string freshOrResumed_;  // for the startup summary
  // This session's time and samples, for the end-of-run summary.
  double trainLoopSeconds_ = 0, dataWaitSeconds_ = 0, commSeconds_ = 0, checkpointSeconds_ = 0,
         checkpointInLoopSeconds_ = 0, evalSeconds_ = 0, samplesSession_ = 0;
  int64_t epochsSession_ = 0;
  // The previous step record's position in the epoch's running sums.
  struct StepMark {
    double lossSum = 0, correct = 0, seen = 0, dataWait = 0, comm = 0;
    std::chrono::steady_clock::time_point at;
  } mark_;
  std::string resumePath_;  // rank 0: the checkpoint to resume from ("" = fresh)
  at::Tensor pendingRngState_;  // this rank's generator state from the checkpoint, to restore
  std::unique_ptr<dist::Work> preemptWork_;
  at::Tensor preemptFlag_;
  ckpt::AsyncSaver asyncSaver_;    // rank 0, checkpoint.async
};

// Intra-op threads for this rank: the configured count, or cores on the node divided by the
// ranks on it (at least 1), so ranks never oversubscribe the node.
int threadsPerRank(int configured, const dist::WorldInfo& world);

}  // namespace forge::train
