// Aligned text tables for what people read in a terminal: `forge eval`, `forge ckpt
// inspect`, the model summary and the end-of-run summary.
#pragma once

#include <string>
#include <vector>

namespace forge {

class Table {
 public:
  enum class Align { kLeft, kRight };

  // One column per header; numbers read best right-aligned.
  explicit Table(std::vector<std::string> headers, std::vector<Align> align = {});

  Table& row(std::vector<std::string> cells);

  // The rendered lines: header, a rule of dashes, the rows; columns separated by two
  // spaces, each line prefixed by `indent`, no trailing spaces. A table without headers
  // (all empty) omits the header and rule.
  std::vector<std::string> lines(const std::string& indent = "") const;
  std::string str(const std::string& indent = "") const;

 private:
  std::vector<std::string> headers_;
  std::vector<Align> align_;
  std::vector<std::vector<std::string>> rows_;
};

// A string as a JSON string literal (quotes, backslashes and control characters escaped).
std::string jsonQuote(const std::string& s);
// A number for JSON: "null" when not finite, else the shortest text that reads back exactly.
std::string jsonNumber(double v);

}  // namespace forge
