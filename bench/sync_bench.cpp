// Side-by-side benchmarks of forge's gradient synchronizer, run under mpirun:
//
//   sync_bench loop --model mlp|wide [--steps S] [--batch B] [--rounds R] [--watchdog 0|1]
//       forge's training step (GradientSynchronizer: buckets, overlap, buffer broadcast)
//       against a minimal hand-written LibTorch + MPI loop with one blocking MPI_Allreduce
//       per parameter, same model, data and optimizer, alternating in rounds. With
//       --watchdog 1 forge's side also keeps its rank record as the trainer does (phases,
//       collectives) and runs the hang watchdog thread (distributed/watchdog.h).
//   sync_bench verify --model mlp|wide [--rounds R]
//       the replica check (distributed.verify_every_steps) against one training step.
//   sync_bench allreduce [--mib M] [--rounds R]
//       the synchronizer's bucketed all-reduce of an M MiB gradient set against one
//       MPI_Allreduce of the same bytes, as bus bandwidth 2(n-1)/n * bytes / time.
//
// Rank 0 prints one line per measurement and a final "ratio" line.
#include <mpi.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>

#include "distributed/gradient_synchronizer.h"
#include "distributed/mpi/mpi_communicator.h"
#include "distributed/mpi_runtime.h"
#include "distributed/rank_status.h"
#include "distributed/replicas.h"
#include "distributed/watchdog.h"
#include "distributed/world.h"
#include "trainer/spec/registry.h"

