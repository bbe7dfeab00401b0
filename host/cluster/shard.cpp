// host/cluster/shard.cpp — shard identity from the launcher's variables, and work-balanced cuts.
#include "cluster/shard.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <numeric>
#include <type_traits>

#include <fmt/format.h>

#include "archive/catalog.hpp"
#include "input/kdump_compressed.hpp"
#include "input/memory_image.hpp"

namespace ptwalk {

namespace {

std::optional<std::size_t> parse_count(std::string_view text) {
  std::size_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc{} || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

// A non-negative integer variable; nullopt when unset, input_error when malformed.
std::optional<std::size_t> variable(const environment& env, std::string_view name) {
  const auto text = env(name);
  if (!text) return std::nullopt;
  const auto value = parse_count(*text);
  if (!value) throw input_error(fmt::format("{}=\"{}\": expected a non-negative integer", name, *text));
  return value;
}

std::size_t required_variable(const environment& env, std::string_view name, std::string_view because) {
  const auto value = variable(env, name);
  if (!value) throw input_error(fmt::format("{} is set but {} is not", because, name));
  return *value;
}

// The rank inside one launch (an MPI job or a Slurm step), if there is one.
struct task_rank {
  std::size_t rank = 0, size = 1;
  std::string origin;
  bool mpi = false;
};

std::optional<task_rank> detect_task(const environment& env) {
  const auto make = [&](std::string_view rank_name, std::string_view size_name, bool mpi) {
    task_rank t;
    t.size = required_variable(env, size_name, rank_name);
    t.rank = required_variable(env, rank_name, size_name);
    if (t.size == 0 || t.rank >= t.size)
      throw input_error(fmt::format("{}={} is not below {}={}", rank_name, t.rank, size_name, t.size));
    t.origin = fmt::format("{}={} of {}", rank_name, t.rank, t.size);
    t.mpi = mpi && t.size > 1;
    return t;
  };
  if (env("OMPI_COMM_WORLD_SIZE")) return make("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", true);
  if (env("PMI_SIZE")) return make("PMI_RANK", "PMI_SIZE", true);
  // The batch script of a job also has SLURM_PROCID (0); only a step's tasks have SLURM_STEP_ID.
  if (env("SLURM_STEP_ID") && env("SLURM_NTASKS")) return make("SLURM_PROCID", "SLURM_NTASKS", false);
  return std::nullopt;
}

// This array task's index among the array's tasks, if it is one.
std::optional<task_rank> detect_array_task(const environment& env) {
  const auto id = variable(env, "SLURM_ARRAY_TASK_ID");
  if (!id) return std::nullopt;
  const std::size_t count = required_variable(env, "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_ID");
  const std::size_t min = variable(env, "SLURM_ARRAY_TASK_MIN").value_or(0);
  const std::size_t max = variable(env, "SLURM_ARRAY_TASK_MAX").value_or(min + count - 1);
  const std::size_t step = variable(env, "SLURM_ARRAY_TASK_STEP").value_or(1);
  // Indexes 0..N-1 need an array without gaps: --array=0-7, not 0-14:2 or 1,5,9.
  if (step != 1 || max + 1 - min != count || *id < min || *id > max)
    throw input_error(fmt::format(
        "SLURM_ARRAY_TASK_ID={} in an array of {} tasks from {} to {} (step {}) is not one of N consecutive "
        "tasks; submit --array=0-N, or give --shard I/N",
        *id, count, min, max, step));
  return task_rank{*id - min, count, fmt::format("SLURM_ARRAY_TASK_ID={} of {}", *id, count), false};
}

std::optional<std::size_t> detect_local_rank(const environment& env) {
  for (const auto* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"})
    if (const auto value = variable(env, name)) return value;
  return std::nullopt;
}

// SHA-256 of what `feed` gives it, as lowercase hex.
template <class Feed>
std::string sha256_hex(Feed&& feed) {
  EVP_MD_CTX* context = EVP_MD_CTX_new();
  EVP_DigestInit_ex(context, EVP_sha256(), nullptr);
  feed([&](const void* data, std::size_t size) { EVP_DigestUpdate(context, data, size); });
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(context, digest, &length);
  EVP_MD_CTX_free(context);
  std::string out;
  for (unsigned i = 0; i < length; ++i) out += fmt::format("{:02x}", digest[i]);
  return out;
}

std::string sha256_of_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw input_error(fmt::format("{}: cannot read", file.string()));
  return sha256_hex([&](const auto& update) {
    char buffer[1 << 16];
    while (in.read(buffer, sizeof buffer) || in.gcount() > 0) update(buffer, static_cast<std::size_t>(in.gcount()));
  });
}

std::uint64_t file_bytes(const std::filesystem::path& path, std::string_view what) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) throw input_error(fmt::format("{}: {}cannot read its size: {}", path.string(), what, ec.message()));
  return size;
}

// Guest memory bytes of a compressed kdump: its dumped pages, counted from
// its headers and bitmaps; nothing is decompressed.
std::uint64_t kdump_work(const std::filesystem::path& path) {
  const kdump_file dump(path);
  return dump.dumped_pages() * dump.header().block_size;
}

// The shard `shard` of a fleet whose items have `work`.
shard_plan cut_fleet(std::span<const std::uint64_t> work, shard_id shard, std::string fleet, std::string identity) {
  const auto cuts = shard_cuts(work, shard.count);
  return {shard, cuts[shard.index], cuts[shard.index + 1], work.size(), std::move(fleet), std::move(identity)};
}

std::string describe(const shard_plan& plan, std::string_view origin, std::string_view items,
                     std::string_view where, const std::function<std::string(std::size_t)>& name) {
  std::string text = fmt::format("shard {}/{} ({}): ", plan.shard.index, plan.shard.count, origin);
  if (plan.first == plan.end) return text + fmt::format("no {} of {}{}", items, plan.snapshots, where);
  return text + fmt::format("{} {}..{} of {}{} ({} .. {})", items, plan.first, plan.end - 1, plan.snapshots, where,
                            name(plan.first), name(plan.end - 1));
}

}  // namespace

