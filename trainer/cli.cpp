#include "trainer/cli.h"

#include <torch/torch.h>

#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <map>
#include <set>

#include "checkpoint/checkpoint.h"
#include "checkpoint/python_state_dict.h"
#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "core/table.h"
#include "data/converters.h"
#include "distributed/device.h"
#include "distributed/mpi/mpi_communicator.h"
#ifdef FORGE_WITH_NCCL
#include "distributed/nccl/nccl_communicator.h"
#endif
#include "distributed/mpi_runtime.h"
#include "distributed/world.h"
#include "trainer/guards.h"
#include "trainer/models/model_registry.h"
#include "trainer/plot.h"
#include "trainer/preemption.h"
#include "trainer/trainer.h"

namespace forge::train {
namespace {

const char* kMainHelp = R"(forge: data-parallel training of PyTorch-style models from C++

usage: forge <command> [options]

commands:
  data fashion-mnist --out FILE.h5 [--source DIR]
                         convert Fashion-MNIST (idx files) to forge's HDF5 layout
  data synthetic --out FILE.h5 --samples N --features D --classes C [--seed S]
                         write a learnable synthetic classification set
  data from-npy --out FILE.h5 --train-features X.npy --train-labels Y.npy [...]
                         NumPy arrays into forge's HDF5 layout
  train CONFIG.yaml [--set key=value ...] [--resume auto|PATH]
                         train; alone, under `mpirun -np N`, or under `srun`
  eval CONFIG.yaml --checkpoint PATH [--set key=value ...] [--json]
                         eval-split loss and accuracy of a checkpoint, per class
  ckpt inspect PATH [--json]
                         what a checkpoint holds
  plot RUN_DIR... [--out FILE.png] [--title TEXT] [--size WxH]
                         loss, accuracy, learning rate and throughput curves of
                         one run or several side by side, as a PNG (gnuplot)

`forge <command> --help` describes a command's options.
Exit codes: 0 done, 1 internal error, 2 bad config / data / usage, 3 communication
failure or timeout, 4 checkpoint error, 75 preempted (SIGUSR1 / SIGTERM): saved, please
requeue and resume with --resume auto.
)";

const char* kDataHelp = R"(usage:
  forge data fashion-mnist --out FILE.h5 [--source DIR]
      Reads the four Fashion-MNIST idx files (gzipped or not) from DIR (default: the
      folder of Debian's dataset-fashion-mnist package, /usr/share/datasets/fashion-mnist)
      and writes train/features (60000 x 784 uint8), train/labels (int64) and the same
      under test/ (10000 samples).
  forge data synthetic --out FILE.h5 --samples N --features D --classes C [--seed S]
      Writes N training samples (and N/5 test samples) of D float32 features drawn
      around one random centre per class; a model can learn it. Default seed 0.
      Streams block by block, so files far larger than memory can be made.
  forge data from-npy --out FILE.h5 --train-features X.npy --train-labels Y.npy
                      [--test-features X.npy --test-labels Y.npy]
      NumPy arrays into the layout: features N x D... (uint8, float32 or float64; any
      sample shape, e.g. N x C x H x W), labels N (any integer type, stored as int64).
Files are written in chunks of about 1 MiB (what streaming reads), to a temporary file
that is renamed into place.
)";

const char* kTrainHelp = R"(usage: forge train CONFIG.yaml [--set key=value ...] [--resume auto|PATH]

