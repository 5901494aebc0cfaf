#include "trainer/config/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <set>

#include "core/error.h"
#include "core/strings.h"
#include "trainer/config/schema.h"
#include "trainer/config/yaml_input.h"
#include "trainer/spec/registry.h"
#include "trainer/tasks/kinds.h"

namespace forge::train {
namespace {

// Where a value came from: the file (with line) or a --set option.
struct Source {
  std::string file;
  std::set<std::string> overridden;  // dotted keys set by --set

  std::string where(const std::string& dotted, const YAML::Mark& mark) const {
    if (overridden.count(dotted)) return "--set " + dotted;
    if (!mark.is_null()) return concat(file, ":", mark.line + 1);
    return file;
  }
};

[[noreturn]] void fail(const std::string& where, const std::string& msg) {
  throw ConfigError(concat("config error in ", where, ": ", msg));
}

// One scalar as the alternative T of OptionValue; YAML::BadConversion when it is not one.
template <typename T>
T scalarAs(const YAML::Node& v) {
  if (!v.IsScalar()) throw YAML::BadConversion(v.Mark());
  if constexpr (std::is_same_v<T, int64_t>) {
    // yaml-cpp reads "1e3" or "2.0" as no integer, as it should; "-0x10" as one: fine.
    return v.as<int64_t>();
  } else if constexpr (std::is_same_v<T, double>) {
    double d = v.as<double>();
    // A non-finite hyper-parameter trains on garbage: refused where it is written. So is one
    // beyond float32's range: the tensors it reaches are float32, and it would become inf
    // there (weight_decay: 1e300).
    // Nor one so small that float32 makes it 0 (an eps or a std of 1e-50 divides by zero).
    const double a = std::fabs(d);
    if (!std::isfinite(d) || a > std::numeric_limits<float>::max() || (a > 0 && a < std::numeric_limits<float>::min())) {
      throw std::domain_error("not finite");
    }
    return d;
  } else {
    return v.as<T>();
  }
}

template <typename T>
OptionValue parseAs(const YAML::Node& v, bool oneOrMany) {
  if constexpr (std::is_same_v<T, std::vector<int64_t>> || std::is_same_v<T, std::vector<double>> ||
                std::is_same_v<T, std::vector<std::string>>) {
    using E = typename T::value_type;
    T out;
    if (v.IsSequence()) {
      for (const auto& e : v) out.push_back(scalarAs<E>(e));
    } else if (oneOrMany) {
      out.push_back(scalarAs<E>(v));
    } else {
      throw YAML::BadConversion(v.Mark());
    }
    return out;
  } else {
    return scalarAs<T>(v);
  }
}

// Reads one declared key from `node` (a YAML value), checks it and returns it.
OptionValue readValue(const YAML::Node& v, const OptionDecl& d, const std::string& dotted, const Source& src) {
  OptionValue out;
  try {
    out = std::visit(
        [&](const auto& def) -> OptionValue {
          using T = std::decay_t<decltype(def)>;
          return parseAs<T>(v, d.oneOrMany);
        },
        d.defaultValue);
  } catch (const std::domain_error&) {
    fail(src.where(dotted, v.Mark()), concat(dotted, " must be 0 or a finite number within float32's range (1.2e-38 <= |x| <= 3.4e38), got ",
                                             describeYaml(v)));
  } catch (const YAML::Exception&) {
    std::string type = optionTypeName(d.defaultValue.index());
    if (d.defaultValue.index() == 1 && dotted == "run.seed") type = "a non-negative integer";
    fail(src.where(dotted, v.Mark()), concat(dotted, " must be ", type, d.oneOrMany ? " or one value" : "", ", got ", describeYaml(v)));
  }
  if (d.check) {
    std::string problem = d.check(out);
    if (!problem.empty()) fail(src.where(dotted, v.Mark()), concat(dotted, " ", problem));
  }
  return out;
}

// A section of the YAML file: a map whose keys must all be declared.
class Section {
 public:
  Section(const YAML::Node& node, std::string name, const Source& src) : node_(node), name_(std::move(name)), src_(src) {
    if (node_ && !node_.IsNull() && !node_.IsMap()) {
      fail(src_.where(name_, node_.Mark()), concat("'", name_, "' must be a map of keys, got ", describeYaml(node_)));
    }
  }

