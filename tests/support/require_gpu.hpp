// tests/support/require_gpu.hpp — GPU tests skip, saying why, where there is no CUDA device.
#pragma once

#include <gtest/gtest.h>

#include "walk/batch_walk.hpp"

#define PTWALK_REQUIRE_GPU()                                                          \
  do {                                                                                \
    if (!::ptwalk::backend_compiled(::ptwalk::walk_backend::cuda))                    \
      GTEST_SKIP() << "built without CUDA";                                           \
    if (!::ptwalk::gpu_visible())                                                     \
      GTEST_SKIP() << "no CUDA device visible: " << ::ptwalk::gpu_description();      \
  } while (false)