  CONFIG.yaml        the run's config (see configs/fashion_mnist_mlp.yaml)
  --set key=value    override a config key by its dotted path, e.g. --set run.epochs=2
                     --set optimizer.lr=0.01 (repeatable; the value is parsed as YAML)
  --resume auto      continue from the newest checkpoint in RUN_DIR/checkpoints that
                     verifies (fresh start when there is none)
  --resume PATH      continue from that checkpoint

Runs alone (1 rank), under `mpirun -np N forge train ...`, or under `srun`.
Writes, in RUN_DIR (run.dir):
  config.yaml      the config as resolved (file + overrides)
  forge.log        what rank 0 printed (sessions of a resumed run follow each other)
  metrics.jsonl    a "step" record every log.every_steps steps and an "epoch" record
                   per epoch: losses, accuracies, lr, samples/s, data-wait and
                   communication shares; metrics.csv holds the same rows
  tb/              the same as TensorBoard scalars: tensorboard --logdir runs/
  summary.json     the end-of-run summary
  checkpoints/     ckpt-e<epoch>-s<global step>.pt and best.pt
Progress (log.progress): a live bar on a terminal, a plain line every log.every_s
seconds otherwise (log files); `forge plot RUN_DIR` draws the curves.
)";

const char* kEvalHelp = R"(usage: forge eval CONFIG.yaml --checkpoint PATH [--set key=value ...] [--json]

Loads the model state of PATH (a forge checkpoint, or a state dict saved by Python with
torch.save(model.state_dict(), PATH)) into the model the config describes and reports loss
and accuracy on the config's eval split (data.eval_split, default "test"), overall and per
class. --json prints the same as one JSON object.
)";

const char* kCkptHelp = R"(usage: forge ckpt inspect PATH [--json]

Prints the checkpoint's epoch, step, best metric, world size, forge version, LR schedule
and sampler position, and the name, shape, type and size of every tensor it holds. The
file is verified (checksum) first. --json prints the same as one JSON object.
)";

const char* kPlotHelp = R"(usage: forge plot RUN_DIR... [--out FILE.png] [--title TEXT] [--size WxH]

Draws the curves of one run, or of several runs in one picture (one colour per run), from
each RUN_DIR/metrics.csv: loss and accuracy per epoch (train solid, eval dashed; the
training loss of the step records faint behind), learning rate and samples/s.
  --out FILE.png   default: RUN_DIR/curves.png for one run, ./curves.png for several
                   (its folder is created when missing)
  --title TEXT     default: the run names
  --size WxH       pixels, default 1600x1000
Needs gnuplot with the pngcairo terminal (Debian: gnuplot-nox).
)";

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::vector<std::string>> options;
  bool help = false;

  bool has(const std::string& k) const { return options.count(k) > 0; }
  std::string one(const std::string& k, const std::string& fallback = "") const {
    auto it = options.find(k);
    return it == options.end() ? fallback : it->second.back();
  }
};

[[noreturn]] void usage(const std::string& msg, const char* help) {
  throw ConfigError(concat("usage error: ", msg, "\n", help));
}

// Parses "--key value", "--key=value" and flags; rejects options the command does not take.
Args parseArgs(int argc, char** argv, int first, const std::set<std::string>& valued,
               const std::set<std::string>& flags, const char* help) {
  Args a;
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      a.help = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0) {
      a.positional.push_back(arg);
      continue;
    }
    std::string key = arg.substr(2), value;
    bool inlineValue = false;
    if (auto eq = key.find('='); eq != std::string::npos && valued.count(key.substr(0, eq))) {
      value = key.substr(eq + 1);
      key = key.substr(0, eq);
      inlineValue = true;
    }
    if (flags.count(key)) {
      a.options[key].push_back("1");
    } else if (valued.count(key)) {
      if (!inlineValue) {
        if (i + 1 >= argc) usage(concat("option --", key, " needs a value"), help);
        value = argv[++i];
      }
      a.options[key].push_back(value);
    } else {
      std::vector<std::string> all(valued.begin(), valued.end());
      all.insert(all.end(), flags.begin(), flags.end());
      std::string hint = nearest(key, all);
      usage(concat("unknown option --", key, hint.empty() ? "" : concat(" (did you mean --", hint, "?)")), help);
    }
  }
  return a;
}

int64_t parseInt(const std::string& text, const std::string& option) {
  try {
    size_t used = 0;
    long long v = std::stoll(text, &used);
    if (used == text.size()) return v;
  } catch (const std::exception&) {
  }
  throw ConfigError(concat("usage error: --", option, " must be an integer, got '", text, "'"));
}

