// ptwalk/config.hpp — portability macros for code that runs on host and device.
//
// The core headers are compiled by g++ (host, Thrust CPP/OMP systems) and by
// nvcc (CUDA). PTWALK_HD marks functions that must be callable from both.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define PTWALK_HD __host__ __device__
#else
#define PTWALK_HD
#endif

namespace ptwalk {

using u8 = std::uint8_t;
using u32 = std::uint32_t;
using u64 = std::uint64_t;

}  // namespace ptwalk