environment process_environment() {
  return [](std::string_view name) -> std::optional<std::string> {
    const char* value = std::getenv(std::string(name).c_str());
    if (value == nullptr) return std::nullopt;
    return value;
  };
}

shard_id parse_shard(std::string_view text) {
  const auto slash = text.find('/');
  const auto index = parse_count(text.substr(0, slash));
  const auto count = slash == std::string_view::npos ? std::nullopt : parse_count(text.substr(slash + 1));
  if (!index || !count || *count == 0 || *index >= *count)
    throw input_error(fmt::format("--shard: \"{}\": expected I/N with 0 <= I < N", text));
  return {*index, *count};
}

launch detect_launch(std::string_view explicit_shard, const environment& env) {
  launch out;
  out.local_rank = detect_local_rank(env);
  if (explicit_shard == "none") return out;
  if (!explicit_shard.empty()) {
    out.shard = parse_shard(explicit_shard);
    out.origin = fmt::format("--shard {}", explicit_shard);
    return out;
  }
  const auto array = detect_array_task(env);
  const auto task = detect_task(env);
  if (array && task) {
    out.shard = shard_id{array->rank * task->size + task->rank, array->size * task->size};
    out.origin = array->origin + ", " + task->origin;
  } else if (array) {
    out.shard = shard_id{array->rank, array->size};
    out.origin = array->origin;
  } else if (task && task->size > 1) {
    out.shard = shard_id{task->rank, task->size};
    out.origin = task->origin;
    // The ranks of one MPI launch produce one output together.
    out.mpi = task->mpi;
  }
  return out;
}

namespace {

// An archived snapshot's work is the size of its image file as the catalog records it.
std::uint64_t archived_image_bytes(const archive_source& source, const std::filesystem::path& base_dir,
                                   const std::string& id) {
  const std::filesystem::path named(source.archive);
  const auto path = named.is_absolute() ? named : base_dir / named;
  const archive::catalog catalog = archive::read_catalog(path);
  const auto* entry = catalog.find(source.snapshot);
  if (entry == nullptr)
    throw input_error(fmt::format("{}: snapshot \"{}\": no snapshot {} in the archive", path.string(), id,
                                  source.snapshot));
  return entry->file_bytes;
}

}  // namespace