int cmdData(int argc, char** argv) {
  if (argc < 3 || std::string(argv[2]) == "--help" || std::string(argv[2]) == "-h") {
    std::cout << kDataHelp;
    return argc < 3 ? 2 : 0;
  }
  std::string kind = argv[2];
  if (kind == "fashion-mnist") {
    Args a = parseArgs(argc, argv, 3, {"out", "source"}, {}, kDataHelp);
    if (a.help) return std::cout << kDataHelp, 0;
    if (!a.has("out")) usage("forge data fashion-mnist needs --out FILE.h5", kDataHelp);
    std::string source = a.one("source", data::kFashionMnistDebianDir);
    log::info("data", "converting Fashion-MNIST from ", source, " ...");
    data::convertFashionMnist(source, a.one("out"));
    log::info("data", "wrote ", a.one("out"), " (train: 60,000 x 784 uint8, test: 10,000 x 784 uint8)");
    return 0;
  }
  if (kind == "synthetic") {
    Args a = parseArgs(argc, argv, 3, {"out", "samples", "features", "classes", "seed"}, {}, kDataHelp);
    if (a.help) return std::cout << kDataHelp, 0;
    for (const char* req : {"out", "samples", "features", "classes"}) {
      if (!a.has(req)) usage(concat("forge data synthetic needs --", req), kDataHelp);
    }
    data::SyntheticSpec spec;
    spec.samples = parseInt(a.one("samples"), "samples");
    spec.features = parseInt(a.one("features"), "features");
    spec.classes = parseInt(a.one("classes"), "classes");
    spec.seed = static_cast<uint64_t>(parseInt(a.one("seed", "0"), "seed"));
    auto lastReport = std::chrono::steady_clock::now();
    spec.progress = [&](const std::string& split, int64_t done, int64_t total) {
      auto now = std::chrono::steady_clock::now();
      if (done < total && now - lastReport < std::chrono::seconds(5)) return;
      lastReport = now;
      log::info("data", split, ": ", withThousands(done), " / ", withThousands(total), " samples written");
    };
    data::writeSynthetic(spec, a.one("out"));
    log::info("data", "wrote ", a.one("out"), " (", withThousands(spec.samples), " train and ",
              withThousands(std::max<int64_t>(1, spec.samples / 5)), " test samples, ", spec.features, " features, ",
              spec.classes, " classes)");
    return 0;
  }
  if (kind == "from-npy") {
    Args a = parseArgs(argc, argv, 3, {"out", "train-features", "train-labels", "test-features", "test-labels"}, {},
                       kDataHelp);
    if (a.help) return std::cout << kDataHelp, 0;
    for (const char* req : {"out", "train-features", "train-labels"}) {
      if (!a.has(req)) usage(concat("forge data from-npy needs --", req), kDataHelp);
    }
    if (a.has("test-features") != a.has("test-labels")) {
      usage("forge data from-npy: --test-features and --test-labels go together", kDataHelp);
    }
    std::vector<data::NpySplit> splits{{"train", a.one("train-features"), a.one("train-labels")}};
    if (a.has("test-features")) splits.push_back({"test", a.one("test-features"), a.one("test-labels")});
    data::convertNpy(splits, a.one("out"));
    log::info("data", "wrote ", a.one("out"), " (", splits.size(), " split(s))");
    return 0;
  }
  std::string hint = nearest(kind, {"fashion-mnist", "synthetic", "from-npy"});
  usage(concat("unknown data source '", kind, "'", hint.empty() ? "" : concat(" (did you mean '", hint, "'?)")), kDataHelp);
}

// Runs `setup` on every rank, then agrees: if any rank failed, every rank stops with exit
// code 2 (the failing ranks with their own message) instead of leaving peers in a collective.
template <typename Setup>
void agreeOnSetup(dist::Communicator& comm, Setup setup) {
  std::exception_ptr failure;
  try {
    setup();
  } catch (...) {
    failure = std::current_exception();
  }
  bool anyFailed = comm.anyRank(failure != nullptr);
  if (failure) std::rethrow_exception(failure);
  if (anyFailed) throw ConfigError("stopping: another rank failed during setup (its message says why)");
}

