#include "trainer/module/probe.h"

#include <ATen/record_function.h>
#include <torch/torch.h>

#include <exception>
#include <map>
#include <unordered_map>

#include "core/error.h"
#include "core/strings.h"
#include "trainer/module/rules.h"

namespace forge::train {
namespace {

std::string firstLine(const std::string& s) { return s.substr(0, s.find('\n')); }

std::string definition(const torch::nn::Module& m) {
  std::ostringstream def;
  m.pretty_print(def);
  std::string text = def.str();
  for (const std::string ns : {"torch::nn::", "forge::train::"}) {
    for (size_t at; (at = text.find(ns)) != std::string::npos;) text.erase(at, ns.size());
  }
  return text;
}

void probeStages(const ModelHandle& model, const at::Tensor& x, const std::string& dataName) {
  std::map<std::string, std::string> layers;
  for (const auto& child : model.module->named_children()) layers[child.key()] = definition(*child.value());
  torch::NoGradGuard noGrad;
  at::Tensor cur = x;
  for (const auto& stage : model.stages) {
    try {
      cur = stage.run(cur);
    } catch (const c10::Error& e) {
      auto it = layers.find(stage.name);
      std::string def = it == layers.end() ? "" : " " + it->second;
      throw ConfigError(concat("model and data do not fit: layer '", stage.name, "'", def,
                               " cannot take an input of shape ", dimsText(cur.sizes().vec()), " (batch from ", dataName,
                               ", samples of shape ", dimsText(x.sizes().slice(1).vec()), "): ",
                               firstLine(e.what_without_backtrace())));
    }
  }
}

// The operations running when forward failed, outermost first, each with its inputs.
struct OpTrace {
  struct Op {
    std::string name;
    std::vector<std::vector<int64_t>> shapes;
    std::vector<const c10::TensorImpl*> tensors;
  };
  std::vector<Op> stack;
};

thread_local OpTrace* tActiveTrace = nullptr;

std::unique_ptr<at::ObserverContext> onEnter(const at::RecordFunction& fn) {
  if (tActiveTrace == nullptr) return nullptr;
  OpTrace::Op op;
  op.name = fn.name();
  for (const auto& input : fn.inputs()) {
    if (!input.isTensor()) continue;
    const at::Tensor& t = input.toTensor();
    if (!t.defined()) continue;
    op.shapes.push_back(t.sizes().vec());
    op.tensors.push_back(t.unsafeGetTensorImpl());
  }
  tActiveTrace->stack.push_back(std::move(op));
  return nullptr;
}

void onExit(const at::RecordFunction&, at::ObserverContext*) {
  // While an exception unwinds, the stack stays as it was when the operation failed.
  if (tActiveTrace == nullptr || std::uncaught_exceptions() > 0 || tActiveTrace->stack.empty()) return;
  tActiveTrace->stack.pop_back();
}

// Runs forward with every operation traced; a failure is explained from the trace.
at::Tensor tracedForward(const ModelHandle& model, const data::Batch& batch, const std::string& dataName) {
  OpTrace trace;
  tActiveTrace = &trace;
  auto handle = at::addThreadLocalCallback(at::RecordFunctionCallback(onEnter, onExit).needsInputs(true));
  struct Done {
    at::CallbackHandle h;
    ~Done() {
      at::removeCallback(h);
      tActiveTrace = nullptr;
    }
  } done{handle};
  std::string what;
  try {
    return model.forward(batch);
  } catch (const c10::Error& e) {
    what = firstLine(e.what_without_backtrace());
  } catch (const std::exception& e) {
    what = firstLine(e.what());
  }
  std::unordered_map<const c10::TensorImpl*, std::string> params;
  for (const auto& p : model.module->named_parameters()) params[p.value().unsafeGetTensorImpl()] = p.key();
  std::string opText, paramText;
  if (!trace.stack.empty()) {
    const auto& inner = trace.stack.back();
    std::string shapes;
    for (const auto& s : inner.shapes) shapes += (shapes.empty() ? "" : ", ") + dimsText(s);
    opText = concat(" in ", inner.name, shapes.empty() ? "" : concat(" on inputs ", shapes));
    // The innermost operation that took a parameter tells the layer (linear passes its
    // weight on to addmm as a transposed view, which is no parameter).
    for (auto op = trace.stack.rbegin(); op != trace.stack.rend() && paramText.empty(); ++op) {
      for (size_t i = 0; i < op->tensors.size(); ++i) {
        auto it = params.find(op->tensors[i]);
        if (it == params.end()) continue;
        std::string layer = it->second.substr(0, it->second.rfind('.'));
        std::string def;
        for (const auto& m : model.module->named_modules()) {
          if (m.key() == layer) def = " " + definition(*m.value());
        }
        paramText = concat(", using parameter '", it->second, "' ", dimsText(op->shapes[i]), " of layer '", layer, "'", def);
        break;
      }
    }
  }
  throw ConfigError(concat("model and data do not fit: forward failed", opText, paramText, " (batch from ", dataName,
                           ", inputs of shape ", dimsText(batch.x.sizes().vec()), "): ", what));
}

}  // namespace

void probeModel(const ModelHandle& model, const data::Batch& batch, const std::string& dataName, const LossSpec& loss,
                bool allowUnusedParameters) {
  torch::nn::Module& m = *model.module;
  const bool wasTraining = m.is_training();
  std::vector<at::Tensor> buffers;
  for (const auto& b : m.buffers()) buffers.push_back(b.clone());
  at::Tensor rng;
  {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    rng = gen.get_state();
  }
  struct Restore {
    torch::nn::Module& m;
    bool training;
    std::vector<at::Tensor>& buffers;
    at::Tensor& rng;
    ~Restore() {
      torch::NoGradGuard noGrad;
      size_t i = 0;
      for (auto& b : m.buffers()) b.copy_(buffers[i++]);
      m.train(training);
      auto gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(rng);
    }
  } restore{m, wasTraining, buffers, rng};

  if (!model.stages.empty()) {
    m.eval();
    probeStages(model, batch.x, dataName);
  }
  m.train();
  at::Tensor out = tracedForward(model, batch, dataName);
  if (!out.defined()) throw ConfigError("the model's forward returned no tensor");
  out = out.to(at::kFloat);
  if (loss.check) {
    std::string problem = loss.check(out, batch);
    if (!problem.empty()) throw ConfigError(concat(problem, " (loss ", loss.name, ", batch from ", dataName, ")"));
  }
  at::Tensor value;
  try {
    value = loss.loss(out, batch);
  } catch (const c10::Error& e) {
    throw ConfigError(concat("the loss ", loss.name, " cannot take the model's output of shape ",
                             dimsText(out.sizes().vec()), " with targets of shape ", dimsText(batch.y.sizes().vec()),
                             ": ", firstLine(e.what_without_backtrace())));
  }
  if (value.numel() != 1) {
    throw ConfigError(concat("the loss ", loss.name, " returned shape ", dimsText(value.sizes().vec()),
                             ", not one number: reduce it to the batch mean"));
  }
  checkAutogradGraph(m, value, allowUnusedParameters);
}

}  // namespace forge::train
