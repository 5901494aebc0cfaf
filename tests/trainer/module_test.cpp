// The nn.Module rules for any model, not only forge's own: deliberately broken models of
// each kind the field knows, refused by the real Trainer before its first optimizer step,
// with a message that names the tensor, where it is used and the fix; and a model of the
// kind users write (residual blocks in a ModuleList, control flow, no stages) that trains.
#include <gtest/gtest.h>
#include <mpi.h>
#include <torch/torch.h>

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

// Layers kept in a plain std::vector: forward uses them, but the module does not know them.
struct VectorHeld : torch::nn::Module {
  VectorHeld() {
    layers.push_back(torch::nn::Linear(kFeatures, 16));
    layers.push_back(torch::nn::Linear(16, kClasses));
    bias = register_parameter("bias", torch::zeros({kClasses}));
  }
  at::Tensor forward(at::Tensor x) { return layers[1](torch::relu(layers[0](x))) + bias; }
  std::vector<torch::nn::Linear> layers;
  at::Tensor bias;
};

// A layer created inside forward: new weights every call, never trained.
struct CreatedInForward : torch::nn::Module {
  CreatedInForward() { head = register_module("head", torch::nn::Linear(16, kClasses)); }
  at::Tensor forward(at::Tensor x) {
    torch::nn::Linear fresh(kFeatures, 16);
    return head(torch::relu(fresh(x)));
  }
  torch::nn::Linear head{nullptr};
};

// A registered layer whose output never reaches the loss.
struct UnusedBranch : torch::nn::Module {
  UnusedBranch() {
    body = register_module("body", torch::nn::Linear(kFeatures, kClasses));
    aux = register_module("aux", torch::nn::Linear(kFeatures, 5));
  }
  at::Tensor forward(at::Tensor x) {
    at::Tensor unused = aux(x);  // computed, then dropped: no gradient ever reaches aux
    return body(x);
  }
  torch::nn::Linear body{nullptr}, aux{nullptr};
};

// Everything frozen.
struct Frozen : torch::nn::Module {
  Frozen() {
    fc = register_module("fc", torch::nn::Linear(kFeatures, kClasses));
    for (auto& p : parameters()) p.set_requires_grad(false);
  }
  at::Tensor forward(at::Tensor x) { return fc(x); }
  torch::nn::Linear fc{nullptr};
};

// Data and model that do not fit, in a model without stages.
struct TooNarrow : torch::nn::Module {
  TooNarrow() {
    stem = register_module("stem", torch::nn::Linear(kFeatures, 16));
    head = register_module("head", torch::nn::Linear(12, kClasses));  // should take 16
  }
  at::Tensor forward(at::Tensor x) { return head(torch::relu(stem(x))); }
  torch::nn::Linear stem{nullptr}, head{nullptr};
};

// What users write: residual blocks in a ModuleList, a branch on the input, BatchNorm.
struct ResidualImpl : torch::nn::Module {
  explicit ResidualImpl(int64_t width = 16, int64_t blocks = 2) {
    stem = register_module("stem", torch::nn::Linear(kFeatures, width));
    for (int64_t i = 0; i < blocks; ++i) {
      torch::nn::Sequential block(torch::nn::BatchNorm1d(width), torch::nn::ReLU(), torch::nn::Linear(width, width));
      this->blocks->push_back(block);
    }
    register_module("blocks", this->blocks);
    head = register_module("head", torch::nn::Linear(width, kClasses));
  }
  at::Tensor forward(at::Tensor x) {
    x = stem(x.flatten(1));
    for (const auto& block : *blocks) x = x + block->as<torch::nn::Sequential>()->forward(x);
    if (!is_training()) x = x * 1.0;  // control flow on the mode is fine
    return head(torch::relu(x));
  }
  torch::nn::Linear stem{nullptr}, head{nullptr};
  torch::nn::ModuleList blocks;
};
TORCH_MODULE(Residual);

class ModuleRules : public ::testing::Test {
 protected:
  ModuleRules() : dir_("module_rules"), self_(MPI_COMM_SELF, std::chrono::seconds(60)) {
    data::writeSynthetic({400, kFeatures, kClasses, 3}, dir_.file("d.h5"));
  }

  Config config(const std::string& extra = "") const {
    return parseConfig(concat("run:\n  dir: ", dir_.file("run"), "\n  epochs: 2\n  threads: 1\ndata:\n  path: ",
                              dir_.file("d.h5"), "\n  batch_size: 32\n  drop_last: true\n", "log:\n  progress: off\n",
                              "optimizer:\n  lr: 0.1\n", extra),
                       "test.yaml");
  }