// Everything a multi-rank command needs: MPI, who we are, where we compute, a communicator,
// threads. The MPI communicator always exists (control values, and the bootstrap of NCCL);
// `comm` is the one training uses: NCCL on GPUs, MPI on CPUs.
struct Distributed {
  dist::MpiRuntime mpi;
  dist::WorldInfo world;
  std::unique_ptr<dist::MpiCommunicator> mpiComm;
  std::unique_ptr<dist::Communicator> ncclComm;
  dist::Communicator* comm = nullptr;
  c10::Device device{c10::kCPU};

  Distributed(int* argc, char*** argv, const Config& cfg) : mpi(argc, argv) {
    world = dist::discoverWorld();
    log::setRank(world.rank, world.size);
    auto timeout = std::chrono::duration<double>(cfg.distributed.timeoutS);
    mpiComm = std::make_unique<dist::MpiCommunicator>(MPI_COMM_WORLD, timeout);
    comm = mpiComm.get();
    std::string backend;
    std::string why;
    const bool boundPerRank = cfg.run.device != "cpu" && dist::gpusBoundPerRank(*mpiComm);
    agreeOnSetup(*mpiComm, [&] {
      dist::DeviceChoice choice = dist::selectDevice(cfg.run.device, world, boundPerRank);
      device = choice.device;
      why = choice.why;
      backend = cfg.distributed.backend;
      if (backend == "auto") backend = device.is_cuda() && dist::builtWithNccl() ? "nccl" : "mpi";
      if (backend == "nccl" && !dist::builtWithNccl()) {
        throw ConfigError("distributed.backend is nccl, but this forge was built without NCCL (configure with "
                          "-DFORGE_WITH_NCCL=ON against a CUDA LibTorch); use backend: mpi on CPUs");
      }
      if (backend == "nccl" && !device.is_cuda()) {
        throw ConfigError(concat("distributed.backend is nccl, which works on CUDA tensors, but this rank computes "
                                 "on the CPU (", why.empty() ? "run.device: cpu" : why, "): use backend: mpi or auto"));
      }
      if (backend == "mpi" && device.is_cuda()) {
        throw ConfigError("distributed.backend is mpi, which works on CPU tensors, but run.device is cuda: use "
                          "backend: nccl (or auto)");
      }
      if (cfg.run.precision == "bf16" && !device.is_cuda()) {
        throw ConfigError(concat("run.precision bf16 is GPU-only, but this rank computes on the CPU (",
                                 why.empty() ? "run.device: cpu" : why, "): use precision: fp32"));
      }
    });
#ifdef FORGE_WITH_NCCL
    if (backend == "nccl") {
      agreeOnSetup(*mpiComm, [&] { ncclComm = std::make_unique<dist::NcclCommunicator>(*mpiComm, device, timeout); });
      comm = ncclComm.get();
    }
#endif
    int n = threadsPerRank(cfg.run.threads, world);
    at::set_num_threads(n);
    std::string backendText = backend;
#ifdef FORGE_WITH_NCCL
    if (backend == "nccl") backendText += " " + dist::NcclCommunicator::ncclVersion() + " (control values over mpi)";
#endif
    log::info("dist", world.size, " rank(s) on ", world.nodes, " node(s), ", world.localSize,
              " per node, backend ", backendText, ", ", n, " intra-op thread(s) per rank, launcher ",
              world.launcher, launcherDetail());
    logDeviceMap(why);
  }

  // What the launcher told this process, as the launcher spells it (rank 0's view).
  static std::string launcherDetail() {
    std::string out;
    for (const char* name : {"SLURM_JOB_ID", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS", "SLURM_RESTART_COUNT",
                             "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_SIZE"}) {
      if (const char* v = std::getenv(name)) out += concat(out.empty() ? " (" : ", ", name, "=", v);
    }
    return out.empty() ? out : out + ")";
  }

