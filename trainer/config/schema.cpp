#include "trainer/config/schema.h"

#include <algorithm>
#include <cmath>
#include <thread>

#include "core/error.h"
#include "core/strings.h"

namespace forge::train {
namespace {

template <typename T>
using Check = std::function<std::string(const T&)>;

// One key: `get` reaches the field of a Config, whose initializer is the default.
template <typename T, typename Get>
Field field(std::string section, std::string key, Get get, std::string help, Check<T> check = {}, bool oneOrMany = false) {
  static const Config defaults;
  Field f;
  f.section = std::move(section);
  f.decl.key = std::move(key);
  f.decl.defaultValue = OptionValue(T(get(const_cast<Config&>(defaults))));
  f.decl.help = std::move(help);
  f.decl.oneOrMany = oneOrMany;
  if (check) f.decl.check = [check](const OptionValue& v) { return check(std::get<T>(v)); };
  f.assign = [get](Config& c, const OptionValue& v) { get(c) = std::get<T>(v); };
  return f;
}

Check<int64_t> zeroOrPositive(const char* zeroMeans) {
  return [zeroMeans](const int64_t& v) {
    return v >= 0 ? std::string() : concat("must be 0 (", zeroMeans, ") or positive, got ", v);
  };
}

// A size in MiB that becomes a byte count: at least one byte, at most 1 TiB (1e300 would
// overflow the conversion, 1e-300 would become 0 bytes).
Check<double> mebibytes() {
  return [](const double& v) {
    return v >= 1.0 / (1 << 20) && v <= double(1 << 20) ? std::string()
                                                        : concat("must be between 1 byte (9.5e-07) and 1 TiB (1048576) in MiB, got ", v);
  };
}

using S = std::string;
using VS = std::vector<std::string>;
using VD = std::vector<double>;

void declareRun(std::vector<Field>& f) {
  f.push_back(field<S>("run", "dir", [](Config& c) -> S& { return c.run.dir; }, "the run's folder: checkpoints, logs, metrics",
                       [](const S& v) { return v.empty() ? S("must not be empty") : S(); }));
  f.push_back(field<int64_t>("run", "seed", [](Config& c) -> int64_t& { return c.run.seed; },
                             "seed of the initial weights, the data order and dropout",
                             [](const int64_t& v) { return v >= 0 ? S() : concat("must be a non-negative integer, got ", v); }));
  f.push_back(field<int64_t>("run", "epochs", [](Config& c) -> int64_t& { return c.run.epochs; }, "epochs to train",
                             atLeast(1)));
  f.push_back(field<int64_t>("run", "threads", [](Config& c) -> int64_t& { return c.run.threads; },
                             "intra-op threads per rank; 0 = the node's cores / its ranks",
                             [](const int64_t& v) {
                               // More threads than cores only slows a rank down; tens of thousands
                               // fail to start at all.
                               const int64_t cores = std::max(1u, std::thread::hardware_concurrency());
                               if (v < 0) return S("must be 0 (automatic) or a positive count");
                               return v <= cores ? S() : concat("must be at most this node's ", cores, " cores, got ", v);
                             }));
  f.push_back(field<S>("run", "device", [](Config& c) -> S& { return c.run.device; },
                       "auto (a GPU per rank when there are enough, else the CPU) | cpu | cuda",
                       oneOf({"auto", "cpu", "cuda"}, "a device")));
  f.push_back(field<S>("run", "precision", [](Config& c) -> S& { return c.run.precision; },
                       "fp32 | bf16 (autocast on CUDA or the CPU) | fp16 (CUDA autocast with a dynamic loss scale); "
                       "weights, gradients and optimizer state stay fp32",
                       oneOf({"fp32", "bf16", "fp16"}, "a precision")));
  f.push_back(field<bool>("run", "deterministic", [](Config& c) -> bool& { return c.run.deterministic; },
                          "bit-exact GPU runs and resumes: CUBLAS_WORKSPACE_CONFIG=:4096:8, deterministic algorithms, "
                          "cuDNN deterministic without benchmark, NCCL_ALGO=Ring and NCCL_PROTO=Simple (each unless set); "
                          "costs some GPU speed, nothing on CPUs"));
  f.push_back(field<bool>("run", "keep_freed_memory", [](Config& c) -> bool& { return c.run.keepFreedMemory; },
                          "host memory freed in a step stays in the process for the next (glibc malloc: no heap "
                          "trimming, blocks up to 32 MiB from the heap): a CPU ResNet's steps fault in ~100 pages instead of "
                          "11-21k and take ~10% less CPU; resident memory stays at its peak. false: glibc's defaults"));
}

// model, task: the registered model's keys follow name and init_from.
void declareParts(std::vector<Field>& f) {
  f.push_back(field<S>("model", "name", [](Config& c) -> S& { return c.model.name; }, "a registered model"));
  f.push_back(field<S>("model", "init_from", [](Config& c) -> S& { return c.model.initFrom; },
                       "a forge checkpoint, or a state dict Python saved with torch.save(model.state_dict(), p), loaded strictly before training"));
  f.push_back(field<S>("task", "name", [](Config& c) -> S& { return c.task.name; },
                       "classification (integer labels) | regression (float targets) | language_model (token "
                       "sequences, each position predicting the next); sets the default loss and metrics",
                       oneOf({"classification", "regression", "language_model"}, "a task")));
  f.push_back(field<S>("task", "loss", [](Config& c) -> S& { return c.task.loss; },
                       "a registered loss; default: the task's (cross_entropy, mse, cross_entropy)"));
  f.push_back(field<VS>("task", "metrics", [](Config& c) -> VS& { return c.task.metrics; },
                        "registered metrics; the first is the one best.pt follows; default: the task's ([accuracy], "
                        "[mse, mae, r2], [perplexity, bits_per_token, token_accuracy])",
                        {}, true));
}

void declareData(std::vector<Field>& f) {
  f.push_back(field<VS>("data", "path", [](Config& c) -> VS& { return c.data.paths; },
                        "the HDF5 file, or a list of files and glob patterns that form one split (required)",
                        [](const VS& v) {
                          for (const auto& p : v) {
                            if (!p.empty()) return S();
                          }
                          return S("is required: the HDF5 file (or a list of files / glob patterns) to train on");
                        },
                        true));
  f.push_back(field<S>("data", "train_split", [](Config& c) -> S& { return c.data.trainSplit; }, "group of the training samples"));
  f.push_back(field<S>("data", "eval_split", [](Config& c) -> S& { return c.data.evalSplit; }, "group evaluated after each epoch"));
  f.push_back(field<S>("data", "features", [](Config& c) -> S& { return c.data.features; }, "dataset name of the inputs"));
  f.push_back(field<S>("data", "labels", [](Config& c) -> S& { return c.data.labels; }, "dataset name of the targets"));
  f.push_back(field<int64_t>("data", "batch_size", [](Config& c) -> int64_t& { return c.data.batchSize; },
                             "samples per rank in a (micro-)batch; with global_batch_size, the largest micro-batch", atLeast(1)));
  f.push_back(field<int64_t>("data", "global_batch_size", [](Config& c) -> int64_t& { return c.data.globalBatchSize; },
                             "samples per optimizer step over all ranks, kept on any world size (the per-rank batch and "
                             "optimizer.accumulate_steps derive from it); 0: world size x batch_size x accumulate_steps",
                             atLeast(0)));
  f.push_back(field<int64_t>("data", "eval_batch_size", [](Config& c) -> int64_t& { return c.data.evalBatchSize; },
                             "samples per rank per evaluation batch", atLeast(1)));
  f.push_back(field<bool>("data", "shuffle", [](Config& c) -> bool& { return c.data.shuffle; }, "shuffle each epoch"));
  f.push_back(field<bool>("data", "drop_last", [](Config& c) -> bool& { return c.data.dropLast; },
                          "leave out the epoch's last, partial global batch (else it is padded to a multiple of the world size)"));
  f.push_back(field<int64_t>("data", "prefetch", [](Config& c) -> int64_t& { return c.data.prefetch; },
                             "batches built ahead of training, at least (the loader keeps about 8 MiB of them, up to 16)", atLeast(1)));
  f.push_back(field<double>("data", "buffer_mb", [](Config& c) -> double& { return c.data.bufferMb; },
                            "read buffer per rank in MiB: two shuffle windows of half this each", mebibytes()));
  f.push_back(field<S>("data", "non_finite", [](Config& c) -> S& { return c.data.nonFinite; },
                       "NaN / Inf in a feature: error (stops the run naming the sample) | skip (left out and counted)", oneOf({"error", "skip"}, "a policy")));
  f.push_back(field<double>("data.normalize", "scale", [](Config& c) -> double& { return c.data.normalize.scale; },
                            "features become (raw * scale - mean) / std; 1/255 for uint8 images"));
  f.push_back(field<VD>("data.normalize", "mean", [](Config& c) -> VD& { return c.data.normalize.mean; },
                        "subtracted after scaling: one number, one per channel or one per feature",
                        [](const VD& v) { return v.empty() ? S("must not be an empty list") : S(); }, true));
  f.push_back(field<VD>("data.normalize", "std", [](Config& c) -> VD& { return c.data.normalize.std; },
                        "divides after the mean: one number, one per channel or one per feature",
                        [](const VD& v) {
                          bool ok = !v.empty();
                          for (double x : v) ok = ok && x > 0;
                          return ok ? S() : S("must be positive (one number, or one per channel or feature)");
                        },
                        true));
  f.push_back(field<S>("data.normalize", "stats", [](Config& c) -> S& { return c.data.normalize.stats; },
                       "config (mean and std as given) | auto (the training split's per-feature mean and std, computed once and kept in RUN_DIR/feature_stats.h5)",
                       oneOf({"config", "auto"}, "a statistics source")));
}

// optimizer, schedule: the registered part's keys follow these.
void declareOptimization(std::vector<Field>& f) {
  f.push_back(field<S>("optimizer", "name", [](Config& c) -> S& { return c.optimizer.name; }, "a registered optimizer"));
  f.push_back(field<double>("optimizer", "lr", [](Config& c) -> double& { return c.optimizer.lr; },
                            "base learning rate", positive()));
  f.push_back(field<double>("optimizer", "weight_decay", [](Config& c) -> double& { return c.optimizer.weightDecay; },
                            "weight decay", [](const double& v) { return v >= 0 ? S() : S("must not be negative"); }));
  f.push_back(field<int64_t>("optimizer", "accumulate_steps", [](Config& c) -> int64_t& { return c.optimizer.accumulateSteps; },
                             "micro-batches per optimizer step", atLeast(1)));
  f.push_back(field<S>("schedule", "name", [](Config& c) -> S& { return c.schedule.name; }, "a registered LR schedule"));
  f.push_back(field<int64_t>("schedule", "warmup_steps", [](Config& c) -> int64_t& { return c.schedule.warmupSteps; },
                             "linear warmup from 0 over this many steps",
                             [](const int64_t& v) { return v >= 0 ? S() : S("must not be negative"); }));
}

void declareRunControl(std::vector<Field>& f) {
  f.push_back(field<int64_t>("checkpoint", "every_epochs", [](Config& c) -> int64_t& { return c.checkpoint.everyEpochs; },
                             "save every N epochs", zeroOrPositive("off")));
  f.push_back(field<int64_t>("checkpoint", "every_steps", [](Config& c) -> int64_t& { return c.checkpoint.everySteps; },
                             "also save every N optimizer steps", zeroOrPositive("off")));
  f.push_back(field<int64_t>("checkpoint", "keep_last", [](Config& c) -> int64_t& { return c.checkpoint.keepLast; },
                             "checkpoints kept besides best.pt: the most advanced that verify",
                             zeroOrPositive("keep all")));
  f.push_back(field<bool>("checkpoint", "async", [](Config& c) -> bool& { return c.checkpoint.async; },
                          "write in a background thread: training waits only for an in-memory copy"));
  f.push_back(field<S>("distributed", "backend", [](Config& c) -> S& { return c.distributed.backend; },
                       "auto (nccl on CUDA, mpi on the CPU) | mpi | nccl", oneOf({"auto", "mpi", "nccl"}, "a backend")));
  f.push_back(field<double>("distributed", "timeout_s", [](Config& c) -> double& { return c.distributed.timeoutS; },
                            "seconds: the deadline of every collective; a stuck peer becomes an error naming the operation; 1e9 or more: no deadline",
                            [](const double& v) {
                              return v >= 1 ? S() : concat("must be at least 1 second (1e9 or more: no deadline), got ", v);
                            }));
  f.push_back(field<double>("distributed", "bucket_cap_mb", [](Config& c) -> double& { return c.distributed.bucketCapMb; },
                            "gradient bucket size cap in MiB", mebibytes()));
  f.push_back(field<double>("distributed", "first_bucket_cap_mb",
                            [](Config& c) -> double& { return c.distributed.firstBucketCapMb; },
                            "the first bucket's cap in MiB: smaller, so communication starts early", mebibytes()));
  f.push_back(field<bool>("distributed", "rebuild_buckets", [](Config& c) -> bool& { return c.distributed.rebuildBuckets; },
                          "rebuild buckets once, from the first backward's gradient order"));
  f.push_back(field<bool>("distributed", "overlap", [](Config& c) -> bool& { return c.distributed.overlap; },
                          "all-reduce buckets while backward goes on"));
  f.push_back(field<bool>("distributed", "allow_unused_parameters",
                          [](Config& c) -> bool& { return c.distributed.allowUnusedParameters; },
                          "let parameters without a gradient pass (else an error naming them)"));
  f.push_back(field<bool>("distributed", "broadcast_buffers",
                          [](Config& c) -> bool& { return c.distributed.broadcastBuffers; },
                          "buffers (BatchNorm statistics) follow rank 0 at every step"));
  f.push_back(field<bool>("distributed", "watchdog", [](Config& c) -> bool& { return c.distributed.watchdog; },
                          "a thread per rank that turns a hang into a verdict naming the rank, its phase and the "
                          "collective (and RUN_DIR/hang-report.json)"));
  f.push_back(field<S>("distributed", "wait", [](Config& c) -> S& { return c.distributed.wait; },
                       "mpi backend, a rank that reaches a collective before the others: sleep (polls, then sleeps "
                       "up to 1 ms at a time, at most 1/16 of the wait so far: its core goes to backward and to "
                       "other work) | spin (Open MPI's busy polling: the least latency on cores nothing else needs)",
                       oneOf({"sleep", "spin"}, "a way to wait")));
  f.push_back(field<int64_t>("distributed", "verify_every_steps",
                             [](Config& c) -> int64_t& { return c.distributed.verifyEverySteps; },
                             "compare a fingerprint of every rank's parameters every N steps (and at every epoch's "
                             "end); replicas that differ stop the job naming the ranks and the first parameter",
                             zeroOrPositive("at every epoch's end only")));
  f.push_back(field<S>("log", "progress", [](Config& c) -> S& { return c.log.progress; },
                       "auto (a bar on a terminal, lines otherwise) | bar | lines | off",
                       oneOf({"auto", "bar", "lines", "off"}, "a progress mode")));
  f.push_back(field<double>("log", "every_s", [](Config& c) -> double& { return c.log.everyS; },
                            "lines mode: seconds between progress lines",
                            [](const double& v) {
                              return v > 0 && v <= 1e9 ? S() : S("must be positive and at most 1e9 (seconds between progress lines)");
                            }));
  f.push_back(field<int64_t>("log", "every_steps", [](Config& c) -> int64_t& { return c.log.everySteps; },
                             "a step record in the metrics files every N steps", zeroOrPositive("off")));
  f.push_back(field<bool>("log", "tensorboard", [](Config& c) -> bool& { return c.log.tensorboard; },
                          "also write TensorBoard event files to RUN_DIR/tb/"));
}

// Checkpoint policy and stopping (issue 16).
void declareStopping(std::vector<Field>& f) {
  f.push_back(field<S>("checkpoint", "monitor", [](Config& c) -> S& { return c.checkpoint.monitor; },
                       "the metric best.pt, save_top_k and early stopping follow: eval_loss, eval_<metric>, "
                       "train_loss or train_<metric> of the task; empty = eval_<first metric> (eval_loss without one)",
                       [](const S& v) {
                         return v.empty() || v.rfind("eval_", 0) == 0 || v.rfind("train_", 0) == 0
                                    ? S()
                                    : concat("must be eval_<name> or train_<name> (e.g. eval_loss), got '", v, "'");
                       }));
  f.push_back(field<S>("checkpoint", "mode", [](Config& c) -> S& { return c.checkpoint.mode; },
                       "auto (the metric's direction: lower loss, higher accuracy) | min | max",
                       oneOf({"auto", "min", "max"}, "a mode")));
  f.push_back(field<int64_t>("checkpoint", "save_top_k", [](Config& c) -> int64_t& { return c.checkpoint.saveTopK; },
                             "keep copies of the k best epochs by the monitored metric in checkpoints/top/, beside "
                             "keep_last recent ones and best.pt",
                             zeroOrPositive("none")));
  f.push_back(field<int64_t>("run", "max_steps", [](Config& c) -> int64_t& { return c.run.maxSteps; },
                             "stop after this many optimizer steps of the run, with a checkpoint (exit 0)",
                             zeroOrPositive("off")));
  f.push_back(field<double>("run", "max_time", [](Config& c) -> double& { return c.run.maxTime; },
                            "seconds of wall-clock time this session may train: it saves and exits 75 (requeue) "
                            "early enough to finish the save before then when epochs remain; 0 = off",
                            [](const double& v) {
                              return v >= 0 && std::isfinite(v) ? S() : concat("must be 0 (off) or positive seconds, got ", v);
                            }));
  f.push_back(field<int64_t>("early_stopping", "patience",
                             [](Config& c) -> int64_t& { return c.earlyStopping.patience; },
                             "stop (exit 0, with a checkpoint) after this many epochs in a row without an improvement "
                             "of the monitored metric by more than min_delta",
                             zeroOrPositive("off")));
  f.push_back(field<double>("early_stopping", "min_delta", [](Config& c) -> double& { return c.earlyStopping.minDelta; },
                            "the least change of the monitored metric that counts as an improvement",
                            [](const double& v) {
                              return v >= 0 && std::isfinite(v) ? S() : concat("must not be negative, got ", v);
                            }));
}

// Training controls (issue 16): clipping, non-finite steps, EMA.
void declareControls(std::vector<Field>& f) {
  f.push_back(field<double>("optimizer", "clip_grad_norm", [](Config& c) -> double& { return c.optimizer.clipGradNorm; },
                            "clip the all-reduced gradients to this global L2 norm (as torch.nn.utils.clip_grad_norm_; "
                            "the norm before clipping is the metric grad_norm); 0 = off",
                            [](const double& v) {
                              return v >= 0 && std::isfinite(v) ? S() : concat("must be 0 (off) or a positive norm, got ", v);
                            }));
  f.push_back(field<int64_t>("optimizer", "max_skipped_steps",
                             [](Config& c) -> int64_t& { return c.optimizer.maxSkippedSteps; },
                             "a step whose all-reduced gradients are not finite is skipped on every rank; this many "
                             "in a row are tolerated, one more stops the run (exit 5); 0 = stop at the first",
                             zeroOrPositive("stop at the first")));
  f.push_back(field<VS>("optimizer", "no_decay", [](Config& c) -> VS& { return c.optimizer.noDecay; },
                        "parameters exempt from weight_decay (a second param group with weight_decay 0): bias (names "
                        "ending in bias), norm (the parameters of BatchNorm, LayerNorm, GroupNorm, ... layers)",
                        [](const VS& v) {
                          for (const auto& r : v) {
                            if (r != "bias" && r != "norm") return concat("rules are bias and norm, got '", r, "'");
                          }
                          return S();
                        }));
  f.push_back(field<double>("ema", "decay", [](Config& c) -> double& { return c.ema.decay; },
                            "keep an exponential moving average of the weights, ema = decay * ema + (1 - decay) * "
                            "weights, saved as ema_state_dict (forge eval --ema); 0 = off",
                            [](const double& v) {
                              return v >= 0 && v < 1 ? S() : concat("must be in [0, 1) (0: off), got ", v);
                            }));
  f.push_back(field<int64_t>("ema", "every_steps", [](Config& c) -> int64_t& { return c.ema.everySteps; },
                             "optimizer steps between two updates of the average", atLeast(1)));
  f.push_back(field<bool>("ema", "evaluate", [](Config& c) -> bool& { return c.ema.evaluate; },
                          "also evaluate the averaged weights after each epoch (eval_ema_loss, eval_ema_<metric>)"));
  declareStopping(f);
  f.push_back(field<S>("loss_scale", "mode", [](Config& c) -> S& { return c.lossScale.mode; },
                       "auto (dynamic with run.precision fp16, else off) | dynamic (any precision) | off: the loss is "
                       "multiplied by the scale before backward, the gradients divided by it; a step with non-finite "
                       "gradients is skipped and halves the scale, growth_interval finite steps double it",
                       oneOf({"auto", "dynamic", "off"}, "a loss scale mode")));
  f.push_back(field<double>("loss_scale", "init", [](Config& c) -> double& { return c.lossScale.init; },
                            "the first scale (a power of 2)", [](const double& v) {
                              int e = 0;
                              return v > 0 && std::isfinite(static_cast<float>(v)) && std::frexp(v, &e) == 0.5
                                         ? S()
                                         : concat("must be a power of 2 that fits a float, got ", v);
                            }));
  f.push_back(field<int64_t>("loss_scale", "growth_interval",
                             [](Config& c) -> int64_t& { return c.lossScale.growthInterval; },
                             "finite steps in a row after which the scale doubles", atLeast(1)));
}

std::vector<Field> declare() {
  std::vector<Field> f;
  declareRun(f);
  declareParts(f);
  declareData(f);
  declareOptimization(f);
  declareRunControl(f);
  declareControls(f);
  return f;
}

}  // namespace

const std::vector<Field>& schema() {
  static const std::vector<Field> fields = declare();
  return fields;
}

const std::vector<std::string>& sectionNames() {
  static const std::vector<std::string> names = {"run",        "model",       "task", "data", "optimizer", "schedule",
                                                 "checkpoint", "ema", "early_stopping", "loss_scale", "distributed", "log"};
  return names;
}

PartKind partOf(const std::string& section) {
  if (section == "model") return PartKind::kModel;
  if (section == "optimizer") return PartKind::kOptimizer;
  if (section == "schedule") return PartKind::kSchedule;
  return PartKind::kNone;
}

}  // namespace forge::train
