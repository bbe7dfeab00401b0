// Micro-benchmarks of root discovery's page scan: the per-page test alone
// (a page that differs at once, and a process table that is read whole),
// then whole scans of a generated fleet's image on every scan backend — the
// OpenMP scan, the GPU scan's Thrust-OMP build, and the GPU (skipped without
// one) — in pages/s of the scan itself (device setup excluded).
#include <benchmark/benchmark.h>

#include <vector>

#include "walk/batch_walk.hpp"
#include "generate/fleet_generator.hpp"
#include "kernels/root_scan_steps.hpp"
#include "ptwalk/walk.hpp"
#include "discovery/root_discovery.hpp"

namespace ptwalk {
namespace {

using F = x86_64_4level;

// One generated snapshot (1,000 Linux-like spaces sharing a kernel half, 66 MiB).
const loaded_snapshot& bench_snapshot() {
  static const generated_fleet fleet = generate_fleet(parse_fleet_shape("bench,spaces=1000"));
  return fleet.snapshots.front();
}

// The test of one page: arg 0 a data page (differs at entry 511), arg 1 a
// root table (kernel half compared whole, user half checked).
void bm_test_page(benchmark::State& state) {
  const auto& snapshot = bench_snapshot();
  const u64 root = root_table_address<F>(snapshot.roots().front());
  const std::byte* table = snapshot.image.bytes_at(root, 4096);
  std::vector<u64> half(half_entries), starts, ends;
  for (unsigned i = 0; i < half_entries; ++i) half[i] = load_entry(table, half_entries + i);
  for (const auto& r : snapshot.image.regions()) {
    starts.push_back(r.gpa);
    ends.push_back(r.end());
  }
  const page_test_ref test{.test = page_test::root_candidate,
                           .halves = {half.data(), 1},
                           .backed = {starts.data(), ends.data(), static_cast<u32>(starts.size())},
                           .min_kernel_entries = 0};
  const u64 pa = state.range(0) == 0 ? 0x2000 : root;
  const std::byte* page = snapshot.image.bytes_at(pa, 4096);
  for (auto _ : state) benchmark::DoNotOptimize(kernels::test_page<F>(test, pa, page));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(bm_test_page)->Arg(0)->Arg(1);

void bm_root_scan(benchmark::State& state, scan_backend backend) {
  if (backend == scan_backend::cuda && !gpu_visible()) {
    state.SkipWithError(("no GPU: " + gpu_description()).c_str());
    return;
  }
  const auto& snapshot = bench_snapshot();
  root_discovery_options options;
  options.known = {{snapshot.roots().front(), "first", "the fleet's first root"}};
  options.backend = backend;
  double scan_seconds = 0;
  u64 pages = 0;
  for (auto _ : state) {
    const auto result = discover_roots(snapshot.image, options, "bench");
    scan_seconds += result.scan_seconds;
    pages += result.pages_scanned;
  }
  state.counters["scan pages/s"] = static_cast<double>(pages) / scan_seconds;
  state.counters["pages"] = static_cast<double>(pages / state.iterations());
}
BENCHMARK_CAPTURE(bm_root_scan, cpu, scan_backend::cpu)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_root_scan, thrust_cpu, scan_backend::thrust_cpu)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_root_scan, cuda, scan_backend::cuda)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace ptwalk
