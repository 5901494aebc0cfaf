// The run configuration: YAML file + `--set key=value` overrides -> a typed, validated struct.
// Every key is declared once (trainer/config/schema.cpp for the fixed sections, the
// registered part for model / optimizer / schedule keys); validation happens before any
// work, and every problem is a ConfigError that names the file and line (or the --set
// option), the key, and what would be valid.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "trainer/spec/options.h"

namespace forge::train {

struct RunConfig {
  std::string dir = "runs/default";
  int64_t seed = 0;
  int64_t epochs = 1;
  int64_t threads = 0;  // intra-op threads per rank; 0 = cores on the node / ranks on the node
  std::string device = "auto";     // auto | cpu | cuda
  // fp32 | bf16 (autocast on CUDA or the CPU) | fp16 (CUDA autocast, with a dynamic loss
  // scale); weights, gradients and optimizer state stay fp32.
  std::string precision = "fp32";
  int64_t maxSteps = 0;  // stop (with a checkpoint) after this many optimizer steps of the run; 0 = off
  double maxTime = 0;    // seconds of wall-clock time for this session; 0 = off (trainer/engine/stopping.h)
  bool deterministic = false;      // pin cuBLAS, cuDNN, NCCL for bit-exact GPU runs (distributed/determinism.h)
  // Keep host memory freed between steps for the next step (glibc malloc neither trims the
  // heap nor maps large blocks afresh) instead of handing it back and faulting it in again.
  bool keepFreedMemory = true;
};

// model.name picks a registered model; the rest of the section is that model's own keys.
struct ModelConfig {
  std::string name = "mlp";
  std::string initFrom;  // a forge checkpoint or a Python state dict to start from ("" = random)
  Options options{"model"};
};

// task.name says what the targets are (trainer/tasks/kinds.h); task.loss and task.metrics
// pick registered parts, the task's own when not given. The first metric is the one the
// best checkpoint follows (eval_<metric>; eval_loss when there is none).
struct TaskConfig {
  std::string name = "classification";  // classification | regression | language_model
  std::string loss = "cross_entropy";
  std::vector<std::string> metrics = {"accuracy"};
};

struct NormalizeConfig {
  double scale = 1.0;               // multiplies raw features first (1/255 for uint8 images)
  std::vector<double> mean{0.0};    // one number, one per channel (C x H x W samples) or one per feature
  std::vector<double> std{1.0};
  std::string stats = "config";     // config | auto (per-feature statistics of the training split)
};

struct DataConfig {
  std::vector<std::string> paths;  // data.path: a file, or a list of files / glob patterns
  std::string trainSplit = "train";
  std::string evalSplit = "test";
  std::string features = "features";
  std::string labels = "labels";
  int64_t batchSize = 64;       // per rank
  // Samples per optimizer step over all ranks (0: world * batchSize * accumulate_steps);
  // set, the per-rank batch and accumulate_steps derive from it (trainer/engine/global_batch.h).
  int64_t globalBatchSize = 0;
  int64_t evalBatchSize = 1000; // per rank
  bool shuffle = true;
  bool dropLast = false;
  int64_t prefetch = 4;         // batches built ahead of training, at least (data/batch_loader.h)
  double bufferMb = 64;         // read buffer per rank: two shuffle windows of half this each
  std::string nonFinite = "error";  // NaN / Inf in features: error (naming the sample) | skip
  NormalizeConfig normalize;
};

// optimizer.name picks a registered optimizer; its own keys (momentum, betas, ...) sit beside
// these common ones.
struct OptimizerConfig {
  std::string name = "sgd";
  double lr = 0.01;
  double weightDecay = 0.0;
  int64_t accumulateSteps = 1;  // micro-batches per optimizer step; no communication between
  double clipGradNorm = 0;        // global L2 norm the gradients are clipped to; 0 = off
  int64_t maxSkippedSteps = 25;   // consecutive steps with non-finite gradients tolerated (skipped)
  // Parameters exempt from weight_decay, by rule: "bias" (names ending in bias), "norm" (the
  // parameters of normalization layers: BatchNorm, LayerNorm, GroupNorm, ...).
  std::vector<std::string> noDecay;
  Options options{"optimizer"};
};

struct ScheduleConfig {
  std::string name = "constant";
  int64_t warmupSteps = 0;  // linear warmup from 0, applies to every schedule
  Options options{"schedule"};
};

struct CheckpointConfig {
  int64_t everyEpochs = 1;  // 0 = off
  int64_t everySteps = 0;   // 0 = off
  int64_t keepLast = 3;     // 0 = keep all
  bool async = false;       // write in a background thread; training stalls only for a copy
  std::string monitor;      // "" = eval_<first task metric> (eval_loss without one) | eval_* | train_*
  std::string mode = "auto";  // auto (the metric's own direction) | min | max
  int64_t saveTopK = 0;     // copies of the k best epochs by the monitored metric in top/; 0 = none
};

// The dynamic loss scale (trainer/engine/loss_scaler.h).
struct LossScaleConfig {
  std::string mode = "auto";     // auto (dynamic with precision fp16, else off) | dynamic | off
  double init = 65536;
  int64_t growthInterval = 2000;
};

// Stopping when the monitored metric (checkpoint.monitor) stops improving.
struct EarlyStoppingConfig {
  int64_t patience = 0;  // epochs without an improvement of more than min_delta; 0 = off
  double minDelta = 0;
};

// An exponential moving average of the weights (trainer/engine/ema.h).
struct EmaConfig {
  double decay = 0;        // 0 = off; else ema = decay * ema + (1 - decay) * weights
  int64_t everySteps = 1;  // optimizer steps between two updates
  bool evaluate = false;   // also evaluate the EMA weights after each epoch (eval_ema_*)
};

struct DistributedConfig {
  std::string backend = "auto";    // auto: nccl on CUDA, mpi on the CPU | mpi | nccl
  double timeoutS = 300;           // deadline of every collective
  double bucketCapMb = 25;         // gradient bucket size cap
  double firstBucketCapMb = 1;     // the first bucket, smaller so communication starts early
  bool rebuildBuckets = true;      // once, from the first backward's gradient arrival order
  bool overlap = true;             // all-reduce buckets while backward goes on
  bool allowUnusedParameters = false;
  bool broadcastBuffers = true;    // buffers (BatchNorm statistics) follow rank 0 each step
  bool watchdog = true;            // hang verdicts (distributed/watchdog.h)
  int64_t verifyEverySteps = 0;    // replica fingerprints compared every N steps; 0: each epoch's end
  // How the mpi backend waits for ranks that have not reached a collective yet: sleep
  // (frees the core for compute and other work) | spin (Open MPI's busy polling).
  std::string wait = "sleep";
};

struct LogConfig {
  std::string progress = "auto";  // auto | bar | lines | off
  double everyS = 10;             // lines mode: seconds between progress lines
  int64_t everySteps = 50;        // a step record every N steps; 0 = off
  bool tensorboard = true;        // RUN_DIR/tb/events.out.tfevents.*
};

struct Config {
  RunConfig run;
  ModelConfig model;
  TaskConfig task;
  DataConfig data;
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
  CheckpointConfig checkpoint;
  EmaConfig ema;
  EarlyStoppingConfig earlyStopping;
  LossScaleConfig lossScale;
  DistributedConfig distributed;
  LogConfig log;

  std::string sourcePath;              // the YAML file it came from
  std::vector<std::string> overrides;  // the --set options, as given
  std::string resolved;                // the YAML text after overrides (saved with the run)
};

// Reads, applies overrides ("section.key=value", value parsed as YAML) and validates.
Config loadConfig(const std::string& path, const std::vector<std::string>& overrides = {});
Config parseConfig(const std::string& yamlText, const std::string& sourceName,
                   const std::vector<std::string>& overrides = {});

// Every declared key, for help texts and the README's table.
struct KeyHelp {
  std::string key;       // "optimizer.lr", "model.hidden"
  std::string part;      // "" for a fixed key, else the part that declares it: "mlp", "sgd"
  std::string type;      // "a number"
  std::string defaultText;
  std::string help;
};
std::vector<KeyHelp> configKeys();

}  // namespace forge::train