  // A key set to null (~) is as if absent: how --set takes a key out of a file's section.
  bool has(const std::string& key) const { return node_ && node_.IsMap() && node_[key] && !node_[key].IsNull(); }
  // The key's value; an invalid node (false in a condition) when the section or key is absent.
  YAML::Node at(const std::string& key) const {
    if (node_ && node_.IsMap()) return node_[key];
    return YAML::Node(YAML::NodeType::Map)["absent"];
  }
  std::string dotted(const std::string& key) const { return name_ + "." + key; }
  std::string where(const std::string& key) const {
    YAML::Node v = at(key);
    return src_.where(dotted(key), v ? v.Mark() : node_ ? node_.Mark() : YAML::Mark::null_mark());
  }

  // `owner(key)`: "" or which other part declares the key, for the message.
  void rejectUnknown(const std::vector<std::string>& known, const std::string& context,
                     const std::function<std::string(const std::string&)>& owner = {}) const {
    if (!node_ || !node_.IsMap()) return;
    for (const auto& kv : node_) {
      if (!kv.first.IsScalar()) fail(src_.where(name_, kv.first.Mark()), concat("a key in '", name_, "' is not a name"));
      std::string key = kv.first.as<std::string>();
      if (kv.second.IsNull() || std::find(known.begin(), known.end(), key) != known.end()) continue;
      std::string msg = concat("unknown key '", key, "' in '", name_, "'", context);
      const std::string other = owner ? owner(key) : std::string();
      std::string hint = nearest(key, known);
      if (!other.empty()) {
        msg += concat(" (it is a key of ", other, ": remove it, or drop it with --set ", dotted(key), "=~)");
      } else {
        msg += hint.empty() ? concat(" (valid keys: ", join(known), ")") : concat(" (did you mean '", hint, "'?)");
      }
      fail(src_.where(dotted(key), kv.first.Mark()), msg);
    }
  }

  // A declared key: the file's value (checked) or the default.
  OptionValue read(const OptionDecl& d) const {
    if (!has(d.key)) {
      // A default that does not pass its own check is a required key.
      std::string problem = d.check ? d.check(d.defaultValue) : std::string();
      if (!problem.empty()) fail(where(d.key), concat(dotted(d.key), " ", problem));
      return d.defaultValue;
    }
    YAML::Node v = at(d.key);
    return readValue(v, d, dotted(d.key), src_);
  }

  const Source& source() const { return src_; }

 private:
  YAML::Node node_;
  std::string name_;
  const Source& src_;
};

void applyOverride(YAML::Node& root, const std::string& assignment, Source& src) {
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw ConfigError(concat("config error in --set ", assignment, ": expected key=value, e.g. --set optimizer.lr=0.01"));
  }
  std::string key = assignment.substr(0, eq);
  std::string value = assignment.substr(eq + 1);
  if (value.find_first_not_of(" \t") == std::string::npos) {
    // `--set optimizer.lr=$LR` with LR unset would otherwise train with the default.
    throw ConfigError(concat("config error in --set ", assignment, ": no value (write ", key, "=~ to drop the key ",
                             "and use its default)"));
  }
  auto parts = split(key, '.');
  for (const auto& p : parts) {
    if (p.empty()) throw ConfigError(concat("config error in --set ", assignment, ": empty key segment in '", key, "'"));
  }
  YAML::Node parsed;
  try {
    // All of the value, not its first document: YAML::Load stops there, and "[0.1]*784"
    // would become [0.1].
    std::vector<YAML::Node> docs = YAML::LoadAll(value);
    if (docs.size() > 1) {
      throw ConfigError(concat("config error in --set ", assignment, ": the value is more than one YAML value (",
                               "quote it to make it one string, or write a list as [a, b, c])"));
    }
    if (!docs.empty()) parsed = docs.front();
  } catch (const YAML::Exception& e) {
    throw ConfigError(concat("config error in --set ", assignment, ": value is not valid YAML: ", e.msg));
  }
  rejectAmbiguousKeys(parsed, [&](const YAML::Mark&) { return concat("--set ", key); }, key);
  YAML::Node cur = root;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    if (!cur[parts[i]] || !cur[parts[i]].IsMap()) cur[parts[i]] = YAML::Node(YAML::NodeType::Map);
    YAML::Node next = cur[parts[i]];
    cur.reset(next);
  }
  cur[parts.back()] = parsed;
  src.overridden.insert(key);
  // An unknown top-level section is reported against this option too.
  src.overridden.insert(parts.front());
}

// The keys a registered part declares for its section, or none.
const OptionSpec* partOptions(PartKind kind, const std::string& name) {
  auto& r = registry();
  switch (kind) {
    case PartKind::kModel: return &r.models.get(name).options;
    case PartKind::kOptimizer: return &r.optimizers.get(name).options;
    case PartKind::kSchedule: return &r.schedules.get(name).options;
    case PartKind::kNone: break;
  }
  return nullptr;
}

