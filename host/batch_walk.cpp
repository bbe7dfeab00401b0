// host/batch_walk.cpp — backend selection for batch walks.
#include "batch_walk.hpp"

#include <stdexcept>

#include "ptwalk/walk.hpp"
#include "table_views.hpp"

namespace ptwalk {

std::string_view backend_name(walk_backend backend) {
  switch (backend) {
    case walk_backend::reference: return "reference";
    case walk_backend::cpu: return "cpu";
    case walk_backend::cuda: return "cuda";
    case walk_backend::automatic: return "auto";
  }
  return "?";
}

std::optional<walk_backend> parse_backend(std::string_view name) {
  for (auto b : {walk_backend::reference, walk_backend::cpu, walk_backend::cuda, walk_backend::automatic})
    if (backend_name(b) == name) return b;
  return std::nullopt;
}

snapshot_walk reference_walk(const loaded_snapshot& snapshot, va_range range) {
  return visit_format(snapshot.format(), [&]<class F>() {
    return walk_va_spaces<F>(image_table_view(snapshot.image), snapshot.roots(), range);
  });
}

std::vector<snapshot_walk> walk_snapshots(std::span<const loaded_snapshot> snapshots,
                                          walk_backend backend, va_range range) {
  // Until the parallel backends land, auto means the reference walker.
  if (backend == walk_backend::automatic) backend = walk_backend::reference;
  if (backend != walk_backend::reference)
    throw std::runtime_error(std::string("walk backend not built yet: ") + std::string(backend_name(backend)));
  std::vector<snapshot_walk> out;
  out.reserve(snapshots.size());
  for (const auto& s : snapshots) out.push_back(reference_walk(s, range));
  return out;
}

}  // namespace ptwalk
