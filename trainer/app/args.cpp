#include "trainer/app/args.h"

#include <cmath>
#include <iostream>

#include "core/error.h"
#include "core/strings.h"

namespace forge::train {

std::string Args::one(const std::string& k, const std::string& fallback) const {
  auto it = options.find(k);
  return it == options.end() ? fallback : it->second.back();
}

std::vector<std::string> Args::all(const std::string& k) const {
  auto it = options.find(k);
  return it == options.end() ? std::vector<std::string>{} : it->second;
}

void usage(const std::string& msg, const char* help) { throw ConfigError(concat("usage error: ", msg, "\n", help)); }

Args parseArgs(int argc, char** argv, int first, const std::set<std::string>& valued,
               const std::set<std::string>& flags, const char* help) {
  Args a;
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      a.help = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0) {
      a.positional.push_back(arg);
      continue;
    }
    std::string key = arg.substr(2), value;
    bool inlineValue = false;
    if (auto eq = key.find('='); eq != std::string::npos && valued.count(key.substr(0, eq))) {
      value = key.substr(eq + 1);
      key = key.substr(0, eq);
      inlineValue = true;
    }
    if (flags.count(key)) {
      a.options[key].push_back("1");
    } else if (valued.count(key)) {
      if (!inlineValue) {
        if (i + 1 >= argc) usage(concat("option --", key, " needs a value"), help);
        value = argv[++i];
      }
      a.options[key].push_back(value);
    } else {
      std::vector<std::string> all(valued.begin(), valued.end());
      all.insert(all.end(), flags.begin(), flags.end());
      std::string hint = nearest(key, all);
      usage(concat("unknown option --", key, hint.empty() ? "" : concat(" (did you mean --", hint, "?)")), help);
    }
  }
  return a;
}

std::optional<int> subcommandOrHelp(int argc, char** argv, const char* help, const std::string& command,
                                    const std::string& only) {
  if (argc < 3 || std::string(argv[2]) == "--help" || std::string(argv[2]) == "-h") {
    std::cout << help;
    return argc < 3 ? 2 : 0;
  }
  if (!only.empty() && argv[2] != only) usage(concat("unknown ", command, " command '", argv[2], "'"), help);
  return std::nullopt;
}

int64_t parseInt(const std::string& text, const std::string& option) {
  try {
    size_t used = 0;
    long long v = std::stoll(text, &used);
    if (used == text.size()) return v;
  } catch (const std::exception&) {
  }
  throw ConfigError(concat("usage error: --", option, " must be an integer, got '", text, "'"));
}

double parseDouble(const std::string& text, const std::string& option) {
  try {
    size_t used = 0;
    double v = std::stod(text, &used);
    if (used == text.size() && std::isfinite(v)) return v;
  } catch (const std::exception&) {
  }
  throw ConfigError(concat("usage error: --", option, " must be a finite number, got '", text, "'"));
}

}  // namespace forge::train
