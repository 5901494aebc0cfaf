#include "trainer/metrics.h"

#include <cmath>
#include <cstdio>
#include <fstream>

#include "core/error.h"

namespace forge::train {
namespace {
std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}
}  // namespace

JsonLine& JsonLine::add(const std::string& key, double value) {
  char buf[40];
  if (std::isfinite(value)) {
    std::snprintf(buf, sizeof buf, "%.10g", value);
  } else {
    std::snprintf(buf, sizeof buf, "null");
  }
  fields_.emplace_back(key, buf);
  return *this;
}

JsonLine& JsonLine::add(const std::string& key, int64_t value) {
  fields_.emplace_back(key, std::to_string(value));
  return *this;
}

JsonLine& JsonLine::add(const std::string& key, const std::string& value) {
  fields_.emplace_back(key, quote(value));
  return *this;
}

std::string JsonLine::str() const {
  std::string out = "{";
  for (size_t i = 0; i < fields_.size(); ++i) {
    out += (i ? ", " : "") + quote(fields_[i].first) + ": " + fields_[i].second;
  }
  return out + "}";
}

void appendLine(const std::string& path, const std::string& line) {
  std::ofstream out(path, std::ios::app);
  if (!out) throw Error(concat("cannot append to '", path, "'"));
  out << line << "\n" << std::flush;
}

}  // namespace forge::train