std::uint64_t snapshot_work(const snapshot_spec& spec, const std::filesystem::path& base_dir) {
  std::uint64_t bytes = 0;
  std::visit(
      [&](const auto& source) {
        if constexpr (requires { source.regions; }) {
          for (const auto& region : source.regions) bytes += region.size;
        } else if constexpr (requires { source.snapshot; }) {
          bytes += archived_image_bytes(source, base_dir, spec.id);
        } else if constexpr (std::is_same_v<std::decay_t<decltype(source)>, kdump_source>) {
          bytes += kdump_work(base_dir / source.path);
        } else {
          bytes += file_bytes(base_dir / source.path, fmt::format("snapshot \"{}\": ", spec.id));
        }
      },
      spec.memory);
  return bytes + spec.roots.size() * root_work_bytes;
}

std::vector<std::size_t> shard_cuts(std::span<const std::uint64_t> work, std::size_t count) {
  // prefix[i]: work of snapshots 0..i-1; each snapshot counts at least 1, so an
  // all-empty manifest is cut by line count.
  std::vector<unsigned __int128> prefix(work.size() + 1, 0);
  for (std::size_t i = 0; i < work.size(); ++i) prefix[i + 1] = prefix[i] + work[i] + 1;
  std::vector<std::size_t> cuts{0};
  for (std::size_t k = 1; k < count; ++k) {
    const unsigned __int128 target = prefix.back() * k / count;
    const auto above = std::lower_bound(prefix.begin() + static_cast<std::ptrdiff_t>(cuts.back()), prefix.end(), target);
    auto cut = static_cast<std::size_t>(above - prefix.begin());
    // The boundary just below is nearer (ties go low): take it, unless it is before the last cut.
    if (cut > cuts.back() && target - prefix[cut - 1] <= prefix[cut] - target) --cut;
    cuts.push_back(cut);
  }
  cuts.push_back(work.size());
  return cuts;
}

shard_plan plan_shard(const std::filesystem::path& manifest, std::span<const snapshot_spec> specs, shard_id shard) {
  std::vector<std::uint64_t> work;
  work.reserve(specs.size());
  for (const auto& spec : specs) work.push_back(snapshot_work(spec, manifest.parent_path()));
  return cut_fleet(work, shard, manifest.string(), sha256_of_file(manifest));
}

std::uint64_t dump_work(const std::filesystem::path& dump) {
  const std::uint64_t size = file_bytes(dump, "");
  // The first bytes decide, as they do when the dump is opened (open_dump).
  std::array<std::byte, 16> start{};
  std::ifstream in(dump, std::ios::binary);
  in.read(reinterpret_cast<char*>(start.data()), start.size());
  const auto read = static_cast<std::size_t>(std::max<std::streamsize>(in.gcount(), 0));
  return has_kdump_signature(std::span(start).first(read)) ? kdump_work(dump) : size;
}

shard_plan plan_dump_shard(std::span<const std::string> dumps, shard_id shard) {
  std::vector<std::uint64_t> sizes, work;
  sizes.reserve(dumps.size());
  work.reserve(dumps.size());
  for (const auto& dump : dumps) {
    sizes.push_back(file_bytes(dump, ""));
    work.push_back(dump_work(dump));
  }
  // Names and file sizes, each ended by a NUL: another list, order or size is another job.
  const std::string identity = sha256_hex([&](const auto& update) {
    for (std::size_t i = 0; i < dumps.size(); ++i) {
      const std::string item = fmt::format("{}{}{}{}", dumps[i], '\0', sizes[i], '\0');
      update(item.data(), item.size());
    }
  });
  const std::string fleet = dumps.size() == 1 ? fmt::format("the dump {}", dumps.front())
                                              : fmt::format("the {} dumps {} .. {}", dumps.size(), dumps.front(),
                                                            dumps.back());
  return cut_fleet(work, shard, fleet, identity);
}

std::string describe_shard(const shard_plan& plan, std::string_view origin, std::span<const snapshot_spec> specs) {
  return describe(plan, origin, "snapshots", fmt::format(" in {}", plan.manifest),
                  [&](std::size_t i) { return specs[i].id; });
}

std::string describe_dump_shard(const shard_plan& plan, std::string_view origin, std::span<const std::string> dumps) {
  return describe(plan, origin, "dumps", "", [&](std::size_t i) { return dumps[i]; });
}

}  // namespace ptwalk
