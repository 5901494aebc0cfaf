// The fixed config keys, each declared once: section, key, type and default (from the
// struct's initializer), check and help text. The parser, `forge config keys` and the
// README's table all read this list.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "trainer/config/config.h"

namespace forge::train {

struct Field {
  std::string section;  // "run", "data.normalize", ...
  OptionDecl decl;
  std::function<void(Config&, const OptionValue&)> assign;
};

const std::vector<Field>& schema();

// The top-level sections, in the order the README lists them.
const std::vector<std::string>& sectionNames();

// Sections whose `name` picks a registered part that declares more keys of the section.
enum class PartKind { kNone, kModel, kOptimizer, kSchedule };
PartKind partOf(const std::string& section);

}  // namespace forge::train
