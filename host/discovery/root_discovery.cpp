// host/root_discovery.cpp — reference kernel halves, the page scan on its backend, PTI pairing, labels.
#include "discovery/root_discovery.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <unordered_map>

#include <fmt/format.h>

#include "discovery/aarch64_discovery.hpp"
#include "walk/batch_walk.hpp"
#include "input/elf_core.hpp"
#include "input/kdump_compressed.hpp"
#include "input/manifest.hpp"
#include "common/parallel_for.hpp"
#include "ptwalk/walk.hpp"
#if PTWALK_WITH_CUDA
#include "cuda/cuda_root_scan.hpp"
#endif

namespace ptwalk {

namespace {

constexpr u64 page_bytes = 4096;
constexpr u64 pti_partner_bit = page_bytes;  // the user table sits 4 KiB above the kernel one

enum class pti_role { none, kernel, user };

struct reference {
  std::array<u64, half_entries> half{};
  pti_role role = pti_role::none;
  std::string description;
};

using seconds_clock = std::chrono::steady_clock;

// Where timed passes leave a result, so they are not optimised away.
volatile unsigned timing_sink = 0;

double seconds_since(seconds_clock::time_point start) {
  return std::chrono::duration<double>(seconds_clock::now() - start).count();
}

// The image's backed ranges, adjacent regions merged.
struct backed_ranges {
  std::vector<u64> starts, ends;

  explicit backed_ranges(const memory_image& image) {
    for (const auto& r : image.regions()) {
      if (!ends.empty() && ends.back() == r.gpa) {
        ends.back() = r.end();
      } else {
        starts.push_back(r.gpa);
        ends.push_back(r.end());
      }
    }
  }
  [[nodiscard]] backed_ranges_ref ref() const {
    return {starts.data(), ends.data(), static_cast<u32>(starts.size())};
  }
};

std::array<u64, half_entries> kernel_half(const std::byte* page) {
  std::array<u64, half_entries> out{};
  for (unsigned i = 0; i < half_entries; ++i) out[i] = load_entry(page, half_entries + i);
  return out;
}

bool halves_equal(const std::array<u64, half_entries>& a, const std::array<u64, half_entries>& b) {
  for (unsigned i = 0; i < half_entries; ++i)
    if (!same_ignoring_accessed(a[i], b[i])) return false;
  return true;
}

template <class Format>
unsigned present_count(const std::array<u64, half_entries>& half) {
  return static_cast<unsigned>(std::count_if(half.begin(), half.end(), [](u64 e) { return Format::present(e); }));
}

// Linux PTI mirrors every user-half entry of a process's kernel table into
// its user table, setting NX on the kernel copy (pti_set_user_pgtbl).
template <class Format>
bool user_halves_mirror(const std::byte* kernel_table, const std::byte* user_table) {
  for (unsigned i = 0; i < half_entries; ++i)
    if (((load_entry(kernel_table, i) ^ load_entry(user_table, i)) &
         ~(entry_accessed | Format::bit_no_execute)) != 0)
      return false;
  return true;
}

// Whole 4 KiB pages each region backs, as the scans see them: a page that
// straddles two regions is not scanned (it is no table of one region).
std::vector<page_run> whole_pages(const memory_image& image) {
  std::vector<page_run> runs;
  for (const auto& region : image.regions()) {
    const u64 first = (region.gpa + page_bytes - 1) & ~(page_bytes - 1);
    if (first >= region.end() || region.end() - first < page_bytes) continue;
    runs.push_back({first, region.data + (first - region.gpa), (region.end() - first) / page_bytes});
  }
  return runs;
}

class scanner {
 public:
  scanner(const memory_image& image, paging_format format, scan_backend backend, unsigned threads,
          std::size_t chunk_pages)
      : image_(image), backed_(image), runs_(whole_pages(image)), format_(format), backend_(backend),
        threads_(threads), chunk_pages_(chunk_pages) {}

  const std::byte* page(u64 pa) const { return image_.bytes_at(pa, page_bytes); }

