// Command-line options of forge's commands: "--key value", "--key=value" and flags, each
// command declaring which it takes; anything else is a usage error with a suggestion.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace forge::train {

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::vector<std::string>> options;
  bool help = false;

  bool has(const std::string& k) const { return options.count(k) > 0; }
  std::string one(const std::string& k, const std::string& fallback = "") const;
  std::vector<std::string> all(const std::string& k) const;
};

// ConfigError (exit 2) with the message and the command's help.
[[noreturn]] void usage(const std::string& msg, const char* help);

Args parseArgs(int argc, char** argv, int first, const std::set<std::string>& valued,
               const std::set<std::string>& flags, const char* help);

// For a command with subcommands (`forge ckpt inspect`): prints `help` and returns the exit
// code when argv[2] is missing (2) or asks for help (0); a subcommand other than `only` (when
// given) is a usage error. nullopt: go on with argv[2].
std::optional<int> subcommandOrHelp(int argc, char** argv, const char* help, const std::string& command,
                                    const std::string& only = "");

int64_t parseInt(const std::string& text, const std::string& option);
double parseDouble(const std::string& text, const std::string& option);

}  // namespace forge::train
