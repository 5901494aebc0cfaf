#include <gtest/gtest.h>
#include <torch/torch.h>

#include "checkpoint/torch_zip.h"
#include "trainer/optim/optimizer.h"
#include "trainer/optim/schedule.h"
#include "trainer/spec/registry.h"

namespace forge::train {
namespace {

// The schedule `name` with its defaults, then `values`.
LrSchedule schedule(const std::string& name, std::map<std::string, OptionValue> values, int64_t warmup, double base,
                    int64_t stepsPerEpoch, int64_t epochs) {
  const ScheduleSpec& spec = registry().schedules.get(name);
  Options o = spec.options.defaults("schedule");
  for (auto& [k, v] : values) o.set(k, v);
  return LrSchedule(spec, warmup, o, base, stepsPerEpoch, epochs);
}

TEST(Schedule, ConstantStepAndCosineFollowTheirFormulas) {
  EXPECT_DOUBLE_EQ(schedule("constant", {}, 0, 0.1, 10, 3).at(17, 1), 0.1);
  LrSchedule step = schedule("step", {{"step_epochs", int64_t{2}}, {"gamma", 0.5}}, 0, 0.1, 10, 6);
  EXPECT_DOUBLE_EQ(step.at(5, 0), 0.1);
  EXPECT_DOUBLE_EQ(step.at(25, 2), 0.05);
  EXPECT_DOUBLE_EQ(step.at(45, 4), 0.025);
  LrSchedule cos = schedule("cosine", {{"min_lr", 0.01}}, 0, 0.1, 10, 2);  // 20 steps in all
  EXPECT_DOUBLE_EQ(cos.at(0, 0), 0.1);
  EXPECT_NEAR(cos.at(10, 1), 0.055, 1e-12);
  EXPECT_NEAR(cos.at(20, 1), 0.01, 1e-12);
}

TEST(Schedule, WarmupRisesLinearlyToTheBaseRate) {
  LrSchedule w = schedule("constant", {}, 4, 0.2, 10, 1);
  EXPECT_DOUBLE_EQ(w.at(0, 0), 0.05);
  EXPECT_DOUBLE_EQ(w.at(1, 0), 0.1);
  EXPECT_DOUBLE_EQ(w.at(3, 0), 0.2);
  EXPECT_DOUBLE_EQ(w.at(4, 0), 0.2);
}

// Warmup then decay by step: the warmup rises linearly to optimizer.lr, and the decay starts
// from optimizer.lr at the warmup's end and reaches min_lr at the run's last step.
TEST(Schedule, WarmupComposesWithCosineAndLinearDecay) {
  for (const char* name : {"cosine", "linear"}) {
    LrSchedule w = schedule(name, {{"min_lr", 0.02}}, 4, 0.2, 12, 1);  // 12 steps: 4 warmup, 8 decay
    EXPECT_DOUBLE_EQ(w.at(0, 0), 0.05) << name;
    EXPECT_DOUBLE_EQ(w.at(3, 0), 0.2) << name << ": the warmup ends at the base rate";
    EXPECT_DOUBLE_EQ(w.at(4, 0), 0.2) << name << ": the decay starts there";
    EXPECT_NEAR(w.at(8, 0), 0.11, 1e-12) << name << ": halfway down";
    EXPECT_NEAR(w.at(12, 0), 0.02, 1e-12) << name << ": min_lr at the end";
    EXPECT_LT(w.at(5, 0), 0.2) << name;
  }
  LrSchedule lin = schedule("linear", {{"min_lr", 0.0}}, 0, 0.1, 10, 1);
  EXPECT_NEAR(lin.at(3, 0), 0.07, 1e-12);
}

TEST(Schedule, DescribesItsOwnKeysForTheCheckpoint) {
  auto d = schedule("step", {{"gamma", 0.5}}, 3, 0.1, 10, 6).describe();
  EXPECT_EQ(d.at("name").toStringRef(), "step");
  EXPECT_DOUBLE_EQ(d.at("gamma").toDouble(), 0.5);
  EXPECT_EQ(d.at("warmup_steps").toInt(), 3);
  EXPECT_FALSE(d.contains("min_lr")) << "cosine's key is not the step schedule's";
}

// Trains `steps` steps of a small linear model; returns its parameters.
struct Toy {
  torch::nn::Linear lin{torch::nn::LinearOptions(5, 3)};
  std::vector<at::Tensor> params() { return lin->parameters(); }
  void step(Optimizer& opt, int seed) {
    torch::manual_seed(seed);
    opt.torch().zero_grad();
    torch::nn::functional::cross_entropy(lin(torch::randn({8, 5})), torch::randint(0, 3, {8})).backward();
    opt.step();
  }
};

std::unique_ptr<Optimizer> make(const std::string& name, double lr, const std::vector<at::Tensor>& params) {
  const OptimizerSpec& spec = registry().optimizers.get(name);
  Options o = spec.options.defaults("optimizer");
  if (spec.options.find("momentum")) o.set("momentum", 0.9);
  return std::make_unique<Optimizer>(spec, lr, 0.01, o, params);
}

void expectStateRoundTripsExactly(const std::string& name) {
  torch::manual_seed(1);
  Toy a;
  auto optA = make(name, 0.05, a.params());
  a.step(*optA, 10);
  a.step(*optA, 11);
  // Through the same bytes a checkpoint holds.
  c10::IValue saved = ckpt::fromTorchZip(ckpt::toTorchZip(optA->stateDict()));

  Toy b;
  {
    torch::NoGradGuard ng;
    for (size_t i = 0; i < b.params().size(); ++i) b.params()[i].copy_(a.params()[i]);
  }
  auto optB = make(name, 0.05, b.params());
  optB->loadStateDict(saved);
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
  Toy a;
  auto opt = make("adam", 0.01, a.params());
  a.step(*opt, 3);
  auto d = opt->stateDict().toGenericDict();
  auto state = d.at("state").toGenericDict();
  ASSERT_EQ(state.size(), 2u);
  auto s0 = state.at(int64_t{0}).toGenericDict();
  EXPECT_EQ(s0.at("step").toTensor().item<float>(), 1.0f);
  EXPECT_EQ(s0.at("exp_avg").toTensor().sizes(), (std::vector<int64_t>{3, 5}));
  auto group = d.at("param_groups").toListRef()[0].toGenericDict();
  EXPECT_DOUBLE_EQ(group.at("lr").toDouble(), 0.01);
  EXPECT_EQ(group.at("params").toListRef().size(), 2u);
  EXPECT_EQ(group.at("betas").toListRef().size(), 2u);
  EXPECT_FALSE(group.contains("momentum")) << "SGD's hyper-parameter in Adam's group";
}

TEST(OptimizerState, AnotherOptimizersStateIsRefusedByName) {
  Toy a;
  auto sgd = make("sgd", 0.01, a.params());
  a.step(*sgd, 3);
  auto adam = make("adam", 0.01, a.params());
  try {
    adam->loadStateDict(sgd->stateDict());
    FAIL() << "adam took sgd's state";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("optimizer state of parameter 0 has no"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace forge::train
