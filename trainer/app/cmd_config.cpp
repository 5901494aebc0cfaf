// forge config keys: every key a config may hold, from the declarations themselves.
#include <iostream>

#include "core/strings.h"
#include "core/table.h"
#include "trainer/app/commands.h"

namespace forge::train {
namespace {

const char* kConfigHelp = R"(usage: forge config keys [--markdown]

Lists every config key: the fixed sections' and those that each registered model,
optimizer and schedule declares (marked with its name), with type, default and help.
--markdown prints the table the README holds.
)";

}  // namespace

int cmdConfig(int argc, char** argv) {
  if (auto code = subcommandOrHelp(argc, argv, kConfigHelp, "config", "keys")) return *code;
  Args a = parseArgs(argc, argv, 3, {}, {"markdown"}, kConfigHelp);
  if (a.help) return std::cout << kConfigHelp, 0;
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

}  // namespace forge::train
