// A config's YAML read as written or refused: the file is a small regular text file, its
// aliases do not expand without end, and every key is a plain name given once (yaml-cpp
// would answer a lookup with the first of two equal keys, dropping the second unsaid).
// Every refusal is a ConfigError naming the file and line (or the --set option).
#pragma once

#include <yaml-cpp/yaml.h>

#include <functional>
#include <string>

namespace forge::train {

// "a map", "a list", "nothing" or the scalar quoted, for messages.
std::string describeYaml(const YAML::Node& n);

// The text of the config file at `path`: a regular file under 1 MiB without NUL bytes.
std::string readConfigText(const std::string& path);

// Refuses a YAML text whose aliases expand to more than 100,000 values (checked while
// parsing, before anything is expanded). `source` names it in the message.
void rejectAliasBombs(const std::string& text, const std::string& source);

// Every map key in `node` (at any depth) is a scalar that appears once; `where(mark)` says
// where a key is, `path` is the dotted path of `node` ("" at the top).
void rejectAmbiguousKeys(const YAML::Node& node, const std::function<std::string(const YAML::Mark&)>& where,
                         const std::string& path = "");

}  // namespace forge::train
