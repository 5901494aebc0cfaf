// Parts by name. forge's built-in parts are registered the first time a registry is used;
// a user's program registers its own before it calls forge::main (trainer/app/cli.h) or
// builds a Trainer. Registration is not thread-safe: do it at the start of main.
#pragma once

#include <cctype>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/strings.h"
#include "trainer/spec/parts.h"

namespace forge {

template <typename Spec>
class Registry {
 public:
  explicit Registry(std::string kind) : kind_(std::move(kind)) {}

  // A name that is taken, empty, or not made of letters, digits and '_' is not registered;
  // the mistake is kept and raised by Registries::check() (forge::runMain and the Trainer
  // call it), so a program's registration never ends it with an uncaught exception.
  void add(Spec spec);
  const std::vector<std::string>& errors() const { return errors_; }
  // ConfigError naming the close matches when there is no such part.
  const Spec& get(const std::string& name) const;
  const Spec* find(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::string& kind() const { return kind_; }
  const std::vector<Spec>& all() const { return specs_; }

 private:
  std::string kind_;
  std::vector<Spec> specs_;
  std::vector<std::string> errors_;
};

template <typename Spec>
void Registry<Spec>::add(Spec spec) {
  // Names become config values, metrics-file columns and TensorBoard tags.
  bool plain = !spec.name.empty();
  for (char ch : spec.name) plain = plain && (std::isalnum(static_cast<unsigned char>(ch)) || ch == '_');
  if (!plain) {
    errors_.push_back(concat("cannot register a ", kind_, " named '", spec.name,
                             "': a name is letters, digits and '_' (it becomes a config value and a column name)"));
  } else if (find(spec.name) != nullptr) {
    errors_.push_back(concat("cannot register a second ", kind_, " named '", spec.name,
                             "': one is registered already (forge's own parts: forge config keys); choose another name"));
  } else {
    specs_.push_back(std::move(spec));
  }
}

template <typename Spec>
const Spec* Registry<Spec>::find(const std::string& name) const {
  for (const auto& s : specs_) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

template <typename Spec>
const Spec& Registry<Spec>::get(const std::string& name) const {
  if (const Spec* s = find(name)) return *s;
  std::string hint = nearest(name, names());
  throw ConfigError(concat("'", name, "' is not a registered ", kind_, " (",
                           hint.empty() ? "registered: " + join(names()) : "did you mean '" + hint + "'?", ")"));
}

template <typename Spec>
std::vector<std::string> Registry<Spec>::names() const {
  std::vector<std::string> out;
  for (const auto& s : specs_) out.push_back(s.name);
  return out;
}

struct Registries {
  Registry<ModelSpec> models{"model"};
  Registry<LossSpec> losses{"loss"};
  Registry<MetricSpec> metrics{"metric"};
  Registry<OptimizerSpec> optimizers{"optimizer"};
  Registry<ScheduleSpec> schedules{"schedule"};

  // ConfigError listing every registration that failed.
  void check() const {
    std::vector<std::string> all;
    for (const auto* errors : {&models.errors(), &losses.errors(), &metrics.errors(), &optimizers.errors(),
                               &schedules.errors()}) {
      all.insert(all.end(), errors->begin(), errors->end());
    }
    if (!all.empty()) throw ConfigError(join(all, "; "));
  }
};

// The process's registries, with forge's own parts in them (trainer/builtin/builtin.cpp).
Registries& registry();

// The named model built with its declared defaults and then `values` (tools, tests and
// programs that build a model without a config). Error for an undeclared key.
inline ModelHandle makeModel(const std::string& name, const std::map<std::string, OptionValue>& values = {}) {
  const ModelSpec& spec = registry().models.get(name);
  Options o = spec.options.defaults("model");
  for (const auto& [k, v] : values) {
    if (spec.options.find(k) == nullptr) throw Error(concat("model '", name, "' declares no key '", k, "'"));
    o.set(k, v);
  }
  return spec.make(o);
}

inline void registerModel(ModelSpec s) { registry().models.add(std::move(s)); }
inline void registerLoss(LossSpec s) { registry().losses.add(std::move(s)); }
inline void registerMetric(MetricSpec s) { registry().metrics.add(std::move(s)); }
inline void registerOptimizer(OptimizerSpec s) { registry().optimizers.add(std::move(s)); }
inline void registerSchedule(ScheduleSpec s) { registry().schedules.add(std::move(s)); }

}  // namespace forge
