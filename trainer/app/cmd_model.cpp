// forge model check: a model's parity with its Python twin.
#include <torch/torch.h>

#include <iostream>
#include <map>

#include "checkpoint/python_state_dict.h"
#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "core/table.h"
#include "trainer/app/commands.h"
#include "trainer/module/build.h"
#include "trainer/module/state_dict.h"
#include "trainer/spec/registry.h"

namespace forge::train {
namespace {

const char* kModelHelp = R"(usage: forge model check CONFIG.yaml --state-dict P.pt [--inputs X.pt --outputs Y.pt]
                         [--atol A] [--rtol R] [--set key=value ...]

Builds the model the config describes (model.name and its keys), loads P.pt into it
strictly (a state dict Python saved with torch.save(model.state_dict(), P.pt), or a forge
checkpoint): every missing or unexpected key and every shape mismatch is named.

With --inputs and --outputs, it also runs the model in eval mode on each input and
compares with Python's outputs. Both files are dicts of tensors with the same keys, as
Python writes them:
    model.eval()
    torch.save({"batch0": x}, "X.pt")
    with torch.no_grad(): torch.save({"batch0": model(x)}, "Y.pt")
An input is what forward takes (already normalized values, or integer token ids). For each key it prints the largest
absolute difference; an output passes when every element has
|forge - python| <= atol + rtol * |python| (defaults: atol 1e-5, rtol 1e-4).
Exit 0 when the state dict loads (and every output passes), 1 when an output differs,
2 for inputs or outputs that cannot be used (not a dict of tensors, keys that do not pair
up, an input the model cannot take), 4 for a state dict that does not fit or cannot be read.
)";

std::map<std::string, at::Tensor> tensorsOf(const std::string& path) {
  std::map<std::string, at::Tensor> out;
  try {
    for (auto& [k, t] : ckpt::loadPythonStateDict(path)) out[k] = t;
  } catch (const CheckpointError& e) {
    throw DataError(concat("'", path, "' is not a dict of tensors as torch.save({\"batch0\": x}, path) writes it (",
                           e.what(), ")"));
  }
  if (out.empty()) throw DataError(concat("'", path, "' holds no tensor"));
  return out;
}

}  // namespace

int cmdModel(int argc, char** argv) {
  if (auto code = subcommandOrHelp(argc, argv, kModelHelp, "model", "check")) return *code;
  Args a = parseArgs(argc, argv, 3, {"set", "state-dict", "inputs", "outputs", "atol", "rtol"}, {}, kModelHelp);
  if (a.help) return std::cout << kModelHelp, 0;
  if (a.positional.size() != 1) usage("forge model check takes exactly one CONFIG.yaml", kModelHelp);
  // The check reads no data: a config without data.path (a model's own file) is fine.
  std::vector<std::string> sets{"data.path=(model check reads no data)"};
  for (const auto& s : a.all("set")) sets.push_back(s);
  Config cfg = loadConfig(a.positional[0], sets);
  if (!a.has("state-dict")) usage("forge model check needs --state-dict P.pt", kModelHelp);
  if (a.has("inputs") != a.has("outputs")) usage("--inputs and --outputs go together", kModelHelp);
  const double atol = parseDouble(a.one("atol", "1e-5"), "atol"), rtol = parseDouble(a.one("rtol", "1e-4"), "rtol");
  if (atol < 0 || rtol < 0) usage("--atol and --rtol must not be negative", kModelHelp);

  torch::manual_seed(cfg.run.seed);
  ModelHandle model = buildRegisteredModel(registry().models.get(cfg.model.name), cfg.model.options, 1);
  const std::string sd = a.one("state-dict");
  loadModelStateDict(*model.module, ckpt::loadModelState(sd), sd);
  int64_t tensors = 0, elements = 0;
  for (const auto& [name, t] : modelStateDict(*model.module)) {
    ++tensors;
    elements += t.numel();
  }
  std::cout << "state dict " << sd << " loads strictly into model " << cfg.model.name << " (" << tensors << " tensors, "
            << withThousands(elements) << " elements)\n";
  if (!a.has("inputs")) return 0;

  auto inputs = tensorsOf(a.one("inputs"));
  auto outputs = tensorsOf(a.one("outputs"));
  for (const auto& [k, t] : inputs) {
    if (!outputs.count(k)) throw DataError(concat("'", a.one("outputs"), "' has no output '", k, "' for input '", k, "'"));
  }
  for (const auto& [k, t] : outputs) {
    if (!inputs.count(k)) throw DataError(concat("'", a.one("inputs"), "' has no input '", k, "' for output '", k, "'"));
  }
  model.module->eval();
  torch::NoGradGuard noGrad;
  using A = Table::Align;
  Table t({"output", "shape", "max |diff|", "max |python|", "within tolerance"}, {A::kLeft, A::kLeft, A::kRight, A::kRight, A::kLeft});
  std::vector<std::string> failed;
  for (const auto& [k, x] : inputs) {
    data::Batch batch{x.is_floating_point() ? x.to(at::kFloat) : x.to(at::kLong), at::Tensor()};  // token ids stay integers
    at::Tensor mine;
    try {
      mine = model.forward(batch).to(at::kDouble);
    } catch (const c10::Error& e) {
      std::string why = e.what_without_backtrace();
      throw DataError(concat("input '", k, "' of shape ", dimsText(x.sizes().vec()), " is not what model ", cfg.model.name,
                             " takes: ", why.substr(0, why.find('\n'))));
    }
    at::Tensor theirs = outputs[k].to(at::kDouble);
    if (mine.sizes() != theirs.sizes()) {
      throw DataError(concat("output '", k, "': forge's has shape ", dimsText(mine.sizes().vec()), ", Python's ",
                             dimsText(theirs.sizes().vec())));
    }
    at::Tensor diff = (mine - theirs).abs();
    const bool ok = diff.le(atol + rtol * theirs.abs()).all().item<bool>() && !diff.isnan().any().item<bool>();
    char d[32], m[32];
    std::snprintf(d, sizeof d, "%.3g", diff.numel() ? diff.max().item<double>() : 0.0);
    std::snprintf(m, sizeof m, "%.3g", theirs.numel() ? theirs.abs().max().item<double>() : 0.0);
    t.row({k, dimsText(mine.sizes().vec()), d, m, ok ? "yes" : "NO"});
    if (!ok) failed.push_back(k);
  }
  std::cout << t.str();
  if (!failed.empty()) {
    throw Error(concat("outputs differ from Python's beyond atol ", atol, " + rtol ", rtol, " x |python|: ", join(failed)));
  }
  std::cout << "all " << inputs.size() << " output(s) match Python's within atol " << atol << " + rtol " << rtol
            << " x |python|\n";
  return 0;
}

}  // namespace forge::train
