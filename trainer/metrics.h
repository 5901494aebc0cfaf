// RUN_DIR/metrics.jsonl: one JSON object per line, appended by rank 0.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace forge::train {

// A flat JSON object built field by field; non-finite numbers are written as null.
class JsonLine {
 public:
  JsonLine& add(const std::string& key, double value);
  JsonLine& add(const std::string& key, int64_t value);
  JsonLine& add(const std::string& key, const std::string& value);
  std::string str() const;

 private:
  std::vector<std::pair<std::string, std::string>> fields_;  // key, encoded value
};

// Appends one line and flushes it (a crash loses at most the line being written).
void appendLine(const std::string& path, const std::string& line);

}  // namespace forge::train
