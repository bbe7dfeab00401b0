// tests/support/error_of.hpp — the one-line message a bad-input path gives.
//
// Bad input throws input_error with a message naming the file and the
// problem; tests compare that message exactly.
#pragma once

#include <string>

#include "input/memory_image.hpp"

namespace ptwalk::testing {

// The message of the input_error `fn` throws, or a marker when it throws none.
template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const input_error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace ptwalk::testing
