#include "trainer/models/cnn.h"

#include <torch/torch.h>

#include "core/error.h"
#include "core/strings.h"

namespace forge::train {

std::function<std::string(const std::vector<int64_t>&)> imageShapeRule() {
  return [](const std::vector<int64_t>& v) {
    bool ok = v.size() == 3 && v[0] > 0 && v[1] >= 4 && v[2] >= 4;
    return ok ? std::string() : std::string("must be [channels, height, width] with height and width at least 4");
  };
}

std::string imageInputProblem(const std::vector<int64_t>& shape, const Options& o) {
  // Flat samples are reshaped to the image; the element count must match.
  int64_t features = 1, image = 1;
  for (int64_t d : shape) features *= d;
  const auto& in = o.get<std::vector<int64_t>>("input_shape");
  for (int64_t d : in) image *= d;
  if (features == image) return std::string();
  return concat("samples have shape ", dimsText(shape), " (", features, " values) but the model takes ", dimsText(in),
                " (", image, " values, model.input_shape)");
}

Cnn::Cnn(std::vector<int64_t> shape, std::vector<int64_t> channels, int64_t hidden, int64_t classes, double p) {
  const int64_t c = shape[0], h = shape[1], w = shape[2];
  const int64_t c1 = channels[0], c2 = channels[1];
  conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(c, c1, 3).padding(1)));
  conv2 = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(c1, c2, 3).padding(1)));
  fc1 = register_module("fc1", torch::nn::Linear(c2 * (h / 4) * (w / 4), hidden));
  dropout = register_module("dropout", torch::nn::Dropout(p));
  fc2 = register_module("fc2", torch::nn::Linear(hidden, classes));
  std::vector<int64_t> image = {-1, c, h, w};
  addStage("reshape", [image](const at::Tensor& x) { return x.reshape(image); });
  addStage("conv1", [this](const at::Tensor& x) { return conv1(x); });
  addStage("relu1+pool1", [](const at::Tensor& x) { return torch::max_pool2d(torch::relu(x), 2); });
  addStage("conv2", [this](const at::Tensor& x) { return conv2(x); });
  addStage("relu2+pool2", [](const at::Tensor& x) { return torch::max_pool2d(torch::relu(x), 2); });
  addStage("flatten", [](const at::Tensor& x) { return x.flatten(1); });
  addStage("fc1", [this](const at::Tensor& x) { return fc1(x); });
  addStage("relu3", [](const at::Tensor& x) { return torch::relu(x); });
  addStage("dropout", [this](const at::Tensor& x) { return dropout(x); });
  addStage("fc2", [this](const at::Tensor& x) { return fc2(x); });
}

ModelSpec cnnModel() {
  ModelSpec s;
  s.name = "cnn";
  s.help = "two 3x3 conv + max-pool blocks, then fc1 -> ReLU -> dropout -> fc2, over C x H x W images";
  s.options
      .add<std::vector<int64_t>>("input_shape", {1, 28, 28}, "[channels, height, width] of a sample",
                                 imageShapeRule())
      .add<std::vector<int64_t>>("channels", {16, 32}, "output channels of conv1 and conv2",
                                 [](const std::vector<int64_t>& v) {
                                   bool ok = v.size() == 2 && v[0] > 0 && v[1] > 0;
                                   return ok ? std::string() : std::string("must be two positive channel counts, e.g. [16, 32]");
                                 })
      .add<int64_t>("hidden", 256, "width of fc1", atLeast(1))
      .add<int64_t>("num_classes", 10, "outputs: classes (labels are checked against it)", atLeast(2))
      .add<double>("dropout", 0.0, "dropout probability before fc2", inRange(0, 1));
  s.make = [](const Options& o) {
    return wrapModel(std::make_shared<Cnn>(o.get<std::vector<int64_t>>("input_shape"),
                                           o.get<std::vector<int64_t>>("channels"), o.get<int64_t>("hidden"),
                                           o.get<int64_t>("num_classes"), o.get<double>("dropout")));
  };
  s.checkInput = imageInputProblem;
  return s;
}

}  // namespace forge::train