Options* partValues(Config& c, PartKind kind) {
  switch (kind) {
    case PartKind::kModel: return &c.model.options;
    case PartKind::kOptimizer: return &c.optimizer.options;
    case PartKind::kSchedule: return &c.schedule.options;
    case PartKind::kNone: break;
  }
  return nullptr;
}

// Reads one top-level section (and its nested sections) into `c`.
void readSection(const YAML::Node& root, const std::string& name, const Source& src, Config& c) {
  Section sec(root[name], name, src);
  std::vector<std::string> known;
  std::vector<const Field*> fields;
  std::set<std::string> nested;
  for (const auto& f : schema()) {
    if (f.section == name) {
      known.push_back(f.decl.key);
      fields.push_back(&f);
    } else if (f.section.rfind(name + ".", 0) == 0) {
      std::string child = f.section.substr(name.size() + 1);
      if (nested.insert(child).second) known.push_back(child);
    }
  }
  const PartKind kind = partOf(name);
  const OptionSpec* part = nullptr;
  std::string context;
  if (kind != PartKind::kNone) {
    // `name` first: it says which keys the rest of the section may hold.
    for (const Field* f : fields) {
      if (f->decl.key == "name") f->assign(c, sec.read(f->decl));
    }
    const std::string partName =
        kind == PartKind::kModel ? c.model.name : kind == PartKind::kOptimizer ? c.optimizer.name : c.schedule.name;
    try {
      part = partOptions(kind, partName);
    } catch (const ConfigError& e) {
      std::string msg = e.what();
      // "'mpl' is not a registered model (did you mean 'mlp'?)", at the line of name:
      fail(sec.where("name"), concat(sec.dotted("name"), " ", msg.substr(msg.find('\''))));
    }
    for (const auto& k : part->keys()) known.push_back(k);
    context = concat(" for ", name, " '", partName, "'");
  }
  // A key of another part of this kind (momentum with adam): named as such.
  auto owner = [&](const std::string& key) {
    std::string owners;
    auto scan = [&](const auto& reg) {
      for (const auto& spec : reg.all()) {
        if (spec.options.find(key) != nullptr) owners += concat(owners.empty() ? "" : " and ", name, " ", spec.name);
      }
    };
    if (kind == PartKind::kModel) scan(registry().models);
    if (kind == PartKind::kOptimizer) scan(registry().optimizers);
    if (kind == PartKind::kSchedule) scan(registry().schedules);
    return owners;
  };
  sec.rejectUnknown(known, context, owner);
  for (const Field* f : fields) f->assign(c, sec.read(f->decl));
  if (part != nullptr) {
    Options* values = partValues(c, kind);
    for (const auto& d : part->decls()) {
      values->set(d.key, sec.read(d), sec.has(d.key) ? sec.where(d.key) : "default");
    }
  }
  for (const auto& child : nested) {
    Section sub(sec.at(child), sec.dotted(child), src);
    std::vector<std::string> subKnown;
    for (const auto& f : schema()) {
      if (f.section == sec.dotted(child)) subKnown.push_back(f.decl.key);
    }
    sub.rejectUnknown(subKnown, "");
    for (const auto& f : schema()) {
      if (f.section == sec.dotted(child)) f.assign(c, sub.read(f.decl));
    }
  }
}

// Checks that involve more than one key, or registries.
void crossCheck(const YAML::Node& root, const Source& src, const Config& c) {
  Section run(root["run"], "run", src), dist(root["distributed"], "distributed", src), task(root["task"], "task", src);
  if (c.run.precision == "fp16" && c.run.device == "cpu") {
    fail(run.where("precision"), "run.precision fp16 (autocast with a loss scale) is GPU-only: use run.device: "
                                 "cuda (or auto on a GPU machine), or precision: bf16 or fp32");
  }
  if (c.distributed.backend == "nccl" && c.run.device == "cpu") {
    fail(dist.where("backend"), "distributed.backend nccl works on CUDA tensors: set run.device: cuda (or auto), or "
                                "backend: mpi");
  }
  auto known = [&](const auto& reg, const std::string& name, const std::string& key) {
    try {
      reg.get(name);
    } catch (const ConfigError& e) {
      std::string msg = e.what();
      fail(task.where(key), concat("task.", key, " ", msg.substr(msg.find('\''))));
    }
  };
  known(registry().losses, c.task.loss, "loss");
  std::set<std::string> metrics;
  for (const auto& m : c.task.metrics) {
    known(registry().metrics, m, "metrics");
    if (!metrics.insert(m).second) fail(task.where("metrics"), concat("task.metrics names '", m, "' twice"));
  }
  if (c.schedule.options.has("min_lr") && c.schedule.options.get<double>("min_lr") > c.optimizer.lr) {
    Section sched(root["schedule"], "schedule", src);
    fail(sched.where("min_lr"), "schedule.min_lr must be in [0, optimizer.lr]");
  }
}

