// What the run is, once its starting point is known, and how the session went.
#include <torch/torch.h>

#include <cstring>
#include <map>
#include <set>
#include <sstream>

#include "core/clock.h"
#include "core/log.h"
#include "core/strings.h"
#include "core/table.h"
#include "distributed/device.h"
#include "distributed/rank_status.h"
#include "distributed/replicas.h"
#include "trainer/engine/trainer.h"
#include "trainer/module/probe.h"
#include "trainer/report/summary.h"
#include "trainer/spec/registry.h"

namespace forge::train {
namespace {

using Clock = std::chrono::steady_clock;

std::string hex16(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

int64_t parameterCount(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

bool isPercent(const std::string& metric) {
  const MetricSpec* m = registry().metrics.find(metric);
  return m != nullptr && m->percent;
}

}  // namespace

// Collective: every rank's loop timing, for the straggler line (rank 0 gets them all).
std::vector<RankTiming> Trainer::gatherRankTimings() {
  constexpr int64_t kHost = 48;
  const dist::RankRecord me = dist::rankStatus().snapshot();
  constexpr int64_t kValues = 6;
  at::Tensor mine = at::zeros({kValues + kHost / 8}, at::kDouble);
  auto* m = mine.data_ptr<double>();
  m[0] = static_cast<double>(stepsSession_);
  m[1] = trainLoopSeconds_;
  m[2] = commSeconds_;
  m[3] = dataWaitSeconds_;
  m[4] = static_cast<double>(loopUsage_.minorFaults);
  m[5] = loopUsage_.cpuSeconds;
  std::memcpy(m + kValues, me.host, kHost);
  at::Tensor all = at::empty({mine.numel() * world_.size}, at::kDouble);
  comm_.allGather(mine, all);
  std::vector<RankTiming> out;
  for (int r = 0; r < world_.size; ++r) {
    const double* v = all.data_ptr<double>() + r * mine.numel();
    RankTiming t;
    t.rank = r;
    char host[kHost + 1] = {};
    std::memcpy(host, v + kValues, kHost);
    t.host = host;
    t.steps = static_cast<int64_t>(v[0]);
    const double steps = std::max(1.0, v[0]);
    t.step = v[1] / steps;
    t.commWait = v[2] / steps;
    t.dataWait = v[3] / steps;
    t.pageFaults = v[4] / steps;
    t.cpu = v[5] / steps;
    out.push_back(t);
  }
  return out;
}

// Rank 0: what this run is, in one screen.
void Trainer::logStartupSummary() const {
  if (world_.rank != 0) return;
  std::string overrides;
  for (const auto& o : cfg_.overrides) overrides += concat(overrides.empty() ? "" : ", ", o);
  log::info("train", "config ", cfg_.sourcePath, overrides.empty() ? " (no overrides)" : " with --set " + overrides,
            "; run dir ", cfg_.run.dir, " (", freshOrResumed_, ")");
  // The layers in forward order (a staged model's stages, else the registered children), as
  // print(model) lists them, with their parameter counts.
  const torch::nn::Module& m = *model_.module;
  Table layers({"layer", "module", "parameters"}, {Table::Align::kLeft, Table::Align::kLeft, Table::Align::kRight});
  std::map<std::string, std::shared_ptr<torch::nn::Module>> children;
  for (const auto& c : m.named_children()) children[c.key()] = c.value();
  std::set<std::string> shown;
  for (const auto& stage : model_.stages) {
    auto it = children.find(stage.name);
    if (it == children.end()) {
      layers.row({stage.name, "(function)", "-"});
      continue;
    }
    layers.row({stage.name, describeModule(*it->second), withThousands(parameterCount(*it->second))});
    shown.insert(stage.name);
  }
  for (const auto& c : m.named_children()) {
    if (shown.count(c.key())) continue;
    layers.row({model_.stages.empty() ? c.key() : c.key() + " (unused)", describeModule(*c.value()),
                withThousands(parameterCount(*c.value()))});
  }
  int64_t total = 0, trainable = 0;
  std::set<const c10::TensorImpl*> counted;  // a tied weight counts once
  for (const auto& p : m.parameters()) {
    if (!counted.insert(p.unsafeGetTensorImpl()).second) continue;
    total += p.numel();
    if (p.requires_grad()) trainable += p.numel();
  }
  log::info("train", "model ", modelName_, ": ", withThousands(trainable), " trainable parameters",
            total != trainable ? concat(" (", withThousands(total), " in all)") : std::string(), ", on ",
            dist::describeDevice(device_), cfg_.run.precision != "fp32" ? concat(" with ", cfg_.run.precision, " autocast") : std::string());
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
  std::string metrics;
  for (const auto& n : task_.metricNames()) metrics += concat(metrics.empty() ? "" : ", ", n);
  log::info("train", world_.size, " rank(s); ", cfg_.run.epochs, " epoch(s) of ", stepsPerEpoch_, " steps; loss ",
            task_.loss->name, metrics.empty() ? "" : concat(", metrics ", metrics), "; optimizer ", cfg_.optimizer.name,
            " lr ", cfg_.optimizer.lr, ", schedule ", cfg_.schedule.name, "; metrics in ", runDir_.metricsJsonl(),
            cfg_.log.tensorboard ? concat(" (and .csv, ", runDir_.tensorboard(), "/)") : " (and .csv)");
}

// Collective (the final evaluation and the replica check); rank 0 reports.
TrainSummary Trainer::summarize(Clock::time_point start) {
  TrainSummary s;
  auto evalStart = Clock::now();
  s.finalEval = evaluate(model_, task_, *eval_, norm_, cfg_.data.evalBatchSize, comm_, device_);
  evalSeconds_ += secondsSince(evalStart);
  s.fingerprint = dist::verifyReplicas(*model_.module, comm_);
  std::vector<RankTiming> timings = gatherRankTimings();
  s.bestMetric = state_.bestMetric;
  s.bestEpoch = state_.bestEpoch;
  s.seconds = secondsSince(start);
  log::info("train", "replicas identical on all ", world_.size, " ranks (parameter and buffer fingerprint ",
            hex16(s.fingerprint), ")");
  std::string final;
  for (const auto& [name, v] : s.finalEval.values) {
    if (name == "loss") continue;
    final += concat(final.empty() ? "" : ", ", name, " ", metricValueText(name, v));
  }
  char loss[32];
  std::snprintf(loss, sizeof loss, "%.4f", s.finalEval.loss());
  // Where the run stands: a run stopped by run.max_steps (or a signal) may be mid-epoch.
  const std::string where = state_.step > 0 ? concat(state_.epoch, " epoch(s) and ", state_.step, " step(s)")
                                            : concat(state_.epoch, " epoch(s)");
  log::info("train", "final ", cfg_.data.evalSplit, " ", final, final.empty() ? "" : " ", "(loss ", loss, ") after ",
            where, "; this session took ", formatDuration(s.seconds));
  for (const auto& ref : referencesOf(s.finalEval, *eval_)) log::info("train", "final ", ref.text());
  s.epochsThisSession = epochsSession_;
  s.samplesPerS = samplesSession_ / std::max(1e-9, trainLoopSeconds_);
  s.dataWaitSeconds = dataWaitSeconds_;
  s.commSeconds = commSeconds_;
  s.checkpointSeconds = checkpointSeconds_;
  s.evalSeconds = evalSeconds_;
  s.computeSeconds = std::max(0.0, trainLoopSeconds_ - dataWaitSeconds_ - commSeconds_ - checkpointInLoopSeconds_);
  s.otherSeconds = std::max(0.0, s.seconds - s.computeSeconds - s.commSeconds - s.dataWaitSeconds -
                                     s.checkpointSeconds - s.evalSeconds);
  if (world_.rank != 0) return s;
  SessionSummary r;
  r.monitored = monitoredMetric();
  r.monitoredPercent = !task_.metrics.empty() && task_.metrics.front()->percent;
  r.bestMetric = s.bestMetric;
  r.bestEpoch = s.bestEpoch;
  r.evalSplit = cfg_.data.evalSplit;
  r.finalEval = s.finalEval.values;
  for (const auto& [name, v] : r.finalEval) r.finalEvalPercent.push_back(isPercent(name));
  r.finalEvalSamples = s.finalEval.samples;
  r.epochs = state_.epoch;
  r.globalStep = state_.globalStep;
  r.worldSize = world_.size;
  r.fingerprint = hex16(s.fingerprint);
  r.seconds = s.seconds;
  r.samplesPerS = s.samplesPerS;
  r.epochsThisSession = s.epochsThisSession;
  r.compute = s.computeSeconds;
  r.comm = s.commSeconds;
  r.dataWait = s.dataWaitSeconds;
  r.checkpoint = s.checkpointSeconds;
  r.evaluation = s.evalSeconds;
  r.other = s.otherSeconds;
  r.ranks = std::move(timings);
  logSessionSummary(r);
  // A session that trained no step (the run was already complete) keeps the summary of the
  // one that did.
  if (s.epochsThisSession > 0 || stepsSession_ > 0) writeSummaryJson(runDir_.summary(), r);
  return s;
}

}  // namespace forge::train
