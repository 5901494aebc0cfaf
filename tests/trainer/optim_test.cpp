#include <gtest/gtest.h>
#include <torch/torch.h>

#include "checkpoint/torch_zip.h"
#include "trainer/optim.h"

namespace forge::train {
namespace {

TEST(Schedule, ConstantStepAndCosineFollowTheirFormulas) {
  ScheduleConfig s;
  s.name = "constant";
  EXPECT_DOUBLE_EQ(LrSchedule(s, 0.1, 10, 3).at(17, 1), 0.1);
  s.name = "step";
  s.stepEpochs = 2;
  s.gamma = 0.5;
  LrSchedule step(s, 0.1, 10, 6);
  EXPECT_DOUBLE_EQ(step.at(5, 0), 0.1);
  EXPECT_DOUBLE_EQ(step.at(25, 2), 0.05);
  EXPECT_DOUBLE_EQ(step.at(45, 4), 0.025);
  s.name = "cosine";
  s.minLr = 0.01;
  LrSchedule cos(s, 0.1, 10, 2);  // 20 steps in all
  EXPECT_DOUBLE_EQ(cos.at(0, 0), 0.1);
  EXPECT_NEAR(cos.at(10, 1), 0.055, 1e-12);
  EXPECT_NEAR(cos.at(20, 1), 0.01, 1e-12);
}

TEST(Schedule, WarmupRisesLinearlyToTheBaseRate) {
  ScheduleConfig s;
  s.warmupSteps = 4;
  LrSchedule w(s, 0.2, 10, 1);
  EXPECT_DOUBLE_EQ(w.at(0, 0), 0.05);
  EXPECT_DOUBLE_EQ(w.at(1, 0), 0.1);
  EXPECT_DOUBLE_EQ(w.at(3, 0), 0.2);
  EXPECT_DOUBLE_EQ(w.at(4, 0), 0.2);
}

// Trains `steps` steps of a small linear model; returns its parameters.
struct Toy {
  torch::nn::Linear lin{torch::nn::LinearOptions(5, 3)};
  std::vector<at::Tensor> params() { return lin->parameters(); }
  void step(torch::optim::Optimizer& opt, int seed) {
    torch::manual_seed(seed);
    opt.zero_grad();
    torch::nn::functional::cross_entropy(lin(torch::randn({8, 5})), torch::randint(0, 3, {8})).backward();
    opt.step();
  }
};

void expectStateRoundTripsExactly(const std::string& name) {
  OptimizerConfig cfg;
  cfg.name = name;
  cfg.lr = 0.05;
  cfg.momentum = 0.9;
  cfg.weightDecay = 0.01;
  torch::manual_seed(1);
  Toy a;
  auto optA = makeOptimizer(cfg, a.params());
  a.step(*optA, 10);
  a.step(*optA, 11);
  // Through the same bytes a checkpoint holds.
  c10::IValue saved = ckpt::fromTorchZip(ckpt::toTorchZip(optimizerStateDict(*optA, cfg, a.params())));

  Toy b;
  {
    torch::NoGradGuard ng;
    for (size_t i = 0; i < b.params().size(); ++i) b.params()[i].copy_(a.params()[i]);
  }
  auto optB = makeOptimizer(cfg, b.params());
  loadOptimizerStateDict(*optB, cfg, b.params(), saved);
  a.step(*optA, 12);
  b.step(*optB, 12);
  for (size_t i = 0; i < a.params().size(); ++i) {
    EXPECT_TRUE(torch::equal(a.params()[i], b.params()[i])) << name << " parameter " << i;
  }
}

TEST(OptimizerState, SgdMomentumRoundTripsExactly) { expectStateRoundTripsExactly("sgd"); }
TEST(OptimizerState, AdamRoundTripsExactly) { expectStateRoundTripsExactly("adam"); }
TEST(OptimizerState, AdamWRoundTripsExactly) { expectStateRoundTripsExactly("adamw"); }

TEST(OptimizerState, UsesPythonsLayout) {
  OptimizerConfig cfg;
  cfg.name = "adam";
  Toy a;
  auto opt = makeOptimizer(cfg, a.params());
  a.step(*opt, 3);
  auto d = optimizerStateDict(*opt, cfg, a.params()).toGenericDict();
  auto state = d.at("state").toGenericDict();
  ASSERT_EQ(state.size(), 2u);
  auto s0 = state.at(int64_t{0}).toGenericDict();
  EXPECT_EQ(s0.at("step").toTensor().item<float>(), 1.0f);
  EXPECT_EQ(s0.at("exp_avg").toTensor().sizes(), (std::vector<int64_t>{3, 5}));
  auto group = d.at("param_groups").toListRef()[0].toGenericDict();
  EXPECT_DOUBLE_EQ(group.at("lr").toDouble(), cfg.lr);
  EXPECT_EQ(group.at("params").toListRef().size(), 2u);
}

}  // namespace
}  // namespace forge::train
