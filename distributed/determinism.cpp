#include "distributed/determinism.h"

#include <ATen/Context.h>

#include <cstdlib>

#include "core/error.h"
#include "core/names.h"

namespace forge::dist {
namespace {

// Sets `name` unless the environment has it already; says which.
std::string pin(const char* name, const char* value) {
  const char* have = std::getenv(name);
  if (have != nullptr && *have != '\0') return concat(name, "=", have, " (as set)");
  setenv(name, value, 1);
  return concat(name, "=", value);
}

}  // namespace

std::vector<std::string> applyDeterminism(bool on) {
  if (!on) return {};
  std::vector<std::string> done;
  done.push_back(pin(env::kCublasWorkspaceConfig, kCublasWorkspaceValue));
  done.push_back(pin(env::kNcclAlgo, kNcclAlgoValue));
  done.push_back(pin(env::kNcclProto, kNcclProtoValue));
  at::globalContext().setDeterministicAlgorithms(true, /*warn_only=*/true);
  at::globalContext().setDeterministicCuDNN(true);
  at::globalContext().setBenchmarkCuDNN(false);
  done.push_back("deterministic algorithms (warn only)");
  done.push_back("cuDNN deterministic, no benchmark");
  return done;
}

}  // namespace forge::dist
