// tests/fuzz/elf_core_fuzz.cpp — libFuzzer target: an ELF core, its notes and CPU state.
//
// What loading an `{"elf": …}` source and `ptwalk info` do: parse the
// headers and notes, put the PT_LOAD segments into an image, read every
// region of it, and read the machine state from the notes.
#include <cstddef>
#include <cstdint>

#include "fuzz_file.hpp"
#include "input/cpu_state.hpp"
#include "input/elf_core.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace ptwalk;
  try {
    const elf_core core(fuzz::as_file(data, size));
    memory_image image;
    add_elf_regions(image, core);
    // Each region's first and last byte must lie inside the mapping (ASan checks).
    for (const image_region& r : image.regions()) {
      volatile std::byte first = r.data[0], last = r.data[r.size - 1];
      (void)first;
      (void)last;
    }
    (void)describe_machine_state(read_machine_state(core.notes(), core.machine(), core.path().string()));
  } catch (const input_error&) {
  }
  return 0;
}