namespace {

using forge::dist::Clock;

double seconds(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Args {
  std::map<std::string, std::string> kv;
  std::string get(const std::string& k, const std::string& d) const {
    auto it = kv.find(k);
    return it == kv.end() ? d : it->second;
  }
};

struct Net {
  std::shared_ptr<torch::nn::Module> module;
  std::function<at::Tensor(const at::Tensor&)> forward;
  int64_t in = 0, classes = 0;
};

Net makeNet(const std::string& name) {
  torch::manual_seed(0);
  if (name == "mlp") {
    forge::ModelHandle m = forge::makeModel("mlp", {{"dropout", 0.3}});
    return {m.module, [m](const at::Tensor& x) { return m.forward({x, at::Tensor()}); }, 784, 10};
  }
  // Communication-heavy: 25.2M parameters, little compute per byte of gradient.
  auto s = std::make_shared<torch::nn::SequentialImpl>(torch::nn::Linear(1024, 4096), torch::nn::Functional(torch::relu),
                                                       torch::nn::Linear(4096, 4096), torch::nn::Functional(torch::relu),
                                                       torch::nn::Linear(4096, 1024));
  return {s, [s](const at::Tensor& x) { return s->forward(x); }, 1024, 1024};
}

int runLoop(forge::dist::MpiCommunicator& comm, const Args& a) {
  const std::string model = a.get("model", "mlp");
  const int steps = std::stoi(a.get("steps", model == "mlp" ? "300" : "8"));
  const int64_t batch = std::stoll(a.get("batch", model == "mlp" ? "64" : "32"));
  const int rounds = std::stoi(a.get("rounds", "3"));
  const int W = comm.size();

  Net fnet = makeNet(model), hnet = makeNet(model);
  forge::dist::SyncOptions options;
  options.overlap = a.get("overlap", "1") == "1";
  forge::dist::GradientSynchronizer sync(fnet.module, comm, options);
  sync.broadcastState();
  torch::optim::SGD fopt(fnet.module->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  torch::optim::SGD hopt(hnet.module->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  at::Tensor x = at::randn({batch, fnet.in});
  at::Tensor y = at::randint(0, fnet.classes, {batch});
  int64_t paramCount = 0;
  for (auto& p : fnet.module->parameters()) paramCount += p.numel();

  const bool buffers = a.get("buffers", "1") == "1";
  auto& status = forge::dist::rankStatus();
  int64_t step = 0;
  auto forgeStep = [&] {
    status.setStep(1, step++);
    status.enterPhase(forge::dist::Phase::kDataWait);
    sync.zeroGrad();
    sync.beforeForward();
    status.enterPhase(forge::dist::Phase::kForward);
    at::Tensor loss = torch::nn::functional::cross_entropy(fnet.forward(x), y);
    if (buffers) sync.afterForward();
    status.enterPhase(forge::dist::Phase::kBackward);
    sync.backward(loss);
    status.enterPhase(forge::dist::Phase::kOptimizer);
    fopt.step();
    status.enterPhase(forge::dist::Phase::kBetweenSteps);
  };
  auto handStep = [&] {
    hopt.zero_grad();
    torch::nn::functional::cross_entropy(hnet.forward(x), y).backward();
    for (auto& p : hnet.module->parameters()) {
      at::Tensor g = p.grad();
      MPI_Allreduce(MPI_IN_PLACE, g.data_ptr(), static_cast<int>(g.numel()), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      g.div_(W);
    }
    hopt.step();
  };
  auto timeSteps = [&](const std::function<void()>& step) {
    comm.barrier();
    auto t = Clock::now();
    for (int i = 0; i < steps; ++i) step();
    comm.barrier();
    return steps * batch * W / seconds(t);
  };
  for (int i = 0; i < 3; ++i) {
    forgeStep();
    handStep();
  }
  std::vector<double> f, h;
  for (int r = 0; r < rounds; ++r) {
    f.push_back(timeSteps(forgeStep));
    h.push_back(timeSteps(handStep));
    if (comm.rank() == 0) {
      std::printf("round %d  forge %.0f samples/s  hand-written %.0f samples/s\n", r + 1, f.back(), h.back());
    }
  }
  if (comm.rank() == 0) {
    std::printf("loop model=%s params=%lld ranks=%d batch/rank=%lld threads/rank=%d buckets=%zu overlap=%d watchdog=%s  "
                "forge %.0f  hand-written %.0f samples/s (medians of %d rounds)\nratio forge/hand-written = %.3f\n",
                model.c_str(), static_cast<long long>(paramCount), W, static_cast<long long>(batch),
                at::get_num_threads(), sync.bucketLayout().size(), options.overlap ? 1 : 0,
                a.get("watchdog", "0").c_str(), median(f), median(h), rounds, median(f) / median(h));
  }
  return 0;
}

// A module that is just `count` parameters of `elements` floats; backward of sum(p) fills
// every gradient with ones, the cheapest backward there is.
struct Flat : torch::nn::Module {
  Flat(int count, int64_t elements) {
    for (int i = 0; i < count; ++i) params.push_back(register_parameter("p" + std::to_string(i), at::zeros({elements})));
  }
  at::Tensor loss() {
    at::Tensor s = params[0].sum();
    for (size_t i = 1; i < params.size(); ++i) s = s + params[i].sum();
    return s;
  }
  std::vector<at::Tensor> params;
};

// The replica check (distributed.verify_every_steps) against a training step of the same
// model: what turning it on every N steps costs.
int runVerify(forge::dist::MpiCommunicator& comm, const Args& a) {
  const std::string model = a.get("model", "wide");
  const int64_t batch = std::stoll(a.get("batch", model == "mlp" ? "64" : "32"));
  const int rounds = std::stoi(a.get("rounds", "10"));
  Net net = makeNet(model);
  forge::dist::GradientSynchronizer sync(net.module, comm);
  sync.broadcastState();
  torch::optim::SGD opt(net.module->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  at::Tensor x = at::randn({batch, net.in});
  at::Tensor y = at::randint(0, net.classes, {batch});
  auto step = [&] {
    sync.zeroGrad();
    sync.beforeForward();
    at::Tensor loss = torch::nn::functional::cross_entropy(net.forward(x), y);
    sync.afterForward();
    sync.backward(loss);
    opt.step();
  };
  std::vector<double> steps, checks;
  for (int r = 0; r < rounds + 1; ++r) {
    comm.barrier();
    auto t = Clock::now();
    step();
    comm.barrier();
    const double s = seconds(t);
    t = Clock::now();
    forge::dist::checkReplicasAgree(*net.module, comm, false, "in the benchmark");
    comm.barrier();
    if (r > 0) {  // the first round warms up
      steps.push_back(s);
      checks.push_back(seconds(t));
    }
  }
  if (comm.rank() == 0) {
    const double st = median(steps), ck = median(checks);
    std::printf("verify model=%s ranks=%d: step %.2f ms, replica check %.2f ms (medians of %d)\n"
                "check / step = %.3f; every 100 steps: %.2f%% of training time\n",
                model.c_str(), comm.size(), 1e3 * st, 1e3 * ck, rounds, ck / st, 100 * ck / (100 * st + ck));
  }
  return 0;
}

int runAllReduce(forge::dist::MpiCommunicator& comm, const Args& a) {
  const double mib = std::stod(a.get("mib", "50"));
  const int rounds = std::stoi(a.get("rounds", "10"));
  const int count = std::stoi(a.get("tensors", "50"));
  const int64_t elements = static_cast<int64_t>(mib * (1 << 20) / 4 / count);
  const double bytes = 4.0 * elements * count;
  const int W = comm.size();
  auto flat = std::make_shared<Flat>(count, elements);
  forge::dist::SyncOptions options;
  // Without overlap, (backward + sync) - backward is the synchronizer's whole cost.
  options.overlap = a.get("overlap", "0") == "1";
  options.bucketCapBytes = static_cast<size_t>(std::stod(a.get("bucket_mb", "25")) * (1 << 20));
  forge::dist::GradientSynchronizer sync(flat, comm, options);
  sync.broadcastState();
  at::Tensor raw = at::ones({elements * count});

  // Returns the seconds finishBackward() took after backward returned: without overlap
  // that is all the synchronizer's communication (launch, all-reduce, wait).
  auto syncedBackward = [&] {
    // Timed from the last gradient's arrival, i.e. the end of backward.
    sync.zeroGrad();
    sync.backward(flat->loss());
    return std::chrono::duration<double>(Clock::now() - sync.lastTimeline().lastGradientReady).count();
  };
  std::vector<double> tSync, tRaw;
  for (int r = 0; r < rounds + 2; ++r) {
    comm.barrier();
    double s = syncedBackward();
    comm.barrier();
    auto t = Clock::now();
    MPI_Allreduce(MPI_IN_PLACE, raw.data_ptr(), static_cast<int>(raw.numel()), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    double w = seconds(t);
    if (r >= 2) {  // the first rounds warm up buffers and MPI's connections
      tSync.push_back(s);
      tRaw.push_back(w);
    }
  }
  // Slowest rank decides.
  double med[2] = {median(tSync), median(tRaw)};
  MPI_Allreduce(MPI_IN_PLACE, med, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  double factor = 2.0 * (W - 1) / W;
  if (comm.rank() == 0) {
    std::printf("allreduce %.1f MiB in %d tensors, %d ranks, %zu buckets, overlap=%d: synchronizer %.2f ms, one "
                "MPI_Allreduce %.2f ms (medians of %d)\n",
                bytes / (1 << 20), count, W, sync.bucketLayout().size(), options.overlap ? 1 : 0, med[0] * 1e3,
                med[1] * 1e3, rounds);
    std::printf("busbw forge %.2f GB/s  raw MPI_Allreduce %.2f GB/s\nratio forge/raw = %.3f\n",
                factor * bytes / med[0] / 1e9, factor * bytes / med[1] / 1e9, med[1] / med[0]);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  forge::dist::MpiRuntime mpi(&argc, &argv);
  if (argc < 2) {
    std::fprintf(stderr, "usage: sync_bench loop|allreduce [--key value ...]\n");
    return 2;
  }
  Args a;
  for (int i = 2; i + 1 < argc; i += 2) a.kv[std::string(argv[i]).substr(2)] = argv[i + 1];
  auto world = forge::dist::discoverWorld();
  at::set_num_threads(std::max(1, forge::dist::coresOnNode() / world.localSize));
  int rc;
  {
    forge::dist::MpiCommunicator comm(MPI_COMM_WORLD, std::chrono::seconds(300));
    std::unique_ptr<forge::dist::Watchdog> watchdog;
    if (a.get("watchdog", "0") == "1") {
      forge::dist::setStatusIdentity(world.rank);
      comm.reportTo(&forge::dist::rankStatus());
      watchdog = std::make_unique<forge::dist::Watchdog>(MPI_COMM_WORLD, 300.0);
    }
    std::string mode = argv[1];
    rc = mode == "loop"        ? runLoop(comm, a)
         : mode == "allreduce" ? runAllReduce(comm, a)
         : mode == "verify"    ? runVerify(comm, a)
                               : 2;
  }
  return rc;
}
