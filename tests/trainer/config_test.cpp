#include <gtest/gtest.h>

#include <cstdlib>
#include <set>

#include "core/error.h"
#include "trainer/config/config.h"

namespace forge::train {
namespace {

std::string repoFile(const std::string& rel) {
  const char* root = std::getenv("FORGE_SOURCE_DIR");
  return std::string(root ? root : ".") + "/" + rel;
}

// The message of the ConfigError that parsing `yaml` raises ("" when it parses).
std::string errorOf(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  try {
    parseConfig(yaml, "test.yaml", overrides);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

const char* kMinimal = "data:\n  path: x.h5\n";

TEST(Config, TheMainJobConfigParsesWithItsDocumentedValues) {
  Config c = loadConfig(repoFile("configs/fashion_mnist_mlp.yaml"));
  EXPECT_EQ(c.model.name, "mlp");
  EXPECT_EQ(c.model.options.get<int64_t>("in_features"), 784);
  EXPECT_EQ(c.model.options.get<int64_t>("hidden"), 256);
  EXPECT_EQ(c.model.options.get<int64_t>("num_classes"), 10);
  EXPECT_DOUBLE_EQ(c.model.options.get<double>("dropout"), 0.3);
  EXPECT_EQ(c.task.loss, "cross_entropy");
  EXPECT_EQ(c.task.metrics, (std::vector<std::string>{"accuracy"}));
  EXPECT_EQ(c.data.batchSize, 64);
  EXPECT_EQ(c.optimizer.name, "sgd");
  EXPECT_EQ(c.distributed.backend, "auto");
  EXPECT_EQ(c.run.device, "auto");
  EXPECT_EQ(c.run.precision, "fp32");
  EXPECT_GE(c.run.epochs, 1);
}

TEST(Config, TheCnnConfigParses) {
  Config c = loadConfig(repoFile("configs/fashion_mnist_cnn.yaml"));
  EXPECT_EQ(c.model.name, "cnn");
  EXPECT_EQ(c.model.options.get<std::vector<int64_t>>("input_shape"), (std::vector<int64_t>{1, 28, 28}));
}

TEST(Config, DataPathAndNormalizationTakeOneValueOrAList) {
  Config c = parseConfig("data:\n  path: [a.h5, 'shards/*.h5']\n  normalize:\n    mean: [0.1, 0.2, 0.3]\n"
                         "    std: 2\n    stats: auto\n  buffer_mb: 16\n  non_finite: skip\n",
                         "t.yaml");
  EXPECT_EQ(c.data.paths, (std::vector<std::string>{"a.h5", "shards/*.h5"}));
  EXPECT_EQ(c.data.normalize.mean, (std::vector<double>{0.1, 0.2, 0.3}));
  EXPECT_EQ(c.data.normalize.std, (std::vector<double>{2.0}));
  EXPECT_EQ(c.data.normalize.stats, "auto");
  EXPECT_DOUBLE_EQ(c.data.bufferMb, 16);
  EXPECT_EQ(c.data.nonFinite, "skip");
  EXPECT_EQ(parseConfig(kMinimal, "t.yaml").data.paths, (std::vector<std::string>{"x.h5"}));
  auto err = [](const std::string& text) {
    try {
      parseConfig(text, "t.yaml");
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(err("data:\n  path: x.h5\n  normalize:\n    std: [1, 0]\n").find("must be positive"), std::string::npos);
  EXPECT_NE(err("data:\n  path: x.h5\n  non_finite: ignore\n").find("'ignore' is not a policy"), std::string::npos);
}

TEST(Config, OverridesReplaceValuesByDottedPath) {
  Config c = parseConfig(kMinimal, "test.yaml", {"run.epochs=2", "optimizer.lr=0.01", "data.normalize.std=0.5",
                                                 "optimizer.name=adam", "optimizer.betas=[0.8, 0.9]"});
  EXPECT_EQ(c.run.epochs, 2);
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 0.01);
  EXPECT_EQ(c.data.normalize.std, (std::vector<double>{0.5}));
  EXPECT_EQ(c.optimizer.options.get<std::vector<double>>("betas"), (std::vector<double>{0.8, 0.9}));
  // The resolved text holds the override, so the run's saved config reproduces it.
  EXPECT_NE(c.resolved.find("epochs: 2"), std::string::npos);
}

TEST(Config, UnknownKeyNamesFileLineAndTheNearestValidKey) {
  std::string e = errorOf("data:\n  path: x.h5\noptimiser:\n  lr: 0.1\n");
  EXPECT_NE(e.find("config error in test.yaml:3: unknown key 'optimiser' (did you mean 'optimizer'?)"),
            std::string::npos)
      << e;
  e = errorOf("data:\n  path: x.h5\n  batch_sise: 3\n");
  EXPECT_NE(e.find("test.yaml:3: unknown key 'batch_sise' in 'data' (did you mean 'batch_size'?)"), std::string::npos)
      << e;
}

TEST(Config, UnknownKeyWithoutACloseMatchListsTheValidOnes) {
  std::string e = errorOf("data:\n  path: x.h5\nrun:\n  colour: red\n");
  EXPECT_NE(e.find("test.yaml:4: unknown key 'colour' in 'run' (valid keys: dir, seed, epochs, threads, device, precision, deterministic, keep_freed_memory, max_steps, max_time)"),
            std::string::npos)
      << e;
}

TEST(Config, KeysOfAnotherModelAreRejected) {
  std::string e = errorOf("data:\n  path: x.h5\nmodel:\n  name: mlp\n  channels: [4, 8]\n");
  EXPECT_NE(e.find("test.yaml:5: unknown key 'channels' in 'model' for model 'mlp'"), std::string::npos) << e;
}

TEST(Config, WrongTypeSaysWhatWasExpected) {
  std::string e = errorOf("data:\n  path: x.h5\nrun:\n  epochs: ten\n");
  EXPECT_NE(e.find("test.yaml:4: run.epochs must be an integer, got 'ten'"), std::string::npos) << e;
  e = errorOf("data:\n  path: x.h5\n  shuffle: maybe\n");
  EXPECT_NE(e.find("data.shuffle must be true or false, got 'maybe'"), std::string::npos) << e;
  e = errorOf("data:\n  path: x.h5\noptimizer:\n  lr: [1, 2]\n");
  EXPECT_NE(e.find("optimizer.lr must be a number, got a list"), std::string::npos) << e;
  e = errorOf("data:\n  path: x.h5\nrun:\n  seed: -3\n");
  EXPECT_NE(e.find("run.seed must be a non-negative integer"), std::string::npos) << e;
}

TEST(Config, OutOfRangeValuesAreRejectedWithTheirLine) {
  EXPECT_NE(errorOf("data:\n  path: x.h5\nrun:\n  epochs: 0\n").find("test.yaml:4: run.epochs must be at least 1, got 0"),
            std::string::npos);
  EXPECT_NE(errorOf("data:\n  path: x.h5\n  batch_size: -4\n").find("data.batch_size must be at least 1"),
            std::string::npos);
  EXPECT_NE(errorOf("data:\n  path: x.h5\noptimizer:\n  lr: 0\n").find("optimizer.lr must be positive"),
            std::string::npos);
  EXPECT_NE(errorOf("data:\n  path: x.h5\nmodel:\n  dropout: 1.5\n").find("model.dropout must be in [0, 1)"),
            std::string::npos);
  EXPECT_NE(errorOf("data:\n  path: x.h5\noptimizer:\n  name: adagrad\n").find("optimizer.name 'adagrad' is not a registered optimizer"),
            std::string::npos);
  EXPECT_NE(errorOf("data:\n  path: x.h5\nmodel:\n  name: mpl\n").find("test.yaml:4: model.name 'mpl' is not a registered model (did you mean 'mlp'?)"),
            std::string::npos);
  EXPECT_NE(errorOf("data:\n  path: x.h5\ndistributed:\n  timeout_s: -1\n").find("distributed.timeout_s must be at least 1 second"),
            std::string::npos);
}

TEST(Config, YamlThatWouldBeReadOtherwiseThanWrittenIsRefused) {
  // yaml-cpp answers a lookup with the first of two equal keys, and Load() with the first
  // document: each would drop what the user wrote without a word.
  EXPECT_NE(errorOf("data:\n  path: x.h5\noptimizer:\n  lr: 0.1\n  lr: 0.2\n").find("test.yaml:5: 'optimizer.lr' appears twice"),
            std::string::npos);
  EXPECT_NE(errorOf("data:\n  path: x.h5\ndata:\n  batch_size: 4\n").find("test.yaml:3: 'data' appears twice"),
            std::string::npos);
  EXPECT_NE(errorOf("data:\n  path: x.h5\n---\nrun:\n  epochs: 2\n").find("holds 2 YAML documents"), std::string::npos);
  EXPECT_NE(errorOf("data:\n  path: x.h5\n  ? [a, b]\n  : 1\n").find("a key in 'data' is a list, not a name"),
            std::string::npos);
  EXPECT_NE(errorOf("data:\n  path: x.h5\n", {"data.normalize.mean=[0.1] 0.2"}).find("more than one YAML value"),
            std::string::npos);
  EXPECT_NE(errorOf("data:\n  path: x.h5\n", {"data.normalize.mean=[0.1]*784"}).find("value is not valid YAML"),
            std::string::npos);
  EXPECT_NE(errorOf("data:\n  path: x.h5\n", {"model={a: 1, a: 2}"}).find("--set model: 'model.a' appears twice"),
            std::string::npos);
}

TEST(Config, ValuesThatOverflowWhereTheyGoAreRefused) {
  EXPECT_NE(errorOf("data:\n  path: x.h5\noptimizer:\n  weight_decay: 1e300\n").find("within float32's range"),
            std::string::npos);
  EXPECT_NE(errorOf("data:\n  path: x.h5\ndistributed:\n  first_bucket_cap_mb: 1e-9\n").find("must be between 1 byte"),
            std::string::npos);
  EXPECT_NE(errorOf("data:\n  path: x.h5\ndistributed:\n  bucket_cap_mb: 1e30\n").find("must be between 1 byte"),
            std::string::npos);
  // A positive value float32 makes 0 (an eps of 1e-50 divides by zero).
  EXPECT_NE(errorOf("data:\n  path: x.h5\noptimizer:\n  lr: 1e-50\n").find("(1.2e-38 <= |x| <= 3.4e38)"),
            std::string::npos);
  EXPECT_NE(errorOf("data:\n  path: x.h5\n", {"optimizer.lr="}).find("no value (write optimizer.lr=~"), std::string::npos);
  // Aliases that expand without end ("billion laughs") are refused before they expand.
  std::string bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  for (char c = 'b'; c <= 'h'; ++c) {
    std::string prev(1, static_cast<char>(c - 1));
    bomb += concat(c, ": &", c, " [*", prev, ", *", prev, ", *", prev, ", *", prev, ", *", prev, ", *", prev, ", *",
                   prev, ", *", prev, ", *", prev, ", *", prev, "]\n");
  }
  EXPECT_NE(errorOf(bomb).find("expands to more than 100000 values through its aliases"), std::string::npos);
  // Large deadlines are "no deadline", not an overflow into the past.
  EXPECT_EQ(errorOf("data:\n  path: x.h5\ndistributed:\n  timeout_s: 1e10\n"), "");
}

TEST(Config, AnOptimizersKeysBelongToItAlone) {
  // momentum is SGD's: with adam it would be silently ignored, so it is refused.
  std::string e = errorOf("data:\n  path: x.h5\noptimizer:\n  name: adam\n  momentum: 0.9\n");
  EXPECT_NE(e.find("test.yaml:5: unknown key 'momentum' in 'optimizer' for optimizer 'adam'"), std::string::npos) << e;
  Config c = parseConfig("data:\n  path: x.h5\noptimizer:\n  name: sgd\n  momentum: 0.9\n  nesterov: true\n", "t.yaml");
  EXPECT_DOUBLE_EQ(c.optimizer.options.get<double>("momentum"), 0.9);
  EXPECT_TRUE(c.optimizer.options.get<bool>("nesterov"));
  EXPECT_NE(e.find("(it is a key of optimizer sgd: remove it, or drop it with --set optimizer.momentum=~)"),
            std::string::npos)
      << e;
  // Switching optimizers from the command line: the other's key dropped with ~.
  c = parseConfig("data:\n  path: x.h5\noptimizer:\n  name: sgd\n  momentum: 0.9\n", "t.yaml",
                  {"optimizer.name=adam", "optimizer.momentum=~"});
  EXPECT_EQ(c.optimizer.name, "adam");
  EXPECT_FALSE(c.optimizer.options.has("momentum"));
  e = errorOf("data:\n  path: x.h5\nschedule:\n  name: step\n  gamma: 0\n");
  EXPECT_NE(e.find("schedule.gamma must be in (0, 1], got 0"), std::string::npos) << e;
  e = errorOf("data:\n  path: x.h5\nschedule:\n  name: constant\n  gamma: 0.5\n");
  EXPECT_NE(e.find("unknown key 'gamma' in 'schedule' for schedule 'constant'"), std::string::npos) << e;
}

TEST(Config, NonFiniteNumbersAreRefusedWhereTheyAreWritten) {
  for (const char* v : {".nan", ".inf", "-.inf"}) {
    std::string e = errorOf(kMinimal, {std::string("optimizer.lr=") + v});
    EXPECT_NE(e.find("--set optimizer.lr: optimizer.lr must be 0 or a finite number"), std::string::npos) << v << ": " << e;
  }
  std::string e = errorOf("data:\n  path: x.h5\n  normalize:\n    mean: [0, .nan]\n");
  EXPECT_NE(e.find("test.yaml:4: data.normalize.mean must be 0 or a finite number"), std::string::npos) << e;
}

TEST(Config, UnknownTaskPartsAreNamedWithTheirLine) {
  std::string e = errorOf("data:\n  path: x.h5\ntask:\n  metrics: [accuracy, acuracy]\n");
  EXPECT_NE(e.find("test.yaml:4: task.metrics 'acuracy' is not a registered metric (did you mean 'accuracy'?)"),
            std::string::npos)
      << e;
  e = errorOf("data:\n  path: x.h5\ntask:\n  metrics: [accuracy, accuracy]\n");
  EXPECT_NE(e.find("task.metrics names 'accuracy' twice"), std::string::npos) << e;
  e = errorOf("data:\n  path: x.h5\ntask:\n  loss: mae\n");
  EXPECT_NE(e.find("test.yaml:4: task.loss 'mae' is not a registered loss"), std::string::npos) << e;
  e = errorOf("data:\n  path: x.h5\ntask:\n  name: regresion\n");
  EXPECT_NE(e.find("task.name"), std::string::npos) << e;
  EXPECT_NE(e.find("regression"), std::string::npos) << e;
}

TEST(Config, TheTaskGivesTheLossAndMetricsTheConfigDoesNotName) {
  Config c = parseConfig(std::string(kMinimal) + "task:\n  name: regression\n", "test.yaml", {});
  EXPECT_EQ(c.task.loss, "mse");
  EXPECT_EQ(c.task.metrics, (std::vector<std::string>{"mse", "mae", "r2"}));
  c = parseConfig(kMinimal, "test.yaml", {"task.name=language_model"});
  EXPECT_EQ(c.task.loss, "cross_entropy");
  EXPECT_EQ(c.task.metrics, (std::vector<std::string>{"perplexity", "bits_per_token", "token_accuracy"}));
  c = parseConfig(std::string(kMinimal) + "task:\n  name: regression\n  loss: huber\n  metrics: [mae]\n", "test.yaml", {});
  EXPECT_EQ(c.task.loss, "huber");  // named: kept
  EXPECT_EQ(c.task.metrics, (std::vector<std::string>{"mae"}));
  c = parseConfig(kMinimal, "test.yaml", {});
  EXPECT_EQ(c.task.name, "classification");
  EXPECT_EQ(c.task.metrics, (std::vector<std::string>{"accuracy"}));
}

TEST(Config, EveryKeyIsListedOnceWithTypeDefaultAndHelp) {
  auto keys = configKeys();
  std::set<std::string> seen;
  for (const auto& k : keys) {
    EXPECT_FALSE(k.help.empty()) << k.key;
    EXPECT_FALSE(k.type.empty()) << k.key;
    EXPECT_TRUE(seen.insert(k.key + "/" + k.part).second) << "listed twice: " << k.key << " " << k.part;
  }
  EXPECT_TRUE(seen.count("optimizer.lr/")) << "a fixed key";
  EXPECT_TRUE(seen.count("optimizer.momentum/sgd")) << "an optimizer's own key";
  EXPECT_TRUE(seen.count("model.hidden/mlp")) << "a model's own key";
  EXPECT_TRUE(seen.count("schedule.min_lr/cosine")) << "a schedule's own key";
  // Every key the main job's config holds is among them.
  Config c = loadConfig(repoFile("configs/fashion_mnist_mlp.yaml"));
  for (const auto& [k, v] : c.model.options.values()) EXPECT_TRUE(seen.count("model." + k + "/mlp")) << k;
}

TEST(Config, MissingRequiredDataPathIsAnError) {
  EXPECT_NE(errorOf("run:\n  epochs: 1\n").find("data.path is required"), std::string::npos);
}

TEST(Config, ErrorsFromOverridesNameTheOption) {
  std::string e = errorOf(kMinimal, {"run.epochs=zero"});
  EXPECT_NE(e.find("config error in --set run.epochs: run.epochs must be an integer, got 'zero'"), std::string::npos)
      << e;
  e = errorOf(kMinimal, {"optimiser.lr=0.1"});
  EXPECT_NE(e.find("--set optimiser: unknown key 'optimiser' (did you mean 'optimizer'?)"), std::string::npos) << e;
  e = errorOf(kMinimal, {"run.epochs"});
  EXPECT_NE(e.find("expected key=value"), std::string::npos) << e;
}

TEST(Config, InvalidYamlAndMissingFileAreClearErrors) {
  std::string e = errorOf("data:\n  path: [x.h5\n");
  EXPECT_NE(e.find("invalid YAML"), std::string::npos) << e;
  try {
    loadConfig("no/such/config.yaml");
    FAIL() << "no throw";
  } catch (const ConfigError& err) {
    EXPECT_NE(std::string(err.what()).find("cannot read config file 'no/such/config.yaml'"), std::string::npos);
    EXPECT_EQ(err.exitCode(), 2);
  }
}

}  // namespace
}  // namespace forge::train