// The checked root map: overrides, then every section.
Config parseRoot(YAML::Node root, Source& src, const std::vector<std::string>& overrides) {
  for (const auto& o : overrides) applyOverride(root, o, src);

  // Unknown sections first: a typo there would hide every key below it.
  const auto& sections = sectionNames();
  for (const auto& kv : root) {
    if (!kv.first.IsScalar()) fail(src.where("", kv.first.Mark()), "a top-level key is not a name");
    std::string key = kv.first.as<std::string>();
    if (std::find(sections.begin(), sections.end(), key) != sections.end()) continue;
    std::string hint = nearest(key, sections);
    fail(src.where(key, kv.first.Mark()), concat("unknown key '", key, "'",
                                                 hint.empty() ? concat(" (valid sections: ", join(sections), ")")
                                                              : concat(" (did you mean '", hint, "'?)")));
  }

  Config c;
  c.sourcePath = src.file;
  c.overrides = overrides;
  for (const auto& s : sections) readSection(root, s, src, c);
  // The task's own loss and metrics where the config names none.
  if (const TaskKind* kind = findTaskKind(c.task.name)) {
    const YAML::Node task = root["task"];
    if (!task || !task.IsMap() || !task["loss"]) c.task.loss = kind->loss;
    if (!task || !task.IsMap() || !task["metrics"]) c.task.metrics = kind->metrics;
  }
  crossCheck(root, src, c);

  YAML::Emitter out;
  out << root;
  c.resolved = std::string(out.c_str()) + "\n";
  return c;
}

}  // namespace

std::vector<KeyHelp> configKeys() {
  std::vector<KeyHelp> out;
  auto add = [&](const std::string& section, const OptionDecl& d, const std::string& part) {
    std::string type = optionTypeName(d.defaultValue.index());
    if (d.oneOrMany) type += " (or one)";
    out.push_back({section + "." + d.key, part, type, optionText(d.defaultValue), d.help});
  };
  for (const auto& section : sectionNames()) {
    for (const auto& f : schema()) {
      if (f.section == section || f.section.rfind(section + ".", 0) == 0) add(f.section, f.decl, "");
    }
    const PartKind kind = partOf(section);
    auto addParts = [&](const auto& reg) {
      for (const auto& spec : reg.all()) {
        for (const auto& d : spec.options.decls()) add(section, d, spec.name);
      }
    };
    if (kind == PartKind::kModel) addParts(registry().models);
    if (kind == PartKind::kOptimizer) addParts(registry().optimizers);
    if (kind == PartKind::kSchedule) addParts(registry().schedules);
  }
  return out;
}

Config parseConfig(const std::string& yamlText, const std::string& sourceName,
                   const std::vector<std::string>& overrides) {
  Source src{sourceName, {}};
  YAML::Node root;
  try {
    rejectAliasBombs(yamlText, sourceName);
    std::vector<YAML::Node> docs = YAML::LoadAll(yamlText);
    if (docs.size() > 1) {
      fail(src.where("", docs[1].Mark()), concat("the file holds ", docs.size(), " YAML documents; a config is one ",
                                                 "(remove the '---' that starts the second)"));
    }
    if (!docs.empty()) root = docs.front();
  } catch (const YAML::Exception& e) {
    throw ConfigError(concat("config error in ", sourceName, ":", e.mark.line + 1, ": invalid YAML: ", e.msg));
  }
  if (!root || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) throw ConfigError(concat("config error in ", sourceName, ": the top level must be a map of sections"));
  rejectAmbiguousKeys(root, [&](const YAML::Mark& m) { return src.where("", m); });
  try {
    return parseRoot(root, src, overrides);
  } catch (const YAML::Exception& e) {
    // Whatever shape of YAML got past the checks: a config error at its line, never a crash.
    throw ConfigError(concat("config error in ", src.where("", e.mark), ": ", e.msg));
  }
}

Config loadConfig(const std::string& path, const std::vector<std::string>& overrides) {
  return parseConfig(readConfigText(path), path, overrides);
}

}  // namespace forge::train
