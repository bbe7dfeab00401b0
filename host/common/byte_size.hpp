// host/common/byte_size.hpp — sizes as people and sysfs write them: "256M", "64K", "1G", "4096".
#pragma once

#include <cstddef>
#include <string>

namespace ptwalk {

// Bytes, with an optional K, M or G (or KiB, MiB, GiB) suffix; throws
// std::invalid_argument naming `what` for anything else.
[[nodiscard]] std::size_t parse_byte_size(const std::string& text, const std::string& what);

}  // namespace ptwalk
