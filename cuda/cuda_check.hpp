// cuda/cuda_check.hpp — every CUDA runtime call checked, errors naming the call.
//
// cuda_check(call, "what") throws std::runtime_error("what: <cuda error>");
// callers further up add which batch was being walked.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace ptwalk {

inline void cuda_check(cudaError_t status, const char* what) {
  if (status == cudaSuccess) return;
  (void)cudaGetLastError();  // clear a non-sticky error so the process can go on
  throw std::runtime_error(std::string(what) + ": " + cudaGetErrorName(status) + ": " +
                           cudaGetErrorString(status));
}

}  // namespace ptwalk
