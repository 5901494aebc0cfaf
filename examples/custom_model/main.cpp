// A program of its own that is forge: forge's command line (train, eval, ckpt, model, config)
// with one more model and one more metric, each a definition plus one registration line.
//
//   mpirun -np 2 build-example/custom_model train examples/custom_model/config.yaml
#include <forge/forge.h>
#include <torch/torch.h>

#include <tuple>

// One pre-norm residual block: x + fc2(relu(fc1(norm(x)))).
struct ResBlockImpl : torch::nn::Module {
  explicit ResBlockImpl(int64_t width) {
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({width})));
    fc1 = register_module("fc1", torch::nn::Linear(width, width));
    fc2 = register_module("fc2", torch::nn::Linear(width, width));
  }
  at::Tensor forward(const at::Tensor& x) { return x + fc2(torch::relu(fc1(norm(x)))); }

  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(ResBlock);

// A plain torch::nn::Module, nothing of forge's: input Linear -> `blocks` residual blocks ->
// output Linear, over flattened samples. The blocks live in a ModuleList so that their
// parameters are registered (forge names any that are not, on the first step).
struct ResMlpImpl : torch::nn::Module {
  ResMlpImpl(int64_t inFeatures, int64_t width, int64_t numBlocks, int64_t numClasses) {
    input = register_module("input", torch::nn::Linear(inFeatures, width));
    blocks = register_module("blocks", torch::nn::ModuleList());
    for (int64_t i = 0; i < numBlocks; ++i) blocks->push_back(ResBlock(width));
    output = register_module("output", torch::nn::Linear(width, numClasses));
  }
  // x: the batch's features, [batch, ...]; returns [batch, classes] logits.
  at::Tensor forward(at::Tensor x) {
    x = input(x.flatten(1));
    for (const auto& block : *blocks) x = block->as<ResBlock>()->forward(x);
    return output(x);
  }

  torch::nn::Linear input{nullptr}, output{nullptr};
  torch::nn::ModuleList blocks{nullptr};
};
TORCH_MODULE(ResMlp);

// model.name: res_mlp. Its keys are declared here; the config reader checks them (type,
// range, unknown keys) and `forge config keys` lists them.
forge::ModelSpec resMlpModel() {
  forge::ModelSpec s;
  s.name = "res_mlp";
  s.help = "input Linear -> blocks x (x + fc2(relu(fc1(norm(x))))) -> output Linear, over flattened samples";
  s.options.add<int64_t>("in_features", 32, "features per sample (the product of the sample shape)", forge::atLeast(1))
      .add<int64_t>("width", 64, "width of the residual stream", forge::atLeast(1))
      .add<int64_t>("blocks", 2, "residual blocks", forge::atLeast(0))
      .add<int64_t>("num_classes", 4, "outputs: classes", forge::atLeast(2));
  s.make = [](const forge::Options& o) {
    return forge::wrapModel(ResMlp(o.get<int64_t>("in_features"), o.get<int64_t>("width"),
                                   o.get<int64_t>("blocks"), o.get<int64_t>("num_classes")));
  };
  return s;
}

// task.metrics: top2_accuracy, shown as "top2" on the epoch line. `sums` counts this batch's
// hits; forge adds them over batches and ranks and divides by the samples.
forge::MetricSpec top2AccuracyMetric() {
  forge::MetricSpec s;
  s.name = "top2_accuracy";
  s.label = "top2";
  s.help = "fraction of samples whose label is among the two highest logits";
  s.percent = true;
  s.sums = [](const at::Tensor& logits, const forge::data::Batch& b) {
    at::Tensor top2 = std::get<1>(logits.topk(2, /*dim=*/1));
    return top2.eq(b.y.unsqueeze(1)).any(1).sum().to(at::kDouble).reshape({1});
  };
  return s;
}

int main(int argc, char** argv) {
  forge::registerModel(resMlpModel());
  forge::registerMetric(top2AccuracyMetric());
  return forge::runMain(argc, argv);
}
