// Declared config keys and their parsed values. Every key forge reads is declared once, with
// its type, default, check and help text: the fixed sections in trainer/config/schema.cpp,
// and each registered part (a model, an optimizer, a schedule) declares its own keys beside
// its factory. The config reader (trainer/config/) rejects undeclared keys by name, checks
// types and ranges with the file and line, and hands the part an `Options` with every
// declared key set (to the config's value or the default).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <variant>
#include <vector>

namespace forge {

using OptionValue = std::variant<bool, int64_t, double, std::string, std::vector<int64_t>, std::vector<double>,
                                 std::vector<std::string>>;

// "an integer", "a list of numbers", ...: what a value of the alternative `index` is.
std::string optionTypeName(size_t index);
// The value as YAML would write it: 0.01, true, [16, 32], "text".
std::string optionText(const OptionValue& v);

struct OptionDecl {
  std::string key;        // within its section, e.g. "hidden"
  OptionValue defaultValue;
  std::string help;
  // "" when the value is fine, else what is wrong, completing "<section.key> ..." (e.g.
  // "must be positive, got -1").
  std::function<std::string(const OptionValue&)> check;
  bool oneOrMany = false;  // a list type that also accepts a single value (one file, one number)
};

class OptionSpec {
 public:
  // Declares `key` of type T (bool, int64_t, double, std::string or a std::vector of the
  // last three). `check` returns "" or what is wrong.
  template <typename T>
  OptionSpec& add(std::string key, T defaultValue, std::string help, std::function<std::string(const T&)> check = {}) {
    OptionDecl d;
    d.key = std::move(key);
    d.defaultValue = OptionValue(std::move(defaultValue));
    d.help = std::move(help);
    if (check) d.check = [check](const OptionValue& v) { return check(std::get<T>(v)); };
    decls_.push_back(std::move(d));
    return *this;
  }
  // As add(), for a list that may also be written as one value.
  template <typename T>
  OptionSpec& addOneOrMany(std::string key, std::vector<T> defaultValue, std::string help,
                           std::function<std::string(const std::vector<T>&)> check = {}) {
    add<std::vector<T>>(std::move(key), std::move(defaultValue), std::move(help), std::move(check));
    decls_.back().oneOrMany = true;
    return *this;
  }

  const std::vector<OptionDecl>& decls() const { return decls_; }
  const OptionDecl* find(const std::string& key) const;
  std::vector<std::string> keys() const;
  // Every key at its default.
  class Options defaults(const std::string& section) const;

 private:
  std::vector<OptionDecl> decls_;
};

// A part's keys, parsed and checked. get<T>() of an undeclared key, or with the wrong type,
// is a programming error (forge::Error naming the key).
class Options {
 public:
  Options() = default;
  explicit Options(std::string section) : section_(std::move(section)) {}

  template <typename T>
  const T& get(const std::string& key) const {
    const OptionValue& v = value(key);
    if (!std::holds_alternative<T>(v)) typeMismatch(key, v);
    return std::get<T>(v);
  }
  bool has(const std::string& key) const { return values_.count(key) > 0; }
  void set(const std::string& key, OptionValue v, std::string where = "");
  // Where the value came from ("configs/x.yaml:12", "--set model.hidden", "default"), for
  // error messages of checks that need several keys.
  std::string where(const std::string& key) const;
  // "model.hidden"
  std::string dotted(const std::string& key) const { return section_.empty() ? key : section_ + "." + key; }
  const std::map<std::string, OptionValue>& values() const { return values_; }

 private:
  const OptionValue& value(const std::string& key) const;
  [[noreturn]] void typeMismatch(const std::string& key, const OptionValue& v) const;

  std::string section_;
  std::map<std::string, OptionValue> values_;
  std::map<std::string, std::string> where_;
};

// Common checks, for OptionSpec::add.
std::function<std::string(const int64_t&)> atLeast(int64_t min);
std::function<std::string(const double&)> positive();
std::function<std::string(const double&)> inRange(double lo, double hi, bool hiInclusive = false);
// `what` names the kind of value: "'ignore' is not a policy (use error, skip)".
std::function<std::string(const std::string&)> oneOf(std::vector<std::string> choices, std::string what);

}  // namespace forge
