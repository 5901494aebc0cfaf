// Command-line options of forge's commands: "--key value", "--key=value" and flags, each
// command declaring which it takes; anything else is a usage error with a suggestion.
#pragma once

#include <map>
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

int64_t parseInt(const std::string& text, const std::string& option);
double parseDouble(const std::string& text, const std::string& option);

}  // namespace forge::train
