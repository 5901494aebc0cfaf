// forge config keys: every key a config may hold, from the declarations themselves.
// forge config check: a config as training would take it, checked without training.
#include <torch/torch.h>

#include <iostream>

#include "core/strings.h"
#include "core/table.h"
#include "trainer/app/commands.h"
#include "trainer/module/build.h"
#include "trainer/spec/registry.h"

namespace forge::train {
namespace {

const char* kConfigHelp = R"(usage: forge config keys [--markdown]
       forge config check CONFIG.yaml [--set key=value ...]

keys   lists every config key: the fixed sections' and those that each registered model,
       optimizer and schedule declares (marked with its name), with type, default and
       help. --markdown prints the table the README holds.
check  reads the config as `forge train` would (every key, type, range and part name) and
       builds the model, checking that it fits this node's memory; reads no data and
       starts no ranks. Exit 0 when the config is good, 2 with the problem named otherwise.
)";

int keys(const Args& a) {
  if (!a.positional.empty()) usage("forge config keys takes no arguments", kConfigHelp);
  const auto keys = configKeys();
  if (a.has("markdown")) {
    // A '|' in a cell would end it: escaped, as Markdown tables need.
    auto cell = [](std::string s) {
      for (size_t at = 0; (at = s.find('|', at)) != std::string::npos; at += 2) s.insert(at, "\\");
      return s;
    };
    std::cout << "| key | for | type | default | meaning |\n|---|---|---|---|---|\n";
    for (const auto& k : keys) {
      std::cout << "| `" << k.key << "` | " << (k.part.empty() ? "" : "`" + k.part + "`") << " | " << cell(k.type)
                << " | `" << cell(k.defaultText) << "` | " << cell(k.help) << " |\n";
    }
    return 0;
  }
  Table t({"key", "for", "type", "default", "meaning"});
  for (const auto& k : keys) t.row({k.key, k.part, k.type, k.defaultText, k.help});
  std::cout << t.str();
  return 0;
}

int check(const Args& a) {
  Config cfg = configFrom(a, kConfigHelp, "config check");
  torch::manual_seed(cfg.run.seed);
  ModelHandle model = buildRegisteredModel(registry().models.get(cfg.model.name), cfg.model.options, 5);
  int64_t params = 0;
  for (const auto& p : model.module->parameters()) params += p.numel();
  std::cout << "config " << a.positional[0] << " is valid: model " << cfg.model.name << " with "
            << withThousands(params) << " parameters, loss " << cfg.task.loss << ", optimizer " << cfg.optimizer.name
            << ", schedule " << cfg.schedule.name << ", " << cfg.run.epochs << " epoch(s)\n";
  return 0;
}

}  // namespace

int cmdConfig(int argc, char** argv) {
  if (auto code = subcommandOrHelp(argc, argv, kConfigHelp, "config", "")) return *code;
  const std::string sub = argv[2];
  if (sub != "keys" && sub != "check") usage(concat("unknown config command '", sub, "' (keys, check)"), kConfigHelp);
  Args a = parseArgs(argc, argv, 3, {"set"}, {"markdown"}, kConfigHelp);
  if (a.help) return std::cout << kConfigHelp, 0;
  return sub == "keys" ? keys(a) : check(a);
}

}  // namespace forge::train
