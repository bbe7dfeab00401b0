// tests/fuzz/walker_fuzz.cpp — libFuzzer target: the walkers against each other, then compaction.
//
// A small image (fuzz_image.hpp) is walked by the reference walker, the cpu
// backend and the Thrust algorithms' CPU build; the three must give the same
// walk, byte for byte. The image is then compacted under every policy and
// each result must verify against the original. A disagreement traps.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "compact/compactor.hpp"
#include "compact/verifier.hpp"
#include "fuzz_image.hpp"
#include "walk/batch_walk.hpp"

namespace {

using namespace ptwalk;

constexpr compaction_policy policies[] = {
    {}, {.keep_unbacked = true}, {.keep_pa = true}, {.keep_unbacked = true, .cow_writable = true}};

// Compacted images past this are skipped (materialize copies them whole).
constexpr u64 max_output_bytes = u64{256} << 20;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto snapshot = fuzz::decode_snapshot({reinterpret_cast<const std::byte*>(data), size});
  if (!snapshot) return 0;
  std::vector<loaded_snapshot> fleet;
  fleet.push_back(std::move(*snapshot));
  const loaded_snapshot& input = fleet.front();

  const std::vector<snapshot_walk> reference = walk_snapshots(fleet, walk_backend::reference);
  for (const walk_backend backend : {walk_backend::cpu, walk_backend::thrust_cpu})
    if (walk_snapshots(fleet, backend) != reference) __builtin_trap();

  for (const compaction_policy& policy : policies) {
    compacted_snapshot compacted;
    try {
      compacted = compact_snapshot(input, reference.front(), policy);
    } catch (const input_error&) {
      continue;  // no room for the tables below the address limit
    }
    if (compacted.stats.bytes_out > max_output_bytes) continue;
    loaded_snapshot output{compacted.spec, materialize(compacted)};
    if (!verify_snapshot(input, output).ok()) __builtin_trap();
  }
  return 0;
}
