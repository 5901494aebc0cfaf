// Where a run starts: the run dir's checkpoints, the one to resume from, and the state it
// restores (weights, optimizer, position, best metric, each rank's generator).
#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include <cstring>
#include <filesystem>
#include <optional>
#include <sstream>

#include "checkpoint/atomic_file.h"
#include "checkpoint/checkpoint.h"
#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "core/table.h"
#include "trainer/engine/trainer.h"
#include "trainer/module/state_dict.h"

namespace forge::train {
namespace {

namespace fs = std::filesystem;

// Moves aside what a resume from a less advanced checkpoint abandons: the periodic
// checkpoints further on, and best.pt when it was written further on (one that fails to
// load stays). "Further" is by training progress, which means the same whatever world size
// wrote each file.
void moveAbandoned(ckpt::CheckpointDir& dir, const std::string& resume, const ckpt::Progress& resumed,
                   const std::string& monitored) {
  std::error_code ec;
  std::vector<std::string> newer;
  for (const auto& e : dir.verified()) {
    if (!fs::equivalent(e.path, resume, ec) && e.progress > resumed) newer.push_back(e.path);
  }
  if (fs::exists(dir.bestPath()) && !fs::equivalent(dir.bestPath(), resume, ec)) {
    try {
      if (ckpt::progressOf(ckpt::load(dir.bestPath()), dir.bestPath()) > resumed) {
        newer.push_back(dir.bestPath());
        log::warn("ckpt", "best.pt was written after ", resume, " and goes aside with the newer checkpoints; the "
                  "next epoch that beats the resumed best ", monitored, " writes a new one");
      }
    } catch (const CheckpointError&) {
    }
  }
  if (newer.empty()) return;
  // A folder of its own each time: resuming from the same checkpoint again abandons another
  // future, which must not replace the first one's files of the same names.
  const std::string aside = ckpt::createNewFolder(
      (fs::path(dir.dir()) / concat("abandoned-after-", fs::path(dir.pathFor(resumed)).stem().string())).string());
  for (const auto& f : newer) ckpt::moveWithoutReplacing(f, aside);
  log::warn("ckpt", "moved ", newer.size(), " checkpoint(s) further on than ", resume, " (", resumed.text(), ") to ",
            aside);
}

// What an earlier run left besides periodic checkpoints, for messages: "best.pt,
// unverified/ckpt-e0002-n0000000000.pt and 2 more" (paths relative to the checkpoints folder).
std::string describeLeftovers(const ckpt::CheckpointDir& dir, const std::vector<std::string>& files) {
  std::string out;
  for (size_t i = 0; i < files.size() && i < 2; ++i) {
    out += concat(i ? ", " : "", fs::path(files[i]).lexically_relative(dir.dir()).string());
  }
  if (files.size() > 2) out += concat(" and ", files.size() - 2, " more");
  return out;
}

}  // namespace

// Rank 0, during setup: the run folder, the config as resolved, and which checkpoint to
// resume from. A fresh start never mixes with an earlier run's files: not with its periodic
// checkpoints, nor with its best.pt or the files set aside in unverified/ or
// abandoned-after-*/ (a fresh start would replace best.pt and the metrics, losing that run's
// results). A resume from a less advanced checkpoint moves the further ones aside (they
// belong to the abandoned future) so that retention and a later --resume auto cannot
// confuse the two histories.
// Whatever can refuse the start is decided before anything in the run dir changes: a
// refused start leaves every file as it was (config.yaml, forge.log, temporaries included).
void Trainer::prepareRunDir(const std::string& resume) {
  std::optional<ckpt::Progress> resumed;
  if (resume.empty()) {
    auto existing = checkpoints_->files();
    if (!existing.empty()) {
      const std::string more = existing.size() > 1 ? concat(" and ", existing.size() - 1, " more") : "";
      throw ConfigError(concat("run dir '", cfg_.run.dir, "' already holds checkpoints of an earlier run (",
                               existing.front(), more, "): continue it with --resume auto, or train afresh in "
                               "another run.dir (or delete that one)"));
    }
    auto others = checkpoints_->leftovers();
    if (!others.empty()) {
      throw ConfigError(concat("run dir '", cfg_.run.dir, "' holds files of an earlier run in ", checkpoints_->dir(),
                               " (", describeLeftovers(*checkpoints_, others), "), and a fresh start would replace its "
                               "best.pt and metrics: continue from one with --resume PATH (e.g. ",
                               checkpoints_->bestPath(), "), or move them out of ", checkpoints_->dir(),
                               ", or train afresh in another run.dir"));
    }
  } else if (resume == "auto") {
    // Files that do not verify are moved aside on the way (saying so): repairs, not changes.
    if (auto found = checkpoints_->loadNewest()) {
      resumePath_ = found->path;
    } else if (auto others = checkpoints_->leftovers(); !others.empty()) {
      // Say so rather than start fresh over them: a requeued job whose periodic checkpoints
      // all failed to verify lands here, and training afresh would replace the earlier
      // run's best.pt and metrics.
      throw CheckpointError(concat("--resume auto: no checkpoint in ", checkpoints_->dir(), " to continue from, but an "
                                   "earlier run's files are there (", describeLeftovers(*checkpoints_, others),
                                   ") and starting fresh would replace its best.pt and metrics: continue from one with "
                                   "--resume PATH (e.g. ", checkpoints_->bestPath(), "), or move them out of ",
                                   checkpoints_->dir(), " to start afresh"));
    }
  } else {
    resumed = ckpt::progressOf(ckpt::load(resume), resume);  // verified before anything is moved
    resumePath_ = resume;
  }
  runDir_.create(cfg_.resolved);
  if (int n = checkpoints_->removeStaleTemporaries()) {
    log::info("ckpt", "removed ", n, " temporary file(s) of a save that was interrupted");
  }
  if (resumed) moveAbandoned(*checkpoints_, resume, *resumed, monitoredMetric());
  // What rank 0 printed, from the first line on; a resumed run's sessions follow each other.
  std::error_code ec;
  if (resumePath_.empty()) fs::remove(runDir_.log(), ec);
  log::teeTo(runDir_.log());
}

// A resumed run that computes another function than the one saved, or steps with another
// optimizer, is no continuation: the weights load (their shapes fit) but, say, model.heads
// 2 -> 4 splits attention differently and optimizer.name adamw -> sgd drops the moments.
// Each model key, the task and the optimizer that differ from the checkpoint's config are
// named (a warning: a deliberate change, dropout for fine-tuning, is the user's to make).
void Trainer::warnOfChangedSetup(const std::string& savedConfig, const std::string& path) const {
  if (savedConfig.empty() || world_.rank != 0) return;
  YAML::Node saved, now;
  try {
    saved = YAML::Load(savedConfig);
    now = YAML::Load(cfg_.resolved);
  } catch (const YAML::Exception&) {
    return;  // an older or hand-made checkpoint: nothing to compare
  }
  auto text = [](const YAML::Node& n) {
    YAML::Emitter e;
    e << YAML::Flow << n;
    return std::string(e.c_str());
  };
  std::vector<std::string> changed;
  auto compare = [&](const std::string& section, const std::string& key) {
    const YAML::Node a = saved[section] ? saved[section][key] : YAML::Node();
    const YAML::Node b = now[section] ? now[section][key] : YAML::Node();
    if (a && b && text(a) != text(b)) changed.push_back(concat(section, ".", key, " ", text(a), " -> ", text(b)));
  };
  if (saved["model"] && saved["model"].IsMap()) {
    for (const auto& kv : saved["model"]) compare("model", kv.first.as<std::string>());
  }
  compare("task", "name");
  compare("optimizer", "name");
  if (!changed.empty()) {
    log::warn("ckpt", "resuming from ", path, " with a config that differs from the one it was trained with: ",
              join(changed, ", "), ": the weights load, but the run does not continue the saved one exactly");
  }
}

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
  warnOfChangedSetup(ck.config, path);
  loadModelStateDict(*model_.module, ck.modelState, path);
  try {
    optimizer_->loadStateDict(ck.optimizerState);
  } catch (const CheckpointError& e) {
    throw CheckpointError(concat("checkpoint '", path, "': its optimizer state does not fit the config's optimizer '",
                                 cfg_.optimizer.name, "' (was the optimizer changed?): ", e.what()));
  }
  resumedBucketOrder_ = ck.bucketOrder;
  for (StatefulPart* part : parts_) part->loadStateDict(ck.part(part->field()), path);
  state_.epoch = ck.epoch;
  state_.step = ck.step;
  state_.globalStep = ck.globalStep;
  state_.bestMetric = ck.bestMetric;
  if (!std::isnan(ck.bestMetric) && ck.bestMetricName != monitoredMetric()) {
    // Another task.metrics: the saved best is of another quantity, not comparable.
    log::warn("ckpt", "the checkpoint's best metric is ", ck.bestMetricName, " = ", ck.bestMetric, ", this run follows ",
              monitoredMetric(), ": the best so far starts anew (best.pt is replaced by the next epoch)");
    state_.bestMetric = std::nan("");
  }
  // Dropout's generator is reseeded at every step from (seed, global step, rank): the
  // saved generator states are kept in the file but not needed to continue.
  if (ck.sampler.isGenericDict() && state_.step > 0) {
    // Mid-epoch, the rest of the epoch follows the saved order only if nothing that shapes
    // the order changed (the world size does not).
    auto saved = ck.sampler.toGenericDict();
    std::string changed;
    auto differs = [&](const char* key, const c10::IValue& now) {
      auto it = saved.find(key);
      if (it != saved.end() && !(it->value() == now)) changed += concat(changed.empty() ? "" : ", ", key);
    };
    differs("seed", cfg_.run.seed);
    differs("shuffle", cfg_.data.shuffle);
    differs("drop_last", cfg_.data.dropLast);
    // The window (from data.buffer_mb, and rounded to data.global_batch_size when that is
    // set) shapes the order too. The checkpoint's is kept for the run when nothing else
    // changed and it fits this run's buffer: setting data.global_batch_size (or another
    // buffer) on resume then still continues the interrupted epoch exactly.
    auto savedWindow = saved.find("global_window");
    if (changed.empty() && savedWindow != saved.end() && savedWindow->value().isInt() &&
        savedWindow->value().toInt() != window_) {
      const int64_t keep = savedWindow->value().toInt();
      const int64_t bound = data::globalWindowFor(static_cast<size_t>(cfg_.data.bufferMb * (1 << 20)),
                                                  train_->batchRowBytes(), 0);
      if (keep > 0 && keep <= bound) {
        log::info("ckpt", "keeping the checkpoint's shuffle window of ", keep, " samples (this config's would be ",
                  window_, ") so that the rest of the interrupted epoch follows its order");
        window_ = keep;
        rebuildSampler();
      } else {
        changed = "global_window (data.buffer_mb, and data.global_batch_size when set; the checkpoint's does not "
                  "fit this run's buffer)";
      }
    } else {
      differs("global_window", window_);
    }
    if (!changed.empty()) {
      log::warn("ckpt", "the config changes the data order (", changed, " differ from the checkpoint's): the rest "
                "of the interrupted epoch sees other batches than the uninterrupted run would have");
    }
  }
  // The position is a count of the epoch's global samples, the same measure at any world
  // size: the rest of the epoch starts at exactly the next unseen sample, in steps of this
  // run's global batch. The step is re-derived so that the epoch still has stepsPerEpoch_
  // steps (the schedule's measure); when the global batch is the one the checkpoint's steps
  // had, it is the checkpoint's step.
  const ckpt::Progress saved = ckpt::progressOf(ck, path);
  const int64_t globalBatch = sampler_->globalBatch();
  resumeEpoch_ = state_.epoch;
  resumeSample_ = std::min(saved.samples, sampler_->epochSamples());
  state_.step = stepsPerEpoch_ - sampler_->stepsFrom(resumeSample_);
  resumeStep_ = state_.step;
  // The global step counts steps of the checkpoint's size up to it: kept when those are this
  // run's steps too (the same global batch), else re-derived so that the schedule stays on
  // course. A file without "global_batch" (an older forge) had this one at its world size.
  int64_t savedGlobalBatch = ck.worldSize == world_.size ? globalBatch : 0;
  if (ck.sampler.isGenericDict()) {
    auto d = ck.sampler.toGenericDict();
    auto it = d.find("global_batch");
    if (it != d.end() && it->value().isInt()) savedGlobalBatch = it->value().toInt();
  }
  if (savedGlobalBatch != globalBatch || state_.step != ck.step) {
    state_.globalStep = state_.epoch * stepsPerEpoch_ + state_.step;
  }
  if (ck.worldSize != world_.size || saved.samples % globalBatch != 0) {
    log::info("ckpt", "checkpoint was written by ", ck.worldSize, ck.worldSize == 1 ? " rank" : " ranks",
              ", resuming on ", world_.size,
              " at global sample ", saved.samples, " of ", sampler_->epochSamples(), " of epoch ", state_.epoch + 1,
              ", in steps of ", globalBatch, " samples",
              saved.samples % globalBatch != 0 ? concat(" (the steps so far were of another size: this epoch's step "
                                                        "count is re-derived from the samples)")
                                               : std::string());
  }
  state_.epochSamples = epochSamplesDone();
  // Epochs count from 1 here, as in the progress lines: "at epoch 4 step 0" is where epoch 4
  // starts, after 3 complete ones.
  freshOrResumed_ = concat("resumed from ", path, " at epoch ", state_.epoch + 1, " step ", state_.step,
                           ", global step ", state_.globalStep);
  log::info("ckpt", "resumed from ", path, " at epoch ", state_.epoch + 1, " step ", state_.step, " (global step ",
            state_.globalStep, ")",
            state_.step == 0 && state_.epoch > 0 ? concat(": epoch ", state_.epoch, " is complete") : std::string());
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
  const double now = schedule_->at(state_.globalStep, state_.epoch);
  if (std::fabs(now - before) <= 1e-12 * std::max(1.0, std::fabs(before))) return;
  auto text = [](const c10::IValue& v) {
    if (v.isDouble()) return jsonNumber(v.toDouble());
    std::ostringstream os;
    os << v;
    return os.str();
  };
  std::string changed;
  for (const auto& kv : schedule_->describe()) {
    auto it = saved.find(kv.key());
    if (it != saved.end() && !(it->value() == kv.value())) {
      changed += concat(changed.empty() ? "" : ", ", kv.key().toStringRef(), " ", text(it->value()), " -> ",
                        text(kv.value()));
    }
  }
  log::warn("ckpt", "the learning-rate schedule differs from the checkpoint's",
            changed.empty() ? std::string() : concat(" (", changed, ")"), ": the LR at the resumed step is ", now,
            " instead of ", before, ", and the run continues on the new curve");
}

}  // namespace forge::train
