#include "trainer/models/resnet.h"

#include <torch/torch.h>

#include "core/error.h"
#include "core/strings.h"
#include "trainer/models/cnn.h"

namespace forge::train {

namespace {

torch::nn::Conv2d conv3x3(int64_t in, int64_t out, int64_t stride) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).stride(stride).padding(1).bias(false));
}

// He initialization for the convolutions (fan-out, for ReLU), as torchvision's ResNets do;
// BatchNorm starts as the identity.
void initialize(torch::nn::Module& m) {
  torch::NoGradGuard noGrad;
  for (auto& sub : m.modules(/*include_self=*/false)) {
    if (auto* conv = sub->as<torch::nn::Conv2dImpl>()) {
      torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
    } else if (auto* bn = sub->as<torch::nn::BatchNorm2dImpl>()) {
      torch::nn::init::ones_(bn->weight);
      torch::nn::init::zeros_(bn->bias);
    }
  }
}

}  // namespace

BasicBlockImpl::BasicBlockImpl(int64_t in, int64_t out, int64_t stride) {
  conv1 = register_module("conv1", conv3x3(in, out, stride));
  bn1 = register_module("bn1", torch::nn::BatchNorm2d(out));
  conv2 = register_module("conv2", conv3x3(out, out, 1));
  bn2 = register_module("bn2", torch::nn::BatchNorm2d(out));
  if (stride != 1 || in != out) {
    shortcut = register_module(
        "shortcut", torch::nn::Sequential(torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 1).stride(stride).bias(false)),
                                          torch::nn::BatchNorm2d(out)));
  }
}

at::Tensor BasicBlockImpl::forward(const at::Tensor& x) {
  at::Tensor y = torch::relu(bn1(conv1(x)));
  y = bn2(conv2(y));
  return torch::relu(y + (shortcut ? shortcut->forward(x) : x));
}

ResNet::ResNet(std::vector<int64_t> shape, int64_t depth, int64_t width, int64_t classes) {
  const int64_t blocks = (depth - 2) / 6;
  conv1 = register_module("conv1", conv3x3(shape[0], width, 1));
  bn1 = register_module("bn1", torch::nn::BatchNorm2d(width));
  auto stage = [blocks](int64_t in, int64_t out, int64_t stride) {
    torch::nn::Sequential s;
    for (int64_t b = 0; b < blocks; ++b) s->push_back(BasicBlock(b == 0 ? in : out, out, b == 0 ? stride : 1));
    return s;
  };
  layer1 = register_module("layer1", stage(width, width, 1));
  layer2 = register_module("layer2", stage(width, 2 * width, 2));
  layer3 = register_module("layer3", stage(2 * width, 4 * width, 2));
  fc = register_module("fc", torch::nn::Linear(4 * width, classes));
  initialize(*this);
  std::vector<int64_t> image = {-1, shape[0], shape[1], shape[2]};
  addStage("reshape", [image](const at::Tensor& x) { return x.reshape(image); });
  addStage("conv1", [this](const at::Tensor& x) { return conv1(x); });
  addStage("bn1+relu", [this](const at::Tensor& x) { return torch::relu(bn1(x)); });
  addStage("layer1", [this](const at::Tensor& x) { return layer1->forward(x); });
  addStage("layer2", [this](const at::Tensor& x) { return layer2->forward(x); });
  addStage("layer3", [this](const at::Tensor& x) { return layer3->forward(x); });
  addStage("avgpool", [](const at::Tensor& x) { return x.mean({2, 3}); });
  addStage("fc", [this](const at::Tensor& x) { return fc(x); });
}

ModelSpec resnetModel() {
  ModelSpec s;
  s.name = "resnet";
  s.help = "CIFAR-style residual network: conv 3x3, three stages of basic blocks (BatchNorm2d), global average "
           "pool, fc; for C x H x W images";
  s.options
      .add<std::vector<int64_t>>("input_shape", {1, 28, 28}, "[channels, height, width] of a sample",
                                 imageShapeRule())
      .add<int64_t>("depth", 20, "layers: 6n + 2 for n basic blocks per stage (8, 14, 20, 32, 44, 56, 110)",
                    [](const int64_t& d) {
                      return d >= 8 && (d - 2) % 6 == 0 ? std::string()
                                                        : std::string("must be 6n + 2 with n >= 1 (8, 14, 20, 32, ...)");
                    })
      .add<int64_t>("width", 16, "channels of the first stage (the second and third have 2x and 4x)", atLeast(1))
      .add<int64_t>("num_classes", 10, "outputs: classes (labels are checked against it)", atLeast(2));
  s.make = [](const Options& o) {
    return wrapModel(std::make_shared<ResNet>(o.get<std::vector<int64_t>>("input_shape"), o.get<int64_t>("depth"),
                                              o.get<int64_t>("width"), o.get<int64_t>("num_classes")));
  };
  s.checkInput = imageInputProblem;
  return s;
}

}  // namespace forge::train
