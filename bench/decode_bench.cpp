// Micro-benchmark: classifying and decoding one table's worth of entries.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "ptwalk/mapping.hpp"

namespace ptwalk {
namespace {

void bm_decode_table(benchmark::State& state) {
  using F = x86_64_4level;
  std::mt19937_64 rng(1);
  std::vector<u64> table(512);
  for (auto& e : table) e = (rng() & 0x000f'ffff'ffff'f000ull) | (rng() & 0x8000'0000'0000'0fffull);
  const unsigned depth = static_cast<unsigned>(state.range(0));
  for (auto _ : state) {
    u64 sum = 0;
    for (unsigned i = 0; i < 512; ++i) {
      const u64 e = table[i];
      switch (F::classify(e, depth)) {
        case entry_kind::leaf:
          sum += make_leaf_record<F>(e, depth, u64{i} << F::entry_shift(depth), F::perm_path_start).pa;
          break;
        case entry_kind::table:
          sum += F::table_address(e) ^ F::accumulate_perms(F::perm_path_start, e);
          break;
        case entry_kind::not_present:
          break;
      }
    }
    benchmark::DoNotOptimize(sum);
  }
  state.SetBytesProcessed(state.iterations() * 4096);
  state.SetItemsProcessed(state.iterations() * 512);
}
BENCHMARK(bm_decode_table)->Arg(1)->Arg(2)->Arg(3);

}  // namespace
}  // namespace ptwalk
