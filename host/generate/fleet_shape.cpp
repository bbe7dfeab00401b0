// host/fleet_shape.cpp — fleet shapes as text: presets, key=value overrides, canonical form.
//
// One table of keys drives both the parser and the formatter, so a shape
// written into a manifest's meta reads back to the same shape.
#include <algorithm>
#include <array>
#include <charconv>
#include <variant>

#include <fmt/format.h>

#include "generate/fleet_generator.hpp"

namespace ptwalk {

void validate_shape(const fleet_shape& shape) {
  const auto limit = [](std::string_view name, u64 value, u64 low, u64 high) {
    if (value < low || value > high)
      throw input_error(fmt::format("fleet shape: {} = {} is outside {}..{}", name, value, low, high));
  };
  limit("snapshots", shape.snapshots, 1, 100'000);
  limit("spaces", shape.spaces_per_snapshot, 1, 1'000'000);
  limit("pages", shape.user_pages_per_space, 0, u64{1} << 20);
  limit("kernel", shape.kernel_pages, 0, u64{1} << 20);
  limit("nanvix", shape.nanvix_groups, 0, shape.spaces_per_snapshot);
  limit("dups", shape.duplicate_roots, 0, 1'000'000);
  limit("frames", shape.data_frames, 0, u64{1} << 20);
  if (shape.data_frames != 0 && shape.data_frames < 8)
    throw input_error("fleet shape: frames must be 0 (automatic) or at least 8");
  if (shape.nanvix_groups > 0 && shape.share_kernel_half)
    throw input_error("fleet shape: nanvix groups share the kernel's page tables, so share_kernel must be 0");
  if (shape.arm != arm_mode::off && (shape.nanvix_groups > 0 || shape.self_reference || shape.duplicate_roots > 0 ||
                                     shape.hostile || shape.la57 != la57_mode::off))
    throw input_error("fleet shape: nanvix, self_ref, dups, hostile and la57 are for x86 fleets, not arm");
}

paging_format snapshot_format(const fleet_shape& shape, u32 index) {
  constexpr paging_format arm_formats[] = {paging_format::aarch64_4k_48,  paging_format::aarch64_4k_39,
                                           paging_format::aarch64_16k_47, paging_format::aarch64_16k_48,
                                           paging_format::aarch64_64k_42, paging_format::aarch64_64k_48};
  if (shape.arm == arm_mode::mixed) return arm_formats[index % 6];
  if (shape.arm != arm_mode::off) return arm_formats[static_cast<unsigned>(shape.arm) - 1];
  const bool la57 = shape.la57 == la57_mode::all || (shape.la57 == la57_mode::some && index % 2 == 1);
  return la57 ? paging_format::x86_64_la57 : paging_format::x86_64;
}

namespace {

using shape_field =
    std::variant<u32 fleet_shape::*, u64 fleet_shape::*, bool fleet_shape::*, la57_mode fleet_shape::*,
                 arm_mode fleet_shape::*>;
struct shape_key {
  std::string_view name;
  shape_field field;
};
// One table drives parsing and formatting, in the canonical order.
constexpr std::array shape_keys{
    shape_key{"snapshots", &fleet_shape::snapshots},
    shape_key{"spaces", &fleet_shape::spaces_per_snapshot},
    shape_key{"pages", &fleet_shape::user_pages_per_space},
    shape_key{"kernel", &fleet_shape::kernel_pages},
    shape_key{"share_kernel", &fleet_shape::share_kernel_half},
    shape_key{"nanvix", &fleet_shape::nanvix_groups},
    shape_key{"large", &fleet_shape::large_pages},
    shape_key{"cow", &fleet_shape::cow},
    shape_key{"self_ref", &fleet_shape::self_reference},
    shape_key{"dups", &fleet_shape::duplicate_roots},
    shape_key{"la57", &fleet_shape::la57},
    shape_key{"arm", &fleet_shape::arm},
    shape_key{"hostile", &fleet_shape::hostile},
    shape_key{"frames", &fleet_shape::data_frames},
    shape_key{"seed", &fleet_shape::seed},
};
constexpr std::array<std::string_view, 3> la57_names{"off", "some", "all"};
constexpr std::array<std::string_view, 8> arm_names{"off",    "4k-48",  "4k-39",  "16k-47",
                                                    "16k-48", "64k-42", "64k-48", "mixed"};

struct preset {
  std::string_view name;
  fleet_shape shape;
};
fleet_shape make_shape(u32 snapshots, u32 spaces, u32 pages, u32 kernel, auto&& tweak) {
  fleet_shape s;
  s.snapshots = snapshots;
  s.spaces_per_snapshot = spaces;
  s.user_pages_per_space = pages;
  s.kernel_pages = kernel;
  tweak(s);
  return s;
}
const std::array<preset, 9>& presets() {
  static const std::array<preset, 9> all{
      preset{"small", fleet_shape{}},
      preset{"linux", make_shape(4, 128, 256, 1024,
                                 [](fleet_shape& s) {
                                   s.large_pages = true;
                                   s.duplicate_roots = 2;
                                 })},
      preset{"nanvix", make_shape(2, 64, 32, 512,
                                  [](fleet_shape& s) {
                                    s.share_kernel_half = false;
                                    s.nanvix_groups = 4;
                                  })},
      preset{"hyperlight", make_shape(16, 1, 128, 64, [](fleet_shape& s) { s.cow = true; })},
      preset{"recursive", make_shape(2, 16, 64, 256, [](fleet_shape& s) { s.self_reference = true; })},
      preset{"everything", make_shape(4, 32, 128, 512,
                                      [](fleet_shape& s) {
                                        s.large_pages = s.cow = s.self_reference = s.hostile = true;
                                        s.duplicate_roots = 2;
                                        s.la57 = la57_mode::some;
                                      })},
      preset{"bench", make_shape(1, 10'000, 64, 512, [](fleet_shape&) {})},
      // The bench fleet on AArch64: 4 KiB and 64 KiB granules (16x larger tables).
      preset{"bench-arm", make_shape(1, 10'000, 64, 512, [](fleet_shape& s) { s.arm = arm_mode::k4_48; })},
      preset{"bench-arm64k", make_shape(1, 10'000, 64, 512, [](fleet_shape& s) { s.arm = arm_mode::k64_48; })},
  };
  return all;
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
  while (!text.empty() && text.back() == ' ') text.remove_suffix(1);
  return text;
}

template <class Int>
Int parse_number(std::string_view text, std::string_view item) {
  Int value{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || text.empty())
    throw input_error(fmt::format("fleet shape: \"{}\": expected a number", item));
  return value;
}

void set_field(fleet_shape& shape, const shape_key& key, std::string_view value, bool bare,
               std::string_view item) {
  struct setter {
    fleet_shape& shape;
    std::string_view value, item;
    bool bare;
    void operator()(u32 fleet_shape::*f) const {
      if (bare) throw input_error(fmt::format("fleet shape: \"{}\" needs a value", item));
      shape.*f = parse_number<u32>(value, item);
    }
    void operator()(u64 fleet_shape::*f) const {
      if (bare) throw input_error(fmt::format("fleet shape: \"{}\" needs a value", item));
      shape.*f = parse_number<u64>(value, item);
    }
    void operator()(bool fleet_shape::*f) const {
      if (!bare && value != "0" && value != "1")
        throw input_error(fmt::format("fleet shape: \"{}\": expected 0 or 1", item));
      shape.*f = bare || value == "1";
    }
    void operator()(la57_mode fleet_shape::*f) const {
      const auto it = std::find(la57_names.begin(), la57_names.end(), bare ? "all" : value);
      if (it == la57_names.end())
        throw input_error(fmt::format("fleet shape: \"{}\": expected off, some or all", item));
      shape.*f = static_cast<la57_mode>(it - la57_names.begin());
    }
    void operator()(arm_mode fleet_shape::*f) const {
      const auto it = std::find(arm_names.begin(), arm_names.end(), bare ? "4k-48" : value);
      if (it == arm_names.end())
        throw input_error(fmt::format("fleet shape: \"{}\": expected off, 4k-48, 4k-39, 16k-47, 16k-48, 64k-42, "
                                      "64k-48 or mixed", item));
      shape.*f = static_cast<arm_mode>(it - arm_names.begin());
    }
  };
  std::visit(setter{shape, value, item, bare}, key.field);
}

}  // namespace

fleet_shape parse_fleet_shape(std::string_view text) {
  fleet_shape shape;
  bool first = true;
  for (std::size_t start = 0; start <= text.size();) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    const std::string_view item = trim(text.substr(start, comma - start));
    start = comma + 1;
    if (item.empty()) continue;
    const std::size_t eq = item.find('=');
    const std::string_view name = trim(item.substr(0, eq));
    const auto preset_it =
        std::find_if(presets().begin(), presets().end(), [&](const preset& p) { return p.name == name; });
    if (preset_it != presets().end() && eq == std::string_view::npos) {
      if (!first) throw input_error(fmt::format("fleet shape: preset \"{}\" must come first", name));
      shape = preset_it->shape;
    } else {
      const auto key = std::find_if(shape_keys.begin(), shape_keys.end(),
                                    [&](const shape_key& k) { return k.name == name; });
      if (key == shape_keys.end())
        throw input_error(fmt::format("fleet shape: unknown preset or key \"{}\"", name));
      set_field(shape, *key, eq == std::string_view::npos ? "" : trim(item.substr(eq + 1)),
                eq == std::string_view::npos, item);
    }
    first = false;
  }
  validate_shape(shape);
  return shape;
}

std::string format_fleet_shape(const fleet_shape& shape) {
  struct printer {
    const fleet_shape& shape;
    std::string operator()(u32 fleet_shape::*f) const { return fmt::format("{}", shape.*f); }
    std::string operator()(u64 fleet_shape::*f) const { return fmt::format("{}", shape.*f); }
    std::string operator()(bool fleet_shape::*f) const { return shape.*f ? "1" : "0"; }
    std::string operator()(la57_mode fleet_shape::*f) const {
      return std::string(la57_names[static_cast<std::size_t>(shape.*f)]);
    }
    std::string operator()(arm_mode fleet_shape::*f) const {
      return std::string(arm_names[static_cast<std::size_t>(shape.*f)]);
    }
  };
  std::string out;
  for (const auto& key : shape_keys)
    out += fmt::format("{}{}={}", out.empty() ? "" : ",", key.name, std::visit(printer{shape}, key.field));
  return out;
}

std::vector<std::string_view> fleet_presets() {
  std::vector<std::string_view> names;
  for (const auto& p : presets()) names.push_back(p.name);
  return names;
}

}  // namespace ptwalk