  // Adds the kernel half of `root` (and of its PTI partner) as references;
  // false when the root's kernel half is empty.
  template <class Format>
  bool add_reference(u64 root, const std::string& name, std::string description) {
    const std::byte* table = page(root);
    auto half = kernel_half(table);
    if (present_count<Format>(half) == 0) return false;
    const int own = add_half(half, std::move(description));
    const u64 partner = root ^ pti_partner_bit;
    const std::byte* partner_table = page(partner);
    if (partner_table == nullptr) return true;
    const auto partner_half = kernel_half(partner_table);
    const bool root_is_kernel = (root & pti_partner_bit) == 0;
    if (present_count<Format>(partner_half) == 0 || halves_equal(half, partner_half) ||
        !user_halves_mirror<Format>(root_is_kernel ? table : partner_table,
                                    root_is_kernel ? partner_table : table))
      return true;
    const int other = add_half(partner_half, fmt::format("kernel half of {}'s PTI {} table {}", name,
                                                         root_is_kernel ? "user" : "kernel", hex(partner)));
    references_[own].role = root_is_kernel ? pti_role::kernel : pti_role::user;
    references_[other].role = root_is_kernel ? pti_role::user : pti_role::kernel;
    return true;
  }

  // Without a known root: the pages (ascending) of the kernel half that
  // most plausible top-level tables share; empty when no half is shared.
  template <class Format>
  std::vector<u64> census() {
    struct half_hash {
      std::size_t operator()(const std::array<u64, half_entries>& h) const {
        u64 x = 0xcbf29ce484222325ull;
        for (const u64 e : h) x = (x ^ (e & ~entry_accessed)) * 0x100000001b3ull;
        return static_cast<std::size_t>(x);
      }
    };
    struct half_equal {
      bool operator()(const std::array<u64, half_entries>& a, const std::array<u64, half_entries>& b) const {
        return halves_equal(a, b);
      }
    };
    std::unordered_map<std::array<u64, half_entries>, std::vector<u64>, half_hash, half_equal> pages;
    for (const auto& hit : select<Format>(census_test(), census_seconds_))
      pages[kernel_half(page(hit.pa))].push_back(hit.pa);
    std::vector<u64> best;
    for (auto& [half, where] : pages) {
      std::sort(where.begin(), where.end());
      // Most tables first, then the lowest address, so the choice is deterministic.
      if (where.size() > best.size() || (where.size() == best.size() && !best.empty() && where[0] < best[0]))
        best = where;
    }
    if (best.size() < 2) return {};  // a half only one page has is shared by nobody
    return best;
  }

  [[nodiscard]] page_test_ref census_test() const {
    return {.test = page_test::top_table, .halves = {}, .backed = backed_.ref(), .min_kernel_entries = 2};
  }

  // Runs the predicate over every page; candidates sorted by address.
  template <class Format>
  std::vector<root_scan_hit> scan() {
    std::vector<u64> flat;
    for (const auto& r : references_) flat.insert(flat.end(), r.half.begin(), r.half.end());
    const page_test_ref test{.test = page_test::root_candidate,
                             .halves = {flat.data(), static_cast<u32>(references_.size())},
                             .backed = backed_.ref(),
                             .min_kernel_entries = 0};
    return select<Format>(test, scan_seconds_);
  }

  // AArch64: the pages shaped like a table above other tables.
  template <class Format>
  std::vector<root_scan_hit> upper_level_tables() {
    const page_test_ref test{.test = page_test::aarch64_upper_level_table,
                             .halves = {},
                             .backed = backed_.ref(),
                             .min_kernel_entries = 0};
    return select<Format>(test, scan_seconds_);
  }

  [[nodiscard]] const std::vector<reference>& references() const { return references_; }
  [[nodiscard]] u64 pages_scanned() const {
    u64 pages = 0;
    for (const auto& run : runs_) pages += run.pages;
    return pages;
  }
  [[nodiscard]] double scan_seconds() const { return scan_seconds_; }
  [[nodiscard]] double census_seconds() const { return census_seconds_; }
  [[nodiscard]] const root_scan_profile& profile() const { return profile_; }
  [[nodiscard]] scan_backend backend() const { return backend_; }
  [[nodiscard]] const std::string& backend_choice() const { return backend_choice_; }

 private:
  int add_half(const std::array<u64, half_entries>& half, std::string description) {
    for (std::size_t i = 0; i < references_.size(); ++i)
      if (halves_equal(references_[i].half, half)) return static_cast<int>(i);
    references_.push_back({half, pti_role::none, std::move(description)});
    return static_cast<int>(references_.size() - 1);
  }