  // Once, from rank 0: every rank's node, local rank and device.
  void logDeviceMap(const std::string& why) {
    constexpr int64_t kWidth = 96;
    char host[64] = {0};
    gethostname(host, sizeof host - 1);
    std::string mine = concat(host, " local ", world.localRank, " -> ", dist::describeDevice(device));
    at::Tensor in = at::zeros({kWidth}, at::kByte);
    std::memcpy(in.data_ptr(), mine.data(), std::min<size_t>(mine.size(), kWidth - 1));
    at::Tensor all = at::zeros({kWidth * world.size}, at::kByte);
    mpiComm->allGather(in, all);
    if (world.rank != 0) return;
    std::string map;
    for (int r = 0; r < world.size; ++r) {
      map += concat(r ? "; " : "", "rank ", r, ": ",
                    std::string(static_cast<const char*>(all.data_ptr()) + r * kWidth));
    }
    log::info("dist", "devices: ", map, why.empty() ? "" : concat(" (run.device auto chose the CPU: ", why, ")"));
  }
};

// Errors after setup may hit one rank only; the whole job must end, not wait for it.
template <typename Body>
int orAbortJob(Distributed& d, Body body) {
  // A progress bar must not outlive the run, nor sit under its last words: cleared as the
  // body is left, before any handler prints.
  struct ClearStatus {
    ~ClearStatus() { log::clearStatus(); }
  };
  try {
    ClearStatus clear;
    return body();
  } catch (const Preempted& e) {
    // Every rank agreed and rank 0 has saved: a clean stop, not an abort.
    log::info("train", e.what());
    return e.exitCode();
  } catch (const Error& e) {
    log::error("", e.what());
    if (d.world.size > 1) d.comm->abort(e.exitCode());
    return e.exitCode();
  } catch (const c10::Error& e) {
    std::string what = e.what_without_backtrace();
    log::error("", "torch error: ", what.substr(0, what.find('\n')));
    if (d.world.size > 1) d.comm->abort(1);
    return 1;
  } catch (const std::exception& e) {
    log::error("", "error: ", e.what());
    if (d.world.size > 1) d.comm->abort(1);
    return 1;
  }
}

Config configFrom(const Args& a, const char* help, const char* cmd) {
  if (a.positional.size() != 1) usage(concat("forge ", cmd, " takes exactly one CONFIG.yaml"), help);
  return loadConfig(a.positional[0], a.options.count("set") ? a.options.at("set") : std::vector<std::string>{});
}

int cmdTrain(int argc, char** argv) {
  Args a = parseArgs(argc, argv, 2, {"set", "resume"}, {}, kTrainHelp);
  if (a.help) return std::cout << kTrainHelp, 0;
  Config cfg = configFrom(a, kTrainHelp, "train");
  std::string resume = a.one("resume");
  Distributed d(&argc, &argv, cfg);
  std::unique_ptr<Trainer> trainer;
  installPreemptionHandlers();
  agreeOnSetup(*d.comm, [&] { trainer = std::make_unique<Trainer>(cfg, *d.comm, d.world, resume, d.device); });
  return orAbortJob(d, [&] {
    trainer->run();
    return 0;
  });
}

