#include "trainer/spec/options.h"

#include <cmath>
#include <sstream>

#include "core/error.h"
#include "core/strings.h"

namespace forge {
namespace {

std::string number(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

template <typename T>
std::string listText(const std::vector<T>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    if constexpr (std::is_same_v<T, std::string>) {
      out += (i ? ", " : "") + v[i];
    } else if constexpr (std::is_same_v<T, double>) {
      out += (i ? ", " : "") + number(v[i]);
    } else {
      out += (i ? ", " : "") + std::to_string(v[i]);
    }
  }
  return out + "]";
}

}  // namespace

std::string optionTypeName(size_t index) {
  static const char* kNames[] = {"true or false",       "an integer",         "a number",         "a string",
                                 "a list of integers", "a list of numbers", "a list of strings"};
  return index < sizeof kNames / sizeof kNames[0] ? kNames[index] : "a value";
}

std::string optionText(const OptionValue& v) {
  return std::visit(
      [](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, bool>) {
          return x ? "true" : "false";
        } else if constexpr (std::is_same_v<T, int64_t>) {
          return std::to_string(x);
        } else if constexpr (std::is_same_v<T, double>) {
          return number(x);
        } else if constexpr (std::is_same_v<T, std::string>) {
          return x.empty() ? std::string("\"\"") : x;
        } else {
          return listText(x);
        }
      },
      v);
}

const OptionDecl* OptionSpec::find(const std::string& key) const {
  for (const auto& d : decls_) {
    if (d.key == key) return &d;
  }
  return nullptr;
}

std::vector<std::string> OptionSpec::keys() const {
  std::vector<std::string> out;
  for (const auto& d : decls_) out.push_back(d.key);
  return out;
}

Options OptionSpec::defaults(const std::string& section) const {
  Options o(section);
  for (const auto& d : decls_) o.set(d.key, d.defaultValue, "default");
  return o;
}

void Options::set(const std::string& key, OptionValue v, std::string where) {
  values_[key] = std::move(v);
  where_[key] = std::move(where);
}

std::string Options::where(const std::string& key) const {
  auto it = where_.find(key);
  return it == where_.end() || it->second.empty() ? dotted(key) : it->second;
}

const OptionValue& Options::value(const std::string& key) const {
  auto it = values_.find(key);
  if (it == values_.end()) {
    std::vector<std::string> known;
    for (const auto& [k, v] : values_) known.push_back(k);
    std::string hint = nearest(key, known);
    throw Error(concat("option '", dotted(key), "' was not declared", hint.empty() ? "" : concat(" (did you mean '", hint, "'?)"),
                       ": declare it in the part's OptionSpec"));
  }
  return it->second;
}

void Options::typeMismatch(const std::string& key, const OptionValue& v) const {
  throw Error(concat("option '", dotted(key), "' is ", optionTypeName(v.index()), ", read as another type"));
}

std::function<std::string(const int64_t&)> atLeast(int64_t min) {
  return [min](const int64_t& v) { return v >= min ? std::string() : concat("must be at least ", min, ", got ", v); };
}

std::function<std::string(const double&)> positive() {
  return [](const double& v) { return v > 0 ? std::string() : concat("must be positive, got ", number(v)); };
}

std::function<std::string(const double&)> inRange(double lo, double hi, bool hiInclusive) {
  return [=](const double& v) {
    bool ok = v >= lo && (hiInclusive ? v <= hi : v < hi);
    return ok ? std::string() : concat("must be in [", number(lo), ", ", number(hi), hiInclusive ? "]" : ")", ", got ", number(v));
  };
}

std::function<std::string(const std::string&)> oneOf(std::vector<std::string> choices, std::string what) {
  return [choices, what](const std::string& v) {
    for (const auto& c : choices) {
      if (c == v) return std::string();
    }
    std::string hint = nearest(v, choices);
    return concat("'", v, "' is not ", what, " (", hint.empty() ? "use " + join(choices) : "did you mean '" + hint + "'?",
                  ")");
  };
}

}  // namespace forge
