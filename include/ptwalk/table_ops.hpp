// ptwalk/table_ops.hpp — how algorithms reach page tables (after Hyperlight's vmem.rs).
//
// Algorithms never touch memory directly: they go through an ops type that
// says where a table lives (`table_addr`), how to read an entry and, for the
// write side, how to allocate a table and write an entry. Writing may move a
// table (a copy-on-write view copies a read-only table to scratch on its
// first write); the movability marker says whether that can happen, and the
// `update_parent_*` chain — whose type encodes the depth — rewrites the parent
// entry, recursively up to the root, when it does. For ops that never move
// tables the whole update path is compiled out.
#pragma once

#include <concepts>
#include <optional>
#include <type_traits>

#include "ptwalk/config.hpp"

namespace ptwalk {

template <class T>
concept table_read_ops = requires(const T& ops, typename T::table_addr addr, u64 index, u64 pa) {
  typename T::table_addr;
  { ops.entry_addr(addr, index) } -> std::same_as<typename T::table_addr>;
  { ops.read_entry(addr) } -> std::same_as<u64>;
  { ops.to_phys(addr) } -> std::same_as<u64>;
  { ops.from_phys(pa) } -> std::same_as<typename T::table_addr>;
  { ops.root_table() } -> std::same_as<typename T::table_addr>;
};

// Movability markers.
struct may_move_table {};
struct may_not_move_table {};

template <class T>
concept table_movability =
    std::same_as<T, may_move_table> || std::same_as<T, may_not_move_table>;

// write_entry returns the table's new address when the write moved it
// (may_move_table), or nothing (may_not_move_table).
template <class T>
concept table_write_ops =
    table_read_ops<T> && table_movability<typename T::movability> &&
    requires(T& ops, typename T::table_addr addr, u64 entry) {
      { ops.alloc_table() } -> std::same_as<typename T::table_addr>;
      { ops.update_root(addr) } -> std::same_as<void>;
    } &&
    (std::same_as<typename T::movability, may_move_table>
         ? requires(T& ops, typename T::table_addr addr, u64 entry) {
             { ops.write_entry(addr, entry) } -> std::same_as<std::optional<typename T::table_addr>>;
           }
         : requires(T& ops, typename T::table_addr addr, u64 entry) {
             { ops.write_entry(addr, entry) } -> std::same_as<void>;
           });

template <class T>
inline constexpr bool may_move_v = std::is_same_v<typename T::movability, may_move_table>;

// Nobody needs updating: for tables that cannot move. Its update cannot be
// instantiated, so using it with may_move_table ops fails to compile.
struct update_parent_none {
  static constexpr unsigned depth = 0;
  template <class Ops>
  void update(Ops&, typename Ops::table_addr) const {
    static_assert(!may_move_v<Ops>, "a movable table needs a real update_parent chain");
  }
};

// The moved table is the root: the ops' root pointer (CR3) is updated.
struct update_parent_root {
  static constexpr unsigned depth = 0;
  template <class Ops>
  void update(Ops& ops, typename Ops::table_addr moved_table) const {
    ops.update_root(moved_table);
  }
};

// The moved table hangs off entry `index` of `table`, whose own parent is
// `Parent`; Format says where the address bits of that entry are.
template <class Format, class Parent, class Addr>
struct update_parent_table {
  static constexpr unsigned depth = Parent::depth + 1;
  Parent parent;
  Addr table;
  u64 index;

  template <class Ops>
  void update(Ops& ops, typename Ops::table_addr moved_table) const;
};

// Writes `entry` at entry `index` of `table` and, if that moved the table,
// relinks its parent. Returns the table's address after the write.
template <table_write_ops Ops, class UpdateParent>
typename Ops::table_addr write_entry_updating(Ops& ops, const UpdateParent& parent,
                                              typename Ops::table_addr table, u64 index,
                                              u64 entry) {
  if constexpr (may_move_v<Ops>) {
    if (auto moved = ops.write_entry(ops.entry_addr(table, index), entry)) {
      parent.update(ops, *moved);
      return *moved;
    }
  } else {
    ops.write_entry(ops.entry_addr(table, index), entry);
  }
  return table;
}

template <class Format, class Parent, class Addr>
template <class Ops>
void update_parent_table<Format, Parent, Addr>::update(
    Ops& ops, typename Ops::table_addr moved_table) const {
  // The parent entry keeps its flag bits; only the address changes.
  const u64 old_entry = ops.read_entry(ops.entry_addr(table, index));
  const u64 new_entry = Format::make_table_entry(ops.to_phys(moved_table), old_entry);
  write_entry_updating(ops, parent, table, index, new_entry);
}

}  // namespace ptwalk