int cmdEval(int argc, char** argv) {
  Args a = parseArgs(argc, argv, 2, {"set", "checkpoint"}, {"json"}, kEvalHelp);
  if (a.help) return std::cout << kEvalHelp, 0;
  Config cfg = configFrom(a, kEvalHelp, "eval");
  if (!a.has("checkpoint")) usage("forge eval needs --checkpoint PATH", kEvalHelp);
  if (a.has("json")) log::infoToStderr();  // stdout holds the JSON alone
  Distributed d(&argc, &argv, cfg);
  std::unique_ptr<data::SplitSource> split;
  std::shared_ptr<Model> model;
  agreeOnSetup(*d.comm, [&] {
    split = std::make_unique<data::SplitSource>(data::SourceSpec{cfg.data.paths, cfg.data.evalSplit, cfg.data.features, cfg.data.labels,
                             cfg.model.numClasses});
    model = makeModel(cfg.model);
    // A forge checkpoint, or a state dict Python saved with torch.save(model.state_dict()).
    loadModelStateDict(*model, ckpt::loadModelState(a.one("checkpoint")), a.one("checkpoint"));
    model->to(d.device);
  });
  return orAbortJob(d, [&] {
    data::Normalization norm{cfg.data.normalize.scale, cfg.data.normalize.mean, cfg.data.normalize.std};
    if (cfg.data.normalize.stats == "auto") {
      // The statistics training computed and kept in the run dir.
      std::string stats = (std::filesystem::path(cfg.run.dir) / "feature_stats.h5").string();
      if (!std::filesystem::exists(stats)) {
        throw DataError(concat("data.normalize.stats is auto, but ", stats, " does not exist: evaluate with the "
                               "run.dir of the training run that computed it"));
      }
      data::readFeatureStats(stats, norm.mean, norm.std);
    }
    EvalResult r = evaluate(*model, *split, norm, cfg.data.evalBatchSize, *d.comm, d.device);
    if (d.world.rank != 0) return 0;
    if (a.has("json")) {
      std::string classes;
      for (size_t c = 0; c < r.classSamples.size(); ++c) {
        classes += concat(c ? ", " : "", "{\"class\": ", c, ", \"samples\": ", r.classSamples[c], ", \"correct\": ",
                          r.classCorrect[c], ", \"accuracy\": ",
                          jsonNumber(r.classSamples[c] ? double(r.classCorrect[c]) / r.classSamples[c] : NAN), "}");
      }
      std::cout << "{\"checkpoint\": " << jsonQuote(a.one("checkpoint")) << ", \"split\": " << jsonQuote(split->name())
                << ", \"samples\": " << r.samples << ", \"loss\": " << jsonNumber(r.loss)
                << ", \"accuracy\": " << jsonNumber(r.accuracy) << ", \"classes\": [" << classes << "]}\n";
      return 0;
    }
    char loss[32], acc[32];
    std::snprintf(loss, sizeof loss, "%.4f", r.loss);
    std::snprintf(acc, sizeof acc, "%.2f%%", 100.0 * r.accuracy);
    std::cout << Table({"", ""})
                     .row({"checkpoint", a.one("checkpoint")})
                     .row({"split", split->name()})
                     .row({"samples", withThousands(r.samples)})
                     .row({"loss", loss})
                     .row({"accuracy", acc})
                     .str()
              << "\n";
    using A = Table::Align;
    Table perClass({"class", "samples", "correct", "accuracy"}, {A::kRight, A::kRight, A::kRight, A::kRight});
    for (size_t c = 0; c < r.classSamples.size(); ++c) {
      std::snprintf(acc, sizeof acc, "%.2f%%", r.classSamples[c] ? 100.0 * r.classCorrect[c] / r.classSamples[c] : 0.0);
      perClass.row({std::to_string(c), withThousands(r.classSamples[c]), withThousands(r.classCorrect[c]),
                    r.classSamples[c] ? acc : "-"});
    }
    std::cout << perClass.str();
    return 0;
  });
}

