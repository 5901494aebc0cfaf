// Checkpoint benchmarks, each against its baseline in the same run:
//   ckpt_bench [--dir DIR] [--params M]
//   - save throughput: forge's atomic save (stream, fsync, rename, fsync dir) of a model with
//     M million parameters plus its SGD momentum, against `dd ... conv=fsync` of as many
//     bytes to the same folder;
//   - training stall: what an asynchronous save costs the training thread (the in-memory
//     copy) against the whole synchronous save.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "checkpoint/async_saver.h"
#include "checkpoint/checkpoint.h"
#include "trainer/config.h"
#include "trainer/optim.h"

namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
}  // namespace

int main(int argc, char** argv) {
  std::string dir = "runs/bench_ckpt";
  double millions = 25;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--dir") dir = argv[i + 1];
    if (k == "--params") millions = std::stod(argv[i + 1]);
  }
  std::filesystem::create_directories(dir);
  // A wide MLP's worth of parameters in 4 tensors, and one SGD step for momentum buffers.
  int64_t side = static_cast<int64_t>(std::sqrt(millions * 1e6 / 2));
  torch::nn::Sequential model(torch::nn::Linear(side, side), torch::nn::Linear(side, side));
  forge::train::OptimizerConfig oc;
  oc.momentum = 0.9;
  auto params = model->parameters();
  auto opt = forge::train::makeOptimizer(oc, params);
  model->forward(torch::randn({4, side})).sum().backward();
  opt->step();
  forge::ckpt::Checkpoint ck;
  for (const auto& p : model->named_parameters()) ck.modelState.emplace_back(p.key(), p.value().detach());
  ck.optimizerState = forge::train::optimizerStateDict(*opt, oc, params);
  ck.config = "bench";
  ck.forgeVersion = FORGE_VERSION;

  const std::string path = dir + "/bench.pt";
  std::vector<double> save, copy, dd;
  double bytes = 0;
  for (int round = 0; round < 4; ++round) {
    auto t = Clock::now();
    forge::ckpt::save(ck, path);
    double s = since(t);
    bytes = static_cast<double>(std::filesystem::file_size(path));
    t = Clock::now();
    forge::ckpt::Checkpoint c = forge::ckpt::deepCopy(ck);  // what async costs training
    double cp = since(t);
    std::string cmd = "dd if=/dev/zero of=" + dir + "/dd.bin bs=1M count=" +
                      std::to_string(static_cast<long long>(bytes / (1 << 20)) + 1) + " conv=fsync status=none";
    t = Clock::now();
    if (std::system(cmd.c_str()) != 0) {
      std::fprintf(stderr, "dd failed\n");
      return 1;
    }
    double d = since(t);
    if (round > 0) {  // the first round warms the page cache and allocator
      save.push_back(s);
      copy.push_back(cp);
      dd.push_back(d);
    }
  }
  std::filesystem::remove(path);
  std::filesystem::remove(dir + "/dd.bin");
  double mb = bytes / (1 << 20);
  std::printf("checkpoint of %.1fM parameters + momentum: %.0f MiB; medians of 3 rounds\n",
              static_cast<double>(side) * side * 2 / 1e6, mb);
  std::printf("forge save %.3f s (%.0f MiB/s)   dd conv=fsync %.3f s (%.0f MiB/s)\n", median(save),
              mb / median(save), median(dd), mb / median(dd));
  std::printf("ratio save throughput forge/dd = %.3f\n", median(dd) / median(save));
  std::printf("async save stall (in-memory copy) %.3f s   sync save %.3f s\n", median(copy), median(save));
  std::printf("ratio stall async/sync = %.3f\n", median(copy) / median(save));
  return 0;
}
