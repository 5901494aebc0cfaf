#include "trainer/app/commands.h"

#include <c10/util/Exception.h>

#include "core/error.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/strings.h"

namespace forge::train {

const std::vector<Command>& commands() {
  static const std::vector<Command> all = {
      {"data",
       "data fashion-mnist --out FILE.h5 [--source DIR]\n"
       "  data synthetic --out FILE.h5 --samples N --features D (--classes C | --targets T) [...]\n"
       "  data text --out FILE.h5 --context T FILE_OR_FOLDER...\n"
       "  data from-npy --out FILE.h5 --train-features X.npy [--train-labels Y.npy] [...]\n"
       "                         write a data set in forge's HDF5 layout (Fashion-MNIST,\n"
       "                         a learnable classification or regression set, byte\n"
       "                         sequences of text, NumPy arrays)",
       cmdData},
      {"train",
       "train CONFIG.yaml [--set key=value ...] [--resume auto|PATH]\n"
       "                         train; alone, under `mpirun -np N`, or under `srun`",
       cmdTrain},
      {"eval",
       "eval CONFIG.yaml --checkpoint PATH [--set key=value ...] [--json]\n"
       "                         eval-split loss and metrics of a checkpoint (per class\n"
       "                         for a classifier)",
       cmdEval},
      {"ckpt", "ckpt inspect PATH [--json]\n                         what a checkpoint holds", cmdCkpt},
      {"model",
       "model check CONFIG.yaml --state-dict P.pt [--inputs X.pt --outputs Y.pt]\n"
       "                         load a Python state dict strictly into the configured\n"
       "                         model and compare its outputs with Python's",
       cmdModel},
      {"config",
       "config keys [--markdown]\n"
       "                         every config key: type, default, help\n"
       "  config check CONFIG.yaml [--set key=value ...]\n"
       "                         check a config without training (keys, values, model size)",
       cmdConfig},
      {"plot",
       "plot RUN_DIR... [--out FILE.png] [--title TEXT] [--size WxH]\n"
       "                         loss, metric, learning rate and throughput curves of\n"
       "                         one run or several side by side, as a PNG (gnuplot)",
       cmdPlot},
      {"doctor",
       "doctor [CONFIG.yaml] [--set key=value ...] [--seconds S]\n"
       "                         preflight under the job's launcher: every rank's host,\n"
       "                         device and threads, link speeds between hosts, a bucket\n"
       "                         all-reduce against raw MPI, same build and config",
       cmdDoctor},
  };
  return all;
}

Config configFrom(const Args& a, const char* help, const char* cmd) {
  if (a.positional.size() != 1) usage(concat("forge ", cmd, " takes exactly one CONFIG.yaml"), help);
  return loadConfig(a.positional[0], a.all("set"));
}

std::unique_ptr<dist::ProcessGroup> processGroupFor(int* argc, char*** argv, const Config& cfg, const char* command) {
  dist::ProcessGroupOptions o;
  o.command = command;
  o.device = cfg.run.device;
  o.backend = cfg.distributed.backend;
  o.timeoutS = cfg.distributed.timeoutS;
  o.watchdog = cfg.distributed.watchdog;
  o.threads = static_cast<int>(cfg.run.threads);
  o.needsCuda = cfg.run.precision == "fp16";
  o.needsCudaWhy = "run.precision fp16";
  o.needsCudaFix = "use precision: bf16 or fp32";
  o.deterministic = cfg.run.deterministic;
  return std::make_unique<dist::ProcessGroup>(argc, argv, o);
}

std::vector<dist::Fact> configFacts(const Config* cfg) {
  if (cfg == nullptr) return {{"the config", "(none)", ""}};
  return {{"the config (a hash of the resolved YAML; config.yaml in run.dir holds rank 0's)",
           hex64(fnv1a(cfg->resolved.data(), cfg->resolved.size())), cfg->resolved}};
}

void agreeOnConfig(dist::ProcessGroup& pg, const Config* cfg) {
  dist::checkRanksAgree(pg.mpi(), configFacts(cfg));
  pg.mpi().setSleepWhileWaiting(cfg == nullptr || cfg->distributed.wait == "sleep");
}

int runGuarded(dist::ProcessGroup& pg, const std::function<int()>& body) {
  // A progress bar must not outlive the run, nor sit under its last words: cleared as the
  // body is left, before any handler prints.
  struct ClearStatus {
    ~ClearStatus() { log::clearStatus(); }
  };
  const bool many = pg.world().size > 1;
  try {
    ClearStatus clear;
    return body();
  } catch (const Preempted& e) {
    // Every rank agreed and rank 0 has saved: a clean stop, not an abort.
    log::info("train", e.what());
    return e.exitCode();
  } catch (const CommTimeout& e) {
    log::error("", e.what());
    // Rank 0 says which rank held the job up, then ends it (exit 3).
    if (many) pg.watchdog().timedOut(e.what());
    return e.exitCode();
  } catch (const Error& e) {
    log::error("", e.what());
    if (many) pg.comm().abort(e.exitCode());
    return e.exitCode();
  } catch (const c10::Error& e) {
    std::string what = e.what_without_backtrace();
    log::error("", "torch error: ", what.substr(0, what.find('\n')));
    if (many) pg.comm().abort(1);
    return 1;
  } catch (const std::exception& e) {
    log::error("", "error: ", e.what());
    if (many) pg.comm().abort(1);
    return 1;
  }
}

}  // namespace forge::train
