#include <gtest/gtest.h>
#include <mpi.h>
#include <torch/torch.h>

#include <set>

#include "core/error.h"
#include "data/converters.h"
#include "data/source.h"
#include "distributed/mpi/mpi_communicator.h"
#include "tests/temp_dir.h"
#include "trainer/engine/evaluator.h"
#include "trainer/models/cnn.h"
#include "trainer/models/mlp.h"
#include "trainer/module/probe.h"
#include "trainer/module/rules.h"
#include "trainer/module/state_dict.h"
#include "trainer/spec/registry.h"

namespace forge::train {
namespace {

ModelHandle mlp(std::map<std::string, OptionValue> values = {}) {
  values.emplace("dropout", 0.3);
  return makeModel("mlp", values);
}

data::Batch batchOf(at::Tensor x, int64_t classes = 10) { return {x, torch::randint(0, classes, {x.size(0)})}; }

std::string errorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Mlp, HasThePythonReferenceNamesAndCounts) {
  Mlp m(784, 256, 10, 0.3);
  std::vector<std::string> params, buffers;
  int64_t trainable = 0, bufferElements = 0;
  for (const auto& p : m.named_parameters()) {
    params.push_back(p.key());
    if (p.value().requires_grad()) trainable += p.value().numel();
  }
  for (const auto& b : m.named_buffers()) {
    buffers.push_back(b.key());
    bufferElements += b.value().numel();
  }
  EXPECT_EQ(params, (std::vector<std::string>{"fc1.weight", "fc1.bias", "bn1.weight", "bn1.bias", "fc2.weight",
                                               "fc2.bias"}));
  EXPECT_EQ(buffers, (std::vector<std::string>{"bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked"}));
  // Python: sum(p.numel() for p in model.parameters()) for the same layers. (203,530 would
  // leave out BatchNorm's affine weight and bias.)
  EXPECT_EQ(trainable, 204042);
  EXPECT_EQ(bufferElements, 513);
  EXPECT_EQ(m.fc1->weight.sizes(), (std::vector<int64_t>{256, 784}));
  EXPECT_EQ(m.fc2->weight.sizes(), (std::vector<int64_t>{10, 256}));
}

TEST(Mlp, ReturnsLogitsForFlatOrImageShapedBatches) {
  auto m = mlp();
  EXPECT_EQ(m.forward(batchOf(torch::randn({5, 784}))).sizes(), (std::vector<int64_t>{5, 10}));
  EXPECT_EQ(m.forward(batchOf(torch::randn({5, 1, 28, 28}))).sizes(), (std::vector<int64_t>{5, 10}));
  EXPECT_EQ(m.stages.size(), 6u) << "the built-in models offer stage-by-stage probing";
}

TEST(Cnn, ClassifiesTwentyEightSquareImages) {
  auto m = makeModel("cnn", {{"channels", std::vector<int64_t>{4, 8}}, {"hidden", int64_t{32}}});
  EXPECT_EQ(m.forward(batchOf(torch::randn({3, 784}))).sizes(), (std::vector<int64_t>{3, 10}));
  EXPECT_EQ(m.module->named_parameters().size(), 8u);
}

TEST(Guards, ProbeNamesTheStageAndBothShapesOnAMismatch) {
  auto m = mlp();
  const LossSpec& ce = registry().losses.get("cross_entropy");
  std::string e = errorOf([&] { probeModel(m, batchOf(torch::randn({4, 100})), "file.h5:train", ce, {}, false); });
  EXPECT_NE(e.find("layer 'fc1'"), std::string::npos) << e;
  EXPECT_NE(e.find("Linear(in_features=784, out_features=256"), std::string::npos) << e;
  EXPECT_NE(e.find("input of shape [4, 100]"), std::string::npos) << e;
  EXPECT_NE(e.find("file.h5:train"), std::string::npos) << e;
  EXPECT_TRUE(m.module->is_training()) << "the probe must restore train mode";
  EXPECT_EQ(errorOf([&] { probeModel(m, batchOf(torch::randn({4, 784})), "f", ce, {}, false); }), "");
}

TEST(Guards, AModelWithoutTrainableParametersIsRefused) {
  auto m = mlp();
  for (auto& p : m.module->parameters()) p.set_requires_grad(false);
  std::string e = errorOf([&] { requireTrainableParameters(*m.module); });
  EXPECT_NE(e.find("no trainable parameters"), std::string::npos) << e;
}

// A layer registered but never used in forward: its parameters never change.
class WithUnusedLayer : public StagedModel {
 public:
  WithUnusedLayer() {
    used = register_module("used", torch::nn::Linear(4, 3));
    unused = register_module("unused", torch::nn::Linear(4, 3));
    addStage("used", [this](const at::Tensor& x) { return used(x); });
  }
  torch::nn::Linear used{nullptr}, unused{nullptr};
};

TEST(Guards, ParametersWithoutGradientAfterTheFirstStepAreNamed) {
  WithUnusedLayer m;
  auto before = snapshotParameters(m);
  torch::optim::SGD opt(m.parameters(), torch::optim::SGDOptions(0.1));
  torch::nn::functional::cross_entropy(m.forward(torch::randn({8, 4})), torch::randint(0, 3, {8})).backward();
  auto missing = parametersWithoutGradient(m);
  opt.step();
  std::string e = errorOf([&] { checkFirstStep(m, before, missing); });
  EXPECT_NE(e.find("got no gradient and did not change in the first step: unused.weight, unused.bias"),
            std::string::npos)
      << e;
  EXPECT_EQ(e.find(" used.weight"), std::string::npos) << e;  // the used layer did change
}

TEST(Guards, ABiasCancelledByBatchNormIsReportedButNotAnError) {
  // d(loss)/d(fc1.bias) is zero up to rounding when BatchNorm follows: a real model, not a bug.
  torch::manual_seed(0);
  auto m = mlp();
  auto before = snapshotParameters(*m.module);
  torch::optim::SGD opt(m.module->parameters(), torch::optim::SGDOptions(0.01));
  torch::nn::functional::cross_entropy(m.forward(batchOf(torch::randn({16, 784}))), torch::randint(0, 10, {16})).backward();
  auto missing = parametersWithoutGradient(*m.module);
  EXPECT_TRUE(missing.empty());
  opt.step();
  std::vector<std::string> unchanged;
  EXPECT_EQ(errorOf([&] { unchanged = checkFirstStep(*m.module, before, missing); }), "");
  for (const auto& n : unchanged) EXPECT_EQ(n, "fc1.bias");
}

TEST(Guards, StrictLoadNamesMissingUnexpectedAndMismatchedKeys) {
  auto m = mlp();
  auto sd = modelStateDict(*m.module);
  // Round trip: loading a model's own state dict is fine and copies values.
  auto other = mlp();
  loadModelStateDict(*other.module, sd, "self");
  EXPECT_TRUE(torch::equal(other.module->named_parameters()["fc1.weight"], m.module->named_parameters()["fc1.weight"]));

  std::vector<std::pair<std::string, at::Tensor>> bad;
  for (auto& [k, v] : sd) {
    if (k == "fc2.bias") continue;                                           // missing
    if (k == "fc1.weight") v = torch::zeros({256, 100});                     // wrong shape
    bad.emplace_back(k, v);
  }
  bad.emplace_back("fc3.weight", torch::zeros({2}));                         // unexpected
  std::string e = errorOf([&] { loadModelStateDict(*other.module, bad, "x.pt"); });
  EXPECT_NE(e.find("missing key 'fc2.bias'"), std::string::npos) << e;
  EXPECT_NE(e.find("unexpected key 'fc3.weight'"), std::string::npos) << e;
  EXPECT_NE(e.find("shape mismatch for 'fc1.weight': checkpoint has [256, 100], model has [256, 784]"),
            std::string::npos)
      << e;
}

TEST(Evaluation, RunsInEvalModeSoDropoutIsOffAndResultsRepeat) {
  auto m = makeModel("mlp", {{"dropout", 0.9}, {"in_features", int64_t{6}}, {"num_classes", int64_t{3}}});
  Task task = Task::resolve("cross_entropy", {"accuracy"});
  testing::TempDir dir("eval_test");
  data::writeSynthetic({50, 6, 3, 1}, dir.file("s.h5"));
  data::SplitSource split(data::SourceSpec{{dir.file("s.h5")}, "train", "features", "labels", 3});
  dist::MpiCommunicator self(MPI_COMM_SELF, std::chrono::seconds(30));
  m.module->train();
  EvalResult a = evaluate(m, task, split, {}, 16, self);
  EvalResult b = evaluate(m, task, split, {}, 7, self);
  EXPECT_EQ(a.samples, 50);
  EXPECT_DOUBLE_EQ(a.value("accuracy"), b.value("accuracy"));
  EXPECT_NEAR(a.loss(), b.loss(), 1e-6);
  EXPECT_EQ(a.classSamples.size(), 3u) << "a classifier's evaluation counts per class";
  EXPECT_TRUE(m.module->is_training()) << "evaluation must restore the training mode";
}

}  // namespace
}  // namespace forge::train
