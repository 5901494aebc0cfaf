// forge's error hierarchy and the checking macros. Every error forge reports to a user is a
// forge::Error: its message says what went wrong, where, and what to do about it.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace forge {

// Base of every error forge throws on purpose. `exitCode()` is what the process exits with
// when this error ends it (see README "Exit codes").
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
  virtual int exitCode() const { return 1; }
};

// A config file or command-line option is wrong (unknown key, wrong type, bad value).
class ConfigError : public Error {
 public:
  using Error::Error;
  int exitCode() const override { return 2; }
};

// A data file is missing or malformed.
class DataError : public Error {
 public:
  using Error::Error;
  int exitCode() const override { return 2; }
};

// A checkpoint cannot be written, read or verified.
class CheckpointError : public Error {
 public:
  using Error::Error;
  int exitCode() const override { return 4; }
};

// A collective failed.
class CommError : public Error {
 public:
  using Error::Error;
  int exitCode() const override { return 3; }
};

// A collective did not complete before its deadline (a dead or stuck peer).
class CommTimeout : public CommError {
 public:
  using CommError::CommError;
};

// Training produced non-finite values (a NaN or infinite loss, or weights): the run stops
// before anything computed from them is saved or evaluated.
class Diverged : public Error {
 public:
  using Error::Error;
  int exitCode() const override { return 5; }
};

// Not a failure: the run saved a checkpoint on a preemption signal and stops so that the
// scheduler can requeue it. Exit code 75 (EX_TEMPFAIL) means "saved, please requeue".
inline constexpr int kExitRequeue = 75;
class Preempted : public Error {
 public:
  using Error::Error;
  int exitCode() const override { return kExitRequeue; }
};

// Concatenates any streamable values into one string.
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

namespace detail {
std::string checkMessage(const char* file, int line, const char* expr, const std::string& msg);
}  // namespace detail

}  // namespace forge

// Internal invariant: throws ErrorType with the source location and the failing expression.
#define FORGE_CHECK_T(ErrorType, cond, ...)                                                    \
  do {                                                                                         \
    if (!(cond)) {                                                                             \
      throw ErrorType(::forge::detail::checkMessage(__FILE__, __LINE__, #cond,                 \
                                                    ::forge::concat("" __VA_OPT__(, ) __VA_ARGS__))); \
    }                                                                                          \
  } while (0)

#define FORGE_CHECK(cond, ...) FORGE_CHECK_T(::forge::Error, cond __VA_OPT__(, ) __VA_ARGS__)