  // The message the Trainer's setup refuses `model` with ("" when it accepts it).
  std::string refusal(ModelHandle model, const std::string& extra = "") {
    try {
      Trainer t(config(extra), self_, world_, "", c10::kCPU, std::move(model));
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "";
  }

  testing::TempDir dir_;
  dist::MpiCommunicator self_;
  dist::WorldInfo world_;
};

TEST_F(ModuleRules, LayersHeldInAPlainVectorAreRefusedBeforeTraining) {
  std::string e = refusal(wrapModel(std::make_shared<VectorHeld>()));
  EXPECT_NE(e.find("depends on 4 trainable tensor(s) that are not registered parameters"), std::string::npos) << e;
  EXPECT_NE(e.find("a trainable tensor of shape [16, 8]"), std::string::npos) << e;
  EXPECT_NE(e.find("a trainable tensor of shape [3, 16]"), std::string::npos) << e;
  EXPECT_NE(e.find("used by addmm"), std::string::npos) << "where it is used: " << e;
  EXPECT_NE(e.find("torch::nn::ModuleList"), std::string::npos) << "the fix: " << e;
  EXPECT_FALSE(std::filesystem::exists(dir_.file("run/checkpoints"))) << "refused before any training";
}

TEST_F(ModuleRules, ALayerCreatedInsideForwardIsRefused) {
  std::string e = refusal(wrapModel(std::make_shared<CreatedInForward>()));
  EXPECT_NE(e.find("2 trainable tensor(s) that are not registered parameters"), std::string::npos) << e;
  EXPECT_NE(e.find("shape [16, 8]"), std::string::npos) << e;
  EXPECT_NE(e.find("create layers in the constructor rather than in forward"), std::string::npos) << e;
}

TEST_F(ModuleRules, ARegisteredParameterThatNeverReachesTheLossIsRefused) {
  std::string e = refusal(wrapModel(std::make_shared<UnusedBranch>()));
  EXPECT_NE(e.find("do not reach the loss"), std::string::npos) << e;
  EXPECT_NE(e.find("aux.weight [5, 8]"), std::string::npos) << e;
  EXPECT_NE(e.find("aux.bias [5]"), std::string::npos) << e;
  EXPECT_EQ(e.find("body.weight"), std::string::npos) << "the used layer is not named: " << e;
  EXPECT_NE(e.find("distributed.allow_unused_parameters"), std::string::npos) << e;
  // Said to be on purpose: the run is set up (the synchronizer then skips aux each step).
  EXPECT_EQ(refusal(wrapModel(std::make_shared<UnusedBranch>()), "distributed:\n  allow_unused_parameters: true\n"),
            "");
}

TEST_F(ModuleRules, AModelWithNothingToTrainIsRefused) {
  std::string e = refusal(wrapModel(std::make_shared<Frozen>()));
  EXPECT_NE(e.find("the model has no trainable parameters"), std::string::npos) << e;
}

TEST_F(ModuleRules, AShapeMismatchInAnyModelNamesTheOperationTheLayerAndTheData) {
  std::string e = refusal(wrapModel(std::make_shared<TooNarrow>()));
  EXPECT_NE(e.find("model and data do not fit"), std::string::npos) << e;
  EXPECT_NE(e.find("in layer 'head' Linear(in_features=12, out_features=3"), std::string::npos) << e;
  EXPECT_NE(e.find("head.weight [3, 12]"), std::string::npos) << e;
  EXPECT_NE(e.find("[32, 16]"), std::string::npos) << "the input shape the layer got: " << e;
  EXPECT_NE(e.find("d.h5:train"), std::string::npos) << "the data: " << e;
}

TEST_F(ModuleRules, AResidualModelOfTheUsersKindTrainsAndTheProbeLeavesNoTrace) {
  torch::manual_seed(0);
  Residual model(16, 2);
  ModelHandle h = wrapModel(model);
  EXPECT_TRUE(h.stages.empty());
  // The probe runs forward in train mode; BatchNorm statistics and the generator must be as before.
  at::Tensor statsBefore = model->blocks[0]->as<torch::nn::Sequential>()->ptr(0)->buffers()[0].clone();
  data::Batch b{torch::randn({32, kFeatures}), torch::randint(0, kClasses, {32})};
  auto generatorState = [] {
    auto g = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(g.mutex());
    return g.get_state();
  };
  at::Tensor rngBefore = generatorState();
  probeModel(h, b, "probe", registry().losses.get("cross_entropy"), {}, false);
  EXPECT_TRUE(torch::equal(statsBefore, model->blocks[0]->as<torch::nn::Sequential>()->ptr(0)->buffers()[0]));
  EXPECT_TRUE(torch::equal(rngBefore, generatorState())) << "dropout in the probe must not shift the stream";
  EXPECT_TRUE(model->is_training());

  Trainer t(config("task:\n  metrics: [accuracy]\n"), self_, world_, "", c10::kCPU, h);
  TrainSummary s = t.run();
  EXPECT_EQ(t.state().epoch, 2);
  EXPECT_GT(s.finalEval.value("accuracy"), 0.6) << "a learnable synthetic set: well above chance (1/3)";
  EXPECT_TRUE(std::filesystem::exists(dir_.file("run/checkpoints/best.pt")));
}

}  // namespace
}  // namespace forge::train