int cmdCkpt(int argc, char** argv) {
  if (argc < 3 || std::string(argv[2]) == "--help" || std::string(argv[2]) == "-h") {
    std::cout << kCkptHelp;
    return argc < 3 ? 2 : 0;
  }
  if (std::string(argv[2]) != "inspect") usage(concat("unknown ckpt command '", argv[2], "'"), kCkptHelp);
  Args a = parseArgs(argc, argv, 3, {}, {"json"}, kCkptHelp);
  if (a.help) return std::cout << kCkptHelp, 0;
  if (a.positional.size() != 1) usage("forge ckpt inspect takes one PATH", kCkptHelp);
  const std::string path = a.positional[0];
  ckpt::Checkpoint ck = ckpt::load(path);
  struct Row {
    std::string name;
    std::vector<int64_t> shape;
    std::string dtype;
    int64_t bytes;
  };
  std::vector<Row> rows;
  int64_t modelElements = 0, modelBytes = 0, optimizerBytes = 0;
  for (const auto& [name, t] : ck.modelState) {
    rows.push_back({"model_state_dict." + name, t.sizes().vec(), std::string(c10::toString(t.scalar_type())),
                    static_cast<int64_t>(t.nbytes())});
    modelElements += t.numel();
    modelBytes += t.nbytes();
  }
  if (ck.optimizerState.isGenericDict()) {
    auto d = ck.optimizerState.toGenericDict();
    if (d.contains("state")) {
      for (const auto& kv : d.at("state").toGenericDict()) {
        for (const auto& e : kv.value().toGenericDict()) {
          if (!e.value().isTensor()) continue;
          const at::Tensor& t = e.value().toTensor();
          rows.push_back({concat("optimizer_state_dict.state.", kv.key().toInt(), ".", e.key().toStringRef()),
                          t.sizes().vec(), std::string(c10::toString(t.scalar_type())), static_cast<int64_t>(t.nbytes())});
          optimizerBytes += t.nbytes();
        }
      }
    }
  }
  // The schedule and sampler dicts hold scalars: name -> printable value.
  auto scalars = [](const c10::IValue& v) {
    std::vector<std::pair<std::string, c10::IValue>> out;
    if (!v.isGenericDict()) return out;
    for (const auto& kv : v.toGenericDict()) out.emplace_back(kv.key().toStringRef(), kv.value());
    return out;
  };
  auto text = [](const c10::IValue& v) -> std::string {
    if (v.isString()) return v.toStringRef();
    if (v.isInt()) return std::to_string(v.toInt());
    if (v.isBool()) return v.toBool() ? "true" : "false";
    if (v.isDouble()) return jsonNumber(v.toDouble());
    std::ostringstream os;
    os << v;
    return os.str();
  };
  auto json = [&](const c10::IValue& v) -> std::string {
    if (v.isString()) return jsonQuote(v.toStringRef());
    if (v.isDouble()) return jsonNumber(v.toDouble());
    return text(v);
  };
  const auto schedule = scalars(ck.schedule);
  const auto sampler = scalars(ck.sampler);

  if (a.has("json")) {
    auto object = [&](const std::vector<std::pair<std::string, c10::IValue>>& kvs) {
      std::string o = "{";
      for (size_t i = 0; i < kvs.size(); ++i) o += concat(i ? ", " : "", jsonQuote(kvs[i].first), ": ", json(kvs[i].second));
      return o + "}";
    };
    std::cout << "{\"path\": " << jsonQuote(path) << ", \"epoch\": " << ck.epoch << ", \"step\": " << ck.step
              << ", \"global_step\": " << ck.globalStep << ", \"best_metric\": " << jsonNumber(ck.bestMetric)
              << ", \"best_metric_name\": " << jsonQuote(ck.bestMetricName) << ", \"world_size\": " << ck.worldSize
              << ", \"forge_version\": " << jsonQuote(ck.forgeVersion) << ", \"rng_states\": " << ck.rngStates.size()
              << ", \"lr_schedule\": " << object(schedule) << ", \"sampler\": " << object(sampler)
              << ", \"model_elements\": " << modelElements << ", \"model_bytes\": " << modelBytes
              << ", \"optimizer_bytes\": " << optimizerBytes << ", \"config\": " << jsonQuote(ck.config)
              << ", \"tensors\": [";
    for (size_t i = 0; i < rows.size(); ++i) {
      std::cout << (i ? ", " : "") << "{\"name\": " << jsonQuote(rows[i].name) << ", \"shape\": " << dimsText(rows[i].shape)
                << ", \"dtype\": " << jsonQuote(rows[i].dtype) << ", \"bytes\": " << rows[i].bytes << "}";
    }
    std::cout << "]}\n";
    return 0;
  }
  auto mib = [](int64_t bytes) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f MiB", bytes / 1048576.0);
    return std::string(buf);
  };
  Table head({"", ""});
  head.row({"checkpoint", path})
      .row({"epoch", concat(ck.epoch, " complete")})
      .row({"step", concat(ck.step, " in the next epoch (global step ", ck.globalStep, ")")})
      .row({"best metric", std::isnan(ck.bestMetric) ? std::string("none")
                                                     : concat(ck.bestMetricName, " = ", jsonNumber(ck.bestMetric))})
      .row({"world size", concat(ck.worldSize, " (", ck.rngStates.size(), " RNG state(s))")})
      .row({"forge", ck.forgeVersion})
      .row({"model", concat(withThousands(modelElements), " elements in ", ck.modelState.size(), " tensors, ",
                            mib(modelBytes))})
      .row({"optimizer", mib(optimizerBytes) + " of state"});
  auto joined = [&](const std::vector<std::pair<std::string, c10::IValue>>& kvs) {
    std::string line;
    for (const auto& [k, v] : kvs) line += concat(line.empty() ? "" : ", ", k, " ", text(v));
    return line;
  };
  if (!schedule.empty()) head.row({"lr schedule", joined(schedule)});
  if (!sampler.empty()) head.row({"sampler", joined(sampler)});
  std::cout << head.str() << "\n";
  using A = Table::Align;
  Table tensors({"tensor", "shape", "dtype", "bytes"}, {A::kLeft, A::kLeft, A::kLeft, A::kRight});
  for (const auto& r : rows) tensors.row({r.name, dimsText(r.shape), r.dtype, withThousands(r.bytes)});
  std::cout << tensors.str();
  return 0;
}

