// forge eval: a checkpoint's loss and metrics on the eval split.
#include <nlohmann/json.hpp>

#include <filesystem>
#include <iostream>

#include "checkpoint/checkpoint.h"
#include "checkpoint/python_state_dict.h"
#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "core/table.h"
#include "trainer/app/commands.h"
#include "trainer/engine/ema.h"
#include "trainer/engine/evaluator.h"
#include "trainer/engine/run_dir.h"
#include "trainer/engine/trainer.h"
#include "trainer/module/build.h"
#include "trainer/module/state_dict.h"
#include "trainer/spec/registry.h"

namespace forge::train {
namespace {

const char* kEvalHelp = R"(usage: forge eval CONFIG.yaml --checkpoint PATH [--set key=value ...] [--ema] [--json]

Loads the model state of PATH (a forge checkpoint, or a state dict saved by Python with
torch.save(model.state_dict(), PATH)) into the model the config describes and reports the
loss and the task's metrics on the config's eval split (data.eval_split, default "test"),
and for a classifier the accuracy per class. --ema evaluates the checkpoint's exponential
moving average of the weights instead (its ema_state_dict, kept when trained with ema.decay).
--json prints the same as one JSON object.
)";

// The averaged weights of a forge checkpoint (its ema_state_dict), as a state dict.
std::vector<std::pair<std::string, at::Tensor>> emaStateOf(const std::string& path) {
  const c10::IValue ema = ckpt::load(path).part(kEmaField);
  if (!ema.isGenericDict()) {
    throw CheckpointError(concat("checkpoint '", path, "' holds no ", kEmaField, " (it was trained without "
                                 "ema.decay): evaluate it without --ema"));
  }
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& kv : ema.toGenericDict()) {
    if (!kv.key().isString() || !kv.value().isTensor()) {
      throw CheckpointError(concat("checkpoint '", path, "': ", kEmaField, " must map names to tensors"));
    }
    out.emplace_back(kv.key().toStringRef(), kv.value().toTensor());
  }
  return out;
}

nlohmann::json number(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

data::Normalization normalizationFor(const Config& cfg) {
  data::Normalization norm{cfg.data.normalize.scale, cfg.data.normalize.mean, cfg.data.normalize.std};
  if (cfg.data.normalize.stats == "auto") {
    // The statistics training computed and kept in the run dir.
    const std::string stats = RunDir(cfg.run.dir).featureStats();
    if (!std::filesystem::exists(stats)) {
      throw DataError(concat("data.normalize.stats is auto, but ", stats, " does not exist: evaluate with the "
                             "run.dir of the training run that computed it"));
    }
    data::readFeatureStats(stats, norm.mean, norm.std);
  }
  return norm;
}

void printResult(const EvalResult& r, const std::string& checkpoint, const data::SplitSource& source, bool json) {
  const std::string split = source.name();
  const std::vector<Reference> refs = referencesOf(r, source);
  auto classAccuracy = [&](size_t c) {
    return r.classSamples[c] ? static_cast<double>(r.classCorrect[c]) / r.classSamples[c] : std::nan("");
  };
  if (json) {
    nlohmann::ordered_json j = {{"checkpoint", checkpoint}, {"split", split}, {"samples", r.samples}};
    for (const auto& [name, v] : r.values) j[name] = number(v);
    for (const auto& ref : refs) {
      j["references"][ref.value] = {{"reference", ref.reference}, {"level", number(ref.level)}, {"ratio", number(ref.ratio())}};
    }
    if (!r.classSamples.empty()) {
      j["classes"] = nlohmann::json::array();
      for (size_t c = 0; c < r.classSamples.size(); ++c) {
        j["classes"].push_back({{"class", c},
                                {"samples", r.classSamples[c]},
                                {"correct", r.classCorrect[c]},
                                {"accuracy", number(classAccuracy(c))}});
      }
    }
    std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return;
  }
  Table t({"", ""});
  t.row({"checkpoint", checkpoint}).row({"split", split}).row({"samples", withThousands(r.samples)});
  for (const auto& [name, v] : r.values) {
    t.row({name, metricValueText(name, v)});
  }
  for (const auto& ref : refs) t.row({ref.value + " / " + ref.reference, fixed(ref.ratio(), 3) + " (" + ref.text() + ")"});
  std::cout << t.str() << "\n";
  if (r.classSamples.empty()) return;
  using A = Table::Align;
  Table perClass({"class", "samples", "correct", "accuracy"}, {A::kRight, A::kRight, A::kRight, A::kRight});
  for (size_t c = 0; c < r.classSamples.size(); ++c) {
    char acc[32];
    std::snprintf(acc, sizeof acc, "%.2f%%", 100.0 * classAccuracy(c));
    perClass.row({std::to_string(c), withThousands(r.classSamples[c]), withThousands(r.classCorrect[c]),
                  r.classSamples[c] ? acc : "-"});
  }
  std::cout << perClass.str();
}

}  // namespace

int cmdEval(int argc, char** argv) {
  Args a = parseArgs(argc, argv, 2, {"set", "checkpoint"}, {"json", "ema"}, kEvalHelp);
  if (a.help) return std::cout << kEvalHelp, 0;
  Config cfg = configFrom(a, kEvalHelp, "eval");
  if (!a.has("checkpoint")) usage("forge eval needs --checkpoint PATH", kEvalHelp);
  if (a.has("json")) log::infoToStderr();  // stdout holds the JSON alone
  auto pg = processGroupFor(&argc, &argv, cfg, "eval");
  agreeOnConfig(*pg, &cfg);
  std::unique_ptr<data::SplitSource> split;
  ModelHandle model;
  Task task;
  dist::agreeOnSetup(pg->comm(), [&] {
    split = std::make_unique<data::SplitSource>(sourceSpecFor(cfg, cfg.data.evalSplit));
    task = Task::resolve(cfg.task.loss, cfg.task.metrics);
    model = buildRegisteredModel(registry().models.get(cfg.model.name), cfg.model.options, 1);
    // A forge checkpoint, or a state dict Python saved with torch.save(model.state_dict()).
    const std::string path = a.one("checkpoint");
    loadModelStateDict(*model.module, a.has("ema") ? emaStateOf(path) : ckpt::loadModelState(path), path);
    model.module->to(pg->device());
  });
  return runGuarded(*pg, [&] {
    EvalResult r = evaluate(model, task, *split, normalizationFor(cfg), cfg.data.evalBatchSize, pg->comm(), pg->device());
    if (pg->world().rank == 0) printResult(r, a.one("checkpoint"), *split, a.has("json"));
    return 0;
  });
}

}  // namespace forge::train
