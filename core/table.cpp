#include "core/table.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "core/error.h"

namespace forge {
namespace {

// Display width of UTF-8 text: code points, not bytes (the tables hold names and numbers,
// no wide characters).
size_t width(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

}  // namespace

Table::Table(std::vector<std::string> headers, std::vector<Align> align)
    : headers_(std::move(headers)), align_(std::move(align)) {
  align_.resize(headers_.size(), Align::kLeft);
}

Table& Table::row(std::vector<std::string> cells) {
  FORGE_CHECK(cells.size() <= headers_.size(), "a table row has ", cells.size(), " cells, the table ",
              headers_.size(), " columns");
  cells.resize(headers_.size());
  rows_.push_back(std::move(cells));
  return *this;
}

std::vector<std::string> Table::lines(const std::string& indent) const {
  const size_t n = headers_.size();
  std::vector<size_t> w(n, 0);
  bool hasHeader = false;
  for (size_t c = 0; c < n; ++c) {
    w[c] = width(headers_[c]);
    hasHeader = hasHeader || !headers_[c].empty();
  }
  for (const auto& r : rows_) {
    for (size_t c = 0; c < n; ++c) w[c] = std::max(w[c], width(r[c]));
  }
  auto render = [&](const std::vector<std::string>& cells) {
    std::string line = indent;
    for (size_t c = 0; c < n; ++c) {
      std::string pad(w[c] - width(cells[c]), ' ');
      if (c) line += "  ";
      line += align_[c] == Align::kRight ? pad + cells[c] : cells[c] + pad;
    }
    while (line.size() > indent.size() && line.back() == ' ') line.pop_back();
    return line;
  };
  std::vector<std::string> out;
  if (hasHeader) {
    out.push_back(render(headers_));
    std::vector<std::string> rule;
    for (size_t c = 0; c < n; ++c) rule.push_back(std::string(w[c], '-'));
    out.push_back(render(rule));
  }
  for (const auto& r : rows_) out.push_back(render(r));
  return out;
}

std::string Table::str(const std::string& indent) const {
  std::string out;
  for (const auto& l : lines(indent)) out += l + "\n";
  return out;
}

std::string jsonQuote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
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

std::string jsonNumber(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[40];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {  // integral: no exponent ("1500000000", not "1.5e+09")
    std::snprintf(buf, sizeof buf, "%.0f", v);
    return buf;
  }
  for (int precision = 6; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

}  // namespace forge