  // The pages that pass `test`, in ascending address, from the backend;
  // `seconds` gets the scan's time less the device's setup.
  template <class Format>
  std::vector<root_scan_hit> select(const page_test_ref& test, double& seconds) {
    if (backend_ == scan_backend::automatic) choose_backend<Format>(test);
    const auto started = seconds_clock::now();
    root_scan_profile profile;
    const root_scan_input input{format_, runs_, test};
    root_scan_options options{.threads = threads_, .profile = &profile};
    if (chunk_pages_ != 0) options.chunk_pages = chunk_pages_;
    std::vector<root_scan_hit> hits;
    switch (backend_) {
      case scan_backend::cpu: hits = select_on_host<Format>(test); break;
      case scan_backend::thrust_cpu: hits = root_scan_thrust_cpu(input, options); break;
      case scan_backend::cuda:
#if PTWALK_WITH_CUDA
        hits = root_scan_cuda(input, options);
        break;
#else
        throw std::runtime_error("root scan backend cuda: this ptwalk was built without CUDA (-DPTWALK_CUDA=ON)");
#endif
      case scan_backend::automatic: throw std::logic_error("root scan: unresolved backend");
    }
    seconds = seconds_since(started) - profile.setup_s;
    profile_ += profile;
    return hits;
  }

  // `auto`, at the first scan: cpu unless a GPU is visible and the costs
  // measured on a sample of this image's pages, with this test, favour it.
  template <class Format>
  void choose_backend(const page_test_ref& test) {
#if PTWALK_WITH_CUDA
    if (gpu_visible()) {
      const scan_costs costs = measure_costs<Format>(test);
      const scan_estimate estimate = estimate_scan(costs);
      backend_ = faster_scan_backend(costs);
      const bool cuda = backend_ == scan_backend::cuda;
      backend_choice_ = fmt::format(
          "auto chose {}: {:.3f} s estimated against {:.3f} s for {} (per page on one thread: test {:.0f} ns, "
          "gather {:.0f} ns; upload {:.0f} ns)",
          scan_backend_name(backend_), cuda ? estimate.cuda_s : estimate.cpu_s,
          cuda ? estimate.cpu_s : estimate.cuda_s, cuda ? "cpu" : "cuda", costs.test_page_s * 1e9,
          costs.gather_page_s * 1e9, costs.upload_page_s * 1e9);
      return;
    }
#endif
    (void)test;
    backend_ = scan_backend::cpu;
  }


 public:
  // The per-page costs of both scans, timed on up to 2048 pages spread over
  // the image: faulted in first (either scan pays that), then tested, then
  // copied, so neither finds the other's cache lines (the copy runs last and
  // meets at most the tested lines).
  template <class Format>
  [[nodiscard]] scan_costs measure_costs(const page_test_ref& test) const {
    const u64 pages = pages_scanned();
    const u64 stride = std::max<u64>(1, pages / 2048);
    std::vector<std::pair<u64, const std::byte*>> sample;
    u64 run_start = 0, next = 0;  // indices over all runs' pages
    for (const page_run& run : runs_) {
      for (; next < run_start + run.pages; next += stride)
        sample.emplace_back(run.pa + (next - run_start) * page_bytes, run.bytes + (next - run_start) * page_bytes);
      run_start += run.pages;
    }
    scan_costs costs{.pages = pages,
                     .threads = threads_,
                     .upload_page_s = page_bytes / best_upload_bytes_per_s,
                     .device_setup_s = best_device_setup_s};
    if (sample.empty()) return costs;
    unsigned sink = 0;
    for (const auto& [pa, bytes] : sample) {
      const auto* first = static_cast<const volatile std::byte*>(bytes);
      sink += std::to_integer<unsigned>(*first);
    }
    // Four interleaved quarters, each tested then copied once; the cheapest
    // quarter's rate counts, so a preempted pass does not decide.
    constexpr std::size_t rounds = 4;
    std::vector<std::byte> staging(page_bytes * ((sample.size() + rounds - 1) / rounds));
    costs.test_page_s = costs.gather_page_s = std::numeric_limits<double>::infinity();
    for (std::size_t round = 0; round < std::min(rounds, sample.size()); ++round) {
      const double pages = static_cast<double>((sample.size() - round + rounds - 1) / rounds);
      auto started = seconds_clock::now();
      for (std::size_t i = round; i < sample.size(); i += rounds)
        sink += kernels::test_page<Format>(test, sample[i].first, sample[i].second).reference >= 0;
      costs.test_page_s = std::min(costs.test_page_s, seconds_since(started) / pages);
      started = seconds_clock::now();
      for (std::size_t i = round; i < sample.size(); i += rounds)
        std::memcpy(staging.data() + i / rounds * page_bytes, sample[i].second, page_bytes);
      costs.gather_page_s = std::min(costs.gather_page_s, seconds_since(started) / pages);
      sink += std::to_integer<unsigned>(staging[0]);
    }
    timing_sink = sink;
    return costs;
  }

