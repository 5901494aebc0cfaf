// Reading a config's YAML as written: the file itself, alias expansion and keys.
#include "trainer/config/yaml_input.h"

#include <yaml-cpp/eventhandler.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/strings.h"

namespace forge::train {
namespace {

[[noreturn]] void fail(const std::string& where, const std::string& msg) {
  throw ConfigError(concat("config error in ", where, ": ", msg));
}

// The values a YAML text expands to, its aliases expanded ("billion laughs": ten levels of
// nine aliases each are 9^10 values from a few hundred bytes, and reading them would take
// hours). A config holds a few hundred; more than kMax is refused while parsing, before
// anything is expanded.
class ExpandedSize : public YAML::EventHandler {
 public:
  static constexpr int64_t kMax = 100000;
  explicit ExpandedSize(std::string source) : source_(std::move(source)) {}

  void OnDocumentStart(const YAML::Mark&) override { open_.clear(); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& m, YAML::anchor_t anchor) override { done(m, anchor, 1); }
  void OnAlias(const YAML::Mark& m, YAML::anchor_t anchor) override {
    auto it = sizes_.find(anchor);
    done(m, 0, it == sizes_.end() ? 1 : it->second);
  }
  void OnScalar(const YAML::Mark& m, const std::string&, YAML::anchor_t anchor, const std::string&) override {
    done(m, anchor, 1);
  }
  void OnSequenceStart(const YAML::Mark& m, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    open_.push_back({anchor, 1, m});
  }
  void OnSequenceEnd() override { close(); }
  void OnMapStart(const YAML::Mark& m, const std::string&, YAML::anchor_t anchor, YAML::EmitterStyle::value) override {
    open_.push_back({anchor, 1, m});
  }
  void OnMapEnd() override { close(); }

 private:
  struct Open {
    YAML::anchor_t anchor;
    int64_t size;
    YAML::Mark mark;
  };
  void close() {
    Open o = open_.back();
    open_.pop_back();
    done(o.mark, o.anchor, o.size);
  }
  // A finished value of `size` expanded values (at most kMax + 1: no overflow).
  void done(const YAML::Mark& m, YAML::anchor_t anchor, int64_t size) {
    if (anchor != 0) sizes_[anchor] = size;
    int64_t& into = open_.empty() ? total_ : open_.back().size;
    into = std::min(into + size, kMax + 1);
    if (into > kMax) {
      throw ConfigError(concat("config error in ", source_, ":", m.line + 1, ": the YAML expands to more than ",
                               kMax, " values through its aliases (*name); a config holds a few hundred"));
    }
  }

  std::string source_;
  std::vector<Open> open_;
  std::map<YAML::anchor_t, int64_t> sizes_;
  int64_t total_ = 0;
};

}  // namespace

std::string describeYaml(const YAML::Node& n) {
  if (n.IsMap()) return "a map";
  if (n.IsSequence()) return "a list";
  if (n.IsNull()) return "nothing";
  return "'" + n.Scalar() + "'";
}

std::string readConfigText(const std::string& path) {
  // A config is a small text file: /dev/zero, a FIFO or a data file given by mistake is
  // refused by its kind and size, not read until memory runs out.
  constexpr std::uintmax_t kMaxBytes = 1 << 20;
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) {
    throw ConfigError(concat("config error: cannot read config file '", path, "' (no such file or not readable)"));
  }
  if (!std::filesystem::is_regular_file(status)) {
    throw ConfigError(concat("config error: '", path, "' is not a regular file (a config is a YAML file)"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(concat("config error: cannot read config file '", path, "' (not readable)"));
  std::string text(kMaxBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > kMaxBytes) {
    throw ConfigError(concat("config error: '", path, "' is larger than 1 MiB; a config is a short YAML file (was ",
                             "a data file or a checkpoint given in its place?)"));
  }
  if (text.find('\0') != std::string::npos) {
    throw ConfigError(concat("config error: '", path, "' holds NUL bytes: it is not a YAML text file"));
  }
  return text;
}

void rejectAliasBombs(const std::string& text, const std::string& source) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  ExpandedSize size(source);
  while (parser.HandleNextDocument(size)) {
  }
}

// Every map key in `node` (at any depth) is a plain name that appears once. yaml-cpp keeps
// duplicate keys and answers lookups with the first, so a second `lr:` or a second `data:`
// section would be dropped without a word; a key that is a list or a map ("? [a, b]") is
// no name a config can mean. `where(mark)` says where a key is.
void rejectAmbiguousKeys(const YAML::Node& node, const std::function<std::string(const YAML::Mark&)>& where,
                         const std::string& path) {
  if (node.IsSequence()) {
    for (const auto& e : node) rejectAmbiguousKeys(e, where, path);
    return;
  }
  if (!node.IsMap()) return;
  std::set<std::string> seen;
  for (const auto& kv : node) {
    if (!kv.first.IsScalar()) {
      fail(where(kv.first.Mark()), concat("a key ", path.empty() ? "at the top level" : concat("in '", path, "'"),
                                         " is ", describeYaml(kv.first), ", not a name"));
    }
    const std::string key = kv.first.Scalar();
    const std::string dotted = path.empty() ? key : path + "." + key;
    if (!seen.insert(key).second) {
      fail(where(kv.first.Mark()), concat("'", dotted, "' appears twice", path.empty() ? " (one section per name: "
                                          "merge the two)" : " (forge would read only one of them: keep one)"));
    }
    rejectAmbiguousKeys(kv.second, where, dotted);
  }
}

}  // namespace forge::train
