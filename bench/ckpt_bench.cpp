// Checkpoint benchmarks, each against its baseline in the same run:
//   ckpt_bench [--dir DIR] [--params M]
//   - save throughput: forge's atomic save (stream, fsync, rename, fsync dir) of a model with
//     M million parameters plus its SGD momentum, against `dd ... conv=fsync` of as many
//     bytes to the same folder;
//   - training stall: what an asynchronous save costs the training thread against the whole
//     synchronous save. A training step runs as forge's loop runs it: the save is submitted
//     at the step boundary, the next forward and backward run (batch 64) while the
//     background thread copies the state, and the loop waits for that copy before the
//     optimizer step. The stall is the time the loop is blocked (submit + that wait); the
//     step slowdown (a step with a save in flight against one without) is printed too,
//     since the copy and the write share the cores with training;
//   - load throughput: forge's verified load (every record's CRC-32, the checkpoint's
//     checksum, the fields) of the same file, against LibTorch's own reader
//     (torch::jit::pickle_load, which verifies nothing) of the same bytes; both read the
//     file, warm in the page cache after the save.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <torch/csrc/jit/serialization/pickle.h>

#include "checkpoint/async_saver.h"
#include "checkpoint/atomic_file.h"
#include "checkpoint/checkpoint.h"
#include "trainer/optim/optimizer.h"
#include "trainer/spec/registry.h"

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
  const forge::OptimizerSpec& sgd = forge::registry().optimizers.get("sgd");
  forge::Options sgdOptions = sgd.options.defaults("optimizer");
  sgdOptions.set("momentum", 0.9);
  auto params = model->parameters();
  auto opt = std::make_unique<forge::train::Optimizer>(sgd, 0.01, 0.0, sgdOptions, params);
  model->forward(torch::randn({4, side})).sum().backward();
  opt->step();
  forge::ckpt::Checkpoint ck;
  for (const auto& p : model->named_parameters()) ck.modelState.emplace_back(p.key(), p.value().detach());
  ck.optimizerState = opt->stateDict();
  ck.config = "bench";
  ck.forgeVersion = FORGE_VERSION;

  const std::string path = dir + "/bench.pt";
  auto input = torch::randn({64, side});
  auto trainStep = [&] {
    opt->torch().zero_grad();
    model->forward(input).sum().backward();
  };
  std::vector<double> save, stall, plainStep, savingStep, dd, load, torchLoad;
  double bytes = 0;
  forge::ckpt::AsyncSaver saver;
  for (int round = 0; round < 4; ++round) {
    auto t = Clock::now();
    forge::ckpt::save(ck, path);
    double s = since(t);
    bytes = static_cast<double>(std::filesystem::file_size(path));
    t = Clock::now();
    forge::ckpt::Checkpoint back = forge::ckpt::load(path);
    double l = since(t);
    t = Clock::now();
    c10::IValue plainBack = torch::jit::pickle_load(forge::ckpt::readWholeFile(path));
    double tl = since(t);
    if (back.modelState.size() != ck.modelState.size() || !plainBack.isGenericDict()) {
      std::fprintf(stderr, "the checkpoint did not load back\n");
      return 1;
    }
    // A step without a save, then one with an asynchronous save submitted at its start.
    t = Clock::now();
    trainStep();
    opt->step();
    double plain = since(t);
    forge::ckpt::Checkpoint live;
    for (const auto& p : model->named_parameters()) live.modelState.emplace_back(p.key(), p.value().detach());
    live.optimizerState = opt->stateDict();
    live.config = "bench";
    live.forgeVersion = FORGE_VERSION;
    t = Clock::now();
    saver.submitSnapshot(std::move(live), [&](const forge::ckpt::Checkpoint& c) { forge::ckpt::save(c, path); });
    double blocked = since(t);
    trainStep();
    auto w = Clock::now();
    saver.waitForSnapshot();
    blocked += since(w);
    opt->step();
    double saving = since(t);
    saver.wait();  // the write finishes in the background; not part of the stall
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
      stall.push_back(blocked);
      plainStep.push_back(plain);
      savingStep.push_back(saving);
      dd.push_back(d);
      load.push_back(l);
      torchLoad.push_back(tl);
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
  std::printf("async save stall (blocked at the boundary and before the step) %.3f s   sync save %.3f s\n",
              median(stall), median(save));
  std::printf("training step (batch 64) %.3f s without a save, %.3f s with an async save in flight\n",
              median(plainStep), median(savingStep));
  std::printf("ratio stall async/sync = %.3f\n", median(stall) / median(save));
  std::printf("forge load %.3f s (%.0f MiB/s)   torch::jit::pickle_load %.3f s (%.0f MiB/s)\n", median(load),
              mb / median(load), median(torchLoad), mb / median(torchLoad));
  std::printf("ratio load throughput forge/pickle_load = %.3f\n", median(torchLoad) / median(load));
  return 0;
}
