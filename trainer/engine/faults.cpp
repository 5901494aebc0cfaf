#include "trainer/engine/faults.h"

#include <torch/torch.h>

#include <cstdlib>
#include <cstring>
#include <limits>
#include <set>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "core/log.h"
#include "core/names.h"

namespace forge::train {
namespace {

bool named(const char* var, int rank) {
  const char* v = std::getenv(var);
  return v != nullptr && std::atoi(v) == rank;
}

}  // namespace

void maybeHang(dist::Phase phase, int rank, int64_t globalStep) {
  static const bool mine = named(env::kFaultHangRank, rank);
  if (!mine) return;
  static const char* where = std::getenv(env::kFaultHangPhase);
  if (where == nullptr || std::strcmp(where, dist::phaseName(phase)) != 0) return;
  static const char* step = std::getenv(env::kFaultHangStep);
  if (step != nullptr && std::atoll(step) != globalStep) return;
  static bool done = false;  // once (an evaluation at the same global step comes again at the end)
  if (done) return;
  done = true;
  const char* seconds = std::getenv(env::kFaultHangSeconds);
  log::warn("fault", "injected fault: rank ", rank, " sleeps in ", where, " at step ", globalStep,
            seconds ? concat(" for ", seconds, " s") : std::string(" for good"));
  if (seconds == nullptr) {
    for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(std::atof(seconds)));
}

void maybeSlow(int rank) {
  static const bool mine = named(env::kFaultSlowRank, rank);
  if (!mine) return;
  static const char* ms = std::getenv(env::kFaultSlowMs);
  std::this_thread::sleep_for(std::chrono::milliseconds(ms ? std::atoi(ms) : 20));
}

void maybePerturb(torch::nn::Module& module, int rank, int64_t globalStep) {
  static const bool mine = named(env::kFaultPerturbRank, rank);
  if (!mine) return;
  static const char* step = std::getenv(env::kFaultPerturbStep);
  if (step == nullptr || std::atoll(step) != globalStep) return;
  auto params = module.named_parameters();
  if (params.is_empty()) return;
  log::warn("fault", "injected fault: rank ", rank, " perturbs ", params[0].key(), " after step ", globalStep);
  torch::NoGradGuard noGrad;
  params[0].value().add_(1e-3);
}

at::Tensor maybeInfGradient(const at::Tensor& loss, int rank, int64_t globalStep) {
  static const bool mine = named(env::kFaultInfGradRank, rank);
  if (!mine) return loss;
  static const std::set<int64_t> steps = [] {
    std::set<int64_t> s;
    const char* list = std::getenv(env::kFaultInfGradSteps);
    std::stringstream in(list ? list : "");
    for (std::string item; std::getline(in, item, ',');) {
      if (!item.empty()) s.insert(std::atoll(item.c_str()));
    }
    return s;
  }();
  if (!steps.count(globalStep)) return loss;
  log::warn("fault", "injected fault: rank ", rank, " makes its gradients Inf at global step ", globalStep);
  return loss * std::numeric_limits<double>::infinity();
}

}  // namespace forge::train
