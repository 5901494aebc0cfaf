#include "core/error.h"

namespace forge::detail {

std::string checkMessage(const char* file, int line, const char* expr, const std::string& msg) {
  std::string out = msg.empty() ? std::string("internal check failed") : msg;
  return concat(out, " (check '", expr, "' at ", file, ":", line, ")");
}

}  // namespace forge::detail