int cmdPlot(int argc, char** argv) {
  Args a = parseArgs(argc, argv, 2, {"out", "title", "size"}, {}, kPlotHelp);
  if (a.help || a.positional.empty()) {
    std::cout << kPlotHelp;
    return a.help ? 0 : 2;
  }
  PlotOptions o;
  o.runDirs = a.positional;
  o.title = a.one("title");
  o.out = a.one("out", o.runDirs.size() == 1 ? (std::filesystem::path(o.runDirs[0]) / "curves.png").string()
                                              : std::string("curves.png"));
  if (a.has("size")) {
    auto wh = split(a.one("size"), 'x');
    if (wh.size() != 2) usage(concat("--size takes WxH in pixels, e.g. 1600x1000, got '", a.one("size"), "'"), kPlotHelp);
    o.width = static_cast<int>(parseInt(wh[0], "size"));
    o.height = static_cast<int>(parseInt(wh[1], "size"));
    if (o.width < 200 || o.height < 150 || o.width > 10000 || o.height > 10000) {
      usage("--size must be between 200x150 and 10000x10000 pixels", kPlotHelp);
    }
  }
  plotRuns(o);
  std::cout << "wrote " << o.out << " (" << o.width << "x" << o.height << ", " << o.runDirs.size() << " run(s))\n";
  return 0;
}

}  // namespace

int runCli(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h" || std::string(argv[1]) == "help") {
    std::cout << kMainHelp;
    return argc < 2 ? 2 : 0;
  }
  if (std::string(argv[1]) == "--version") {
    std::cout << "forge " << FORGE_VERSION << "\n";
    return 0;
  }
  const std::string cmd = argv[1];
  if (cmd == "data") return cmdData(argc, argv);
  if (cmd == "train") return cmdTrain(argc, argv);
  if (cmd == "eval") return cmdEval(argc, argv);
  if (cmd == "ckpt") return cmdCkpt(argc, argv);
  if (cmd == "plot") return cmdPlot(argc, argv);
  std::string hint = nearest(cmd, {"data", "train", "eval", "ckpt", "plot"});
  usage(concat("unknown command '", cmd, "'", hint.empty() ? "" : concat(" (did you mean '", hint, "'?)")), kMainHelp);
}

}  // namespace forge::train
