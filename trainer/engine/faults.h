// Test-only faults that the hang and divergence tests inject (core/names.h names them): a
// rank that sleeps in a phase, one that is slow in every forward, one whose replica drifts,
// one whose gradients overflow.
// Each reads its environment once; unset, each is a branch on a static.
#pragma once

#include <torch/nn/module.h>

#include <cstdint>

#include "distributed/rank_status.h"

namespace forge::train {

// Sleeps (FORGE_FAULT_HANG_SECONDS, or for good) when this rank is the one named and it is
// in `phase` at the named global step.
void maybeHang(dist::Phase phase, int rank, int64_t globalStep);
// Sleeps FORGE_FAULT_SLOW_MS in every forward of the named rank.
void maybeSlow(int rank);
// Adds 1e-3 to the first parameter of the named rank after the named step.
void maybePerturb(torch::nn::Module& module, int rank, int64_t globalStep);

// The loss to run backward on: `loss` times Inf when this rank is the one named and the
// global step is one of those listed (FORGE_FAULT_INF_GRAD_*), else `loss` itself.
at::Tensor maybeInfGradient(const at::Tensor& loss, int rank, int64_t globalStep);

}  // namespace forge::train
