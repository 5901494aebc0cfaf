// A diverged run stops: a loss or a weight of NaN or Inf ends training on every rank with a
// named error (exit 5) before anything computed from it is evaluated, saved or reported as a
// result. The checks sit where the ranks already meet (every few steps with the preemption
// flag, each epoch's end, each save), so a healthy run pays one device read per check.
#include <torch/torch.h>

#include "core/strings.h"
#include "trainer/engine/trainer.h"

namespace forge::train {
namespace {

// The first parameter or buffer with a NaN or Inf, with counts: "fc1.weight (200704 NaN,
// 0 Inf of 200704)". Buffers too: extreme but finite inputs make a BatchNorm's running
// variance infinite while the loss and the weights stay finite.
std::string firstNonFiniteTensor(torch::nn::Module& module) {
  torch::NoGradGuard noGrad;
  auto check = [](const std::string& name, const at::Tensor& t) -> std::string {
    if (!t.defined() || !t.is_floating_point() || torch::isfinite(t).all().item<bool>()) return "";
    const int64_t nan = torch::isnan(t).sum().item<int64_t>();
    const int64_t inf = torch::isinf(t).sum().item<int64_t>();
    return concat(name, " (", nan, " NaN, ", inf, " Inf of ", t.numel(), ")");
  };
  for (const auto& p : module.named_parameters(/*recurse=*/true)) {
    if (auto bad = check(p.key(), p.value()); !bad.empty()) return bad;
  }
  for (const auto& b : module.named_buffers(/*recurse=*/true)) {
    if (auto bad = check(b.key(), b.value()); !bad.empty()) return bad;
  }
  return "";
}

}  // namespace

bool Trainer::epochLossFinite() const { return epochSums_ == nullptr || epochSums_->lossFinite(); }

Diverged Trainer::divergedError(const std::string& found) const {
  std::string newest;
  if (world_.rank == 0 && checkpoints_) {
    auto good = checkpoints_->verified();  // most advanced first
    if (!good.empty()) newest = good.front().path;
  }
  return Diverged(concat(
      "training diverged by epoch ", state_.epoch + 1, " step ", state_.step, " (global step ", state_.globalStep,
      ", learning rate ", schedule_->at(std::max<int64_t>(0, state_.globalStep - 1), state_.epoch), "): ", found,
      "; nothing computed from it was saved",
      newest.empty() ? std::string() : concat(" (newest checkpoint, written before: ", newest, ")"),
      ". Lower optimizer.lr, lengthen schedule.warmup_steps, or look for extreme values in the data, then train "
      "afresh or resume from a checkpoint before the divergence with --resume PATH"));
}

void Trainer::ensureFinite(const std::string& before) {
  const bool lossOk = epochLossFinite();
  const std::string badParameter = firstNonFiniteTensor(*model_.module);
  at::Tensor flags = at::tensor({lossOk ? 0 : 1, badParameter.empty() ? 0 : 1}, at::kInt);
  comm_.allReduce(flags, dist::ReduceOp::kMax);
  const bool lossBad = flags[0].item<int>() > 0, parameterBad = flags[1].item<int>() > 0;
  if (!lossBad && !parameterBad) return;
  std::string found;
  if (lossBad) found = lossOk ? "another rank's training loss became NaN or Inf" : "the training loss became NaN or Inf";
  if (parameterBad) {
    found += concat(found.empty() ? "" : ", and ", badParameter.empty() ? std::string("a tensor on another rank")
                                                                        : concat("model tensor ", badParameter),
                    " is not finite");
  }
  throw divergedError(concat(found, " (checked before ", before, ")"));
}

}  // namespace forge::train
