// tests/fuzz/kdump_fuzz.cpp — libFuzzer target: a compressed kdump file, plain or flattened.
//
// What loading a `{"kdump": …}` source and `ptwalk info` do: headers,
// bitmaps, descriptors, every page decompressed (one thread, so a crash is
// reproducible), and the machine state from the notes.
#include <cstddef>
#include <cstdint>

#include "fuzz_file.hpp"
#include "input/cpu_state.hpp"
#include "input/kdump_compressed.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace ptwalk;
  try {
    const kdump_file dump(fuzz::as_file(data, size));
    memory_image image;
    dump.add_regions(image, 1);
    (void)describe_machine_state(read_machine_state(dump.notes(), dump.machine(), dump.path().string()));
  } catch (const input_error&) {
  }
  return 0;
}