 private:
  // The cpu backend: every page on `threads_` threads (blocking ones, see
  // parallel_for.hpp), each keeping its hits until the scan is done.
  template <class Format>
  std::vector<root_scan_hit> select_on_host(const page_test_ref& test) {
    std::vector<std::vector<root_scan_hit>> found(resolve_jobs(threads_));
    for (const page_run& run : runs_)
      parallel_for_chunks(run.pages, 4096, threads_, [&](unsigned worker, std::size_t p) {
        const u64 offset = static_cast<u64>(p) * page_bytes;
        const auto hit = kernels::test_page<Format>(test, run.pa + offset, run.bytes + offset);
        if (hit.reference >= 0) found[worker].push_back(hit);
      });
    std::vector<root_scan_hit> out;
    for (const auto& hits : found) out.insert(out.end(), hits.begin(), hits.end());
    std::sort(out.begin(), out.end(), [](const root_scan_hit& a, const root_scan_hit& b) { return a.pa < b.pa; });
    return out;
  }

  const memory_image& image_;
  backed_ranges backed_;
  std::vector<page_run> runs_;
  paging_format format_;
  scan_backend backend_;
  unsigned threads_;
  std::size_t chunk_pages_;
  std::vector<reference> references_;
  std::string backend_choice_;
  double scan_seconds_ = 0, census_seconds_ = 0;
  root_scan_profile profile_;
};

std::string_view role_suffix(pti_role role) {
  switch (role) {
    case pti_role::kernel: return "/pti-kernel";
    case pti_role::user: return "/pti-user";
    case pti_role::none: break;
  }
  return "";
}

// A result with where the scan runs, before anything is scanned.
root_discovery_result result_for(const root_discovery_options& options) {
  root_discovery_result result;
  result.threads = resolve_jobs(options.threads);
  result.backend = options.backend;  // `automatic` is resolved at the first scan
  return result;
}

// Where the scans ran and what they cost, once they are done.
void record_scans(root_discovery_result& result, const scanner& scan) {
  result.backend = scan.backend() == scan_backend::automatic ? scan_backend::cpu : scan.backend();
  result.backend_choice = scan.backend_choice();
  result.device =
      result.backend == scan_backend::cuda ? gpu_description() : fmt::format("{} threads", result.threads);
  result.pages_scanned = scan.pages_scanned();
  result.bytes_scanned = result.pages_scanned * page_bytes;
  result.scan_seconds = scan.scan_seconds();
  result.census_seconds = scan.census_seconds();
  result.profile = scan.profile();
}

// The table a known root names; an input error when the image lacks it.
template <class Format>
u64 known_root_table(const scanner& scan, const root_hint& hint, std::string_view origin) {
  const u64 root = root_table_address<Format>(hint.root);
  if (scan.page(root) == nullptr)
    throw input_error(fmt::format("{}: {} root {} ({}) is outside the image", origin, hint.label, hex(root),
                                  hint.evidence));
  return root;
}

template <class Format>
root_discovery_result discover(const memory_image& image, const root_discovery_options& options,
                               std::string_view origin) {
  const auto started = seconds_clock::now();
  root_discovery_result result = result_for(options);
  scanner scan(image, options.format, result.backend, result.threads, options.chunk_pages);

  std::vector<u64> known_roots;
  for (const auto& hint : options.known) {
    const u64 root = known_root_table<Format>(scan, hint, origin);
    known_roots.push_back(root);
    if (!scan.template add_reference<Format>(root, hint.label, fmt::format("{}'s kernel half", hint.label)))
      result.references.push_back(fmt::format("{} {}: kernel half empty, not a reference", hint.label, hex(root)));
  }
  if (scan.references().empty()) {
    const auto seeds = scan.template census<Format>();
    if (seeds.empty())
      throw input_error(fmt::format("{}: no known root (no vCPU state or VMCOREINFO; give --hint CR3) and "
                                    "no kernel half shared by two plausible top-level tables",
                                    origin));
    // Every seed has the same kernel half; the first with a PTI partner
    // (not, say, the real-mode trampoline's table) also gives the user half.
    for (const u64 seed : seeds) {
      (void)scan.template add_reference<Format>(
          seed, fmt::format("table {}", hex(seed)),
          fmt::format("the kernel half {} plausible tables share (census, first at {})", seeds.size(),
                      hex(seeds.front())));
      if (scan.references().size() > 1) break;
    }
  }
  for (const auto& r : scan.references()) result.references.push_back(r.description);

  const auto candidates = scan.template scan<Format>();
  record_scans(result, scan);

  const auto& refs = scan.references();
  const auto find_candidate = [&](u64 pa) -> const root_scan_hit* {
    const auto it = std::lower_bound(candidates.begin(), candidates.end(), pa,
                                     [](const root_scan_hit& c, u64 v) { return c.pa < v; });
    return it != candidates.end() && it->pa == pa ? &*it : nullptr;
  };
  // The evidence and label suffix a scanned table carries.
  const auto describe = [&](const root_scan_hit& c, discovered_root& out) {
    const auto& ref = refs[static_cast<std::size_t>(c.reference)];
    out.label += role_suffix(ref.role);
    out.user_half_empty = c.user_half_empty;
    unsigned user_entries = 0;
    for (unsigned i = 0; i < half_entries; ++i) user_entries += Format::present(load_entry(scan.page(c.pa), i));
    out.evidence += fmt::format("{}kernel half = {}; {} user entries", out.evidence.empty() ? "" : "; ",
                                ref.description, user_entries);
    if (ref.role != pti_role::none) {
      const u64 partner = c.pa ^ pti_partner_bit;
      const root_scan_hit* other = find_candidate(partner);
      const bool paired = other != nullptr && refs[static_cast<std::size_t>(other->reference)].role != pti_role::none &&
                          refs[static_cast<std::size_t>(other->reference)].role != ref.role;
      out.evidence += paired ? fmt::format("; PTI pair with {}", hex(partner)) : "; PTI partner missing";
    }
  };

  for (std::size_t i = 0; i < options.known.size(); ++i) {
    const u64 root = known_roots[i];
    if (std::find(known_roots.begin(), known_roots.begin() + static_cast<std::ptrdiff_t>(i), root) !=
        known_roots.begin() + static_cast<std::ptrdiff_t>(i))
      continue;
    discovered_root out{root, options.known[i].label, options.known[i].evidence, false};
    if (const root_scan_hit* c = find_candidate(root)) describe(*c, out);
    result.roots.push_back(std::move(out));
  }
  const auto is_known = [&](u64 pa) {
    return std::find(known_roots.begin(), known_roots.end(), pa) != known_roots.end();
  };
  for (const auto& c : candidates) {
    if (is_known(c.pa)) continue;
    // The PTI partner of a known root is that space's other half, empty or not.
    const bool partner_known = refs[static_cast<std::size_t>(c.reference)].role != pti_role::none &&
                               is_known(c.pa ^ pti_partner_bit);
    if (c.user_half_empty && !partner_known && !options.keep_kernel_only) {
      ++result.kernel_only_skipped;
      continue;
    }
    discovered_root out{c.pa, c.user_half_empty ? "kernel-only" : "process", {}, c.user_half_empty};
    describe(c, out);
    result.roots.push_back(std::move(out));
  }
  result.seconds = seconds_since(started);
  return result;
}

// AArch64: known roots (hints) first, then the TTBR0 tables select_aarch64_roots picks.
template <class Format>
root_discovery_result discover_aarch64(const memory_image& image, const root_discovery_options& options,
                                       std::string_view origin) {
  const auto started = seconds_clock::now();
  root_discovery_result result = result_for(options);
  scanner scan(image, options.format, result.backend, result.threads, options.chunk_pages);
  std::optional<u64> ttbr1_table;
  if (options.ttbr1) {
    ttbr1_table = root_table_address<Format>(*options.ttbr1);
    if (scan.page(*ttbr1_table) == nullptr)
      throw input_error(fmt::format("{}: TTBR1 table {} is outside the image", origin, hex(*ttbr1_table)));
    result.references.push_back(fmt::format("TTBR1 table {}: the kernel's, not a process", hex(*ttbr1_table)));
  }
  std::vector<u64> known;
  for (const auto& hint : options.known) {
    const u64 root = known_root_table<Format>(scan, hint, origin);
    if (std::find(known.begin(), known.end(), root) != known.end()) continue;
    known.push_back(root);
    result.roots.push_back({root, hint.label, hint.evidence, false});
  }
  const auto hits = scan.template upper_level_tables<Format>();
  const auto chosen = select_aarch64_roots<Format>(image, hits, ttbr1_table);
  result.references.push_back(fmt::format("{} pages shaped like upper-level tables: {} pointed at by another, {} "
                                          "implausible below, {} TTBR0 tables ({} reach no user leaf)",
                                          hits.size(), chosen.referenced, chosen.implausible, chosen.roots.size(),
                                          chosen.kernel_only));
  for (const auto& c : chosen.roots) {
    if (std::find(known.begin(), known.end(), c.root) != known.end()) continue;
    if (c.kernel_only && !options.keep_kernel_only) {
      ++result.kernel_only_skipped;
      continue;
    }
    result.roots.push_back({c.root, c.kernel_only ? "kernel-only" : "process", c.evidence, c.kernel_only});
  }
  record_scans(result, scan);
  result.seconds = seconds_since(started);
  return result;
}

}  // namespace

std::string_view scan_backend_name(scan_backend backend) {
  switch (backend) {
    case scan_backend::cpu: return "cpu";
    case scan_backend::cuda: return "cuda";
    case scan_backend::automatic: return "auto";
    case scan_backend::thrust_cpu: return "thrust-cpu";
  }
  return "?";
}

std::optional<scan_backend> parse_scan_backend(std::string_view name) {
  for (const auto b : {scan_backend::cpu, scan_backend::cuda, scan_backend::automatic, scan_backend::thrust_cpu})
    if (scan_backend_name(b) == name) return b;
  return std::nullopt;
}

scan_backend resolve_scan_backend(scan_backend backend) {
  if (backend != scan_backend::automatic) return backend;
  return gpu_visible() ? scan_backend::cuda : scan_backend::cpu;
}

scan_estimate estimate_scan(const scan_costs& costs) {
  const double pages = static_cast<double>(costs.pages);
  const double threads = std::max(costs.threads, 1u);
  return {.cpu_s = pages * costs.test_page_s / threads,
          .cuda_s = costs.device_setup_s + pages * std::max(costs.gather_page_s / threads, costs.upload_page_s)};
}

scan_backend faster_scan_backend(const scan_costs& costs) {
  const scan_estimate estimate = estimate_scan(costs);
  return estimate.cuda_s < estimate.cpu_s ? scan_backend::cuda : scan_backend::cpu;
}

scan_costs sample_scan_costs(const memory_image& image, paging_format format, unsigned threads) {
  return visit_scan_format(format, [&]<class F>() {
    const scanner scan(image, format, scan_backend::automatic, resolve_jobs(threads), 0);
    return scan.template measure_costs<F>(scan.census_test());
  });
}

root_discovery_result discover_roots(const memory_image& image, const root_discovery_options& options,
                                     std::string_view origin) {
  if (!is_scanned_format(options.format))
    throw input_error(fmt::format("{}: root discovery scans 4 KiB top tables; {} is not supported (give the roots "
                                  "in a manifest)",
                                  origin, format_name(options.format)));
  return visit_scan_format(options.format, [&]<class F>() {
    if constexpr (F::halves == 2) {
      return discover_aarch64<F>(image, options, origin);
    } else {
      return discover<F>(image, options, origin);
    }
  });
}

root_discovery_result discover_dump_roots(const opened_dump& dump, std::span<const u64> hints,
                                          bool keep_kernel_only, unsigned threads, scan_backend backend) {
  root_discovery_options options;
  options.format = dump.snapshot.format();
  options.known = dump.machine.known_roots();
  for (const u64 hint : hints) options.known.push_back({hint, "hint", fmt::format("--hint {}", hex(hint))});
  options.keep_kernel_only = keep_kernel_only;
  options.threads = threads;
  options.backend = backend;
  options.ttbr1 = dump.ttbr1;
  return discover_roots(dump.snapshot.image, options, dump.path.string());
}

std::string format_discovery_summary(const root_discovery_result& result, std::string_view origin) {
  const double seconds = std::max(result.scan_seconds, 1e-9);
  const double mib = static_cast<double>(result.bytes_scanned) / (1 << 20);
  // The census is a second pass over every page, before the scan; it is
  // reported apart so pages/s stays one pass's rate.
  std::string phases = result.census_seconds > 0 ? fmt::format("; census {:.3f} s", result.census_seconds) : "";
  if (result.backend != scan_backend::cpu) {
    const auto& p = result.profile;
    phases += fmt::format(" (all scans: device setup {:.3f} s, gather {:.3f} s, upload {:.3f} s = {:.1f} GB/s, "
                          "test {:.3f} s, {} chunks)",
                          p.setup_s, p.gather_s, p.upload_s,
                          static_cast<double>(p.bytes_uploaded) / 1e9 / std::max(p.upload_s, 1e-9), p.kernel_s,
                          p.chunks);
  }
  if (!result.backend_choice.empty()) phases += "; " + result.backend_choice;
  return fmt::format("{}: {} roots; scanned {} pages ({:.0f} MiB) in {:.3f} s with backend {} ({}): {:.3g} pages/s, "
                     "{:.0f} MiB/s; {:.3f} s in all{}; {} kernel-only tables skipped\n",
                     origin, result.roots.size(), result.pages_scanned, mib, result.scan_seconds,
                     scan_backend_name(result.backend), result.device,
                     static_cast<double>(result.pages_scanned) / seconds, mib / seconds, result.seconds, phases,
                     result.kernel_only_skipped);
}

opened_dump open_dump(const std::filesystem::path& path, u64 raw_base, std::optional<paging_format> format,
                      std::optional<u64> ttbr1) {
  snapshot_spec spec;
  spec.id = path.stem().string();
  machine_state machine;
  {
    const auto file = std::make_shared<const mapped_file>(path);
    if (has_kdump_signature(file->bytes())) {
      const kdump_file dump(file);
      machine = read_machine_state(dump.notes(), dump.machine(), path.string());
      spec.memory = kdump_source{path.string()};
    } else if (has_elf_magic(file->bytes())) {
      const elf_core core(file);
      machine = read_machine_state(core.notes(), core.machine(), path.string());
      spec.memory = elf_source{path.string()};
    } else {
      spec.memory = raw_source{path.string(), raw_base};
    }
  }
  std::string origin = "--format";
  if (!format) {
    if (const auto implied = machine.implied_format(path.string())) {
      format = implied;
      origin = std::any_of(machine.vcpus.begin(), machine.vcpus.end(),
                           [](const vcpu_state& c) { return c.paging_enabled(); })
                   ? "CR4.LA57 of the vCPUs"
                   : machine.info->is_arm64() ? "VMCOREINFO PAGESIZE and TCR_EL1_T1SZ"
                                              : "VMCOREINFO pgtable_l5_enabled";
    } else {
      format = paging_format::x86_64;
      origin = "default (the dump does not say)";
    }
  }
  spec.format = *format;
  std::string ttbr1_origin = ttbr1 ? "--ttbr1" : "";
  if (ttbr1 && !is_aarch64(*format))
    throw input_error(fmt::format("{}: --ttbr1 is for aarch64 formats, not {}", path.string(), format_name(*format)));
  if (!ttbr1 && is_aarch64(*format) && machine.info)
    if ((ttbr1 = machine.info->kernel_ttbr1())) ttbr1_origin = "VMCOREINFO swapper_pg_dir - kimage_voffset";
  return {path, load_snapshot(std::move(spec), {}), std::move(machine), std::move(origin), ttbr1,
          std::move(ttbr1_origin)};
}

}  // namespace ptwalk
