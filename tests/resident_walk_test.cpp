// The resident walk (images uploaded to the device once, tables read in
// place there) in its CPU build (Thrust OMP): record for record and byte for byte
// the same as the streaming walk and the reference, on generated fleets of
// every shape (hostile, LA57, AArch64 granules), random forests whose
// regions are cut mid-table and mid-entry, images split at odd offsets,
// small chunks and batches, several walks of one upload, and a device
// budget too small for the images. The lookups themselves are checked
// against memory_image on odd region layouts.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cstring>

#include "generate/fleet_generator.hpp"
#include "kernels/resident_steps.hpp"
#include "support/backend_compare.hpp"
#include "support/random_forest.hpp"
#include "walk/batch_walk.hpp"

namespace ptwalk {
namespace {

using kernels::resident_image_ref;

// Records compared as bytes too: the resident walk must not differ even in padding.
void expect_byte_identical(std::span<const snapshot_walk> expected, std::span<const snapshot_walk> actual) {
  testing::expect_same_walks(expected, actual);
  ASSERT_EQ(expected.size(), actual.size());
  for (std::size_t i = 0; i < expected.size(); ++i) {
    ASSERT_EQ(expected[i].records.size(), actual[i].records.size());
    EXPECT_EQ(0, std::memcmp(expected[i].records.data(), actual[i].records.data(),
                             expected[i].records.size() * sizeof(space_aware_mapping)))
        << "snapshot " << i;
  }
}

// Reference, streaming thrust-cpu and resident thrust-cpu (walked twice from
// one upload, and with tiny chunks and batches) must all agree.
void expect_resident_matches(std::span<const loaded_snapshot> fleet, va_range range = {}) {
  const auto expected = walk_snapshots(fleet, walk_backend::reference, range);
  {
    SCOPED_TRACE("streaming thrust-cpu");
    expect_byte_identical(expected, walk_snapshots(fleet, walk_backend::thrust_cpu, range));
  }
  const auto resident = make_resident_fleet(fleet, walk_backend::thrust_cpu);
  for (int run = 0; run < 2; ++run) {
    SCOPED_TRACE(fmt::format("resident walk {}", run));
    expect_byte_identical(expected, resident->walk(level_walk_options{.range = range}));
  }
  SCOPED_TRACE("resident, chunk 3, batch 5");
  expect_byte_identical(expected,
                        resident->walk(level_walk_options{.range = range, .max_batch_spaces = 5, .chunk_tables = 3}));
}

fleet_shape scaled_down(fleet_shape shape) {
  shape.snapshots = std::min<u32>(shape.snapshots, 3);
  shape.spaces_per_snapshot = std::min<u32>(shape.spaces_per_snapshot, 40);
  shape.user_pages_per_space = std::min<u32>(shape.user_pages_per_space, 64);
  if (shape.nanvix_groups > shape.spaces_per_snapshot) shape.nanvix_groups = shape.spaces_per_snapshot;
  return shape;
}

TEST(resident_walk, matches_streaming_and_reference_on_generated_fleets) {
  std::vector<std::string> shapes;
  for (const auto preset : fleet_presets()) shapes.emplace_back(preset);
  for (const char* mixed : {"linux,la57=all", "hyperlight,self_ref,hostile", "everything,la57=some,seed=7",
                            "small,arm=mixed,snapshots=6", "small,arm=mixed,snapshots=6,share_kernel=0,large,cow"})
    shapes.emplace_back(mixed);
  for (const auto& text : shapes) {
    const fleet_shape shape = scaled_down(parse_fleet_shape(text));
    SCOPED_TRACE(format_fleet_shape(shape));
    const generated_fleet fleet = generate_fleet(shape);
    expect_resident_matches(fleet.snapshots);
    if (shape.arm == arm_mode::off)
      expect_resident_matches(fleet.snapshots, va_range{0x7f00'0000'0000ull, 0xffff'ffff'8000'0000ull});
    else
      expect_resident_matches(fleet.snapshots, va_range{0x40'0000, 0xffff'ffc0'0000'0000ull});
  }
}

TEST(resident_walk, matches_on_random_forests_cut_mid_table_and_mid_entry) {
  for (const unsigned levels : {4u, 5u})
    for (u64 seed = 0; seed < 4; ++seed) {
      SCOPED_TRACE(fmt::format("levels {} seed {}", levels, seed));
      testing::forest_shape shape;
      shape.levels = levels;
      shape.roots = 4 + seed * 5;
      shape.tables_per_depth = 3 + seed * 4;
      shape.entries_per_table = 16 + seed * 30;
      shape.cut_pages = 0.3;
      shape.outside = 0.1;
      std::vector<loaded_snapshot> fleet;
      for (unsigned i = 0; i < 1 + seed; ++i)
        fleet.push_back(testing::random_forest(shape, seed * 100 + i).snapshot(fmt::format("f{}-{}", seed, i)));
      expect_resident_matches(fleet);
    }
}

// A generated image re-split into regions at offsets that cut words in two
// (the word is then unbacked: no one region holds it), with holes, and
// zero pages inside regions.
TEST(resident_walk, matches_on_images_split_at_odd_offsets) {
  const generated_fleet fleet = generate_fleet(scaled_down(parse_fleet_shape("linux,snapshots=2")));
  std::vector<loaded_snapshot> split;
  for (const auto& s : fleet.snapshots) {
    ASSERT_EQ(s.image.regions().size(), 1u);
    const image_region& whole = s.image.regions()[0];
    loaded_snapshot copy;
    copy.spec = s.spec;
    // Cut points from the first root table on (the other tables follow it):
    // mid-word, on a page boundary, holes.
    const u64 end = whole.end(), tables = s.roots()[0] & ~u64{0xfff};
    ASSERT_LT(tables + 0xa001, end);
    std::vector<std::pair<u64, u64>> pieces{{0, tables + 0x804},
                                            {tables + 0x804, tables + 0x3000},
                                            {tables + 0x3010, tables + 0x5ffd},
                                            {tables + 0x6000, tables + 0x9000},
                                            {tables + 0xa001, end}};
    for (const auto& [from, to] : pieces)
      copy.image.add_owned_region(from, std::vector<std::byte>(whole.data + from, whole.data + to), "piece");
    split.push_back(std::move(copy));
  }
  expect_resident_matches(split);
  // The cuts must matter: some reads are dangling now.
  u64 dangling = 0;
  for (const auto& w : walk_snapshots(split, walk_backend::reference)) dangling += w.stats.dangling_reads;
  EXPECT_GT(dangling, 0u);
}

TEST(resident_walk, lookups_match_memory_image) {
  // Regions at odd offsets, adjacent ones, and a page with only zeros.
  memory_image image;
  const std::vector<std::pair<u64, u64>> regions{{0x1000, 0x1ffc}, {0x1ffc, 0x2800}, {0x3004, 0x4000},
                                                 {0x6000, 0x8000}, {0x9000, 0xa000}};
  std::vector<u64> frames;
  for (const auto& [from, to] : regions) {
    std::vector<std::byte> bytes(to - from);
    for (std::size_t i = 0; i < bytes.size(); ++i)
      bytes[i] = from >= 0x9000 ? std::byte{0} : std::byte(static_cast<unsigned char>((from + i) * 7 + 1));
    image.add_owned_region(from, std::move(bytes));
  }
  // Host-side index as the resident image builds it: non-zero pages, regions.
  std::vector<u64> words, page_frame, region_start, region_end;
  for (u64 frame = 0; frame < 0xb; ++frame) {
    std::vector<u64> page(512, 0);
    bool any = false;
    for (u64 w = 0; w < 512; ++w)
      if (const std::byte* p = image.bytes_at(frame * 4096 + 8 * w, 8)) {
        std::memcpy(&page[w], p, 8);
        any = any || page[w] != 0;
      }
    if (!any) continue;
    page_frame.push_back(frame);
    words.insert(words.end(), page.begin(), page.end());
  }
  for (const auto& [from, to] : regions) {
    region_start.push_back(from);
    region_end.push_back(to);
  }
  // Snapshot 0 is empty, snapshot 1 is the image.
  const std::vector<u64> page_begin{0, 0, page_frame.size()}, region_begin{0, 0, region_start.size()};
  const resident_image_ref ref{words.data(),      page_frame.data(), page_begin.data(), region_start.data(),
                               region_end.data(), region_begin.data(), 4};
  EXPECT_EQ(page_frame, (std::vector<u64>{1, 2, 3, 6, 7}));  // 0x9000 holds only zeros
  for (u64 pa = 0; pa < 0xb000; pa += 8) {
    SCOPED_TRACE(fmt::format("pa {:#x}", pa));
    EXPECT_FALSE(ref.backed(0, pa, 8));
    const std::byte* p = image.bytes_at(pa, 8);
    ASSERT_EQ(ref.backed(1, pa, 8), p != nullptr);
    u64 expected = 0;
    if (p != nullptr) std::memcpy(&expected, p, 8);
    if (p != nullptr) {
      EXPECT_EQ(ref.word(ref.page_slot(1, pa / 4096), pa), expected);
      // The index the resident expansion reads through (resident_entries).
      const u64 index = ref.word_index(1, pa);
      EXPECT_EQ(index == resident_image_ref::zero_page ? 0 : words[index], expected);
    }
    for (const u64 len : {u64{64}, u64{4096}}) EXPECT_EQ(ref.backed(1, pa, len), image.bytes_at(pa, len) != nullptr);
  }
  EXPECT_EQ(ref.page_slot(1, 0x9), resident_image_ref::zero_page);
  EXPECT_EQ(ref.page_slot(1, 0x5), resident_image_ref::zero_page);
  EXPECT_EQ(ref.page_slot(0, 0x1), resident_image_ref::zero_page);
}

TEST(resident_walk, counts_its_bytes_and_keeps_tables_off_the_host) {
  const generated_fleet fleet = generate_fleet(scaled_down(parse_fleet_shape("linux")));
  const auto resident = make_resident_fleet(fleet.snapshots, walk_backend::thrust_cpu);
  const walk_profile& upload = resident->upload_profile();
  ASSERT_EQ(upload.phases.size(), 1u);
  EXPECT_EQ(upload.phases[0].name, "resident upload");
  EXPECT_EQ(upload.phases[0].pcie_bytes, resident->device_bytes());
  u64 image_bytes = 0;
  for (const auto& s : fleet.snapshots) image_bytes += s.image.backed_bytes();
  EXPECT_GE(upload.phases[0].host_bytes, image_bytes);  // every backed byte scanned once

  walk_profile profile;
  const auto walks = resident->walk(level_walk_options{.profile = &profile});
  // The table bytes counted independently: the reference walker's tables,
  // 4 KiB each on x86-64.
  u64 tables = 0;
  for (const auto& w : walk_snapshots(fleet.snapshots, walk_backend::reference))
    for (const u64 t : w.stats.tables) tables += t;
  const u64 table_bytes = tables * 4096;
  EXPECT_EQ(profile.tables, tables);
  // No table page crosses PCIe or passes through host memory on a walk.
  EXPECT_LT(profile.phase("upload").pcie_bytes, table_bytes / 4);
  EXPECT_EQ(profile.phase("gather").host_bytes, 0u);
  // The device gather only resolves each table's page slots: no table word
  // is copied (the old design copied every table, read + write, 2x the
  // table bytes), the expansion reads them in place.
  const walk_phase& resolve = profile.phase("device gather");
  EXPECT_TRUE(resolve.on_device);
  EXPECT_GT(resolve.device_bytes, 0u);
  EXPECT_LT(resolve.device_bytes, table_bytes / 4);
  EXPECT_GE(profile.phase("kernel").device_bytes, table_bytes);
  // One pass counts leaves and child tables together, then one selection
  // per kind present: 3.04x the table bytes here (records included). The
  // old separate counts read the 871 non-last tables of these 1,494 once
  // more: 3.6x.
  EXPECT_LT(profile.phase("kernel").device_bytes, table_bytes * 33 / 10);
  // Against the streaming walk, whose expansion reads the tables its gather
  // uploaded: the resident walk's device traffic is that expansion plus
  // lookups only, well under the one extra copy of the tables.
  walk_profile streaming;
  (void)walk_snapshots(fleet.snapshots, walk_backend::thrust_cpu, walk_options{.profile = &streaming});
  const u64 expansion = streaming.phase("kernel").device_bytes;
  EXPECT_GE(profile.phase("kernel").device_bytes, expansion);
  EXPECT_LT(profile.phase("kernel").device_bytes + resolve.device_bytes, expansion + table_bytes / 4);
}

// A budget below what the images need: refused before anything is walked,
// with the sizes in the message. A budget that holds the images but few
// spaces at a time: the walk splits its batches and still matches.
TEST(resident_walk, budget_too_small_is_refused_or_split) {
  const generated_fleet fleet = generate_fleet(scaled_down(parse_fleet_shape("linux,snapshots=3")));
  const u64 needed = make_resident_fleet(fleet.snapshots, walk_backend::thrust_cpu)->device_bytes();
  try {
    (void)make_resident_fleet(fleet.snapshots, walk_backend::thrust_cpu, needed / 2);
    FAIL() << "a budget of half the images was accepted";
  } catch (const resident_does_not_fit& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(fmt::format("need {} MiB", needed >> 20)), std::string::npos) << message;
    EXPECT_NE(message.find("streaming"), std::string::npos) << message;
  }
  // The least memory beyond its image that walks snapshot 0 alone, to 1/16;
  // half as much again cannot hold all three snapshots at once (they need
  // about three times as much), so the walk splits into batches.
  const std::span one(fleet.snapshots.data(), 1);
  const u64 one_image = make_resident_fleet(one, walk_backend::thrust_cpu)->device_bytes();
  auto walks_alone = [&](u64 extra) {
    try {
      (void)make_resident_fleet(one, walk_backend::thrust_cpu, one_image + extra)->walk({});
      return true;
    } catch (const std::runtime_error&) {
      return false;
    }
  };
  u64 low = 0, high = 4096;
  while (!walks_alone(high)) {
    low = high;
    high *= 2;
    ASSERT_LT(high, u64{1} << 30);
  }
  while (high - low > high / 16) {
    const u64 mid = low + (high - low) / 2;
    (walks_alone(mid) ? high : low) = mid;
  }
  const auto tight = make_resident_fleet(fleet.snapshots, walk_backend::thrust_cpu, needed + high * 3 / 2);
  walk_profile profile;
  expect_byte_identical(walk_snapshots(fleet.snapshots, walk_backend::reference),
                        tight->walk(level_walk_options{.profile = &profile}));
  EXPECT_GT(profile.batches, 1u);
}

TEST(resident_walk, needs_a_device_backend) {
  const generated_fleet fleet = generate_fleet(scaled_down(parse_fleet_shape("small")));
  EXPECT_THROW((void)make_resident_fleet(fleet.snapshots, walk_backend::cpu), std::invalid_argument);
}

}  // namespace
}  // namespace ptwalk
