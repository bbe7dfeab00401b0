// tests/support/scoped_env.hpp — set an environment variable for one test's child processes.
#pragma once

#include <cstdlib>
#include <optional>
#include <string>

namespace ptwalk::testing {

// Sets (or, with nullopt, unsets) `name` while it lives; then restores it.
class scoped_env {
 public:
  scoped_env(std::string name, const std::optional<std::string>& value) : name_(std::move(name)) {
    if (const char* old = std::getenv(name_.c_str())) previous_ = old;
    if (value) ::setenv(name_.c_str(), value->c_str(), 1);
    else ::unsetenv(name_.c_str());
  }
  ~scoped_env() {
    if (previous_) ::setenv(name_.c_str(), previous_->c_str(), 1);
    else ::unsetenv(name_.c_str());
  }
  scoped_env(const scoped_env&) = delete;
  scoped_env& operator=(const scoped_env&) = delete;

 private:
  std::string name_;
  std::optional<std::string> previous_;
};

}  // namespace ptwalk::testing
