// host/common/byte_size.cpp — parse_byte_size.
#include "common/byte_size.hpp"

#include <fmt/format.h>

#include <stdexcept>

namespace ptwalk {

std::size_t parse_byte_size(const std::string& text, const std::string& what) {
  std::size_t used = 0;
  unsigned long long value = 0;
  if (!text.empty() && text[0] >= '0' && text[0] <= '9') {  // stoull would take "-5" and " 5"
    try {
      value = std::stoull(text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
  }
  const std::string suffix = used > 0 ? text.substr(used) : "";
  unsigned shift = 0;
  if (suffix == "K" || suffix == "k" || suffix == "KiB") shift = 10;
  else if (suffix == "M" || suffix == "m" || suffix == "MiB") shift = 20;
  else if (suffix == "G" || suffix == "g" || suffix == "GiB") shift = 30;
  else if (!suffix.empty()) used = 0;
  if (used == 0 || value > (~0ULL >> shift))
    throw std::invalid_argument(fmt::format("{}: '{}' is not a size (bytes, or a number with K, M or G)", what, text));
  return static_cast<std::size_t>(value << shift);
}

}  // namespace ptwalk
