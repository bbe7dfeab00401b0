// Micro-benchmarks of the walk's steps: expanding one table with the
// level-synchronous per-item functors (kernels/walk_steps.hpp, as the
// thrust-cpu build runs them), resolving owners in the open-addressing owner
// table with host atomics, and — when a GPU is visible — a whole cuda walk of
// a generated fleet against the cpu walk of the same fleet.
#include <benchmark/benchmark.h>

#include <bit>
#include <random>
#include <vector>

#include "walk/batch_walk.hpp"
#include "generate/fleet_generator.hpp"
#include "kernels/walk_steps.hpp"

namespace ptwalk {
namespace {

using F = x86_64_4level;

// A PT-like table: `present` of 512 entries set, at random indices.
std::vector<u64> sparse_table(unsigned present, u64 seed) {
  std::mt19937_64 rng(seed);
  std::vector<u64> table(512, 0);
  for (unsigned k = 0; k < present; ++k) table[rng() % 512] = (rng() & F::address_mask) | 0x67;
  return table;
}

void bm_expand_table_functors(benchmark::State& state) {
  const auto table = sparse_table(static_cast<unsigned>(state.range(0)), 1);
  const u32 snapshot = 0, space = 0, space_base = 0;
  const u64 va = 0;
  const u8 perms = F::perm_path_start;
  const kernels::frontier_ref<F> frontier{{table.data()},
                                          &snapshot,
                                          &space,
                                          &va,
                                          &perms,
                                          &space_base,
                                          linear_va_range<F>{},
                                          F::levels - 1,
                                          std::countr_zero(F::entries(F::levels - 1))};
  const kernels::classify_item<F> classify{frontier};
  const kernels::emit_leaf<F> emit{frontier};
  std::vector<space_aware_mapping> out(512);
  for (auto _ : state) {
    std::size_t n = 0;
    for (u64 item = 0; item < 512; ++item)
      if (kernels::tagged_item::of(classify(item)) == kernels::item_class::leaf) out[n++] = thrust::get<0>(emit(item));
    benchmark::DoNotOptimize(out.data());
    benchmark::DoNotOptimize(n);
  }
  state.SetBytesProcessed(state.iterations() * 4096);
  state.SetItemsProcessed(state.iterations() * 512);
}
BENCHMARK(bm_expand_table_functors)->Arg(8)->Arg(64)->Arg(512);

// Visits to `keys` distinct child tables, `visits` in all (sharing = visits/keys).
void bm_owner_resolution(benchmark::State& state) {
  const u64 visits = static_cast<u64>(state.range(0)), keys = static_cast<u64>(state.range(1));
  std::mt19937_64 rng(2);
  std::vector<u64> key(visits), rank(visits);
  for (u64 v = 0; v < visits; ++v) {
    key[v] = kernels::table_key_of::pack(0, 0x1000'0000 + (rng() % keys) * 4096);
    rank[v] = kernels::visit_rank<F>::pack(static_cast<u32>(v / 512), (v % 512) << 21);
  }
  const u64 capacity = std::bit_ceil(2 * visits);
  std::vector<u64> owner_keys(capacity), owner_ranks(capacity);
  std::vector<u32> slot(visits);
  for (auto _ : state) {
    std::fill(owner_keys.begin(), owner_keys.end(), kernels::table_key_of::empty);
    std::fill(owner_ranks.begin(), owner_ranks.end(), ~u64{0});
    const kernels::insert_visit insert{{owner_keys.data(), owner_ranks.data(), capacity - 1}, key.data(),
                                       rank.data(), slot.data()};
    for (u64 v = 0; v < visits; ++v) insert(v);
    const kernels::visit_owns owns{owner_ranks.data(), rank.data(), slot.data(), true};
    u64 owners = 0;
    for (u64 v = 0; v < visits; ++v) owners += owns(v);
    benchmark::DoNotOptimize(owners);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(visits));
}
BENCHMARK(bm_owner_resolution)->Args({1 << 16, 1 << 16})->Args({1 << 16, 256})->Args({1 << 20, 1 << 14});

// Whole walks of the same generated fleet: cuda (skipped without a GPU) and cpu.
void bm_fleet_walk(benchmark::State& state, walk_backend backend) {
  if (backend == walk_backend::cuda && !gpu_visible()) {
    state.SkipWithError(("no GPU: " + gpu_description()).c_str());
    return;
  }
  static const generated_fleet fleet = generate_fleet(parse_fleet_shape("bench,spaces=1000"));
  u64 tables = 0;
  for (auto _ : state) {
    const auto walks = walk_snapshots(fleet.snapshots, backend);
    tables = 0;
    for (const auto& w : walks)
      for (const u64 t : w.stats.tables) tables += t;
  }
  state.counters["tables/s"] = benchmark::Counter(static_cast<double>(tables), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK_CAPTURE(bm_fleet_walk, cpu, walk_backend::cpu)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_fleet_walk, cuda, walk_backend::cuda)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace ptwalk
