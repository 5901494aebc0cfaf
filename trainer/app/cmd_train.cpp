// forge train: the training run, on every rank.
#include <iostream>

#include "core/log.h"
#include "core/memory.h"
#include "trainer/app/commands.h"
#include "trainer/engine/preemption.h"
#include "trainer/engine/trainer.h"

namespace forge::train {
namespace {

const char* kTrainHelp = R"(usage: forge train CONFIG.yaml [--set key=value ...] [--resume auto|PATH]

  CONFIG.yaml        the run's config (see configs/fashion_mnist_mlp.yaml, and
                     `forge config keys` for every key)
  --set key=value    override a config key by its dotted path, e.g. --set run.epochs=2
                     --set optimizer.lr=0.01 (repeatable; the value is parsed as YAML)
  --resume auto      continue from the checkpoint in RUN_DIR/checkpoints furthest in
                     training (epochs and samples, at any world size) that verifies;
                     fresh start when there is none
  --resume PATH      continue from that checkpoint

Runs alone (1 rank), under `mpirun -np N forge train ...`, or under `srun`.
Writes, in RUN_DIR (run.dir):
  config.yaml      the config as resolved (file + overrides)
  forge.log        what rank 0 printed (sessions of a resumed run follow each other)
  metrics.jsonl    a "step" record every log.every_steps steps and an "epoch" record
                   per epoch: losses, the task's metrics, lr, samples/s, data-wait and
                   communication shares; metrics.csv holds the same rows
  tb/              the same as TensorBoard scalars: tensorboard --logdir runs/
  summary.json     the end-of-run summary
  checkpoints/     ckpt-e<epochs complete>-n<samples into the next>.pt and best.pt
Progress (log.progress): a live bar on a terminal, a plain line every log.every_s
seconds otherwise (log files); `forge plot RUN_DIR` draws the curves.
)";

}  // namespace

int cmdTrain(int argc, char** argv) {
  // First: a Ctrl-C during startup (MPI, data, model) is a request to save and stop like
  // any other, not the default handler's instant death.
  installPreemptionHandlers();
  Args a = parseArgs(argc, argv, 2, {"set", "resume"}, {}, kTrainHelp);
  if (a.help) return std::cout << kTrainHelp, 0;
  Config cfg = configFrom(a, kTrainHelp, "train");
  const std::string resume = a.one("resume");
  // Before MPI, the data and the model allocate: all of it under the same rules.
  const bool kept = cfg.run.keepFreedMemory && keepFreedMemory();
  auto pg = processGroupFor(&argc, &argv, cfg, "train");
  if (cfg.run.keepFreedMemory && !kept && pg->world().rank == 0) {
    log::warn("train", "run.keep_freed_memory: this C library's allocator cannot be told to keep freed memory; "
              "its defaults stay");
  }
  installPreemptionHandlers();  // again, in case MPI's start replaced them
  agreeOnConfig(*pg, &cfg);
  std::unique_ptr<Trainer> trainer;
  dist::agreeOnSetup(pg->comm(), [&] {
    trainer = std::make_unique<Trainer>(cfg, pg->comm(), pg->world(), resume, pg->device());
  });
  if (pg->world().rank == 0) pg->watchdog().setReportDir(cfg.run.dir);
  return runGuarded(*pg, [&] {
    trainer->run();
    return 0;
  });
}

}  // namespace forge::train
