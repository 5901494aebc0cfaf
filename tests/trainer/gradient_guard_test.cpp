// The gradient guard on the all-reduced gradients (run under mpirun -np 1, 2 and 3): the norm
// it measures and clips by is the global batch's, a closed-form function of the world size,
// not any rank's own; every rank clips by the same factor; a rank whose gradient is Inf makes
// every rank skip the step, and the limit of consecutive skips stops every rank alike. Its
// counters survive a save and load.
#include <gtest/gtest.h>
#include <mpi.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "core/error.h"
#include "distributed/gradient_synchronizer.h"
#include "distributed/mpi/mpi_communicator.h"
#include "trainer/engine/gradient_guard.h"

namespace forge::train {
namespace {

constexpr int64_t kD = 4;

class GuardOverRanks : public ::testing::Test {
 protected:
  GuardOverRanks() : comm_(MPI_COMM_WORLD, std::chrono::seconds(60)) {
    lin_ = std::make_shared<torch::nn::LinearImpl>(torch::nn::LinearOptions(kD, 1).bias(false));
    sync_ = std::make_unique<dist::GradientSynchronizer>(lin_, comm_);
    sync_->broadcastState();
  }
  int rank() const { return comm_.rank(); }
  int size() const { return comm_.size(); }
  // Rank r's loss: sum_j w_j (r + 1) (j + 1)  =>  its gradient g_j = (r + 1)(j + 1); averaged
  // over W ranks: (W + 1) / 2 (j + 1), of norm (W + 1) / 2 sqrt(1 + 4 + 9 + 16).
  void backward(double factor = 1.0) {
    sync_->zeroGrad();
    at::Tensor x = (rank() + 1) * at::arange(1, kD + 1, at::kFloat).unsqueeze(0);
    sync_->backward(lin_->forward(x).sum() * factor);
  }
  static double globalNorm(int w) { return (w + 1) / 2.0 * std::sqrt(30.0); }
  GradientGuard guard(double clip, int64_t maxSkipped) {
    return GradientGuard({lin_->weight}, {clip, maxSkipped, false},
                         [](const std::string& found) { throw Diverged(found); });
  }

  dist::MpiCommunicator comm_;
  std::shared_ptr<torch::nn::LinearImpl> lin_;
  std::unique_ptr<dist::GradientSynchronizer> sync_;
};

TEST_F(GuardOverRanks, TheNormIsTheGlobalBatchsAndEveryRankClipsAlike) {
  backward();
  const double local = (rank() + 1) * std::sqrt(30.0);
  auto g = guard(1.0, 0);
  GradientVerdict v = g.inspect(0);
  EXPECT_TRUE(v.apply);
  EXPECT_NEAR(v.norm, globalNorm(size()), 1e-5 * globalNorm(size()));
  if (size() > 1 && rank() == 0) {
    EXPECT_GT(std::fabs(v.norm - local), 0.1);  // not rank 0's own (rank (W - 1) / 2's equals it)
  }
  EXPECT_TRUE(v.clipped);
  // Clipped to norm 1 (up to the 1e-6 of clip_grad_norm_), in the same direction.
  EXPECT_NEAR(gradientNorm({lin_->weight}).item<double>(), 1.0, 1e-5);
  at::Tensor grad = lin_->weight.grad().flatten();
  for (int64_t j = 0; j < kD; ++j) EXPECT_NEAR(grad[j].item<double>(), (j + 1) / std::sqrt(30.0), 1e-5);
  // Every rank holds the same clipped gradient, bit for bit.
  at::Tensor mine = grad.clone(), lowest = grad.clone(), highest = grad.clone();
  comm_.allReduce(lowest, dist::ReduceOp::kMin);
  comm_.allReduce(highest, dist::ReduceOp::kMax);
  EXPECT_TRUE(at::equal(mine, lowest) && at::equal(mine, highest));
}

TEST_F(GuardOverRanks, BelowTheThresholdNothingChanges) {
  backward();
  at::Tensor before = lin_->weight.grad().clone();
  auto g = guard(globalNorm(size()) * 2, 0);
  GradientVerdict v = g.inspect(0);
  EXPECT_TRUE(v.apply);
  EXPECT_FALSE(v.clipped);
  EXPECT_TRUE(at::equal(before, lin_->weight.grad()));
}

TEST_F(GuardOverRanks, OneRanksInfGradientSkipsTheStepOnEveryRank) {
  auto g = guard(0, 2);
  const int last = size() - 1;
  backward(rank() == last ? std::numeric_limits<double>::infinity() : 1.0);
  GradientVerdict v = g.inspect(0);
  EXPECT_FALSE(v.apply) << "rank " << rank() << " would step on the gradients of a rank that overflowed";
  EXPECT_FALSE(std::isfinite(v.norm));
  EXPECT_EQ(g.skippedSteps(), 1);
  EXPECT_EQ(g.consecutiveSkipped(), 1);
  backward();
  EXPECT_TRUE(g.inspect(1).apply);
  EXPECT_EQ(g.consecutiveSkipped(), 0);
  EXPECT_EQ(g.skippedSteps(), 1);
  // Two in a row are tolerated, the third stops every rank.
  for (int step = 2; step < 4; ++step) {
    backward(rank() == last ? std::numeric_limits<double>::infinity() : 1.0);
    EXPECT_FALSE(g.inspect(step).apply);
  }
  backward(rank() == last ? std::numeric_limits<double>::infinity() : 1.0);
  EXPECT_THROW(g.inspect(4), Diverged);
}

TEST_F(GuardOverRanks, TheCountersSurviveASaveAndLoad) {
  auto g = guard(0, 5);
  backward(std::numeric_limits<double>::infinity());
  g.inspect(0);
  auto restored = guard(0, 5);
  restored.loadStateDict(g.stateDict(), "test");
  EXPECT_EQ(restored.skippedSteps(), 1);
  EXPECT_EQ(restored.consecutiveSkipped(), 1);
  restored.loadStateDict(c10::IValue(), "test");  // a checkpoint without the field: kept
  EXPECT_EQ(restored.skippedSteps(), 1);
}

}  // namespace
}  // namespace forge::train
