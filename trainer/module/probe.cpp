#include "trainer/module/probe.h"

#include <ATen/record_function.h>
#include <torch/torch.h>

#include <deque>
#include <exception>
#include <map>
#include <unordered_map>

#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "trainer/module/rules.h"

namespace forge::train {
namespace {

std::string firstLine(const std::string& s) { return s.substr(0, s.find('\n')); }

void probeStages(const ModelHandle& model, const at::Tensor& x, const std::string& dataName) {
  std::map<std::string, std::string> layers;
  for (const auto& child : model.module->named_children()) layers[child.key()] = describeModule(*child.value());
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

// The last operations forward started, oldest first, each with its tensor inputs: the last
// is the one that failed; the ones before it show the parameters its layer handed on (a
// Linear passes its weight through t() before addmm sees it as a view).
struct OpTrace {
  static constexpr size_t kKept = 32;
  struct Op {
    std::string name;
    std::vector<std::vector<int64_t>> shapes;
    std::vector<const c10::TensorImpl*> tensors;
  };
  std::deque<Op> ops;
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
  tActiveTrace->ops.push_back(std::move(op));
  if (tActiveTrace->ops.size() > OpTrace::kKept) tActiveTrace->ops.pop_front();
  return nullptr;
}

// Runs forward with every operation traced; a failure is explained from the trace.
at::Tensor tracedForward(const ModelHandle& model, const data::Batch& batch, const std::string& dataName) {
  OpTrace trace;
  tActiveTrace = &trace;
  auto handle = at::addThreadLocalCallback(at::RecordFunctionCallback(onEnter).needsInputs(true));
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
  // Parameters and buffers name the layer an operation belongs to (BatchNorm's counter is a buffer).
  std::unordered_map<const c10::TensorImpl*, std::string> params;
  for (const auto& p : model.module->named_parameters()) params[p.value().unsafeGetTensorImpl()] = p.key();
  for (const auto& b : model.module->named_buffers()) params[b.value().unsafeGetTensorImpl()] = b.key();
  std::string opText, paramText;
  if (!trace.ops.empty()) {
    const auto& inner = trace.ops.back();
    std::string shapes;
    for (const auto& s : inner.shapes) shapes += (shapes.empty() ? "" : ", ") + dimsText(s);
    opText = concat(" in ", inner.name, shapes.empty() ? "" : concat(" on inputs ", shapes));
    // The latest operation that took a parameter tells the layer; the layer's parameters
    // that the recent operations took are named with their shapes.
    std::string layer;
    for (auto op = trace.ops.rbegin(); op != trace.ops.rend() && layer.empty(); ++op) {
      for (const c10::TensorImpl* t : op->tensors) {
        auto it = params.find(t);
        if (it != params.end()) {
          layer = it->second.substr(0, it->second.rfind('.'));
          break;
        }
      }
    }
    if (!layer.empty()) {
      std::map<std::string, std::string> used;  // name -> shape, in name order
      for (const auto& op : trace.ops) {
        for (size_t i = 0; i < op.tensors.size(); ++i) {
          auto it = params.find(op.tensors[i]);
          if (it != params.end() && it->second.rfind(layer + ".", 0) == 0) used[it->second] = dimsText(op.shapes[i]);
        }
      }
      std::string def, list;
      for (const auto& m : model.module->named_modules()) {
        if (m.key() == layer) def = " " + describeModule(*m.value());
      }
      for (const auto& [name, shape] : used) list += concat(list.empty() ? "" : ", ", name, " ", shape);
      paramText = concat(", in layer '", layer, "'", def, " (tensors ", list, ")");
    }
  }
  // One sample per batch is what training-mode BatchNorm cannot take: the key to change.
  const std::string hint = batch.x.dim() > 0 && batch.x.size(0) == 1 ? "; the batch holds 1 sample (data.batch_size)" : "";
  throw ConfigError(concat("model and data do not fit: forward failed", opText, paramText, " (batch from ", dataName,
                           ", inputs of shape ", dimsText(batch.x.sizes().vec()), hint, "): ", what));
}

}  // namespace

std::string describeModule(const torch::nn::Module& m) {
  std::ostringstream def;
  m.pretty_print(def);
  std::string text = def.str();
  for (const std::string ns : {"torch::nn::", "forge::train::"}) {
    for (size_t at; (at = text.find(ns)) != std::string::npos;) text.erase(at, ns.size());
  }
  return text;
}

void probeModel(const ModelHandle& model, const data::Batch& batch, const std::string& dataName, const LossSpec& loss,
                const std::vector<const MetricSpec*>& metrics, bool allowUnusedParameters) {
  torch::nn::Module& m = *model.module;
  const bool wasTraining = m.is_training();
  std::map<std::string, at::Tensor> buffers;  // by name: forward may register new ones
  for (const auto& b : m.named_buffers()) buffers[b.key()] = b.value().clone();
  at::Tensor rng;
  {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    rng = gen.get_state();
  }
  struct Restore {
    torch::nn::Module& m;
    bool training;
    std::map<std::string, at::Tensor>& buffers;
    at::Tensor& rng;
    ~Restore() {
      try {
        torch::NoGradGuard noGrad;
        for (auto& b : m.named_buffers()) {
          auto it = buffers.find(b.key());
          // A buffer forward replaced by one of another shape keeps the new one.
          if (it != buffers.end() && it->second.sizes() == b.value().sizes()) b.value().copy_(it->second);
        }
        m.train(training);
        auto gen = at::detail::getDefaultCPUGenerator();
        std::lock_guard<std::mutex> lock(gen.mutex());
        gen.set_state(rng);
      } catch (const std::exception& e) {
        log::warn("train", "the shape probe could not restore the model's buffers: ", e.what());
      }
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
  for (const MetricSpec* metric : metrics) {
    std::string problem = metric->check ? metric->check(out, batch) : std::string();
    if (!problem.empty()) {
      throw ConfigError(concat(problem, " (task.metrics: ", metric->name, ", batch from ", dataName, ")"));
    }
  }
  at::Tensor value;
  try {
    value = loss.loss(out, batch);
  } catch (const c10::Error& e) {
    throw ConfigError(concat("the loss ", loss.name, " cannot take the model's output of shape ",
                             dimsText(out.sizes().vec()), " with targets of shape ", dimsText(batch.y.sizes().vec()),
                             ": ", firstLine(e.what_without_backtrace())));
  }
  if (value.numel() != 1 || !value.is_floating_point()) {
    throw ConfigError(concat("the loss ", loss.name, " returned ", at::toString(value.scalar_type()), " of shape ",
                             dimsText(value.sizes().vec()), ", not one floating-point number: reduce it to the batch "
                             "mean"));
  }
  checkAutogradGraph(m, value, allowUnusedParameters);
}

}  // namespace forge::train
