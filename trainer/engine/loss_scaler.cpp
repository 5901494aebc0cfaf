#include "trainer/engine/loss_scaler.h"

#include <cmath>

#include "core/error.h"
#include "core/strings.h"

namespace forge::train {

void LossScaler::update(bool finite) {
  if (!finite) {
    scale_ *= options_.backoffFactor;
    growthTracker_ = 0;
    return;
  }
  if (++growthTracker_ < options_.growthInterval) return;
  // Never past the largest finite float: the scaled loss is fp32.
  if (std::isfinite(static_cast<float>(scale_ * options_.growthFactor))) scale_ *= options_.growthFactor;
  growthTracker_ = 0;
}

c10::IValue LossScaler::stateDict() const {
  c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
  d.insert("scale", scale_);
  d.insert("growth_tracker", growthTracker_);
  return d;
}

void LossScaler::loadStateDict(const c10::IValue& state, const std::string& source) {
  if (state.isNone()) return;
  auto bad = [&] { return CheckpointError(concat("checkpoint '", source, "': loss_scaler is not {scale, growth_tracker}")); };
  if (!state.isGenericDict()) throw bad();
  auto d = state.toGenericDict();
  if (!d.contains("scale") || !d.at("scale").isDouble() || !d.contains("growth_tracker") ||
      !d.at("growth_tracker").isInt()) {
    throw bad();
  }
  scale_ = d.at("scale").toDouble();
  growthTracker_ = d.at("growth_tracker").toInt();
  if (!(scale_ > 0) || !std::isfinite(scale_)) throw bad();
}

}  // namespace forge::train
