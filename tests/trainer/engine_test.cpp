// The engine with parts of the user's kind, on one rank: tied weights, a loss of shape [1],
// a forward that registers a buffer, a resume whose task has other metrics, registration
// mistakes.
#include <gtest/gtest.h>
#include <mpi.h>
#include <torch/torch.h>

#include <fstream>

#include "checkpoint/checkpoint.h"
#include "core/error.h"
#include "core/strings.h"
#include "data/converters.h"
#include "distributed/mpi/mpi_communicator.h"
#include "tests/temp_dir.h"
#include "trainer/config/config.h"
#include "trainer/engine/trainer.h"
#include "trainer/module/probe.h"
#include "trainer/spec/registry.h"

namespace forge::train {
namespace {

constexpr int64_t kFeatures = 8, kClasses = 3;

// One weight registered under two names (as tied input and output embeddings are).
struct Tied : torch::nn::Module {
  Tied() {
    w = register_parameter("w", torch::randn({kFeatures, kFeatures}) * 0.1);
    register_parameter("w_alias", w);
    head = register_module("head", torch::nn::Linear(kFeatures, kClasses));
  }
  at::Tensor forward(at::Tensor x) { return head(torch::relu(x.matmul(w))); }
  at::Tensor w;
  torch::nn::Linear head{nullptr};
};

// Registers a buffer the first time forward runs.
struct LazyBuffer : torch::nn::Module {
  LazyBuffer() { fc = register_module("fc", torch::nn::Linear(kFeatures, kClasses)); }
  at::Tensor forward(at::Tensor x) {
    if (!seen.defined()) seen = register_buffer("seen", torch::zeros({x.size(0)}));
    return fc(x);
  }
  torch::nn::Linear fc{nullptr};
  at::Tensor seen;
};

class Engine : public ::testing::Test {
 protected:
  Engine() : dir_("engine"), self_(MPI_COMM_SELF, std::chrono::seconds(60)) {
    data::writeSynthetic({400, kFeatures, kClasses, 3}, dir_.file("d.h5"));
  }
  Config config(const std::string& extra = "", std::vector<std::string> sets = {}) const {
    return parseConfig(concat("run:\n  dir: ", dir_.file("run"), "\n  epochs: 1\n  threads: 1\ndata:\n  path: ",
                              dir_.file("d.h5"), "\n  batch_size: 32\n  drop_last: true\nlog:\n  progress: off\n",
                              "optimizer:\n  lr: 0.1\n  momentum: 0.9\n", "model:\n  in_features: ", kFeatures, "\n  hidden: 16\n  num_classes: ", kClasses, "\n",
                              extra),
                       "test.yaml", sets);
  }
  TrainSummary train(const Config& cfg, std::optional<ModelHandle> model = std::nullopt, const std::string& resume = "") {
    Trainer t(cfg, self_, world_, resume, c10::kCPU, std::move(model));
    return t.run();
  }
  std::vector<std::string> csv() const {
    std::ifstream in(dir_.file("run/metrics.csv"));
    std::vector<std::string> lines;
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    return lines;
  }

  testing::TempDir dir_;
  dist::MpiCommunicator self_;
  dist::WorldInfo world_;
};

TEST_F(Engine, ATiedWeightIsOneParameterSteppedOnce) {
  torch::manual_seed(0);
  train(config(), wrapModel(std::make_shared<Tied>()));
  ckpt::Checkpoint ck = ckpt::load(dir_.file("run/checkpoints/best.pt"));
  auto state = ck.optimizerState.toGenericDict().at("state").toGenericDict();
  EXPECT_EQ(state.size(), 3u) << "w (under both names), head.weight, head.bias: one optimizer state each";
  auto params = ck.optimizerState.toGenericDict().at("param_groups").toListRef()[0].toGenericDict().at("params");
  EXPECT_EQ(params.toListRef().size(), 3u);
}

TEST_F(Engine, ALossOfShapeOneTrainsAsAScalar) {
  LossSpec one;
  one.name = "cross_entropy_shape_1";
  one.help = "cross-entropy returned as a [1] tensor, as some hand-written losses do";
  one.loss = [](const at::Tensor& out, const data::Batch& b) {
    return torch::nn::functional::cross_entropy(out, b.y).reshape({1});
  };
  if (!registry().losses.find(one.name)) registerLoss(one);
  TrainSummary s = train(config("task:\n  loss: cross_entropy_shape_1\n", {"run.epochs=3"}));
  EXPECT_TRUE(std::isfinite(s.finalEval.loss()));
  EXPECT_GT(s.finalEval.value("accuracy"), 0.5) << "learned: chance is 1/3";
}

TEST_F(Engine, AForwardThatRegistersABufferIsProbedWithoutHarm) {
  auto m = std::make_shared<LazyBuffer>();
  data::Batch b{torch::randn({32, kFeatures}), torch::randint(0, kClasses, {32})};
  EXPECT_NO_THROW(probeModel(wrapModel(m), b, "probe", registry().losses.get("cross_entropy"), {}, false));
}

TEST_F(Engine, AResumeWithOtherMetricsStartsTheBestAnewAndKeepsEveryCsvValueUnderItsName) {
  train(config("task:\n  metrics: []\n"));
  ckpt::Checkpoint first = ckpt::load(dir_.file("run/checkpoints/best.pt"));
  EXPECT_EQ(first.bestMetricName, "eval_loss");
  auto before = csv();
  ASSERT_EQ(before.size(), 2u + 0) << "header, one epoch record (no step record in 12 steps)";
  EXPECT_EQ(before[0].find("accuracy"), std::string::npos);

  train(config("task:\n  metrics: [accuracy]\n", {"run.epochs=2"}), std::nullopt, "auto");
  ckpt::Checkpoint best = ckpt::load(dir_.file("run/checkpoints/best.pt"));
  EXPECT_EQ(best.bestMetricName, "eval_accuracy");
  EXPECT_EQ(best.epoch, 2) << "epoch 2 is the best accuracy so far, not compared with epoch 1's loss";
  EXPECT_LE(best.bestMetric, 1.0);
  auto after = csv();
  ASSERT_EQ(after.size(), 3u);
  EXPECT_EQ(after[0], "type,epoch,step,epoch_samples,global_step,wall_time,train_loss,train_accuracy,eval_loss,"
                      "eval_accuracy,lr,samples_per_s,data_wait_share,comm_share,seconds,grad_norm,skipped_steps");
  // The first session's row: its eval_loss is still under eval_loss, its accuracy cells empty.
  auto old = split(before[1], ','), moved = split(after[1], ',');
  EXPECT_EQ(moved[8], old[7]) << after[1];  // eval_loss
  EXPECT_EQ(moved[7], "") << after[1];      // train_accuracy
  EXPECT_EQ(moved[9], "") << after[1];      // eval_accuracy
}

TEST(Registry, MistakesInRegistrationAreReportedNotThrown) {
  Registries r;
  ModelSpec a;
  a.name = "same";
  r.models.add(a);
  r.models.add(a);
  ModelSpec bad;
  bad.name = "a,b";
  r.models.add(bad);
  EXPECT_EQ(r.models.names(), std::vector<std::string>{"same"});
  try {
    r.check();
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("a second model named 'same'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("model named 'a,b': a name is letters, digits and '_'"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace forge::train
