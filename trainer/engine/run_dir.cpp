#include "trainer/engine/run_dir.h"

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/strings.h"

namespace forge::train {

namespace fs = std::filesystem;

std::string RunDir::file(const char* name) const { return (fs::path(root_) / name).string(); }

void RunDir::create(const std::string& resolvedConfig) const {
  std::error_code ec;
  fs::create_directories(checkpoints(), ec);
  if (ec) throw ConfigError(concat("cannot create run dir '", root_, "': ", ec.message(), " (set run.dir)"));
  std::ofstream out(config());
  out << resolvedConfig;
  if (!out.flush()) throw ConfigError(concat("cannot write '", config(), "'"));
}

}  // namespace forge::train
